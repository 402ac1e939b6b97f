//! seawall's own features as flags, and the question later capabilities ask of every request:
//! "is feature X on for this client?".
//!
//! Each feature is the flag `seawall.<name>`, defined by `FF_ENABLE_*` / `[features]` (off by
//! default) and changeable at runtime like any flag. It is evaluated with the client's key as
//! the stickiness id, so a percentage puts the same clients, always, behind the feature.

use crate::flags::Context;
use crate::request_context::RequestContext;

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

/// The evaluation context seawall uses for its own decisions about a request (feature flags,
/// route flags): the client key as `userId`, the client address as `remoteAddress`.
pub fn client_context(ctx: &RequestContext) -> Context {
    Context {
        user_id: Some(ctx.client_key.clone()),
        remote_address: Some(ctx.client_ip.to_string()),
        ..Context::default()
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
