//! The GDPR admin API (SPEC §8 and §10, research/audit.md §3.2).
//!
//! | method and path | what |
//! |---|---|
//! | `POST /admin/gdpr/export` | `{"identifiers":[{"type","value"}], "reason"?, "ticket"?}`: everything stored about the subject (Art 15) |
//! | `POST /admin/gdpr/erase` | `{"identifiers", "dry_run"?, "reason"?, "ticket"?}` with an optional `Idempotency-Key` header: the plan, or its execution (Art 17) |
//! | `GET /admin/gdpr/holds`, `POST /admin/gdpr/holds`, `DELETE /admin/gdpr/holds/{id}` | legal holds (`{"identifiers", "streams"?, "case"}`) |
//! | `GET /admin/gdpr/processing-record` | the Art 30 record of the audit trail, from the running configuration |
//!
//! Identifiers only ever travel in POST bodies, and the events these calls leave name no
//! subject: the middleware captures no body here (`audit::policy::admin`), and each call's own
//! `gdpr.*` event carries counts in its header and the operator's ticket and reason sealed
//! under the operator's key.

use std::time::SystemTime;

use http::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::event::{IdKind, Role, Stream, Subject, rfc3339_nanos};
use crate::audit::gdpr::{self, Hold};
use crate::audit::manifest;
use crate::audit::{Draft, event};
use crate::body::{self, Body, RequestBody};
use crate::error::Error;
use crate::hex;
use crate::request_context::new_request_id;
use crate::state::AppState;
use crate::store::StoreError;

const MAX_IDENTIFIERS: usize = 16;
const MAX_VALUE: usize = 512;
const MAX_TEXT: usize = 500;

/// Whether `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == "/admin/gdpr" || path.starts_with("/admin/gdpr/")
}

pub async fn handle(
    state: &AppState,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_string();
    // Judged only where a change is made, so that a wrong method is answered 405 whatever the
    // header says.
    let operator = crate::admin::actor(request.headers());
    match (path.as_str(), request.method()) {
        ("/admin/gdpr/export", &Method::POST) => export(state, request, &operator?).await,
        ("/admin/gdpr/erase", &Method::POST) => erase(state, request, &operator?).await,
        ("/admin/gdpr/holds", &Method::GET) => list_holds(state).await,
        ("/admin/gdpr/holds", &Method::POST) => create_hold(state, request, &operator?).await,
        ("/admin/gdpr/processing-record", &Method::GET) => Ok(body::json(
            StatusCode::OK,
            &gdpr::processing_record(&state.audit.config),
        )),
        ("/admin/gdpr/export" | "/admin/gdpr/erase", _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::POST],
        }),
        ("/admin/gdpr/holds", _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::GET, Method::POST],
        }),
        ("/admin/gdpr/processing-record", _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::GET],
        }),
        (_, method) => match path.strip_prefix("/admin/gdpr/holds/") {
            Some(id) if *method == Method::DELETE => remove_hold(state, id, &operator?).await,
            Some(_) => Err(Error::MethodNotAllowed {
                allow: vec![Method::DELETE],
            }),
            None => Err(Error::NotFound),
        },
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportRequest {
    identifiers: Vec<Identifier>,
    reason: Option<String>,
    ticket: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EraseRequest {
    identifiers: Vec<Identifier>,
    #[serde(default)]
    dry_run: bool,
    reason: Option<String>,
    ticket: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldRequest {
    identifiers: Vec<Identifier>,
    streams: Option<Vec<String>>,
    case: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Validation {
        field: field.into(),
        message: message.into(),
    }
}

fn subjects(identifiers: Vec<Identifier>) -> Result<Vec<Subject>, Error> {
    if identifiers.is_empty() || identifiers.len() > MAX_IDENTIFIERS {
        return Err(invalid(
            "identifiers",
            format!("must list 1-{MAX_IDENTIFIERS} identifiers of one subject"),
        ));
    }
    identifiers
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let kind = IdKind::parse(&id.kind).ok_or_else(|| {
                invalid(
                    format!("identifiers[{i}].type"),
                    format!(
                        "{:?} is not an identifier type (expected user_id, email, api_key_id or ip)",
                        id.kind
                    ),
                )
            })?;
            let value = id.value.trim();
            if value.is_empty() || value.len() > MAX_VALUE {
                return Err(invalid(
                    format!("identifiers[{i}].value"),
                    format!("must be 1-{MAX_VALUE} characters"),
                ));
            }
            if kind == IdKind::Ip && value.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    format!("identifiers[{i}].value"),
                    "is not an IP address",
                ));
            }
            Ok(Subject {
                kind,
                value: value.to_string(),
            })
        })
        .collect()
}

