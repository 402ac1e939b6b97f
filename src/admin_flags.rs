//! The flag admin API (admin listener, bearer token checked by `admin`).
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/flags` | every flag with its metadata |
//! | `POST /admin/flags` | create (201, `ETag`, `Location`); 409 `FLAG_EXISTS` |
//! | `GET /admin/flags/{name}` | one flag and its metadata, with `ETag` |
//! | `PUT /admin/flags/{name}` | replace; `If-Match` optional, 412 when stale |
//! | `PATCH /admin/flags/{name}` | JSON merge patch (RFC 7396); `If-Match` as above |
//! | `DELETE /admin/flags/{name}` | delete (204); seawall's own features, flags that gate a configured route (409 `FLAG_IN_USE`) and flags others depend on (409 `FLAG_HAS_DEPENDENTS`) cannot be deleted |
//! | `GET /admin/flags/{name}/history` | every change: version, time, actor, action, before, after |
//! | `POST /admin/flags/{name}/reset` | back to the configured (`FF_*`, `[features]`) definition |
//! | `POST /admin/flags/import` | an Unleash state `{version, features, segments}`, all or nothing |
//! | `GET /admin/segments` | the segments strategies can reference |
//!
//! The actor recorded in the history is the `X-Seawall-Actor` header, else `admin`. Every
//! change is flushed to disk before the answer.

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};

use crate::body::{self, Body, RequestBody};
use crate::error::Error;
use crate::flags::model::{Flag, State};
use crate::flags::store::{Record, WriteError};
use crate::state::AppState;

/// What a flag name needs encoded in a path segment: everything but RFC 3986's unreserved
/// characters, so `new-checkout` stays readable.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

enum Route {
    Collection,
    Import,
    Flag(String),
    History(String),
    Reset(String),
    Segments,
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/admin/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let name = |segment: &str| {
        percent_encoding::percent_decode_str(segment)
            .decode_utf8()
            .ok()
            .map(|n| n.into_owned())
    };
    Some(match parts.as_slice() {
        ["flags"] => Route::Collection,
        ["flags", "import"] => Route::Import,
        ["flags", n] if !n.is_empty() => Route::Flag(name(n)?),
        ["flags", n, "history"] if !n.is_empty() => Route::History(name(n)?),
        ["flags", n, "reset"] if !n.is_empty() => Route::Reset(name(n)?),
        ["segments"] => Route::Segments,
        _ => return None,
    })
}

/// Whether `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == "/admin/flags" || path.starts_with("/admin/flags/") || path == "/admin/segments"
}

