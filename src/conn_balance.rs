//! Spreads the proxy listener's connections evenly over the proxy threads.
//!
//! Every proxy thread accepts from the one listening socket. The kernel wakes all of them when
//! connections arrive, and the first to run accepts until the backlog is empty, so a burst
//! (a client opening its pool, a load balancer reconnecting) would land on one thread and
//! leave the other cores idle for as long as those connections live. Here each accepted
//! connection is counted against a thread first: the accepting one keeps it unless it serves at
//! least [`SLACK`] more connections than the least busy thread, which is then handed the socket
//! (out of the accepting thread's reactor, into its own), as Envoy's exact connection balancer
//! does. Counting at the decision, not when the other thread picks the socket up, is what keeps
//! a burst from being handed to the same thread over and over.
//!
//! What a thread does with a connection is `server`'s business; this module owns the counts,
//! the hand-over channels and the `seawall_proxy_connections` gauge.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::metrics::Exposition;
use crate::proxy_threads::thread_name;

/// How many more connections than the least busy thread the accepting thread may keep: each
/// hand-over costs a wake-up and moving the socket between reactors, so threads that differ by
/// one connection are left as they are.
pub const SLACK: usize = 2;

/// A connection another thread accepted for this one.
pub struct Handoff {
    /// Out of the accepting thread's reactor, non-blocking.
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    /// Its place under `server.max_connections`. Every hand-over holds one, so the channels,
    /// unbounded in type, hold at most that many.
    pub slot: OwnedSemaphorePermit,
    pub seat: Seat,
}

/// The connection counts of the proxy threads, and a channel to each of them.
pub struct Balancer {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[UnboundedSender<Handoff>]>,
    /// Each thread's receiving end until its [`Post`] takes it.
    receivers: Mutex<Vec<Option<UnboundedReceiver<Handoff>>>>,
}

/// A connection counted against a proxy thread for as long as it is held.
pub struct Seat {
    balancer: Arc<Balancer>,
    thread: usize,
}

impl Seat {
    /// The proxy thread (numbered from 1) that is to serve the connection.
    pub fn thread(&self) -> usize {
        self.thread
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.balancer.open[self.thread - 1].fetch_sub(1, Ordering::Relaxed);
    }
}

/// One proxy thread's side of the balancer: where what it accepts goes, and what the others
/// hand it.
pub struct Post {
    balancer: Arc<Balancer>,
    here: usize,
    inbox: UnboundedReceiver<Handoff>,
}

impl Balancer {
    /// A balancer over proxy threads `1..=threads`.
    pub fn new(threads: usize) -> Arc<Balancer> {
        let threads = threads.max(1);
        let (inboxes, receivers): (Vec<_>, Vec<_>) = (0..threads)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                (tx, Some(rx))
            })
            .unzip();
        Arc::new(Balancer {
            open: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: inboxes.into_boxed_slice(),
            receivers: Mutex::new(receivers),
        })
    }

    /// Proxy thread `here`'s post; each is taken once.
    pub fn post(self: &Arc<Self>, here: usize) -> Post {
        let inbox = self.receivers.lock().expect("balancer lock")[here - 1]
            .take()
            .expect("each proxy thread takes its post once");
        Post {
            balancer: self.clone(),
            here,
            inbox,
        }
    }

    /// Counts a connection accepted by thread `here` against the thread that is to serve it.
    fn place(self: &Arc<Self>, here: usize) -> Seat {
        let load = |thread: usize| self.open[thread - 1].load(Ordering::Relaxed);
        let least = (1..=self.open.len())
            .min_by_key(|&thread| (load(thread), thread != here))
            .expect("at least one thread");
        let thread = if load(here) >= load(least) + SLACK {
            least
        } else {
            here
        };
        self.seat(thread)
    }

    /// Counts a connection against `thread`.
    fn seat(self: &Arc<Self>, thread: usize) -> Seat {
        self.open[thread - 1].fetch_add(1, Ordering::Relaxed);
        Seat {
            balancer: self.clone(),
            thread,
        }
    }

    /// Connections each proxy thread serves.
    pub fn render_metrics(&self, out: &mut Exposition) {
        out.header(
            "seawall_proxy_connections",
            "gauge",
            "Client connections each proxy thread serves or is being handed.",
        );
        for (i, open) in self.open.iter().enumerate() {
            let name = thread_name(i + 1);
            out.sample(
                "seawall_proxy_connections",
                &[("thread", &name)],
                open.load(Ordering::Relaxed) as f64,
            );
        }
    }
}

