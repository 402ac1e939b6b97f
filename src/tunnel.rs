//! Upgraded connections: WebSockets and other HTTP/1.1 `Upgrade`s.
//!
//! Once an upstream answers `101 Switching Protocols`, the client's socket and the upstream's
//! are joined byte for byte until both sides have closed, nothing flows either way for
//! `server.upgraded_idle_timeout_ms`, or seawall shuts down. This module owns that copy, the
//! bound on open tunnels (`server.max_upgraded_connections`, apart from the HTTP connection
//! cap, since a tunnel no longer holds one) and closing them all at shutdown: they have no
//! request boundary at which to finish, so they close when the drain begins and clients
//! reconnect. Which requests may upgrade (a route's `upgrades`) and the header rules belong
//! to `proxy`. What flows inside a tunnel is neither rate limited nor audited; the handshake
//! request is, like any other.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::ServerConfig;
use crate::metrics::{Counter, Exposition};

/// Each direction's copy buffer: 16 KiB per tunnel in all.
const BUFFER: usize = 8 * 1024;

/// The open tunnels and their bound.
pub struct Tunnels {
    slots: Arc<Semaphore>,
    max: usize,
    idle: Duration,
    closing: watch::Sender<bool>,
    opened: Counter,
    refused: Counter,
    /// By how they ended, indexed by [`End`].
    ended: [Counter; End::ALL.len()],
}

/// A reserved place for one tunnel, taken before the upstream is asked to switch.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides closed their end.
    Closed,
    /// Nothing flowed either way for the idle timeout, or a side stopped reading.
    Idle,
    /// seawall is shutting down.
    Shutdown,
    /// A socket failed (reset, or an upgrade that did not complete).
    Error,
}

impl End {
    /// In discriminant order, so `end as usize` indexes per-end arrays.
    const ALL: [End; 4] = [End::Closed, End::Idle, End::Shutdown, End::Error];

    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Idle => "idle",
            End::Shutdown => "shutdown",
            End::Error => "error",
        }
    }
}

impl Tunnels {
    pub fn new(config: &ServerConfig) -> Tunnels {
        Tunnels {
            slots: Arc::new(Semaphore::new(config.max_upgraded_connections)),
            max: config.max_upgraded_connections,
            idle: config.upgraded_idle_timeout,
            closing: watch::channel(false).0,
            opened: Counter::default(),
            refused: Counter::default(),
            ended: Default::default(),
        }
    }

    /// A place for one more tunnel, or `None` when the bound is reached (or shutdown began).
    pub fn reserve(&self) -> Option<Slot> {
        if *self.closing.borrow() {
            return None;
        }
        match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Some(Slot { _permit: permit }),
            Err(_) => {
                self.refused.inc();
                None
            }
        }
    }

    /// Joins the two sockets once both upgrades complete (the client's completes when the
    /// 101 has been written to it), on a task of its own.
    pub fn open(self: &Arc<Self>, slot: Slot, client: OnUpgrade, upstream: OnUpgrade) {
        let tunnels = self.clone();
        tokio::spawn(async move {
            let end = match tokio::try_join!(client, upstream) {
                Ok((client, upstream)) => {
                    tunnels.opened.inc();
                    let closing = tunnels.closing.subscribe();
                    join(
                        TokioIo::new(client),
                        TokioIo::new(upstream),
                        tunnels.idle,
                        closing,
                    )
                    .await
                }
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade did not complete");
                    End::Error
                }
            };
            tracing::debug!(end = end.as_str(), "tunnel ended");
            tunnels.ended[end as usize].inc();
            drop(slot);
        });
    }

    /// Closes every open tunnel and refuses new ones.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// How many tunnels are open (or being opened).
    pub fn open_count(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        out.single(
            "seawall_upgraded_connections",
            "gauge",
            "Upgraded connections (WebSockets) open now.",
            self.open_count() as f64,
        );
        out.single(
            "seawall_upgraded_connections_opened_total",
            "counter",
            "Upgraded connections opened after the upstream switched protocols.",
            self.opened.get() as f64,
        );
        out.single(
            "seawall_upgraded_connections_refused_total",
            "counter",
            "Upgrade requests answered 503 because server.max_upgraded_connections were open.",
            self.refused.get() as f64,
        );
        out.header(
            "seawall_upgraded_connections_ended_total",
            "counter",
            "Upgraded connections ended, by how: closed, idle, shutdown or error.",
        );
        for (end, count) in End::ALL.iter().zip(&self.ended) {
            out.sample(
                "seawall_upgraded_connections_ended_total",
                &[("end", end.as_str())],
                count.get() as f64,
            );
        }
    }
}

