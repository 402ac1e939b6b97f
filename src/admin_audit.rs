//! The audit admin API.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/audit/events` | headers of stored events, filtered, with a cursor (see `audit::query`) |
//! | `POST /admin/audit/events` | append an application event (see `audit::application`); answered once it is on disk |
//!
//! An appended event is its own record: the middleware does not add an admin event for it,
//! which would copy the subjects' identifiers under the operator's key.

use std::time::SystemTime;

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::audit::application;
use crate::audit::query::{self, Query};
use crate::body::{self, Body, RequestBody};
use crate::error::Error;
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
