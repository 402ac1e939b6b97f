//! Which requests are audited, at which level, under which event type and stream
//! (research/audit.md §1.5, Kubernetes-style).
//!
//! A request is decided by, in order: the ordered `[[audit.rules]]` (first match wins), then
//! the matched route's own `audit = {...}`, then the built-in defaults (health probes and CORS
//! preflights are not audited; everything else at `metadata` as `http.<action>` in `access`).
//! After the request is answered, [`outcome`] applies the status overrides: 401, 403 and 429
//! become security events, 5xx become `sys.error` in the request's stream.
//!
//! The policy is pure and validated by `config`; the middleware (`audit::middleware`) applies
//! it.

use std::borrow::Cow;

use http::Method;
use serde::Serialize;

use crate::audit::event::{Level, Stream};

/// One `[[audit.rules]]` entry, or a route's own `audit = {...}` (which has no selectors).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Route names (`[[routes]] name`, or `health`, `ofrep`, `unmatched`); empty matches all.
    pub routes: Vec<String>,
    /// Empty matches every method.
    #[serde(serialize_with = "crate::config::method_list")]
    pub methods: Vec<Method>,
    pub level: Option<Level>,
    /// The event type; `{action}` is replaced by the method's action (`read`, `create`, ...).
    pub event: Option<String>,
    pub stream: Option<Stream>,
    pub durability: Option<Durability>,
}

/// When a request's audit record must be on disk (research/audit.md §1.5, Kubernetes'
/// webhook modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// One event when the answer is complete, written by the next batch and flushed within
    /// `audit.flush_interval_ms`; dropped and counted if the queue is full.
    #[default]
    Batch,
    /// Before anything else is done with the request, a `request_received` event is written
    /// and flushed; if that fails within `audit.strict_timeout_ms`, the request is answered
    /// 503 and never reaches the upstream. Its completion event waits for queue room instead
    /// of being dropped.
    BlockingStrict,
}

impl Durability {
    pub fn parse(name: &str) -> Option<Durability> {
        match name {
            "batch" => Some(Durability::Batch),
            "blocking-strict" => Some(Durability::BlockingStrict),
            _ => None,
        }
    }
}

impl Rule {
    fn matches(&self, route: &str, method: &Method) -> bool {
        (self.routes.is_empty() || self.routes.iter().any(|r| r == route))
            && (self.methods.is_empty() || self.methods.contains(method))
    }
}

/// What the policy decided for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub level: Level,
    /// The event type for a successful (non-overridden) answer. Borrowed when it is a
    /// built-in one: deciding is on every request's path.
    pub event: Cow<'static, str>,
    pub stream: Stream,
    /// Which rule decided: its index in `[[audit.rules]]`, `route`, or `default`.
    pub rule: Cow<'static, str>,
    pub durability: Durability,
}

/// The label of requests to the health endpoints, which are not audited by default.
pub const HEALTH_ROUTE: &str = "health";

/// Decides the level, type and stream of a request to `route` (its label) with `method`.
pub fn decide(rules: &[Rule], route_rule: Option<&Rule>, route: &str, method: &Method) -> Decision {
    let (rule, source) = match rules.iter().position(|r| r.matches(route, method)) {
        Some(i) => (Some(&rules[i]), Cow::Owned(i.to_string())),
        None => match route_rule {
            Some(rule) => (Some(rule), Cow::Borrowed("route")),
            None => (None, Cow::Borrowed("default")),
        },
    };
    let default_level = if route == HEALTH_ROUTE || method == Method::OPTIONS {
        Level::None
    } else {
        Level::Metadata
    };
    let event = match rule.and_then(|r| r.event.as_deref()) {
        Some(template) => Cow::Owned(template.replace("{action}", action(method))),
        None => Cow::Borrowed(http_event(method)),
    };
    let stream = rule
        .and_then(|r| r.stream)
        .unwrap_or_else(|| match Stream::for_type(&event) {
            // Request events default to `access`; a type only moves them when it names a
            // retention class of its own.
            Stream::System => Stream::Access,
            other => other,
        });
    Decision {
        level: rule.and_then(|r| r.level).unwrap_or(default_level),
        event,
        stream,
        rule: source,
        durability: rule.and_then(|r| r.durability).unwrap_or_default(),
    }
}

