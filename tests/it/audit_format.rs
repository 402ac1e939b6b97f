//! The audit trail checked from outside seawall (research/audit.md §6 C4): `tests/verify_audit.py`,
//! written from docs/audit-format.md alone, recomputes every stream's hash chain and checks
//! every signed digest from what the admin API returns. One altered header field, or one
//! altered digest, makes it fail where the document says it should.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use seawall::audit::anchor::{self, Anchor};
use seawall::audit::capacity::Step;
use seawall::audit::event::rfc3339_nanos;
use seawall::audit::keys::Keyring;
use seawall::audit::log::{AuditLog, day_of};
use seawall::audit::writer::Writer;
use seawall::audit::{AuditConfig, DigestPolicy, Draft, Stream, retention};
use seawall::config::StoreConfig;
use seawall::store::Store;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::audit::{Stored, admin, await_events, config, query_all};
use crate::backend::Backend;
use crate::support::{PROCESS_TIMEOUT, Seawall, admin_get, get, python_check};

const STREAMS: [&str; 5] = ["security", "access", "data_change", "gdpr", "system"];

/// What docs/audit-format.md says to fetch, as the verifier reads it.
async fn fetch(seawall: &Seawall) -> Value {
    let public_key = admin_get(seawall, "/admin/audit/pubkey").await.json()["public_key"].clone();
    let mut streams = serde_json::Map::new();
    for stream in STREAMS {
        // Digests first: reads are audited, so the security stream grows while it is read.
        let reply = admin_get(seawall, &format!("/admin/audit/digests?stream={stream}")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let listed = reply.json();
        let anchor = listed["anchors"].get(0).cloned().unwrap_or(Value::Null);
        let events = query_all(seawall, &format!("stream={stream}&integrity=true")).await;
        streams.insert(
            stream.into(),
            json!({"events": events, "digests": listed["digests"], "anchor": anchor}),
        );
    }
    json!({"public_key": public_key, "streams": streams})
}

fn verify(fetched: &Value) -> (bool, String) {
    python_check("verify_audit.py", &[], &fetched.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_verifier_checks_the_chains_and_digests_the_api_returns() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "\n[audit]\ndigest_every = 7\n"));
    for i in 0..30 {
        let url = seawall.proxy_url(&format!("/api/headers/{i}?q=x"));
        assert_eq!(get(&url).await.status, 200);
    }
    for (event_type, reason) in [
        ("data.update", "plan_changed"),
        ("authn.login.failure", "bad_password"),
        ("data.export", "quarterly_report"),
    ] {
        let event = json!({"type": event_type, "outcome": "success", "reason": reason,
                           "actor": {"user_id": "u-17"}, "details": {"note": "x"}});
        let reply = admin(&seawall, Method::POST, "/admin/audit/events", event, &[]).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    await_events(&seawall, "api", 30).await;

    let fetched = fetch(&seawall).await;
    let access = fetched["streams"]["access"].clone();
    assert!(access["events"].as_array().unwrap().len() >= 30);
    assert!(
        access["digests"].as_array().unwrap().len() >= 2,
        "a digest every 7 events: {access}"
    );
    let (passed, report) = verify(&fetched);
    assert!(passed, "{report}");
    assert!(report.contains("access: "), "{report}");
    // Every access event a fetched digest covers carries the audit path to that digest's root
    // (events are fetched after digests, so later ones may name a digest signed meanwhile).
    let fetched_digests: Vec<&Value> = access["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["number"])
        .collect();
    let covered: Vec<&Value> = access["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            let integrity = &e["integrity"];
            !integrity["proof"].is_null() && fetched_digests.contains(&&integrity["digest"])
        })
        .collect();
    assert!(
        covered.len() >= 7,
        "a digest every 7 of 30 events: {access}"
    );
    assert!(
        report.contains(&format!(", {} proven by inclusion", covered.len())),
        "{report}"
    );

    // One step of one event's audit path changed: its proof no longer leads to the root.
    let seq = covered
        .iter()
        .find(|e| {
            !e["integrity"]["proof"]["path"]
                .as_array()
                .unwrap()
                .is_empty()
        })
        .unwrap()["seq"]
        .as_u64()
        .unwrap();
    let mut altered = fetched.clone();
    let path =
        &mut altered["streams"]["access"]["events"][seq as usize]["integrity"]["proof"]["path"][0];
    *path = json!("00".repeat(32));
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains(&format!("break: access seq {seq}: inclusion proof")),
        "{report}"
    );

    // A stream whose start retention has removed (the first 10 events and digest 0, which
    // covered only removed ones): the chain is checked from the next digest boundary.
    let mut pruned = fetched.clone();
    let access = &mut pruned["streams"]["access"];
    access["events"].as_array_mut().unwrap().drain(..10);
    access["digests"].as_array_mut().unwrap().remove(0);
    let (passed, report) = verify(&pruned);
    assert!(passed, "{report}");
    let line = report.lines().find(|l| l.starts_with("access: ")).unwrap();
    let checked: usize = line["access: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..20).contains(&checked) && line.contains(" of 20 events chained"),
        "from the first boundary after seq 10: {report}"
    );

    // One header field changed: the leaf of exactly that event no longer matches.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["events"][3]["http"]["status_code"] = json!(201);
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access leaf: seq 3"),
        "{report}"
    );

    // An event removed from the middle: the sequence has a gap.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["events"]
        .as_array_mut()
        .unwrap()
        .remove(5);
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access gap or order: seq 6"),
        "{report}"
    );

    // A digest's time changed: its signature no longer verifies.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["digests"][1]["time"] = json!("2020-01-01T00:00:00.000000000Z");
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access digest 1: signature"),
        "{report}"
    );

    // Another key: nothing verifies against it.
    let mut altered = fetched.clone();
    altered["public_key"] = json!("11".repeat(32));
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access digest 0"),
        "{report}"
    );
}

