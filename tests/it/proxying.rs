//! Routes and HTTP upstream proxying over real sockets.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;

use crate::backend::{Backend, Generated};
use crate::support::{Reply, Seawall, assert_error, client, full, get, raw_exchange, send};

const MIB: u64 = 1024 * 1024;

fn config(backend: &Backend) -> String {
    // A port that refuses connections: bound, then released.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!(
        r#"
[upstreams.app]
url = "{app}"
timeout_ms = 5000

[upstreams.hanging]
url = "{app}"
timeout_ms = 500

[upstreams.refusing]
url = "http://{refused}"

[[routes]]
name = "read-only"
match = "/ro/*"
methods = ["GET"]
upstream = "app"
strip_prefix = "/ro"

[[routes]]
name = "api"
match = "/api/*"
upstream = "app"
strip_prefix = "/api"
max_body_bytes = {big}

[[routes]]
name = "small"
match = "/small/*"
upstream = "app"
strip_prefix = "/small"
max_body_bytes = 1024

[[routes]]
name = "hang"
match = "/hang"
upstream = "hanging"

[[routes]]
name = "refused"
match = "/refused"
upstream = "refusing"
"#,
        app = backend.url(),
        big = 64 * MIB
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_reach_the_upstream_with_forwarding_headers() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend));
    let reply = send(
        Method::GET,
        &seawall.proxy_url("/api/headers/x?q=1&r=two"),
        &[
            ("x-request-id", "client-id-1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
        ],
        full(Bytes::new()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-request-id"), Some("client-id-1"));
    assert!(
        reply.header("keep-alive").is_none(),
        "hop-by-hop response headers are removed"
    );
    let seen = reply.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/headers/x", "strip_prefix removed /api");
    assert_eq!(seen["query"], "q=1&r=two");
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-forwarded-for"], "127.0.0.1",
        "a spoofed chain from an untrusted peer is replaced"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-request-id"], "client-id-1");
    assert_eq!(headers["host"], backend.addr.to_string());
    assert_eq!(headers["x-forwarded-host"], seawall.proxy.to_string());
    assert!(
        headers.get("x-drop").is_none(),
        "headers named by Connection are hop-by-hop"
    );

    let posted = send(
        Method::POST,
        &seawall.proxy_url("/api/echo"),
        &[("content-type", "text/plain")],
        full("hello upstream"),
    )
    .await;
    assert_eq!(posted.status, 200);
    assert_eq!(posted.text(), "hello upstream");
    assert_eq!(
        posted.header("x-request-id").map(str::len),
        Some(32),
        "a request id is generated when absent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reject_unknown_paths_and_methods_with_json() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend));
    assert_error(&get(&seawall.proxy_url("/nowhere")).await, 404, "NOT_FOUND");
    let post = send(
        Method::POST,
        &seawall.proxy_url("/ro/headers"),
        &[],
        full("x"),
    )
    .await;
    assert_error(&post, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let head = send(
        Method::HEAD,
        &seawall.proxy_url("/ro/headers"),
        &[],
        full(""),
    )
    .await;
    assert_eq!(
        (head.status.as_u16(), head.body.len()),
        (200, 0),
        "HEAD comes with GET"
    );
    let big = send(
        Method::POST,
        &seawall.proxy_url("/small/echo"),
        &[],
        full(vec![b'a'; 2048]),
    )
    .await;
    assert_error(&big, 413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_matched_and_forwarded_in_normal_form_and_host_rules_hold() {
    let backend = Backend::start().await;
    let config = format!(
        r#"
[upstreams.app]
url = "{}"

[[routes]]
name = "guarded"
match = "/guarded/*"
upstream = "app"
strip_prefix = "/guarded"
flag = "guarded-api"

[[routes]]
name = "open"
match = "/*"
upstream = "app"
"#,
        backend.url()
    );
    let dir = std::sync::Arc::new(tempfile::TempDir::new().unwrap());
    let seawall = Seawall::start_in(dir, &config, &[("FF_GUARDED_API", "false")]);
    let exchange = |target: &str, hosts: &[&str]| {
        let mut request = format!("GET {target} HTTP/1.1\r\nConnection: close\r\n");
        for host in hosts {
            request.push_str(&format!("Host: {host}\r\n"));
        }
        request.push_str("\r\n");
        raw_exchange(seawall.proxy, request.into_bytes())
    };
    // Through the open route, a dot segment or an encoded one reached the guarded resource.
    for sneaky in [
        "/headers/../guarded/headers",
        "/headers/%2e%2e/guarded/headers",
        "/x/%2E./guarded/%68eaders",
    ] {
        let reply = exchange(sneaky, &["app.example"]).await;
        assert_error(&reply, 404, "NOT_FOUND");
    }
    // The upstream gets the path that was matched, the query as it came.
    let reply = exchange("/x/./y/%2e%2e/../%68eaders/a?q=/../%41", &["app.example"]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(
        (seen["path"].clone(), seen["query"].clone()),
        ("/headers/a".into(), "q=/../%41".into())
    );
    assert_eq!(seen["headers"]["x-forwarded-host"], "app.example");
    // RFC 9112 §3.2: the authority of an absolute-form target replaces Host.
    let reply = exchange("http://app.example:8080/headers", &["other.example"]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["headers"]["x-forwarded-host"],
        "app.example:8080"
    );
    assert_eq!(reply.json()["path"], "/headers");
    for (target, hosts) in [
        ("/headers", &[][..]),
        ("/headers", &["a.example", "b.example"]),
        ("/headers", &["a.example/evil"]),
        ("/headers\\..\\guarded", &["app.example"]),
    ] {
        let reply = exchange(target, hosts).await;
        assert_error(&reply, 400, "BAD_REQUEST");
    }
    // Not a forward proxy: passed on, the upstream's refusal counted against its breaker.
    for connect in ["CONNECT app.example:443", "CONNECT /headers"] {
        let request =
            format!("{connect} HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n");
        assert_error(
            &raw_exchange(seawall.proxy, request).await,
            400,
            "BAD_REQUEST",
        );
    }
    // HTTP/1.0 needs no Host.
    let old = raw_exchange(seawall.proxy, b"GET /headers HTTP/1.0\r\n\r\n".to_vec()).await;
    assert_eq!(old.status, 200, "{}", old.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_past_max_header_bytes_are_refused_with_431() {
    async fn with_header(seawall: &Seawall, value: &str) -> Reply {
        let url = seawall.proxy_url("/ro/headers");
        send(Method::GET, &url, &[("x-large", value)], full("")).await
    }
    let backend = Backend::start().await;
    // The default bound is 32 KiB.
    let seawall = Seawall::start(&config(&backend));
    let within = "v".repeat(24 * 1024);
    let reply = with_header(&seawall, &within).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["headers"]["x-large"], within.as_str());
    let past = "v".repeat(40 * 1024);
    let reply = with_header(&seawall, &past).await;
    assert_eq!(reply.status, 431, "{}", reply.text());
    // The same head passes where the bound is raised.
    let raised = format!("[server]\nmax_header_bytes = 65536\n{}", config(&backend));
    let reply = with_header(&Seawall::start(&raised), &past).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_become_json_502_and_504() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend));
    let refused = get(&seawall.proxy_url("/refused")).await;
    assert_error(&refused, 502, "UPSTREAM_UNAVAILABLE");
    assert!(
        !refused.text().contains("127.0.0.1"),
        "no internal detail in 5xx bodies: {}",
        refused.text()
    );

    let started = std::time::Instant::now();
    let hung = get(&seawall.proxy_url("/hang")).await;
    assert_error(&hung, 504, "UPSTREAM_TIMEOUT");
    let waited = started.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(500),
        "answered before the 500 ms timeout: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    // Each proxy thread has a pool of its own, and a client connection may land on either.
    for threads in [1, 2] {
        let backend = Backend::start().await;
        let seawall = Seawall::start(&format!(
            "[server]\nproxy_threads = {threads}\n{}",
            config(&backend)
        ));
        for _ in 0..20 {
            assert_eq!(get(&seawall.proxy_url("/api/headers")).await.status, 200);
        }
        // HTTP/1.0 clients too: the upstream hop is HTTP/1.1 and stays open.
        for _ in 0..5 {
            let old = raw_exchange(seawall.proxy, b"GET /api/headers HTTP/1.0\r\n\r\n").await;
            assert_eq!(old.status, 200, "{}", old.text());
        }
        let opened = backend.connections.load(Ordering::SeqCst);
        assert!(
            (1..=threads).contains(&opened),
            "25 sequential requests over {threads} proxy threads opened {opened} upstream connections"
        );
    }
}

/// Client connections opened together are spread over the proxy threads, whichever thread
/// the kernel woke first to accept them, and stop being counted once they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_spread_over_the_proxy_threads() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&format!(
        "[server]\nproxy_threads = 2\n{}",
        config(&backend)
    ));
    // A burst, as a client opening its pool makes: all twelve wait to be accepted at once.
    let addr = seawall.proxy;
    let streams = tokio::task::spawn_blocking(move || {
        (0..12)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let streams = streams.into_iter().map(|stream| {
        stream.set_nonblocking(true).unwrap();
        tokio::net::TcpStream::from_std(stream).unwrap()
    });
    // One request on each, answered, so every connection is being served.
    let mut clients = Vec::new();
    for stream in streams {
        let (mut client, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::get(seawall.proxy_url("/api/headers"))
            .body(full(Bytes::new()))
            .unwrap();
        assert_eq!(client.send_request(request).await.unwrap().status(), 200);
        clients.push(client);
    }
    let per_thread = |metrics: &str| {
        ["proxy-1", "proxy-2"].map(|thread| {
            let series = format!("seawall_proxy_connections{{thread=\"{thread}\"}}");
            crate::support::metric(metrics, &series).expect("one gauge per proxy thread")
        })
    };
    let served = per_thread(&get(&seawall.admin_url("/metrics")).await.text());
    assert_eq!(served[0] + served[1], 12.0, "{served:?}");
    assert!(
        served.iter().all(|&n| n >= 4.0),
        "12 connections, served by the threads as {served:?}"
    );

    drop(clients);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let served = per_thread(&get(&seawall.admin_url("/metrics")).await.text());
        if served == [0.0, 0.0] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections still counted: {served:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Streams `bytes` through the response without collecting it; returns the byte count.
async fn drain(response: hyper::Response<hyper::body::Incoming>) -> u64 {
    let mut body = response.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body streams without error").into_data() {
            total += data.len() as u64;
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabyte_bodies_stream_both_ways_without_buffering() {
    let backend = Backend::start().await;
    let seawall = Seawall::start(&config(&backend));
    let size = 50 * MIB;
    let (rss_before, _) = seawall.memory();

    let upload = Request::post(seawall.proxy_url("/api/echo"))
        .header("content-length", size.to_string())
        .body(Generated::new(size).boxed())
        .unwrap();
    let response = client().request(upload).await.expect("upload is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(drain(response).await, size, "the echoed body arrives whole");

    let download = Request::get(seawall.proxy_url(&format!("/api/bytes/{size}")))
        .body(crate::support::full(Bytes::new()))
        .unwrap();
    let response = client()
        .request(download)
        .await
        .expect("download is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(drain(response).await, size);

    let (_, peak) = seawall.memory();
    let growth = peak.saturating_sub(rss_before);
    assert!(
        growth < 16 * MIB,
        "peak resident memory grew by {} MiB while 50 MiB bodies streamed through (before {} MiB, peak {} MiB)",
        growth / MIB,
        rss_before / MIB,
        peak / MIB
    );
}