/// Admin API requests: always audited, in `security`, with what was sent (redacted). Reads
/// of the audit trail itself are `audit.read`; other requests `admin.<area>.<action>`.
/// Requests to the audit and GDPR APIs carry subjects' identifiers in their bodies, so their
/// events never capture a body (research/audit.md §3.1): the identifiers would otherwise be
/// kept under the operator's key, beyond the reach of the subject's erasure.
pub fn admin(route: &str, method: &Method) -> Option<Decision> {
    let area = route.strip_prefix("admin.")?;
    let read = matches!(*method, Method::GET | Method::HEAD);
    let (event, level) = match area {
        "audit" | "gdpr" if read => (Cow::Borrowed("audit.read"), Level::Metadata),
        "audit" | "gdpr" => (admin_event(area, method), Level::Metadata),
        _ => (admin_event(area, method), Level::Request),
    };
    Some(Decision {
        level,
        event,
        stream: Stream::Security,
        rule: Cow::Borrowed("admin"),
        durability: Durability::Batch,
    })
}

fn admin_event(area: &str, method: &Method) -> Cow<'static, str> {
    Cow::Owned(format!("admin.{area}.{}", action(method)))
}

/// `http.{action}`, the default event type, without building it.
fn http_event(method: &Method) -> &'static str {
    match action(method) {
        "read" => "http.read",
        "create" => "http.create",
        "update" => "http.update",
        "delete" => "http.delete",
        _ => "http.execute",
    }
}

/// The OWASP action of an HTTP method.
pub fn action(method: &Method) -> &'static str {
    match *method {
        Method::GET | Method::HEAD => "read",
        Method::POST => "create",
        Method::PUT | Method::PATCH => "update",
        Method::DELETE => "delete",
        _ => "execute",
    }
}

/// The methods the coverage table lists.
const COVERAGE_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// How the requests of one route are audited (research/audit.md §6 B1), method by method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteCoverage {
    pub route: String,
    pub methods: Vec<MethodCoverage>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodCoverage {
    pub method: &'static str,
    pub level: Level,
    pub event: String,
    pub stream: Stream,
    /// `None` when the requests are not audited.
    pub durability: Option<Durability>,
    /// `rules[i]` for an `[[audit.rules]]` entry, `route` for the route's own `audit`, or
    /// `default`.
    pub decided_by: String,
}

/// The coverage table: for each route (its label and its own `audit`, if any), what
/// [`decide`] answers for each common method.
pub fn coverage<'a>(
    rules: &[Rule],
    routes: impl IntoIterator<Item = (&'a str, Option<&'a Rule>)>,
) -> Vec<RouteCoverage> {
    routes
        .into_iter()
        .map(|(route, route_rule)| RouteCoverage {
            route: route.to_string(),
            methods: COVERAGE_METHODS
                .iter()
                .map(|method| {
                    let decision = decide(rules, route_rule, route, method);
                    let decided_by = match decision.rule.parse::<usize>() {
                        Ok(index) => format!("rules[{index}]"),
                        Err(_) => decision.rule.into_owned(),
                    };
                    MethodCoverage {
                        method: method.as_str(),
                        level: decision.level,
                        event: decision.event.into_owned(),
                        stream: decision.stream,
                        durability: (decision.level != Level::None).then_some(decision.durability),
                        decided_by,
                    }
                })
                .collect(),
        })
        .collect()
}

