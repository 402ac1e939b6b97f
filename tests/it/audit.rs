//! The audit trail over real HTTP: redaction end to end (A1), coverage under concurrency (B3),
//! admin and application events, client aborts, durability across shutdown and `kill -9`,
//! online backups and a restore. Stored events are read back with seawall's own library from
//! the data directory once the process has exited.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use seawall::audit::event::{Record, Stream};
use seawall::audit::keys::Keyring;
use seawall::audit::log::AuditLog;
use seawall::audit::{open_parts, verify};
use seawall::config::StoreConfig;
use seawall::store::Store;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::backend::Backend;
use crate::support::{
    ADMIN_TOKEN, PROCESS_TIMEOUT, Seawall, admin_get, assert_error, full, get, metric, send,
    try_send,
};

pub(crate) fn config(backend: &Backend, extra: &str) -> String {
    format!(
        r#"
[server]
max_connections = 4096

[features]
audit_trail = true

[upstreams.app]
url = "{}"
max_connections = 256

[[routes]]
name = "api"
match = "/api/*"
upstream = "app"
strip_prefix = "/api"
{extra}
"#,
        backend.url()
    )
}

/// The stored trail of a stopped seawall, read with the library.
pub(crate) struct Stored {
    pub(crate) log: AuditLog,
    _store: Store,
}

impl Stored {
    pub(crate) fn open(data_dir: &Path) -> Stored {
        let config = StoreConfig {
            data_dir: data_dir.to_path_buf(),
            cache_capacity_bytes: 16 << 20,
        };
        let store = Store::open_when_free(&config, PROCESS_TIMEOUT).expect("the store reopens");
        let keyring = Arc::new(Keyring::open(data_dir).unwrap());
        let log = AuditLog::open(&store, keyring, "seawall").unwrap();
        Stored { log, _store: store }
    }

    pub(crate) fn records(&self, stream: Stream) -> Vec<(u64, Record)> {
        self.log.events(stream).map(Result::unwrap).collect()
    }

    /// Request events of one route.
    fn route_events(&self, stream: Stream, route: &str) -> Vec<(u64, Value)> {
        self.records(stream)
            .into_iter()
            .map(|(seq, r)| (seq, r.header_value()))
            .filter(|(_, h)| h["http"]["route"] == route)
            .collect()
    }

    pub(crate) fn intact(&self, stream: Stream) -> verify::StreamReport {
        let pinned = self.log.keyring.signing_key().verifying_key();
        let report = verify::stream(&self.log, stream, &pinned).unwrap();
        assert_eq!(report.broken, None, "{} chain", stream.as_str());
        report
    }
}

pub(crate) async fn admin(
    seawall: &Seawall,
    method: Method,
    path: &str,
    body: Value,
    extra: &[(&str, &str)],
) -> crate::support::Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    send(
        method,
        &seawall.admin_url(path),
        &headers,
        full(body.to_string()),
    )
    .await
}

/// Every event queued so far is on disk once an application event has been acknowledged:
/// the writer takes the queue in order and that answer waits for the flush.
async fn barrier(seawall: &Seawall) {
    let reply = admin(
        seawall,
        Method::POST,
        "/admin/audit/events",
        json!({"type": "sys.test.barrier", "outcome": "success"}),
        &[],
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
}

/// Polls the query API until `route` has `count` events (they are written once each response
/// body has gone out, a moment after the client has it).
pub(crate) async fn await_events(seawall: &Seawall, route: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    loop {
        barrier(seawall).await;
        let events = query_all(seawall, &format!("route={route}")).await;
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn query_all(seawall: &Seawall, filter: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/audit/events?{filter}&limit=1000&cursor={c}"),
            None => format!("/admin/audit/events?{filter}&limit=1000"),
        };
        let reply = admin_get(seawall, &path).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let page = reply.json();
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return events,
        }
    }
}