fn text(field: &str, value: &Option<String>) -> Result<(), Error> {
    match value {
        Some(v) if v.len() > MAX_TEXT => Err(invalid(
            field,
            format!("must be at most {MAX_TEXT} characters"),
        )),
        _ => Ok(()),
    }
}

async fn read<T: serde::de::DeserializeOwned>(
    state: &AppState,
    request: Request<RequestBody>,
) -> Result<(T, Vec<u8>), Error> {
    let bytes = body::read_limited(
        request.into_body(),
        state.config.server.admin_max_body_bytes,
    )
    .await?;
    Ok((body::parse_json(&bytes)?, bytes.to_vec()))
}

/// Records a `gdpr.*` event: counts in the header, the operator and their ticket and reason
/// sealed under the operator's key. Written and flushed before the caller answers.
async fn record(
    state: &AppState,
    event_type: &str,
    id: &str,
    fields: Value,
    operator: &str,
    details: Value,
) {
    let operator_subject = Subject {
        kind: IdKind::UserId,
        value: operator.to_string(),
    };
    let draft = Draft::new(Stream::Gdpr, event_type, "success", id, SystemTime::now())
        .field("gdpr", fields)
        .part(
            Role::Actor,
            Some(operator_subject.clone()),
            json!({"user_id": operator}),
        )
        .part(Role::Details, Some(operator_subject), details)
        .important();
    state.audit.record(draft).await;
    state.audit.flush().await;
}

async fn export(
    state: &AppState,
    request: Request<RequestBody>,
    operator: &str,
) -> Result<Response<Body>, Error> {
    let (ask, _) = read::<ExportRequest>(state, request).await?;
    text("reason", &ask.reason)?;
    text("ticket", &ask.ticket)?;
    let subjects = subjects(ask.identifiers)?;
    let log = state.audit.log.clone();
    // The subject is told the periods that apply to their data now (Art 15(1)(d)).
    let config = state.audit.effective_config();
    let now = SystemTime::now();
    let id = new_request_id();
    let request_id = id.clone();
    let document = tokio::task::spawn_blocking(move || {
        let found = gdpr::find(&log, &subjects)?;
        let document = gdpr::export(&log, &config, &found, now)?;
        Ok::<_, StoreError>(document.map(|mut document| {
            document["request_id"] = json!(request_id);
            manifest::attach(log.keyring.signing_key(), &mut document);
            document
        }))
    })
    .await
    .map_err(|_| Error::Internal("the export panicked".to_string()))?
    .map_err(|e| Error::Internal(format!("export: {e}")))?;
    let document = document.map_err(|events| Error::Conflict {
        code: "EXPORT_TOO_LARGE",
        message: format!(
            "The subject has {events} events; one export returns at most {}.",
            gdpr::MAX_EXPORT_EVENTS
        ),
    })?;
    let events = document["events"].as_array().map_or(0, Vec::len);
    record(
        state,
        "gdpr.access.exported",
        &id,
        json!({"events": events, "request_id": id}),
        operator,
        json!({"ticket": ask.ticket, "reason": ask.reason}),
    )
    .await;
    Ok(body::json(StatusCode::OK, &document))
}