impl Post {
    /// Counts a connection this thread accepted against the thread that is to serve it: this
    /// one unless it serves `SLACK` more than the least busy one.
    pub fn place(&self) -> Seat {
        self.balancer.place(self.here)
    }

    /// The thread this post belongs to.
    pub fn here(&self) -> usize {
        self.here
    }

    /// Counts a connection against this thread, whatever the others serve: for one whose
    /// hand-over was refused.
    pub fn seat_here(&self) -> Seat {
        self.balancer.seat(self.here)
    }

    /// Sends `handoff` to the thread its seat names; gives it back if that thread stopped
    /// taking hand-overs.
    pub fn hand_over(&self, handoff: Handoff) -> Result<(), Box<Handoff>> {
        let thread = handoff.seat.thread;
        self.balancer.inboxes[thread - 1]
            .send(handoff)
            .map_err(|refused| Box::new(refused.0))
    }

    /// The next connection handed to this thread.
    pub async fn received(&mut self) -> Option<Handoff> {
        self.inbox.recv().await
    }

    /// Stops taking hand-overs and returns those already sent, which the thread still serves:
    /// a sender refused from now on serves its connection itself.
    pub fn close(&mut self) -> Vec<Handoff> {
        self.inbox.close();
        std::iter::from_fn(|| self.inbox.try_recv().ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(balancer: &Balancer) -> Vec<usize> {
        balancer
            .open
            .iter()
            .map(|open| open.load(Ordering::Relaxed))
            .collect()
    }

    #[test]
    fn a_burst_accepted_by_one_thread_is_spread_over_all() {
        let balancer = Balancer::new(2);
        let seats: Vec<Seat> = (0..32).map(|_| balancer.place(1)).collect();
        let served_by_2 = seats.iter().filter(|s| s.thread() == 2).count();
        assert!((15..=16).contains(&served_by_2), "{served_by_2} of 32");
        assert_eq!(counts(&balancer).iter().sum::<usize>(), 32);

        let balancer = Balancer::new(4);
        let _seats: Vec<Seat> = (0..40).map(|_| balancer.place(3)).collect();
        let counts = counts(&balancer);
        let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
        assert!(max - min <= SLACK, "{counts:?}");
    }

    #[test]
    fn the_accepting_thread_keeps_connections_within_the_slack() {
        let balancer = Balancer::new(3);
        let first = balancer.place(2);
        assert_eq!(first.thread(), 2, "all idle: no hand-over");
        let second = balancer.place(2);
        assert_eq!(
            second.thread(),
            2,
            "one more than the others is within the slack"
        );
        let third = balancer.place(2);
        assert_eq!(
            third.thread(),
            1,
            "the least busy, the lowest-numbered of equals"
        );
        assert_eq!(counts(&balancer), vec![1, 2, 0]);
        drop((first, second));
        assert_eq!(
            counts(&balancer),
            vec![1, 0, 0],
            "dropped seats are no longer counted"
        );
        assert_eq!(balancer.place(2).thread(), 2, "back within the slack");
    }

    #[tokio::test]
    async fn a_closed_post_returns_what_was_sent_and_refuses_the_rest() {
        let balancer = Balancer::new(2);
        let mut one = balancer.post(1);
        let mut two = balancer.post(2);
        let slots = Arc::new(tokio::sync::Semaphore::new(4));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handoff = || {
            let _client = std::net::TcpStream::connect(addr).unwrap();
            let (stream, peer) = listener.accept().unwrap();
            Handoff {
                stream,
                peer,
                slot: slots.clone().try_acquire_owned().unwrap(),
                seat: balancer.seat(2),
            }
        };
        one.hand_over(handoff()).ok().unwrap();
        assert_eq!(two.received().await.unwrap().seat.thread(), 2);
        one.hand_over(handoff()).ok().unwrap();
        let pending = two.close();
        assert_eq!(pending.len(), 1, "sent before the close");
        let mut refused = one.hand_over(handoff()).unwrap_err();
        assert_eq!(refused.seat.thread(), 2);
        refused.seat = one.seat_here();
        assert_eq!(
            counts(&balancer),
            vec![1, 1],
            "what thread 2 holds, and the refused one"
        );
        assert_eq!(one.close().len(), 0);
    }
}
