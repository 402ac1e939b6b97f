//! The query of stored headers (`GET /admin/audit/events`): filters, ordering, cursors.
//!
//! Events come stream by stream (security, access, data_change, gdpr, system), each in
//! sequence order; the cursor is the position of the next event. Only headers are returned:
//! they hold no personal data, so reading the trail does not disclose anyone. With
//! `integrity=true` each also carries its part digests, leaf and chain value, from which a
//! client recomputes the chain itself, and its inclusion proof (`proofs`), with which it
//! checks the event alone against its signed digest (docs/audit-format.md). Every page is
//! bounded twice: by `limit` results and by [`MAX_SCAN`] records read, so a filter that
//! matches nothing cannot keep the store busy; such a page ends early with a cursor.

use serde::Serialize;
use serde_json::{Value, json};

use crate::audit::event::{self, Stream};
use crate::audit::log::{self, AuditLog};
use crate::audit::proofs::Proofs;
use crate::hex;
use crate::store::StoreError;

/// Records read per page at most.
pub const MAX_SCAN: u64 = 100_000;
pub const MAX_LIMIT: usize = 1_000;
const DEFAULT_LIMIT: usize = 100;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Inclusive, in the stored time format.
    pub from: Option<String>,
    /// Exclusive.
    pub to: Option<String>,
    pub stream: Option<Stream>,
    /// An exact type, or a prefix given as `authn.*`.
    pub event_type: Option<String>,
    pub route: Option<String>,
    /// An exact status, or a class given as `5xx`.
    pub status: Option<(u16, u16)>,
    pub outcome: Option<String>,
    pub actor_kind: Option<String>,
    /// `request_received` (the arrival events of `blocking-strict` routes) or `complete`
    /// (every other event, which has no `stage`).
    pub stage: Option<String>,
    pub limit: usize,
    pub cursor: Option<(Stream, u64)>,
    /// Adds each event's part digests, leaf and chain value (`integrity=true`), so that a
    /// client can recompute the chain (docs/audit-format.md).
    pub integrity: bool,
}

/// One page of results.
#[derive(Debug, Serialize)]
pub struct Page {
    pub events: Vec<Value>,
    /// Pass as `cursor` for the next page; absent when there is no more.
    pub next_cursor: Option<String>,
    pub scanned: u64,
}

/// A query parameter that cannot be used: (parameter, message).
pub type QueryError = (String, String);

