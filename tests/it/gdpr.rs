//! GDPR rights over real HTTP (research/audit.md §6 D and E): export and erasure of one
//! subject among others (D1), physical erasure after a KEK rotation (D2), a restored backup
//! that must not bring erased data back (D3), the export's JSON Schema (E1), identifiers that
//! are never stored (E3), and reads of the trail that are audited themselves (E4).

use std::path::Path;
use std::process::Command;

use http::Method;
use seawall::audit::event::Stream;
use seawall::audit::gdpr;
use seawall::audit::log::KeyRecord;
use seawall::audit::{IdKind, Subject, open_parts};
use serde_json::{Value, json};

use crate::audit::{Stored, admin, all_bytes, config, contains, copy_tree, query_all};
use crate::backend::Backend;
use crate::support::{
    PROCESS_TIMEOUT, Seawall, admin_get, assert_error, assert_python_check, await_metric, metric,
};

const A_ID: &str = "alice-canary-70331";
const A_MAIL: &str = "Alice.Canary.70331@example.org";
const A_IP: &str = "203.0.113.77";
const A_NOTE: &str = "alice-note-canary-70331";
const B_ID: &str = "bob-canary-80442";
const B_NOTE: &str = "bob-note-canary-80442";
/// Sent only to the GDPR endpoints, never in an event.
const GDPR_ONLY: &str = "gdpr-only-canary-90553@example.org";

fn alice() -> Value {
    json!([{"type": "user_id", "value": A_ID}, {"type": "ip", "value": A_IP}])
}

fn bob() -> Value {
    json!([{"type": "user_id", "value": B_ID}])
}

