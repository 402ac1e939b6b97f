//! Strict checks on flags written through the admin API and imports.
//!
//! The engine tolerates what Unleash SDKs tolerate (an invalid regex never matches); a write
//! that would store such a thing is refused instead, with the path of the offending field, so
//! that a typo fails loudly at write time rather than silently at evaluation time.

use std::collections::HashSet;

use semver::Version;

use crate::flags::compile::STRATEGIES;
use crate::flags::constraint::{
    OPERATORS, clean_values, compile_regex, parse_cidr, parse_date, single_value,
};
use crate::flags::model::{Constraint, Flag, Segment, Variant};

/// Reserved for seawall's own features; such flags exist always and cannot be created or
/// deleted through the API.
pub const RESERVED_PREFIX: &str = "seawall.";

/// A field that does not pass, with its JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Checks a flag name: 1-100 characters, no control characters, whitespace or '/'.
pub fn check_name(name: &str) -> Result<(), FieldError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 100
        && !name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '/' || c == '%');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            format!(
                "{name:?} is not a valid flag name (1-100 characters, no whitespace, control characters, '/' or '%')"
            ),
        ))
    }
}

/// The other flags a flag is checked against, as they will be once it is written.
pub struct Neighbours<'a> {
    /// `None` when no flag has that name, else how many dependencies it has.
    pub dependencies_of: &'a dyn Fn(&str) -> Option<usize>,
    /// Whether another flag depends on the named one.
    pub has_dependents: &'a dyn Fn(&str) -> bool,
}

/// Checks a whole flag against its `neighbours` (dependencies: one level, as in Unleash, where
/// a parent that has parents of its own is never met); `segment_ids` lists the segments a
/// strategy may reference.
pub fn check_flag(
    flag: &Flag,
    neighbours: &Neighbours<'_>,
    segment_ids: &HashSet<i64>,
) -> Result<(), FieldError> {
    check_name(&flag.name)?;
    for (i, strategy) in flag.strategies.iter().enumerate() {
        let at = format!("strategies[{i}]");
        if !STRATEGIES.contains(&strategy.name.as_str()) {
            return Err(FieldError::new(
                format!("{at}.name"),
                format!(
                    "{:?} is not a strategy seawall knows (expected one of {STRATEGIES:?})",
                    strategy.name
                ),
            ));
        }
        check_parameters(&at, &strategy.name, &strategy.parameters)?;
        for (j, constraint) in strategy.constraints.iter().enumerate() {
            check_constraint(&format!("{at}.constraints[{j}]"), constraint)?;
        }
        for (j, id) in strategy.segments.iter().enumerate() {
            if !segment_ids.contains(id) {
                return Err(FieldError::new(
                    format!("{at}.segments[{j}]"),
                    format!("segment {id} does not exist"),
                ));
            }
        }
        check_variants(&format!("{at}.variants"), &strategy.variants)?;
    }
    check_variants("variants", &flag.variants)?;
    for (i, dep) in flag.dependencies.iter().enumerate() {
        let at = format!("dependencies[{i}].feature");
        if dep.feature == flag.name {
            return Err(FieldError::new(at, "a flag cannot depend on itself"));
        }
        match (neighbours.dependencies_of)(&dep.feature) {
            None => {
                return Err(FieldError::new(
                    at,
                    format!("flag {:?} does not exist", dep.feature),
                ));
            }
            Some(0) => {}
            Some(_) => {
                return Err(FieldError::new(
                    at,
                    format!(
                        "flag {:?} depends on other flags itself; dependencies are one level deep (as in Unleash), so this one would never be met",
                        dep.feature
                    ),
                ));
            }
        }
    }
    if !flag.dependencies.is_empty() && (neighbours.has_dependents)(&flag.name) {
        return Err(FieldError::new(
            "dependencies",
            "other flags depend on this one, so it cannot depend on others (dependencies are one level deep, as in Unleash)",
        ));
    }
    Ok(())
}

pub fn check_segment(at: &str, segment: &Segment) -> Result<(), FieldError> {
    for (j, constraint) in segment.constraints.iter().enumerate() {
        check_constraint(&format!("{at}.constraints[{j}]"), constraint)?;
    }
    Ok(())
}

