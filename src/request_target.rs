//! The request target in the one form that every later step sees.
//!
//! Routes, route flags, rate-limit policies and audit rules are chosen by path, and the upstream
//! serves by path. If the two read a path differently, a request can match a lenient route and
//! reach a guarded resource (`/public/../admin`, `/public/%2e%2e/admin`). So before the proxy
//! listener classifies a request, [`canonicalize`] puts its path in RFC 3986 §6.2.2 normal form
//! (percent-encoded unreserved characters decoded, so `%2e` is a dot; dot segments removed) and
//! refuses a backslash (no URI may hold one, and WHATWG URL parsers, Node's among them, read it
//! as `/`). It also enforces RFC 9112 §3.2's Host rules: one valid `Host`, required in HTTP/1.1,
//! and the authority of an absolute-form target in its place when there is one. `CONNECT`,
//! whose target is a host to tunnel to rather than a resource, is refused. Matching,
//! forwarding, audit and logs then all see the path that was matched. Encoded slashes (`%2F`)
//! and other reserved characters are left as they are. What a path means is `route`'s business.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Uri, Version};

/// Why a request target cannot be served; the message is for the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

/// Puts `request`'s target into canonical form in place, or says why it is refused.
pub fn canonicalize<B>(request: &mut Request<B>) -> Result<(), Refused> {
    if request.method() == Method::CONNECT {
        // A tunnel to wherever the client names is a forward proxy's job; passed on, the
        // upstream's refusal would count against its breaker.
        return Err(Refused(
            "seawall is a reverse proxy and opens no tunnels: CONNECT is not served.",
        ));
    }
    let absolute = request.uri().authority().cloned();
    match &absolute {
        Some(authority) => {
            // RFC 9110 §4.2.4: user information in an http(s) URI is an error.
            if authority.as_str().contains('@') {
                return Err(Refused(
                    "The request target carries user information, which HTTP does not allow.",
                ));
            }
            // RFC 9112 §3.2.2: the target's authority wins over any Host header.
            let host = HeaderValue::from_str(authority.as_str())
                .map_err(|_| Refused("The request target's authority is not a valid host."))?;
            request.headers_mut().insert(header::HOST, host);
        }
        None => check_host(request.headers(), request.version())?,
    }
    let uri = request.uri();
    if !uri.path().starts_with('/') {
        // `OPTIONS *`: no path to put in order.
        return Ok(());
    }
    let path = normalize_path(uri.path())?;
    if matches!(path, Cow::Borrowed(_)) && absolute.is_none() {
        return Ok(());
    }
    let origin_form = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.into_owned(),
    };
    *request.uri_mut() = Uri::try_from(origin_form)
        .map_err(|_| Refused("The request path cannot be put in normal form."))?;
    Ok(())
}

fn check_host(headers: &HeaderMap, version: Version) -> Result<(), Refused> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == Version::HTTP_11 => {
            Err(Refused("An HTTP/1.1 request needs a Host header."))
        }
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(Refused("The request has more than one Host header.")),
        (Some(host), None) if valid_host(host.as_bytes()) => Ok(()),
        (Some(_), None) => Err(Refused("The Host header is not a valid host[:port].")),
    }
}

/// RFC 9110 §7.2: `Host = uri-host [ ":" port ]`, or empty when the target has no authority.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                let literal_ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                if !literal_ok {
                    return false;
                }
                match &value[end + 1..] {
                    [] => (&[][..], None),
                    [b':', port @ ..] => (&[][..], Some(port)),
                    _ => return false,
                }
            }
            None => return false,
        },
        _ => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        },
    };
    let reg_name = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
    reg_name && port.is_none_or(|port| port.iter().all(u8::is_ascii_digit))
}