/// Every file under `dir`, as bytes.
pub(crate) fn all_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_bytes(&path));
        } else {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a1_no_secret_canary_is_stored_or_served() {
    let backend = Backend::start().await;
    let mut seawall = Seawall::start(&config(
        &backend,
        "audit = { level = \"request_response\" }",
    ));
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJjYW5hcnkiOiJqd3QtNzcxIn0.Y2FuYXJ5LXNpZ25hdHVyZS03NzE";
    let canaries = [
        "canary-authorization-5501",
        "canary-cookie-5502",
        "canary-access-token-5503",
        "canary-signature-5504",
        "canary-pass-word-5505",
        "canary-client-secret-5506",
        "canary-url-password-5507",
        "4111111111111111",
        "4111 1111 1111 1111",
        jwt,
        "canary-pem-body-5508",
        "canary-nested-api-key-5509",
    ];
    let json_body = json!({
        "visible": "kept-marker-4401",
        "a": [{"Pass-Word": canaries[4]}],
        "deep": {"inner": {"X-API-KEY": canaries[11]}},
        "card": canaries[8],
        "token_in_text": format!("see {jwt} here"),
        "pem": format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----", canaries[10]),
        "link": format!("https://operator:{}@db.example/x", canaries[6]),
    });
    let query = format!(
        "/api/headers?access_token={}&sig={}&page=2",
        canaries[2], canaries[3]
    );
    let auth = format!("Bearer {}", canaries[0]);
    let cookie = format!("session={}", canaries[1]);
    let headers = [
        ("authorization", auth.as_str()),
        ("cookie", cookie.as_str()),
        ("user-agent", "canary-agent/1.0"),
    ];
    assert_eq!(
        send(
            Method::GET,
            &seawall.proxy_url(&query),
            &headers,
            full(Bytes::new())
        )
        .await
        .status,
        200
    );
    let echoed = send(
        Method::POST,
        &seawall.proxy_url("/api/echo"),
        &[("content-type", "application/json")],
        full(json_body.to_string()),
    )
    .await;
    assert_eq!(echoed.status, 200);
    let form = format!(
        "client_secret={}&scope=read&card=4111111111111111",
        canaries[5]
    );
    let form_headers = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(
        send(
            Method::POST,
            &seawall.proxy_url("/api/echo"),
            &form_headers,
            full(form)
        )
        .await
        .status,
        200
    );

    // A8: fields past their limits are cut after redaction, so a JWT straddling the user
    // agent's limit is redacted whole, not kept in part.
    let long_agent = format!("{} {jwt}", "a".repeat(500));
    let long_path = format!("/api/headers/{}", "p".repeat(3000));
    send(
        Method::GET,
        &seawall.proxy_url(&long_path),
        &[("user-agent", long_agent.as_str())],
        full(Bytes::new()),
    )
    .await;

    let served = await_events(&seawall, "api", 4).await;
    assert_eq!(served.len(), 4);
    let cut: Vec<&Value> = served
        .iter()
        .filter_map(|event| event["redactions"]["truncated"].as_u64().map(|_| event))
        .collect();
    assert_eq!(cut.len(), 1, "{served:?}");
    assert_eq!(cut[0]["redactions"]["truncated"], 2, "path and user agent");
    // In the user agent, and again in the response body, which echoes the request's headers.
    assert_eq!(cut[0]["redactions"]["jwt"], 2);
    let served_text = serde_json::to_string(&served).unwrap();
    for canary in canaries {
        assert!(
            !served_text.contains(canary),
            "{canary} in the query API's output"
        );
    }
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());

    for (file, bytes) in all_bytes(&seawall.data_dir()) {
        for canary in canaries {
            assert!(!contains(&bytes, canary), "{canary} in {file}");
        }
    }
    // Sealed parts are encrypted and stored headers compressed, so the byte scan alone proves
    // little about them: decode and open them.
    let stored = Stored::open(&seawall.data_dir());
    let mut opened = String::new();
    for (_, record) in stored.records(Stream::Access) {
        opened.push_str(&record.header);
        opened.push_str(&serde_json::to_string(&open_parts(&stored.log, &record)).unwrap());
    }
    for canary in canaries {
        assert!(
            !opened.contains(canary),
            "{canary} in a stored header or sealed part: {opened}"
        );
    }
    assert!(
        opened.contains("kept-marker-4401"),
        "bodies were captured: {opened}"
    );
    assert!(
        opened.contains("canary-agent/1.0"),
        "the user agent is kept, sealed"
    );
    assert!(
        !opened.contains("eyJ"),
        "no part of a JWT is kept: {opened}"
    );
    assert!(opened.contains(&format!("/api/headers/{}\"", "p".repeat(2048 - 13))));
    assert!(
        opened.contains("access_token=REDACTED"),
        "query keys are kept: {opened}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b3_ten_thousand_concurrent_requests_give_ten_thousand_gapless_events() {
    const REQUESTS: usize = 10_000;
    let backend = Backend::start().await;
    let mut seawall = Seawall::start(&config(&backend, ""));
    let url = Arc::new(seawall.proxy_url("/api/status/204"));
    let limit = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = Vec::with_capacity(REQUESTS);
    for _ in 0..REQUESTS {
        let (url, limit) = (url.clone(), limit.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            get(&url).await.status.as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 204);
    }
    let events = await_events(&seawall, "api", REQUESTS).await;
    assert_eq!(events.len(), REQUESTS);
    let mut seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), REQUESTS, "unique sequence numbers");
    assert_eq!(
        seqs.last().unwrap() - seqs[0] + 1,
        REQUESTS as u64,
        "gapless"
    );
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "http.read" && e["http"]["status_code"] == 204)
    );
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    assert_eq!(
        crate::support::metric(&metrics, "seawall_audit_events_dropped_total"),
        Some(0.0)
    );

    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    let stored = Stored::open(&seawall.data_dir());
    let report = stored.intact(Stream::Access);
    assert_eq!(report.events, REQUESTS as u64);
    assert_eq!(
        (report.first_seq, report.last_seq),
        (Some(0), Some(REQUESTS as u64 - 1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_application_events_and_aborts_are_recorded() {
    let mut backend = Backend::start().await;
    let mut seawall = Seawall::start(&config(&backend, ""));

    let actor = [("x-seawall-actor", "alice@example.org")];
    let patch = json!({"enabled": true});
    let created = admin(
        &seawall,
        Method::PATCH,
        "/admin/flags/seawall.circuit-breaker",
        patch,
        &actor,
    )
    .await;
    assert!(created.status.is_success(), "{}", created.text());
    let changes = query_all(&seawall, "type=admin.flags.*").await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (
            changes[0]["stream"].as_str(),
            changes[0]["outcome"].as_str()
        ),
        (Some("security"), Some("success"))
    );
    let refused = send(
        Method::DELETE,
        &seawall.admin_url("/admin/flags/seawall.circuit-breaker"),
        &[],
        full(Bytes::new()),
    )
    .await;
    assert_eq!(refused.status, 401);

    let app = json!({"type": "data.export", "outcome": "success", "actor": {"user_id": "u-1"}, "target": {"email": "jane@example.org"}, "details": {"format": "csv"}});
    let appended = admin(&seawall, Method::POST, "/admin/audit/events", app, &[]).await;
    assert_eq!(appended.status, 201, "{}", appended.text());
    assert_eq!(appended.json()["stream"], "data_change");
    let bad = admin(
        &seawall,
        Method::POST,
        "/admin/audit/events",
        json!({"type": "data.export", "outcome": "success", "target": {"phone": "1"}}),
        &[],
    )
    .await;
    assert_error(&bad, 400, "VALIDATION_FAILED");
    assert_eq!(bad.json()["field"], "target.phone");
    assert_error(
        &admin_get(&seawall, "/admin/audit/events?stream=nope").await,
        400,
        "VALIDATION_FAILED",
    );

    // A client that goes away before the answer still leaves an event, with status 499.
    let hold = seawall.proxy_url("/api/hold");
    let abandoned = tokio::spawn(async move { get(&hold).await });
    tokio::time::timeout(PROCESS_TIMEOUT, backend.slow_started.recv())
        .await
        .unwrap();
    abandoned.abort();
    let aborted = await_events(&seawall, "api", 1).await;
    assert_eq!(aborted[0]["http"]["status_code"], 499);
    assert_eq!(
        (
            aborted[0]["outcome"].as_str(),
            aborted[0]["reason"].as_str()
        ),
        (Some("failure"), Some("client_closed"))
    );
    backend.release();

    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    let stored = Stored::open(&seawall.data_dir());
    let security = stored.records(Stream::Security);
    let flag_change = security
        .iter()
        .find(|(_, r)| r.header_value()["type"] == "admin.flags.update")
        .expect("flag change");
    let parts = open_parts(&stored.log, &flag_change.1);
    assert_eq!(parts["actor"]["user_id"], "alice@example.org");
    assert_eq!(parts["details"]["request"]["enabled"], true);
    assert!(
        security
            .iter()
            .any(|(_, r)| r.header_value()["type"] == "authn.fail"),
        "the refused call is a security event"
    );
    let export = stored.records(Stream::DataChange);
    assert_eq!(
        open_parts(&stored.log, &export[0].1)["target"]["email"],
        "jane@example.org"
    );
    let system: Vec<Value> = stored
        .records(Stream::System)
        .iter()
        .map(|(_, r)| r.header_value())
        .collect();
    for lifecycle in ["sys.startup", "sys.shutdown", "sys.retention.run"] {
        assert!(
            system.iter().any(|h| h["type"] == lifecycle),
            "{lifecycle} in {system:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_never_hold_the_identifiers_they_are_about() {
    let backend = Backend::start().await;
    let mut seawall = Seawall::start(&config(&backend, "audit = { level = \"request\" }"));
    let planted = [
        "planted.person@example.org",
        "planted-user-9931",
        "planted-key-9932",
        "198.51.100.23",
        "/api/echo/planted-path-9933",
        "planted-agent-9934",
    ];
    let app = json!({"type": "data.update", "outcome": "success", "actor": {"user_id": planted[1], "api_key_id": planted[2]}, "target": {"email": planted[0], "ip": planted[3]}});
    assert_eq!(
        admin(&seawall, Method::POST, "/admin/audit/events", app, &[])
            .await
            .status,
        201
    );
    let headers = [
        ("user-agent", planted[5]),
        ("content-type", "application/json"),
    ];
    let body = json!({"email": planted[0], "note": planted[1]}).to_string();
    send(
        Method::POST,
        &seawall.proxy_url(&format!("{}?user={}", planted[4], planted[1])),
        &headers,
        full(body),
    )
    .await;
    await_events(&seawall, "api", 1).await;
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());

    let stored = Stored::open(&seawall.data_dir());
    let mut headers_seen = 0;
    for stream in Stream::ALL {
        for (_, record) in stored.records(stream) {
            headers_seen += 1;
            for identifier in planted.iter().chain(["127.0.0.1"].iter()) {
                assert!(
                    !record.header.contains(identifier),
                    "{identifier} in {}",
                    record.header
                );
            }
        }
    }
    assert!(
        headers_seen >= 4,
        "app event, request, barriers and lifecycle events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_keeps_every_acknowledged_event_and_kill_loses_at_most_a_flush_interval() {
    const ACKNOWLEDGED: usize = 300;
    let backend = Backend::start().await;
    let dir = Arc::new(TempDir::new().unwrap());
    let mut seawall = Seawall::start_in(dir.clone(), &config(&backend, ""), &[]);
    for _ in 0..ACKNOWLEDGED {
        assert_eq!(get(&seawall.proxy_url("/api/status/200")).await.status, 200);
    }
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    {
        let stored = Stored::open(&seawall.data_dir());
        assert_eq!(
            stored.route_events(Stream::Access, "api").len(),
            ACKNOWLEDGED,
            "graceful shutdown drains the queue"
        );
        stored.intact(Stream::Access);
    }

    // kill -9: what a barrier has flushed survives; the rest is at most one interval.
    let mut seawall = Seawall::start_in(dir.clone(), &config(&backend, ""), &[]);
    for _ in 0..100 {
        assert_eq!(get(&seawall.proxy_url("/api/status/200")).await.status, 200);
    }
    await_events(&seawall, "api", ACKNOWLEDGED + 100).await;
    for _ in 0..50 {
        assert_eq!(get(&seawall.proxy_url("/api/status/200")).await.status, 200);
    }
    seawall.kill();
    let stored = Stored::open(&seawall.data_dir());
    let kept = stored.route_events(Stream::Access, "api").len();
    assert!(
        (ACKNOWLEDGED + 100..=ACKNOWLEDGED + 150).contains(&kept),
        "{kept} events after kill -9"
    );
    stored.intact(Stream::Access);
    for stream in Stream::ALL {
        stored.intact(stream);
    }
    drop(stored);

    // The store reopens without repair and the chain continues.
    let mut seawall = Seawall::start_in(dir, &config(&backend, ""), &[]);
    assert_eq!(get(&seawall.proxy_url("/api/status/200")).await.status, 200);
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    assert_eq!(metric(&metrics, "seawall_unclean_start"), Some(1.0));
    await_events(&seawall, "api", kept + 1).await;
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    let stored = Stored::open(&seawall.data_dir());
    assert_eq!(stored.intact(Stream::Access).events as usize, kept + 1);

    // The trail says where a run ended without a shutdown: one sys.crash, at the start after
    // the kill, naming when the killed run started; none after the graceful stop.
    let lifecycle: Vec<Value> = stored
        .records(Stream::System)
        .into_iter()
        .map(|(_, record)| record.header_value())
        .filter(|h| {
            h["type"]
                .as_str()
                .is_some_and(|t| ["sys.startup", "sys.shutdown", "sys.crash"].contains(&t))
        })
        .collect();
    let types: Vec<&str> = lifecycle
        .iter()
        .map(|h| h["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "sys.startup",
            "sys.shutdown",
            "sys.startup",
            "sys.crash",
            "sys.startup",
            "sys.shutdown"
        ]
    );
    let crash = &lifecycle[3];
    assert_eq!(crash["outcome"], "failure");
    // RFC 3339 in UTC with nanoseconds: compared as text. The killed run started after the
    // first run's shutdown and before its own sys.startup.
    let text = |h: &Value, field: &str| h[field].as_str().unwrap().to_string();
    let previous_start = text(crash, "previous_start");
    assert!(
        text(&lifecycle[1], "time") < previous_start
            && previous_start < text(&lifecycle[2], "time"),
        "{lifecycle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_online_backups_verify_and_one_restores() {
    let backend = Backend::start().await;
    let mut seawall = Seawall::start(&config(&backend, ""));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (url, stop) = (seawall.proxy_url("/api/status/200"), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                assert_eq!(get(&url).await.status, 200);
                sent += 1;
            }
            sent
        })
    };
    let mut reports = Vec::new();
    for i in 0..20 {
        let body = if i == 7 {
            json!({"to": "kept/seventh"})
        } else {
            json!({})
        };
        let reply = admin(&seawall, Method::POST, "/admin/backup", body, &[]).await;
        assert_eq!(reply.status, 201, "backup {i}: {}", reply.text());
        reports.push(reply.json());
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(load.await.unwrap() > 0);
    let events: Vec<u64> = reports
        .iter()
        .map(|r| r["audit"]["access"]["events"].as_u64().unwrap())
        .collect();
    assert!(events.windows(2).all(|w| w[0] <= w[1]), "{events:?}");
    assert!(
        events[19] > events[0],
        "requests were audited during the backups: {events:?}"
    );
    let escaping = admin(
        &seawall,
        Method::POST,
        "/admin/backup",
        json!({"to": "../outside"}),
        &[],
    )
    .await;
    assert_error(&escaping, 400, "VALIDATION_FAILED");
    let seventh = &reports[7];
    assert!(seventh["path"].as_str().unwrap().ends_with("kept/seventh"));
    // Of the 19 default backups, the newest 7 (`backup.keep`) are kept: each one past the
    // seventh deleted the oldest. The named one is the operator's.
    let kept = std::fs::read_dir(seawall.data_dir().join("backups"))
        .unwrap()
        .count();
    assert_eq!(kept, 7);
    let pruned: Vec<&str> = reports
        .iter()
        .flat_map(|r| r["pruned"].as_array().unwrap())
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(pruned.len(), 12, "{pruned:?}");
    assert!(pruned.iter().all(|p| !Path::new(p).exists()));
    assert_eq!(pruned[0], reports[0]["path"].as_str().unwrap());

    // Restore: the backup directory becomes the data directory of a new server.
    let restored_dir = Arc::new(TempDir::new().unwrap());
    copy_tree(
        Path::new(seventh["path"].as_str().unwrap()),
        &restored_dir.path().join("data"),
    );
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    let mut restored = Seawall::start_in(restored_dir, &config(&backend, ""), &[]);
    let served = query_all(&restored, "stream=access&route=api").await;
    assert_eq!(
        served.len() as u64,
        seventh["audit"]["access"]["events"].as_u64().unwrap()
    );
    restored.signal("TERM");
    assert!(restored.wait_exit(PROCESS_TIMEOUT).success());

    // The offline command backs up a stopped server.
    let offline_to = seawall.dir.path().join("offline-copy");
    let output = crate::support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_seawall"))
            .args(["backup", "--to"])
            .arg(&offline_to)
            .env_clear()
            .env("SEAWALL_DATA_DIR", seawall.data_dir()),
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(report["audit"]["access"]["events"].as_u64().unwrap() >= events[19]);
}

/// `seawall backup --to DIR` works on what is there: a folder that is no data directory (a
/// mistyped path) is refused rather than backed up as a new, empty store, and a destination
/// inside the store or the keys (however it is spelled) is refused rather than copied into
/// itself without end. Neither leaves anything behind.
#[test]
fn the_offline_backup_refuses_a_folder_that_is_no_data_directory_or_a_copy_into_itself() {
    let mut seawall = Seawall::start("");
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    let data = seawall.data_dir();
    let work = TempDir::new().unwrap();
    let backup = |data_dir: &Path, to: &Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_seawall"))
            .args(["backup", "--to"])
            .arg(to)
            .env_clear()
            .env("SEAWALL_DATA_DIR", data_dir)
            .current_dir(&data)
            .output()
            .unwrap();
        assert!(!out.status.success(), "backup --to {to:?} succeeded");
        assert!(!to.exists(), "backup --to {to:?} left it behind");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let mistyped = work.path().join("no-such-data");
    let refusal = backup(&mistyped, &work.path().join("copy"));
    assert!(
        refusal.contains("is not a seawall data directory"),
        "{refusal}"
    );
    assert!(!mistyped.exists(), "no store was created in {mistyped:?}");

    std::os::unix::fs::symlink(data.join("store"), work.path().join("link")).unwrap();
    for inside in [
        data.join("store/copy"),
        data.join("keys/copy"),
        data.join("keys/../store/copy"),
        Path::new("store/copy").to_path_buf(),
        work.path().join("link/copy"),
    ] {
        let refusal = backup(&data, &inside);
        assert!(refusal.contains("which the backup copies"), "{refusal}");
    }
}

/// The watermark (`audit::watermark`): a store restored in place from an older backup holds
/// fewer events than the previous run flushed, and the next start says so (an
/// `integrity.rollback` event naming the streams, the gauge, a log line) instead of appending
/// as if nothing had happened. Once: the start after it finds nothing behind. A deliberate
/// restore that removes the watermark, as the README's procedure says, reports nothing. A
/// store swapped for another machine's, longer one is reported as another chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_in_place_is_reported_as_a_rollback() {
    let backend = Backend::start().await;
    let configuration = config(&backend, "");
    let dir = Arc::new(TempDir::new().unwrap());
    async fn requests(seawall: &Seawall, n: usize) {
        for _ in 0..n {
            assert_eq!(get(&seawall.proxy_url("/api/status/200")).await.status, 200);
        }
    }
    async fn rollbacks(seawall: &Seawall) -> Vec<Value> {
        query_all(seawall, "stream=system&type=integrity.rollback").await
    }
    /// The `access` entry of the one `integrity.rollback` event reported.
    fn access_entry(reported: &[Value]) -> Value {
        assert_eq!(reported.len(), 1, "{reported:?}");
        reported[0]["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stream"] == "access")
            .cloned()
            .unwrap_or_else(|| panic!("{reported:?}"))
    }
    /// The gauge, read first after each start; a failure carries seawall's log.
    async fn rolled_back(seawall: &Seawall) -> Option<f64> {
        let url = seawall.admin_url("/metrics");
        match try_send(Method::GET, &url, &[], full(Bytes::new())).await {
            Ok(reply) => metric(&reply.text(), "seawall_audit_store_rolled_back"),
            Err(e) => panic!("GET /metrics: {e}; seawall's log:\n{}", seawall.logs()),
        }
    }
    let mut seawall = Seawall::start_in(dir.clone(), &configuration, &[]);
    requests(&seawall, 3).await;
    await_events(&seawall, "api", 3).await;
    let backup = admin(&seawall, Method::POST, "/admin/backup", json!({}), &[]).await;
    assert_eq!(backup.status, 201, "{}", backup.text());
    let backup = PathBuf::from(backup.json()["path"].as_str().unwrap());
    requests(&seawall, 5).await;
    await_events(&seawall, "api", 8).await;
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());
    let data_dir = seawall.data_dir();
    assert!(data_dir.join("audit-watermark.json").is_file());
    assert!(
        !backup.join("audit-watermark.json").exists(),
        "backups leave the watermark out"
    );
    let restore = || {
        for folder in ["store", "keys"] {
            std::fs::remove_dir_all(data_dir.join(folder)).unwrap();
        }
        copy_tree(&backup, &data_dir);
    };

    restore();
    let mut restored = Seawall::start_in(dir.clone(), &configuration, &[]);
    assert_eq!(rolled_back(&restored).await, Some(1.0));
    barrier(&restored).await;
    let reported = rollbacks(&restored).await;
    let access = access_entry(&reported);
    assert_eq!(reported[0]["outcome"], "failure");
    // The five requests after the backup and their events are what the store lost; the
    // backup's own admin event too.
    assert!(access["missing_events"].as_u64().unwrap() >= 5, "{access}");
    assert_eq!(access["chain_differs"], false);
    assert!(restored.logs().contains("recorded as integrity.rollback"));
    restored.signal("TERM");
    assert!(restored.wait_exit(PROCESS_TIMEOUT).success());

    let mut again = Seawall::start_in(dir.clone(), &configuration, &[]);
    assert_eq!(rolled_back(&again).await, Some(0.0));
    assert_eq!(rollbacks(&again).await.len(), 1, "reported once");
    again.signal("TERM");
    assert!(again.wait_exit(PROCESS_TIMEOUT).success());

    restore();
    std::fs::remove_file(data_dir.join("audit-watermark.json")).unwrap();
    let mut deliberate = Seawall::start_in(dir.clone(), &configuration, &[]);
    assert_eq!(rolled_back(&deliberate).await, Some(0.0));
    barrier(&deliberate).await;
    assert!(rollbacks(&deliberate).await.is_empty());
    deliberate.signal("TERM");
    assert!(deliberate.wait_exit(PROCESS_TIMEOUT).success());

    // Another machine's store and keys, with more events than this one ever had: not behind,
    // but not the trail the watermark was taken of.
    let mut other = Seawall::start(&configuration);
    requests(&other, 30).await;
    await_events(&other, "api", 30).await;
    other.signal("TERM");
    assert!(other.wait_exit(PROCESS_TIMEOUT).success());
    for folder in ["store", "keys"] {
        std::fs::remove_dir_all(data_dir.join(folder)).unwrap();
        copy_tree(&other.data_dir().join(folder), &data_dir.join(folder));
    }
    let mut swapped = Seawall::start_in(dir, &configuration, &[]);
    assert_eq!(rolled_back(&swapped).await, Some(1.0));
    barrier(&swapped).await;
    let access = access_entry(&rollbacks(&swapped).await);
    assert_eq!(access["chain_differs"], true);
    assert_eq!(access["missing_events"], 0);
    assert!(access["store_next_seq"].as_u64() > access["watermark_next_seq"].as_u64());
    swapped.signal("TERM");
    assert!(swapped.wait_exit(PROCESS_TIMEOUT).success());
}

