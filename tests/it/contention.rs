//! Contention: proxied traffic, the health and metrics readers and every kind of admin write
//! at once (flags, breakers, rate limits, backups, key rotation, erasure), while the background
//! loops (health probes every 100 ms, the audit writer, breaker recording) run. A lock taken twice by one thread, or two locks taken in opposite
//! orders, shows up here as a request that never gets an answer. A net rather than a proof:
//! a deadlock whose window is a few microseconds wide can slip through three seconds of it,
//! so the unit tests of each lock's owner race that window directly (`health::tests`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::json;
use tempfile::TempDir;
use tokio::task::JoinSet;

use crate::backend::Backend;
use crate::support::{ADMIN_TOKEN, Seawall, full, try_send};

/// How long every loop keeps sending.
const RACE: Duration = Duration::from_secs(3);

/// One request a loop sends in turn with the others of its cycle.
struct Call {
    method: Method,
    url: String,
    body: Option<serde_json::Value>,
}

fn call(method: Method, url: String, body: Option<serde_json::Value>) -> Call {
    Call { method, url, body }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_and_admin_writes_racing_the_background_loops_are_all_answered() {
    let backend = Backend::start().await;
    // Audit on at metadata level (the audit tests' configuration), the other three features
    // on, probes every 100 ms, and a quota nothing here reaches.
    let extra = "
[health]
interval_ms = 100

[ratelimit.levels.medium]
quota = 10000000
window_s = 1
";
    let config = crate::audit::config(&backend, extra);
    let features = [
        ("FF_ENABLE_CIRCUIT_BREAKER", "true"),
        ("FF_ENABLE_ENHANCED_POOLING", "true"),
        ("FF_ENABLE_PRIORITIZED_RATE_LIMIT", "true"),
    ];
    let seawall = Arc::new(Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config,
        &features,
    ));
    let admin = |path: &str| seawall.admin_url(path);
    let created = try_send(
        Method::POST,
        &admin("/admin/flags"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        full(json!({"name": "raced", "enabled": true}).to_string()),
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201, "{}", created.text());

    let client = json!({"identifiers": [{"type": "ip", "value": "127.0.0.1"}]});
    let get = |url: String| vec![call(Method::GET, url, None)];
    let cycles: Vec<Vec<Call>> = vec![
        get(admin("/metrics")),
        get(admin("/metrics")),
        get(admin("/metrics")),
        get(admin("/health")),
        get(admin("/health/ready")),
        get(admin("/health/detailed")),
        get(seawall.proxy_url("/api/status/200")),
        get(seawall.proxy_url("/api/status/200")),
        get(admin("/admin/stats")),
        get(admin("/admin/breakers")),
        get(admin("/admin/pools")),
        get(admin("/admin/ratelimits")),
        get(admin("/admin/flags")),
        get(admin("/admin/audit/events?limit=20")),
        vec![
            call(
                Method::PUT,
                admin("/admin/flags/raced"),
                Some(json!({"name": "raced", "enabled": false})),
            ),
            call(
                Method::PUT,
                admin("/admin/flags/raced"),
                Some(json!({"name": "raced", "enabled": true})),
            ),
        ],
        vec![
            call(
                Method::POST,
                admin("/admin/breakers/app/metrics-only"),
                None,
            ),
            call(Method::POST, admin("/admin/breakers/app/reset"), None),
        ],
        vec![
            call(
                Method::PUT,
                admin("/admin/ratelimits/medium"),
                Some(json!({"quota": 1_000_000, "window_s": 1})),
            ),
            call(Method::DELETE, admin("/admin/ratelimits/medium"), None),
        ],
        vec![call(
            Method::POST,
            admin("/admin/audit/events"),
            Some(json!({"type": "sys.test.contention", "outcome": "success"})),
        )],
        vec![call(Method::POST, admin("/admin/backup"), Some(json!({})))],
        get(admin("/admin/audit/verify")),
        // Rotation, erasure and export take the audit key and maintenance locks the writer
        // and retention take too; the client erased is the one whose requests are audited.
        vec![call(Method::POST, admin("/admin/audit/keys/rotate"), None)],
        vec![
            call(
                Method::POST,
                admin("/admin/gdpr/erase"),
                Some(client.clone()),
            ),
            call(Method::POST, admin("/admin/gdpr/export"), Some(client)),
        ],
    ];

    let deadline = Instant::now() + RACE;
    let mut loops = JoinSet::new();
    for cycle in cycles {
        let seawall = seawall.clone();
        loops.spawn(async move {
            let auth = format!("Bearer {ADMIN_TOKEN}");
            let mut sent = 0;
            for call in cycle.iter().cycle() {
                if Instant::now() >= deadline {
                    break;
                }
                let body = call
                    .body
                    .as_ref()
                    .map_or(Bytes::new(), |b| b.to_string().into());
                let reply = try_send(
                    call.method.clone(),
                    &call.url,
                    &[
                        ("authorization", &auth),
                        ("content-type", "application/json"),
                    ],
                    full(body),
                )
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "{} {}: {e}; seawall's log:\n{}",
                        call.method,
                        call.url,
                        seawall.logs()
                    )
                });
                assert!(
                    reply.status.is_success(),
                    "{} {}: {} {}; seawall's log:\n{}",
                    call.method,
                    call.url,
                    reply.status,
                    reply.text(),
                    seawall.logs()
                );
                sent += 1;
            }
            (cycle[0].url.clone(), sent)
        });
    }
    while let Some(finished) = loops.join_next().await {
        let (url, sent) = finished.unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        assert!(sent > 0, "{url}: nothing was sent");
    }
    // Still serving after the race, and the trail written meanwhile verifies.
    let ready = try_send(
        Method::GET,
        &admin("/health/ready"),
        &[],
        full(Bytes::new()),
    )
    .await
    .unwrap();
    assert_eq!(ready.status, 200, "{}", ready.text());
    let verified = try_send(
        Method::GET,
        &admin("/admin/audit/verify"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        full(Bytes::new()),
    )
    .await
    .unwrap();
    assert_eq!(verified.json()["ok"], true, "{}", verified.text());
}
