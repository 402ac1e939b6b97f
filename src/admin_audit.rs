//! The audit admin API.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/audit/events` | headers of stored events, filtered, with a cursor (see `audit::query`) |
//! | `POST /admin/audit/events` | append an application event (see `audit::application`); answered once it is on disk |
//! | `GET /admin/audit/coverage` | how every route's requests are audited, method by method (see `audit::policy::coverage`) |
//! | `GET /admin/audit/verify?stream=&pubkey=` | recompute chains and check signed digests (see `audit::verify`) |
//! | `GET /admin/audit/digests?stream=&since=` | the signed digests and retention anchors, for an external monitor to copy |
//! | `GET /admin/audit/pubkey` | the digest-signing public key and its fingerprint |
//! | `POST /admin/audit/keys/rotate` | rotate the key-encryption key now |
//!
//! An appended event is its own record: the middleware's admin event for the call captures no
//! body (`audit::policy::admin`), which would copy the subjects' identifiers under the
//! operator's key.

use std::time::SystemTime;

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use std::collections::BTreeMap;

use crate::audit::query::{self, Query};
use crate::audit::{Stream, anchor, application, digest, policy};
use crate::body::{self, Body, RequestBody};
use crate::error::Error;
use crate::features::Feature;
use crate::hex;
use crate::request_context::new_request_id;
use crate::state::AppState;

/// Whether `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == "/admin/audit" || path.starts_with("/admin/audit/")
}

pub async fn handle(
    state: &AppState,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Error> {
    match (request.uri().path(), request.method()) {
        ("/admin/audit/events", &Method::GET) => search(state, request.uri().query()).await,
        ("/admin/audit/events", &Method::POST) => append(state, request).await,
        ("/admin/audit/events", _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::GET, Method::POST],
        }),
        ("/admin/audit/coverage", &Method::GET) => Ok(body::json(StatusCode::OK, &coverage(state))),
        ("/admin/audit/verify", &Method::GET) => verify(state, request.uri().query()).await,
        ("/admin/audit/digests", &Method::GET) => digests(state, request.uri().query()).await,
        ("/admin/audit/pubkey", &Method::GET) => Ok(body::json(StatusCode::OK, &public_key(state))),
        ("/admin/audit/keys/rotate", &Method::POST) => {
            let rotation = state
                .audit
                .rotate_kek()
                .await
                .map_err(|e| Error::Internal(format!("KEK rotation: {e}")))?;
            Ok(body::json(StatusCode::OK, &rotation))
        }
        (
            "/admin/audit/coverage"
            | "/admin/audit/verify"
            | "/admin/audit/digests"
            | "/admin/audit/pubkey",
            _,
        ) => Err(Error::MethodNotAllowed {
            allow: vec![Method::GET],
        }),
        ("/admin/audit/keys/rotate", _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::POST],
        }),
        _ => Err(Error::NotFound),
    }
}

async fn search(state: &AppState, query: Option<&str>) -> Result<Response<Body>, Error> {
    let query =
        Query::parse(query).map_err(|(field, message)| Error::Validation { field, message })?;
    let log = state.audit.log.clone();
    let page = tokio::task::spawn_blocking(move || query::run(&log, &query))
        .await
        .map_err(|_| Error::Internal("the audit query panicked".to_string()))?
        .map_err(|e| Error::Internal(format!("audit query: {e}")))?;
    Ok(body::json(StatusCode::OK, &page))
}

async fn append(state: &AppState, request: Request<RequestBody>) -> Result<Response<Body>, Error> {
    let bytes = body::read_limited(
        request.into_body(),
        state.config.server.admin_max_body_bytes,
    )
    .await?;
    let fields: serde_json::Map<String, serde_json::Value> = body::parse_json(&bytes)?;
    let id = new_request_id();
    let draft = application::draft(fields, &id, SystemTime::now())
        .map_err(|(field, message)| Error::Validation { field, message })?;
    let stream = draft.stream;
    state.audit.record(draft).await;
    state.audit.flush().await;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"ok": true, "id": id, "stream": stream.as_str()}),
    ))
}

