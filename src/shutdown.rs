//! The shutdown trigger: SIGINT (Ctrl-C in a terminal) or SIGTERM (Fly's `kill_signal`, and
//! what process managers send), plus SIGHUP, all through `ctrlc`'s termination feature.
//!
//! The handler runs on ctrlc's own thread and only flips a watch channel; everything that
//! follows (readiness, draining, flushing) happens in `server::run`.

use std::future::Future;

use tokio::sync::watch;

/// Installs the signal handler and returns a future that resolves on the first signal.
///
/// Can be called once per process.
pub fn on_signal() -> Result<impl Future<Output = ()>, ctrlc::Error> {
    let (tx, mut rx) = watch::channel(false);
    ctrlc::set_handler(move || {
        tx.send_replace(true);
    })?;
    Ok(async move {
        // The sender lives in the handler for the rest of the process, so this only ends on a
        // signal.
        let _ = rx.wait_for(|signalled| *signalled).await;
    })
}
