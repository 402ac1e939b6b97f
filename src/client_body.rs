//! The client's request body on its way to an upstream, watched so that what the client does
//! wrong is never held against the upstream.
//!
//! A client body that breaks (malformed chunked framing, a length it never reaches) or stops
//! coming fails the upstream call it feeds. Counted as the upstream's failure, a handful of such
//! requests from one anonymous client would open the breaker for everyone. [`Watched`] passes
//! the body through unchanged and notes in a [`BodyWatch`], which the caller keeps, whether the
//! body failed and whether the call is waiting for the client's next piece; `upstream` reads it
//! when a call fails. The body's size limit belongs to `proxy`, the outcome rules to `upstream`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// The last thing the body did, as seen by whoever polls it.
const FLOWING: u8 = 0;
/// The body was polled and the client had sent nothing new.
const AWAITING_CLIENT: u8 = 1;
const ENDED: u8 = 2;
/// Stays once set: the body failed, whatever is polled afterwards.
const FAILED: u8 = 3;

/// What the caller reads after a call: shared with the [`Watched`] body.
#[derive(Clone, Default)]
pub struct BodyWatch(Arc<AtomicU8>);

impl BodyWatch {
    /// The client's body ended with an error.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == FAILED
    }

    /// The body's reader was waiting for the client when it last asked: a call that times out
    /// now is waiting on the client, not on the upstream. A reader held back by an upstream
    /// that does not read leaves the state as the last piece left it.
    pub fn awaiting_client(&self) -> bool {
        self.0.load(Ordering::Acquire) == AWAITING_CLIENT
    }

    fn set(&self, state: u8) {
        // One reader polls the body at a time; only FAILED must never be overwritten.
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now != FAILED).then_some(state)
            });
    }
}

/// A body passed through unchanged while its [`BodyWatch`] follows it.
pub struct Watched<B> {
    inner: B,
    watch: BodyWatch,
}

impl<B> Watched<B> {
    pub fn new(inner: B, watch: BodyWatch) -> Watched<B> {
        Watched { inner, watch }
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        self.watch.set(match &polled {
            Poll::Pending => AWAITING_CLIENT,
            Poll::Ready(Some(Ok(_))) => FLOWING,
            Poll::Ready(Some(Err(_))) => FAILED,
            Poll::Ready(None) => ENDED,
        });
        polled
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
    use super::*;
    use bytes::Bytes;
    use std::collections::VecDeque;

    type Step = Poll<Option<Result<Frame<Bytes>, std::io::Error>>>;

    /// A client body that answers each poll with the next scripted step.
    struct Scripted(VecDeque<Step>);

    impl HttpBody for Scripted {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Step {
            self.0.pop_front().unwrap_or(Poll::Ready(None))
        }
    }

    fn piece() -> Step {
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"abc")))))
    }

    /// Polls a watched body through `steps`, returning what the watch said after each.
    fn watch_through(steps: Vec<Step>) -> Vec<(bool, bool)> {
        let watch = BodyWatch::default();
        let count = steps.len();
        let mut body = Watched::new(Scripted(steps.into()), watch.clone());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        (0..count)
            .map(|_| {
                let _ = Pin::new(&mut body).poll_frame(&mut cx);
                (watch.awaiting_client(), watch.failed())
            })
            .collect()
    }

    #[test]
    fn the_watch_follows_the_client_and_keeps_a_failure() {
        let seen = watch_through(vec![
            Poll::Pending,
            piece(),
            Poll::Pending,
            Poll::Ready(Some(Err(std::io::Error::other("bad chunk size")))),
            Poll::Ready(None),
        ]);
        assert_eq!(
            seen,
            [
                (true, false),
                (false, false),
                (true, false),
                (false, true),
                (false, true),
            ],
            "awaiting while the client sends nothing; a failure outlives the end"
        );
    }

    #[test]
    fn a_body_that_ends_is_neither_awaited_nor_failed() {
        let seen = watch_through(vec![piece(), Poll::Pending, piece(), Poll::Ready(None)]);
        assert_eq!(seen.last(), Some(&(false, false)));
        assert!(!BodyWatch::default().awaiting_client(), "not yet polled");
    }
}
