//! seawall: a single-binary resilience gateway in front of an HTTP backend, PostgreSQL and
//! ChromaDB, with its own state in an embedded sled store.
//!
//! Code map, in the order a request meets it (ARCHITECTURE.md is the long form):
//!
//! - `cli`, `config`: command line, then file + environment into a validated [`config::Config`].
//! - `state`: the config turned into running state ([`state::AppState`]): store, pools, routes.
//! - `server`: listeners, connection limits, the per-request frame, graceful shutdown;
//!   `shutdown` is the signal that starts it; `send_timeout` closes connections whose client
//!   stopped reading (`stall`: the progress deadline it shares with upstream bodies).
//!   `proxy_threads`: the threads serving the proxy listener, a runtime each;
//!   `conn_balance` spreads the connections over them.
//! - `router` (proxy listener) and `admin` (admin listener): what each request means.
//! - `route`, `path_pattern`: the route table. `proxy`, `upstream`: forwarding to HTTP upstreams;
//!   `client_body`: which of a failed call's faults were the client's.
//!   `tunnel`: WebSockets and other upgraded connections, joined byte for byte.
//! - `request_context`: request id and client address (trusted proxies). `request_target`: the
//!   path in normal form and the Host rules, before routing.
//! - `error`: the request-path error and its HTTP mapping; `body`: response bodies.
//! - `health`, `metrics`, `request_stats`, `process_metrics`: observability; `watchdog`: a
//!   runtime that runs no task is reported, then restarted by ending the process.
//! - `flags`, `features`, `ofrep`: feature flags and seawall's own features as flags.
//! - `breaker`, `breakers`, `ratelimit`, `pg`, `pg_pool`, `sql_route`: protections and the
//!   database.
//! - `audit`: the audit trail (model, redaction, keys, writer, policy, middleware, retention,
//!   query, signed digests and verification, GDPR rights, crypto-shredding, the erasure
//!   ledger, the watermark); `backup`: verified copies of the data directory.
//! - `admin_*`: the admin API of each subsystem.
//! - `store`: sled, opened once. `admin_token`: admin authentication. `logging`, `time`, `hex`,
//!   `ip_text`: utilities.
//!   `fd_limit`: the open-file limit raised at start to what the configuration can hold open.
#![forbid(unsafe_code)]

pub mod admin;
pub mod admin_audit;
pub mod admin_dependencies;
pub mod admin_flags;
pub mod admin_gdpr;
pub mod admin_ratelimits;
pub mod admin_token;
pub mod audit;
pub mod backup;
pub mod body;
pub mod breaker;
pub mod breakers;
pub mod cli;
pub mod client_body;
pub mod config;
pub mod conn_balance;
pub mod error;
pub mod fd_limit;
pub mod features;
pub mod flags;
pub mod health;
pub mod hex;
pub mod ip_text;
pub mod logging;
pub mod metrics;
pub mod ofrep;
pub mod path_pattern;
pub mod pg;
pub mod pg_pool;
pub mod process_metrics;
pub mod proxy;
pub mod proxy_threads;
pub mod ratelimit;
pub mod request_context;
pub mod request_stats;
pub mod request_target;
pub mod route;
pub mod router;
pub mod send_timeout;
pub mod server;
pub mod shutdown;
pub mod sql_route;
pub mod stall;
pub mod state;
pub mod store;
pub mod time;
pub mod tunnel;
pub mod upstream;
pub mod watchdog;