/// Copies bytes both ways until both sides have closed (a side's end of stream is passed on
/// as a half-close), nothing moves for `idle`, or `closing` turns true.
pub async fn join<C, U>(
    client: C,
    upstream: U,
    idle: Duration,
    mut closing: watch::Receiver<bool>,
) -> End
where
    C: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let mut to_upstream = Direction::new();
    let mut to_client = Direction::new();
    while to_upstream.open || to_client.open {
        let moved = tokio::select! {
            read = client_read.read(&mut to_upstream.buffer), if to_upstream.open => {
                to_upstream.pass(read, &mut upstream_write, idle).await
            }
            read = upstream_read.read(&mut to_client.buffer), if to_client.open => {
                to_client.pass(read, &mut client_write, idle).await
            }
            _ = tokio::time::sleep(idle) => return End::Idle,
            // The guard `wait_for` returns must not live across the awaits above.
            _ = async { closing.wait_for(|closing| *closing).await.is_ok() } => {
                return End::Shutdown;
            }
        };
        if let Err(end) = moved {
            return end;
        }
    }
    End::Closed
}

/// One direction of a tunnel.
struct Direction {
    buffer: Box<[u8]>,
    open: bool,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            buffer: vec![0; BUFFER].into_boxed_slice(),
            open: true,
        }
    }

    /// Writes what was read to the other side, or passes its end of stream on. A write that
    /// makes no progress for `idle` ends the tunnel: the reader has stopped reading.
    async fn pass(
        &mut self,
        read: io::Result<usize>,
        to: &mut (impl AsyncWrite + Unpin),
        idle: Duration,
    ) -> Result<(), End> {
        let written = match read {
            Ok(0) => {
                self.open = false;
                tokio::time::timeout(idle, to.shutdown()).await
            }
            Ok(n) => tokio::time::timeout(idle, to.write_all(&self.buffer[..n])).await,
            Err(_) => return Err(End::Error),
        };
        match written {
            Ok(Ok(())) => Ok(()),
            // The other side may already be gone after a half-close; that ends the tunnel
            // normally once this side has closed too.
            Ok(Err(_)) if !self.open => Ok(()),
            Ok(Err(_)) => Err(End::Error),
            Err(_) => Err(End::Idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    fn never_closing() -> (watch::Sender<bool>, watch::Receiver<bool>) {
        watch::channel(false)
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_closes_pass_through() {
        let (client, mut client_peer) = duplex(64);
        let (upstream, mut upstream_peer) = duplex(64);
        let (_keep, closing) = never_closing();
        let tunnel = tokio::spawn(join(client, upstream, Duration::from_secs(30), closing));

        client_peer.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // More than one buffer's worth, to cover repeated reads and writes.
        let big = vec![7u8; 3 * BUFFER + 5];
        let writer = {
            let big = big.clone();
            tokio::spawn(async move {
                upstream_peer.write_all(&big).await.unwrap();
                upstream_peer.shutdown().await.unwrap();
                upstream_peer
            })
        };
        let mut received = vec![0; big.len()];
        client_peer.read_exact(&mut received).await.unwrap();
        assert_eq!(received, big);
        // The upstream's end of stream reaches the client, and the client can still write.
        assert_eq!(client_peer.read(&mut got).await.unwrap(), 0);
        let mut upstream_peer = writer.await.unwrap();
        client_peer.write_all(b"last").await.unwrap();
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"last");
        client_peer.shutdown().await.unwrap();
        assert_eq!(upstream_peer.read(&mut got).await.unwrap(), 0);
        assert_eq!(tunnel.await.unwrap(), End::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_tunnel_ends_at_the_idle_timeout() {
        let (client, _client_peer) = duplex(64);
        let (upstream, _upstream_peer) = duplex(64);
        let (_keep, closing) = never_closing();
        let end = join(client, upstream, Duration::from_secs(300), closing).await;
        assert_eq!(end, End::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_side_that_stops_reading_ends_the_tunnel() {
        let (client, mut client_peer) = duplex(64);
        // The upstream's peer never reads: its 16-byte pipe fills and writes stall.
        let (upstream, _upstream_peer) = duplex(16);
        let (_keep, closing) = never_closing();
        let tunnel = tokio::spawn(join(client, upstream, Duration::from_secs(60), closing));
        let _ = client_peer.write_all(&[1; 64]).await;
        assert_eq!(tunnel.await.unwrap(), End::Idle);
    }

    #[tokio::test]
    async fn closing_ends_open_tunnels() {
        let (client, _client_peer) = duplex(64);
        let (upstream, _upstream_peer) = duplex(64);
        let (close, closing) = watch::channel(false);
        let tunnel = tokio::spawn(join(client, upstream, Duration::from_secs(3600), closing));
        close.send_replace(true);
        assert_eq!(tunnel.await.unwrap(), End::Shutdown);
    }
}