/// The coverage table of the configured routes, then the built-in ones, and whether request
/// auditing is switched on at all.
fn coverage(state: &AppState) -> serde_json::Value {
    let configured = state
        .config
        .routes
        .iter()
        .map(|route| (route.name.as_str(), route.audit.as_ref()));
    let builtin = ["ofrep", "unmatched", policy::HEALTH_ROUTE].map(|name| (name, None));
    let flag = Feature::AuditTrail.flag();
    json!({
        "feature": {"flag": flag, "switched_on": state.flags.is_switched_on(flag)},
        "require_explicit_coverage": state.config.audit.require_explicit_coverage,
        "routes": policy::coverage(&state.config.audit.rules, configured.chain(builtin)),
    })
}

fn public_key(state: &AppState) -> serde_json::Value {
    let key = state.audit.public_key();
    json!({
        "alg": digest::ALGORITHM,
        "public_key": hex::encode(key.as_bytes()),
        "key_fingerprint": digest::fingerprint(&key),
    })
}

/// `stream` (one or all) and, for `verify`, a `pubkey` to pin instead of this machine's own.
fn streams_param(params: &BTreeMap<String, String>) -> Result<Vec<Stream>, Error> {
    match params.get("stream") {
        None => Ok(Stream::ALL.to_vec()),
        Some(name) => Stream::parse(name).map(|s| vec![s]).ok_or_else(|| Error::Validation {
            field: "stream".to_string(),
            message: format!(
                "{name:?} is not a stream (expected security, access, data_change, gdpr or system)"
            ),
        }),
    }
}

fn params(query: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if !allowed.contains(&key.as_ref()) {
            return Err(Error::Validation {
                field: key.into_owned(),
                message: format!("unknown parameter (expected one of {allowed:?})"),
            });
        }
        out.insert(key.into_owned(), value.into_owned());
    }
    Ok(out)
}

async fn verify(state: &AppState, query: Option<&str>) -> Result<Response<Body>, Error> {
    let params = params(query, &["stream", "pubkey"])?;
    let streams = streams_param(&params)?;
    let pinned = match params.get("pubkey") {
        None => state.audit.public_key(),
        Some(text) => digest::parse_public_key(text).ok_or_else(|| Error::Validation {
            field: "pubkey".to_string(),
            message: "must be a 64-digit hex Ed25519 public key".to_string(),
        })?,
    };
    // The call itself is an audit.read event; a failure also records integrity.failure.
    let report = state
        .audit
        .verify_against(Some(streams), pinned, false)
        .await
        .map_err(|e| Error::Internal(format!("audit verification: {e}")))?;
    Ok(body::json(StatusCode::OK, &report))
}

async fn digests(state: &AppState, query: Option<&str>) -> Result<Response<Body>, Error> {
    let params = params(query, &["stream", "since"])?;
    let streams = streams_param(&params)?;
    let since = match params.get("since") {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| Error::Validation {
            field: "since".to_string(),
            message: "must be a digest number (a non-negative integer)".to_string(),
        })?,
    };
    let log = state.audit.log.clone();
    let (listed, anchors) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let mut anchors = Vec::new();
        for stream in streams {
            // An unreadable anchor is verify's finding too.
            if let Ok(Some(anchor)) = anchor::load(&log, stream) {
                anchors.push(anchor.public_json(&log.origin, stream));
            }
            for item in digest::list(&log, stream, since)? {
                // An undecodable digest is verify's finding; the feed lists what it can.
                if let Ok(d) = item {
                    out.push(d);
                }
                if out.len() >= digest::FEED_PAGE {
                    break;
                }
            }
        }
        Ok::<_, crate::store::StoreError>((out, anchors))
    })
    .await
    .map_err(|_| Error::Internal("the digest listing panicked".to_string()))?
    .map_err(|e| Error::Internal(format!("audit digests: {e}")))?;
    let mut answer = public_key(state);
    answer["digests"] = json!(listed);
    answer["anchors"] = json!(anchors);
    Ok(body::json(StatusCode::OK, &answer))
}
