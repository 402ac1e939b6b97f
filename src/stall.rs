//! A deadline for transfers that must keep making progress.
//!
//! [`StallTimer`] is armed the first time an operation has to wait and cleared by any progress,
//! so it bounds the time without progress, never the total time: a slow transfer that moves is
//! never cut off. `send_timeout` (writes to clients) and `body::IdleTimeout` (upstream bodies)
//! use it; what to do when it expires is theirs.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

pub struct StallTimer {
    timeout: Duration,
    /// Only allocated once an operation has had to wait.
    armed: Option<Pin<Box<Sleep>>>,
}

impl StallTimer {
    pub fn new(timeout: Duration) -> StallTimer {
        StallTimer {
            timeout,
            armed: None,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The operation moved: the next wait starts a fresh deadline.
    pub fn progressed(&mut self) {
        self.armed = None;
    }

    /// The operation has to wait: `Ready` once it has waited `timeout` without progress,
    /// else `Pending` with `cx` woken at the deadline.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = self.timeout;
        self.armed
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)))
            .as_mut()
            .poll(cx)
    }
}
