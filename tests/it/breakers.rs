//! Breakers and pools around an HTTP upstream: hanging upstreams, floods, what counts as a
//! failure, operator states across restarts, and the metrics they export.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::Value;
use tempfile::TempDir;

use crate::backend::Backend;
use crate::support::{
    ADMIN_TOKEN, BREAKER_ON, PROCESS_TIMEOUT, Reply, Seawall, admin_get, assert_error,
    breaker_named, full, get, named, raw_exchange, required_env, send,
};

fn config(backend: &Backend, upstream_extra: &str, breaker: &str) -> String {
    format!(
        r#"
[upstreams.app]
url = "{}"
{upstream_extra}

[upstreams.app.breaker]
window = "count"
window_size = 10
minimum_calls = 4
{breaker}

[[routes]]
name = "app"
match = "/app/*"
upstream = "app"
strip_prefix = "/app"
"#,
        backend.url()
    )
}

async fn app_breaker(seawall: &Seawall) -> Value {
    breaker_named(seawall, "app").await
}

async fn operator(seawall: &Seawall, path: &str) -> Reply {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    send(
        Method::POST,
        &seawall.admin_url(path),
        &[("authorization", &auth), ("x-seawall-actor", "ops-ann")],
        full(Bytes::new()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_upstream_is_cut_at_its_timeout_and_counted_as_a_slow_failure() {
    let backend = Backend::start().await;
    let config = config(&backend, "timeout_ms = 500", "slow_call_duration_ms = 200");
    let seawall = Seawall::start_in(Arc::new(TempDir::new().unwrap()), &config, &BREAKER_ON);
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(&seawall.proxy_url("/app/hang")).await;
        let took = started.elapsed();
        assert_error(&reply, 504, "UPSTREAM_TIMEOUT");
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(10),
            "answered after {took:?}"
        );
    }
    let breaker = app_breaker(&seawall).await;
    assert_eq!(breaker["calls"]["failed"], 3, "{breaker}");
    assert_eq!(breaker["calls"]["slowFailed"], 3, "{breaker}");
    assert_eq!(breaker["state"], "closed", "below the minimum of 4 calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_beyond_slots_and_queue_is_refused_at_once() {
    let backend = Backend::start().await;
    let config = config(
        &backend,
        "max_connections = 2\nmax_queue = 2\nacquire_timeout_ms = 10000\ntimeout_ms = 20000",
        "",
    );
    let seawall = Arc::new(Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config,
        &BREAKER_ON,
    ));
    let flood: Vec<_> = (0..12)
        .map(|_| {
            let seawall = seawall.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = get(&seawall.proxy_url("/app/slow/1500")).await;
                (reply, started.elapsed())
            })
        })
        .collect();
    let mut served = 0;
    let mut refused = 0;
    for request in flood {
        let (reply, took) = request.await.unwrap();
        match reply.status.as_u16() {
            200 => served += 1,
            503 => {
                assert_error(&reply, 503, "UPSTREAM_BUSY");
                assert_eq!(reply.header("retry-after"), Some("1"));
                assert!(
                    took < Duration::from_millis(1000),
                    "a refusal waited {took:?}"
                );
                refused += 1;
            }
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    assert_eq!(
        (served, refused),
        (4, 8),
        "two slots plus two queued; the rest refused"
    );
    let pools = admin_get(&seawall, "/admin/pools").await.json();
    let app = named(&pools["pools"], "app");
    assert_eq!(app["errors"]["queue_full"], 8);
    assert_eq!(
        (app["inFlight"].clone(), app["waiters"].clone()),
        (0.into(), 0.into())
    );
    let breaker = app_breaker(&seawall).await;
    assert_eq!(
        breaker["calls"]["ignored"], 8,
        "queue refusals are not the upstream's failures"
    );
    assert_eq!(breaker["calls"]["failed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_count_as_failures_and_client_errors_do_not() {
    let backend = Backend::start().await;
    let seawall = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config(&backend, "", "wait_in_open_ms = 60000"),
        &BREAKER_ON,
    );
    for _ in 0..6 {
        assert_eq!(get(&seawall.proxy_url("/app/status/404")).await.status, 404);
    }
    assert_eq!(app_breaker(&seawall).await["state"], "closed");
    let mut statuses = Vec::new();
    for code in [500, 503, 429, 408] {
        statuses.push(
            get(&seawall.proxy_url(&format!("/app/status/{code}")))
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        [500, 503, 429, 408],
        "upstream answers pass through"
    );
    assert_eq!(
        app_breaker(&seawall).await["state"],
        "closed",
        "4 failures in 10 calls is 40%"
    );
    assert_eq!(get(&seawall.proxy_url("/app/status/500")).await.status, 500);
    assert_error(
        &get(&seawall.proxy_url("/app/headers")).await,
        503,
        "CIRCUIT_OPEN",
    );
    let breaker = app_breaker(&seawall).await;
    assert_eq!(
        breaker["state"], "open",
        "5 failures in the last 10 calls is 50%"
    );
    assert_eq!(
        (
            breaker["calls"]["successful"].clone(),
            breaker["calls"]["failed"].clone()
        ),
        (6.into(), 5.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_breaks_or_stalls_its_body_costs_the_breaker_nothing() {
    let backend = Backend::start().await;
    let config = config(&backend, "timeout_ms = 1500", "wait_in_open_ms = 60000");
    let seawall = Seawall::start_in(Arc::new(TempDir::new().unwrap()), &config, &BREAKER_ON);
    let malformed = b"POST /app/collect HTTP/1.1\r\nHost: app.example\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3x\r\nabc\r\n0\r\n\r\n";
    for _ in 0..5 {
        assert_error(
            &raw_exchange(seawall.proxy, malformed).await,
            400,
            "BAD_REQUEST",
        );
    }
    // Ten of a hundred declared bytes, then nothing: the upstream waits for the rest.
    let partial = b"POST /app/collect HTTP/1.1\r\nHost: app.example\r\n\
        Content-Length: 100\r\n\r\n0123456789";
    for _ in 0..5 {
        let started = Instant::now();
        let reply = raw_exchange(seawall.proxy, partial).await;
        assert_error(&reply, 408, "REQUEST_TIMEOUT");
        assert_eq!(reply.header("connection"), Some("close"));
        assert!(started.elapsed() >= Duration::from_millis(1500));
    }
    let breaker = app_breaker(&seawall).await;
    assert_eq!(breaker["state"], "closed", "{breaker}");
    assert_eq!(
        (
            breaker["calls"]["failed"].clone(),
            breaker["calls"]["ignored"].clone()
        ),
        (0.into(), 10.into()),
        "ten clients' faults, none of them the upstream's: {breaker}"
    );
    let pools = admin_get(&seawall, "/admin/pools").await.json();
    let errors = &named(&pools["pools"], "app")["errors"];
    assert_eq!(
        (
            errors["client_body"].clone(),
            errors["client_stalled"].clone()
        ),
        (5.into(), 5.into()),
        "{pools}"
    );
    assert_eq!(
        (errors["failed"].clone(), errors["timeout"].clone()),
        (0.into(), 0.into())
    );
    // A whole body from a client that keeps up is served as ever.
    let whole = b"POST /app/collect HTTP/1.1\r\nHost: app.example\r\n\
        Content-Length: 10\r\nConnection: close\r\n\r\n0123456789";
    let reply = raw_exchange(seawall.proxy, whole).await;
    assert_eq!(
        (reply.status.as_u16(), reply.text()),
        (200, "10 bytes".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_feature_flag_the_breaker_stays_out_of_the_way() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "", ""));
    for _ in 0..10 {
        assert_eq!(get(&seawall.proxy_url("/app/status/500")).await.status, 500);
    }
    let breaker = app_breaker(&seawall).await;
    assert_eq!(
        (breaker["state"].clone(), breaker["calls"]["failed"].clone()),
        ("closed".into(), 0.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_states_and_open_deadlines_survive_restarts() {
    let backend = Backend::start().await;
    let dir = Arc::new(TempDir::new().unwrap());
    let config = config(&backend, "", "wait_in_open_ms = 60000");
    let mut seawall = Seawall::start_in(dir.clone(), &config, &BREAKER_ON);

    let forced = operator(&seawall, "/admin/breakers/app/force-open").await;
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(forced.json()["state"], "forced_open");
    assert_eq!(forced.json()["recentTransitions"][0]["actor"], "ops-ann");
    assert_error(
        &get(&seawall.proxy_url("/app/headers")).await,
        503,
        "CIRCUIT_OPEN",
    );
    seawall.kill();

    let mut seawall = Seawall::start_in(dir.clone(), &config, &BREAKER_ON);
    assert_eq!(
        app_breaker(&seawall).await["state"],
        "forced_open",
        "forced open after a kill -9 and restart"
    );
    assert_error(
        &get(&seawall.proxy_url("/app/headers")).await,
        503,
        "CIRCUIT_OPEN",
    );
    assert_eq!(
        operator(&seawall, "/admin/breakers/app/reset").await.json()["state"],
        "closed"
    );
    assert_eq!(get(&seawall.proxy_url("/app/headers")).await.status, 200);

    for _ in 0..4 {
        get(&seawall.proxy_url("/app/status/500")).await;
    }
    assert_eq!(app_breaker(&seawall).await["state"], "open");
    seawall.signal("TERM");
    assert!(seawall.wait_exit(PROCESS_TIMEOUT).success());

    let seawall = Seawall::start_in(dir, &config, &BREAKER_ON);
    let reply = get(&seawall.proxy_url("/app/headers")).await;
    assert_error(&reply, 503, "CIRCUIT_OPEN");
    let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (2..=60).contains(&retry_after),
        "the open deadline carried over: {retry_after}"
    );
}

#[tokio::test]
async fn breaker_admin_refuses_unknown_names_and_actions() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "", ""));
    assert_error(
        &operator(&seawall, "/admin/breakers/nope/reset").await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &operator(&seawall, "/admin/breakers/app/explode").await,
        404,
        "NOT_FOUND",
    );
    assert_error(
        &admin_get(&seawall, "/admin/breakers/app/reset").await,
        405,
        "METHOD_NOT_ALLOWED",
    );
    assert_eq!(
        operator(&seawall, "/admin/breakers/app/disable")
            .await
            .json()["state"],
        "disabled"
    );
    assert_eq!(
        operator(&seawall, "/admin/breakers/app/metrics-only")
            .await
            .json()["state"],
        "metrics_only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_and_pool_metrics_pass_promtool() {
    let backend = Backend::start().await;
    let seawall = Seawall::start_in(
        Arc::new(TempDir::new().unwrap()),
        &config(&backend, "", ""),
        &BREAKER_ON,
    );
    get(&seawall.proxy_url("/app/headers")).await;
    get(&seawall.proxy_url("/app/status/500")).await;
    let text = get(&seawall.admin_url("/metrics")).await.text();
    for required in [
        "seawall_circuit_breaker_state{name=\"app\",state=\"closed\"} 1",
        "seawall_circuit_breaker_calls_total{name=\"app\",kind=\"failed\"} 1",
        "seawall_circuit_breaker_not_permitted_calls_total{name=\"app\",reason=\"open\"} 0",
        "seawall_circuit_breaker_failure_rate{name=\"app\"} -1",
        "seawall_circuit_breaker_retry_after_seconds{name=\"app\"} 0",
        "seawall_pool_requests_total{pool=\"app\"} 2",
        "seawall_pool_in_flight{pool=\"app\"} 0",
        "seawall_pool_acquire_seconds_count{pool=\"app\"} 2",
    ] {
        assert!(text.contains(required), "missing {required:?} in:\n{text}");
    }
    let file = seawall.dir.path().join("metrics.prom");
    std::fs::write(&file, &text).unwrap();
    crate::support::run(
        std::process::Command::new(required_env("SEAWALL_TEST_PROMTOOL"))
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap()),
    );
}