/// `path` in RFC 3986 normal form: percent-encoded unreserved characters decoded, then dot
/// segments removed (§5.2.4). Borrowed when it already was.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, Refused> {
    if path.contains('\\') {
        return Err(Refused(
            "The request path holds a backslash, which no URI may hold; send it as %5C.",
        ));
    }
    let decoded = decode_unreserved(path);
    Ok(match remove_dot_segments(&decoded) {
        Some(resolved) => Cow::Owned(resolved),
        None => decoded,
    })
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `%41` is `A` and `%2e` is `.` (RFC 3986 §2.3); other percent-encodings, valid or not, stay.
fn decode_unreserved(path: &str) -> Cow<'_, str> {
    let bytes = path.as_bytes();
    let decodable = |i: usize| -> Option<u8> {
        if bytes[i] != b'%' {
            return None;
        }
        let byte = (hex_value(*bytes.get(i + 1)?)? << 4) | hex_value(*bytes.get(i + 2)?)?;
        is_unreserved(byte).then_some(byte)
    };
    let Some(first) = (0..bytes.len()).find(|&i| decodable(i).is_some()) else {
        return Cow::Borrowed(path);
    };
    let mut out = String::with_capacity(path.len());
    out.push_str(&path[..first]);
    let mut i = first;
    while i < bytes.len() {
        match decodable(i) {
            Some(byte) => {
                out.push(byte as char);
                i += 3;
            }
            None => {
                // Up to the next `%`: `i` and that `%` are both on character boundaries.
                let next = bytes[i + 1..]
                    .iter()
                    .position(|&b| b == b'%')
                    .map_or(bytes.len(), |n| i + 1 + n);
                out.push_str(&path[i..next]);
                i = next;
            }
        }
    }
    Cow::Owned(out)
}

