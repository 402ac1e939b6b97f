//! Structured logs through `tracing`: human-readable text by default, one JSON object per line
//! with `SEAWALL_LOG_FORMAT=json`, filtered by `RUST_LOG` (both read by `config`).
//!
//! Request handling runs inside a `request` span carrying the request id, so every line logged
//! while serving a request names it.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. An unparsable filter falls back to `info` with a warning
/// rather than refusing to start: logs are how the operator would find out what went wrong.
pub fn init(config: &LogConfig) {
    let (filter, bad_filter) = match EnvFilter::try_new(&config.filter) {
        Ok(filter) => (filter, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let installed = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if installed.is_err() {
        return;
    }
    if let Some(e) = bad_filter {
        tracing::warn!(filter = %config.filter, error = %e, "log filter (RUST_LOG) is invalid; logging at info");
    }
}
