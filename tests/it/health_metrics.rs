//! Health endpoints and the Prometheus exposition.

use bytes::Bytes;
use http::Method;

use crate::support::{Seawall, admin_get, full, get, required_env, send};

#[tokio::test]
async fn health_endpoints_answer_health_json() {
    let seawall = Seawall::start("");
    // The store's check warns once the data volume is past the capacity guard's default mark
    // (90%), which a crowded test machine's volume may be.
    let detailed = get(&seawall.proxy_url("/health/detailed")).await.json();
    let store = &detailed["checks"]["store:responseTime"][0];
    let used = store["volumeUsedPercent"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&used), "{store}");
    let expected = if used >= 90.0 { "warn" } else { "pass" };
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/health/detailed",
    ] {
        let reply = get(&seawall.proxy_url(path)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(
            reply.header("content-type"),
            Some("application/health+json"),
            "{path}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
        let status = &reply.json()["status"];
        match path {
            "/health/live" | "/health/ready" => assert_eq!(status, "pass", "{path}"),
            _ => assert_eq!(status, expected, "{path}"),
        }
    }
    assert_eq!(store["status"], expected, "{detailed}");
    assert_eq!(store["componentType"], "datastore");
    assert!(
        store["volumeAvailableBytes"].as_u64().unwrap() > 0,
        "{store}"
    );
    assert!(detailed["checks"]["uptime"][0]["observedValue"].is_number());
    // The admin listener serves health too, without a token.
    assert_eq!(get(&seawall.admin_url("/health/ready")).await.status, 200);
    // Both listeners answer GET and HEAD alone.
    for url in [
        seawall.proxy_url("/health/ready"),
        seawall.admin_url("/health/ready"),
    ] {
        let head = send(Method::HEAD, &url, &[], full(Bytes::new())).await;
        assert_eq!(head.status, 200, "HEAD {url}");
        assert!(head.body.is_empty(), "HEAD {url}");
        let post = send(Method::POST, &url, &[], full(Bytes::new())).await;
        assert_eq!(post.status, 405, "POST {url}: {}", post.text());
        assert_eq!(post.header("allow"), Some("GET, HEAD"), "POST {url}");
    }
}

#[tokio::test]
async fn metrics_pass_promtool_and_count_requests() {
    let seawall = Seawall::start("");
    get(&seawall.proxy_url("/health")).await;
    get(&seawall.proxy_url("/nowhere")).await;
    admin_get(&seawall, "/admin/stats").await;
    let reply = get(&seawall.admin_url("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = reply.text();
    for required in [
        "seawall_build_info{version=",
        "seawall_http_requests_total{listener=\"proxy\",route=\"health\",method=\"GET\",status=\"200\"} 1",
        "seawall_http_requests_total{listener=\"proxy\",route=\"unmatched\",method=\"GET\",status=\"404\"} 1",
        "seawall_http_request_duration_seconds_bucket{listener=\"proxy\",route=\"health\",method=\"GET\",le=\"+Inf\"} 1",
        "seawall_http_requests_in_flight{listener=\"proxy\"} 0",
        "seawall_store_size_on_disk_bytes ",
        "seawall_unclean_start 0",
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        let family = required.split(['{', ' ']).next().unwrap();
        assert!(
            text.contains(required),
            "missing {required:?}; the exposition's {family} lines:\n{}",
            text.lines()
                .filter(|l| l.starts_with(family))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // The store's check passes, or warns on a test machine whose volume is past the capacity
    // guard's mark (see above); it never fails here, and exactly one status is current.
    let store_status = |status: &str| {
        let series = format!(
            "seawall_health_check_status{{check=\"store:responseTime\",status=\"{status}\"}} "
        );
        let line = text.lines().find(|l| l.starts_with(&series));
        line.unwrap_or_else(|| panic!("missing {series:?}"))[series.len()..].to_string()
    };
    assert_eq!(store_status("fail"), "0");
    // The watchdog runs in every server (its value depends on how busy this machine is).
    assert!(
        crate::support::metric(&text, "seawall_runtime_stalls_total").is_some(),
        "{text}"
    );
    let current = (store_status("pass"), store_status("warn"));
    assert!(
        current == ("1".into(), "0".into()) || current == ("0".into(), "1".into()),
        "store check pass/warn: {current:?}"
    );
    for reserved in ["app=", "region=", "host=", "instance="] {
        assert!(
            !text.contains(reserved),
            "label {reserved} is overwritten by Fly"
        );
    }

    let file = seawall.dir.path().join("metrics.prom");
    std::fs::write(&file, &text).unwrap();
    crate::support::run(
        std::process::Command::new(required_env("SEAWALL_TEST_PROMTOOL"))
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap()),
    );
}

#[tokio::test]
async fn stats_report_percentiles_per_route() {
    let seawall = Seawall::start("");
    for _ in 0..10 {
        get(&seawall.proxy_url("/health/live")).await;
    }
    let stats = admin_get(&seawall, "/admin/stats").await.json();
    let routes = stats["routes"].as_array().unwrap();
    let health = routes
        .iter()
        .find(|r| r["route"] == "health" && r["listener"] == "proxy")
        .expect("health route listed");
    assert_eq!(health["count"], 10);
    for key in ["p50_ms", "p90_ms", "p99_ms", "p99_9_ms", "max_ms"] {
        assert!(
            health[key].as_f64().is_some_and(|v| v > 0.0),
            "{key} in {health}"
        );
    }
    assert!(health["p50_ms"].as_f64() <= health["max_ms"].as_f64());
}
