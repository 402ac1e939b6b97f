//! Configuration: read once at start, validated into typed per-subsystem structs.
//!
//! Sources, in rising precedence: embedded defaults, the optional TOML file (`--config PATH` or
//! `SEAWALL_CONFIG`), then environment variables. This module is the only place that reads the
//! environment; everything else receives the typed [`Config`]. A bad value is a [`ConfigError`]
//! naming the key (or the variable that set it), the value and what was expected; `main` turns
//! it into exit status 64. Turning the config into running state (sockets, the store, pools) is
//! left to `state` and `server`.

mod audit;
mod database;
mod env;
mod flags;
mod ratelimit;
mod raw;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Method, Uri};
use ipnet::IpNet;
use serde::{Serialize, Serializer};

pub use env::{Env, MapEnv, ProcessEnv};
pub use flags::{BUILTIN_FEATURES, FlagSpec, FlagsConfig};

use crate::audit::AuditConfig;
use crate::audit::policy::Rule as AuditRule;
use crate::breaker::BreakerConfig;
use crate::path_pattern::PathPattern;
use crate::ratelimit::{Level, RateLimitConfig};

/// The whole validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub backup: BackupConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub health: HealthConfig,
    pub flags: FlagsConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub postgres: Option<PostgresConfig>,
    pub ratelimit: RateLimitConfig,
    pub routes: Vec<RouteConfig>,
    pub audit: AuditConfig,
    /// Settings that take effect only with a feature that is configured off; shown by
    /// `check-config` and logged at start.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Listeners, limits and timeouts of the HTTP server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    #[serde(serialize_with = "display")]
    pub listen: SocketAddr,
    #[serde(serialize_with = "display")]
    pub admin_listen: SocketAddr,
    pub max_connections: usize,
    pub admin_max_connections: usize,
    /// Threads serving the proxy listener, each with a runtime of its own (see
    /// `proxy_threads`); the admin listener and background work have the main runtime.
    pub proxy_threads: usize,
    /// Default limit on a proxied request body; routes may override it.
    pub max_body_bytes: u64,
    pub admin_max_body_bytes: u64,
    #[serde(serialize_with = "millis")]
    pub header_read_timeout: Duration,
    /// Bound on a request's head (request line and headers); a larger head is answered 431
    /// by hyper. Each connection's read buffer holds at most this or 64 KiB, the larger.
    pub max_header_bytes: usize,
    /// A write to a client that makes no progress for this long closes the connection, so a
    /// client that stops reading cannot hold an upstream slot.
    #[serde(serialize_with = "millis")]
    pub send_timeout: Duration,
    /// Bound on the time from a request's arrival to its response head.
    #[serde(serialize_with = "millis")]
    pub request_timeout: Duration,
    /// Time between readiness turning 503 and the listeners closing, so that a load balancer
    /// notices before connections are refused.
    #[serde(serialize_with = "millis")]
    pub shutdown_delay: Duration,
    /// Deadline for in-flight requests once the listeners have closed.
    #[serde(serialize_with = "millis")]
    pub shutdown_grace: Duration,
    /// Bound on open tunnels (WebSockets and other upgrades), apart from `max_connections`.
    pub max_upgraded_connections: usize,
    /// A tunnel in which nothing flows either way for this long is closed.
    #[serde(serialize_with = "millis")]
    pub upgraded_idle_timeout: Duration,
    /// A runtime that runs no task for this long ends the process (see `watchdog`); `None`
    /// (`watchdog_kill_ms = 0`) only reports stalls.
    #[serde(serialize_with = "optional_millis")]
    pub watchdog_kill: Option<Duration>,
    /// Peers whose `Fly-Client-IP` / `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    #[serde(serialize_with = "display_all")]
    pub trusted_proxies: Vec<IpNet>,
}

/// Where seawall keeps its state.
#[derive(Debug, Clone, Serialize)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub cache_capacity_bytes: u64,
}

impl StoreConfig {
    /// sled's page cache when `store.cache_capacity_mb` is not set. Under audited load it
    /// mostly holds the audit buckets' newest leaves: with the record groups of
    /// `audit::writer`, saturating audited load on two cores peaked at 59-60 MiB resident with
    /// 16 MiB against 75-79 with 32 (90-106 with 64), for the same writer CPU per event, and
    /// exporting, erasing and verifying over a million events took as long. The memory it
    /// saves is what keeps a full audit queue (`audit.queue_mb`) under the 128 MiB target.
    pub const DEFAULT_CACHE_CAPACITY_MB: u64 = 16;
}

/// Online backups.
#[derive(Debug, Clone, Serialize)]
pub struct BackupConfig {
    /// How many backups in `<data_dir>/backups/` (the default destination) are kept: after
    /// each verified one there, the oldest beyond this are deleted. 0 keeps them all.
    pub keep: usize,
}

/// Admin API settings.
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// `None` means: use (or create) the token file in the data directory.
    pub token: Option<Secret>,
}

/// Log output.
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Background health checks.
#[derive(Debug, Clone, Serialize)]
pub struct HealthConfig {
    #[serde(serialize_with = "millis")]
    pub interval: Duration,
    #[serde(serialize_with = "millis")]
    pub timeout: Duration,
}