/// A restore that brings the store back without its `keys/`, without its pseudonym key, or
/// with another store's keys, stops the start and names the way back, creating no keys: new
/// ones would leave the sealed parts unreadable and stored subjects unfindable for erasure.
/// With its own keys back, the store starts and verifies. (A lost signing key alone is made
/// anew and reported by verification: `gdpr::scheduled_verification_records_its_result`.)
#[tokio::test]
async fn a_store_without_its_own_keys_does_not_start() {
    let dir = Arc::new(TempDir::new().unwrap());
    let mut first = Seawall::start_in(dir.clone(), "", &[]);
    first.signal("TERM");
    assert!(first.wait_exit(PROCESS_TIMEOUT).success());
    let keys = first.data_dir().join("keys");
    let kept = dir.path().join("kept-keys");
    std::fs::rename(&keys, &kept).unwrap();
    let config_file = dir.path().join("seawall.toml");
    std::fs::write(&config_file, "").unwrap();

    let (code, stderr) = crate::support::run_until_exit(dir.path(), &config_file, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the audit keys this store was written with are not in"),
        "{stderr}"
    );
    assert!(stderr.contains("keys is missing"), "{stderr}");
    assert!(!keys.exists(), "no new keys were created");

    let mut other = Seawall::start("");
    other.signal("TERM");
    assert!(other.wait_exit(PROCESS_TIMEOUT).success());
    copy_tree(&other.data_dir().join("keys"), &keys);
    let (code, stderr) = crate::support::run_until_exit(dir.path(), &config_file, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("another store's"), "{stderr}");

    std::fs::remove_dir_all(&keys).unwrap();
    std::fs::rename(&kept, &keys).unwrap();
    let pseudonym_key = keys.join("pseudonym.key");
    let kept_key = dir.path().join("kept-pseudonym.key");
    std::fs::rename(&pseudonym_key, &kept_key).unwrap();
    let (code, stderr) = crate::support::run_until_exit(dir.path(), &config_file, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("pseudonym.key is missing"), "{stderr}");
    assert!(!pseudonym_key.exists(), "no new pseudonym key was made");

    std::fs::rename(&kept_key, &pseudonym_key).unwrap();
    let mut restored = Seawall::start_in(dir, "", &[]);
    let verified = admin_get(&restored, "/admin/audit/verify").await;
    assert_eq!(verified.status, 200, "{}", verified.text());
    assert_eq!(verified.json()["ok"], true, "{}", verified.text());
    restored.signal("TERM");
    assert!(restored.wait_exit(PROCESS_TIMEOUT).success());
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `blocking-strict` (research/audit.md §1.5, B4): the request's arrival is on disk before the
/// upstream sees it, so a `kill -9` while the upstream is working cannot lose it. (The chaos
/// test of a full volume checks the refusal.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_strict_request_is_on_disk_before_the_upstream_sees_it() {
    let mut backend = Backend::start().await;
    let dir = Arc::new(TempDir::new().unwrap());
    let strict = r#"audit = { level = "metadata", durability = "blocking-strict" }"#;
    let mut seawall = Seawall::start_in(dir.clone(), &config(&backend, strict), &[]);

    // A complete request: its arrival, then its completion, in that order in one stream.
    assert_eq!(get(&seawall.proxy_url("/api/status/201")).await.status, 201);
    let events = await_events(&seawall, "api", 2).await;
    let stages: Vec<(&str, &str, Option<u64>)> = events
        .iter()
        .map(|e| {
            (
                e["stage"].as_str().unwrap_or("complete"),
                e["outcome"].as_str().unwrap(),
                e["http"]["status_code"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        stages,
        [
            ("request_received", "unknown", None),
            ("complete", "success", Some(201))
        ],
        "{events:?}"
    );
    assert!(events[0]["seq"].as_u64() < events[1]["seq"].as_u64());
    let arrivals = query_all(&seawall, "route=api&stage=request_received").await;
    assert_eq!(arrivals, events[..1], "the stage filter");
    assert_eq!(
        events[0]["parts"],
        json!([{"class": "identity", "role": "client"}])
    );

    // The upstream is holding a request when seawall is killed: its arrival survives.
    let hold = seawall.proxy_url("/api/hold");
    let held = tokio::spawn(async move { send(Method::GET, &hold, &[], full("")).await });
    tokio::time::timeout(PROCESS_TIMEOUT, backend.slow_started.recv())
        .await
        .expect("the upstream receives the held request");
    seawall.kill();
    held.abort();
    backend.release();
    let stored = Stored::open(&seawall.data_dir());
    let received = stored
        .route_events(Stream::Access, "api")
        .into_iter()
        .filter(|(_, h)| h["stage"] == "request_received")
        .count();
    assert_eq!(received, 2, "both arrivals are on disk after kill -9");
    stored.intact(Stream::Access);
}

/// B1 (research/audit.md §6): the coverage table says, for every route and method, how its
/// requests are audited and what decided it; the test prints it.
#[tokio::test]
async fn the_coverage_table_names_how_each_route_is_audited() {
    let backend = Backend::start().await;
    let extra = r#"
[[routes]]
name = "payments"
match = "/payments/*"
upstream = "app"
audit = { durability = "blocking-strict" }

[[audit.rules]]
routes = ["api"]
methods = ["POST"]
event = "data.create"
stream = "data_change"
"#;
    let seawall = Seawall::start(&config(&backend, extra));
    let reply = admin_get(&seawall, "/admin/audit/coverage").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let table = reply.json();
    eprintln!("audit coverage:");
    for route in table["routes"].as_array().unwrap() {
        for m in route["methods"].as_array().unwrap() {
            eprintln!(
                "  {:10} {:7} {:16} {:14} {:12} {:15} {}",
                route["route"].as_str().unwrap(),
                m["method"].as_str().unwrap(),
                m["level"].as_str().unwrap(),
                m["event"].as_str().unwrap(),
                m["stream"].as_str().unwrap(),
                m["durability"].as_str().unwrap_or("-"),
                m["decided_by"].as_str().unwrap()
            );
        }
    }
    let cell = |route: &str, method: &str| -> Value {
        table["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .and_then(|r| {
                r["methods"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["method"] == method)
            })
            .cloned()
            .unwrap_or_else(|| panic!("{route} {method} in {table}"))
    };
    let post = cell("api", "POST");
    assert_eq!(
        (&post["event"], &post["stream"], &post["decided_by"]),
        (
            &json!("data.create"),
            &json!("data_change"),
            &json!("rules[0]")
        )
    );
    let get = cell("api", "GET");
    assert_eq!(
        (&get["level"], &get["event"], &get["decided_by"]),
        (&json!("metadata"), &json!("http.read"), &json!("default"))
    );
    let strict = cell("payments", "PUT");
    assert_eq!(
        (&strict["durability"], &strict["decided_by"]),
        (&json!("blocking-strict"), &json!("route"))
    );
    assert_eq!(cell("health", "GET")["level"], "none");
    assert_eq!(cell("unmatched", "OPTIONS")["level"], "none");
    assert_eq!(
        table["feature"],
        json!({"flag": "seawall.audit-trail", "switched_on": true})
    );
    assert_eq!(table["require_explicit_coverage"], false);
}