pub async fn handle(
    state: &AppState,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Error> {
    let Some(route) = route(request.uri().path()) else {
        return Err(Error::NotFound);
    };
    let method = request.method().clone();
    // Judged only where a change is made: a read or a wrong method is answered whatever the
    // header says.
    let actor = crate::admin::actor(request.headers());
    let if_match = request
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let flags = &state.flags;
    match (route, method) {
        (Route::Collection, Method::GET) => {
            let snapshot = flags.snapshot();
            let list: Vec<Value> = snapshot
                .records
                .values()
                .filter(|r| r.flag.is_some())
                .map(view)
                .collect();
            Ok(body::json(StatusCode::OK, &json!({ "flags": list })))
        }
        (Route::Collection, Method::POST) => {
            let flag: Flag = read(state, request).await?;
            let record = flags.create(flag, &actor?).await.map_err(write_error)?;
            let mut response = with_etag(StatusCode::CREATED, &record);
            let name = record
                .flag
                .as_ref()
                .map(|f| f.name.as_str())
                .unwrap_or_default();
            let location = format!(
                "/admin/flags/{}",
                percent_encoding::utf8_percent_encode(name, PATH_SEGMENT)
            );
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
        (Route::Import, Method::POST) => {
            let state_doc: State = read(state, request).await?;
            let imported = flags
                .import(state_doc, &actor?)
                .await
                .map_err(write_error)?;
            Ok(body::json(StatusCode::OK, &json!({ "imported": imported })))
        }
        (Route::Flag(name), Method::GET) => {
            let snapshot = flags.snapshot();
            let (_, record) = snapshot.live(&name).ok_or(Error::FlagNotFound(name))?;
            Ok(with_etag(StatusCode::OK, record))
        }
        (Route::Flag(name), Method::PUT) => {
            let flag: Flag = read(state, request).await?;
            let record = flags
                .replace(&name, flag, if_match.as_deref(), &actor?)
                .await
                .map_err(write_error)?;
            Ok(with_etag(StatusCode::OK, &record))
        }
        (Route::Flag(name), Method::PATCH) => {
            let patch: Value = read(state, request).await?;
            if !patch.is_object() {
                return Err(Error::BadRequest(
                    "A merge patch must be a JSON object.".to_string(),
                ));
            }
            let record = flags
                .patch(&name, &patch, if_match.as_deref(), &actor?)
                .await
                .map_err(write_error)?;
            Ok(with_etag(StatusCode::OK, &record))
        }
        (Route::Flag(name), Method::DELETE) => {
            let actor = actor?;
            let gated = state
                .config
                .routes
                .iter()
                .find(|route| route.flag.as_deref() == Some(name.as_str()));
            if let Some(route) = gated
                && flags.snapshot().live(&name).is_some()
            {
                return Err(Error::Conflict {
                    code: "FLAG_IN_USE",
                    message: format!(
                        "Route {:?} is served only while this flag is on: deleted, the route would answer 404 for everyone. Switch the flag off instead (PATCH {{\"enabled\": false}}), or take the flag out of the route's configuration first.",
                        route.name
                    ),
                });
            }
            flags
                .delete(&name, if_match.as_deref(), &actor)
                .await
                .map_err(write_error)?;
            let mut response = Response::new(body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        (Route::History(name), Method::GET) => {
            let store = flags.clone();
            let lookup = name.clone();
            let history = tokio::task::spawn_blocking(move || store.history(&lookup))
                .await
                .expect("history task does not panic")
                .map_err(|e| Error::Internal(e.to_string()))?;
            if history.is_empty() {
                return Err(Error::FlagNotFound(name));
            }
            Ok(body::json(
                StatusCode::OK,
                &json!({ "name": name, "history": history }),
            ))
        }
        (Route::Reset(name), Method::POST) => {
            let record = flags.reset(&name, &actor?).await.map_err(write_error)?;
            Ok(with_etag(StatusCode::OK, &record))
        }
        (Route::Segments, Method::GET) => {
            let snapshot = flags.snapshot();
            let segments: Vec<_> = snapshot.segments.values().collect();
            Ok(body::json(StatusCode::OK, &json!({ "segments": segments })))
        }
        (route, _) => Err(Error::MethodNotAllowed {
            allow: allowed(&route),
        }),
    }
}

fn allowed(route: &Route) -> Vec<Method> {
    match route {
        Route::Collection => vec![Method::GET, Method::POST],
        Route::Import | Route::Reset(_) => vec![Method::POST],
        Route::Flag(_) => vec![Method::GET, Method::PUT, Method::PATCH, Method::DELETE],
        Route::History(_) | Route::Segments => vec![Method::GET],
    }
}

/// Reads and parses a JSON body within the admin body limit. The content type is not checked:
/// `curl -d` labels JSON as a form, and the parse says precisely what is wrong anyway.
async fn read<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request: Request<RequestBody>,
) -> Result<T, Error> {
    let bytes = body::read_limited(
        request.into_body(),
        state.config.server.admin_max_body_bytes,
    )
    .await?;
    body::parse_json(&bytes)
}

/// A flag and its metadata as the API shows them.
fn view(record: &Record) -> Value {
    let meta = &record.meta;
    json!({
        "flag": record.flag,
        "meta": {
            "origin": meta.origin,
            "version": meta.version,
            "etag": record.etag(),
            "createdAt": meta.created_at,
            "updatedAt": meta.updated_at,
            "updatedBy": meta.updated_by,
            "overridden": meta.overridden,
            "configured": meta.configured.is_some(),
        },
    })
}

fn with_etag(status: StatusCode, record: &Record) -> Response<Body> {
    let mut response = body::json(status, &view(record));
    if let Ok(value) = HeaderValue::from_str(&record.etag()) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

fn write_error(error: WriteError) -> Error {
    match error {
        WriteError::NotFound(name) => Error::FlagNotFound(name),
        WriteError::Exists(name) => Error::Conflict {
            code: "FLAG_EXISTS",
            message: format!("Flag {name:?} already exists."),
        },
        WriteError::Stale { current } => Error::PreconditionFailed { current },
        WriteError::Invalid(e) => Error::Validation {
            field: e.field,
            message: e.message,
        },
        WriteError::HasDependents { name, dependents } => Error::Conflict {
            code: "FLAG_HAS_DEPENDENTS",
            message: format!(
                "Flags {dependents:?} depend on {name:?}: deleted, it would leave them off for everyone. Remove those dependencies first, or switch {name:?} off instead."
            ),
        },
        WriteError::Reserved(message) => Error::Conflict {
            code: "RESERVED_FLAG",
            message,
        },
        e @ WriteError::NoConfiguration(_) => Error::Conflict {
            code: "NO_CONFIGURATION",
            message: e.to_string(),
        },
        WriteError::Store(e) => Error::StoreUnavailable(e.to_string()),
    }
}
