//! The audit middleware: one event per request, written when the answer has been sent, also
//! when the client goes away first.
//!
//! `server::exchange` calls [`RequestAudit::begin`] with the policy's decision before the
//! service runs. What can be captured is fixed there: the header facts (method, route, sizes,
//! claimed authentication, the client's network) and, sealed, the client's address, user agent,
//! path, redacted query and allowlisted headers. At `request` level the request body is teed
//! as it streams to the service; at `request_response` the response body too, each up to
//! [`redact::MAX_BODY`] and redacted when the event is built, never stored raw.
//!
//! The event is built when the response body ends or is dropped ([`AuditedBody`]), or, if
//! the exchange itself is dropped before answering, with status 499 (`client_closed`).
//! Admin changes are answered only after their event is written and flushed. Requests a rule
//! makes `blocking-strict` get a second event, `stage: request_received`, written and flushed
//! before the service sees them ([`RequestAudit::record_received`]); `server::exchange` refuses
//! them if that fails.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use serde_json::{Value, json};

use crate::audit::AuditTrail;
use crate::audit::event::{Draft, IdKind, Level, Object, Role, Stream, Subject};
use crate::audit::policy::{self, Decision, Durability};
use crate::audit::redact::{self, Notes};
use crate::body::{Body, RequestBody};
use crate::request_context::RequestContext;

/// What the listener's policy decided for a request that is audited.
pub struct Plan<'a> {
    pub decision: Decision,
    pub route: Arc<str>,
    /// Admin and security events wait for queue room instead of being dropped.
    pub important: bool,
    /// Written and flushed before the answer is sent (admin changes).
    pub durable: bool,
    /// The authenticated operator of an admin request.
    pub admin_actor: Option<String>,
    /// The header that carries API keys, for the claimed actor kind.
    pub api_key_header: Option<&'a str>,
}

/// One request's audit event in the making. Dropped unanswered, it records status 499.
pub struct RequestAudit {
    pending: Option<Pending>,
}

struct Pending {
    trail: Arc<AuditTrail>,
    decision: Decision,
    important: bool,
    durable: bool,
    started: Instant,
    method: Method,
    route: Arc<str>,
    version: Version,
    client_ip: IpAddr,
    client_address: String,
    actor_kind: &'static str,
    auth_method: &'static str,
    admin_actor: Option<String>,
    /// Sealed client facts, already redacted, as JSON.
    client: Vec<u8>,
    notes: Notes,
    /// The request body's capture; `None` when the request had no body.
    request: Option<Arc<Mutex<Capture>>>,
    /// A `blocking-strict` request whose `request_received` event could not be made durable.
    refused: bool,
}

/// The bytes of one body as it streamed past, the first `keep` of them kept, and the type
/// they are read as.
#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    size: u64,
    keep: usize,
    overflowed: bool,
    /// Read from `headers` only when something is kept: at metadata level (most requests) the
    /// body's type is never looked at.
    kind: BodyType,
}

impl Capture {
    fn new(keep: usize, headers: &HeaderMap) -> Capture {
        Capture {
            keep,
            kind: if keep > 0 {
                BodyType::of(headers)
            } else {
                BodyType::default()
            },
            ..Capture::default()
        }
    }

    fn take(&mut self, data: &[u8]) {
        self.size += data.len() as u64;
        if self.overflowed || self.keep == 0 {
            return;
        }
        if self.bytes.len() + data.len() > self.keep {
            self.overflowed = true;
            self.bytes = Vec::new();
        } else {
            self.bytes.extend_from_slice(data);
        }
    }

    /// The redacted body, or why there is none.
    fn redacted(&self, notes: &mut Notes) -> redact::Body {
        if self.overflowed {
            return redact::Body::Dropped("dropped_too_large");
        }
        redact::body(
            &self.bytes,
            self.kind.content_type.as_deref(),
            self.kind.content_encoding.as_deref(),
            notes,
        )
    }
}

#[derive(Default, Clone)]
struct BodyType {
    content_type: Option<String>,
    content_encoding: Option<String>,
}

impl BodyType {
    fn of(headers: &HeaderMap) -> BodyType {
        let get = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        BodyType {
            content_type: get(header::CONTENT_TYPE),
            content_encoding: get(header::CONTENT_ENCODING),
        }
    }
}

