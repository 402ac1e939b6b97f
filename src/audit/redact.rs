//! Redaction before anything is stored: allowlist-first, structural, failing closed
//! (research/audit.md §5).
//!
//! - Headers: only an allowlist is captured; credentials never are, even if listed.
//! - Query strings and form bodies: values under sensitive keys become `REDACTED`, keys stay.
//! - JSON bodies: walked recursively; a sensitive key's whole value becomes `REDACTED`.
//! - Every remaining string goes through the value detectors (`detect`).
//! - A body that is too large, compressed, of another content type, or does not parse is
//!   dropped and only a marker says why; raw bytes are never kept.
//!
//! Keys are normalised (lower case, letters and digits only) so `X-Api-Key`, `api_key` and
//! `apiKey` match alike. Over-redaction is accepted; under-redaction is the bug to avoid.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use serde::Serialize;
use serde_json::Value;

use crate::audit::detect;

pub const REDACTED: &str = "REDACTED";

/// Bodies larger than this are not parsed.
pub const MAX_BODY: usize = 64 * 1024;

/// Longest captured request fields, in characters (research/audit.md §5.1 item 7): a long
/// field is kept up to this and noted as `truncated`.
pub const MAX_USER_AGENT: usize = 512;
pub const MAX_PATH: usize = 2048;
pub const MAX_QUERY: usize = 2048;
pub const MAX_HEADER_VALUE: usize = 1024;

/// Redact a key whose normalised form contains one of these.
const SENSITIVE_SUBSTRINGS: [&str; 37] = [
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "auth",
    "credential",
    "bearer",
    "apikey",
    "privatekey",
    "signingkey",
    "encryptionkey",
    "accesskey",
    "awsaccesskeyid",
    "session",
    "cookie",
    "csrf",
    "xsrf",
    "otp",
    "twofactor",
    "mfa",
    "totp",
    "signature",
    "connectionstring",
    "mysqlpwd",
    "cardnumber",
    "ccnumber",
    "creditcard",
    "securitycode",
    "iban",
    "accountnumber",
    "ssn",
    "nationalid",
    "passport",
    "taxid",
    "clientsecret",
];

/// Redact a key whose normalised form is exactly one of these (short words that would match
/// too much as substrings).
const SENSITIVE_EXACT: [&str; 11] = [
    "sig", "pan", "cvv", "cvc", "cvv2", "pin", "dsn", "key", "code", "jwt", "sid",
];

/// Headers kept (in the sealed part) when present.
const HEADER_ALLOWLIST: [&str; 9] = [
    "content-type",
    "content-length",
    "accept",
    "host",
    "origin",
    "referer",
    "user-agent",
    "x-request-id",
    "traceparent",
];

/// Never captured, whatever the allowlist says.
const HEADER_DENYLIST: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// What was removed: rule names with counts, never values or paths (a path could itself be
/// personal data when a JSON object is keyed by e-mail addresses).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Notes(pub BTreeMap<&'static str, u32>);

impl Notes {
    fn add(&mut self, rule: &'static str) {
        *self.0.entry(rule).or_default() += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn merge(&mut self, other: &Notes) {
        for (rule, count) in &other.0 {
            *self.0.entry(rule).or_default() += count;
        }
    }
}

/// One pass over a key for all of [`SENSITIVE_SUBSTRINGS`]: this runs for every header
/// value, query key and JSON key of every audited request.
static SENSITIVE_SEARCH: LazyLock<AhoCorasick> =
    LazyLock::new(|| AhoCorasick::new(SENSITIVE_SUBSTRINGS).expect("plain words"));

/// Whether values under `key` are secrets or identifiers to remove.
pub fn is_sensitive_key(key: &str) -> bool {
    // Lower case, letters and digits only; on the stack for the usual short key.
    let normalised = key
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| b.to_ascii_lowercase());
    let mut short = [0u8; 64];
    let long: Vec<u8>;
    let key = if key.len() <= short.len() {
        let mut len = 0;
        for byte in normalised {
            short[len] = byte;
            len += 1;
        }
        &short[..len]
    } else {
        long = normalised.collect();
        &long[..]
    };
    SENSITIVE_EXACT.iter().any(|exact| exact.as_bytes() == key) || SENSITIVE_SEARCH.is_match(key)
}

/// A free-text value with detected secrets replaced.
pub fn text(value: &str, notes: &mut Notes) -> String {
    let mut rules = Vec::new();
    let out = detect::scrub(value, &mut rules).into_owned();
    for rule in rules {
        notes.add(rule);
    }
    out
}

