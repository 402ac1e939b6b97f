//! The request-path error: every way a request can fail, and the one place that maps each
//! failure to an HTTP status and a JSON body.
//!
//! Bodies follow `{"ok":false,"error":"CODE","message":"...","requestId":"..."}`. Messages of 4xx
//! answers say what the client got wrong; 5xx messages are fixed sentences that never carry
//! internal error text (the detail goes to the log, once, at the edge). Expected outcomes that
//! are not failures of seawall (a rate-limit denial, an open breaker) are decided by their
//! subsystems and reach the client through the variants below.

use std::time::Duration;

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

use crate::body::{self, Body};
use crate::ratelimit::{Level, Limited};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no route matches this path")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: Vec<Method> },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("{field}: {message}")]
    Validation { field: String, message: String },
    #[error("flag {0:?} not found")]
    FlagNotFound(String),
    #[error("no {what} named {name:?}")]
    NotFoundNamed { what: &'static str, name: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("precondition failed; current ETag {current}")]
    PreconditionFailed { current: String },
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("upstream {upstream} unreachable: {detail}")]
    UpstreamUnavailable { upstream: String, detail: String },
    #[error("upstream {upstream} did not answer within {timeout:?}")]
    UpstreamTimeout { upstream: String, timeout: Duration },
    #[error("upstream {upstream} has no free connection slot")]
    UpstreamBusy { upstream: String },
    #[error("circuit breaker {breaker} is open")]
    CircuitOpen {
        breaker: String,
        retry_after: Duration,
    },
    #[error("the database is unreachable: {0}")]
    DatabaseUnavailable(String),
    #[error("the database has no free connection")]
    DatabaseBusy,
    #[error("the statement did not finish in time")]
    QueryTimeout,
    #[error("the database refused the statement ({sqlstate})")]
    QueryRejected { sqlstate: String, conflict: bool },
    #[error("the statement failed ({sqlstate}): {detail}")]
    QueryFailed { sqlstate: String, detail: String },
    #[error("missing parameter {0:?}")]
    MissingParameter(String),
    #[error("rate limit {} exceeded", .0.policy)]
    RateLimited(Box<Limited>),
    #[error("{} priority load is being shed", level.as_str())]
    Overloaded { level: Level, retry_after: u64 },
    #[error("request not answered within {0:?}")]
    RequestTimeout(Duration),
    /// The upstream waited for the rest of the client's body until the timeout.
    #[error("the request body did not arrive within {0:?}")]
    ClientBodyTimeout(Duration),
    /// The store refused a write (a full or failing volume): nothing was changed.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// A `blocking-strict` route's request could not be audited in time: it was not forwarded.
    #[error("audit trail unavailable")]
    AuditUnavailable,
    /// `server.max_upgraded_connections` tunnels are open (or shutdown began).
    #[error("no room for another upgraded connection")]
    UpgradesFull,
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BadRequest(_) | Error::Validation { .. } => StatusCode::BAD_REQUEST,
            Error::FlagNotFound(_) | Error::NotFoundNamed { .. } => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::PreconditionFailed { .. } => StatusCode::PRECONDITION_FAILED,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::UpstreamUnavailable { .. } => StatusCode::BAD_GATEWAY,
            Error::UpstreamTimeout { .. } | Error::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::ClientBodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::UpstreamBusy { .. }
            | Error::CircuitOpen { .. }
            | Error::DatabaseUnavailable(_)
            | Error::DatabaseBusy
            | Error::StoreUnavailable(_)
            | Error::AuditUnavailable
            | Error::UpgradesFull => StatusCode::SERVICE_UNAVAILABLE,
            Error::QueryTimeout => StatusCode::GATEWAY_TIMEOUT,
            Error::QueryRejected { conflict: true, .. } => StatusCode::CONFLICT,
            Error::QueryRejected {
                conflict: false, ..
            }
            | Error::MissingParameter(_) => StatusCode::BAD_REQUEST,
            Error::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::QueryFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable machine-readable code in the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotFound => "NOT_FOUND",
            Error::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Error::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Error::BadRequest(_) => "BAD_REQUEST",
            Error::Validation { .. } => "VALIDATION_FAILED",
            Error::FlagNotFound(_) => "FLAG_NOT_FOUND",
            Error::NotFoundNamed { .. } => "NOT_FOUND",
            Error::Conflict { code, .. } => code,
            Error::PreconditionFailed { .. } => "PRECONDITION_FAILED",
            Error::Unauthorized => "UNAUTHORIZED",
            Error::UpstreamUnavailable { .. } => "UPSTREAM_UNAVAILABLE",
            Error::UpstreamTimeout { .. } => "UPSTREAM_TIMEOUT",
            Error::UpstreamBusy { .. } => "UPSTREAM_BUSY",
            Error::CircuitOpen { .. } => "CIRCUIT_OPEN",
            Error::DatabaseUnavailable(_) => "DB_UNAVAILABLE",
            Error::DatabaseBusy => "DB_BUSY",
            Error::QueryTimeout => "QUERY_TIMEOUT",
            Error::QueryRejected { conflict: true, .. } => "CONFLICT",
            Error::QueryRejected {
                conflict: false, ..
            } => "INVALID_INPUT",
            Error::QueryFailed { .. } => "QUERY_FAILED",
            Error::MissingParameter(_) => "MISSING_PARAMETER",
            Error::RateLimited(_) => "RATE_LIMIT_EXCEEDED",
            Error::Overloaded { .. } => "SERVICE_OVERLOADED",
            Error::RequestTimeout(_) => "GATEWAY_TIMEOUT",
            Error::ClientBodyTimeout(_) => "REQUEST_TIMEOUT",
            Error::StoreUnavailable(_) => "STORE_UNAVAILABLE",
            Error::AuditUnavailable => "AUDIT_UNAVAILABLE",
            Error::UpgradesFull => "UPGRADES_FULL",
            Error::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// What the client reads. 5xx messages are fixed and name at most the configured upstream.
    fn public_message(&self) -> String {
        match self {
            Error::NotFound => "No route matches this path.".to_string(),
            Error::MethodNotAllowed { .. } => "This route does not accept this method.".to_string(),
            Error::PayloadTooLarge { limit } => {
                format!("The request body exceeds the limit of {limit} bytes.")
            }
            Error::BadRequest(message) => message.clone(),
            Error::Validation { field, message } => format!("{field}: {message}"),
            Error::FlagNotFound(name) => format!("Flag {name:?} does not exist."),
            Error::NotFoundNamed { what, name } => format!("There is no {what} named {name:?}."),
            Error::Conflict { message, .. } => message.clone(),
            Error::PreconditionFailed { current } => {
                format!(
                    "The resource changed since it was read (If-Match did not match); its current ETag is {current}."
                )
            }
            Error::Unauthorized => {
                "A valid admin token is required: Authorization: Bearer <token>.".to_string()
            }
            Error::UpstreamUnavailable { upstream, .. } => {
                format!("The upstream '{upstream}' could not be reached.")
            }
            Error::UpstreamTimeout { upstream, .. } => {
                format!("The upstream '{upstream}' did not answer in time.")
            }
            Error::UpstreamBusy { upstream } => {
                format!("The upstream '{upstream}' is at its connection limit; retry shortly.")
            }
            Error::RequestTimeout(_) => "The request was not answered in time.".to_string(),
            Error::ClientBodyTimeout(timeout) => format!(
                "The request body did not arrive within {} ms; the connection is closed.",
                timeout.as_millis()
            ),
            Error::DatabaseUnavailable(_) => {
                "The database cannot be reached right now; retry shortly.".to_string()
            }
            Error::DatabaseBusy => "Every database connection is busy; retry shortly.".to_string(),
            Error::QueryTimeout => "The database did not finish the statement in time.".to_string(),
            Error::QueryRejected {
                sqlstate,
                conflict: true,
            } => {
                format!("The request conflicts with the stored data (SQLSTATE {sqlstate}).")
            }
            Error::QueryRejected {
                sqlstate,
                conflict: false,
            } => {
                format!("A parameter is not acceptable to the database (SQLSTATE {sqlstate}).")
            }
            Error::RateLimited(limited) if limited.policy == limited.level.as_str() => {
                limited.level.message().to_string()
            }
            Error::RateLimited(limited) => format!("Rate limit exceeded for {}", limited.policy),
            Error::Overloaded { level, .. } => format!(
                "Server is temporarily shedding {} priority load; retry later",
                level.as_str()
            ),
            Error::QueryFailed { .. } => {
                "The database could not run this route's statement.".to_string()
            }
            Error::MissingParameter(name) => {
                format!(
                    "The parameter {name:?} is required: in the path, the query string or the JSON body."
                )
            }
            Error::CircuitOpen { breaker, .. } => {
                format!(
                    "'{breaker}' is failing and its circuit breaker is open; retry after the Retry-After delay."
                )
            }
            Error::StoreUnavailable(_) => {
                "seawall's store cannot be written (is its volume full?); nothing was changed."
                    .to_string()
            }
            Error::AuditUnavailable => {
                "This route is only served once its audit record is on disk, and seawall could not write it; the request was not forwarded."
                    .to_string()
            }
            Error::UpgradesFull => {
                "seawall holds as many upgraded connections (WebSockets) as it allows; retry shortly."
                    .to_string()
            }
            Error::Internal(_) => "Something went wrong inside seawall.".to_string(),
        }
    }

    /// The JSON answer for this error.
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let mut body = json!({
            "ok": false,
            "error": self.code(),
            "message": self.public_message(),
            "requestId": request_id,
        });
        match self {
            Error::Validation { field, .. } => body["field"] = json!(field),
            Error::QueryRejected { sqlstate, .. } => body["sqlstate"] = json!(sqlstate),
            Error::RateLimited(limited) => {
                body["priority"] = json!(limited.level.as_str());
                body["policy"] = json!(limited.policy);
                body["retryAfter"] = json!(limited.retry_after);
            }
            Error::Overloaded { level, retry_after } => {
                body["priority"] = json!(level.as_str());
                body["retryAfter"] = json!(retry_after);
            }
            Error::CircuitOpen {
                breaker,
                retry_after,
            } => {
                body["breaker"] = json!(breaker);
                body["retryAfter"] = json!(retry_after_seconds(*retry_after));
            }
            _ => {}
        }
        let mut response = body::json(self.status(), &body);
        let headers = response.headers_mut();
        match self {
            Error::MethodNotAllowed { allow } => {
                let mut names: Vec<&str> = allow.iter().map(Method::as_str).collect();
                // Whatever answers GET answers HEAD (RFC 9110 §9.1); the admin API modules
                // list GET alone, since HEAD reaches them as GET.
                if let Some(get) = allow.iter().position(|m| m == Method::GET)
                    && !allow.contains(&Method::HEAD)
                {
                    names.insert(get + 1, Method::HEAD.as_str());
                }
                if let Ok(value) = HeaderValue::from_str(&names.join(", ")) {
                    headers.insert(header::ALLOW, value);
                }
            }
            Error::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"seawall-admin\""),
                );
            }
            Error::UpstreamBusy { .. }
            | Error::DatabaseUnavailable(_)
            | Error::DatabaseBusy
            | Error::AuditUnavailable
            | Error::UpgradesFull => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::RateLimited(limited) => {
                for (name, value) in &limited.headers {
                    headers.insert(name.clone(), value.clone());
                }
            }
            Error::Overloaded { level, retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
                headers.insert(
                    "x-ratelimit-priority",
                    HeaderValue::from_static(level.as_str()),
                );
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            Error::CircuitOpen { retry_after, .. } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_seconds(*retry_after)),
                );
            }
            Error::PreconditionFailed { current } => {
                if let Ok(value) = HeaderValue::from_str(current) {
                    headers.insert(header::ETAG, value);
                }
            }
            // The rest of the body may still be on its way: the connection cannot be reused
            // (RFC 9110 §15.5.9).
            Error::ClientBodyTimeout(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

/// `Retry-After` in whole seconds, rounded up, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(error: Error) -> serde_json::Value {
        let response = error.to_response("rid-1");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(5)), 5);
        assert_eq!(retry_after_seconds(Duration::from_millis(12_300)), 13);
    }

    #[tokio::test]
    async fn server_errors_never_carry_internal_text() {
        let body = body_of(Error::Internal("disk /secret/path failed".into())).await;
        assert_eq!(body["error"], "INTERNAL_ERROR");
        assert!(!body.to_string().contains("/secret/path"));
        let body = body_of(Error::UpstreamUnavailable {
            upstream: "app".into(),
            detail: "tcp 10.0.0.1".into(),
        })
        .await;
        assert!(!body.to_string().contains("10.0.0.1"));
        assert_eq!(body["requestId"], "rid-1");
        assert_eq!(body["ok"], false);
    }
}