impl RequestAudit {
    /// Starts auditing a request the policy decided to audit (`decision.level` is not `None`),
    /// and returns the request with its body teed as the level requires.
    pub fn begin(
        trail: Arc<AuditTrail>,
        plan: Plan<'_>,
        request: Request<hyper::body::Incoming>,
        ctx: &RequestContext,
    ) -> (RequestAudit, Request<RequestBody>) {
        let Plan {
            decision,
            route,
            important,
            durable,
            admin_actor,
            api_key_header,
        } = plan;
        let (parts, body) = request.into_parts();
        let mut notes = Notes::default();
        let headers = &parts.headers;
        let (actor_kind, auth_method) = claimed_actor(headers, api_key_header);
        let user_agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let user_agent = redact::text(user_agent, &mut notes);
        let path = redact::text(parts.uri.path(), &mut notes);
        let query = parts.uri.query().map(|q| redact::query(q, &mut notes));
        let user_agent = redact::capped(user_agent, redact::MAX_USER_AGENT, &mut notes);
        let path = redact::capped(path, redact::MAX_PATH, &mut notes);
        let query = query.map(|q| redact::capped(q, redact::MAX_QUERY, &mut notes));
        let kept = redact::headers(headers, &["user-agent", "x-request-id"], &mut notes);
        // The sealed client facts.
        let mut client = Vec::with_capacity(256);
        Object::write(&mut client, |facts| {
            facts
                .text("address", &ctx.client_address)
                .object("headers", |headers| {
                    for (name, value) in &kept {
                        headers.text(name, value);
                    }
                })
                .text("path", &path)
                .text_or_null("query", query.as_deref())
                .text("request_id", &ctx.request_id)
                .text("user_agent", &user_agent);
        });
        let keep = if decision.level >= Level::Request {
            redact::MAX_BODY
        } else {
            0
        };
        // A request without a body (most of them) needs no tee at all.
        let capture =
            (!body.is_end_stream()).then(|| Arc::new(Mutex::new(Capture::new(keep, headers))));
        let pending = Pending {
            trail,
            important,
            durable,
            started: ctx.started,
            method: parts.method.clone(),
            route,
            version: parts.version,
            client_ip: ctx.client_ip,
            client_address: ctx.client_address.clone(),
            actor_kind,
            auth_method,
            admin_actor,
            client,
            notes,
            request: capture.clone(),
            decision,
            refused: false,
        };
        let body = match capture {
            Some(capture) => Tee {
                inner: body,
                capture,
            }
            .boxed(),
            None => body.boxed(),
        };
        (
            RequestAudit {
                pending: Some(pending),
            },
            Request::from_parts(parts, body),
        )
    }

    /// Whether the request may go on only once its `request_received` event is on disk.
    pub fn is_strict(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.decision.durability == Durability::BlockingStrict)
    }

    /// Writes and flushes the `request_received` event of a `blocking-strict` request, within
    /// `audit.strict_timeout_ms`: false if it is not on disk, and then the request must not go
    /// on (its completion event will say `audit_unavailable`).
    pub async fn record_received(&mut self) -> bool {
        let pending = self.pending.as_mut().expect("not answered yet");
        let draft = pending.received_draft();
        let trail = pending.trail.clone();
        let on_disk = trail
            .record_durably(draft, trail.config.strict_timeout)
            .await;
        pending.refused = !on_disk;
        on_disk
    }

    /// Completes the answer: durable events are written and flushed before it is sent;
    /// the others are handed to the response body, which records them when it ends.
    pub async fn answer(mut self, response: Response<Body>) -> Response<Body> {
        if self.pending.as_ref().is_some_and(|p| p.durable) {
            // Boxed: this path is rare (admin changes), and its future, inlined, would make
            // every audited request's future larger and so slower to move.
            Box::pin(self.finish_before_answer(&response, None)).await;
            return response;
        }
        let pending = self.pending.take().expect("answered once");
        let keep = if pending.decision.level >= Level::RequestResponse {
            redact::MAX_BODY
        } else {
            0
        };
        let capture = Capture::new(keep, response.headers());
        let status = response.status().as_u16();
        response.map(|inner| {
            AuditedBody {
                inner,
                capture,
                status,
                pending: Some(pending),
                ended: false,
            }
            .boxed()
        })
    }

    /// Completes the answer to a request whose handler panicked: the event (reason `panic`)
    /// is on disk before the 500 is sent, whatever the plan.
    pub async fn answer_panicked(mut self, response: Response<Body>) -> Response<Body> {
        Box::pin(self.finish_before_answer(&response, Some("panic"))).await;
        response
    }

    /// Records the event of a complete answer and waits until it is on disk: admin changes
    /// are durable before the client hears of them.
    async fn finish_before_answer(
        &mut self,
        response: &Response<Body>,
        reason: Option<&'static str>,
    ) {
        let pending = self.pending.take().expect("answered once");
        let size = response.body().size_hint().exact().unwrap_or(0);
        let trail = pending.trail.clone();
        let draft = pending.draft(response.status().as_u16(), size, None, reason);
        trail.record(draft).await;
        trail.flush().await;
    }
}

