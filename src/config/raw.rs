//! The configuration file as written: serde shapes of the TOML, before validation.
//!
//! Every struct denies unknown fields, so a misspelt key is an error rather than a silently
//! ignored setting. Values here are unchecked strings and numbers; `config::validate` turns them
//! into the typed structs the rest of seawall uses. Defaults live in `validate`, not here, so
//! that a value is "unset" until validation decides what unset means.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub backup: RawBackup,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub features: crate::config::flags::RawFeatures,
    #[serde(default)]
    pub ofrep: crate::config::flags::RawOfrep,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub postgres: Option<RawPostgres>,
    #[serde(default)]
    pub ratelimit: RawRateLimit,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub audit: RawAudit,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_connections: Option<u64>,
    pub admin_max_connections: Option<u64>,
    pub proxy_threads: Option<u64>,
    pub max_body_bytes: Option<u64>,
    pub admin_max_body_bytes: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<u64>,
    pub send_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub shutdown_delay_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub max_upgraded_connections: Option<u64>,
    pub upgraded_idle_timeout_ms: Option<u64>,
    pub watchdog_kill_ms: Option<u64>,
    pub trusted_proxies: Option<Vec<String>>,
    pub trust_fly_proxy: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub data_dir: Option<String>,
    pub cache_capacity_mb: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    pub keep: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub filter: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub url: Option<String>,
    pub kind: Option<String>,
    pub health_path: Option<String>,
    pub max_connections: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
    pub max_queue: Option<u64>,
    pub acquire_timeout_ms: Option<u64>,
    pub breaker: Option<RawBreaker>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub window: Option<String>,
    pub window_size: Option<u64>,
    pub minimum_calls: Option<u64>,
    pub failure_rate_threshold: Option<f64>,
    pub slow_call_rate_threshold: Option<f64>,
    pub slow_call_duration_ms: Option<u64>,
    pub half_open_permits: Option<u64>,
    pub wait_in_open_ms: Option<u64>,
    pub wait_multiplier: Option<f64>,
    pub max_wait_in_open_ms: Option<u64>,
    pub max_wait_in_half_open_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match")]
    pub path: Option<String>,
    pub methods: Option<Vec<String>>,
    pub upstream: Option<String>,
    pub strip_prefix: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub upgrades: Option<Vec<String>>,
    pub flag: Option<String>,
    pub postgres: Option<String>,
    pub params: Option<Vec<String>>,
    pub priority: Option<String>,
    pub rate_limit: Option<OneOrMany>,
    pub audit: Option<RawRouteAudit>,
}

/// A route's own `audit = { event = "...", level = "...", stream = "...", durability = "..." }`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteAudit {
    pub event: Option<String>,
    pub level: Option<String>,
    pub stream: Option<String>,
    pub durability: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    pub origin: Option<String>,
    pub flush_interval_ms: Option<u64>,
    pub strict_timeout_ms: Option<u64>,
    pub queue_capacity: Option<u64>,
    pub queue_mb: Option<u64>,
    pub body_days: Option<u64>,
    pub retention_interval_ms: Option<u64>,
    pub retention_clock_jump_tolerance_ms: Option<u64>,
    #[serde(default)]
    pub retention: BTreeMap<String, RawRetention>,
    #[serde(default)]
    pub rules: Vec<RawAuditRule>,
    pub require_explicit_coverage: Option<bool>,
    pub digest_every: Option<u64>,
    pub digest_interval_ms: Option<u64>,
    pub digest_idle_ms: Option<u64>,
    pub kek_rotation_interval_ms: Option<u64>,
    pub verify_interval_ms: Option<u64>,
    pub capacity_high_water_percent: Option<u64>,
    pub capacity_check_interval_ms: Option<u64>,
    #[serde(default)]
    pub erasure: BTreeMap<String, RawErasure>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawErasure {
    pub action: Option<String>,
    pub basis: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub header_days: Option<u64>,
    pub payload_days: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuditRule {
    pub routes: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub event: Option<String>,
    pub level: Option<String>,
    pub stream: Option<String>,
    pub durability: Option<String>,
}

/// A string or a list of strings (`rate_limit = "ai.chat"` or `["ai.chat", "burst"]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub max_in_flight: Option<u64>,
    pub api_key_header: Option<String>,
    pub max_keys: Option<u64>,
    pub ofrep_priority: Option<String>,
    #[serde(default)]
    pub levels: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub quota: Option<u64>,
    pub window_s: Option<u64>,
    pub shed_at: Option<f64>,
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    pub url: Option<String>,
    pub pool_max: Option<u64>,
    pub pool_min: Option<u64>,
    pub acquire_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub statement_timeout_ms: Option<u64>,
    pub call_timeout_ms: Option<u64>,
    pub max_queue: Option<u64>,
    pub breaker: Option<RawBreaker>,
}