impl Query {
    /// Parses a query string; unknown parameters are errors, so a typo never widens a query.
    pub fn parse(query: Option<&str>) -> Result<Query, QueryError> {
        let mut q = Query {
            limit: DEFAULT_LIMIT,
            ..Query::default()
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            let bad = |message: String| (key.to_string(), message);
            let value = value.into_owned();
            match &*key {
                "from" => q.from = Some(time(&value).map_err(bad)?),
                "to" => q.to = Some(time(&value).map_err(bad)?),
                "stream" => q.stream = Some(Stream::parse(&value).ok_or_else(|| bad(format!("{value:?} is not a stream (security, access, data_change, gdpr, system)")))?),
                "type" => {
                    let plain = value.strip_suffix(".*").unwrap_or(&value);
                    if plain.is_empty() || plain.len() > 64 || !plain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
                        return Err(bad(format!("{value:?} is not an event type or a prefix such as \"authn.*\"")));
                    }
                    q.event_type = Some(value);
                }
                "route" => q.route = Some(value),
                "status" => q.status = Some(status(&value).ok_or_else(|| bad(format!("{value:?} is not a status (e.g. 404) or a class (e.g. 5xx)")))?),
                "outcome" => match value.as_str() {
                    "success" | "failure" | "unknown" => q.outcome = Some(value),
                    _ => return Err(bad(format!("{value:?} is not an outcome (success, failure, unknown)"))),
                },
                "actor_kind" => match value.as_str() {
                    "user" | "service" | "anonymous" | "system" => q.actor_kind = Some(value),
                    _ => return Err(bad(format!("{value:?} is not an actor kind (user, service, anonymous, system)"))),
                },
                "stage" => match value.as_str() {
                    "request_received" | "complete" => q.stage = Some(value),
                    _ => return Err(bad(format!("{value:?} is not a stage (request_received, complete)"))),
                },
                "limit" => {
                    q.limit = value.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| bad(format!("{value:?} is not a number from 1 to {MAX_LIMIT}")))?
                }
                "cursor" => q.cursor = Some(cursor(&value).ok_or_else(|| bad(format!("{value:?} is not a cursor from an earlier page")))?),
                "integrity" => match value.as_str() {
                    "true" => q.integrity = true,
                    "false" => q.integrity = false,
                    _ => return Err(bad(format!("{value:?} is not true or false"))),
                },
                _ => return Err(bad("is not a filter (from, to, stream, type, route, status, outcome, actor_kind, stage, limit, cursor, integrity)".to_string())),
            }
        }
        if let (Some(from), Some(to)) = (&q.from, &q.to)
            && from >= to
        {
            return Err(("to".to_string(), "must be later than from".to_string()));
        }
        Ok(q)
    }

    fn matches(&self, header: &Value) -> bool {
        let text = |name: &str| header.get(name).and_then(Value::as_str);
        let time = text("time").unwrap_or_default();
        if self.from.as_deref().is_some_and(|from| time < from)
            || self.to.as_deref().is_some_and(|to| time >= to)
        {
            return false;
        }
        if let Some(wanted) = &self.event_type {
            let event_type = text("type").unwrap_or_default();
            let matched = match wanted.strip_suffix(".*") {
                Some(prefix) => event_type
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('.')),
                None => event_type == wanted,
            };
            if !matched {
                return false;
            }
        }
        let http = header.get("http");
        if self.route.as_deref().is_some_and(|route| {
            http.and_then(|h| h.get("route")).and_then(Value::as_str) != Some(route)
        }) {
            return false;
        }
        if let Some((low, high)) = self.status {
            let code = http
                .and_then(|h| h.get("status_code"))
                .and_then(Value::as_u64)
                .unwrap_or(0) as u16;
            if code < low || code > high {
                return false;
            }
        }
        if self
            .outcome
            .as_deref()
            .is_some_and(|o| text("outcome") != Some(o))
        {
            return false;
        }
        if self
            .stage
            .as_deref()
            .is_some_and(|stage| text("stage").unwrap_or("complete") != stage)
        {
            return false;
        }
        let actor_kind = header
            .get("actor")
            .and_then(|a| a.get("kind"))
            .and_then(Value::as_str);
        self.actor_kind
            .as_deref()
            .is_none_or(|kind| actor_kind == Some(kind))
    }
}

fn time(value: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| event::rfc3339_nanos(t.with_timezone(&chrono::Utc).into()))
        .map_err(|_| format!("{value:?} is not an RFC 3339 time (e.g. 2026-11-27T14:00:00Z)"))
}

fn status(value: &str) -> Option<(u16, u16)> {
    if let Some(class) = value.strip_suffix("xx") {
        let class: u16 = class.parse().ok().filter(|c| (1..=5).contains(c))?;
        return Some((class * 100, class * 100 + 99));
    }
    let code: u16 = value.parse().ok().filter(|c| (100..=599).contains(c))?;
    Some((code, code))
}

fn cursor(value: &str) -> Option<(Stream, u64)> {
    let (stream, seq) = value.split_once(':')?;
    Some((Stream::parse(stream)?, seq.parse().ok()?))
}

