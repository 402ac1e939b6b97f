//! Evaluating a compiled flag for a context: pure, no IO; time ([`Now`]) and randomness come
//! in as arguments.
//!
//! The algorithm is Unleash's (research/flags.md §2): a kill switch, dependencies on parent
//! flags, strategies OR'ed (each its rule AND its constraints AND its segments), bucketing with
//! `murmur3_x86_32("<groupId>:<id>", 0) % 100 + 1 <= percentage`, and variants picked with seed
//! 86028157 over the total weight after overrides. Raising a percentage only ever adds ids.

use serde::Serialize;

use crate::flags::compile::{
    CompiledFlag, CompiledStrategy, CompiledVariant, FlagSet, Rule, Stickiness,
};
use crate::flags::constraint::Now;
use crate::flags::context::Context;
use crate::flags::model::Payload;
use crate::flags::murmur3;

const STRATEGY_SEED: u32 = 0;
const VARIANT_SEED: u32 = 86_028_157;

/// Randomness for `random` stickiness and `gradualRolloutRandom`: uniform in `1..=n`.
pub trait Random {
    fn one_to(&mut self, n: u32) -> u32;
}

/// The thread-local generator, for production use.
pub struct ThreadRandom;

impl Random for ThreadRandom {
    fn one_to(&mut self, n: u32) -> u32 {
        rand::random_range(1..=n.max(1))
    }
}

/// Why a flag evaluated as it did (OpenFeature resolution reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// Unconditionally on: no strategy, or a plain `default` one.
    Static,
    /// Decided by targeting: constraints, segments, allowlists, overrides, dependencies.
    TargetingMatch,
    /// Decided by a percentage or a weighted variant split.
    Split,
    /// The flag is switched off.
    Disabled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Disabled => "DISABLED",
        }
    }
}

/// The chosen variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VariantChoice<'a> {
    pub name: &'a str,
    pub payload: Option<&'a Payload>,
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation<'a> {
    pub enabled: bool,
    pub reason: Reason,
    /// Set when the flag is enabled and a variant was chosen.
    pub variant: Option<VariantChoice<'a>>,
    /// Whether the flag defines variants at all (it is then a multi-valued flag).
    pub has_variants: bool,
}

impl FlagSet {
    /// Evaluates `name` for `ctx`; `None` when no such flag exists.
    pub fn evaluate(
        &self,
        name: &str,
        ctx: &Context,
        now: impl Into<Now>,
        random: &mut dyn Random,
    ) -> Option<Evaluation<'_>> {
        self.evaluate_at(name, ctx, now, random)
            .map(|(_, evaluation)| evaluation)
    }

    /// [`FlagSet::evaluate`], with the flag's position in [`FlagSet::names`].
    pub fn evaluate_at(
        &self,
        name: &str,
        ctx: &Context,
        now: impl Into<Now>,
        random: &mut dyn Random,
    ) -> Option<(usize, Evaluation<'_>)> {
        let flag = self.flags.get(name)?;
        let mut eval = Evaluator {
            ctx,
            now: now.into(),
            random,
        };
        Some((flag.position, eval.flag(self, flag)))
    }

    /// Whether `name` is on for `ctx`; unknown flags are off.
    pub fn is_enabled(
        &self,
        name: &str,
        ctx: &Context,
        now: impl Into<Now>,
        random: &mut dyn Random,
    ) -> bool {
        self.evaluate(name, ctx, now, random)
            .is_some_and(|e| e.enabled)
    }
}

struct Evaluator<'c, 'r> {
    ctx: &'c Context,
    now: Now,
    random: &'r mut dyn Random,
}

impl Evaluator<'_, '_> {
    fn flag<'f>(&mut self, set: &'f FlagSet, flag: &'f CompiledFlag) -> Evaluation<'f> {
        if flag.enabled && !self.dependencies_hold(set, flag) {
            return Evaluation {
                enabled: false,
                reason: Reason::TargetingMatch,
                variant: None,
                has_variants: flag.has_variants,
            };
        }
        self.own(flag)
    }

