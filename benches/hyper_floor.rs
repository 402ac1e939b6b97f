//! The floor under seawall's proxy path: hyper's HTTP/1.1 server in front of hyper-util's pooled
//! client, with nothing else (no routing, limits, metrics, logs or timeouts), threaded as
//! seawall's proxy listener is (`seawall::proxy_threads`): one thread per CPU, each with a
//! current-thread runtime and a client of its own, all accepting from one socket. `load.sh`
//! runs it beside nginx and seawall, so a ratio against nginx can be read against what the same
//! stack reaches with no gateway work at all.
//!
//!     hyper_floor LISTEN_ADDR UPSTREAM_URL     # e.g. 127.0.0.1:8081 http://127.0.0.1:8080
//!
//! Without those arguments (`cargo test --all-targets` runs it bare, `cargo bench` with
//! `--bench`) it checks itself instead: one request through it to an upstream of its own, on
//! ephemeral loopback ports.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match &args[..] {
        [listen, upstream] if !listen.starts_with("--") => {
            let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR is host:port");
            let upstream: Uri = upstream.parse().expect("UPSTREAM_URL is a URL");
            let authority = upstream
                .authority()
                .expect("UPSTREAM_URL has a host")
                .clone();
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let sockets =
                seawall::proxy_threads::bind(listen, cpus).expect("LISTEN_ADDR can be bound");
            let threads = seawall::proxy_threads::start(sockets, move |_, socket| {
                let authority = authority.clone();
                async move {
                    let listener = TcpListener::from_std(socket).expect("a tokio listener");
                    proxy(listener, authority).await
                }
            });
            for thread in threads {
                thread.join().expect("a proxy thread does not panic");
            }
        }
        _ => tokio::runtime::Runtime::new()
            .expect("tokio runtime starts")
            .block_on(check_itself()),
    }
}

/// Forwards every request on `listener` to `upstream` through one pooled client.
async fn proxy(listener: TcpListener, upstream: Authority) {
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        let service = service_fn(move |mut request: Request<Incoming>| {
            let mut target = request.uri().clone().into_parts();
            target.scheme = Some(Scheme::HTTP);
            target.authority = Some(upstream.clone());
            *request.uri_mut() = Uri::from_parts(target).expect("an absolute URI");
            let client = client.clone();
            async move {
                let response = client.request(request).await?;
                Ok::<_, hyper_util::client::legacy::Error>(response.map(BodyExt::boxed))
            }
        });
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// One request through the proxy to an upstream that names the path it was asked for.
async fn check_itself() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let upstream_addr = upstream.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((stream, _)) = upstream.accept().await {
            let service = service_fn(|request: Request<Incoming>| async move {
                let body = format!("upstream saw {}", request.uri());
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    let front = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
    let front_addr = front.local_addr().expect("bound");
    let authority: Authority = upstream_addr.to_string().parse().expect("an authority");
    tokio::spawn(proxy(front, authority));

    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let uri: Uri = format!("http://{front_addr}/floor?check=1")
        .parse()
        .expect("a URI");
    let response = tokio::time::timeout(std::time::Duration::from_secs(30), client.get(uri))
        .await
        .expect("the proxy answers within 30 s")
        .expect("the proxy answers");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    assert_eq!(&body[..], b"upstream saw /floor?check=1");
    println!("hyper_floor: a request went through to the upstream and back");
}
