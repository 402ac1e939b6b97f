//! Where configuration strings come from besides the file.
//!
//! [`Env`] is the one seam through which seawall reads environment variables: the process
//! environment in production, a plain map in tests, so that config tests never touch (or race
//! on) the real environment. Nothing outside `config` implements or calls it.

use std::collections::BTreeMap;

/// A source of `NAME=value` strings.
pub trait Env {
    /// The value of `name`, if set. Empty values count as unset, as most shells treat them.
    fn get(&self, name: &str) -> Option<String>;

    /// Every variable whose name starts with `prefix`, sorted by name.
    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
            .collect();
        vars.sort();
        vars
    }
}

/// A fixed set of variables; what tests pass instead of the process environment.
pub type MapEnv = BTreeMap<String, String>;

impl Env for MapEnv {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).filter(|v| !v.is_empty()).cloned()
    }

    fn with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, v)| k.starts_with(prefix) && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

use crate::config::ConfigError;
use crate::config::raw::RawConfig;

/// Which environment variable set a config key, so validation errors can name it.
pub type Sources = BTreeMap<&'static str, &'static str>;

/// Lays the environment variables seawall understands over the file's values.
///
/// Environment wins over the file. Only type errors are caught here (a port that is not a
/// number); range and shape checks happen in validation, which names the variable through
/// `sources`.
pub fn overlay(
    raw: &mut RawConfig,
    env: &dyn Env,
    sources: &mut Sources,
) -> Result<(), ConfigError> {
    if let Some(port) = env.get("PORT") {
        let port: u32 = port.trim().parse().map_err(|_| {
            ConfigError::new(
                "PORT",
                format!("{port:?} is not a port number (expected 0-65535)"),
            )
        })?;
        raw.server.listen = Some(format!("0.0.0.0:{port}"));
        sources.insert("server.listen", "PORT");
    }
    let strings: [(&'static str, &'static str, &mut Option<String>); 5] = [
        ("SEAWALL_LISTEN", "server.listen", &mut raw.server.listen),
        (
            "SEAWALL_ADMIN_LISTEN",
            "server.admin_listen",
            &mut raw.server.admin_listen,
        ),
        (
            "SEAWALL_DATA_DIR",
            "store.data_dir",
            &mut raw.store.data_dir,
        ),
        ("SEAWALL_LOG_FORMAT", "log.format", &mut raw.log.format),
        ("RUST_LOG", "log.filter", &mut raw.log.filter),
    ];
    for (var, key, slot) in strings {
        if let Some(value) = env.get(var) {
            *slot = Some(value);
            sources.insert(key, var);
        }
    }
    if let Some(token) = env.get("SEAWALL_ADMIN_TOKEN") {
        raw.admin.token = Some(token);
        sources.insert("admin.token", "SEAWALL_ADMIN_TOKEN");
    }
    if let Some(url) = env.get("CHROMA_URL") {
        let chroma = raw.upstreams.entry("chroma".to_string()).or_default();
        chroma.url = Some(url);
        chroma.kind.get_or_insert_with(|| "chroma".to_string());
        sources.insert("upstreams.chroma.url", "CHROMA_URL");
    }
    let postgres_set = ["DATABASE_URL", "DB_POOL_MAX", "DB_POOL_MIN"]
        .iter()
        .any(|v| env.get(v).is_some());
    if postgres_set {
        let postgres = raw.postgres.get_or_insert_with(Default::default);
        if let Some(url) = env.get("DATABASE_URL") {
            postgres.url = Some(url);
            sources.insert("postgres.url", "DATABASE_URL");
        }
        for (var, key, slot) in [
            ("DB_POOL_MAX", "postgres.pool_max", &mut postgres.pool_max),
            ("DB_POOL_MIN", "postgres.pool_min", &mut postgres.pool_min),
        ] {
            if let Some(value) = env.get(var) {
                let parsed = value.trim().parse().map_err(|_| {
                    ConfigError::new(var, format!("{value:?} is not a number of connections"))
                })?;
                *slot = Some(parsed);
                sources.insert(key, var);
            }
        }
    }
    if raw.server.trust_fly_proxy.is_none() && env.get("FLY_APP_NAME").is_some() {
        raw.server.trust_fly_proxy = Some(true);
        sources.insert("server.trust_fly_proxy", "FLY_APP_NAME");
    }
    Ok(())
}