    /// Each parent must exist, have no dependencies itself, be enabled as required, and show
    /// one of the listed variants when a list is given.
    fn dependencies_hold(&mut self, set: &FlagSet, flag: &CompiledFlag) -> bool {
        flag.dependencies.iter().all(|dep| {
            let Some(parent) = set.flags.get(&dep.feature) else {
                return false;
            };
            if !parent.dependencies.is_empty() {
                return false;
            }
            let outcome = self.own(parent);
            if outcome.enabled != dep.enabled.unwrap_or(true) {
                return false;
            }
            // A parent without a chosen variant shows Unleash's placeholder name, "disabled".
            let shown = outcome.variant.map_or("disabled", |v| v.name);
            dep.variants.is_empty() || dep.variants.iter().any(|name| name == shown)
        })
    }

    /// The flag's own switch, strategies and variants, without its dependencies.
    fn own<'f>(&mut self, flag: &'f CompiledFlag) -> Evaluation<'f> {
        let has_variants = flag.has_variants;
        if !flag.enabled {
            return Evaluation {
                enabled: false,
                reason: Reason::Disabled,
                variant: None,
                has_variants,
            };
        }
        let active = || flag.strategies.iter().filter(|s| !s.disabled);
        let matched = if flag.strategies.is_empty() {
            None
        } else {
            match active().find(|s| self.strategy_matches(s)) {
                Some(strategy) => Some(strategy),
                None => {
                    let reason = if active().any(splits) {
                        Reason::Split
                    } else {
                        Reason::TargetingMatch
                    };
                    return Evaluation {
                        enabled: false,
                        reason,
                        variant: None,
                        has_variants,
                    };
                }
            }
        };
        let (variants, group, stickiness) = match matched {
            Some(s) if !s.variants.is_empty() => (
                &s.variants,
                s.group_id.as_str(),
                s.variants[0]
                    .stickiness
                    .as_deref()
                    .or(s.stickiness.as_deref()),
            ),
            _ => (
                &flag.variants,
                flag.name.as_str(),
                flag.variants.first().and_then(|v| v.stickiness.as_deref()),
            ),
        };
        let (variant, by) = match self.variant(variants, group, stickiness) {
            Some((variant, by)) => (
                Some(VariantChoice {
                    name: &variant.name,
                    payload: variant.payload.as_ref(),
                }),
                by,
            ),
            None => (None, Chosen::Nothing),
        };
        let reason = match (by, matched) {
            (Chosen::Override, _) => Reason::TargetingMatch,
            (Chosen::Split, _) => Reason::Split,
            (_, Some(s)) if splits(s) => Reason::Split,
            (_, Some(s)) if targets(s) => Reason::TargetingMatch,
            _ => Reason::Static,
        };
        Evaluation {
            enabled: true,
            reason,
            variant,
            has_variants,
        }
    }

    fn strategy_matches(&mut self, strategy: &CompiledStrategy) -> bool {
        if strategy.missing_segment {
            return false;
        }
        if !strategy
            .constraints
            .iter()
            .all(|c| c.matches(self.ctx, self.now))
        {
            return false;
        }
        let ctx = self.ctx;
        match &strategy.rule {
            Rule::Default => true,
            Rule::UserWithId(ids) => ctx
                .user_id
                .as_deref()
                .is_some_and(|u| ids.iter().any(|id| id == u)),
            Rule::GradualUserId {
                percentage,
                group_id,
            } => gradual(percentage, group_id, ctx.user_id.as_deref()),
            Rule::GradualSessionId {
                percentage,
                group_id,
            } => gradual(percentage, group_id, ctx.session_id.as_deref()),
            Rule::GradualRandom { percentage } => {
                percentage.is_some_and(|p| p >= self.random.one_to(100) as f64)
            }
            Rule::RemoteAddress(entries) => {
                let Some(remote) = ctx.remote_address.as_deref().map(str::trim) else {
                    return false;
                };
                let ip = remote.parse::<std::net::IpAddr>().ok();
                entries.iter().any(|(text, net)| {
                    text == remote || ip.zip(*net).is_some_and(|(ip, net)| net.contains(&ip))
                })
            }
            Rule::Flexible {
                rollout,
                stickiness,
            } => {
                let Some(rollout) = *rollout else {
                    return false;
                };
                let random;
                let id = match stickiness {
                    Stickiness::Default => {
                        match ctx.user_id.as_deref().or(ctx.session_id.as_deref()) {
                            Some(id) => id,
                            None => {
                                random = self.random.one_to(10_000).to_string();
                                &random
                            }
                        }
                    }
                    Stickiness::Random => {
                        random = self.random.one_to(10_000).to_string();
                        &random
                    }
                    Stickiness::Field(field) => match ctx.get(field) {
                        Some(id) => id,
                        None => return false,
                    },
                };
                rollout > 0.0
                    && bucket(&strategy.group_id, id, 100, STRATEGY_SEED) as f64 <= rollout
            }
            Rule::Unknown => false,
        }
    }

    fn variant<'v>(
        &mut self,
        variants: &'v [CompiledVariant],
        group: &str,
        stickiness: Option<&str>,
    ) -> Option<(&'v CompiledVariant, Chosen)> {
        if variants.is_empty() {
            return None;
        }
        for variant in variants {
            let hit = variant.overrides.iter().any(|(field, values)| {
                self.ctx
                    .get(field)
                    .is_some_and(|v| values.iter().any(|x| x == v))
            });
            if hit {
                return Some((variant, Chosen::Override));
            }
        }
        let total: u32 = variants.iter().map(|v| v.weight).sum();
        if total == 0 {
            return None;
        }
        let random;
        let stickiness = Stickiness::parse(stickiness);
        let known = match &stickiness {
            Stickiness::Default => self
                .ctx
                .user_id
                .as_deref()
                .or(self.ctx.session_id.as_deref()),
            Stickiness::Random => None,
            Stickiness::Field(field) => self.ctx.get(field),
        };
        let id = match known {
            Some(id) => id,
            None => {
                random = self.random.one_to(total).to_string();
                &random
            }
        };
        let target = bucket(group, id, total, VARIANT_SEED);
        let mut cumulative = 0u32;
        let weighted = variants.iter().filter(|v| v.weight > 0).count() > 1;
        for variant in variants {
            cumulative += variant.weight;
            if cumulative >= target {
                return Some((
                    variant,
                    if weighted {
                        Chosen::Split
                    } else {
                        Chosen::Only
                    },
                ));
            }
        }
        None
    }
}

