//! Who is asking: the request id, the client's address and the scheme it used.
//!
//! The client address is the socket peer unless the peer is a configured trusted proxy; only
//! then are `Fly-Client-IP`, `X-Forwarded-For` and `X-Forwarded-Proto` believed. Everything that
//! keys on a client (rate limits, flag stickiness, audit) reads [`RequestContext::client_ip`] and
//! never a header directly.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use http::HeaderMap;
use http::header::HeaderName;
use ipnet::IpNet;

use crate::flags::Context;
use crate::hex;

/// The longest client-supplied request id that is propagated rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

// Constants, so that a lookup does not parse the name each time.
pub const FLY_CLIENT_IP: HeaderName = HeaderName::from_static("fly-client-ip");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Facts about one request, fixed when it arrives.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub peer: SocketAddr,
    pub client_ip: IpAddr,
    /// `client_ip` as text, formatted once: flags, OFREP and audit all need it.
    pub client_address: String,
    /// `http` or `https`, as the original client used it.
    pub scheme: &'static str,
    /// Whether the socket peer is a trusted proxy (its forwarding headers were believed).
    pub peer_trusted: bool,
    /// The client's stickiness and quota key: its IPv4 address, or its IPv6 /56 network (one
    /// subscriber's allocation), so one client cannot spread over many keys.
    pub client_key: String,
    /// What seawall's own flag decisions about this request see (feature flags, route flags):
    /// the client key as `userId`, the client address as `remoteAddress`. Built once, since a
    /// request asks several flags.
    pub flag_context: Context,
    pub started: Instant,
}

