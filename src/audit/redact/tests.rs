use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const CANARY: &str = "canary-9f2c41";

/// A sensitive key in a random spelling: case and separators vary.
fn sensitive_key() -> impl Strategy<Value = String> {
    let bases = prop::sample::select(vec![
        "password",
        "access_token",
        "api key",
        "client-secret",
        "Session-Id",
        "credit card number",
        "cvv",
        "private_key",
    ]);
    (
        bases,
        any::<bool>(),
        prop::sample::select(vec!["", "_", "-", " "]),
    )
        .prop_map(|(base, upper, sep)| {
            let spelled = base.replace([' ', '_', '-'], sep);
            if upper {
                spelled.to_uppercase()
            } else {
                spelled
            }
        })
}

/// Plain keys and values that contain nothing a detector would touch.
fn plain() -> impl Strategy<Value = String> {
    "[a-z]{1,8}".prop_filter("not sensitive", |k| !is_sensitive_key(k))
}

fn tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        plain().prop_map(Value::String),
        any::<i32>().prop_map(|n| json!(n)),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool)
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((plain(), inner.clone()), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            (
                sensitive_key(),
                inner.clone(),
                prop::collection::vec((plain(), inner), 0..3)
            )
                .prop_map(|(key, _, rest)| {
                    let mut map: serde_json::Map<String, Value> = rest.into_iter().collect();
                    map.insert(key, json!({"deep": [CANARY, {"x": CANARY}]}));
                    Value::Object(map)
                }),
        ]
    })
}

fn leaves(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => map.values().for_each(|v| leaves(v, out)),
        Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
        leaf => out.push(leaf.clone()),
    }
}

proptest! {
    #[test]
    fn a2_json_redaction_is_complete_exact_and_idempotent(input in tree()) {
        let mut notes = Notes::default();
        let once = json(input.clone(), &mut notes);
        let text = serde_json::to_string(&once).unwrap();
        prop_assert!(!text.contains(CANARY), "a canary under a sensitive key survived: {}", text);
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
        let twice = json(once.clone(), &mut Notes::default());
        prop_assert_eq!(&twice, &once, "redaction is idempotent");
        if !serde_json::to_string(&input).unwrap().contains(CANARY) {
            prop_assert_eq!(&once, &input, "nothing sensitive, nothing changed");
            prop_assert!(notes.is_empty());
        }
        let (mut before, mut after) = (Vec::new(), Vec::new());
        leaves(&input, &mut before);
        leaves(&once, &mut after);
        let kept: Vec<&Value> = before.iter().filter(|v| v.as_str() != Some(CANARY)).collect();
        for leaf in kept {
            prop_assert!(after.contains(leaf) || after.contains(&json!(REDACTED)), "leaf {} lost", leaf);
        }
    }
}

#[test]
fn a5_query_values_are_redacted_with_their_keys_kept() {
    let mut notes = Notes::default();
    let cases = [
        ("q=shoes&access_token=abc", "q=shoes&access_token=REDACTED"),
        (
            "sig=zz&Signature=yy&X-Goog-Signature=xx&AWSAccessKeyId=ww",
            "sig=REDACTED&Signature=REDACTED&X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED",
        ),
        ("pass%77ord=hunter2&a=1", "password=REDACTED&a=1"),
        ("a=1&a=2&flag", "a=1&a=2&flag="),
        ("email=jane%40example.com", "email=%5BREDACTED%3Aemail%5D"),
        ("code=oauth-code", "code=REDACTED"),
    ];
    for (input, expected) in cases {
        assert_eq!(query(input, &mut notes), expected, "{input}");
    }
}

#[test]
fn a6_bodies_that_cannot_be_redacted_are_dropped_not_kept() {
    let mut notes = Notes::default();
    let secret = br#"{"access_token":"x-secret"}"#;
    assert_eq!(
        body(secret, Some("text/plain"), None, &mut notes),
        Body::Dropped("dropped_content_type")
    );
    assert_eq!(
        body(b"{not json", Some("application/json"), None, &mut notes),
        Body::Dropped("dropped_unparseable")
    );
    assert_eq!(
        body(
            &vec![b'a'; 10 << 20],
            Some("application/json"),
            None,
            &mut notes
        ),
        Body::Dropped("dropped_too_large")
    );
    assert_eq!(
        body(secret, Some("application/json"), Some("gzip"), &mut notes),
        Body::Dropped("dropped_compressed")
    );
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    assert_eq!(
        body(deep.as_bytes(), Some("application/json"), None, &mut notes),
        Body::Dropped("dropped_unparseable")
    );
    let Body::Captured(value) = body(
        secret,
        Some("application/json; charset=utf-8"),
        None,
        &mut notes,
    ) else {
        panic!("parsed")
    };
    assert_eq!(value, json!({"access_token": REDACTED}));
    let Body::Captured(form) = body(
        b"client_secret=s3&name=ok",
        Some("application/x-www-form-urlencoded"),
        None,
        &mut notes,
    ) else {
        panic!("parsed")
    };
    assert_eq!(form, json!("client_secret=REDACTED&name=ok"));
}

#[test]
fn a7_only_allowlisted_headers_are_kept_and_credentials_never() {
    let mut h = http::HeaderMap::new();
    h.insert("x-customer-email", "jane@example.com".parse().unwrap());
    h.insert("authorization", "Bearer secret-token".parse().unwrap());
    h.insert("cookie", "session=abc".parse().unwrap());
    h.insert("user-agent", "curl/8".parse().unwrap());
    h.insert("referer", "https://a.example/p?token=x".parse().unwrap());
    let kept = headers(&h, &[], &mut Notes::default());
    assert_eq!(
        kept.keys().copied().collect::<Vec<_>>(),
        ["referer", "user-agent"]
    );
    assert_eq!(kept["referer"], "https://a.example/p");
    assert_eq!(auth_scheme(&h), "bearer");
}

