//! seawall's integration tests: one binary, one module per capability. Tests talk HTTP to a
//! real seawall process on ephemeral ports with a temporary data directory, and to the real
//! PostgreSQL and ChromaDB that `tests/run` starts.

mod backend;
mod support;

mod admin_auth;
mod alerts;
mod audit;
mod audit_format;
mod breakers;
mod chaos;
mod chroma;
mod config_errors;
mod contention;
mod crash_recovery;
mod environment;
mod features;
mod flag_spec;
mod flags;
mod fly;
mod gdpr;
mod health_metrics;
mod ofrep;
mod open_files;
mod openapi;
mod postgres;
mod proxying;
mod ratelimit;
mod raw_requests;
mod shutdown;
mod stalls;
mod upgrades;
mod witness;
