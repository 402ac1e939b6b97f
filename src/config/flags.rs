//! Flag-related configuration: the `[features]` and `[ofrep]` sections and the `FF_*`
//! environment variables (SPEC §4).
//!
//! `FF_<NAME>=true|false`, `FF_<NAME>_PERCENTAGE=0..100`, `FF_<NAME>_USERS=a,b` and
//! `FF_<NAME>_IPS=10.0.0.0/8,::1` define flag `<name>` (lowercased, `_` as `-`). The four
//! `FF_ENABLE_{CIRCUIT_BREAKER,ENHANCED_POOLING,PRIORITIZED_RATE_LIMIT,AUDIT_TRAIL}` names (and
//! their `_PERCENTAGE`) are reserved for seawall's own features and override `[features]`.
//! Turning these specs into flags is `flags::bootstrap`'s job.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::env::Env;
use crate::config::{ConfigError, Secret};

/// seawall's own features: (`FF_ENABLE_` suffix, `[features]` key, flag name).
pub const BUILTIN_FEATURES: [(&str, &str, &str); 4] = [
    (
        "CIRCUIT_BREAKER",
        "circuit_breaker",
        "seawall.circuit-breaker",
    ),
    (
        "ENHANCED_POOLING",
        "enhanced_pooling",
        "seawall.enhanced-pooling",
    ),
    (
        "PRIORITIZED_RATE_LIMIT",
        "prioritized_rate_limit",
        "seawall.prioritized-rate-limit",
    ),
    ("AUDIT_TRAIL", "audit_trail", "seawall.audit-trail"),
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeatures {
    pub circuit_breaker: Option<bool>,
    pub circuit_breaker_percentage: Option<u64>,
    pub enhanced_pooling: Option<bool>,
    pub enhanced_pooling_percentage: Option<u64>,
    pub prioritized_rate_limit: Option<bool>,
    pub prioritized_rate_limit_percentage: Option<u64>,
    pub audit_trail: Option<bool>,
    pub audit_trail_percentage: Option<u64>,
}

impl RawFeatures {
    fn get(&self, key: &str) -> (Option<bool>, Option<u64>) {
        match key {
            "circuit_breaker" => (self.circuit_breaker, self.circuit_breaker_percentage),
            "enhanced_pooling" => (self.enhanced_pooling, self.enhanced_pooling_percentage),
            "prioritized_rate_limit" => (
                self.prioritized_rate_limit,
                self.prioritized_rate_limit_percentage,
            ),
            "audit_trail" => (self.audit_trail, self.audit_trail_percentage),
            _ => (None, None),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOfrep {
    pub keys: Option<Vec<String>>,
}

/// A flag defined by configuration (environment or `[features]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlagSpec {
    pub name: String,
    pub enabled: bool,
    /// Rollout share, when set.
    pub percentage: Option<u8>,
    pub users: Vec<String>,
    #[serde(serialize_with = "super::display_all")]
    pub ips: Vec<IpNet>,
    /// Where it came from, for logs: the variables or keys that set it.
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlagsConfig {
    /// The four built-in features, always defined (off unless configured).
    pub builtin: Vec<FlagSpec>,
    /// Application flags from `FF_*` variables.
    pub environment: Vec<FlagSpec>,
    /// Evaluation keys for OFREP; empty means OFREP needs no key.
    pub ofrep_keys: Vec<Secret>,
}

#[derive(Default)]
struct Partial {
    enabled: Option<bool>,
    percentage: Option<u8>,
    users: Vec<String>,
    ips: Vec<IpNet>,
    sources: Vec<String>,
}

pub fn flags_config(
    features: &RawFeatures,
    ofrep: &RawOfrep,
    env: &dyn Env,
) -> Result<FlagsConfig, ConfigError> {
    let mut builtin: BTreeMap<&str, Partial> = BTreeMap::new();
    for (_, key, name) in BUILTIN_FEATURES {
        let (enabled, percentage) = features.get(key);
        let mut partial = Partial {
            enabled,
            ..Partial::default()
        };
        if let Some(p) = percentage {
            partial.percentage = Some(check_percentage(&format!("features.{key}_percentage"), p)?);
        }
        if enabled.is_some() || percentage.is_some() {
            partial.sources.push(format!("[features].{key}"));
        }
        builtin.insert(name, partial);
    }
    let mut apps: BTreeMap<String, Partial> = BTreeMap::new();
    for (var, value) in env.with_prefix("FF_") {
        let rest = &var["FF_".len()..];
        let (base, kind) = split_suffix(rest);
        let builtin_name = base
            .strip_prefix("ENABLE_")
            .and_then(|f| BUILTIN_FEATURES.iter().find(|(suffix, _, _)| *suffix == f))
            .map(|(_, _, name)| *name);
        let partial = match builtin_name {
            Some(name) => builtin.get_mut(name).expect("every built-in has an entry"),
            None => {
                let name = flag_name(&var, base)?;
                apps.entry(name).or_default()
            }
        };
        apply(partial, &var, kind, &value)?;
    }
    let finish = |name: String, p: Partial| {
        let defined = p.percentage.is_some() || !p.users.is_empty() || !p.ips.is_empty();
        FlagSpec {
            name,
            enabled: p.enabled.unwrap_or(defined),
            percentage: p.percentage,
            users: p.users,
            ips: p.ips,
            source: if p.sources.is_empty() {
                "default".to_string()
            } else {
                p.sources.join(", ")
            },
        }
    };
    let ofrep_keys = ofrep.keys.clone().unwrap_or_default();
    let ofrep_keys = match env.get("SEAWALL_OFREP_KEYS") {
        Some(list) => list
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect(),
        None => ofrep_keys,
    };
    for key in &ofrep_keys {
        if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "ofrep.keys",
                "each key needs at least 16 printable characters without spaces",
            ));
        }
    }
    Ok(FlagsConfig {
        builtin: builtin
            .into_iter()
            .map(|(name, p)| finish(name.to_string(), p))
            .collect(),
        environment: apps.into_iter().map(|(name, p)| finish(name, p)).collect(),
        ofrep_keys: ofrep_keys.into_iter().map(Secret::new).collect(),
    })
}

#[derive(Clone, Copy)]
enum Kind {
    Enabled,
    Percentage,
    Users,
    Ips,
}

/// Suffixes win over names: `FF_X_USERS` is flag `x`'s user list, never a flag `x-users`.
fn split_suffix(rest: &str) -> (&str, Kind) {
    for (suffix, kind) in [
        ("_PERCENTAGE", Kind::Percentage),
        ("_USERS", Kind::Users),
        ("_IPS", Kind::Ips),
    ] {
        if let Some(base) = rest.strip_suffix(suffix) {
            return (base, kind);
        }
    }
    (rest, Kind::Enabled)
}

fn flag_name(var: &str, base: &str) -> Result<String, ConfigError> {
    let valid = !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !valid {
        return Err(ConfigError::new(
            var,
            "flag variables are FF_<NAME> with NAME of A-Z, 0-9 and '_'",
        ));
    }
    Ok(base.to_ascii_lowercase().replace('_', "-"))
}

fn apply(partial: &mut Partial, var: &str, kind: Kind, value: &str) -> Result<(), ConfigError> {
    let value = value.trim();
    match kind {
        Kind::Enabled => {
            partial.enabled = Some(match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "on" | "yes" => true,
                "false" | "0" | "off" | "no" => false,
                _ => {
                    return Err(ConfigError::new(
                        var,
                        format!("{value:?} is not a boolean (expected true or false)"),
                    ));
                }
            })
        }
        Kind::Percentage => {
            let parsed: u64 = value.parse().map_err(|_| {
                ConfigError::new(
                    var,
                    format!("{value:?} is not a percentage (expected an integer 0-100)"),
                )
            })?;
            partial.percentage = Some(check_percentage(var, parsed)?);
        }
        Kind::Users => {
            partial.users = value
                .split(',')
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect()
        }
        Kind::Ips => {
            let mut ips = Vec::new();
            for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                let net = item
                    .parse::<IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ConfigError::new(var, format!("{item:?} is not an IP address or CIDR"))
                    })?;
                ips.push(net);
            }
            partial.ips = ips;
        }
    }
    partial.sources.push(var.to_string());
    Ok(())
}

fn check_percentage(key: &str, value: u64) -> Result<u8, ConfigError> {
    if value > 100 {
        return Err(ConfigError::new(
            key,
            format!("{value} is out of range (expected 0-100)"),
        ));
    }
    Ok(value as u8)
}
