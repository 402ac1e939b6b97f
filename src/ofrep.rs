//! OFREP, the OpenFeature Remote Evaluation Protocol (`../shared/specs/ofrep/openapi.yaml`),
//! on the proxy listener:
//!
//! | path | answers |
//! |---|---|
//! | `POST /ofrep/v1/evaluate/flags/{key}` | one flag: 200, 404 `FLAG_NOT_FOUND`, 400 `PARSE_ERROR` / `INVALID_CONTEXT` |
//! | `POST /ofrep/v1/evaluate/flags` | every flag (seawall's own `seawall.*` features excepted), with a strong `ETag` over the body; 304 on a matching `If-None-Match` |
//!
//! The OFREP context maps onto Unleash's: `targetingKey` is `userId`; `sessionId`,
//! `remoteAddress`, `environment`, `appName` and `currentTime` keep their meaning; every other
//! key is a property. Without `remoteAddress`, the client address of the request is used.
//! When evaluation keys are configured, a request needs one as `X-API-Key` or bearer token.
//!
//! Boolean flags answer `value: true|false`. Flags with variants answer the chosen variant's
//! payload (`string`/`csv` as a string, `number` as a number, `json` as the parsed value) or its
//! name when it has none; when such a flag is off they answer without a value (the protocol's
//! "code default") so the application's default applies and the value's type never flips.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use crate::body::{self, Body, RequestBody};
use crate::error::Error;
use crate::flags::model::Payload;
use crate::flags::store::Snapshot;
use crate::flags::validate::RESERVED_PREFIX;
use crate::flags::{Context, Evaluation, Now};
use crate::hex;
use crate::request_context::RequestContext;
use crate::state::AppState;

/// Evaluation requests carry a context, not documents; 64 KiB is generous.
const MAX_BODY_BYTES: u64 = 64 * 1024;

pub const BULK_PATH: &str = "/ofrep/v1/evaluate/flags";

/// Which OFREP endpoint a path names.
pub enum Endpoint {
    Single(String),
    Bulk,
}

impl Endpoint {
    pub fn from_path(path: &str) -> Option<Endpoint> {
        if path == BULK_PATH {
            return Some(Endpoint::Bulk);
        }
        let key = path.strip_prefix(BULK_PATH)?.strip_prefix('/')?;
        if key.is_empty() || key.contains('/') {
            return None;
        }
        let key = percent_encoding::percent_decode_str(key)
            .decode_utf8()
            .ok()?;
        Some(Endpoint::Single(key.into_owned()))
    }
}

/// Serves one OFREP request.
pub async fn serve(
    state: &AppState,
    endpoint: Endpoint,
    request: Request<RequestBody>,
    ctx: &RequestContext,
) -> Result<Response<Body>, Error> {
    if request.method() != http::Method::POST {
        return Err(Error::MethodNotAllowed {
            allow: vec![http::Method::POST],
        });
    }
    if !authorized(state, request.headers()) {
        return Err(Error::Unauthorized);
    }
    let (parts, incoming) = request.into_parts();
    let bytes = body::read_limited(incoming, MAX_BODY_BYTES).await?;
    let key = match &endpoint {
        Endpoint::Single(key) => Some(key.as_str()),
        Endpoint::Bulk => None,
    };
    let context = match parse_context(&bytes, ctx) {
        Ok(context) => context,
        Err((code, details)) => return Ok(failure(StatusCode::BAD_REQUEST, key, code, &details)),
    };
    let snapshot = state.flags.snapshot();
    Ok(match endpoint {
        Endpoint::Single(key) => single(state, &snapshot, &key, &context),
        Endpoint::Bulk => bulk(state, &snapshot, &context, &parts.headers),
    })
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let keys = &state.config.flags.ofrep_keys;
    if keys.is_empty() {
        return true;
    }
    let presented = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    let Some(presented) = presented.map(str::trim) else {
        return false;
    };
    // Every key is compared, so the time taken does not say which one nearly matched.
    keys.iter().fold(false, |found, key| {
        found | bool::from(presented.as_bytes().ct_eq(key.expose().as_bytes()))
    })
}

fn single(state: &AppState, snapshot: &Snapshot, key: &str, context: &Context) -> Response<Body> {
    match state.flags.evaluate(snapshot, key, context, Now::System) {
        Some(evaluation) => body::json(StatusCode::OK, &success(key, &evaluation)),
        None => body::json(
            StatusCode::NOT_FOUND,
            &json!({"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": format!("flag '{key}' was not found")}),
        ),
    }
}

