//! Value detectors: secrets and identifiers found inside free text, whatever key they sit
//! under (research/audit.md §5.3).
//!
//! Card numbers (an issuer prefix that exists, the Luhn check, not all one digit), e-mail
//! addresses, bearer tokens, JWTs, PEM private keys, credentials in URLs, IBANs (mod-97) and
//! cloud access key ids are replaced by a marker naming the rule. Patterns are compiled once;
//! the `regex` crate matches in linear time, so hostile input cannot make this slow. Cheap
//! pre-checks skip the regexes for text that cannot contain a match.

use std::borrow::Cow;
use std::sync::LazyLock;

use aho_corasick::AhoCorasick;
use regex::{Captures, Regex};

struct Detectors {
    pem: Regex,
    url_credentials: Regex,
    jwt: Regex,
    bearer: Regex,
    email: Regex,
    cloud_key: Regex,
    iban: Regex,
    digits: Regex,
    key_value: Regex,
}

static DETECTORS: LazyLock<Detectors> = LazyLock::new(|| Detectors {
    pem: Regex::new(
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
    )
    .expect("valid"),
    url_credentials: Regex::new(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]+:[^/\s@]*@").expect("valid"),
    jwt: Regex::new(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*").expect("valid"),
    bearer: Regex::new(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]+=*").expect("valid"),
    email: Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("valid"),
    cloud_key: Regex::new(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b").expect("valid"),
    iban: Regex::new(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
        .expect("valid"),
    digits: Regex::new(r"\d(?:[ -]?\d){12,18}").expect("valid"),
    key_value: Regex::new(r#"([A-Za-z][A-Za-z0-9_.\-]{1,63})("?\s*[=:]\s*"?)([^\s&;,"']+)"#)
        .expect("valid"),
});

/// Whether some `=` or `:` in `text` follows a sensitive key (allowing a closing quote and
/// spaces between): the cheap test before the `key=value` pattern runs.
fn has_sensitive_assignment(text: &str) -> bool {
    let bytes = text.as_bytes();
    let is_key_byte = |b: u8| b.is_ascii_alphanumeric() || b"_.-".contains(&b);
    bytes.iter().enumerate().any(|(at, &b)| {
        if b != b'=' && b != b':' {
            return false;
        }
        let mut end = at;
        while end > 0 && bytes[end - 1] == b' ' {
            end -= 1;
        }
        if end > 0 && bytes[end - 1] == b'"' {
            end -= 1;
        }
        let mut start = end;
        while start > 0 && is_key_byte(bytes[start - 1]) {
            start -= 1;
        }
        start < end && crate::audit::redact::is_sensitive_key(&text[start..end])
    })
}

/// Literals that some detectors' matches must contain; a detector whose clue is absent does
/// not run. Found in one pass: every captured text of every audited request is scrubbed.
const CLUES: [&str; 6] = ["-----BEGIN", "://", "eyJ", "AKIA", "ASIA", "@"];
const PEM: u8 = 1 << 0;
const URL: u8 = 1 << 1;
const JWT: u8 = 1 << 2;
const CLOUD_KEY: u8 = (1 << 3) | (1 << 4);
const AT: u8 = 1 << 5;

static CLUE_SEARCH: LazyLock<AhoCorasick> =
    LazyLock::new(|| AhoCorasick::new(CLUES).expect("plain literals"));

/// Which of [`CLUES`] `text` contains, one bit each.
fn clues(text: &str) -> u8 {
    CLUE_SEARCH
        .find_overlapping_iter(text)
        .fold(0, |found, m| found | 1 << m.pattern().as_usize())
}

/// Replaces every detected secret or identifier in `text`; `noted` receives the rule names.
pub fn scrub<'a>(text: &'a str, noted: &mut Vec<&'static str>) -> Cow<'a, str> {
    let d = &*DETECTORS;
    let clues = clues(text);
    let mut out: Cow<'a, str> = Cow::Borrowed(text);
    let mut apply = |rule: &'static str,
                     re: &Regex,
                     cheap: bool,
                     replace: &dyn Fn(&Captures) -> Option<String>| {
        if !cheap {
            return;
        }
        let mut hit = false;
        let replaced = re.replace_all(&out, |caps: &Captures| match replace(caps) {
            Some(replacement) => {
                hit = true;
                replacement
            }
            None => caps[0].to_string(),
        });
        if hit {
            out = Cow::Owned(replaced.into_owned());
            noted.push(rule);
        }
    };
    apply("pem", &d.pem, clues & PEM != 0, &|_| {
        Some("[REDACTED:pem]".into())
    });
    apply(
        "url_credentials",
        &d.url_credentials,
        clues & URL != 0,
        &|c| Some(format!("{}REDACTED:REDACTED@", &c[1])),
    );
    apply("jwt", &d.jwt, clues & JWT != 0, &|_| {
        Some("[REDACTED:jwt]".into())
    });
    let bytes = text.as_bytes();
    let has_bearer = bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"bearer"));
    // An IBAN starts with a country code and two check digits.
    let has_iban_start = bytes.windows(4).any(|w| {
        w[0].is_ascii_uppercase()
            && w[1].is_ascii_uppercase()
            && w[2].is_ascii_digit()
            && w[3].is_ascii_digit()
    });
    apply("bearer", &d.bearer, has_bearer, &|_| {
        Some("[REDACTED:bearer]".into())
    });
    // `REDACTED@host` is what the URL-credentials rule leaves behind, not an address.
    apply("email", &d.email, clues & AT != 0, &|c| {
        (!c[0].starts_with("REDACTED@")).then(|| "[REDACTED:email]".into())
    });
    apply("cloud_key", &d.cloud_key, clues & CLOUD_KEY != 0, &|_| {
        Some("[REDACTED:cloud_key]".into())
    });
    apply("iban", &d.iban, text.len() >= 15 && has_iban_start, &|c| {
        is_iban(&c[0]).then(|| "[REDACTED:iban]".into())
    });
    // `password=x`, `token: x`, `"api_key":"x"` inside free text (a query string or a JSON
    // document quoted in a string): the value under a sensitive key goes.
    apply("key", &d.key_value, has_sensitive_assignment(text), &|c| {
        let done =
            c[3].starts_with(crate::audit::redact::REDACTED) || c[3].starts_with("[REDACTED");
        (crate::audit::redact::is_sensitive_key(&c[1]) && !done)
            .then(|| format!("{}{}{}", &c[1], &c[2], crate::audit::redact::REDACTED))
    });
    let digit_count = text.bytes().filter(u8::is_ascii_digit).count();
    apply("pan", &d.digits, digit_count >= 13, &|c| {
        is_card_number(&c[0]).then(|| "[REDACTED:pan]".into())
    });
    out
}

/// A payment card number: 13-19 digits (spaces or dashes between them allowed), an issuer
/// prefix that exists, a valid Luhn check digit, and not all the same digit.
pub fn is_card_number(candidate: &str) -> bool {
    let digits: Vec<u8> = candidate
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    plausible_issuer(&digits) && luhn(&digits)
}

fn plausible_issuer(d: &[u8]) -> bool {
    let prefix = |n: usize| d[..n].iter().fold(0u32, |acc, x| acc * 10 + *x as u32);
    match d[0] {
        4 => true,
        5 => (51..=55).contains(&prefix(2)),
        2 => (2221..=2720).contains(&prefix(4)),
        3 => matches!(prefix(2), 34 | 37 | 35 | 36 | 38 | 30),
        6 => {
            prefix(4) == 6011
                || prefix(2) == 65
                || (644..=649).contains(&prefix(3))
                || prefix(2) == 62
        }
        _ => false,
    }
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = *d as u32;
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An IBAN whose check digits are right (ISO 13616 mod 97).
pub fn is_iban(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let rearranged = format!("{}{}", &compact[4..], &compact[..4]);
    let mut remainder = 0u32;
    for c in rearranged.chars() {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        let width = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * width + value) % 97;
    }
    remainder == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clues_are_found_wherever_they_are_and_only_then() {
        assert_eq!(clues("/orders/17?page=2"), 0);
        assert_eq!(clues("-----BEGIN"), PEM);
        assert_eq!(clues("see https://a:b@host"), URL | AT);
        assert_eq!(clues("x.eyJhbGciOi"), JWT);
        assert_eq!(clues("id=ASIAXYZ") & CLOUD_KEY, 1 << 4);
        assert_eq!(clues("AKIASIA") & CLOUD_KEY, CLOUD_KEY);
        assert_eq!(clues("a@b"), AT);
    }

    fn scrubbed(text: &str) -> String {
        scrub(text, &mut Vec::new()).into_owned()
    }

    #[test]
    fn card_numbers_need_issuer_luhn_and_variety() {
        for pan in [
            "4111111111111111",
            "5555555555554444",
            "378282246310005",
            "6011111111111117",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "2223003122003222",
        ] {
            assert!(is_card_number(pan), "{pan} should be a card");
            assert_eq!(
                scrubbed(&format!("pay {pan} now")),
                "pay [REDACTED:pan] now",
                "{pan}"
            );
        }
        for not in [
            "4111111111111112",
            "0000000000000000",
            "1760203033267281057",
            "9999999999999995",
            "12345",
        ] {
            assert!(!is_card_number(not), "{not} is not a card");
        }
        assert_eq!(
            scrubbed("order 1760203033267281057 shipped"),
            "order 1760203033267281057 shipped"
        );
    }

    #[test]
    fn emails_bearers_jwts_pems_urls_ibans_and_cloud_keys() {
        let cases = [
            (
                "mail me at jane.doe+x@example.co.uk please",
                "mail me at [REDACTED:email] please",
            ),
            (
                "Authorization: Bearer abc.def-123",
                "Authorization: [REDACTED:bearer]",
            ),
            (
                "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJl",
                "t=[REDACTED:jwt]",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----",
                "[REDACTED:pem]",
            ),
            ("-----BEGIN PRIVATE KEY-----\ntruncated", "[REDACTED:pem]"),
            (
                "see https://user:pass@host.example/x",
                "see https://REDACTED:REDACTED@host.example/x",
            ),
            ("to GB82 WEST 1234 5698 7654 32", "to [REDACTED:iban]"),
            ("to DE89370400440532013000", "to [REDACTED:iban]"),
            ("key AKIAIOSFODNN7EXAMPLE", "key [REDACTED:cloud_key]"),
        ];
        for (input, expected) in cases {
            assert_eq!(scrubbed(input), expected, "{input}");
        }
        for clean in [
            "no secrets here",
            "GB82 WEST 1234 5698 7654 33",
            "version 1.2.3",
            "user@localhost",
            "https://host.example/path",
            "eyJ",
        ] {
            assert_eq!(scrubbed(clean), clean, "{clean}");
        }
    }

    #[test]
    fn the_rules_that_fired_are_noted_without_values() {
        let mut noted = Vec::new();
        scrub("a@b.io and 4111111111111111", &mut noted);
        noted.sort();
        assert_eq!(noted, ["email", "pan"]);
    }

    #[test]
    fn values_under_sensitive_keys_in_free_text_are_removed() {
        let clean = |text: &str| scrub(text, &mut Vec::new()).into_owned();
        assert_eq!(
            clean("access_token=abc123&page=2"),
            "access_token=REDACTED&page=2"
        );
        assert_eq!(clean("password: hunter2"), "password: REDACTED");
        assert_eq!(
            clean(r#"{"api_key":"k-77","n":1}"#),
            r#"{"api_key":"REDACTED","n":1}"#
        );
        assert_eq!(
            clean("at 12:30 page=2 user=bob"),
            "at 12:30 page=2 user=bob"
        );
        assert_eq!(clean("token=REDACTED"), "token=REDACTED", "idempotent");
    }
}