/// The path without `.` and `..` segments, or `None` when it has none. A trailing dot segment
/// leaves a trailing slash (`/a/b/..` is `/a/`); `..` above the root stays at the root.
fn remove_dot_segments(path: &str) -> Option<String> {
    let is_dot = |segment: &str| segment == "." || segment == "..";
    if !path.split('/').any(is_dot) {
        return None;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut kept: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                kept.pop();
            }
            other => {
                kept.push(other);
                continue;
            }
        }
        if last {
            kept.push("");
        }
    }
    Some(format!("/{}", kept.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> String {
        normalize_path(path).unwrap().into_owned()
    }

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_does() {
        // RFC 3986 §5.4 examples, as paths.
        for (path, expected) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/b/c/../../../g", "/g"),
            ("/a/b/c/../../../../g", "/g"),
            ("/a/b/./g", "/a/b/g"),
            ("/a/b/../g", "/a/g"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/../", "/a/"),
            ("/..", "/"),
            ("/.", "/"),
            ("/a/g.", "/a/g."),
            ("/a/..g", "/a/..g"),
            ("/a//../b", "/a/b"),
            ("/public/../admin/users", "/admin/users"),
        ] {
            assert_eq!(normal(path), expected, "{path}");
        }
    }

    #[test]
    fn encoded_dots_are_dots_and_unreserved_characters_are_decoded() {
        for (path, expected) in [
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E./admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/public/%2e/admin", "/public/admin"),
            ("/%61pi/%7Euser", "/api/~user"),
            // Reserved and non-ASCII encodings stay, as do broken ones.
            ("/a%2Fb/%3F/%C3%A9", "/a%2Fb/%3F/%C3%A9"),
            ("/a%2/b%zz/%", "/a%2/b%zz/%"),
            ("/caf%C3%A9/%2e%2e/x", "/x"),
            ("/été/%2e%2e/x", "/x"),
            ("/%41é/%2e%2e/x", "/x"),
            ("/%41é", "/Aé"),
        ] {
            assert_eq!(normal(path), expected, "{path}");
        }
    }

    #[test]
    fn a_path_already_in_normal_form_is_borrowed() {
        for path in ["/", "/api/items/42", "/a%2Fb", "/a/.b/c..", "/%"] {
            assert!(
                matches!(normalize_path(path), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn a_backslash_is_refused() {
        assert!(normalize_path("/public\\..\\admin").is_err());
        assert_eq!(normal("/public%5C..%5Cadmin"), "/public%5C..%5Cadmin");
    }

    proptest::proptest! {
        #[test]
        fn normal_form_has_no_dot_segments_and_is_a_fixed_point(
            segments in proptest::collection::vec(
                proptest::sample::select(vec!["a", "", ".", "..", "%2e", "%2E%2e", ".%2E", "b%41", "%2F", "é"]),
                0..12,
            )
        ) {
            let path = format!("/{}", segments.join("/"));
            let once = normal(&path);
            proptest::prop_assert!(once.starts_with('/'));
            proptest::prop_assert!(once.split('/').all(|s| s != "." && s != ".."), "{} -> {}", path, once);
            proptest::prop_assert_eq!(normal(&once), once.clone(), "from {}", path);
        }
    }

    fn request(target: &str, version: Version, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get(target).version(version);
        for host in hosts {
            builder = builder.header(header::HOST, *host);
        }
        builder.body(()).unwrap()
    }

    fn hosts_of(request: &Request<()>) -> Vec<&str> {
        let values = request.headers().get_all(header::HOST).iter();
        values.map(|v| v.to_str().unwrap()).collect()
    }

    #[test]
    fn host_rules_follow_rfc_9112() {
        let accepted = [
            ("/a", Version::HTTP_11, &["example.com"][..]),
            ("/a", Version::HTTP_11, &["example.com:8080"]),
            ("/a", Version::HTTP_11, &["127.0.0.1:80"]),
            ("/a", Version::HTTP_11, &["[::1]:8080"]),
            ("/a", Version::HTTP_11, &["[::1]"]),
            ("/a", Version::HTTP_11, &[""]),
            ("/a", Version::HTTP_10, &[]),
        ];
        for (target, version, hosts) in accepted {
            let mut accepted = request(target, version, hosts);
            assert_eq!(canonicalize(&mut accepted), Ok(()), "{hosts:?}");
        }
        let refused = [
            (Version::HTTP_11, &[][..]),
            (Version::HTTP_11, &["a.example", "b.example"]),
            (Version::HTTP_10, &["a.example", "a.example"]),
            (Version::HTTP_11, &["a b"]),
            (Version::HTTP_11, &["user@a.example"]),
            (Version::HTTP_11, &["a.example:80x"]),
            (Version::HTTP_11, &["[::1"]),
            (Version::HTTP_11, &["[zz]"]),
            (Version::HTTP_11, &["a/b"]),
        ];
        for (version, hosts) in refused {
            let mut refused = request("/a", version, hosts);
            assert!(canonicalize(&mut refused).is_err(), "{hosts:?}");
        }
    }

    #[test]
    fn an_absolute_form_target_becomes_origin_form_with_its_authority_as_host() {
        let mut absolute = request(
            "http://app.example:8080/a/../b?x=1",
            Version::HTTP_11,
            &["other.example", "third.example"],
        );
        canonicalize(&mut absolute).unwrap();
        assert_eq!(absolute.uri().to_string(), "/b?x=1");
        assert_eq!(hosts_of(&absolute), ["app.example:8080"]);

        let mut with_user = request("http://user@app.example/a", Version::HTTP_11, &[]);
        assert!(canonicalize(&mut with_user).is_err());
    }

    #[test]
    fn connect_is_refused_whatever_its_target() {
        for target in ["app.example:443", "/api/x"] {
            let mut connect = request(target, Version::HTTP_11, &["app.example"]);
            *connect.method_mut() = Method::CONNECT;
            assert!(canonicalize(&mut connect).is_err(), "{target}");
        }
    }

    #[test]
    fn the_query_is_kept_and_left_alone() {
        let mut with_query = request("/a/%2e%2e/b?next=/x/../y&c=%41", Version::HTTP_11, &["h"]);
        canonicalize(&mut with_query).unwrap();
        assert_eq!(with_query.uri().to_string(), "/b?next=/x/../y&c=%41");
    }
}
