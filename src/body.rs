//! The response body type and small constructors for answers seawall writes itself.
//!
//! Proxied bodies stream through as boxed `hyper::body::Incoming`; answers seawall makes (JSON,
//! metrics text) are small and complete. [`Guarded`] keeps a value alive until a streamed body is
//! finished or dropped, which is how a connection slot stays taken while a proxied response is
//! still flowing to the client; [`IdleTimeout`] fails a streamed body whose next piece does
//! not come in time.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde::Serialize;

use crate::stall::StallTimer;

/// Errors inside bodies cross crate boundaries (hyper, the upstream client), so they are boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body seawall sends.
pub type Body = BoxBody<Bytes, BoxError>;

/// Every request body a service receives: the client's body, possibly inside the audit
/// capture. The error stays hyper's own so limits and classification see it unchanged.
pub type RequestBody = BoxBody<Bytes, hyper::Error>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON answer with the given status.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    json_with_type(status, value, "application/json")
}

/// A JSON answer with a specific JSON media type (`application/health+json`, ...).
pub fn json_with_type(
    status: StatusCode,
    value: &impl Serialize,
    content_type: &'static str,
) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("JSON values serialize");
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A body that holds `guard` until the inner body ends or the body is dropped.
pub struct Guarded<B, G> {
    inner: B,
    guard: Option<G>,
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Guarded<B, G> {
        Guarded {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B, G> HttpBody for Guarded<B, G>
where
    B: HttpBody + Unpin,
    G: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Reads a whole request body of at most `limit` bytes.
pub async fn read_limited(body: RequestBody, limit: u64) -> Result<Bytes, crate::error::Error> {
    use crate::error::Error;
    match http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(Error::PayloadTooLarge { limit })
        }
        Err(_) => Err(Error::BadRequest(
            "The request body could not be read.".to_string(),
        )),
    }
}

/// Parses a JSON object request body into `T`; errors name the JSON path that is wrong.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, crate::error::Error> {
    use crate::error::Error;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::BadRequest("A JSON body is required.".to_string()));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::BadRequest(format!("The body is not valid JSON: {e}")))?;
    if !value.is_object() {
        // serde would otherwise read a struct from an array, by position.
        return Err(Error::Validation {
            field: "body".to_string(),
            message: "must be a JSON object".to_string(),
        });
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            "body".to_string()
        } else {
            path
        };
        Error::Validation {
            field,
            message: strip_position(&e.into_inner().to_string()),
        }
    })
}

/// serde_json appends " at line 1 column 42"; the JSON path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// A streamed body that fails when its next piece takes longer than `timeout` to come: an
/// upstream that sent its head and then stalls must not hold the client and the upstream
/// slot for ever.
pub struct IdleTimeout<B> {
    inner: B,
    stall: StallTimer,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, timeout: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            stall: StallTimer::new(timeout),
        }
    }
}

/// The error of a body that stalled.
#[derive(Debug, thiserror::Error)]
#[error("no part of the body came for {0:?}")]
pub struct BodyStalled(pub Duration);

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            self.stall.progressed();
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        ready!(self.stall.poll_expired(cx));
        Poll::Ready(Some(Err(BodyStalled(self.stall.timeout()).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use tokio::time::Sleep;

    use super::*;

    /// Gives its pieces, each once its delay has passed, then ends; `None` never comes.
    struct Paced {
        pieces: Vec<(Duration, Option<&'static str>)>,
        delay: Option<Pin<Box<Sleep>>>,
    }

    impl HttpBody for Paced {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            let Some((after, piece)) = self.pieces.first().copied() else {
                return Poll::Ready(None);
            };
            let delay = self
                .delay
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
            ready!(delay.as_mut().poll(cx));
            self.delay = None;
            match piece {
                Some(piece) => {
                    self.pieces.remove(0);
                    Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(piece.as_bytes())))))
                }
                // Stalls for good.
                None => Poll::Pending,
            }
        }
    }

    fn paced(pieces: &[(u64, Option<&'static str>)]) -> IdleTimeout<Paced> {
        let pieces = pieces
            .iter()
            .map(|(secs, piece)| (Duration::from_secs(*secs), *piece))
            .collect();
        IdleTimeout::new(
            Paced {
                pieces,
                delay: None,
            },
            Duration::from_secs(60),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_whose_pieces_keep_coming_is_passed_whole() {
        // Three minutes in all, never a minute between two pieces.
        let body = paced(&[(59, Some("a")), (59, Some("b")), (59, Some("c"))]);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, "abc");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_fails_after_the_timeout() {
        let started = tokio::time::Instant::now();
        let body = paced(&[(1, Some("a")), (1, None)]);
        let error = body.collect().await.unwrap_err();
        assert!(error.is::<BodyStalled>(), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(61));
    }
}
