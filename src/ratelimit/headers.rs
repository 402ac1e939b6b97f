//! The rate-limit wire format (research/ratelimit.md §3.3).
//!
//! `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-ratelimit-headers, quoted-string
//! policy names, valid under both the -10 and later revisions) list every enforced policy the
//! request went through, the level's first; `X-RateLimit-Limit/-Remaining/-Reset` (the fields the
//! original clients read) describe the most constrained of them. A 429 adds `Retry-After`
//! (whole seconds, rounded up, equal to the refusing policy's `t`), `X-RateLimit-Priority` and
//! `Cache-Control: no-store`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};

use crate::ratelimit::{Checked, Level};

pub type Fields = Vec<(HeaderName, HeaderValue)>;

// Constants, so that each name is checked once at compile time, not on every admitted request.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const X_RATELIMIT_PRIORITY: HeaderName = HeaderName::from_static("x-ratelimit-priority");

/// Seconds, rounded up, at least 1: `Retry-After` and `t` never promise too early.
pub fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Fields for an admitted request.
pub fn admitted(checked: &[Checked], now: SystemTime) -> Fields {
    if checked.is_empty() {
        return Fields::new();
    }
    common(checked, now)
}

/// Fields for a 429; `checked` ends with the refusing policy.
pub fn limited(level: Level, checked: &[Checked], now: SystemTime) -> Fields {
    let refusing = checked.last().expect("a refusal names its policy");
    let retry_after = whole_seconds(refusing.verdict.retry_after);
    let ordered: Vec<Checked> = checked.iter().rev().cloned().collect();
    let mut fields = common(&ordered, now);
    fields.push((http::header::RETRY_AFTER, HeaderValue::from(retry_after)));
    fields.push((
        X_RATELIMIT_PRIORITY,
        HeaderValue::from_static(level.as_str()),
    ));
    fields.push((
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ));
    fields
}

fn common(checked: &[Checked], now: SystemTime) -> Fields {
    let mut policy = String::with_capacity(32 * checked.len());
    let mut state = String::with_capacity(32 * checked.len());
    for (i, c) in checked.iter().enumerate() {
        if i > 0 {
            policy.push_str(", ");
            state.push_str(", ");
        }
        let r = c.verdict.remaining;
        // Every admitted request carries these: numbers written by itoa, not `write!`.
        let mut number = itoa::Buffer::new();
        push_quoted(&mut policy, c.policy);
        policy.push_str(";q=");
        policy.push_str(number.format(c.quota));
        policy.push_str(";w=");
        policy.push_str(number.format(c.window_s));
        push_quoted(&mut state, c.policy);
        state.push_str(";r=");
        state.push_str(number.format(r));
        if r < c.quota {
            let t = if c.verdict.admitted {
                c.verdict.next_unit
            } else {
                c.verdict.retry_after
            };
            state.push_str(";t=");
            state.push_str(number.format(whole_seconds(t)));
        }
    }
    let tightest = checked
        .iter()
        .min_by_key(|c| (c.verdict.remaining, c.quota))
        .expect("at least one policy");
    let epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let reset = epoch + whole_seconds(tightest.verdict.reset);
    let value = |text: String| HeaderValue::try_from(text).expect("policy names are header-safe");
    vec![
        (RATELIMIT_POLICY, value(policy)),
        (RATELIMIT, value(state)),
        (X_RATELIMIT_LIMIT, HeaderValue::from(tightest.quota)),
        (
            X_RATELIMIT_REMAINING,
            HeaderValue::from(tightest.verdict.remaining),
        ),
        (X_RATELIMIT_RESET, HeaderValue::from(reset)),
    ]
}

/// A policy name as the quoted string the fields hold (names are checked header-safe).
fn push_quoted(text: &mut String, name: &str) {
    text.push('"');
    text.push_str(name);
    text.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Verdict;

    fn fields_map(fields: &Fields) -> std::collections::BTreeMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn the_eleventh_strict_request_gets_the_documented_fields() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let refused = Checked {
            policy: "strict",
            quota: 10,
            window_s: 60,
            verdict: Verdict {
                admitted: false,
                remaining: 0,
                retry_after: Duration::from_secs(6),
                next_unit: Duration::from_secs(6),
                reset: Duration::from_secs(60),
            },
        };
        let fields = fields_map(&limited(Level::Strict, &[refused], now));
        assert_eq!(fields["retry-after"], "6");
        assert_eq!(fields["ratelimit-policy"], "\"strict\";q=10;w=60");
        assert_eq!(fields["ratelimit"], "\"strict\";r=0;t=6");
        assert_eq!(fields["x-ratelimit-limit"], "10");
        assert_eq!(fields["x-ratelimit-remaining"], "0");
        assert_eq!(fields["x-ratelimit-reset"], "1000060");
        assert_eq!(fields["x-ratelimit-priority"], "strict");
        assert_eq!(fields["cache-control"], "no-store");
    }

    #[test]
    fn admitted_requests_list_every_policy_and_the_tightest_legacy_fields() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let verdict = |remaining, next_ms| Verdict {
            admitted: true,
            remaining,
            retry_after: Duration::ZERO,
            next_unit: Duration::from_millis(next_ms),
            reset: Duration::from_millis(next_ms),
        };
        let level = Checked {
            policy: "low",
            quota: 30,
            window_s: 60,
            verdict: verdict(29, 2000),
        };
        let custom = Checked {
            policy: "ai.chat",
            quota: 5,
            window_s: 60,
            verdict: verdict(4, 12_000),
        };
        let fields = fields_map(&admitted(&[level, custom], now));
        assert_eq!(
            fields["ratelimit-policy"],
            "\"low\";q=30;w=60, \"ai.chat\";q=5;w=60"
        );
        assert_eq!(
            fields["ratelimit"],
            "\"low\";r=29;t=2, \"ai.chat\";r=4;t=12"
        );
        assert_eq!(
            (
                fields["x-ratelimit-limit"].as_str(),
                fields["x-ratelimit-remaining"].as_str()
            ),
            ("5", "4")
        );
        assert!(!fields.contains_key("retry-after"));
        assert_eq!(whole_seconds(Duration::from_millis(600)), 1);
    }
}
