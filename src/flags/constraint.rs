//! Constraint operators: parsed once when flags are compiled, matched per evaluation.
//!
//! Semantics follow the Unleash client specification: values are trimmed and empty ones
//! dropped; string operators need a context value (`NOT_IN` holds when it is missing);
//! numbers, dates and semantic versions that do not parse make the operator false; an invalid
//! regex or CIDR never matches; an unknown operator is false whatever `inverted` says; otherwise
//! `inverted` negates the result. Strict rejection of bad input is `validate`'s job, not this one.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use regex::Regex;
use semver::Version;

use crate::flags::context::{Context, Field};
use crate::flags::model::Constraint;

/// Bound on compiled regex size, so a flag cannot make evaluation slow or memory-hungry.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct Compiled {
    field: Field,
    op: Op,
    inverted: bool,
}

#[derive(Debug, Clone)]
enum Op {
    In(Vec<String>),
    NotIn(Vec<String>),
    StartsWith(Vec<String>, bool),
    EndsWith(Vec<String>, bool),
    Contains(Vec<String>, bool),
    Num(Ordering, Option<f64>),
    DateAfter(Option<DateTime<Utc>>),
    DateBefore(Option<DateTime<Utc>>),
    Semver(Ordering, Option<Version>),
    Regex(Option<Regex>),
    InCidr(Vec<IpNet>),
    Unknown,
}

#[derive(Debug, Clone, Copy)]
enum Ordering {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Ordering {
    fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            Ordering::Eq => ord == Equal,
            Ordering::Gt => ord == Greater,
            Ordering::Gte => ord != Less,
            Ordering::Lt => ord == Less,
            Ordering::Lte => ord != Greater,
        }
    }
}

/// The operators seawall knows; anything else evaluates false.
pub const OPERATORS: [&str; 19] = [
    "IN",
    "NOT_IN",
    "STR_STARTS_WITH",
    "STR_ENDS_WITH",
    "STR_CONTAINS",
    "NUM_EQ",
    "NUM_GT",
    "NUM_GTE",
    "NUM_LT",
    "NUM_LTE",
    "DATE_AFTER",
    "DATE_BEFORE",
    "SEMVER_EQ",
    "SEMVER_GT",
    "SEMVER_GTE",
    "SEMVER_LT",
    "SEMVER_LTE",
    "REGEX",
    "IN_CIDR",
];

