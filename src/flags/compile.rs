//! Compiling a flag set: the stored model turned into a form that evaluates without parsing.
//!
//! Numbers, dates, versions, regexes and CIDRs are parsed once here; segments are resolved into
//! the strategies that use them. Compilation is lenient in the way Unleash SDKs are (an invalid
//! entry never matches) so that any Unleash export evaluates as its SDKs would; the admin API
//! refuses such input up front through `validate`.

use std::collections::HashMap;

use ipnet::IpNet;

use crate::flags::constraint::{self, parse_cidr};
use crate::flags::context::Field;
use crate::flags::model::{Dependency, Flag, Payload, Segment, Strategy, Variant};

/// Maps keyed by flag name, looked up several times for every request (each of seawall's
/// features is a flag). FxHash instead of SipHash: the keys are the operator's flag names,
/// and a lookup of any other name (an OFREP client's) cannot lengthen the probes among them.
pub type NameMap<V> = HashMap<String, V, fxhash::FxBuildHasher>;

/// Every flag, ready to evaluate. Immutable; a change builds a new one.
#[derive(Debug, Default)]
pub struct FlagSet {
    pub(crate) flags: NameMap<CompiledFlag>,
    /// Names in sorted order, for bulk evaluation with a stable output.
    pub(crate) names: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct CompiledFlag {
    pub name: String,
    /// Where the name stands in [`FlagSet::names`]: per-flag tables beside the set (the
    /// evaluation counters) are indexed by it, so one lookup by name serves both.
    pub position: usize,
    pub enabled: bool,
    pub strategies: Vec<CompiledStrategy>,
    pub variants: Vec<CompiledVariant>,
    pub dependencies: Vec<Dependency>,
    /// Whether any variants exist (toggle- or strategy-level): such a flag answers with values,
    /// not just on/off.
    pub has_variants: bool,
}

#[derive(Debug)]
pub(crate) struct CompiledStrategy {
    pub rule: Rule,
    /// The strategy's own constraints followed by those of its segments.
    pub constraints: Vec<constraint::Compiled>,
    /// A referenced segment does not exist: the strategy never matches.
    pub missing_segment: bool,
    pub disabled: bool,
    pub variants: Vec<CompiledVariant>,
    /// `groupId` parameter, else the flag name; also the variant group.
    pub group_id: String,
    /// `stickiness` parameter, used for strategy variants without their own.
    pub stickiness: Option<String>,
}

#[derive(Debug)]
pub(crate) enum Rule {
    Default,
    UserWithId(Vec<String>),
    GradualUserId {
        percentage: Option<f64>,
        group_id: Option<String>,
    },
    GradualSessionId {
        percentage: Option<f64>,
        group_id: Option<String>,
    },
    GradualRandom {
        percentage: Option<f64>,
    },
    RemoteAddress(Vec<(String, Option<IpNet>)>),
    Flexible {
        rollout: Option<f64>,
        stickiness: Stickiness,
    },
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Stickiness {
    Default,
    Random,
    Field(Field),
}

impl Stickiness {
    pub fn parse(name: Option<&str>) -> Stickiness {
        match name.map(str::trim) {
            None | Some("") | Some("default") => Stickiness::Default,
            Some("random") => Stickiness::Random,
            Some(other) => Stickiness::Field(Field::named(other)),
        }
    }
}

#[derive(Debug)]
pub(crate) struct CompiledVariant {
    pub name: String,
    pub weight: u32,
    pub payload: Option<Payload>,
    pub stickiness: Option<String>,
    pub overrides: Vec<(Field, Vec<String>)>,
}

/// The strategy names seawall evaluates; anything else never matches.
pub const STRATEGIES: [&str; 7] = [
    "default",
    "userWithId",
    "gradualRolloutUserId",
    "gradualRolloutSessionId",
    "gradualRolloutRandom",
    "remoteAddress",
    "flexibleRollout",
];

impl FlagSet {
    pub fn compile(flags: &[Flag], segments: &[Segment]) -> FlagSet {
        let segments: HashMap<i64, &Segment> = segments.iter().map(|s| (s.id, s)).collect();
        let mut compiled: NameMap<CompiledFlag> = flags
            .iter()
            .map(|f| (f.name.clone(), compile_flag(f, &segments)))
            .collect();
        let mut names: Vec<String> = compiled.keys().cloned().collect();
        names.sort();
        for (position, name) in names.iter().enumerate() {
            compiled.get_mut(name).expect("named above").position = position;
        }
        FlagSet {
            flags: compiled,
            names,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.flags.contains_key(name)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

fn compile_flag(flag: &Flag, segments: &HashMap<i64, &Segment>) -> CompiledFlag {
    let strategies: Vec<CompiledStrategy> = flag
        .strategies
        .iter()
        .map(|s| compile_strategy(&flag.name, s, segments))
        .collect();
    let variants: Vec<CompiledVariant> = flag.variants.iter().map(compile_variant).collect();
    let has_variants = !variants.is_empty() || strategies.iter().any(|s| !s.variants.is_empty());
    CompiledFlag {
        name: flag.name.clone(),
        position: 0,
        enabled: flag.enabled,
        strategies,
        variants,
        dependencies: flag.dependencies.clone(),
        has_variants,
    }
}

fn compile_strategy(
    flag_name: &str,
    strategy: &Strategy,
    segments: &HashMap<i64, &Segment>,
) -> CompiledStrategy {
    let param = |name: &str| strategy.parameters.get(name).map(|v| v.trim().to_string());
    let percentage = |name: &str| param(name).and_then(|v| v.parse::<f64>().ok());
    let list = |name: &str| -> Vec<String> {
        param(name)
            .map(|v| {
                v.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let rule = match strategy.name.as_str() {
        "default" => Rule::Default,
        "userWithId" => Rule::UserWithId(list("userIds")),
        "gradualRolloutUserId" => Rule::GradualUserId {
            percentage: percentage("percentage"),
            group_id: param("groupId"),
        },
        "gradualRolloutSessionId" => Rule::GradualSessionId {
            percentage: percentage("percentage"),
            group_id: param("groupId"),
        },
        "gradualRolloutRandom" => Rule::GradualRandom {
            percentage: percentage("percentage"),
        },
        "remoteAddress" => Rule::RemoteAddress(
            list("IPs")
                .into_iter()
                .map(|ip| (ip.clone(), parse_cidr(&ip)))
                .collect(),
        ),
        "flexibleRollout" => Rule::Flexible {
            rollout: percentage("rollout"),
            stickiness: Stickiness::parse(param("stickiness").as_deref()),
        },
        _ => Rule::Unknown,
    };
    let mut constraints: Vec<constraint::Compiled> = strategy
        .constraints
        .iter()
        .map(constraint::compile)
        .collect();
    let mut missing_segment = false;
    for id in &strategy.segments {
        match segments.get(id) {
            Some(segment) => {
                constraints.extend(segment.constraints.iter().map(constraint::compile))
            }
            None => missing_segment = true,
        }
    }
    CompiledStrategy {
        rule,
        constraints,
        missing_segment,
        disabled: strategy.disabled == Some(true),
        variants: strategy.variants.iter().map(compile_variant).collect(),
        group_id: param("groupId")
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| flag_name.to_string()),
        stickiness: param("stickiness"),
    }
}

fn compile_variant(variant: &Variant) -> CompiledVariant {
    CompiledVariant {
        name: variant.name.clone(),
        weight: variant.weight,
        payload: variant.payload.clone(),
        stickiness: variant.stickiness.clone(),
        overrides: variant
            .overrides
            .iter()
            .map(|o| (Field::named(&o.context_name), o.values.clone()))
            .collect(),
    }
}
