//! Forwarding one request to an HTTP upstream and its answer back, both bodies streamed.
//!
//! This module owns the header rules of a reverse proxy: hop-by-hop headers removed in both
//! directions, `Host` rewritten to the upstream, `X-Forwarded-For/-Proto/-Host` and
//! `X-Request-Id` added, forwarding headers from untrusted peers discarded. Pooling, slots and
//! timeouts belong to `upstream`; which route and upstream to use is decided by `router`.

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};

use crate::body::{Body, RequestBody};
use crate::error::Error;
use crate::request_context::{
    FLY_CLIENT_IP, RequestContext, X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID,
};
use crate::route::{self, Route};
use crate::tunnel::Tunnels;
use crate::upstream::{CallOptions, Upstream, UpstreamError};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// non-standard ones that proxies conventionally treat the same way.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Forwarding headers only a trusted proxy may send: the client's own are dropped.
const CLIENT_FORWARDING: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    FLY_CLIENT_IP,
    header::FORWARDED,
];

/// Sends `request` to `upstream` for `route` and returns the upstream's response. A request
/// to switch to one of the route's `upgrades` keeps its `Upgrade`, and when the upstream
/// answers 101 the two connections are handed to `tunnels` to be joined.
pub async fn forward(
    upstream: &Upstream,
    route: &Route,
    mut request: Request<RequestBody>,
    ctx: &RequestContext,
    options: CallOptions,
    tunnels: &Arc<Tunnels>,
) -> Result<Response<Body>, Error> {
    let limit = route.config.max_body_bytes;
    if declared_length(request.headers()).is_some_and(|length| length > limit) {
        return Err(Error::PayloadTooLarge { limit });
    }
    let upgrade = match requested_upgrade(request.headers(), &route.config.upgrades) {
        Some(protocols) => {
            let slot = tunnels.reserve().ok_or(Error::UpgradesFull)?;
            Some((protocols, slot, hyper::upgrade::on(&mut request)))
        }
        None => None,
    };
    let (mut parts, body) = request.into_parts();
    // The upstream hop is HTTP/1.1 whatever the client spoke: an HTTP/1.0 request passed on
    // as such would have the upstream close the pooled connection after answering.
    parts.version = Version::HTTP_11;
    let path = route::upstream_path(&route.config, parts.uri.path());
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    parts.uri = upstream
        .uri_for(&path_and_query)
        .map_err(|e| Error::BadRequest(format!("the request path cannot be forwarded: {e}")))?;
    rewrite_request_headers(&mut parts.headers, ctx);
    parts.headers.insert(header::HOST, upstream.host().clone());
    if let Some((protocols, ..)) = &upgrade {
        set_upgrade(&mut parts.headers, protocols.clone());
    }
    let body = Limited::new(body, limit as usize).boxed();
    let mut response = upstream
        .call(Request::from_parts(parts, body), options)
        .await
        .map_err(|e| upstream_error(&upstream.config.name, e, limit))?;
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let protocol = response.headers().get(header::UPGRADE).cloned();
    remove_hop_by_hop(response.headers_mut());
    match (upgrade, protocol) {
        (Some((_, slot, client)), Some(protocol)) if switched => {
            let upstream_side = hyper::upgrade::on(&mut response);
            tunnels.open(slot, client, upstream_side);
            set_upgrade(response.headers_mut(), protocol);
            // A 101 has no body; an empty one lets the response end (and its audit event be
            // recorded) as soon as the head is written.
            Ok(response.map(|_| crate::body::empty()))
        }
        // A 101 that answers no allowed upgrade cannot be passed on: the client would switch
        // protocols with nothing joined behind it.
        _ if switched => Err(Error::UpstreamUnavailable {
            upstream: upstream.config.name.clone(),
            detail: "answered 101 Switching Protocols to a request that did not ask to switch"
                .to_string(),
        }),
        _ => Ok(response),
    }
}

/// The protocols of a request's `Upgrade` that `allowed` names, if it asks to switch
/// (`Connection: upgrade` and an `Upgrade` header) to at least one of them.
fn requested_upgrade(headers: &HeaderMap, allowed: &[String]) -> Option<HeaderValue> {
    if allowed.is_empty() || !connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    let wanted: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|protocol| {
            // A protocol may carry a version: `websocket`, `foo/2`.
            let name = protocol.split('/').next().unwrap_or_default();
            allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
        })
        .collect();
    if wanted.is_empty() {
        return None;
    }
    HeaderValue::from_str(&wanted.join(", ")).ok()
}

/// The comma-separated tokens of every `Connection` header.
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// `Connection: upgrade` and `Upgrade`, put back after the hop-by-hop headers went.
fn set_upgrade(headers: &mut HeaderMap, protocols: HeaderValue) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, protocols);
}