/// The constraint's values list, trimmed, empty entries dropped.
pub fn clean_values(constraint: &Constraint) -> Vec<String> {
    constraint
        .values
        .iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The single-value operand (`value`, or the first of `values`).
pub fn single_value(constraint: &Constraint) -> Option<String> {
    constraint
        .value
        .clone()
        .or_else(|| constraint.values.first().cloned())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

pub fn parse_cidr(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

pub fn compile_regex(pattern: &str, case_insensitive: bool) -> Result<Regex, regex::Error> {
    let pattern = if case_insensitive {
        format!("(?i){pattern}")
    } else {
        pattern.to_string()
    };
    regex::RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

pub fn compile(constraint: &Constraint) -> Compiled {
    let values = || clean_values(constraint);
    let lowered = || {
        let values = clean_values(constraint);
        if constraint.case_insensitive {
            values.iter().map(|v| v.to_lowercase()).collect()
        } else {
            values
        }
    };
    let ci = constraint.case_insensitive;
    let number = || single_value(constraint).and_then(|v| v.parse::<f64>().ok());
    let version = || single_value(constraint).and_then(|v| Version::parse(&v).ok());
    let op = match constraint.operator.as_str() {
        "IN" => Op::In(values()),
        "NOT_IN" => Op::NotIn(values()),
        "STR_STARTS_WITH" => Op::StartsWith(lowered(), ci),
        "STR_ENDS_WITH" => Op::EndsWith(lowered(), ci),
        "STR_CONTAINS" => Op::Contains(lowered(), ci),
        "NUM_EQ" => Op::Num(Ordering::Eq, number()),
        "NUM_GT" => Op::Num(Ordering::Gt, number()),
        "NUM_GTE" => Op::Num(Ordering::Gte, number()),
        "NUM_LT" => Op::Num(Ordering::Lt, number()),
        "NUM_LTE" => Op::Num(Ordering::Lte, number()),
        "DATE_AFTER" => Op::DateAfter(single_value(constraint).and_then(|v| parse_date(&v))),
        "DATE_BEFORE" => Op::DateBefore(single_value(constraint).and_then(|v| parse_date(&v))),
        "SEMVER_EQ" => Op::Semver(Ordering::Eq, version()),
        "SEMVER_GT" => Op::Semver(Ordering::Gt, version()),
        "SEMVER_GTE" => Op::Semver(Ordering::Gte, version()),
        "SEMVER_LT" => Op::Semver(Ordering::Lt, version()),
        "SEMVER_LTE" => Op::Semver(Ordering::Lte, version()),
        "REGEX" => Op::Regex(
            constraint
                .value
                .as_deref()
                .and_then(|p| compile_regex(p, ci).ok()),
        ),
        "IN_CIDR" => Op::InCidr(values().iter().filter_map(|v| parse_cidr(v)).collect()),
        _ => Op::Unknown,
    };
    Compiled {
        field: Field::named(&constraint.context_name),
        op,
        inverted: constraint.inverted,
    }
}

/// The time `currentTime` date constraints compare with when the context sets none: asked for
/// only when such a constraint is evaluated. Most flags have none, and the proxy evaluates five
/// flags per request, so reading the clock for each evaluation would be wasted work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// A fixed instant: tests, and bulk evaluations that share one.
    At(DateTime<Utc>),
    /// The system clock, read when asked.
    System,
}

impl Now {
    pub fn get(self) -> DateTime<Utc> {
        match self {
            Now::At(instant) => instant,
            Now::System => Utc::now(),
        }
    }
}

impl From<DateTime<Utc>> for Now {
    fn from(instant: DateTime<Utc>) -> Now {
        Now::At(instant)
    }
}

impl Compiled {
    pub fn matches(&self, ctx: &Context, now: Now) -> bool {
        let value = ctx.get(&self.field);
        let result = match &self.op {
            Op::Unknown => return false,
            Op::In(values) => value.is_some_and(|v| values.iter().any(|x| x == v)),
            Op::NotIn(values) => !value.is_some_and(|v| values.iter().any(|x| x == v)),
            Op::StartsWith(values, ci) => string_op(value, *ci, values, |v, x| v.starts_with(x)),
            Op::EndsWith(values, ci) => string_op(value, *ci, values, |v, x| v.ends_with(x)),
            Op::Contains(values, ci) => string_op(value, *ci, values, |v, x| v.contains(x)),
            Op::Num(ord, target) => {
                match (value.and_then(|v| v.trim().parse::<f64>().ok()), target) {
                    (Some(v), Some(t)) => v.partial_cmp(t).is_some_and(|o| ord.holds(o)),
                    _ => false,
                }
            }
            Op::DateAfter(target) => self
                .date(value, now)
                .zip(*target)
                .is_some_and(|(v, t)| v > t),
            Op::DateBefore(target) => self
                .date(value, now)
                .zip(*target)
                .is_some_and(|(v, t)| v < t),
            Op::Semver(ord, target) => {
                match (value.and_then(|v| Version::parse(v.trim()).ok()), target) {
                    (Some(v), Some(t)) => ord.holds(v.cmp(t)),
                    _ => false,
                }
            }
            Op::Regex(regex) => match (value, regex) {
                (Some(v), Some(re)) => re.is_match(v),
                _ => false,
            },
            Op::InCidr(nets) => match value.and_then(|v| v.trim().parse::<IpAddr>().ok()) {
                Some(ip) => nets
                    .iter()
                    .any(|n| n.contains(&ip.to_canonical()) || n.contains(&ip)),
                None => false,
            },
        };
        result != self.inverted
    }

    /// A date operand: the context field, or `now` when the field is `currentTime` and unset.
    fn date(&self, value: Option<&str>, now: Now) -> Option<DateTime<Utc>> {
        match value {
            Some(text) => parse_date(text),
            None if self.field == Field::CurrentTime => Some(now.get()),
            None => None,
        }
    }
}

fn string_op(
    value: Option<&str>,
    ci: bool,
    values: &[String],
    test: impl Fn(&str, &str) -> bool,
) -> bool {
    let Some(value) = value else { return false };
    if !ci {
        return values.iter().any(|x| test(value, x));
    }
    // The common case, ASCII text, lowercases on the stack instead of allocating.
    let mut buffer = [0u8; 128];
    if value.is_ascii() && value.len() <= buffer.len() {
        let lowered = &mut buffer[..value.len()];
        lowered.copy_from_slice(value.as_bytes());
        lowered.make_ascii_lowercase();
        let lowered = std::str::from_utf8(lowered).expect("ASCII stays UTF-8");
        return values.iter().any(|x| test(lowered, x));
    }
    let lowered = value.to_lowercase();
    values.iter().any(|x| test(&lowered, x))
}