impl RequestContext {
    pub fn new(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> RequestContext {
        let peer_ip = peer.ip().to_canonical();
        let peer_trusted = is_trusted(peer_ip, trusted);
        let (client_ip, scheme) = if peer_trusted {
            (
                forwarded_client(headers, trusted).unwrap_or(peer_ip),
                forwarded_scheme(headers),
            )
        } else {
            (peer_ip, "http")
        };
        let client_address = crate::ip_text::address(client_ip);
        let client_key = address_key(client_ip, &client_address);
        RequestContext {
            request_id: request_id(headers),
            peer,
            flag_context: flag_context(&client_key, &client_address),
            client_key,
            client_ip,
            client_address,
            scheme,
            peer_trusted,
            started: Instant::now(),
        }
    }
}

impl RequestContext {
    /// Keys the client by its API key instead of its address when it presents `header`: a
    /// hash of the whole key, so keys never appear in logs and prefixes never collide.
    pub fn keyed_by_api_key(mut self, headers: &HeaderMap, header: &str) -> RequestContext {
        if let Some(key) = headers
            .get(header)
            .map(|v| v.as_bytes())
            .filter(|k| !k.is_empty())
        {
            let digest = ring::digest::digest(&ring::digest::SHA256, key);
            self.client_key = format!("key:{}", hex::encode(&digest.as_ref()[..8]));
            self.flag_context = flag_context(&self.client_key, &self.client_address);
        }
        self
    }
}

fn flag_context(client_key: &str, client_address: &str) -> Context {
    Context {
        user_id: Some(client_key.to_string()),
        remote_address: Some(client_address.to_string()),
        ..Context::default()
    }
}

/// IPv4 addresses as they are (`text` is `ip` formatted); IPv6 addresses grouped by their /56
/// network.
fn address_key(ip: IpAddr, text: &str) -> String {
    match ip {
        IpAddr::V4(_) => text.to_string(),
        IpAddr::V6(v6) => match ipnet::Ipv6Net::new(v6, 56) {
            Ok(net) => net.trunc().to_string(),
            Err(_) => text.to_string(),
        },
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// `Fly-Client-IP` first; else the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy (entries to its left can be forged by the client).
fn forwarded_client(headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    if let Some(ip) = headers
        .get(FLY_CLIENT_IP)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_ip)
    {
        return Some(ip);
    }
    let chain: Vec<IpAddr> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(parse_ip)
        .collect::<Option<Vec<_>>>()?;
    chain
        .iter()
        .rev()
        .find(|ip| !is_trusted(**ip, trusted))
        .or(chain.first())
        .copied()
}

fn forwarded_scheme(headers: &HeaderMap) -> &'static str {
    match headers.get(X_FORWARDED_PROTO).map(|v| v.as_bytes()) {
        Some(b"https") => "https",
        _ => "http",
    }
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim()
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client's `X-Request-Id` when it is short and plain, else a new random id.
fn request_id(headers: &HeaderMap) -> String {
    let given = headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok());
    match given {
        Some(id)
            if !id.is_empty()
                && id.len() <= MAX_REQUEST_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => new_request_id(),
    }
}

/// 128 random bits as 32 hex digits.
pub fn new_request_id() -> String {
    hex::encode(&rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(peer: &str, headers: &[(&'static str, &str)], trusted: &[&str]) -> RequestContext {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(*k, v.parse().unwrap());
        }
        let trusted: Vec<IpNet> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        RequestContext::new(peer.parse().unwrap(), &map, &trusted)
    }

    #[test]
    fn untrusted_peers_cannot_claim_another_address() {
        let c = ctx(
            "203.0.113.9:5000",
            &[("x-forwarded-for", "1.2.3.4"), ("fly-client-ip", "1.2.3.4")],
            &[],
        );
        assert_eq!(c.client_ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(c.scheme, "http");
    }

    #[test]
    fn trusted_peers_forward_the_client_address() {
        let trusted = ["10.0.0.0/8"];
        let c = ctx(
            "10.0.0.2:5000",
            &[
                ("fly-client-ip", "198.51.100.7"),
                ("x-forwarded-proto", "https"),
            ],
            &trusted,
        );
        assert_eq!(c.client_ip, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(c.scheme, "https");
        let c = ctx(
            "10.0.0.2:5000",
            &[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.5")],
            &trusted,
        );
        assert_eq!(
            c.client_ip,
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "right-most untrusted entry"
        );
        let c = ctx("10.0.0.2:5000", &[("x-forwarded-for", "garbage")], &trusted);
        assert_eq!(
            c.client_ip,
            "10.0.0.2".parse::<IpAddr>().unwrap(),
            "unparseable chain falls back to the peer"
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_56_network() {
        let a = ctx("[2001:db8:aa:bb01::1]:80", &[], &[]);
        let b = ctx("[2001:db8:aa:bbff:1:2:3:4]:80", &[], &[]);
        assert_eq!(a.client_key, "2001:db8:aa:bb00::/56");
        assert_eq!(a.client_key, b.client_key);
        assert_eq!(ctx("192.0.2.1:80", &[], &[]).client_key, "192.0.2.1");
    }

    #[test]
    fn api_keys_replace_the_address_as_the_client_key() {
        let keyed = ctx("192.0.2.1:80", &[("x-api-key", "secret-key-1")], &[]).keyed_by_api_key(
            &[("x-api-key", "secret-key-1")]
                .iter()
                .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
                .collect(),
            "x-api-key",
        );
        assert!(
            keyed.client_key.starts_with("key:") && keyed.client_key.len() == 20,
            "{}",
            keyed.client_key
        );
        assert!(!keyed.client_key.contains("secret"));
        let plain = ctx("192.0.2.1:80", &[], &[]).keyed_by_api_key(&HeaderMap::new(), "x-api-key");
        assert_eq!(plain.client_key, "192.0.2.1");
    }

    #[test]
    fn ipv4_mapped_peers_are_canonical() {
        let c = ctx("[::ffff:192.0.2.1]:80", &[], &[]);
        assert_eq!(c.client_ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn request_ids_are_propagated_only_when_plain() {
        assert_eq!(
            ctx("1.1.1.1:1", &[("x-request-id", "abc-123")], &[]).request_id,
            "abc-123"
        );
        let replaced = ctx("1.1.1.1:1", &[("x-request-id", "has space")], &[]).request_id;
        assert_eq!(replaced.len(), 32);
        assert_ne!(new_request_id(), new_request_id());
    }
}