fn upstream_error(name: &str, error: UpstreamError, limit: u64) -> Error {
    let upstream = name.to_string();
    match error {
        UpstreamError::QueueFull | UpstreamError::SlotTimeout => Error::UpstreamBusy { upstream },
        UpstreamError::CircuitOpen(rejected) => Error::CircuitOpen {
            breaker: upstream,
            retry_after: rejected.retry_after,
        },
        UpstreamError::Connect(detail) | UpstreamError::Failed(detail) => {
            Error::UpstreamUnavailable { upstream, detail }
        }
        UpstreamError::Timeout(timeout) => Error::UpstreamTimeout { upstream, timeout },
        UpstreamError::BodyTooLarge => Error::PayloadTooLarge { limit },
        UpstreamError::ClientBody => Error::BadRequest(
            "The request body could not be read: its framing is malformed or it ended early."
                .to_string(),
        ),
        UpstreamError::ClientStalled(timeout) => Error::ClientBodyTimeout(timeout),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn rewrite_request_headers(headers: &mut HeaderMap, ctx: &RequestContext) {
    remove_hop_by_hop(headers);
    let original_host = headers.remove(header::HOST);
    if !ctx.peer_trusted {
        // Only a trusted proxy may tell the upstream who the client is.
        remove_where(headers, |name| CLIENT_FORWARDING.contains(name));
    }
    let peer = crate::ip_text::address(ctx.peer.ip().to_canonical());
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{chain}, {peer}"),
        None => peer,
    };
    set(headers, X_FORWARDED_FOR, &forwarded_for);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.scheme));
    if let Some(host) = original_host
        && !headers.contains_key(&X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    set(headers, X_REQUEST_ID, &ctx.request_id);
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Removes hop-by-hop headers, including any that `Connection` names. One look at each
/// header and at each token, so the work grows with the message, not with headers times
/// tokens; tokens naming a hop-by-hop header (`keep-alive`, `upgrade`) are not parsed again.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    if doomed.contains(&header::CONNECTION) {
        let named = connection_tokens(headers)
            .filter(|token| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| token.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok());
        doomed.extend(named);
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Removes the headers whose name is `doomed`. A message has a few headers, so one look at
/// each costs less than removing every name that might be there, each removal hashing it.
fn remove_where(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| doomed(name))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(peer: &str, headers: &HeaderMap, trusted: &[&str]) -> RequestContext {
        let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        RequestContext::new(peer.parse().unwrap(), headers, &trusted)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn upgrades_are_kept_only_for_allowed_protocols_with_connection_upgrade() {
        let allowed = ["websocket".to_string()];
        let ask = |pairs: &[(&'static str, &str)]| requested_upgrade(&headers(pairs), &allowed);
        let websocket = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ];
        assert_eq!(ask(&websocket).unwrap(), "WebSocket");
        assert_eq!(requested_upgrade(&headers(&websocket), &[]), None);
        assert_eq!(
            ask(&[("upgrade", "websocket")]),
            None,
            "no Connection: upgrade"
        );
        assert_eq!(ask(&[("connection", "upgrade")]), None, "no Upgrade");
        let offered = [
            ("connection", "upgrade"),
            ("upgrade", "h2c, websocket/13, foo"),
        ];
        assert_eq!(ask(&offered).unwrap(), "websocket/13");
        assert_eq!(ask(&[("connection", "upgrade"), ("upgrade", "h2c")]), None);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "close, X-Secret"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
            ("x-kept", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // Tokens from every `Connection` value, trimmed, in any case; one that is no header
        // name is ignored.
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("connection", " X-One ,x-two, not a name"),
            ("x-one", "1"),
            ("x-two", "2"),
            ("x-kept", "1"),
        ]);
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);

        // Every hop-by-hop name goes, with all its values; nothing else does.
        let mut h = headers(&[("x-kept", "1"), ("accept", "*/*")]);
        for name in &HOP_BY_HOP {
            h.append(name, HeaderValue::from_static("a"));
            h.append(name, HeaderValue::from_static("b"));
        }
        remove_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept", "accept"]);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut h = headers(&[
            ("host", "example.com"),
            ("x-forwarded-for", "6.6.6.6"),
            ("fly-client-ip", "6.6.6.6"),
        ]);
        let c = ctx("203.0.113.1:4000", &h, &[]);
        rewrite_request_headers(&mut h, &c);
        assert_eq!(h["x-forwarded-for"], "203.0.113.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com");
        assert!(!h.contains_key("fly-client-ip"));
        assert!(
            !h.contains_key("host"),
            "the client sets Host from the upstream URI"
        );
        assert_eq!(h["x-request-id"], c.request_id.as_str());
    }

    #[test]
    fn trusted_chains_are_extended() {
        let mut h = headers(&[
            ("x-forwarded-for", "198.51.100.7"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = ctx("10.1.2.3:4000", &h, &["10.0.0.0/8"]);
        rewrite_request_headers(&mut h, &c);
        assert_eq!(h["x-forwarded-for"], "198.51.100.7, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