/// A8: long fields are cut, and noted as cut, only after redaction, so a secret straddling
/// the limit is still recognised whole rather than kept in part.
#[test]
fn a8_long_fields_are_cut_after_redaction() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ.c2lnbmF0dXJl";
    let straddling = format!("{} {jwt}", "a".repeat(MAX_HEADER_VALUE - 10));
    let mut h = http::HeaderMap::new();
    h.insert("accept", straddling.parse().unwrap());
    let mut notes = Notes::default();
    let kept = headers(&h, &[], &mut notes);
    assert!(!kept["accept"].contains("eyJ"), "{}", kept["accept"]);
    assert_eq!(kept["accept"].chars().count(), MAX_HEADER_VALUE);
    assert_eq!(notes.0.get("jwt"), Some(&1));
    assert_eq!(notes.0.get("truncated"), Some(&1));

    let mut notes = Notes::default();
    let short = capped("é".repeat(MAX_PATH), MAX_PATH, &mut notes);
    assert_eq!(short.chars().count(), MAX_PATH);
    assert!(notes.is_empty(), "a field at the limit is not cut");
    let long = capped("é".repeat(MAX_PATH + 1), MAX_PATH, &mut notes);
    assert_eq!(long, "é".repeat(MAX_PATH), "cut on a character boundary");
    assert_eq!(notes.0.get("truncated"), Some(&1));
}

#[test]
fn json_numbers_that_are_card_numbers_are_redacted() {
    let mut notes = Notes::default();
    assert_eq!(
        json(
            json!({"n": 4111111111111111u64, "id": 1760203033267281057u64}),
            &mut notes
        ),
        json!({"n": "[REDACTED:pan]", "id": 1760203033267281057u64})
    );
}

/// A9 as a property: arbitrary bytes under arbitrary content types and encodings never panic,
/// and a secret planted in any position of a JSON or form body never comes out.
mod fuzz {
    use super::*;

    const SECRET: &str = "planted-secret-6c1f";

    fn content_type() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            Just(None),
            Just(Some("application/json".to_string())),
            Just(Some("application/problem+json; charset=utf-8".to_string())),
            Just(Some("application/x-www-form-urlencoded".to_string())),
            Just(Some("text/plain".to_string())),
            "[ -~]{0,40}".prop_map(Some),
        ]
    }

    fn encoding() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            3 => Just(None),
            1 => Just(Some("identity".to_string())),
            1 => Just(Some("gzip".to_string())),
            1 => "[a-z]{0,8}".prop_map(Some),
        ]
    }

    /// A body holding the secret where redaction must find it: under a sensitive key (JSON or
    /// form), as a bearer token or URL credential inside a string.
    fn planted() -> impl Strategy<Value = (Vec<u8>, Option<String>)> {
        let key = prop_oneof![
            Just("password"),
            Just("Access-Token"),
            Just("client_secret"),
            Just("apiKey"),
            Just("Authorization"),
        ];
        (key, "[a-z]{1,8}", 0usize..4).prop_map(|(key, other, shape)| match shape {
            0 => (
                format!(r#"{{"{other}":1,"{key}":"{SECRET}"}}"#).into_bytes(),
                Some("application/json".to_string()),
            ),
            1 => (
                format!(r#"[{{"{other}":{{"{key}":["{SECRET}"]}}}}]"#).into_bytes(),
                Some("application/json".to_string()),
            ),
            2 => (
                format!("{other}=1&{key}={SECRET}").into_bytes(),
                Some("application/x-www-form-urlencoded".to_string()),
            ),
            _ => (
                format!(
                    r#"{{"{other}":"see https://u:{SECRET}@db.example/x and Bearer {SECRET}"}}"#
                )
                .into_bytes(),
                Some("application/json".to_string()),
            ),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a9_arbitrary_bodies_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            content_type in content_type(),
            encoding in encoding(),
        ) {
            let mut notes = Notes::default();
            let _ = body(&bytes, content_type.as_deref(), encoding.as_deref(), &mut notes);
        }

        #[test]
        fn a9_planted_secrets_never_come_out((bytes, content_type) in planted(), encoding in encoding()) {
            let mut notes = Notes::default();
            let out = body(&bytes, content_type.as_deref(), encoding.as_deref(), &mut notes);
            if let Body::Captured(value) = out {
                let text = value.to_string();
                prop_assert!(!text.contains(SECRET), "{} came out as {}", String::from_utf8_lossy(&bytes), text);
            }
        }
    }
}

proptest! {
    /// The key check normalises on the stack; it must agree with the plain definition
    /// (lower-cased letters and digits, an exact word or a contained one) for keys of any
    /// length, on both sides of the stack buffer's size.
    #[test]
    fn sensitive_keys_match_their_definition(
        key in prop_oneof![
            "[A-Za-z0-9 _.é-]{0,80}",
            (sensitive_key(), "[a-z_]{50,70}").prop_map(|(s, pad)| format!("{pad}{s}")),
        ]
    ) {
        let normalised: String = key
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let expected = SENSITIVE_EXACT.contains(&normalised.as_str())
            || SENSITIVE_SUBSTRINGS.iter().any(|s| normalised.contains(s));
        prop_assert_eq!(is_sensitive_key(&key), expected);
    }
}