/// Alice as actor (with her e-mail), as target, and as a client address; Bob acting on her
/// and on his own.
async fn record_events(seawall: &Seawall) {
    let events = [
        json!({"type": "data.update", "outcome": "success",
               "actor": {"user_id": A_ID, "email": A_MAIL}, "target": {"user_id": B_ID},
               "details": {"field": "plan"}}),
        json!({"type": "data.read", "outcome": "success",
               "actor": {"user_id": B_ID}, "target": {"user_id": A_ID},
               "details": {"note": A_NOTE}}),
        json!({"type": "http.visit", "outcome": "success", "actor": {"ip": A_IP}}),
        json!({"type": "authn.login.success", "outcome": "success", "actor": {"user_id": A_ID}}),
        json!({"type": "data.update", "outcome": "success", "actor": {"user_id": B_ID},
               "details": {"note": B_NOTE}}),
    ];
    for event in events {
        let reply = admin(seawall, Method::POST, "/admin/audit/events", event, &[]).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
}

async fn export(seawall: &Seawall, identifiers: Value) -> Value {
    let body = json!({"identifiers": identifiers, "ticket": "DSR-1", "reason": "art15"});
    let reply = admin(seawall, Method::POST, "/admin/gdpr/export", body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let document = reply.json();
    assert_schema(&document);
    document
}

async fn erase(seawall: &Seawall, identifiers: Value, dry_run: bool, key: Option<&str>) -> Value {
    let body = json!({"identifiers": identifiers, "dry_run": dry_run, "ticket": "DSR-2"});
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let reply = admin(seawall, Method::POST, "/admin/gdpr/erase", body, &headers).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Validates an export against `tests/schemas/gdpr-export.schema.json`.
fn assert_schema(document: &Value) {
    let schema =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas/gdpr-export.schema.json");
    assert_python_check(
        "json_schema.py",
        &[schema.as_os_str()],
        &document.to_string(),
        "the export does not validate",
    );
}

fn events(document: &Value) -> &Vec<Value> {
    document["events"].as_array().unwrap()
}

async fn verified(seawall: &Seawall) -> Value {
    let reply = admin_get(seawall, "/admin/audit/verify").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let report = reply.json();
    assert_eq!(report["ok"], true, "{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_e1_e3_e4_export_and_erase_one_subject_among_others() {
    let backend = Backend::start().await;
    let mut seawall = Seawall::start(&config(&backend, ""));
    record_events(&seawall).await;

    let before = export(&seawall, alice()).await;
    assert_eq!(
        before["counts"],
        json!({"access": 1, "data_change": 2, "security": 1})
    );
    let text = before.to_string();
    for mine in [A_ID, A_IP, A_NOTE, A_MAIL] {
        assert!(contains(text.as_bytes(), mine), "{mine} missing: {text}");
    }
    assert!(!text.contains(B_NOTE), "another subject's data: {text}");
    let by_email = export(&seawall, json!([{"type": "email", "value": A_MAIL}])).await;
    assert_eq!(
        events(&by_email).len(),
        3,
        "the e-mail names the user id's data (not the address-only event)"
    );
    let bob_before = export(&seawall, bob()).await;
    assert!(bob_before.to_string().contains(B_NOTE));

    // A dry run plans and changes nothing.
    let plan = erase(&seawall, alice(), true, None).await;
    assert_eq!(plan["status"], "planned");
    assert_eq!(plan["plan"]["data_change"]["action"], "shred");
    assert_eq!(plan["plan"]["data_change"]["events"], 2);
    assert_eq!(plan["plan"]["security"]["action"], "retain");
    assert_eq!(events(&export(&seawall, alice()).await).len(), 4);

    let done = erase(&seawall, alice(), false, Some("erase-alice-1")).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["keys_destroyed"], 2,
        "her data_change key and her address's access key"
    );
    assert!(done["physical_erasure_by"].is_string());
    let replay = erase(&seawall, alice(), false, Some("erase-alice-1")).await;
    assert_eq!(replay, done, "the same key answers the same");
    let reused = admin(
        &seawall,
        Method::POST,
        "/admin/gdpr/erase",
        json!({"identifiers": bob()}),
        &[("idempotency-key", "erase-alice-1")],
    )
    .await;
    assert_error(&reused, 409, "IDEMPOTENCY_KEY_REUSED");

    let after = export(&seawall, alice()).await;
    assert!(!events(&after).is_empty());
    for event in events(&after) {
        assert_eq!(event["on_erasure"]["action"], "retain", "{event}");
        assert!(
            event["on_erasure"]["basis"]
                .as_str()
                .unwrap()
                .starts_with("Art 17(3)")
        );
    }
    let text = after.to_string();
    assert!(!text.contains(A_NOTE) && !text.contains(A_IP), "{text}");
    assert_eq!(
        events(&export(&seawall, bob()).await),
        events(&bob_before),
        "Bob's export is unchanged"
    );
    let report = verified(&seawall).await;
    assert!(
        report["streams"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["broken"].is_null())
    );

    // Bad input changes nothing and says what is wrong.
    for (body, field) in [
        (json!({"identifiers": []}), "identifiers"),
        (
            json!({"identifiers": [{"type": "phone", "value": "1"}]}),
            "identifiers[0].type",
        ),
        (
            json!({"identifiers": [{"type": "ip", "value": "not-an-ip"}]}),
            "identifiers[0].value",
        ),
    ] {
        let reply = admin(&seawall, Method::POST, "/admin/gdpr/erase", body, &[]).await;
        assert_error(&reply, 400, "VALIDATION_FAILED");
        assert_eq!(reply.json()["field"], field, "{}", reply.text());
    }
    let unknown = admin(
        &seawall,
        Method::POST,
        "/admin/gdpr/export",
        json!({"identifiers": alice(), "scope": "all"}),
        &[],
    )
    .await;
    assert_eq!(unknown.status, 400, "{}", unknown.text());
    assert_eq!(admin_get(&seawall, "/admin/gdpr/export").await.status, 405);
    let record = admin_get(&seawall, "/admin/gdpr/processing-record").await;
    assert_eq!(record.status, 200);
    assert_eq!(
        record.json()["streams"]["access"]["retention"]["event_days"],
        180,
        "the record is the running configuration"
    );

    // Legal holds: Bob's data_change events survive an erasure request while held.
    let held = admin(
        &seawall,
        Method::POST,
        "/admin/gdpr/holds",
        json!({"identifiers": bob(), "streams": ["data_change"], "case": "CASE-7"}),
        &[],
    )
    .await;
    assert_eq!(held.status, 201, "{}", held.text());
    let hold_id = held.json()["id"].as_str().unwrap().to_string();
    let listed = admin_get(&seawall, "/admin/gdpr/holds").await.json();
    assert_eq!(listed["holds"][0]["case"], "CASE-7");
    assert_eq!(listed["holds"][0]["subject_pseudonyms"], 1);
    let planned = erase(&seawall, bob(), true, None).await;
    assert_eq!(
        planned["plan"]["data_change"]["basis"],
        format!("Art 17(3)(e): legal hold {hold_id}")
    );
    let bad_stream = admin(
        &seawall,
        Method::POST,
        "/admin/gdpr/holds",
        json!({"identifiers": bob(), "streams": ["nope"], "case": "C"}),
        &[],
    )
    .await;
    assert_error(&bad_stream, 400, "VALIDATION_FAILED");
    let path = format!("/admin/gdpr/holds/{hold_id}");
    let removed = admin(&seawall, Method::DELETE, &path, json!({}), &[]).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    let again = admin(&seawall, Method::DELETE, &path, json!({}), &[]).await;
    assert_eq!(again.status, 404);

    // E3: identifiers sent only to the GDPR endpoints.
    export(&seawall, json!([{"type": "email", "value": GDPR_ONLY}])).await;
    erase(
        &seawall,
        json!([{"type": "email", "value": GDPR_ONLY}]),
        false,
        None,
    )
    .await;

    // E4: every read of the trail left an event.
    let reads = query_all(&seawall, "type=audit.read").await;
    let routes: Vec<&str> = reads
        .iter()
        .filter_map(|e| e["http"]["route"].as_str())
        .collect();
    assert!(
        routes.contains(&"admin.audit") && routes.contains(&"admin.gdpr"),
        "verify and the processing record are reads: {routes:?}"
    );
    let gdpr_events: Vec<String> = query_all(&seawall, "stream=gdpr")
        .await
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        gdpr_events
            .iter()
            .filter(|t| *t == "gdpr.access.exported")
            .count(),
        7
    );
    assert_eq!(
        gdpr_events
            .iter()
            .filter(|t| *t == "gdpr.erasure.executed")
            .count(),
        2
    );

    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    let data_dir = seawall.data_dir();
    for (path, bytes) in all_bytes(&data_dir) {
        for identifier in [
            GDPR_ONLY,
            A_ID,
            A_NOTE,
            &A_MAIL.to_lowercase(),
            A_MAIL,
            A_IP,
        ] {
            assert!(!contains(&bytes, identifier), "{identifier} in {path}");
        }
    }
    let stored = Stored::open(&data_dir);
    let mut exported_events = 0;
    for stream in Stream::ALL {
        stored.intact(stream);
        for (_, record) in stored.records(stream) {
            let header = record.header_value();
            let parts = serde_json::to_string(&open_parts(&stored.log, &record)).unwrap();
            if header["type"].as_str().unwrap().starts_with("gdpr.")
                || header["http"]["route"] == "admin.gdpr"
            {
                assert!(
                    !parts.contains(GDPR_ONLY) && !parts.contains(A_ID),
                    "{parts}"
                );
            }
            if header["type"] == "gdpr.access.exported" {
                exported_events += 1;
                assert!(
                    parts.contains("DSR-1"),
                    "the ticket is kept, sealed: {parts}"
                );
            }
        }
    }
    assert_eq!(exported_events, 7);
}

fn subject_keys(stored: &Stored) -> Vec<([u8; 16], KeyRecord)> {
    let alice = [
        Subject {
            kind: IdKind::UserId,
            value: A_ID.into(),
        },
        Subject {
            kind: IdKind::Ip,
            value: A_IP.into(),
        },
    ];
    gdpr::find(&stored.log, &alice)
        .unwrap()
        .keys
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d2_d3_erased_data_is_gone_from_the_files_and_stays_gone_after_a_restore() {
    let backend = Backend::start().await;
    let configuration = config(&backend, "\n[audit]\ndigest_every = 5\n");
    let mut seawall = Seawall::start(&configuration);
    record_events(&seawall).await;
    let backup = admin(
        &seawall,
        Method::POST,
        "/admin/backup",
        json!({"to": "before-erasure"}),
        &[],
    )
    .await;
    assert_eq!(backup.status, 201, "{}", backup.text());
    let backup_dir = backup.json()["path"].as_str().unwrap().to_string();
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());

    // What an attacker with the files would need: Alice's data keys, and their wrapped copies.
    let (keys, data_keys) = {
        let stored = Stored::open(&seawall.data_dir());
        let keys = subject_keys(&stored);
        let data_keys: Vec<[u8; 32]> = keys
            .iter()
            .filter_map(|(kid, _)| stored.log.data_key(kid))
            .collect();
        (keys, data_keys)
    };
    assert!(keys.len() >= 3 && data_keys.len() == keys.len());

    let dir = seawall.dir.clone();
    let mut seawall = Seawall::start_in(dir.clone(), &configuration, &[]);
    let done = erase(&seawall, alice(), false, None).await;
    assert_eq!(done["status"], "completed");
    let shredded = done["result"]["keys_destroyed"].as_u64().unwrap();
    let rotated = admin(
        &seawall,
        Method::POST,
        "/admin/audit/keys/rotate",
        json!({}),
        &[],
    )
    .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text());
    let epoch = rotated.json()["epoch"].as_u64().unwrap();
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());

    // D2: nothing of Alice's in any byte of the data directory, and the stale wrapped copies
    // sled may still hold are under a KEK that no longer exists.
    let data_dir = seawall.data_dir();
    // The backup from before the erasure is in there too: its copy is sealed and wrapped
    // like the live one (what it still holds is README's "Limits").
    for (path, bytes) in &all_bytes(&data_dir) {
        for canary in [A_NOTE, A_ID, A_IP] {
            assert!(!contains(bytes, canary), "{canary} in {path}");
        }
        for key in &data_keys {
            assert!(!bytes.windows(32).any(|w| w == key), "a data key in {path}");
        }
    }
    {
        let stored = Stored::open(&data_dir);
        for (kid, record) in &keys {
            let erased = record.stream == Stream::DataChange.code()
                || record.stream == Stream::Access.code();
            if erased {
                assert!(stored.log.data_key(kid).is_none());
                assert!(
                    stored
                        .log
                        .keyring
                        .unwrap(kid, record.epoch, &record.wrapped)
                        .is_none(),
                    "the KEK the stale copy was wrapped under is gone"
                );
            }
        }
        assert_eq!(stored.log.keyring.epoch() as u64, epoch);
        for stream in Stream::ALL {
            stored.intact(stream);
        }
    }

    // D3: the backup from before the erasure is restored; the ledger stays, with a last line a
    // crash cut short during a later erasure (which destroyed nothing), passed over.
    for folder in ["store", "keys"] {
        std::fs::remove_dir_all(data_dir.join(folder)).unwrap();
    }
    copy_tree(Path::new(&backup_dir), &data_dir);
    let ledger = data_dir.join("erasure-ledger.jsonl");
    let mut torn = std::fs::read(&ledger).unwrap();
    torn.extend_from_slice(br#"{"time":"2026-11-28T00:00:00Z","request_id":"r","kids":["00"#);
    std::fs::write(&ledger, torn).unwrap();
    let mut restored = Seawall::start_in(dir.clone(), &configuration, &[]);
    let after = export(&restored, alice()).await;
    assert!(!after.to_string().contains(A_NOTE), "{after}");
    assert!(
        events(&after)
            .iter()
            .all(|e| e["on_erasure"]["action"] == "retain")
    );
    assert!(export(&restored, bob()).await.to_string().contains(B_NOTE));
    verified(&restored).await;
    assert!(
        restored.logs().contains("erasure ledger replayed"),
        "{}",
        restored.logs()
    );
    assert!(restored.logs().contains("its last line was cut short"));
    // The restore kept the watermark (the README's procedure removes it), so the start says
    // the store went back.
    assert!(restored.logs().contains("recorded as integrity.rollback"));
    restored.signal("TERM");
    assert!(restored.wait_exit(PROCESS_TIMEOUT).success());
    let stored = Stored::open(&data_dir);
    let gone = keys
        .iter()
        .filter(|(kid, _)| stored.log.data_key(kid).is_none())
        .count() as u64;
    assert_eq!(gone, shredded, "exactly the erased keys are gone again");
    assert!(
        !data_dir.join("keys/kek.1").exists(),
        "the restored KEK was rotated away"
    );
    drop(stored);

    // The offline verifier agrees, and rejects digests checked against another key.
    let offline = |pubkey: Option<String>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_seawall"));
        command.args(["audit", "verify", "--data"]).arg(&data_dir);
        if let Some(key) = pubkey {
            command.args(["--pubkey", &key]);
        }
        let output = command.env_clear().output().unwrap();
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&output.stderr)));
        (output.status.code(), report)
    };
    let (status, report) = offline(None);
    assert_eq!((status, &report["ok"]), (Some(0), &json!(true)), "{report}");
    let digests: u64 = report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["digests"].as_u64().unwrap())
        .sum();
    assert!(digests > 0, "{report}");
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    let hex: String = stranger
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (status, report) = offline(Some(hex));
    assert_eq!(status, Some(1), "{report}");
    assert!(
        report["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["broken"]["kind"] == "signature"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_verification_records_its_result() {
    let backend = Backend::start().await;
    let dir = std::sync::Arc::new(tempfile::TempDir::new().unwrap());
    let config = config(
        &backend,
        "\n[audit]\nverify_interval_ms = 200\ndigest_every = 1\n",
    );
    let mut seawall = Seawall::start_in(dir.clone(), &config, &[]);
    record_events(&seawall).await;
    let deadline = std::time::Instant::now() + PROCESS_TIMEOUT;
    loop {
        let verified = query_all(&seawall, "type=integrity.verified").await;
        if let Some(event) = verified.last()
            && event["events"].as_u64().unwrap_or(0) >= 5
        {
            assert_eq!(event["stream"], "system");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no integrity.verified event covering the application events"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        query_all(&seawall, "type=integrity.failure")
            .await
            .is_empty()
    );
    let metrics = admin_get(&seawall, "/metrics").await.text();
    assert_eq!(
        metric(&metrics, "seawall_audit_verification_broken"),
        Some(0.0)
    );
    let passed = "seawall_audit_verifications_total{result=\"passed\"}";
    assert!(metric(&metrics, passed).unwrap() >= 1.0, "{metrics}");
    let at = metric(
        &metrics,
        "seawall_audit_last_verification_timestamp_seconds",
    )
    .unwrap();
    assert!(at > 1.7e9, "a Unix time: {at}");

    // The signing key lost while stopped: the next start makes a new one, which signed none
    // of the stored digests, and the next scheduled run says so, in its gauge and an event.
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    std::fs::remove_file(dir.path().join("data/keys/signing.key")).unwrap();
    let seawall = Seawall::start_in(dir.clone(), &config, &[]);
    await_metric(&seawall, "seawall_audit_verification_broken", 1.0).await;
    assert!(
        seawall
            .logs()
            .contains("signed by another key than keys/signing.key"),
        "the start says why before the verification does"
    );
    let failures = query_all(&seawall, "type=integrity.failure").await;
    let breaks = failures.last().expect("an integrity.failure event")["breaks"].to_string();
    assert!(breaks.contains("\"kind\":\"signature\""), "{breaks}");
}