fn bulk(
    state: &AppState,
    snapshot: &Snapshot,
    context: &Context,
    headers: &HeaderMap,
) -> Response<Body> {
    let now = chrono::Utc::now();
    let flags: Vec<Value> = snapshot
        .set
        .names()
        .iter()
        .filter(|name| !name.starts_with(RESERVED_PREFIX))
        .filter_map(|name| {
            let evaluation = state.flags.evaluate(snapshot, name, context, now)?;
            Some(success(name, &evaluation))
        })
        .collect();
    let bytes = serde_json::to_vec(&json!({ "flags": flags })).expect("JSON serializes");
    let etag = format!(
        "\"{}\"",
        hex::encode(&ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref()[..16])
    );
    let etag_value = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    if none_match(headers, &etag) {
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().insert(header::ETAG, etag_value);
        return response;
    }
    let mut response = Response::new(body::full(Bytes::from(bytes)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(header::ETAG, etag_value);
    response
}

/// `If-None-Match` per RFC 9110: `*`, or a list of tags compared weakly.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        })
}

fn success(key: &str, evaluation: &Evaluation<'_>) -> Value {
    let mut out = json!({ "key": key, "reason": evaluation.reason.as_str() });
    if !evaluation.has_variants {
        out["value"] = json!(evaluation.enabled);
        out["variant"] = json!(if evaluation.enabled { "on" } else { "off" });
        return out;
    }
    if let (true, Some(variant)) = (evaluation.enabled, evaluation.variant) {
        out["value"] = match variant.payload {
            Some(payload) => payload_value(payload),
            None => json!(variant.name),
        };
        out["variant"] = json!(variant.name);
    }
    out
}

/// A variant payload as a typed OFREP value. JSON arrays, which OFREP cannot carry as a value,
/// stay a string.
fn payload_value(payload: &Payload) -> Value {
    match payload.kind.as_str() {
        "number" => match payload.value.trim().parse::<i64>() {
            Ok(integer) => json!(integer),
            Err(_) => payload
                .value
                .trim()
                .parse::<f64>()
                .map(|f| json!(f))
                .unwrap_or_else(|_| json!(payload.value)),
        },
        "json" => match serde_json::from_str::<Value>(&payload.value) {
            Ok(value) if !value.is_array() && !value.is_null() => value,
            _ => json!(payload.value),
        },
        _ => json!(payload.value),
    }
}

/// The OFREP request body as an Unleash context, or (error code, details).
fn parse_context(bytes: &[u8], ctx: &RequestContext) -> Result<Context, (&'static str, String)> {
    let body: Value = serde_json::from_slice(bytes)
        .map_err(|e| ("PARSE_ERROR", format!("the body is not valid JSON: {e}")))?;
    let Some(object) = body.as_object() else {
        return Err((
            "INVALID_CONTEXT",
            "the body must be a JSON object with a \"context\" object".to_string(),
        ));
    };
    let fields: Map<String, Value> = match object.get("context") {
        Some(Value::Object(fields)) => fields.clone(),
        Some(_) => {
            return Err((
                "INVALID_CONTEXT",
                "\"context\" must be an object".to_string(),
            ));
        }
        None => {
            return Err((
                "INVALID_CONTEXT",
                "the body has no \"context\" object".to_string(),
            ));
        }
    };
    let mut context = Context::default();
    for (key, value) in fields {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err((
                    "INVALID_CONTEXT",
                    format!("context property {key:?} must be a string, number or boolean"),
                ));
            }
        };
        match key.as_str() {
            "targetingKey" => context.user_id = Some(text),
            "sessionId" => context.session_id = Some(text),
            "remoteAddress" => context.remote_address = Some(text),
            "environment" => context.environment = Some(text),
            "appName" => context.app_name = Some(text),
            "currentTime" => context.current_time = Some(text),
            _ => {
                context.properties.insert(key, text);
            }
        }
    }
    if context.remote_address.is_none() {
        context.remote_address = Some(ctx.client_address.clone());
    }
    Ok(context)
}

fn failure(status: StatusCode, key: Option<&str>, code: &str, details: &str) -> Response<Body> {
    let mut out = json!({ "errorCode": code, "errorDetails": details });
    if let Some(key) = key {
        out["key"] = json!(key);
    }
    body::json(status, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_ctx() -> RequestContext {
        RequestContext::new("203.0.113.5:1000".parse().unwrap(), &HeaderMap::new(), &[])
    }

    #[test]
    fn contexts_map_onto_unleash_fields() {
        let body = br#"{"context":{"targetingKey":"u1","plan":"pro","age":42,"beta":true,"gone":null,"environment":"prod"}}"#;
        let context = parse_context(body, &request_ctx()).unwrap();
        assert_eq!(context.user_id.as_deref(), Some("u1"));
        assert_eq!(context.environment.as_deref(), Some("prod"));
        assert_eq!(context.properties["plan"], "pro");
        assert_eq!(context.properties["age"], "42");
        assert_eq!(context.properties["beta"], "true");
        assert!(!context.properties.contains_key("gone"));
        assert_eq!(
            context.remote_address.as_deref(),
            Some("203.0.113.5"),
            "the request's client address by default"
        );
    }

    #[test]
    fn malformed_requests_name_their_error() {
        let code = |body: &[u8]| parse_context(body, &request_ctx()).unwrap_err().0;
        assert_eq!(code(b"{not json"), "PARSE_ERROR");
        assert_eq!(code(b"[]"), "INVALID_CONTEXT");
        assert_eq!(code(br#"{"context":"u1"}"#), "INVALID_CONTEXT");
        assert_eq!(code(br#"{"ctx":{}}"#), "INVALID_CONTEXT");
        assert_eq!(code(br#"{"context":{"tags":["a"]}}"#), "INVALID_CONTEXT");
    }

    #[test]
    fn payloads_become_typed_values() {
        let p = |kind: &str, value: &str| {
            payload_value(&Payload {
                kind: kind.into(),
                value: value.into(),
            })
        };
        assert_eq!(p("number", "42"), json!(42));
        assert_eq!(p("number", "1.5"), json!(1.5));
        assert_eq!(p("json", r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(p("json", "[1,2]"), json!("[1,2]"));
        assert_eq!(p("string", "blue"), json!("blue"));
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_static("\"x\", W/\"abc\""),
        );
        assert!(none_match(&headers, "\"abc\""));
        assert!(!none_match(&headers, "\"abd\""));
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(none_match(&headers, "\"anything\""));
    }
}