async fn erase(
    state: &AppState,
    request: Request<RequestBody>,
    operator: &str,
) -> Result<Response<Body>, Error> {
    let idempotency = match request.headers().get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.trim().is_empty() && key.len() <= 200 => Some(key.trim().to_string()),
            _ => {
                return Err(invalid(
                    "Idempotency-Key",
                    "must be 1-200 printable characters",
                ));
            }
        },
    };
    let (ask, raw) = read::<EraseRequest>(state, request).await?;
    text("reason", &ask.reason)?;
    text("ticket", &ask.ticket)?;
    let subjects = subjects(ask.identifiers)?;
    let dry_run = ask.dry_run;
    // One erasure at a time: an idempotency key is checked and answered atomically.
    let _one_at_a_time = state.audit.erasures.lock().await;
    let slot = idempotency.as_deref().map(gdpr::idempotency_slot);
    let request_hash = gdpr::idempotency_slot(&String::from_utf8_lossy(&raw));
    if let Some(slot) = slot
        && let Some(answer) = answered(state, &slot, &request_hash)?
    {
        return Ok(body::json(StatusCode::OK, &answer));
    }
    let id = new_request_id();
    let log = state.audit.log.clone();
    let ledger = state.audit.ledger.clone();
    let config = state.audit.config.clone();
    let request_id = id.clone();
    let (plan, result) = tokio::task::spawn_blocking(move || {
        let found = gdpr::find(&log, &subjects)?;
        let plan = gdpr::plan(&log, &config, &found)?;
        let result = if dry_run {
            None
        } else {
            Some(gdpr::execute(
                &log,
                &ledger,
                &found,
                &plan,
                &request_id,
                SystemTime::now(),
            )?)
        };
        Ok::<_, crate::store::StoreError>((plan, result))
    })
    .await
    .map_err(|_| Error::Internal("the erasure panicked".to_string()))?
    .map_err(|e| Error::Internal(format!("erasure: {e}")))?;
    let plan: serde_json::Map<String, Value> = plan
        .iter()
        .map(|(stream, p)| (stream.as_str().to_string(), json!(p)))
        .collect();
    let answer = json!({
        "request_id": id,
        "status": if dry_run { "planned" } else { "completed" },
        "dry_run": dry_run,
        "plan": plan,
        "result": result,
        "physical_erasure_by": rfc3339_nanos(state.audit.next_rotation()),
    });
    if let Some(result) = &result {
        let streams: serde_json::Map<String, Value> = plan
            .iter()
            .map(|(stream, p)| (stream.clone(), p["action"].clone()))
            .collect();
        record(
            state,
            "gdpr.erasure.executed",
            &id,
            json!({"request_id": id, "result": result, "streams": streams}),
            operator,
            json!({"ticket": ask.ticket, "reason": ask.reason}),
        )
        .await;
        if let Some(slot) = slot {
            remember(state, &slot, &request_hash, &answer)?;
        }
    }
    Ok(body::json(StatusCode::OK, &answer))
}

fn requests_tree(state: &AppState) -> Result<sled::Tree, Error> {
    state
        .audit
        .log
        .store
        .tree(crate::store::trees::GDPR_REQUESTS)
        .map_err(|e| Error::Internal(format!("erasure requests: {e}")))
}

/// The stored answer of an executed erasure with this idempotency key; 409 when the key was
/// used for a different request body.
fn answered(
    state: &AppState,
    slot: &[u8; 32],
    request_hash: &[u8; 32],
) -> Result<Option<Value>, Error> {
    let Some(stored) = requests_tree(state)?
        .get(slot)
        .map_err(|e| Error::Internal(format!("erasure requests: {e}")))?
    else {
        return Ok(None);
    };
    let stored: Value = serde_json::from_slice(&stored)
        .map_err(|_| Error::Internal("an undecodable erasure request".to_string()))?;
    if stored["request_hash"] != json!(hex::encode(request_hash)) {
        return Err(Error::Conflict {
            code: "IDEMPOTENCY_KEY_REUSED",
            message: "This Idempotency-Key was used for a different request.".to_string(),
        });
    }
    Ok(Some(stored["answer"].clone()))
}

