//! The admin API of seawall's dependencies: their circuit breakers and their pools.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/breakers` | every breaker: state, rates, window, cumulative calls by outcome, refusals, transitions, retry-after, configuration, recent transitions |
//! | `POST /admin/breakers/{name}/reset` | back to a fresh CLOSED |
//! | `POST /admin/breakers/{name}/force-open` | refuse every call until an operator acts |
//! | `POST /admin/breakers/{name}/disable` | let every call through, record nothing |
//! | `POST /admin/breakers/{name}/metrics-only` | measure, never refuse |
//! | `GET /admin/pools` | the PostgreSQL pool (connections by state, waiters, timeouts, connection errors by kind) and every HTTP upstream pool (slots, waiters, queue, requests, errors by kind), each with its breaker state |
//!
//! Operator changes are written to sled and flushed before the answer; they survive restarts.
//! The actor is the `X-Seawall-Actor` header, else `admin`.

use std::time::Instant;

use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::body::{self, Body, RequestBody};
use crate::breaker::{Breaker, State};
use crate::breakers::ManualError;
use crate::error::Error;
use crate::state::AppState;

/// Whether `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == "/admin/breakers" || path.starts_with("/admin/breakers/") || path == "/admin/pools"
}

pub async fn handle(
    state: &AppState,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let parts: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    match (parts.as_slice(), &method) {
        (["breakers"], &Method::GET) => {
            let breakers = state.breakers.clone();
            let views = tokio::task::spawn_blocking(move || {
                breakers
                    .iter()
                    .map(|b| view(&breakers, b))
                    .collect::<Vec<Value>>()
            })
            .await
            .expect("breaker view task does not panic");
            Ok(body::json(StatusCode::OK, &json!({ "breakers": views })))
        }
        (["breakers"], _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::GET],
        }),
        (["breakers", name, action], &Method::POST) => {
            let to = match *action {
                "reset" => State::Closed,
                "force-open" => State::ForcedOpen,
                "disable" => State::Disabled,
                "metrics-only" => State::MetricsOnly,
                _ => return Err(Error::NotFound),
            };
            let actor = crate::admin::actor(request.headers())?;
            match state.breakers.set_state(name, to, &actor).await {
                Ok(_) => {
                    let breakers = state.breakers.clone();
                    let name = name.to_string();
                    let view = tokio::task::spawn_blocking(move || {
                        view(&breakers, breakers.get(&name).expect("exists"))
                    })
                    .await
                    .expect("breaker view task does not panic");
                    Ok(body::json(StatusCode::OK, &view))
                }
                Err(ManualError::Unknown(name)) => Err(Error::NotFoundNamed {
                    what: "breaker",
                    name,
                }),
                Err(ManualError::Illegal(e)) => Err(Error::Conflict {
                    code: "ILLEGAL_TRANSITION",
                    message: e.to_string(),
                }),
                Err(ManualError::Store(e)) => Err(Error::StoreUnavailable(e.to_string())),
            }
        }
        (["breakers", _, _], _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::POST],
        }),
        (["pools"], &Method::GET) => {
            let mut pools: Vec<Value> = state.upstreams.sorted().iter().map(|u| u.view()).collect();
            if let Some(database) = &state.database {
                pools.insert(0, database.view());
            }
            Ok(body::json(StatusCode::OK, &json!({ "pools": pools })))
        }
        (["pools"], _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::GET],
        }),
        _ => Err(Error::NotFound),
    }
}

/// One breaker as the API shows it. Blocking (reads the recent transitions from sled).
fn view(breakers: &crate::breakers::Breakers, breaker: &Breaker) -> Value {
    let s = breaker.snapshot(Instant::now());
    let transitions: Vec<Value> = s
        .transitions
        .iter()
        .map(
            |((from, to), count)| json!({"from": from.as_str(), "to": to.as_str(), "count": count}),
        )
        .collect();
    let recent = breakers.recent(breaker.name(), 20).unwrap_or_default();
    json!({
        "name": breaker.name(),
        "state": s.state.as_str(),
        "failureRate": s.failure_rate,
        "slowCallRate": s.slow_call_rate,
        "window": {
            "calls": s.buffered.total,
            "failed": s.buffered.failed,
            "slow": s.buffered.slow,
            "slowFailed": s.buffered.slow_failed,
        },
        "calls": s.totals,
        "retryAfterSeconds": s.retry_after.map(|d| d.as_secs_f64()),
        "attempts": s.attempts,
        "transitions": transitions,
        "recentTransitions": recent,
        "config": breaker.config(),
    })
}
