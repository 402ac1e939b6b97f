//! Flags defined by configuration (`FF_*` variables, `[features]`) as Unleash flags.
//!
//! A spec becomes one flag whose strategies are OR'ed: the user allowlist (`userWithId`), the
//! address allowlist (`remoteAddress`) and the percentage (`flexibleRollout`, default
//! stickiness, grouped by the flag name). A spec with none of the three is on for everyone
//! while enabled. Whether the store takes the definition is `store`'s decision.

use std::collections::BTreeMap;

use crate::config::FlagSpec;
use crate::flags::model::{Flag, Strategy};

pub fn flag_from_spec(spec: &FlagSpec) -> Flag {
    let mut strategies = Vec::new();
    if !spec.users.is_empty() {
        strategies.push(strategy("userWithId", [("userIds", spec.users.join(","))]));
    }
    if !spec.ips.is_empty() {
        let ips: Vec<String> = spec.ips.iter().map(ToString::to_string).collect();
        strategies.push(strategy("remoteAddress", [("IPs", ips.join(","))]));
    }
    if let Some(percentage) = spec.percentage {
        strategies.push(strategy(
            "flexibleRollout",
            [
                ("rollout", percentage.to_string()),
                ("stickiness", "default".to_string()),
                ("groupId", spec.name.clone()),
            ],
        ));
    }
    if strategies.is_empty() {
        strategies.push(strategy("default", []));
    }
    Flag {
        name: spec.name.clone(),
        description: Some(format!("Defined by configuration ({})", spec.source)),
        kind: None,
        project: None,
        stale: None,
        impression_data: None,
        enabled: spec.enabled,
        strategies,
        variants: Vec::new(),
        dependencies: Vec::new(),
    }
}

fn strategy<const N: usize>(name: &str, parameters: [(&str, String); N]) -> Strategy {
    Strategy {
        name: name.to_string(),
        parameters: parameters
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
        constraints: Vec::new(),
        segments: Vec::new(),
        variants: Vec::new(),
        disabled: None,
        title: None,
        id: None,
        sort_order: None,
    }
}
