//! OFREP over HTTP: single and bulk evaluation, errors, ETag/304 and evaluation keys; every
//! answer is validated against the schemas of `../shared/specs/ofrep/openapi.yaml`.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::support::{ADMIN_TOKEN, Reply, Seawall, assert_python_check, full, send};

/// Validates `document` against component `schema` of the OFREP OpenAPI document.
fn assert_schema(document: &Value, schema: &str) {
    let openapi =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs/ofrep/openapi.yaml");
    assert_python_check(
        "ofrep_schema.py",
        &[openapi.as_os_str(), schema.as_ref()],
        &document.to_string(),
        &format!("{document} does not validate as {schema}"),
    );
}

async fn evaluate(seawall: &Seawall, path: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send(
        Method::POST,
        &seawall.proxy_url(path),
        &all,
        full(body.to_string()),
    )
    .await
}

async fn create(seawall: &Seawall, flag: Value) {
    let reply = send(
        Method::POST,
        &seawall.admin_url("/admin/flags"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
        full(flag.to_string()),
    )
    .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
}

async fn flags(seawall: &Seawall) {
    create(
        seawall,
        json!({"name": "dark-mode", "enabled": true, "strategies": [{"name": "default"}]}),
    )
    .await;
    create(seawall, json!({"name": "kill-switch", "enabled": false})).await;
    create(
        seawall,
        json!({"name": "beta", "enabled": true, "strategies": [{"name": "userWithId", "parameters": {"userIds": "ann,bob"}}]}),
    )
    .await;
    create(
        seawall,
        json!({"name": "theme", "enabled": true, "strategies": [],
               "variants": [{"name": "blue", "weight": 500, "payload": {"type": "string", "value": "blue"}},
                            {"name": "green", "weight": 500, "payload": {"type": "string", "value": "green"}}]}),
    )
    .await;
    create(
        seawall,
        json!({"name": "limits", "enabled": true,
               "variants": [{"name": "big", "weight": 1, "payload": {"type": "json", "value": "{\"max\": 10}"}}]}),
    )
    .await;
    create(
        seawall,
        json!({"name": "retries", "enabled": true, "variants": [{"name": "three", "weight": 1, "payload": {"type": "number", "value": "3"}}]}),
    )
    .await;
}

#[tokio::test]
async fn single_evaluations_answer_per_the_protocol() {
    let seawall = Seawall::start("");
    flags(&seawall).await;
    let one = |key: &'static str, ctx: Value| {
        let body = json!({ "context": ctx }).to_string();
        let seawall = &seawall;
        async move {
            evaluate(
                seawall,
                &format!("/ofrep/v1/evaluate/flags/{key}"),
                &body,
                &[],
            )
            .await
        }
    };

    let reply = one("dark-mode", json!({"targetingKey": "u1"})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"key": "dark-mode", "reason": "STATIC", "value": true, "variant": "on"})
    );
    assert_schema(&reply.json(), "serverEvaluationSuccess");

    let off = one("kill-switch", json!({"targetingKey": "u1"}))
        .await
        .json();
    assert_eq!(
        (off["value"].clone(), off["reason"].clone()),
        (json!(false), json!("DISABLED"))
    );
    assert_schema(&off, "serverEvaluationSuccess");

    let ann = one("beta", json!({"targetingKey": "ann"})).await.json();
    let carl = one("beta", json!({"targetingKey": "carl"})).await.json();
    assert_eq!(
        (ann["value"].clone(), ann["reason"].clone()),
        (json!(true), json!("TARGETING_MATCH"))
    );
    assert_eq!(carl["value"], false);
    assert_schema(&carl, "serverEvaluationSuccess");

    let theme = one(
        "theme",
        json!({"targetingKey": "u1", "plan": "pro", "seats": 3}),
    )
    .await
    .json();
    assert_eq!(theme["reason"], "SPLIT");
    assert!(theme["value"] == "blue" || theme["value"] == "green");
    assert_eq!(theme["value"], theme["variant"]);
    assert_schema(&theme, "serverEvaluationSuccess");
    for _ in 0..5 {
        assert_eq!(
            one("theme", json!({"targetingKey": "u1"})).await.json()["value"],
            theme["value"],
            "sticky per targeting key"
        );
    }
    let limits = one("limits", json!({"targetingKey": "u1"})).await.json();
    assert_eq!(limits["value"], json!({"max": 10}));
    assert_schema(&limits, "serverEvaluationSuccess");
    let retries = one("retries", json!({"targetingKey": "u1"})).await.json();
    assert_eq!(retries["value"], json!(3));
    assert_schema(&retries, "serverEvaluationSuccess");

    let missing = one("no-such-flag", json!({"targetingKey": "u1"})).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["errorCode"], "FLAG_NOT_FOUND");
    assert_schema(&missing.json(), "flagNotFound");

    for (body, code) in [
        ("{\"context\": ", "PARSE_ERROR"),
        ("{\"context\": \"u1\"}", "INVALID_CONTEXT"),
        ("{\"targetingKey\": \"u1\"}", "INVALID_CONTEXT"),
        (
            "{\"context\": {\"targetingKey\": \"u1\", \"roles\": [\"admin\"]}}",
            "INVALID_CONTEXT",
        ),
    ] {
        let reply = evaluate(&seawall, "/ofrep/v1/evaluate/flags/dark-mode", body, &[]).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(reply.json()["errorCode"], code, "{body}");
        assert_eq!(reply.json()["key"], "dark-mode");
        assert_schema(&reply.json(), "evaluationFailure");
    }
    let get = send(
        Method::GET,
        &seawall.proxy_url("/ofrep/v1/evaluate/flags/dark-mode"),
        &[],
        full(Bytes::new()),
    )
    .await;
    assert_eq!(get.status, 405);
}

