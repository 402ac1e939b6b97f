//! The threads that serve the proxy listener: each runs a current-thread tokio runtime of its
//! own and accepts connections from the same listening socket, as nginx's worker processes do.
//!
//! A connection is served from start to end on one thread, and so are the
//! upstream connections its requests use: each upstream keeps one pool per runtime, chosen by
//! [`runtime_index`]. A work-stealing runtime hands tasks and wake-ups between its workers;
//! here nothing crosses threads on the request path except the audit queue and shared
//! counters. Every thread waits on the one socket, and `conn_balance` evens out what they
//! accept (`SO_REUSEPORT` would spread connections by a hash of their addresses instead,
//! whatever each thread's load). What a thread runs is `server`'s business; the admin listener,
//! background tasks and blocking work stay on the main runtime, the audit writer and sled on
//! threads of their own.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

thread_local! {
    static RUNTIME_INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Tasks still running when a thread's work is done get this long to finish their blocking
/// calls (a database query) before the thread ends anyway.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// The runtime the calling thread runs: 0 for the main runtime and any thread that is not a
/// proxy thread, `1..=n` for proxy thread `n`.
pub fn runtime_index() -> usize {
    RUNTIME_INDEX.with(Cell::get)
}

/// The name of proxy thread `index` (its runtime's name in the watchdog's log).
pub fn thread_name(index: usize) -> String {
    format!("proxy-{index}")
}

/// Binds `addr` once and returns the listening socket `count` times (a `dup` each, at least
/// one), non-blocking as tokio needs it, for the threads to share. std sets `SO_REUSEADDR`
/// as tokio does.
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let socket = TcpListener::bind(addr)?;
    socket.set_nonblocking(true)?;
    let mut sockets = (1..count)
        .map(|_| socket.try_clone())
        .collect::<io::Result<Vec<_>>>()?;
    sockets.push(socket);
    Ok(sockets)
}

/// Starts one thread per input, numbered from 1, each running `serve(index, input)` on a
/// current-thread runtime of its own until it completes. Join the handles to wait for them.
pub fn start<T, F, Fut>(inputs: Vec<T>, serve: F) -> Vec<JoinHandle<()>>
where
    T: Send + 'static,
    F: Fn(usize, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let serve = Arc::new(serve);
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| {
            let index = i + 1;
            let serve = serve.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime starts");
            std::thread::Builder::new()
                .name(thread_name(index))
                .spawn(move || {
                    RUNTIME_INDEX.with(|cell| cell.set(index));
                    let serving = serve(index, input);
                    // What `serve` captured is not kept for the thread's lifetime.
                    drop(serve);
                    runtime.block_on(serving);
                    runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
                })
                .expect("a proxy thread starts")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_runs_its_input_on_a_runtime_that_knows_its_index() {
        let (seen, received) = std::sync::mpsc::channel();
        let threads = start(vec!["a", "b", "c"], move |index, input| {
            let seen = seen.clone();
            async move {
                // A task spawned here runs on this thread's runtime, with its index.
                let spawned = tokio::spawn(async { runtime_index() }).await.unwrap();
                let name = std::thread::current().name().map(str::to_string);
                seen.send((index, input, spawned, name)).unwrap();
            }
        });
        for thread in threads {
            thread.join().unwrap();
        }
        let mut seen: Vec<_> = received.try_iter().collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (1, "a", 1, Some("proxy-1".to_string())),
                (2, "b", 2, Some("proxy-2".to_string())),
                (3, "c", 3, Some("proxy-3".to_string())),
            ]
        );
        assert_eq!(runtime_index(), 0, "other threads run the main runtime");
    }

    #[test]
    fn the_threads_share_one_non_blocking_socket() {
        let sockets = bind("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(sockets.len(), 3);
        let addr = sockets[0].local_addr().unwrap();
        for socket in &sockets {
            assert_eq!(socket.local_addr().unwrap(), addr);
            // Non-blocking: nobody is connecting, so accepting would block.
            let error = socket.accept().unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        }
        // One connection, accepted through any of them.
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = (0..1000).find_map(|_| {
            sockets.iter().find_map(|s| s.accept().ok()).or_else(|| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                None
            })
        });
        assert!(
            accepted.is_some(),
            "the connection reached the shared socket"
        );
    }
}
