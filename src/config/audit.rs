//! The `[audit]` section and the routes' `audit = {...}`: origin, write path, retention per
//! stream, and the ordered request rules.

use crate::audit::policy::{Durability, Rule};
use crate::audit::{
    AuditConfig, CapacityPolicy, DigestPolicy, ErasureAction, Level, Stream, StreamRetention,
};
use crate::config::ConfigError;
use crate::config::raw::{RawAudit, RawAuditRule, RawRouteAudit};
use crate::config::validate::Validator;

/// Route labels the proxy listener uses besides configured route names.
const BUILTIN_ROUTES: [&str; 3] = ["health", "ofrep", "unmatched"];

const STREAMS: (&str, &str) = ("a stream", "security, access, data_change, gdpr or system");

/// Days are bounded at 100 years: long enough for any legal hold, short enough not to overflow.
const MAX_DAYS: u64 = 36_500;

impl Validator<'_> {
    pub(super) fn audit(
        &self,
        raw: &RawAudit,
        route_names: &[String],
    ) -> Result<AuditConfig, ConfigError> {
        let origin = raw
            .origin
            .clone()
            .unwrap_or_else(|| AuditConfig::default().origin);
        let printable = origin.bytes().all(|b| b.is_ascii_graphic());
        if origin.is_empty() || origin.len() > 128 || !printable {
            return Err(self.error(
                "audit.origin",
                format!("{origin:?} must be 1-128 printable ASCII characters without spaces"),
            ));
        }
        let mut retention = AuditConfig::default_retention();
        for (name, section) in &raw.retention {
            let at = format!("audit.retention.{name}");
            let stream = self.one_of(&at, name, STREAMS, Stream::parse)?;
            let defaults = retention[&stream];
            let header_days = self.range(
                &format!("{at}.header_days"),
                section.header_days,
                defaults.header_days as u64,
                1,
                MAX_DAYS,
            )?;
            let payload_days = self.range(
                &format!("{at}.payload_days"),
                section.payload_days,
                defaults.payload_days as u64,
                0,
                MAX_DAYS,
            )?;
            if payload_days > header_days {
                let message = format!(
                    "{payload_days} exceeds header_days ({header_days}); personal parts cannot outlive their events"
                );
                return Err(self.error(&format!("{at}.payload_days"), message));
            }
            retention.insert(
                stream,
                StreamRetention {
                    header_days: header_days as u32,
                    payload_days: payload_days as u32,
                },
            );
        }
        let rules = raw
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| self.audit_rule(&format!("audit.rules[{i}]"), rule, route_names))
            .collect::<Result<Vec<_>, _>>()?;
        let mut erasure = AuditConfig::default_erasure();
        for (name, section) in &raw.erasure {
            let at = format!("audit.erasure.{name}");
            let stream = self.one_of(&at, name, STREAMS, Stream::parse)?;
            let action = match section.action.as_deref() {
                None => erasure[&stream].clone(),
                Some("shred") => ErasureAction::Shred,
                Some("retain") => {
                    let basis = section.basis.clone().unwrap_or_default();
                    if basis.trim().is_empty() || basis.len() > 500 {
                        return Err(self.error(
                            &format!("{at}.basis"),
                            "a retained stream needs its legal basis (1-500 characters), e.g. \"Art 17(3)(e): legal claims\"".to_string(),
                        ));
                    }
                    ErasureAction::Retain { basis }
                }
                Some(other) => {
                    return Err(self.error(
                        &format!("{at}.action"),
                        format!(
                            "{other:?} is not an erasure action (expected \"shred\" or \"retain\")"
                        ),
                    ));
                }
            };
            if matches!(action, ErasureAction::Shred) && section.basis.is_some() {
                return Err(self.error(
                    &format!("{at}.basis"),
                    "only a retained stream has a basis".to_string(),
                ));
            }
            erasure.insert(stream, action);
        }
        let defaults = AuditConfig::default();
        Ok(AuditConfig {
            digests: DigestPolicy {
                every: self.range(
                    "audit.digest_every",
                    raw.digest_every,
                    defaults.digests.every,
                    1,
                    1_000_000,
                )?,
                interval: self.millis(
                    "audit.digest_interval_ms",
                    raw.digest_interval_ms,
                    defaults.digests.interval.as_millis() as u64,
                    10,
                    3_600_000,
                )?,
                idle: self.millis(
                    "audit.digest_idle_ms",
                    raw.digest_idle_ms,
                    defaults.digests.idle.as_millis() as u64,
                    10,
                    86_400_000,
                )?,
            },
            capacity: CapacityPolicy {
                high_water_percent: self.range(
                    "audit.capacity_high_water_percent",
                    raw.capacity_high_water_percent,
                    u64::from(defaults.capacity.high_water_percent),
                    50,
                    100,
                )? as u8,
                check_interval: self.millis(
                    "audit.capacity_check_interval_ms",
                    raw.capacity_check_interval_ms,
                    defaults.capacity.check_interval.as_millis() as u64,
                    100,
                    3_600_000,
                )?,
            },
            kek_rotation_interval: self.millis(
                "audit.kek_rotation_interval_ms",
                raw.kek_rotation_interval_ms,
                defaults.kek_rotation_interval.as_millis() as u64,
                1_000,
                30 * 86_400_000,
            )?,
            verify_interval: self.millis(
                "audit.verify_interval_ms",
                raw.verify_interval_ms,
                defaults.verify_interval.as_millis() as u64,
                100,
                30 * 86_400_000,
            )?,
            erasure,
            origin,
            flush_interval: self.millis(
                "audit.flush_interval_ms",
                raw.flush_interval_ms,
                defaults.flush_interval.as_millis() as u64,
                1,
                10_000,
            )?,
            strict_timeout: self.millis(
                "audit.strict_timeout_ms",
                raw.strict_timeout_ms,
                defaults.strict_timeout.as_millis() as u64,
                10,
                60_000,
            )?,
            queue_capacity: self.range(
                "audit.queue_capacity",
                raw.queue_capacity,
                defaults.queue_capacity as u64,
                16,
                4_194_304,
            )? as usize,
            queue_bytes: self.range(
                "audit.queue_mb",
                raw.queue_mb,
                (defaults.queue_bytes >> 20) as u64,
                1,
                1_024,
            )? as usize
                * 1024
                * 1024,
            retention,
            body_days: self.range(
                "audit.body_days",
                raw.body_days,
                defaults.body_days as u64,
                1,
                MAX_DAYS,
            )? as u32,
            retention_interval: self.millis(
                "audit.retention_interval_ms",
                raw.retention_interval_ms,
                defaults.retention_interval.as_millis() as u64,
                1_000,
                86_400_000,
            )?,
            clock_jump_tolerance: self.millis(
                "audit.retention_clock_jump_tolerance_ms",
                raw.retention_clock_jump_tolerance_ms,
                defaults.clock_jump_tolerance.as_millis() as u64,
                60_000,
                30 * 86_400_000,
            )?,
            rules,
            require_explicit_coverage: raw.require_explicit_coverage.unwrap_or(false),
        })
    }

    fn audit_rule(
        &self,
        at: &str,
        raw: &RawAuditRule,
        route_names: &[String],
    ) -> Result<Rule, ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        let mut routes = Vec::new();
        for name in raw.routes.iter().flatten() {
            if !route_names.contains(name) && !BUILTIN_ROUTES.contains(&name.as_str()) {
                let message = format!(
                    "{name:?} is not a route name (routes: {route_names:?}, built in: {BUILTIN_ROUTES:?})"
                );
                return Err(self.error(&key("routes"), message));
            }
            routes.push(name.clone());
        }
        let methods = raw
            .methods
            .iter()
            .flatten()
            .map(|m| self.method(&key("methods"), m))
            .collect::<Result<Vec<_>, _>>()?;
        let selectors = RawRouteAudit {
            event: raw.event.clone(),
            level: raw.level.clone(),
            stream: raw.stream.clone(),
            durability: raw.durability.clone(),
        };
        let mut rule = self.route_audit(at, &selectors)?;
        rule.routes = routes;
        rule.methods = methods;
        Ok(rule)
    }

    /// A route's own `audit = {...}`, also the decision part of a rule.
    pub(super) fn route_audit(&self, at: &str, raw: &RawRouteAudit) -> Result<Rule, ConfigError> {
        let key = |field: &str| format!("{at}.{field}");
        let levels = ("a level", "none, metadata, request or request_response");
        let level = raw
            .level
            .as_deref()
            .map(|name| self.one_of(&key("level"), name, levels, Level::parse))
            .transpose()?;
        let stream = raw
            .stream
            .as_deref()
            .map(|name| self.one_of(&key("stream"), name, STREAMS, Stream::parse))
            .transpose()?;
        let durabilities = ("a durability", "batch or blocking-strict");
        let durability = raw
            .durability
            .as_deref()
            .map(|name| self.one_of(&key("durability"), name, durabilities, Durability::parse))
            .transpose()?;
        if durability == Some(Durability::BlockingStrict) && level == Some(Level::None) {
            let message =
                "a blocking-strict request must be audited; use a level other than \"none\""
                    .to_string();
            return Err(self.error(&key("durability"), message));
        }
        if let Some(event) = &raw.event {
            let plain = event.replace("{action}", "action");
            let valid = !plain.is_empty()
                && plain.len() <= 64
                && plain
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && !plain.starts_with('.');
            if !valid {
                let message = format!(
                    "{event:?} is not an event type (1-64 of a-z, 0-9, '.', '_', '-', optionally {{action}}, e.g. \"api.request\")"
                );
                return Err(self.error(&key("event"), message));
            }
            // Credentials travel in the bodies of authentication requests (research/audit.md §6 B5).
            if (event.starts_with("authn.") || event.starts_with("session."))
                && level.is_some_and(|l| l > Level::Metadata)
            {
                let message = "authentication events never capture bodies; use level \"metadata\" or \"none\"".to_string();
                return Err(self.error(&key("level"), message));
            }
        }
        Ok(Rule {
            routes: Vec::new(),
            methods: Vec::new(),
            level,
            event: raw.event.clone(),
            stream,
            durability,
        })
    }
}