impl Drop for RequestAudit {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            pending.record(499, 0, None, Some("client_closed"));
        }
    }
}

impl Pending {
    fn record(
        self,
        status: u16,
        response_size: u64,
        response: Option<redact::Body>,
        reason: Option<&'static str>,
    ) {
        let trail = self.trail.clone();
        let draft = self.draft(status, response_size, response, reason);
        trail.record_detached(draft);
    }

    /// The header fields every event of this request has.
    fn common(&self, stream: Stream, event_type: &str, outcome: &str) -> Draft {
        let draft = Draft::new(
            stream,
            event_type,
            outcome,
            &crate::request_context::new_request_id(),
            SystemTime::now(),
        )
        .text("level", self.decision.level.as_str())
        .text("action", policy::action(&self.method))
        .object("actor", |actor| {
            actor
                .text("auth_method", self.auth_method)
                .text("kind", self.actor_kind);
        })
        .object("client", |client| {
            client.text("net", &network(self.client_ip));
        });
        if self.decision.rule == "default" {
            return draft;
        }
        draft.object("annotations", |annotations| {
            annotations.text("rule", &self.decision.rule);
        })
    }

    /// The event of a `blocking-strict` request as it arrived, before anything was done with
    /// it: what is known then (no status, sizes or duration), and the sealed client facts.
    fn received_draft(&self) -> Draft {
        self.common(self.decision.stream, &self.decision.event, "unknown")
            .text("stage", "request_received")
            .object("http", |http| {
                http.text("method", method_name(&self.method))
                    .text("protocol_version", version(self.version))
                    .text("route", &self.route);
            })
            .part_json(Role::Client, Some(self.ip_subject()), self.client.clone())
    }

    /// The client's address as the subject its parts are sealed for.
    fn ip_subject(&self) -> Subject {
        Subject {
            kind: IdKind::Ip,
            value: self.client_address.clone(),
        }
    }

    fn draft(
        mut self,
        status: u16,
        response_size: u64,
        response: Option<redact::Body>,
        reason: Option<&'static str>,
    ) -> Draft {
        let (event_type, stream, mut outcome) = policy::outcome(&self.decision, status);
        let reason = reason.or(self.refused.then_some("audit_unavailable"));
        if reason.is_some() {
            outcome = "failure";
        }
        let reason = reason
            .map(str::to_string)
            .or_else(|| (status >= 400).then(|| format!("http_{status}")));
        let captures_bodies = self.decision.level >= Level::Request;
        let (request_size, request_body) = match &self.request {
            Some(capture) => {
                let request = capture.lock().unwrap_or_else(|p| p.into_inner());
                let body = captures_bodies.then(|| request.redacted(&mut self.notes));
                (request.size, body)
            }
            None => (0, captures_bodies.then_some(redact::Body::Dropped("none"))),
        };
        let mut draft = self
            .common(stream, event_type, outcome)
            .object("http", |http| {
                http.text("method", method_name(&self.method))
                    .text("protocol_version", version(self.version))
                    .number("request_body_size", request_size)
                    .number("response_body_size", response_size)
                    .text("route", &self.route)
                    .number("status_code", u64::from(status));
            })
            .typed("duration_us", &(self.started.elapsed().as_micros() as u64));
        if let Some(reason) = &reason {
            draft = draft.typed("reason", reason);
        }
        let ip = self.ip_subject();
        if request_body.is_some() || response.is_some() {
            draft = draft.object("body", |markers| {
                if let Some(request) = &request_body {
                    markers.text("request", request.marker());
                }
                if let Some(response) = &response {
                    markers.text("response", response.marker());
                }
            });
        }
        if !self.notes.is_empty() {
            draft = draft.typed("redactions", &self.notes);
        }
        match self.admin_actor {
            Some(actor) => {
                // Admin events: the operator is the subject of every part; what they sent is
                // kept as long as the security stream keeps personal data, not as a body.
                let subject = Subject {
                    kind: IdKind::UserId,
                    value: actor.clone(),
                };
                let details = json!({"request": captured(request_body)});
                draft = draft
                    .part(
                        Role::Actor,
                        Some(subject.clone()),
                        json!({"user_id": actor}),
                    )
                    .part_json(Role::Client, Some(subject.clone()), self.client)
                    .part(Role::Details, Some(subject), details);
            }
            None => {
                draft = draft.part_json(Role::Client, Some(ip.clone()), self.client);
                if request_body.is_some() || response.is_some() {
                    let bodies =
                        json!({"request": captured(request_body), "response": captured(response)});
                    draft = draft.part(Role::Body, Some(ip), bodies);
                }
            }
        }
        if self.important {
            draft = draft.important();
        }
        draft
    }
}

