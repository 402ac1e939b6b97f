//! Stalled transfers end: a client that stops reading its response, and an upstream that stops
//! sending its body, each release the upstream slot they held.

use http::Method;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::backend::Backend;
use crate::support::{PROCESS_TIMEOUT, Seawall, admin_get, await_metric, client, full, metric};

fn config(backend: &Backend) -> String {
    format!(
        r#"
[server]
send_timeout_ms = 500

[upstreams.app]
url = "{}"
body_timeout_ms = 500

[[routes]]
name = "app"
match = "/app/*"
upstream = "app"
strip_prefix = "/app"
"#,
        backend.url()
    )
}

const IN_FLIGHT: &str = "seawall_pool_in_flight{pool=\"app\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_frees_the_upstream_slot() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend));
    let mut stream = TcpStream::connect(seawall.proxy).await.unwrap();
    // 200 MB: far more than the socket buffers between seawall and this client hold.
    stream
        .write_all(b"GET /app/bytes/200000000 HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await
        .unwrap();
    await_metric(&seawall, IN_FLIGHT, 1.0).await;
    // Nothing more is read from `stream`; seawall's writes stall and it gives up.
    await_metric(&seawall, IN_FLIGHT, 0.0).await;
    let text = admin_get(&seawall, "/metrics").await.text();
    assert_eq!(metric(&text, "seawall_http_send_timeouts_total"), Some(1.0));
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_stops_sending_its_body_is_cut_off_and_frees_its_slot() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend));
    let request = http::Request::builder()
        .method(Method::GET)
        .uri(seawall.proxy_url("/app/stall"))
        .body(full(""))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    // The first piece arrives, then the body fails instead of hanging.
    let read = tokio::time::timeout(PROCESS_TIMEOUT, response.into_body().collect())
        .await
        .expect("the stalled body ends");
    assert!(
        read.is_err(),
        "a stalled body is cut off, not passed as complete"
    );
    await_metric(&seawall, IN_FLIGHT, 0.0).await;
    let text = admin_get(&seawall, "/metrics").await.text();
    let stalls = "seawall_pool_errors_total{pool=\"app\",kind=\"body_timeout\"}";
    assert_eq!(metric(&text, stalls), Some(1.0), "{text}");
}