/// One HTTP upstream (`[upstreams.NAME]`).
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamConfig {
    pub name: String,
    pub kind: UpstreamKind,
    #[serde(serialize_with = "display")]
    pub url: Uri,
    /// Path probed by the background health check; `None` disables the probe.
    pub health_path: Option<String>,
    pub max_connections: usize,
    #[serde(serialize_with = "millis")]
    pub connect_timeout: Duration,
    /// Bound on the upstream's time to answer with a response head.
    #[serde(serialize_with = "millis")]
    pub timeout: Duration,
    /// Bound on the wait for each next piece of the upstream's response body.
    #[serde(serialize_with = "millis")]
    pub body_timeout: Duration,
    /// With enhanced pooling: requests that may wait for a slot; more are refused at once.
    pub max_queue: usize,
    /// With enhanced pooling: the longest wait for a slot.
    #[serde(serialize_with = "millis")]
    pub acquire_timeout: Duration,
    pub breaker: BreakerConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    Http,
    Chroma,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match", serialize_with = "display")]
    pub pattern: PathPattern,
    /// `None` accepts every method.
    #[serde(serialize_with = "methods")]
    pub methods: Option<Vec<Method>>,
    #[serde(flatten)]
    pub target: RouteTarget,
    pub strip_prefix: Option<String>,
    pub max_body_bytes: u64,
    /// Protocols (lowercase) a request may switch to with `Upgrade`, such as `websocket`;
    /// empty for none (the `Upgrade` header is then removed like any hop-by-hop header).
    pub upgrades: Vec<String>,
    /// Served only while this flag is on for the request; otherwise 404.
    pub flag: Option<String>,
    /// The route's quota tier and shedding order.
    pub priority: Level,
    /// Custom policies that apply in addition to the level's.
    pub rate_limits: Vec<String>,
    /// The route's own audit settings, used when no `[[audit.rules]]` entry matches.
    pub audit: Option<AuditRule>,
}

/// What a route does with a request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteTarget {
    /// Proxy to `[upstreams.NAME]`.
    Upstream(String),
    /// Run one parameterised statement; answer its rows as a JSON array.
    Postgres(SqlRoute),
}

#[derive(Debug, Clone, Serialize)]
pub struct SqlRoute {
    pub sql: String,
    /// Bound in order as `$1..$n`: each from the path, else the query string, else the body.
    pub params: Vec<String>,
}

/// The PostgreSQL pool (`[postgres]`, `DATABASE_URL`, `DB_POOL_MAX`, `DB_POOL_MIN`).
#[derive(Debug, Clone, Serialize)]
pub struct PostgresConfig {
    /// The connection string with its password masked.
    pub url: String,
    #[serde(skip)]
    pub connection: ::postgres::Config,
    pub pool_max: u32,
    pub pool_min: u32,
    #[serde(serialize_with = "millis")]
    pub acquire_timeout: Duration,
    #[serde(serialize_with = "millis")]
    pub connect_timeout: Duration,
    /// Set on every connection (`statement_timeout`), so the server ends slow statements.
    #[serde(serialize_with = "millis")]
    pub statement_timeout: Duration,
    /// Bound on a whole call (slot, connection, statement) as the client waits for it.
    #[serde(serialize_with = "millis")]
    pub call_timeout: Duration,
    pub max_queue: usize,
    pub breaker: BreakerConfig,
}

/// A secret string: never printed, logged or serialized in clear.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The clear value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

/// A configuration value that cannot be used, with the key (or variable) that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads the file (if any) and the environment, and validates the result.
    ///
    /// `file` is the `--config` argument; without it `SEAWALL_CONFIG` is consulted.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        let path = file
            .map(Path::to_path_buf)
            .or_else(|| env.get("SEAWALL_CONFIG").map(PathBuf::from));
        let text = match &path {
            Some(path) => std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?,
            None => String::new(),
        };
        Config::from_toml(&text, env)
    }

    /// Validates configuration text plus environment; what `load` does after reading the file.
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Config, ConfigError> {
        let mut raw = parse_toml(text)?;
        let mut sources = env::Sources::new();
        env::overlay(&mut raw, env, &mut sources)?;
        let flags = flags::flags_config(&raw.features, &raw.ofrep, env)?;
        validate::validate(raw, flags, &sources)
    }

    /// The effective configuration as pretty JSON with secrets masked (`check-config`).
    pub fn to_masked_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
}

fn parse_toml(text: &str) -> Result<raw::RawConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| ConfigError::new("config file", toml_message(&e)))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            "config file".to_string()
        } else {
            path
        };
        ConfigError::new(key, toml_message(e.inner()))
    })
}

/// toml's messages span several lines with a source excerpt; the first line plus the position
/// is what belongs in a one-line startup error.
fn toml_message(e: &toml::de::Error) -> String {
    let message = e.message().to_string();
    match e.span() {
        Some(span) => format!("{message} (at byte {})", span.start),
        None => message,
    }
}

fn display<T: fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn display_all<T: fmt::Display, S: Serializer>(values: &[T], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(ToString::to_string))
}

pub(crate) fn millis<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(value.as_millis())
}

/// `None` (switched off) as 0, as it is written in the file.
fn optional_millis<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(value.map_or(0, |d| d.as_millis()))
}

pub(crate) fn method_list<S: Serializer>(value: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(value.iter().map(Method::as_str))
}

fn methods<S: Serializer>(value: &Option<Vec<Method>>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(methods) => s.collect_seq(methods.iter().map(Method::as_str)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests;