fn captured(body: Option<redact::Body>) -> Value {
    match body {
        Some(redact::Body::Captured(value)) => value,
        _ => Value::Null,
    }
}

/// Who the request claims to be, from how it authenticates: never who exactly.
fn claimed_actor(
    headers: &HeaderMap,
    api_key_header: Option<&str>,
) -> (&'static str, &'static str) {
    if api_key_header.is_some_and(|name| headers.contains_key(name)) {
        return ("service", "api_key");
    }
    match redact::auth_scheme(headers) {
        "none" if headers.contains_key(header::COOKIE) => ("user", "session"),
        "none" => ("anonymous", "none"),
        "basic" | "digest" => ("user", "password"),
        "bearer" => ("user", "bearer"),
        _ => ("user", "other"),
    }
}

/// The client's network: IPv4 /16, IPv6 /32, which is not personal data on its own
/// (research/audit.md §1.3).
pub fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            // Every audited request's header has one: built without the formatting machinery.
            let [a, b, _, _] = v4.octets();
            let mut net = String::with_capacity(15);
            crate::ip_text::push_octet(&mut net, a);
            net.push('.');
            crate::ip_text::push_octet(&mut net, b);
            net.push_str(".0.0/16");
            net
        }
        IpAddr::V6(v6) => {
            let segments = v6.segments();
            format!("{:x}:{:x}::/32", segments[0], segments[1])
        }
    }
}

/// The method as OpenTelemetry records it: extension methods are `_OTHER`.
fn method_name(method: &Method) -> &str {
    match *method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS
        | Method::CONNECT
        | Method::TRACE => method.as_str(),
        _ => "_OTHER",
    }
}

fn version(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// The request body on its way to the service, counted and (at `request` level) copied.
struct Tee<B> {
    inner: B,
    capture: Arc<Mutex<Capture>>,
}

impl<B> HttpBody for Tee<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.capture
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body on its way to the client; records the event when it ends or is dropped.
pub struct AuditedBody {
    inner: Body,
    capture: Capture,
    status: u16,
    pending: Option<Pending>,
    ended: bool,
}

impl AuditedBody {
    fn finish(&mut self, complete: bool) {
        let Some(mut pending) = self.pending.take() else {
            return;
        };
        let response = (pending.decision.level >= Level::RequestResponse).then(|| {
            if complete {
                self.capture.redacted(&mut pending.notes)
            } else {
                redact::Body::Dropped("dropped_incomplete")
            }
        });
        let reason = (!complete).then_some("client_closed");
        pending.record(self.status, self.capture.size, response, reason);
    }
}

impl HttpBody for AuditedBody {
    type Data = Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.capture.take(data);
                }
            }
            Poll::Ready(None) => {
                self.ended = true;
                self.finish(true);
            }
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // hyper may drop an empty body (HEAD, 204, 304) without polling it to its end.
        let complete = self.ended || self.inner.is_end_stream();
        self.finish(complete);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_truncated() {
        assert_eq!(network("203.0.113.77".parse().unwrap()), "203.0.0.0/16");
        for a in 0..=255u8 {
            let b = a.wrapping_mul(7);
            let ip = IpAddr::from([a, b, 1, 2]);
            assert_eq!(network(ip), format!("{a}.{b}.0.0/16"));
        }
        assert_eq!(
            network("2001:db8:1234::1".parse().unwrap()),
            "2001:db8::/32"
        );
    }

    #[test]
    fn captures_keep_a_prefix_or_nothing() {
        let mut capture = Capture::new(4, &HeaderMap::new());
        capture.take(b"ab");
        capture.take(b"cd");
        assert_eq!(
            (capture.bytes.as_slice(), capture.size, capture.overflowed),
            (&b"abcd"[..], 4, false)
        );
        capture.take(b"e");
        assert_eq!(
            (capture.bytes.len(), capture.size, capture.overflowed),
            (0, 5, true)
        );
        let mut notes = Notes::default();
        assert_eq!(
            capture.redacted(&mut notes),
            redact::Body::Dropped("dropped_too_large")
        );
    }

    #[test]
    fn actors_are_claimed_from_credentials_without_identity() {
        let mut headers = HeaderMap::new();
        assert_eq!(claimed_actor(&headers, None), ("anonymous", "none"));
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(claimed_actor(&headers, None), ("user", "bearer"));
        headers.insert("x-api-key", "k".parse().unwrap());
        assert_eq!(
            claimed_actor(&headers, Some("x-api-key")),
            ("service", "api_key")
        );
    }
}
