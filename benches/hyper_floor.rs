//! The floor under seawall's proxy path: hyper's HTTP/1.1 server in front of hyper-util's pooled
//! client, with nothing else (no routing, limits, metrics, logs or timeouts). `load.sh` runs it
//! beside nginx and seawall, so a ratio against nginx can be read against what the same stack
//! reaches with no gateway work at all.
//!
//!     hyper_floor LISTEN_ADDR UPSTREAM_URL     # e.g. 127.0.0.1:8081 http://127.0.0.1:8080
//!
//! `cargo bench` runs every bench target with `--bench`; this one has nothing to measure on its
//! own and says so.

use std::net::SocketAddr;

use http::Uri;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|arg| arg == "--bench") {
        println!("hyper_floor is a proxy for benches/load.sh to measure, not a benchmark");
        return;
    }
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_URL");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().expect("LISTEN_ADDR is host:port");
    let upstream: Uri = upstream.parse().expect("UPSTREAM_URL is a URL");
    let authority = upstream.authority().expect("UPSTREAM_URL has a host").clone();
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("LISTEN_ADDR can be bound");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let authority = authority.clone();
        let service = service_fn(move |mut request: hyper::Request<Incoming>| {
            let mut target = request.uri().clone().into_parts();
            target.scheme = Some(http::uri::Scheme::HTTP);
            target.authority = Some(authority.clone());
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
