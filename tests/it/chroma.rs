//! ChromaDB behind seawall: requests pass through, a killed ChromaDB opens the breaker (fast
//! 503s that never touch the network, health `warn`), and a restarted one closes it again
//! through half-open without anyone stepping in.

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use crate::support::{
    Chroma, Reply, Seawall, assert_error, breaker_named, full, get, metric, send,
};

const COLLECTIONS: &str =
    "/chroma/api/v2/tenants/default_tenant/databases/default_database/collections";

async fn post(seawall: &Seawall, path: &str, body: Value) -> Reply {
    send(
        Method::POST,
        &seawall.proxy_url(path),
        &[("content-type", "application/json")],
        full(body.to_string()),
    )
    .await
}

async fn chroma_check(seawall: &Seawall) -> Value {
    get(&seawall.proxy_url("/health/detailed")).await.json()["checks"]["chroma:responseTime"][0]
        .clone()
}

async fn breaker(seawall: &Seawall) -> Value {
    breaker_named(seawall, "chroma").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chroma_outage_opens_the_breaker_and_recovery_closes_it() {
    let mut chroma = Chroma::start().await;
    let config = format!(
        r#"
[health]
interval_ms = 200
timeout_ms = 1000

[upstreams.chroma]
kind = "chroma"
url = "{}"
connect_timeout_ms = 500
timeout_ms = 3000

[upstreams.chroma.breaker]
window = "count"
window_size = 5
minimum_calls = 3
wait_in_open_ms = 4000
half_open_permits = 2

[[routes]]
name = "chroma"
match = "/chroma/*"
upstream = "chroma"
strip_prefix = "/chroma"
"#,
        chroma.url()
    );
    let seawall = Seawall::start_in(
        std::sync::Arc::new(tempfile::TempDir::new().unwrap()),
        &config,
        &crate::support::BREAKER_ON,
    );

    // Collection create, add and query pass through the route.
    let created = post(&seawall, COLLECTIONS, json!({"name": "docs"})).await;
    assert_eq!(created.status, 200, "{}", created.text());
    let id = created.json()["id"].as_str().unwrap().to_string();
    let added = post(
        &seawall,
        &format!("{COLLECTIONS}/{id}/add"),
        json!({"ids": ["a", "b", "c", "d"], "embeddings": [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0]],
               "documents": ["alpha", "beta", "gamma", "delta"]}),
    )
    .await;
    assert_eq!(added.status, 201, "{}", added.text());
    let query = json!({"query_embeddings": [[1, 0, 0]], "n_results": 2});
    let found = post(
        &seawall,
        &format!("{COLLECTIONS}/{id}/query"),
        query.clone(),
    )
    .await;
    assert_eq!(found.status, 200, "{}", found.text());
    assert_eq!(found.json()["ids"], json!([["a", "d"]]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while chroma_check(&seawall).await["status"] != "pass" {
        assert!(Instant::now() < deadline, "the chroma probe never passed");
    }

    // ChromaDB dies: calls fail until the breaker opens.
    chroma.kill();
    let mut failures = 0;
    let open = loop {
        let reply = get(&seawall.proxy_url("/chroma/api/v2/heartbeat")).await;
        if reply.status == 503 {
            break reply;
        }
        assert_error(&reply, 502, "UPSTREAM_UNAVAILABLE");
        failures += 1;
        assert!(failures <= 10, "the breaker never opened");
    };
    assert_error(&open, 503, "CIRCUIT_OPEN");
    assert_eq!(open.json()["breaker"], "chroma");
    let retry_after: u64 = open
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=4).contains(&retry_after), "Retry-After {retry_after}");

    // While open, calls are refused at once and never reach the network.
    let sent = |text: &str| metric(text, "seawall_pool_requests_total{pool=\"chroma\"}").unwrap();
    let before = sent(&get(&seawall.admin_url("/metrics")).await.text());
    let mut took = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let reply = get(&seawall.proxy_url("/chroma/api/v2/heartbeat")).await;
        took.push(started.elapsed());
        assert_error(&reply, 503, "CIRCUIT_OPEN");
    }
    took.sort();
    assert!(
        took[10] < Duration::from_millis(10),
        "median refusal took {:?}",
        took[10]
    );
    assert_eq!(
        sent(&get(&seawall.admin_url("/metrics")).await.text()),
        before,
        "no request touched the network"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let check = chroma_check(&seawall).await;
        if check["status"] == "warn" {
            assert_ne!(check["circuitBreaker"], "closed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "chroma never showed warn: {check}"
        );
    }
    assert_eq!(
        get(&seawall.proxy_url("/health/ready")).await.status,
        200,
        "a dependency outage does not fail readiness"
    );

    // ChromaDB returns: the breaker closes through half-open on its own.
    chroma.launch().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = get(&seawall.proxy_url("/chroma/api/v2/heartbeat")).await;
        if reply.status != 200 {
            assert_error(&reply, 503, "CIRCUIT_OPEN");
        }
        if breaker(&seawall).await["state"] == "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "the breaker never closed again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = breaker(&seawall).await;
    let seen: Vec<(String, String)> = state["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for expected in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ] {
        assert!(
            seen.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} missing from {seen:?}"
        );
    }
    let found = post(&seawall, &format!("{COLLECTIONS}/{id}/query"), query).await;
    assert_eq!(
        found.json()["ids"],
        json!([["a", "d"]]),
        "the data survived the restart"
    );
    let logged = state["recentTransitions"].as_array().unwrap();
    assert!(
        logged
            .iter()
            .any(|t| t["to"] == "open" && t["cause"] == "failure_rate"),
        "{logged:?}"
    );
}
