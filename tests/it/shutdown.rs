//! Graceful shutdown on SIGTERM: readiness first, then drain, then exit 0.

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::support::{Seawall, get};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_off_and_lets_in_flight_requests_finish() {
    let mut backend = Backend::start().await;
    let config = format!(
        r#"
[server]
shutdown_delay_ms = 3000
shutdown_grace_ms = 15000

[upstreams.app]
url = "{}"

[[routes]]
name = "api"
match = "/api/*"
upstream = "app"
strip_prefix = "/api"
"#,
        backend.url()
    );
    let mut seawall = Seawall::start(&config);
    assert_eq!(get(&seawall.proxy_url("/health/ready")).await.status, 200);

    let slow_url = seawall.proxy_url("/api/slow/2000");
    let in_flight = tokio::spawn(async move { get(&slow_url).await });
    tokio::time::timeout(Duration::from_secs(30), backend.slow_started.recv())
        .await
        .expect("the slow request reaches the backend");

    seawall.signal("TERM");
    let signalled = Instant::now();
    let ready_url = seawall.proxy_url("/health/ready");
    loop {
        let reply = get(&ready_url).await;
        if reply.status == 503 {
            assert_eq!(reply.json()["status"], "fail");
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "readiness still {} after SIGTERM",
            reply.status
        );
    }

    let finished = in_flight.await.unwrap();
    assert_eq!(finished.status, 200, "the in-flight request completes");
    assert_eq!(finished.text(), "slow done");

    let status = seawall.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit; output:\n{}",
        seawall.logs()
    );
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(18),
        "exited {took:?} after SIGTERM, beyond delay + grace"
    );
    assert!(seawall.logs().contains("store flushed; shutdown complete"));
}