/// Keeps an executed erasure's answer under its idempotency key.
fn remember(
    state: &AppState,
    slot: &[u8; 32],
    request_hash: &[u8; 32],
    answer: &Value,
) -> Result<(), Error> {
    let stored = json!({"request_hash": hex::encode(request_hash), "answer": answer});
    let tree = requests_tree(state)?;
    let _writing = state.audit.log.store.writing();
    tree.insert(slot, serde_json::to_vec(&stored).expect("JSON"))
        .map_err(|e| Error::Internal(format!("erasure requests: {e}")))?;
    Ok(())
}

async fn list_holds(state: &AppState) -> Result<Response<Body>, Error> {
    let log = state.audit.log.clone();
    let holds = tokio::task::spawn_blocking(move || gdpr::holds(&log))
        .await
        .map_err(|_| Error::Internal("the hold listing panicked".to_string()))?
        .map_err(|e| Error::Internal(format!("holds: {e}")))?;
    let holds: Vec<Value> = holds.iter().map(shown).collect();
    Ok(body::json(StatusCode::OK, &json!({"holds": holds})))
}

/// A hold as the API shows it: how many pseudonyms, not which.
fn shown(hold: &Hold) -> Value {
    json!({
        "id": hold.id,
        "streams": hold.streams,
        "case": hold.case,
        "created": hold.created,
        "subject_pseudonyms": hold.pseudonyms.len(),
    })
}

async fn create_hold(
    state: &AppState,
    request: Request<RequestBody>,
    operator: &str,
) -> Result<Response<Body>, Error> {
    let (ask, _) = read::<HoldRequest>(state, request).await?;
    let case = ask.case.trim().to_string();
    if case.is_empty() || case.len() > 100 {
        return Err(invalid(
            "case",
            "must be a case reference of 1-100 characters (not personal data: it is stored in clear)",
        ));
    }
    let mut streams = Vec::new();
    for (i, name) in ask.streams.iter().flatten().enumerate() {
        streams.push(Stream::parse(name).ok_or_else(|| {
            invalid(
                format!("streams[{i}]"),
                format!("{name:?} is not a stream (expected security, access, data_change, gdpr or system)"),
            )
        })?);
    }
    let subjects = subjects(ask.identifiers)?;
    let log = state.audit.log.clone();
    let id = new_request_id();
    let hold = Hold {
        id: id.clone(),
        pseudonyms: Vec::new(),
        streams,
        case,
        created: event::rfc3339_nanos(SystemTime::now()),
    };
    let hold = tokio::task::spawn_blocking(move || {
        let pseudonyms = log.resolve(&subjects)?;
        let hold = Hold {
            pseudonyms: pseudonyms.iter().map(|p| hex::encode(p)).collect(),
            ..hold
        };
        gdpr::add_hold(&log, &hold)?;
        Ok::<_, crate::store::StoreError>(hold)
    })
    .await
    .map_err(|_| Error::Internal("the hold panicked".to_string()))?
    .map_err(|e| Error::Internal(format!("hold: {e}")))?;
    record(
        state,
        "gdpr.hold.created",
        &id,
        json!({"hold": id, "streams": hold.streams}),
        operator,
        json!({"case": hold.case}),
    )
    .await;
    Ok(body::json(StatusCode::CREATED, &shown(&hold)))
}

async fn remove_hold(state: &AppState, id: &str, operator: &str) -> Result<Response<Body>, Error> {
    let log = state.audit.log.clone();
    let key = id.to_string();
    let existed = tokio::task::spawn_blocking(move || gdpr::remove_hold(&log, &key))
        .await
        .map_err(|_| Error::Internal("the hold removal panicked".to_string()))?
        .map_err(|e| Error::Internal(format!("hold: {e}")))?;
    if !existed {
        return Err(Error::NotFoundNamed {
            what: "legal hold",
            name: id.to_string(),
        });
    }
    record(
        state,
        "gdpr.hold.removed",
        &new_request_id(),
        json!({"hold": id}),
        operator,
        json!({}),
    )
    .await;
    Ok(body::json(StatusCode::OK, &json!({"removed": id})))
}
