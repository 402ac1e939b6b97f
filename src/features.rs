//! seawall's own features as flags, and the question later capabilities ask of every request:
//! "is feature X on for this client?".
//!
//! Each feature is the flag `seawall.<name>`, defined by `FF_ENABLE_*` / `[features]` (off by
//! default) and changeable at runtime like any flag. It is evaluated with the request's
//! [`flag_context`](crate::request_context::RequestContext::flag_context), whose client key is
//! the stickiness id, so a percentage puts the same clients, always, behind the feature.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    CircuitBreaker,
    EnhancedPooling,
    PrioritizedRateLimit,
    AuditTrail,
}

impl Feature {
    pub const ALL: [Feature; 4] = [
        Feature::CircuitBreaker,
        Feature::EnhancedPooling,
        Feature::PrioritizedRateLimit,
        Feature::AuditTrail,
    ];

    /// The flag that switches this feature.
    pub fn flag(self) -> &'static str {
        match self {
            Feature::CircuitBreaker => "seawall.circuit-breaker",
            Feature::EnhancedPooling => "seawall.enhanced-pooling",
            Feature::PrioritizedRateLimit => "seawall.prioritized-rate-limit",
            Feature::AuditTrail => "seawall.audit-trail",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BUILTIN_FEATURES;

    #[test]
    fn every_feature_is_configured_under_its_flag_name() {
        for feature in Feature::ALL {
            assert!(
                BUILTIN_FEATURES
                    .iter()
                    .any(|(_, _, name)| *name == feature.flag()),
                "{feature:?}"
            );
        }
        assert_eq!(BUILTIN_FEATURES.len(), Feature::ALL.len());
    }
}