/// The event type, stream and outcome of an answered request, after the status overrides.
pub fn outcome(decision: &Decision, status: u16) -> (&str, Stream, &'static str) {
    let result = if status < 400 { "success" } else { "failure" };
    match status {
        401 => ("authn.fail", Stream::Security, result),
        403 => ("authz.fail", Stream::Security, result),
        429 => ("excess.rate_limit_exceeded", Stream::Security, result),
        500..=599 => ("sys.error", decision.stream, result),
        _ => (&decision.event, decision.stream, result),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_event_types_are_http_and_the_action() {
        let extension = Method::from_bytes(b"PURGE").unwrap();
        for method in COVERAGE_METHODS.iter().chain([&extension]) {
            assert_eq!(http_event(method), format!("http.{}", action(method)));
        }
    }

    fn rule(
        routes: &[&str],
        methods: &[Method],
        level: Option<Level>,
        event: Option<&str>,
    ) -> Rule {
        Rule {
            routes: routes.iter().map(|r| r.to_string()).collect(),
            methods: methods.to_vec(),
            level,
            event: event.map(str::to_string),
            stream: None,
            durability: None,
        }
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let rules = [
            rule(
                &["login"],
                &[Method::POST],
                Some(Level::Metadata),
                Some("authn.login"),
            ),
            rule(&["login"], &[], Some(Level::None), None),
            rule(&[], &[], Some(Level::Request), None),
        ];
        let login = decide(&rules, None, "login", &Method::POST);
        assert_eq!(
            (login.level, login.event.as_ref(), login.stream),
            (Level::Metadata, "authn.login", Stream::Security)
        );
        assert_eq!(login.rule, "0");
        assert_eq!(
            decide(&rules, None, "login", &Method::GET).level,
            Level::None
        );
        let other = decide(&rules, None, "api", &Method::DELETE);
        assert_eq!(
            (other.level, other.event.as_ref(), other.rule.as_ref()),
            (Level::Request, "http.delete", "2")
        );
    }

    #[test]
    fn the_route_rule_applies_when_no_rule_matches() {
        let route = rule(&[], &[], Some(Level::Request), Some("api.request"));
        let rules = [rule(&["other"], &[], Some(Level::None), None)];
        let decided = decide(&rules, Some(&route), "api", &Method::GET);
        assert_eq!(
            (decided.level, decided.event.as_ref(), decided.stream),
            (Level::Request, "api.request", Stream::Access)
        );
        assert_eq!(decided.rule, "route");
    }

    #[test]
    fn the_coverage_table_names_what_decided_each_route_and_method() {
        let route = rule(&[], &[], Some(Level::Request), Some("orders.{action}"));
        let rules = [rule(&["login"], &[Method::POST], None, Some("authn.login"))];
        let table = coverage(
            &rules,
            [("login", None), ("orders", Some(&route)), ("health", None)],
        );
        let cell = |route: usize, method: &str| {
            let c = table[route]
                .methods
                .iter()
                .find(|m| m.method == method)
                .unwrap();
            (c.level, c.event.as_ref(), c.decided_by.as_str())
        };
        assert_eq!(
            cell(0, "POST"),
            (Level::Metadata, "authn.login", "rules[0]")
        );
        assert_eq!(cell(0, "GET"), (Level::Metadata, "http.read", "default"));
        assert_eq!(
            cell(1, "DELETE"),
            (Level::Request, "orders.delete", "route")
        );
        assert_eq!(cell(2, "GET"), (Level::None, "http.read", "default"));
        assert_eq!(
            cell(1, "OPTIONS").0,
            Level::Request,
            "a route rule may audit OPTIONS"
        );
        assert_eq!(table[0].methods.len(), 7);
    }

    #[test]
    fn durability_comes_from_the_deciding_rule() {
        let strict = Rule {
            durability: Some(Durability::BlockingStrict),
            ..rule(&["payments"], &[], None, None)
        };
        let rules = [strict, rule(&[], &[Method::DELETE], None, None)];
        assert_eq!(
            decide(&rules, None, "payments", &Method::POST).durability,
            Durability::BlockingStrict
        );
        // The first match decides, so a later rule or the route cannot loosen it, nor can an
        // earlier one be tightened by the route.
        let route = Rule {
            durability: Some(Durability::BlockingStrict),
            ..rule(&[], &[], None, None)
        };
        assert_eq!(
            decide(&rules, Some(&route), "api", &Method::DELETE).durability,
            Durability::Batch
        );
        assert_eq!(
            decide(&rules, Some(&route), "api", &Method::GET).durability,
            Durability::BlockingStrict
        );
        assert_eq!(Durability::parse("blocking"), None);
    }

    #[test]
    fn probes_and_preflights_are_not_audited_by_default() {
        assert_eq!(
            decide(&[], None, HEALTH_ROUTE, &Method::GET).level,
            Level::None
        );
        assert_eq!(
            decide(&[], None, "api", &Method::OPTIONS).level,
            Level::None
        );
        let plain = decide(&[], None, "api", &Method::PUT);
        assert_eq!(
            (plain.level, plain.event.as_ref(), plain.stream),
            (Level::Metadata, "http.update", Stream::Access)
        );
    }

    #[test]
    fn admin_requests_are_security_events() {
        let change = admin("admin.flags", &Method::PUT).unwrap();
        assert_eq!(
            (change.event.as_ref(), change.stream, change.level),
            ("admin.flags.update", Stream::Security, Level::Request)
        );
        assert_eq!(
            admin("admin.audit", &Method::GET).unwrap().event,
            "audit.read"
        );
        assert_eq!(admin("metrics", &Method::GET), None);
    }

    #[test]
    fn statuses_override_the_event_type() {
        let decided = decide(&[], None, "api", &Method::GET);
        assert_eq!(
            outcome(&decided, 200),
            ("http.read", Stream::Access, "success")
        );
        assert_eq!(
            outcome(&decided, 404),
            ("http.read", Stream::Access, "failure")
        );
        assert_eq!(
            outcome(&decided, 401),
            ("authn.fail", Stream::Security, "failure")
        );
        assert_eq!(
            outcome(&decided, 403),
            ("authz.fail", Stream::Security, "failure")
        );
        assert_eq!(outcome(&decided, 429).0, "excess.rate_limit_exceeded");
        assert_eq!(
            outcome(&decided, 503),
            ("sys.error", Stream::Access, "failure")
        );
    }
}
