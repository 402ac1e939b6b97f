//! The `[ratelimit]` section: levels, custom policies, the in-flight cap, the client key.

use std::collections::BTreeMap;

use crate::config::ConfigError;
use crate::config::raw::{RawPolicy, RawRateLimit};
use crate::config::validate::Validator;
use crate::ratelimit::{Level, Mode, PolicySettings, RateLimitConfig};

impl Validator<'_> {
    pub(super) fn ratelimit(&self, raw: &RawRateLimit) -> Result<RateLimitConfig, ConfigError> {
        for name in raw.levels.keys() {
            if Level::parse(name).is_none() {
                let message = format!(
                    "{name:?} is not a level (expected critical, high, medium, low or strict)"
                );
                return Err(self.error(&format!("ratelimit.levels.{name}"), message));
            }
        }
        let mut levels = BTreeMap::new();
        let mut previous_share = 0.0;
        // From strict (shed first) to critical (shed last): shares must not decrease.
        for level in Level::ALL.into_iter().rev() {
            let at = format!("ratelimit.levels.{}", level.as_str());
            let raw_policy = raw.levels.get(level.as_str()).cloned().unwrap_or_default();
            let settings = self.policy(&at, &raw_policy, level.default_quota())?;
            let share = raw_policy.shed_at.unwrap_or(level.default_shed_at());
            if !(share > 0.0 && share <= 1.0) {
                let message = format!("{share} is out of range (expected more than 0, at most 1)");
                return Err(self.error(&format!("{at}.shed_at"), message));
            }
            if share < previous_share {
                let message = format!(
                    "{share} is below the share of a level shed earlier ({previous_share}); shares must rise from strict to critical"
                );
                return Err(self.error(&format!("{at}.shed_at"), message));
            }
            previous_share = share;
            levels.insert(level, (settings, share));
        }
        let mut policies = BTreeMap::new();
        for (name, raw_policy) in &raw.policies {
            let at = format!("ratelimit.policies.{name}");
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid || Level::parse(name).is_some() {
                let message = format!(
                    "{name:?} is not a usable policy name (1-64 of a-z, 0-9, '.', '_', '-', not a level name)"
                );
                return Err(self.error(&at, message));
            }
            if raw_policy.shed_at.is_some() {
                return Err(self.error(
                    &format!("{at}.shed_at"),
                    "only levels are shed; policies have quotas".to_string(),
                ));
            }
            let Some(quota) = raw_policy.quota else {
                return Err(self.error(&format!("{at}.quota"), "is required".to_string()));
            };
            policies.insert(name.clone(), self.policy(&at, raw_policy, quota as u32)?);
        }
        let api_key_header = match &raw.api_key_header {
            Some(name) if http::HeaderName::from_bytes(name.as_bytes()).is_err() => {
                return Err(self.error(
                    "ratelimit.api_key_header",
                    format!("{name:?} is not a header name"),
                ));
            }
            other => other.as_ref().map(|n| n.to_ascii_lowercase()),
        };
        let ofrep_priority = match raw.ofrep_priority.as_deref() {
            None => Level::High,
            Some(name) => Level::parse(name).ok_or_else(|| {
                self.error(
                    "ratelimit.ofrep_priority",
                    format!(
                        "{name:?} is not a level (expected critical, high, medium, low or strict)"
                    ),
                )
            })?,
        };
        Ok(RateLimitConfig {
            max_in_flight: self.range(
                "ratelimit.max_in_flight",
                raw.max_in_flight,
                512,
                1,
                1_000_000,
            )? as usize,
            api_key_header,
            max_keys: self.range("ratelimit.max_keys", raw.max_keys, 100_000, 16, 100_000_000)?
                as usize,
            ofrep_priority,
            levels,
            policies,
        })
    }

    fn policy(
        &self,
        at: &str,
        raw: &RawPolicy,
        default_quota: u32,
    ) -> Result<PolicySettings, ConfigError> {
        let mode = match raw.mode.as_deref() {
            None => Mode::Enforce,
            Some(text) => Mode::parse(text).ok_or_else(|| {
                self.error(
                    &format!("{at}.mode"),
                    format!("{text:?} is not a mode (expected enforce, dry_run or off)"),
                )
            })?,
        };
        Ok(PolicySettings {
            quota: self.range(
                &format!("{at}.quota"),
                raw.quota,
                default_quota as u64,
                1,
                10_000_000,
            )? as u32,
            window_s: self.range(&format!("{at}.window_s"), raw.window_s, 60, 1, 86_400)? as u32,
            mode,
        })
    }

    /// A route's `priority` and `rate_limit` names, checked against the policies.
    pub(super) fn route_limits(
        &self,
        index: usize,
        priority: Option<&str>,
        names: Vec<String>,
        config: &RateLimitConfig,
    ) -> Result<(Level, Vec<String>), ConfigError> {
        let level = match priority {
            None => Level::Medium,
            Some(name) => Level::parse(name).ok_or_else(|| {
                self.error(
                    &format!("routes[{index}].priority"),
                    format!(
                        "{name:?} is not a level (expected critical, high, medium, low or strict)"
                    ),
                )
            })?,
        };
        for name in &names {
            if !config.policies.contains_key(name) {
                let known: Vec<&String> = config.policies.keys().collect();
                let message =
                    format!("{name:?} is not a [ratelimit.policies] entry (known: {known:?})");
                return Err(self.error(&format!("routes[{index}].rate_limit"), message));
            }
        }
        Ok((level, names))
    }
}