/// `value` cut to at most `max` characters, noted as `truncated` when cut. Callers cut what
/// redaction returned, never the raw value: a secret cut in half could slip past the detectors
/// that recognise it whole (a card number without its last digits, a JWT without its
/// signature).
pub fn capped(mut value: String, max: usize, notes: &mut Notes) -> String {
    if let Some((end, _)) = value.char_indices().nth(max) {
        value.truncate(end);
        notes.add("truncated");
    }
    value
}

/// `a=1&token=x` → `a=1&token=REDACTED`, keys kept, other values scrubbed.
pub fn query(query: &str, notes: &mut Notes) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if is_sensitive_key(&key) {
            notes.add("key");
            out.append_pair(&key, REDACTED);
        } else {
            out.append_pair(&text(&key, notes), &text(&value, notes));
        }
    }
    out.finish()
}

/// Allowlisted request headers, scrubbed, except those named in `except` (kept elsewhere by
/// the caller); the auth scheme is reported separately.
pub fn headers(
    headers: &http::HeaderMap,
    except: &[&str],
    notes: &mut Notes,
) -> BTreeMap<&'static str, String> {
    let mut kept = BTreeMap::new();
    // A request has few headers: walking them beats looking up every allowlisted name.
    for (name, value) in headers {
        let Some(&name) = HEADER_ALLOWLIST
            .iter()
            .find(|allowed| **allowed == name.as_str())
        else {
            continue;
        };
        if HEADER_DENYLIST.contains(&name) || except.contains(&name) || kept.contains_key(name) {
            continue;
        }
        let Ok(value) = value.to_str() else {
            continue;
        };
        let value = if name == "referer" {
            value.split('?').next().unwrap_or_default()
        } else {
            value
        };
        kept.insert(name, capped(text(value, notes), MAX_HEADER_VALUE, notes));
    }
    kept
}

/// The scheme of `Authorization` (`bearer`, `basic`, ...), which says how the client
/// authenticated without saying who.
pub fn auth_scheme(headers: &http::HeaderMap) -> &'static str {
    let Some(value) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "none";
    };
    match value
        .split_whitespace()
        .next()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("bearer") => "bearer",
        Some("basic") => "basic",
        Some("digest") => "digest",
        _ => "other",
    }
}

/// A captured body after redaction, or why it was dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Captured(Value),
    Dropped(&'static str),
}

impl Body {
    /// The marker for the event header.
    pub fn marker(&self) -> &'static str {
        match self {
            Body::Captured(_) => "captured",
            Body::Dropped(why) => why,
        }
    }
}

/// Redacts a body given its content type and encoding; anything not safely parseable is
/// dropped.
pub fn body(
    bytes: &[u8],
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    notes: &mut Notes,
) -> Body {
    if bytes.is_empty() {
        return Body::Dropped("none");
    }
    if bytes.len() > MAX_BODY {
        return Body::Dropped("dropped_too_large");
    }
    if content_encoding.is_some_and(|e| !e.eq_ignore_ascii_case("identity")) {
        return Body::Dropped("dropped_compressed");
    }
    let media = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"))
    {
        return match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => Body::Captured(json(value, notes)),
            Err(_) => Body::Dropped("dropped_unparseable"),
        };
    }
    if media == "application/x-www-form-urlencoded" {
        return match std::str::from_utf8(bytes) {
            Ok(form) => Body::Captured(Value::String(self::query(form, notes))),
            Err(_) => Body::Dropped("dropped_unparseable"),
        };
    }
    Body::Dropped("dropped_content_type")
}

/// Redacts a JSON value: sensitive keys lose their whole value, strings are scrubbed, long
/// numbers are checked for card numbers.
pub fn json(value: Value, notes: &mut Notes) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    if is_sensitive_key(&key) {
                        notes.add("key");
                        (text(&key, notes), Value::String(REDACTED.to_string()))
                    } else {
                        (text(&key, notes), json(value, notes))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(|v| json(v, notes)).collect()),
        Value::String(s) => Value::String(text(&s, notes)),
        Value::Number(n) => {
            let digits = n.to_string();
            if digits.len() >= 13 && detect::is_card_number(&digits) {
                notes.add("pan");
                Value::String("[REDACTED:pan]".to_string())
            } else {
                Value::Number(n)
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests;
