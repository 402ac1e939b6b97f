//! Prioritized rate limiting over HTTP: the exact wire format, per-client quotas, custom and
//! dry-run policies, runtime changes, and overload shedding in level order.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::backend::Backend;
use crate::support::{
    ADMIN_TOKEN, PROCESS_TIMEOUT, Reply, Seawall, admin_get, assert_error, full, get, metric,
    named, send,
};

const ON: [(&str, &str); 1] = [("FF_ENABLE_PRIORITIZED_RATE_LIMIT", "true")];

fn config(backend: &Backend, server: &str, ratelimit: &str) -> String {
    let mut routes = String::new();
    for level in ["critical", "high", "medium", "low", "strict"] {
        routes.push_str(&format!(
            "[[routes]]\nname = \"{level}\"\nmatch = \"/{level}/*\"\nupstream = \"app\"\nstrip_prefix = \"/{level}\"\npriority = \"{level}\"\n\n"
        ));
    }
    format!(
        r#"
[server]
{server}

[ratelimit]
{ratelimit}

[ratelimit.policies."ai.chat"]
quota = 3
window_s = 60

[upstreams.app]
url = "{}"
max_connections = 400

{routes}
[[routes]]
name = "chat"
match = "/chat/*"
upstream = "app"
strip_prefix = "/chat"
priority = "low"
rate_limit = "ai.chat"

[[routes]]
name = "chat-vip"
match = "/chat-vip/*"
upstream = "app"
strip_prefix = "/chat-vip"
priority = "high"
rate_limit = "ai.chat"
"#,
        backend.url()
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn get_as(seawall: &Seawall, path: &str, client: &str) -> Reply {
    send(
        Method::GET,
        &seawall.proxy_url(path),
        &[("fly-client-ip", client)],
        full(Bytes::new()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_answer_with_the_documented_fields() {
    let backend = Backend::start().await;
    let seawall = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config(&backend, "", ""),
        &ON,
    );
    let first = get(&seawall.proxy_url("/strict/headers")).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"strict\";q=10;w=60")
    );
    assert_eq!(first.header("ratelimit"), Some("\"strict\";r=9;t=6"));
    assert_eq!(first.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("9"));
    let reset: u64 = first.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(
        (unix_now() + 5..=unix_now() + 7).contains(&reset),
        "reset {reset}"
    );
    assert!(first.header("retry-after").is_none());
    for remaining in (0..9).rev() {
        let reply = get(&seawall.proxy_url("/strict/headers")).await;
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }

    let refused = get(&seawall.proxy_url("/strict/headers")).await;
    assert_error(&refused, 429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(refused.header("retry-after"), Some("6"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"strict\";q=10;w=60")
    );
    assert_eq!(refused.header("ratelimit"), Some("\"strict\";r=0;t=6"));
    assert_eq!(refused.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    let reset: u64 = refused
        .header("x-ratelimit-reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (unix_now() + 58..=unix_now() + 61).contains(&reset),
        "reset {reset}"
    );
    assert_eq!(refused.header("x-ratelimit-priority"), Some("strict"));
    assert_eq!(refused.header("cache-control"), Some("no-store"));
    let body = refused.json();
    assert_eq!(
        body["message"],
        "Strict rate limit exceeded for expensive operation"
    );
    assert_eq!(
        (
            body["priority"].clone(),
            body["policy"].clone(),
            body["retryAfter"].clone()
        ),
        (json!("strict"), json!("strict"), json!(6))
    );

    // Health and metrics are never limited.
    for _ in 0..30 {
        let health = get(&seawall.proxy_url("/health")).await;
        assert_eq!(health.status, 200);
        assert!(health.header("ratelimit").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_keyed_by_their_own_address_only() {
    let backend = Backend::start().await;
    let trusted = config(&backend, "trusted_proxies = [\"127.0.0.1/32\"]", "");
    let seawall = Seawall::start_in(Arc::new(TempDir::new().unwrap()), &trusted, &ON);
    for client in ["198.51.100.1", "198.51.100.2"] {
        let statuses: Vec<u16> = futures_statuses(&seawall, "/strict/headers", client, 12).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            10,
            "{client}: {statuses:?}"
        );
    }

    let untrusted = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config(&backend, "", ""),
        &ON,
    );
    let mut admitted = 0;
    for i in 0..15 {
        let spoof = format!("203.0.113.{i}");
        let reply = send(
            Method::GET,
            &untrusted.proxy_url("/strict/headers"),
            &[
                ("x-forwarded-for", &spoof),
                ("fly-client-ip", &spoof),
                ("x-user-id", &format!("user-{i}")),
            ],
            full(Bytes::new()),
        )
        .await;
        admitted += usize::from(reply.status == 200);
    }
    assert_eq!(
        admitted, 10,
        "spoofed forwarding and identity headers from an untrusted peer do not change the key"
    );
}

async fn futures_statuses(seawall: &Seawall, path: &str, client: &str, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(get_as(seawall, path, client).await.status.as_u16());
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_policies_stack_and_dry_run_only_counts() {
    let backend = Backend::start().await;
    let ratelimit = "[ratelimit.levels.strict]\nmode = \"dry_run\"\n";
    let seawall = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config(&backend, "", ratelimit),
        &ON,
    );
    let first = get(&seawall.proxy_url("/chat/headers")).await;
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"low\";q=30;w=60, \"ai.chat\";q=3;w=60")
    );
    assert_eq!(
        first.header("ratelimit"),
        Some("\"low\";r=29;t=2, \"ai.chat\";r=2;t=20")
    );
    assert_eq!(
        first.header("x-ratelimit-limit"),
        Some("3"),
        "the legacy fields follow the tightest policy"
    );
    get(&seawall.proxy_url("/chat/headers")).await;
    get(&seawall.proxy_url("/chat/headers")).await;
    let refused = get(&seawall.proxy_url("/chat/headers")).await;
    assert_error(&refused, 429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(refused.json()["policy"], "ai.chat");
    assert_eq!(refused.json()["priority"], "low");
    assert_eq!(refused.json()["message"], "Rate limit exceeded for ai.chat");
    assert_eq!(refused.header("retry-after"), Some("20"));
    // The same policy on a route of another level: one quota, counted under each level.
    let vip = get(&seawall.proxy_url("/chat-vip/headers")).await;
    assert_error(&vip, 429, "RATE_LIMIT_EXCEEDED");
    assert_eq!(vip.json()["priority"], "high");

    for _ in 0..15 {
        let reply = get(&seawall.proxy_url("/strict/headers")).await;
        assert_eq!(reply.status, 200, "dry-run never refuses");
        assert!(
            reply.header("ratelimit").is_none(),
            "dry-run sends no rate-limit fields"
        );
    }
    let view = admin_get(&seawall, "/admin/ratelimits").await.json();
    let strict = named(&view["levels"], "strict");
    assert_eq!(strict["decisions"]["dry_run_limited"], 5, "{strict}");
    assert_eq!(strict["decisions"]["allowed"], 10, "{strict}");
    assert_eq!(strict["mode"], "dry_run");
    // The refused request was checked against `ai.chat` first and went no further.
    let chat = named(&view["policies"], "ai.chat");
    assert_eq!(chat["decisions"], json!({"allowed": 3, "limited": 2}));
    let low = named(&view["levels"], "low");
    assert_eq!(low["decisions"], json!({"allowed": 3}));
    let metrics = get(&seawall.admin_url("/metrics")).await.text();
    for (labels, count) in [
        ("level=\"low\",policy=\"ai.chat\",outcome=\"allowed\"", 3.0),
        ("level=\"low\",policy=\"ai.chat\",outcome=\"limited\"", 1.0),
        ("level=\"high\",policy=\"ai.chat\",outcome=\"limited\"", 1.0),
        ("level=\"low\",policy=\"low\",outcome=\"allowed\"", 3.0),
        (
            "level=\"strict\",policy=\"strict\",outcome=\"dry_run_limited\"",
            5.0,
        ),
    ] {
        let series = format!("seawall_ratelimit_decisions_total{{{labels}}}");
        assert_eq!(
            metric(&metrics, &series),
            Some(count),
            "{series} in {metrics}"
        );
    }
}

async fn change(seawall: &Seawall, method: Method, policy: &str, body: Value) -> Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    send(
        method,
        &seawall.admin_url(&format!("/admin/ratelimits/{policy}")),
        &[("authorization", &auth)],
        full(body.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_change_at_runtime_and_the_change_survives_restarts() {
    let backend = Backend::start().await;
    let dir = Arc::new(TempDir::new().unwrap());
    let config = config(&backend, "trusted_proxies = [\"127.0.0.1/32\"]", "");
    let mut seawall = Seawall::start_in(dir.clone(), &config, &ON);
    let updated = change(&seawall, Method::PUT, "medium", json!({"quota": 2})).await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.json()["policy"]["quota"], 2);
    assert_eq!(
        futures_statuses(&seawall, "/medium/headers", "198.51.100.9", 4).await,
        [200, 200, 429, 429]
    );
    assert_error(
        &change(&seawall, Method::PUT, "medium", json!({"quota": 0})).await,
        400,
        "VALIDATION_FAILED",
    );
    assert_error(
        &change(&seawall, Method::PUT, "medium", json!({"quota": "many"})).await,
        400,
        "VALIDATION_FAILED",
    );
    assert_error(
        &change(&seawall, Method::PUT, "medium", json!({"burst": 3})).await,
        400,
        "VALIDATION_FAILED",
    );
    assert_error(
        &change(&seawall, Method::PUT, "nope", json!({"quota": 3})).await,
        404,
        "NOT_FOUND",
    );
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());

    let seawall = Seawall::start_in(dir, &config, &ON);
    assert_eq!(
        futures_statuses(&seawall, "/medium/headers", "198.51.100.10", 3).await,
        [200, 200, 429],
        "kept across a restart"
    );
    let reset = change(&seawall, Method::DELETE, "medium", json!({})).await;
    assert_eq!(reset.json()["policy"]["quota"], 100);
    assert_eq!(
        futures_statuses(&seawall, "/medium/headers", "198.51.100.11", 3).await,
        [200, 200, 200]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feature_nothing_is_limited() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "", ""));
    for _ in 0..15 {
        let reply = get(&seawall.proxy_url("/strict/headers")).await;
        assert_eq!(reply.status, 200);
        assert!(reply.header("ratelimit").is_none());
    }
}

/// Sends `n` requests at `level` to the backend's `/hold`; returns once all are in flight.
async fn hold(
    seawall: &Arc<Seawall>,
    backend: &mut Backend,
    level: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    let held: Vec<_> = (0..n)
        .map(|i| {
            let seawall = seawall.clone();
            let path = format!("/{level}/hold");
            let client = format!("10.9.{}.{}", i / 200, i % 200 + 1);
            tokio::spawn(async move { get_as(&seawall, &path, &client).await })
        })
        .collect();
    for _ in 0..n {
        tokio::time::timeout(PROCESS_TIMEOUT, backend.slow_started.recv())
            .await
            .expect("held requests reach the backend");
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_levels_in_order_and_keeps_critical() {
    let mut backend = Backend::start().await;
    let config = config(
        &backend,
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "max_in_flight = 100\n",
    );
    let seawall = Arc::new(Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config,
        &ON,
    ));

    // 80 requests held in flight: strict (50%) and low (70%) are past their shares.
    let held = hold(&seawall, &mut backend, "high", 80).await;
    let mut flood = Vec::new();
    for level in ["strict", "low", "medium", "high", "critical"] {
        let count = if level == "critical" { 5 } else { 20 };
        for i in 0..count {
            let seawall = seawall.clone();
            let path = format!("/{level}/hold");
            let client = format!("10.8.{}.{i}", level.len());
            flood.push((
                level,
                tokio::spawn(async move { get_as(&seawall, &path, &client).await }),
            ));
        }
    }
    // Every flood request is either refused (finished) or held at the backend.
    let deadline = std::time::Instant::now() + PROCESS_TIMEOUT;
    let mut reached = 0;
    loop {
        while backend.slow_started.try_recv().is_ok() {
            reached += 1;
        }
        let refused = flood.iter().filter(|(_, task)| task.is_finished()).count();
        if refused + reached >= flood.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{refused} refused and {reached} held of {}",
            flood.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    backend.release();
    let mut admitted = std::collections::BTreeMap::<&str, usize>::new();
    for (level, request) in flood {
        let reply = request.await.unwrap();
        let entry = admitted.entry(level).or_default();
        match reply.status.as_u16() {
            200 => *entry += 1,
            503 => {
                assert_error(&reply, 503, "SERVICE_OVERLOADED");
                let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=5).contains(&retry_after));
                assert_eq!(reply.json()["retryAfter"], retry_after);
                assert_eq!(reply.json()["priority"], level);
                assert!(
                    reply.header("ratelimit").is_none(),
                    "shedding uses no quota fields"
                );
            }
            other => panic!("{level}: unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(
        admitted["critical"], 5,
        "critical is admitted while others are shed: {admitted:?}"
    );
    assert_eq!(
        (admitted["strict"], admitted["low"]),
        (0, 0),
        "{admitted:?}"
    );
    let others = admitted["medium"] + admitted["high"];
    assert!(
        (10..=15).contains(&others),
        "medium and high fill the room up to high's 95%, less what critical took first: {admitted:?}"
    );
    assert!(admitted["medium"] <= 5, "{admitted:?}");
    let share = |level: &str| admitted[level] as f64 / if level == "critical" { 5.0 } else { 20.0 };
    let order = ["strict", "low", "medium", "high", "critical"];
    assert!(
        order.windows(2).all(|w| share(w[0]) <= share(w[1])),
        "shedding follows the levels: {admitted:?}"
    );
    for request in held {
        assert_eq!(request.await.unwrap().status, 200);
    }
    let view = admin_get(&seawall, "/admin/ratelimits").await.json();
    assert_eq!(view["inFlight"], 0, "slots are released with the answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shedding_leaves_quotas_untouched() {
    let mut backend = Backend::start().await;
    let config = config(
        &backend,
        "trusted_proxies = [\"127.0.0.1/32\"]",
        "max_in_flight = 10\n",
    );
    let seawall = Arc::new(Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config,
        &ON,
    ));
    let held = hold(&seawall, &mut backend, "critical", 5).await;
    for _ in 0..5 {
        assert_error(
            &get_as(&seawall, "/strict/headers", "198.51.100.77").await,
            503,
            "SERVICE_OVERLOADED",
        );
    }
    backend.release();
    for request in held {
        request.await.unwrap();
    }
    let after = get_as(&seawall, "/strict/headers", "198.51.100.77").await;
    assert_eq!(after.status, 200);
    assert_eq!(
        after.header("x-ratelimit-remaining"),
        Some("9"),
        "the shed requests used no quota"
    );
}
