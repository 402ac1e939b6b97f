//! The rate-limit admin API.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /admin/ratelimits` | the in-flight cap and count, every level and policy with its settings, tracked keys and decisions by outcome |
//! | `PUT /admin/ratelimits/{policy}` | change `quota`, `window_s` and/or `mode` at runtime (a level name addresses the level's policy); kept across restarts |
//! | `DELETE /admin/ratelimits/{policy}` | drop the runtime change: the configured settings apply again |

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::body::{self, Body, RequestBody};
use crate::error::Error;
use crate::ratelimit::Override;
use crate::state::AppState;

/// Whether `path` belongs to this API.
pub fn owns(path: &str) -> bool {
    path == "/admin/ratelimits" || path.starts_with("/admin/ratelimits/")
}

pub async fn handle(
    state: &AppState,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let name = path.strip_prefix("/admin/ratelimits/").map(|n| {
        percent_encoding::percent_decode_str(n)
            .decode_utf8_lossy()
            .into_owned()
    });
    match (name, method) {
        (None, Method::GET) => Ok(body::json(StatusCode::OK, &state.ratelimiter.view())),
        (None, _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::GET],
        }),
        (Some(name), Method::PUT) => {
            // The change's actor is recorded by the audit middleware; a malformed header is
            // refused here as on every other change.
            crate::admin::actor(request.headers())?;
            let bytes = body::read_limited(
                request.into_body(),
                state.config.server.admin_max_body_bytes,
            )
            .await?;
            let change: Override = body::parse_json(&bytes)?;
            check(&change)?;
            updated(state, &name, Some(change)).await
        }
        (Some(name), Method::DELETE) => {
            crate::admin::actor(request.headers())?;
            updated(state, &name, None).await
        }
        (Some(_), _) => Err(Error::MethodNotAllowed {
            allow: vec![Method::PUT, Method::DELETE],
        }),
    }
}

fn check(change: &Override) -> Result<(), Error> {
    let invalid = |field: &str, message: &str| {
        Err(Error::Validation {
            field: field.to_string(),
            message: message.to_string(),
        })
    };
    if *change == Override::default() {
        return invalid("body", "names nothing to change (quota, window_s, mode)");
    }
    if change.quota.is_some_and(|q| q == 0 || q > 10_000_000) {
        return invalid("quota", "must be 1-10000000");
    }
    if change.window_s.is_some_and(|w| w == 0 || w > 86_400) {
        return invalid("window_s", "must be 1-86400");
    }
    Ok(())
}

async fn updated(
    state: &AppState,
    name: &str,
    change: Option<Override>,
) -> Result<Response<Body>, Error> {
    match state.ratelimiter.set_override(name, change).await {
        Ok(Some(view)) => Ok(body::json(StatusCode::OK, &json!({ "policy": view }))),
        Ok(None) => Err(Error::NotFoundNamed {
            what: "rate-limit policy",
            name: name.to_string(),
        }),
        Err(e) => Err(Error::StoreUnavailable(e.to_string())),
    }
}