/// How a variant was chosen, which decides the reason.
#[derive(Debug, Clone, Copy)]
enum Chosen {
    Nothing,
    Only,
    Override,
    Split,
}

fn gradual(percentage: &Option<f64>, group_id: &Option<String>, id: Option<&str>) -> bool {
    match (percentage, group_id, id) {
        (Some(pct), Some(group), Some(id)) => {
            *pct > 0.0 && bucket(group, id, 100, STRATEGY_SEED) as f64 <= *pct
        }
        _ => false,
    }
}

/// Unleash's normalised hash: `murmur3("<group>:<id>", seed) % modulus + 1`, in `1..=modulus`.
pub fn bucket(group: &str, id: &str, modulus: u32, seed: u32) -> u32 {
    murmur3::hash_parts(&[group.as_bytes(), b":", id.as_bytes()], seed) % modulus + 1
}

/// Whether a strategy decides by percentage.
fn splits(strategy: &CompiledStrategy) -> bool {
    match &strategy.rule {
        Rule::Flexible { rollout, .. } => rollout.is_some_and(|r| r < 100.0),
        Rule::GradualUserId { percentage, .. }
        | Rule::GradualSessionId { percentage, .. }
        | Rule::GradualRandom { percentage } => percentage.is_some_and(|p| p < 100.0),
        _ => false,
    }
}

/// Whether a strategy decides by who is asking.
fn targets(strategy: &CompiledStrategy) -> bool {
    !strategy.constraints.is_empty()
        || matches!(strategy.rule, Rule::UserWithId(_) | Rule::RemoteAddress(_))
}