/// Runs `query`. Blocking.
pub fn run(log: &AuditLog, query: &Query) -> Result<Page, StoreError> {
    let day_bounds = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| log::day_of(t.with_timezone(&chrono::Utc).into()))
    };
    let (first_day, last_day) = (day_bounds(&query.from), day_bounds(&query.to));
    let mut page = Page {
        events: Vec::new(),
        next_cursor: None,
        scanned: 0,
    };
    let streams: Vec<Stream> = match query.stream {
        Some(stream) => vec![stream],
        None => Stream::ALL.to_vec(),
    };
    let mut proofs = Proofs::new(log);
    let start = query
        .cursor
        .and_then(|(stream, _)| streams.iter().position(|s| *s == stream))
        .unwrap_or(0);
    for &stream in &streams[start..] {
        let from_seq = match query.cursor {
            Some((at, seq)) if at == stream => seq,
            _ => 0,
        };
        for day in log.buckets(stream) {
            // A bucket holds the events written on its day; a little slack covers events
            // whose time was taken just before midnight and written just after.
            if first_day.is_some_and(|d| day + 1 < d) || last_day.is_some_and(|d| day > d + 1) {
                continue;
            }
            for item in log.bucket_events(stream, day, from_seq) {
                let (seq, record) = item?;
                if page.events.len() == query.limit || page.scanned == MAX_SCAN {
                    page.next_cursor = Some(format!("{}:{seq}", stream.as_str()));
                    return Ok(page);
                }
                page.scanned += 1;
                let mut header = record.header_value();
                if query.matches(&header) {
                    if query.integrity {
                        header["integrity"] = json!({
                            "part_digests": record.parts.iter().map(|p| hex::encode(&p.digest)).collect::<Vec<_>>(),
                            "leaf": hex::encode(&record.leaf),
                            "chain": hex::encode(&record.chain),
                        });
                        proofs.prove(stream, seq)?.add_to(&mut header["integrity"]);
                    }
                    page.events.push(header);
                }
            }
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_validated_by_name() {
        let q = Query::parse(Some("stream=access&type=authn.*&status=5xx&limit=10&cursor=access:42&from=2026-11-27T00:00:00Z")).unwrap();
        assert_eq!(q.stream, Some(Stream::Access));
        assert_eq!(q.status, Some((500, 599)));
        assert_eq!(q.cursor, Some((Stream::Access, 42)));
        assert_eq!(q.from.as_deref(), Some("2026-11-27T00:00:00.000000000Z"));
        for (bad, field) in [
            ("stream=nope", "stream"),
            ("limit=0", "limit"),
            ("limit=5000", "limit"),
            ("status=99", "status"),
            ("from=yesterday", "from"),
            ("colour=red", "colour"),
            ("cursor=x", "cursor"),
            ("integrity=yes", "integrity"),
            ("stage=received", "stage"),
            ("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", "to"),
        ] {
            assert_eq!(Query::parse(Some(bad)).unwrap_err().0, field, "{bad}");
        }
    }

    #[test]
    fn filters_match_header_fields() {
        let header = serde_json::json!({"type": "authn.fail", "outcome": "failure", "time": "2026-11-27T10:00:00.000000000Z", "http": {"route": "login", "status_code": 401}, "actor": {"kind": "anonymous"}});
        let matches = |q: &str| Query::parse(Some(q)).unwrap().matches(&header);
        assert!(matches(
            "type=authn.*&status=4xx&route=login&outcome=failure&actor_kind=anonymous"
        ));
        assert!(matches("from=2026-11-27T10:00:00Z&to=2026-11-27T10:00:01Z"));
        assert!(!matches("type=authn"));
        assert!(!matches("type=auth.*"));
        assert!(!matches("status=5xx"));
        assert!(!matches("to=2026-11-27T10:00:00Z"));
        assert!(!matches("route=api"));
        assert!(matches("stage=complete"));
        assert!(!matches("stage=request_received"));
        let mut arrival = header.clone();
        arrival["stage"] = serde_json::json!("request_received");
        let arrival_matches = |q: &str| Query::parse(Some(q)).unwrap().matches(&arrival);
        assert!(arrival_matches("stage=request_received&route=login"));
        assert!(!arrival_matches("stage=complete"));
    }
}
