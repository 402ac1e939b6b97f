//! SQL routes: a route with `postgres = "SELECT ... $1 ..."` runs that one statement and
//! answers its rows as a JSON array that PostgreSQL itself builds (`json_agg`).
//!
//! Parameters are bound, never interpolated: each name in `params` is taken from the path
//! (`{name}` segments), else the query string, else a field of a JSON object body, and sent as
//! text; the statement casts them (`$1::bigint`), so PostgreSQL validates them. A JSON `null`
//! binds SQL NULL; objects and arrays bind their JSON text (for `$1::jsonb`). Statements that
//! change data need `RETURNING` to have rows to answer. The pool and its failure handling are
//! `pg`'s business.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use serde_json::Value;

use crate::body::{self, Body, RequestBody};
use crate::config::SqlRoute;
use crate::error::Error;
use crate::path_pattern::Params;
use crate::pg::DbError;
use crate::request_context::RequestContext;
use crate::route::Route;
use crate::state::AppState;

pub async fn serve(
    state: &AppState,
    route: &Route,
    sql: &SqlRoute,
    wrapped: Arc<str>,
    path: Params,
    request: Request<RequestBody>,
    ctx: &RequestContext,
) -> Result<Response<Body>, Error> {
    let database = state
        .database
        .as_ref()
        .ok_or_else(|| Error::Internal("a SQL route without a database".into()))?;
    let query: HashMap<String, String> = match request.uri().query() {
        Some(query) => form_urlencoded::parse(query.as_bytes()).into_owned().fold(
            HashMap::new(),
            |mut map, (k, v)| {
                map.entry(k).or_insert(v);
                map
            },
        ),
        None => HashMap::new(),
    };
    let mut values: Vec<Option<Option<String>>> = sql
        .params
        .iter()
        .map(|name| {
            let from_path = path.iter().find(|(n, _)| n == name).map(|(_, v)| decode(v));
            from_path.or_else(|| query.get(name).cloned()).map(Some)
        })
        .collect();
    if values.iter().any(Option::is_none) {
        let bytes = body::read_limited(request.into_body(), route.config.max_body_bytes).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            let fields: serde_json::Map<String, Value> = match serde_json::from_slice(&bytes) {
                Ok(Value::Object(fields)) => fields,
                Ok(_) => {
                    return Err(Error::BadRequest(
                        "The body must be a JSON object of parameters.".into(),
                    ));
                }
                Err(e) => {
                    return Err(Error::BadRequest(format!(
                        "The body is not valid JSON: {e}"
                    )));
                }
            };
            for (value, name) in values.iter_mut().zip(&sql.params) {
                if value.is_none() {
                    *value = fields.get(name).map(bind);
                }
            }
        }
    }
    let values: Vec<Option<String>> = values
        .into_iter()
        .zip(&sql.params)
        .map(|(value, name)| value.ok_or_else(|| Error::MissingParameter(name.clone())))
        .collect::<Result<_, _>>()?;
    let rows = database
        .query_json(wrapped, values, state.call_options(ctx))
        .await
        .map_err(database_error)?;
    let mut response = Response::new(body::full(rows));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// A JSON body field as a text parameter.
fn bind(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn database_error(error: DbError) -> Error {
    match error {
        DbError::CircuitOpen(rejected) => Error::CircuitOpen {
            breaker: "postgres".into(),
            retry_after: rejected.retry_after,
        },
        DbError::QueueFull | DbError::PoolTimeout { unavailable: false } => Error::DatabaseBusy,
        DbError::PoolTimeout { unavailable: true } => {
            Error::DatabaseUnavailable("no connection could be made".into())
        }
        DbError::Connection(detail) => Error::DatabaseUnavailable(detail),
        DbError::Closed => Error::DatabaseUnavailable("shutting down".into()),
        DbError::Timeout => Error::QueryTimeout,
        DbError::Rejected { sqlstate, conflict } => Error::QueryRejected { sqlstate, conflict },
        DbError::Failed { sqlstate, detail } => Error::QueryFailed { sqlstate, detail },
    }
}