#[tokio::test]
async fn bulk_evaluation_carries_a_strong_etag_and_answers_304() {
    let seawall = Seawall::start("");
    flags(&seawall).await;
    let body = json!({"context": {"targetingKey": "ann"}}).to_string();
    let first = evaluate(&seawall, "/ofrep/v1/evaluate/flags", &body, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_schema(&first.json(), "bulkEvaluationSuccess");
    let listed: Vec<String> = first.json()["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "beta",
            "dark-mode",
            "kill-switch",
            "limits",
            "retries",
            "theme"
        ],
        "seawall's own features are not listed"
    );
    let etag = first.header("etag").unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"),
        "strong ETag: {etag}"
    );

    let again = evaluate(
        &seawall,
        "/ofrep/v1/evaluate/flags",
        &body,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let other_context = json!({"context": {"targetingKey": "carl"}}).to_string();
    let other = evaluate(
        &seawall,
        "/ofrep/v1/evaluate/flags",
        &other_context,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(
        other.status, 200,
        "a different context yields a different body, so a different ETag"
    );
    assert_ne!(other.header("etag"), Some(etag.as_str()));

    create(&seawall, json!({"name": "late", "enabled": true})).await;
    let changed = evaluate(
        &seawall,
        "/ofrep/v1/evaluate/flags",
        &body,
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(changed.status, 200, "a flag change changes the ETag");

    let bad = evaluate(
        &seawall,
        "/ofrep/v1/evaluate/flags",
        "{\"context\": []}",
        &[],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["errorCode"], "INVALID_CONTEXT");
    assert_schema(&bad.json(), "bulkEvaluationFailure");
}

#[tokio::test]
async fn configured_evaluation_keys_are_required() {
    let key = "ofrep-key-0123456789abcdef";
    let seawall = Seawall::start(&format!("[ofrep]\nkeys = [\"{key}\"]\n"));
    let body = json!({"context": {"targetingKey": "u1"}}).to_string();
    let path = "/ofrep/v1/evaluate/flags/seawall.audit-trail";
    assert_eq!(evaluate(&seawall, path, &body, &[]).await.status, 401);
    assert_eq!(
        evaluate(
            &seawall,
            path,
            &body,
            &[("x-api-key", "wrong-key-0123456789abcdef")]
        )
        .await
        .status,
        401
    );
    assert_eq!(
        evaluate(&seawall, path, &body, &[("x-api-key", key)])
            .await
            .status,
        200
    );
    assert_eq!(
        evaluate(
            &seawall,
            path,
            &body,
            &[("authorization", &format!("Bearer {key}"))]
        )
        .await
        .status,
        200
    );
}
