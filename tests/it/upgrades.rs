//! WebSockets and other upgrades through seawall, over real sockets: the handshake, bytes both
//! ways, the routes that do not allow it, the bound, the idle timeout and shutdown.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::audit::await_events;
use crate::backend::Backend;
use crate::support::{PROCESS_TIMEOUT, Seawall, admin_get, await_metric, metric};

fn config(backend: &Backend, server: &str) -> String {
    format!(
        r#"
[server]
shutdown_delay_ms = 0
{server}

[features]
audit_trail = true

[upstreams.app]
url = "{}"

[[routes]]
name = "ws"
match = "/ws/*"
upstream = "app"
strip_prefix = "/ws"
upgrades = ["websocket"]

[[routes]]
name = "plain"
match = "/plain/*"
upstream = "app"
strip_prefix = "/plain"
"#,
        backend.url()
    )
}

/// Sends a WebSocket handshake for `path` and returns the connection with the answer's head
/// (status line and headers, lowercased names), read byte by byte so no tunnel byte is taken.
async fn handshake(seawall: &Seawall, path: &str) -> (TcpStream, String) {
    let addr = seawall.proxy_url("");
    let addr = addr.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PROCESS_TIMEOUT, stream.read(&mut byte))
            .await
            .expect("an answer to the handshake")
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap().to_lowercase())
}

fn assert_header(head: &str, line: &str) {
    assert!(
        head.contains(&format!("\r\n{line}\r\n")),
        "{line:?} in:\n{head}"
    );
}

/// Reads until the peer closes; what was read.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(PROCESS_TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes")
        .unwrap();
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through_routes_that_allow_them() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, ""));
    let (mut stream, head) = handshake(&seawall, "/ws/upgrade").await;

    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert_header(&head, "upgrade: websocket");
    assert_header(&head, "connection: upgrade");
    assert_header(&head, "sec-websocket-accept: accept-dghlihnhbxbszq==");
    // What the upstream received: the upgrade, and the usual forwarding headers.
    assert_header(&head, "x-seen-upgrade: websocket");
    assert_header(&head, "x-seen-connection: upgrade");
    assert_header(&head, "x-seen-forwarded-for: 127.0.0.1");
    await_metric(&seawall, "seawall_upgraded_connections", 1.0).await;

    stream.write_all(b"hello through the tunnel").await.unwrap();
    let mut echoed = [0u8; 24];
    stream.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello through the tunnel");
    // A megabyte both ways at once: neither direction waits for the other.
    let (mut reader, mut writer) = stream.into_split();
    let sent: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let sending = {
        let sent = sent.clone();
        tokio::spawn(async move {
            writer.write_all(&sent).await.unwrap();
            // The client's end of stream travels through; the echo then ends its side too.
            writer.shutdown().await.unwrap();
        })
    };
    let mut received = Vec::new();
    tokio::time::timeout(PROCESS_TIMEOUT, reader.read_to_end(&mut received))
        .await
        .expect("the echo ends")
        .unwrap();
    sending.await.unwrap();
    assert!(
        received == sent,
        "{} bytes back of {}",
        received.len(),
        sent.len()
    );

    await_metric(&seawall, "seawall_upgraded_connections", 0.0).await;
    await_metric(
        &seawall,
        "seawall_upgraded_connections_ended_total{end=\"closed\"}",
        1.0,
    )
    .await;
    let text = admin_get(&seawall, "/metrics").await.text();
    assert_eq!(
        metric(&text, "seawall_upgraded_connections_opened_total"),
        Some(1.0)
    );
    // The handshake is audited like any request; the tunnel's bytes are not.
    let events = await_events(&seawall, "ws", 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["http"]["status_code"], 101, "{}", events[0]);
    assert_eq!(events[0]["outcome"], "success", "{}", events[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_without_upgrades_remove_the_upgrade_request() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, ""));
    let (mut stream, head) = handshake(&seawall, "/plain/upgrade").await;
    // The upstream never saw `Upgrade`, and the answer is an ordinary one.
    assert!(head.starts_with("http/1.1 426 "), "{head}");
    assert!(!head.contains("\r\nupgrade:"), "{head}");
    let mut body = [0u8; 16];
    stream.read_exact(&mut body).await.unwrap();
    assert_eq!(&body, b"upgrade required");
    // The connection goes on serving requests.
    stream
        .write_all(b"GET /plain/status/204 HTTP/1.1\r\nHost: app.example\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 204");
    let text = admin_get(&seawall, "/metrics").await.text();
    assert_eq!(
        metric(&text, "seawall_upgraded_connections_opened_total"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_past_the_bound_are_refused_until_a_tunnel_closes() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "max_upgraded_connections = 1"));
    let (mut first, head) = handshake(&seawall, "/ws/upgrade").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");

    let (mut second, head) = handshake(&seawall, "/ws/upgrade").await;
    assert!(head.starts_with("http/1.1 503 "), "{head}");
    assert_header(&head, "retry-after: 1");
    assert_header(&head, "content-type: application/json");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    second.read_exact(&mut body).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "UPGRADES_FULL", "{body}");
    let text = admin_get(&seawall, "/metrics").await.text();
    assert_eq!(
        metric(&text, "seawall_upgraded_connections_refused_total"),
        Some(1.0)
    );

    first.shutdown().await.unwrap();
    assert!(read_to_end(&mut first).await.is_empty());
    await_metric(&seawall, "seawall_upgraded_connections", 0.0).await;
    let (_third, head) = handshake(&seawall, "/ws/upgrade").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tunnels_are_closed_at_the_idle_timeout() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend, "upgraded_idle_timeout_ms = 1000"));
    let (mut stream, head) = handshake(&seawall, "/ws/upgrade").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    stream.read_exact(&mut echoed).await.unwrap();
    // Then nothing: seawall closes it.
    assert!(read_to_end(&mut stream).await.is_empty());
    await_metric(
        &seawall,
        "seawall_upgraded_connections_ended_total{end=\"idle\"}",
        1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_tunnels_and_exits_cleanly() {
    let backend = Backend::start().await;
    let config = config(&backend, "").replace("shutdown_delay_ms = 0", "shutdown_delay_ms = 3000");
    let mut seawall = Seawall::start(&config);
    let (mut stream, head) = handshake(&seawall, "/ws/upgrade").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    await_metric(&seawall, "seawall_upgraded_connections", 1.0).await;

    seawall.signal("TERM");
    // While readiness is 503 and the listeners still accept, a handshake still switches
    // (answers there carry `Connection: close`, which a 101 cannot).
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while admin_get(&seawall, "/health/ready").await.status != 503 {
        assert!(Instant::now() < deadline, "readiness never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut late, head) = handshake(&seawall, "/ws/upgrade").await;
    assert!(head.starts_with("http/1.1 101 "), "{head}");
    assert_header(&head, "connection: upgrade");
    assert!(read_to_end(&mut late).await.is_empty());
    assert!(read_to_end(&mut stream).await.is_empty());
    let status = seawall.wait_exit(PROCESS_TIMEOUT);
    assert!(status.success(), "{status:?}\n{}", seawall.logs());
    let logs = seawall.logs();
    assert!(logs.contains(r#""tunnels":2"#), "{logs}");
}