fn check_parameters(
    at: &str,
    strategy: &str,
    params: &std::collections::BTreeMap<String, String>,
) -> Result<(), FieldError> {
    let percentage = |key: &str, required: bool| -> Result<(), FieldError> {
        match params.get(key).map(|v| v.trim()) {
            None if required => Err(FieldError::new(
                format!("{at}.parameters.{key}"),
                "is required (an integer 0-100)",
            )),
            None => Ok(()),
            Some(v) => match v.parse::<u32>() {
                Ok(n) if n <= 100 => Ok(()),
                _ => Err(FieldError::new(
                    format!("{at}.parameters.{key}"),
                    format!("{v:?} is not an integer 0-100"),
                )),
            },
        }
    };
    let required = |key: &str| -> Result<&String, FieldError> {
        params
            .get(key)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| FieldError::new(format!("{at}.parameters.{key}"), "is required"))
    };
    match strategy {
        "flexibleRollout" => percentage("rollout", true),
        "gradualRolloutUserId" | "gradualRolloutSessionId" => {
            percentage("percentage", true)?;
            required("groupId").map(|_| ())
        }
        "gradualRolloutRandom" => percentage("percentage", true),
        "userWithId" => required("userIds").map(|_| ()),
        "remoteAddress" => {
            let list = required("IPs")?;
            for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if parse_cidr(item).is_none() {
                    return Err(FieldError::new(
                        format!("{at}.parameters.IPs"),
                        format!("{item:?} is not an IP address or CIDR"),
                    ));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_constraint(at: &str, c: &Constraint) -> Result<(), FieldError> {
    if c.context_name.trim().is_empty() {
        return Err(FieldError::new(format!("{at}.contextName"), "is required"));
    }
    if !OPERATORS.contains(&c.operator.as_str()) {
        return Err(FieldError::new(
            format!("{at}.operator"),
            format!(
                "{:?} is not an operator (expected one of {OPERATORS:?})",
                c.operator
            ),
        ));
    }
    let value_field = if c.value.is_some() {
        "value"
    } else {
        "values[0]"
    };
    let single = || {
        single_value(c)
            .ok_or_else(|| FieldError::new(format!("{at}.value"), "is required for this operator"))
    };
    match c.operator.as_str() {
        op if op.starts_with("NUM_") => {
            let v = single()?;
            v.parse::<f64>().map_err(|_| {
                FieldError::new(
                    format!("{at}.{value_field}"),
                    format!("{v:?} is not a number"),
                )
            })?;
        }
        op if op.starts_with("DATE_") => {
            let v = single()?;
            parse_date(&v).ok_or_else(|| {
                FieldError::new(
                    format!("{at}.{value_field}"),
                    format!("{v:?} is not an RFC 3339 date-time"),
                )
            })?;
        }
        op if op.starts_with("SEMVER_") => {
            let v = single()?;
            Version::parse(&v).map_err(|e| {
                FieldError::new(
                    format!("{at}.{value_field}"),
                    format!("{v:?} is not a semantic version: {e}"),
                )
            })?;
        }
        "REGEX" => {
            let pattern = c.value.as_deref().ok_or_else(|| {
                FieldError::new(format!("{at}.value"), "is required (the pattern)")
            })?;
            compile_regex(pattern, c.case_insensitive).map_err(|e| {
                FieldError::new(
                    format!("{at}.value"),
                    format!(
                        "invalid regex: {}",
                        e.to_string().lines().last().unwrap_or("invalid")
                    ),
                )
            })?;
        }
        "IN_CIDR" => {
            if clean_values(c).is_empty() {
                return Err(FieldError::new(
                    format!("{at}.values"),
                    "needs at least one IP address or CIDR",
                ));
            }
            for (k, v) in c.values.iter().enumerate() {
                if !v.trim().is_empty() && parse_cidr(v).is_none() {
                    return Err(FieldError::new(
                        format!("{at}.values[{k}]"),
                        format!("{v:?} is not an IP address or CIDR"),
                    ));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_variants(at: &str, variants: &[Variant]) -> Result<(), FieldError> {
    let mut names = HashSet::new();
    for (i, v) in variants.iter().enumerate() {
        if v.name.trim().is_empty() {
            return Err(FieldError::new(format!("{at}[{i}].name"), "is required"));
        }
        if !names.insert(v.name.as_str()) {
            return Err(FieldError::new(
                format!("{at}[{i}].name"),
                format!("{:?} appears twice", v.name),
            ));
        }
        if v.weight > 100_000 {
            return Err(FieldError::new(
                format!("{at}[{i}].weight"),
                "is above 100000",
            ));
        }
        if let Some(payload) = &v.payload {
            let field = format!("{at}[{i}].payload.value");
            match payload.kind.as_str() {
                "string" | "csv" => {}
                "number" => {
                    payload.value.trim().parse::<f64>().map_err(|_| {
                        FieldError::new(&field, format!("{:?} is not a number", payload.value))
                    })?;
                }
                "json" => {
                    serde_json::from_str::<serde_json::Value>(&payload.value)
                        .map_err(|e| FieldError::new(&field, format!("is not JSON: {e}")))?;
                }
                other => {
                    return Err(FieldError::new(
                        format!("{at}[{i}].payload.type"),
                        format!(
                            "{other:?} is not a payload type (expected string, json, csv or number)"
                        ),
                    ));
                }
            }
        }
    }
    if !variants.is_empty() && variants.iter().all(|v| v.weight == 0) {
        return Err(FieldError::new(
            format!("{at}[0].weight"),
            "at least one variant needs a weight above 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The other flags: `parent` (no dependencies, others depend on it), `child` (depends on
    /// `parent`) and `solo` (neither).
    fn check(value: serde_json::Value) -> Result<(), FieldError> {
        let flag: Flag = serde_json::from_value(value).unwrap();
        let neighbours = Neighbours {
            dependencies_of: &|name| match name {
                "parent" | "solo" => Some(0),
                "child" => Some(1),
                _ => None,
            },
            has_dependents: &|name| name == "parent",
        };
        check_flag(&flag, &neighbours, &HashSet::from([1]))
    }

    fn field_of(value: serde_json::Value) -> String {
        check(value).expect_err("should be refused").field
    }

    #[test]
    fn good_flags_pass() {
        check(json!({"name": "a", "enabled": true, "strategies": [
            {"name": "flexibleRollout", "parameters": {"rollout": "25", "stickiness": "default"},
             "constraints": [{"contextName": "appVersion", "operator": "SEMVER_GTE", "value": "1.2.3"},
                             {"contextName": "email", "operator": "REGEX", "value": "@example\\.com$"},
                             {"contextName": "remoteAddress", "operator": "IN_CIDR", "values": ["10.0.0.0/8", "::1"]}],
             "segments": [1]}],
            "variants": [{"name": "x", "weight": 1, "payload": {"type": "json", "value": "{\"a\":1}"}}],
            "dependencies": [{"feature": "parent"}]}))
        .unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let base = |strategy: serde_json::Value| json!({"name": "a", "enabled": true, "strategies": [strategy]});
        assert_eq!(
            field_of(base(json!({"name": "gradualRolloutMagic"}))),
            "strategies[0].name"
        );
        assert_eq!(
            field_of(base(
                json!({"name": "remoteAddress", "parameters": {"IPs": "10.0.0.0/33"}})
            )),
            "strategies[0].parameters.IPs"
        );
        assert_eq!(
            field_of(base(
                json!({"name": "flexibleRollout", "parameters": {"rollout": "150"}})
            )),
            "strategies[0].parameters.rollout"
        );
        let constraint =
            |c: serde_json::Value| base(json!({"name": "default", "constraints": [c]}));
        assert_eq!(
            field_of(constraint(
                json!({"contextName": "x", "operator": "REGEX", "value": "(unclosed"})
            )),
            "strategies[0].constraints[0].value"
        );
        assert_eq!(
            field_of(constraint(
                json!({"contextName": "x", "operator": "SEMVER_GT", "value": "v1"})
            )),
            "strategies[0].constraints[0].value"
        );
        assert_eq!(
            field_of(constraint(
                json!({"contextName": "x", "operator": "IN_CIDR", "values": ["10.0.0.0/8", "300.1.1.1"]})
            )),
            "strategies[0].constraints[0].values[1]"
        );
        assert_eq!(
            field_of(constraint(
                json!({"contextName": "x", "operator": "LIKE", "value": "a"})
            )),
            "strategies[0].constraints[0].operator"
        );
        assert_eq!(
            field_of(base(json!({"name": "default", "segments": [9]}))),
            "strategies[0].segments[0]"
        );
        assert_eq!(
            field_of(json!({"name": "a", "enabled": true, "dependencies": [{"feature": "ghost"}]})),
            "dependencies[0].feature"
        );
        // One level: no parent with parents, no parents for a parent.
        assert_eq!(
            field_of(json!({"name": "a", "enabled": true, "dependencies": [{"feature": "child"}]})),
            "dependencies[0].feature"
        );
        assert_eq!(
            field_of(
                json!({"name": "parent", "enabled": true, "dependencies": [{"feature": "solo"}]})
            ),
            "dependencies"
        );
        assert_eq!(field_of(json!({"name": "a b", "enabled": true})), "name");
    }
}