/// Writes access events on each of the last three days, with a digest after each day, then
/// prunes the two older days the way a capacity-guarded retention run would (headers kept one
/// day), all with the library on an injected clock, into the data directory of `dir`.
fn pruned_store(dir: &std::path::Path) {
    let data_dir = dir.join("data");
    let config = StoreConfig {
        data_dir: data_dir.clone(),
        cache_capacity_bytes: 16 << 20,
    };
    let store = Store::open(&config).unwrap();
    let keyring = Arc::new(Keyring::open(&data_dir).unwrap());
    let log = Arc::new(AuditLog::open(&store, keyring, "seawall").unwrap());
    let mut writer = Writer::new(log.clone()).unwrap();
    let policy = DigestPolicy {
        every: 1,
        interval: Duration::from_secs(60),
        idle: Duration::from_secs(3_600),
    };
    let now = SystemTime::now();
    for days_ago in [2u64, 1, 0] {
        let time = now - Duration::from_secs(days_ago * 86_400);
        let drafts = (0..4)
            .map(|i| {
                Draft::new(
                    Stream::Access,
                    "http.read",
                    "success",
                    &format!("r{days_ago}{i}"),
                    time,
                )
                .field("note", json!(format!("{days_ago} days ago")))
            })
            .collect();
        writer.commit(drafts, time).unwrap();
        writer.sign_due(time, &policy).unwrap();
    }
    let shortened = Step::AccessHeaders.apply(&AuditConfig::default());
    let report = retention::run(&log, &shortened, now, usize::MAX).unwrap();
    assert_eq!(
        report.streams["access"].pruned_through,
        Some(7),
        "{report:?}"
    );
    store.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_starts_a_pruned_stream_at_its_signed_anchor() {
    let dir = Arc::new(TempDir::new().unwrap());
    pruned_store(dir.path());
    let seawall = Seawall::start_in(dir.clone(), "", &[]);

    let fetched = fetch(&seawall).await;
    let anchor = &fetched["streams"]["access"]["anchor"];
    assert_eq!(
        (
            &anchor["pruned_through"],
            &anchor["header_days"],
            &anchor["origin"]
        ),
        (&json!(7), &json!(1), &json!("seawall")),
        "{fetched}"
    );
    let (passed, report) = verify(&fetched);
    assert!(passed, "{report}");
    let line = report.lines().find(|l| l.starts_with("access: ")).unwrap();
    assert!(
        line.starts_with("access: 4 of 4 events chained")
            && line.ends_with("cut through seq 7 by a signed anchor"),
        "{report}"
    );

    // Edited after signing: the cut claims a longer period.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["anchor"]["header_days"] = json!(180);
    let (passed, report) = verify(&altered);
    assert!(
        !passed && report.contains("break: access anchor through seq 7: signature"),
        "{report}"
    );
    // Moved: the cut claims fewer events were removed.
    let mut altered = fetched.clone();
    altered["streams"]["access"]["anchor"]["pruned_through"] = json!(3);
    let (passed, report) = verify(&altered);
    assert!(!passed && report.contains("signature"), "{report}");
    // The chain value no longer continues the first stored event.
    let mut altered = fetched.clone();
    let events = altered["streams"]["access"]["events"]
        .as_array_mut()
        .unwrap();
    events.remove(0);
    let (passed, report) = verify(&altered);
    assert!(!passed, "{report}");

    // A run cut short between writing its anchor and dropping the day leaves events up to the
    // anchor stored: both verifiers start after the anchor.
    let mut seawall = seawall;
    seawall.signal("TERM");
    seawall.wait_exit(PROCESS_TIMEOUT);
    drop(seawall);
    anchor_inside_stored_events(dir.path(), 9);
    let seawall = Seawall::start_in(dir.clone(), "", &[]);
    let fetched = fetch(&seawall).await;
    let (passed, report) = verify(&fetched);
    assert!(passed, "{report}");
    assert!(
        report.contains("access: 2 of 4 events chained") && report.contains("through seq 9"),
        "{report}"
    );
    let own = admin_get(&seawall, "/admin/audit/verify?stream=access")
        .await
        .json();
    assert_eq!(own["ok"], true, "{own}");
}

/// Moves the access stream's anchor to `seq`, still stored, signed with the store's own key
/// (period unknown, as an anchor may be): what a retention run leaves when it stops between
/// writing the anchor and dropping the day.
fn anchor_inside_stored_events(dir: &std::path::Path, seq: u64) {
    let stored = Stored::open(&dir.join("data"));
    let log = &stored.log;
    let (_, record) = log
        .events(Stream::Access)
        .map(Result::unwrap)
        .find(|(s, _)| *s == seq)
        .unwrap();
    let now = SystemTime::now();
    let moved = Anchor::sign(
        log.keyring.signing_key(),
        &log.origin,
        Stream::Access,
        (seq, record.chain, day_of(now)),
        rfc3339_nanos(now),
        0,
    );
    anchor::store(log, Stream::Access, &moved).unwrap();
}

/// E1's inclusion proofs, checked from docs/audit-format.md alone: each exported event a
/// signed digest covers leads to that digest's Merkle root without any other event of its
/// batch, and an altered proof, header or digest does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_event_is_proven_under_its_signed_digest_alone() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "\n[audit]\ndigest_every = 4\n"));
    // One subject's events among another's, in one stream.
    for i in 0..11 {
        let user = if i % 3 == 0 { "u-41" } else { "u-other" };
        // Fractions too: the manifest's canonical form writes them as ECMAScript does.
        let event = json!({"type": "data.update", "outcome": "success",
                           "actor": {"user_id": user},
                           "details": {"n": i, "amount": 12.5, "rate": 1e-7, "big": 1e21}});
        let reply = admin(&seawall, Method::POST, "/admin/audit/events", event, &[]).await;
        assert_eq!(reply.status, 201, "{}", reply.text());
    }
    let body = json!({"identifiers": [{"type": "user_id", "value": "u-41"}]});
    let reply = admin(&seawall, Method::POST, "/admin/gdpr/export", body, &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let export = reply.json();
    assert_eq!(export["counts"], json!({"data_change": 4}), "{export}");
    let public_key = admin_get(&seawall, "/admin/audit/pubkey").await.json()["public_key"].clone();
    let check = |export: &Value| {
        let input = json!({"public_key": public_key, "export": export});
        python_check(
            "verify_audit.py",
            &["--export".as_ref()],
            &input.to_string(),
        )
    };

    let (passed, report) = check(&export);
    assert!(passed, "{report}");
    let counts: Vec<u64> = report
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [proven, digests, pending] = counts[..] else {
        panic!("{report}")
    };
    assert!(
        proven >= 2 && digests >= 1 && proven + pending == 4,
        "a digest every 4 events covers most of them: {report}"
    );
    let first = export["events"]
        .as_array()
        .unwrap()
        .iter()
        .position(|e| !e["integrity"]["proof"].is_null())
        .unwrap();
    assert_eq!(
        export["events"][first]["your_data"]["details"]["rate"],
        json!(1e-7),
        "{export}"
    );
    let path = &export["events"][first]["integrity"]["proof"]["path"];
    assert!(!path.as_array().unwrap().is_empty(), "{export}");

    // A sibling hash changed: the path leads elsewhere.
    let mut altered = export.clone();
    altered["events"][first]["integrity"]["proof"]["path"][0] = json!("00".repeat(32));
    let (passed, report) = check(&altered);
    assert!(!passed && report.contains("inclusion proof"), "{report}");
    // The header changed: its leaf is another.
    let mut altered = export.clone();
    let header = altered["events"][first]["integrity"]["header"]
        .as_str()
        .unwrap()
        .replace("\"success\"", "\"failure\"");
    altered["events"][first]["integrity"]["header"] = json!(header);
    let (passed, report) = check(&altered);
    assert!(!passed && report.contains(": leaf"), "{report}");
    // The signed root changed: the digest's signature fails.
    let mut altered = export.clone();
    altered["digests"][0]["batch_merkle_root"] = json!("11".repeat(32));
    let (passed, report) = check(&altered);
    assert!(!passed && report.contains("signature"), "{report}");
    // The subject's own data changed: only the manifest covers it.
    let mut altered = export.clone();
    altered["events"][first]["your_data"]["details"]["amount"] = json!(12.25);
    let (passed, report) = check(&altered);
    assert!(
        !passed && report.contains("manifest: the document is not the one it signed"),
        "{report}"
    );

    // seawall's own offline checker, as a holder of the export would run it, agrees.
    let pubkey = public_key.as_str().unwrap();
    let (status, report) = verify_export_command(&export, pubkey);
    assert_eq!((status, &report["ok"]), (Some(0), &json!(true)), "{report}");
    assert_eq!(
        (&report["proven"], &report["unproven"]),
        (&json!(proven), &json!(pending)),
        "{report}"
    );
    let mut altered = export.clone();
    altered["events"][first]["integrity"]["proof"]["path"][0] = json!("00".repeat(32));
    let (status, report) = verify_export_command(&altered, pubkey);
    assert_eq!(status, Some(1), "{report}");
    assert_eq!(
        report["broken"],
        json!({"list": "manifest", "index": 0, "kind": "content"})
    );
}

/// `seawall audit verify-export --pubkey KEY -` with `export` on standard input: the exit
/// status and the JSON report.
fn verify_export_command(export: &Value, pubkey: &str) -> (Option<i32>, Value) {
    let (status, stdout, stderr) = run_verify_export(pubkey, "-", &export.to_string());
    let report = serde_json::from_str(&stdout).unwrap_or_else(|_| panic!("{stderr}"));
    (status, report)
}

/// `seawall audit verify-export --pubkey KEY FILE` with `input` on standard input: the exit
/// status, standard output and standard error.
fn run_verify_export(pubkey: &str, file: &str, input: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_seawall"))
        .args(["audit", "verify-export", "--pubkey", pubkey, file])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A command that fails before reading its input closes the pipe early.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr),
    )
}

#[test]
fn verify_export_says_what_it_cannot_check() {
    let key: String = ed25519_dalek::SigningKey::from_bytes(&[7; 32])
        .verifying_key()
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let key = key.as_str();
    let cases = [
        (
            "not-a-key",
            "-",
            "{}",
            64,
            "--pubkey must be a 64-digit hex",
        ),
        (key, "-", "not json", 1, "not JSON"),
        (key, "-", r#"{"events": []}"#, 1, "no \"digests\" list"),
        (
            key,
            "/nonexistent/export.json",
            "",
            1,
            "cannot read /nonexistent/export.json",
        ),
    ];
    for (pubkey, file, input, status, message) in cases {
        let (code, stdout, stderr) = run_verify_export(pubkey, file, input);
        assert_eq!(code, Some(status), "{input}: {stderr}");
        assert!(stderr.contains(message), "{input}: {stderr}");
        assert!(stdout.is_empty(), "no report: {stdout}");
    }
}
