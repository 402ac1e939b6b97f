//! Closing client connections whose writes stall.
//!
//! seawall streams responses: while a client is not reading, its response waits in the socket
//! and the upstream connection behind it stays taken. A client that stops reading, by accident
//! or to exhaust an upstream's `max_connections`, would hold both for ever. [`SendTimeout`]
//! wraps an accepted socket and fails a write, flush or shutdown that has made no progress for
//! `server.send_timeout_ms` (nginx's `send_timeout`); hyper then closes the connection and the
//! response body, with the upstream slot it holds, is dropped. Reading is left alone: idle
//! keep-alive connections and request heads have hyper's own timeouts, and request bodies the
//! request timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Counter;
use crate::stall::StallTimer;

/// A socket whose writes fail after `timeout` without progress, counted in `timeouts`.
pub struct SendTimeout<S> {
    inner: S,
    stall: StallTimer,
    timeouts: Arc<Counter>,
}

impl<S> SendTimeout<S> {
    pub fn new(inner: S, timeout: Duration, timeouts: Arc<Counter>) -> SendTimeout<S> {
        SendTimeout {
            inner,
            stall: StallTimer::new(timeout),
            timeouts,
        }
    }

    /// Passes on a finished write, or fails one that has waited too long.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall.progressed();
            return polled;
        }
        ready!(self.stall.poll_expired(cx));
        self.timeouts.inc();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {:?}", self.stall.timeout()),
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SendTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SendTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_read_fails_after_the_timeout() {
        let (socket, _peer) = duplex(16);
        let timeouts = Arc::new(Counter::default());
        let mut socket = SendTimeout::new(socket, Duration::from_secs(60), timeouts.clone());
        let started = tokio::time::Instant::now();
        let error = socket.write_all(&[0; 64]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert_eq!(timeouts.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_that_keeps_reading_is_served() {
        let (socket, mut peer) = duplex(16);
        let timeouts = Arc::new(Counter::default());
        let mut socket = SendTimeout::new(socket, Duration::from_secs(60), timeouts.clone());
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut chunk = [0; 16];
            // Each read comes 59 s after the last: slower than the timeout in total, never
            // stalled for the whole of it.
            loop {
                tokio::time::sleep(Duration::from_secs(59)).await;
                match peer.read(&mut chunk).await.unwrap() {
                    0 => return received,
                    n => received.extend_from_slice(&chunk[..n]),
                }
            }
        });
        socket.write_all(&[7; 64]).await.unwrap();
        socket.shutdown().await.unwrap();
        drop(socket);
        assert_eq!(reader.await.unwrap(), vec![7; 64]);
        assert_eq!(timeouts.get(), 0);
    }
}
