//! A small real HTTP backend for proxy tests, served in-process on an ephemeral port.
//!
//! | path | answer |
//! |---|---|
//! | `/headers...` | JSON with the method, path, query and headers it received |
//! | `/echo` | the request body, streamed back with its content type |
//! | `/collect` | `{n} bytes` once the whole request body is in; 400 if it broke off |
//! | `/bytes/{n}` | `n` bytes, streamed in 64 KiB chunks |
//! | `/slow/{ms}` | 200 after `ms` milliseconds; announces the start on `slow_started` |
//! | `/hang` | never answers |
//! | `/hold` | 200 once the test calls [`Backend::release`] (at most a minute); announces the start on `slow_started` |
//! | `/status/{code}` | an empty answer with that status |
//! | `/stall` | a 200 whose body sends `first` and then nothing, never ending |
//! | `/upgrade` | with `Upgrade`: 101 to that protocol, with what it saw in `x-seen-*` headers and `sec-websocket-accept: accept-{key}`, then echoes bytes until end of stream; without: 426 |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::support::{TestBody, full};

static CHUNK: [u8; 65536] = [b'x'; 65536];

/// `n` bytes of `x`, produced chunk by chunk without holding them.
pub struct Generated {
    remaining: u64,
}

impl Generated {
    pub fn new(bytes: u64) -> Generated {
        Generated { remaining: bytes }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// A body that gives one piece and then never another, nor its end.
struct Stalled {
    sent: bool,
}

impl Body for Stalled {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
    }
}

pub struct Backend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub slow_started: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
}

impl Backend {
    /// Starts the backend on the current tokio runtime.
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (slow_tx, slow_started) = mpsc::unbounded_channel();
        let (release, released) = watch::channel(false);
        let counter = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let slow_tx = slow_tx.clone();
                let released = released.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        handle(request, slow_tx.clone(), released.clone())
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            addr,
            connections,
            slow_started,
            release,
        }
    }

    /// Lets every `/hold` request (now and later) answer.
    pub fn release(&self) {
        self.release.send_replace(true);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn handle(
    mut request: Request<Incoming>,
    slow_started: mpsc::UnboundedSender<()>,
    mut released: watch::Receiver<bool>,
) -> Result<Response<TestBody>, Infallible> {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = match segments.as_slice() {
        ["headers", ..] => {
            drain(&mut request).await;
            let headers: serde_json::Map<String, serde_json::Value> = request
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::from(v.to_str().unwrap_or("<binary>")),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "method": request.method().as_str(),
                "path": path,
                "query": request.uri().query(),
                "headers": headers,
            });
            Response::builder()
                .header("content-type", "application/json")
                .header("connection", "keep-alive")
                .header("keep-alive", "timeout=5")
                .body(full(body.to_string()))
                .unwrap()
        }
        ["echo"] => {
            let content_type = request.headers().get("content-type").cloned();
            let mut response = Response::new(request.into_body().map_err(Into::into).boxed());
            if let Some(content_type) = content_type {
                response.headers_mut().insert("content-type", content_type);
            }
            response
        }
        ["collect"] => match request.into_body().collect().await {
            Ok(body) => Response::new(full(format!("{} bytes", body.to_bytes().len()))),
            Err(_) => {
                let mut response = Response::new(full("the body broke off"));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                response
            }
        },
        ["bytes", n] => Response::new(Generated::new(n.parse().unwrap()).boxed()),
        ["slow", ms] => {
            let _ = slow_started.send(());
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            Response::new(full("slow done"))
        }
        ["hold"] => {
            let _ = slow_started.send(());
            let _ = tokio::time::timeout(Duration::from_secs(60), released.wait_for(|r| *r)).await;
            Response::new(full("released"))
        }
        ["hang"] => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(full(""))
        }
        ["upgrade"] => upgrade(&mut request),
        ["stall"] => Response::new(Stalled { sent: false }.boxed()),
        ["status", code] => {
            drain(&mut request).await;
            let mut response = Response::new(full(""));
            *response.status_mut() = StatusCode::from_u16(code.parse().unwrap()).unwrap();
            response
        }
        _ => {
            drain(&mut request).await;
            let mut response = Response::new(full("no such test path"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    };
    Ok(response)
}

/// Reads what is left of a request body before answering without it, as Node and Go servers
/// do: a server that answers early and closes with the body unread resets the connection,
/// and the proxy's write of the body can fail before it reads the answer.
async fn drain(request: &mut Request<Incoming>) {
    while let Some(Ok(_)) = request.body_mut().frame().await {}
}

/// Switches to the requested protocol and echoes what arrives; 426 without `Upgrade`.
fn upgrade(request: &mut Request<Incoming>) -> Response<TestBody> {
    let Some(protocol) = request.headers().get("upgrade").cloned() else {
        let mut response = Response::new(full("upgrade required"));
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return response;
    };
    let seen = |name: &str| {
        request
            .headers()
            .get(name)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static("-"))
    };
    let key = seen("sec-websocket-key");
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", protocol)
        .header("x-seen-connection", seen("connection"))
        .header("x-seen-upgrade", seen("upgrade"))
        .header("x-seen-forwarded-for", seen("x-forwarded-for"))
        .header(
            "sec-websocket-accept",
            format!("accept-{}", key.to_str().unwrap_or_default()),
        )
        .body(full(""))
        .unwrap();
    let switched = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = switched.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let (mut reader, mut writer) = tokio::io::split(&mut io);
        let _ = tokio::io::copy(&mut reader, &mut writer).await;
        let _ = writer.shutdown().await;
    });
    response
}
