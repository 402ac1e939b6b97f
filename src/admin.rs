//! The admin listener: metrics, health and the JSON admin API.
//!
//! | path | auth | what |
//! |---|---|---|
//! | `GET /metrics` | none | Prometheus text format 0.0.4 |
//! | `GET /health`, `/health/live`, `/health/ready`, `/health/detailed` | none | as on the proxy listener |
//! | `GET /admin/stats` | bearer | latency percentiles per route (hdrhistogram) |
//! | `GET /admin/config` | bearer | the effective configuration, secrets masked |
//! | `/admin/flags...`, `/admin/segments` | bearer | the flag API, see `admin_flags` |
//! | `/admin/breakers...`, `/admin/pools` | bearer | breakers and pools, see `admin_dependencies` |
//! | `/admin/ratelimits...` | bearer | rate-limit policies, see `admin_ratelimits` |
//!
//! Every `/admin/` path requires `Authorization: Bearer <token>`; the check comes before route
//! lookup, so an unauthenticated caller cannot probe which admin paths exist.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::audit::middleware::Plan;
use crate::audit::policy;
use crate::backup;
use crate::body::{self, Body, RequestBody};
use crate::error::Error;
use crate::metrics::Exposition;
use crate::process_metrics;
use crate::request_context::RequestContext;
use crate::request_stats::Listener;
use crate::router::HealthEndpoint;
use crate::server::Service;
use crate::state::AppState;
use crate::{admin_audit, admin_dependencies, admin_flags, admin_gdpr, admin_ratelimits};

/// The admin endpoints; each also names the route label used in metrics.
#[derive(Clone, Copy)]
pub enum Endpoint {
    Metrics,
    Health(HealthEndpoint),
    Stats,
    Config,
    Flags,
    Dependencies,
    RateLimits,
    Audit,
    Gdpr,
    Backup,
    OpenApi,
    Unknown,
}

impl Endpoint {
    fn from_path(path: &str) -> Endpoint {
        if let Some(health) = HealthEndpoint::from_path(path) {
            return Endpoint::Health(health);
        }
        if admin_flags::owns(path) {
            return Endpoint::Flags;
        }
        if admin_dependencies::owns(path) {
            return Endpoint::Dependencies;
        }
        if admin_ratelimits::owns(path) {
            return Endpoint::RateLimits;
        }
        if admin_audit::owns(path) {
            return Endpoint::Audit;
        }
        if admin_gdpr::owns(path) {
            return Endpoint::Gdpr;
        }
        match path {
            "/metrics" => Endpoint::Metrics,
            "/admin/stats" => Endpoint::Stats,
            "/admin/config" => Endpoint::Config,
            "/admin/backup" => Endpoint::Backup,
            OPENAPI_PATH => Endpoint::OpenApi,
            _ => Endpoint::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Endpoint::Metrics => "metrics",
            Endpoint::Health(_) => "health",
            Endpoint::Stats => "admin.stats",
            Endpoint::Config => "admin.config",
            Endpoint::Flags => "admin.flags",
            Endpoint::Dependencies => "admin.dependencies",
            Endpoint::RateLimits => "admin.ratelimits",
            Endpoint::Audit => "admin.audit",
            Endpoint::Gdpr => "admin.gdpr",
            Endpoint::Backup => "admin.backup",
            Endpoint::OpenApi => "openapi",
            Endpoint::Unknown => "admin.unmatched",
        }
    }

    /// The methods every path of the endpoint answers. `None` for the API groups, whose paths
    /// differ: their modules answer 405 themselves, with each path's own `Allow` list.
    fn methods(self) -> Option<&'static [Method]> {
        match self {
            Endpoint::Flags
            | Endpoint::Dependencies
            | Endpoint::RateLimits
            | Endpoint::Audit
            | Endpoint::Gdpr => None,
            Endpoint::Unknown => Some(&[]),
            Endpoint::Backup => Some(&[Method::POST]),
            Endpoint::Health(_) => Some(HealthEndpoint::METHODS),
            _ => Some(&[Method::GET, Method::HEAD]),
        }
    }
}

/// The OpenAPI document of the admin and OFREP APIs, served without a token like `/metrics`.
pub const OPENAPI: &str = include_str!("openapi.yaml");
const OPENAPI_PATH: &str = "/admin/openapi.yaml";

pub struct AdminService {
    state: Arc<AppState>,
}

impl AdminService {
    pub fn new(state: Arc<AppState>) -> AdminService {
        AdminService { state }
    }

    fn metrics(&self) -> Response<Body> {
        let state = &self.state;
        let mut out = Exposition::new();
        out.header(
            "seawall_build_info",
            "gauge",
            "Build metadata of the running binary; the value is always 1.",
        );
        out.sample(
            "seawall_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        state.stats.render(&mut out);
        state.health.render_metrics(&mut out);
        state.flags.render_metrics(&mut out);
        state.ratelimiter.render_metrics(&mut out);
        state.breakers.render_metrics(&mut out);
        state.audit.render_metrics(&mut out);
        state.watchdog.render_metrics(&mut out);
        state.upstreams.render_metrics(&mut out);
        state.tunnels.render_metrics(&mut out);
        state.connections.render_metrics(&mut out);
        if let Some(database) = &state.database {
            database.render_metrics(&mut out);
        }
        out.single(
            "seawall_store_size_on_disk_bytes",
            "gauge",
            "On-disk size of the sled store, as of the latest store health check.",
            state.store_size.get() as f64,
        );
        out.single(
            "seawall_unclean_start",
            "gauge",
            "1 when this run started after the previous one ended without a shutdown (a sys.crash audit event records it).",
            f64::from(u8::from(state.unclean_previous_run.is_some())),
        );
        if let Some(seconds) = crate::backup::last_success(&state.store) {
            out.single(
                "seawall_backup_last_success_timestamp_seconds",
                "gauge",
                "When the newest verified backup finished (Unix time).",
                seconds as f64,
            );
        }
        process_metrics::render(&mut out);
        let mut response = Response::new(body::full(out.finish()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

impl Service for AdminService {
    type Target = Endpoint;
    const LISTENER: Listener = Listener::Admin;

    fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    fn classify(&self, request: &mut Request<Incoming>) -> (Arc<str>, Endpoint) {
        let endpoint = Endpoint::from_path(request.uri().path());
        (Arc::from(endpoint.label()), endpoint)
    }

    fn audit_plan(
        &self,
        route: &Arc<str>,
        _endpoint: &Endpoint,
        request: &Request<Incoming>,
        _ctx: &RequestContext,
    ) -> Option<Plan<'_>> {
        let decision = policy::admin(route, request.method())?;
        let headers = request.headers();
        let admin_actor = self
            .state
            .admin_token
            .authorizes(headers)
            .then(|| actor(headers).unwrap_or_else(|_| "admin".to_string()));
        let read_only = matches!(*request.method(), Method::GET | Method::HEAD);
        Some(Plan {
            decision,
            route: route.clone(),
            important: true,
            durable: !read_only,
            admin_actor,
            api_key_header: None,
        })
    }

    async fn call(
        &self,
        mut request: Request<RequestBody>,
        _ctx: &RequestContext,
        endpoint: Endpoint,
    ) -> Result<Response<Body>, Error> {
        let path = request.uri().path();
        let public = matches!(endpoint, Endpoint::OpenApi);
        if path.starts_with("/admin/")
            && !public
            && !self.state.admin_token.authorizes(request.headers())
        {
            return Err(Error::Unauthorized);
        }
        if matches!(endpoint, Endpoint::Unknown) {
            return Err(Error::NotFound);
        }
        match endpoint.methods() {
            Some(methods) if !methods.contains(request.method()) => {
                return Err(Error::MethodNotAllowed {
                    allow: methods.to_vec(),
                });
            }
            // The API groups match on GET alone: HEAD is the same request without the body,
            // which hyper leaves out of the answer (RFC 9110 §9.3.2).
            None if request.method() == Method::HEAD => *request.method_mut() = Method::GET,
            _ => {}
        }
        Ok(match endpoint {
            Endpoint::Flags => return admin_flags::handle(&self.state, request).await,
            Endpoint::RateLimits => {
                return admin_ratelimits::handle(&self.state, request).await;
            }
            Endpoint::Dependencies => {
                return admin_dependencies::handle(&self.state, request).await;
            }
            Endpoint::Audit => return admin_audit::handle(&self.state, request).await,
            Endpoint::Gdpr => return admin_gdpr::handle(&self.state, request).await,
            Endpoint::Backup => return backup(&self.state, request).await,
            Endpoint::Metrics => self.metrics(),
            Endpoint::OpenApi => {
                let mut response = Response::new(body::full(OPENAPI));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/yaml"),
                );
                response
            }
            Endpoint::Health(health) => health.respond(&self.state),
            Endpoint::Stats => body::json(StatusCode::OK, &self.state.stats.percentiles()),
            Endpoint::Config => {
                let config: serde_json::Value =
                    serde_json::from_str(&self.state.config.to_masked_json())
                        .expect("config is JSON");
                body::json(StatusCode::OK, &config)
            }
            Endpoint::Unknown => return Err(Error::NotFound),
        })
    }
}

/// `POST /admin/backup` with an optional `{"to": "dir"}` inside the data directory: pauses
/// writers, copies, opens and verifies the copy, then answers with what it holds.
async fn backup(
    state: &Arc<AppState>,
    request: Request<RequestBody>,
) -> Result<Response<Body>, Error> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Options {
        to: Option<String>,
    }
    let bytes = body::read_limited(
        request.into_body(),
        state.config.server.admin_max_body_bytes,
    )
    .await?;
    let options = if bytes.iter().all(u8::is_ascii_whitespace) {
        Options { to: None }
    } else {
        body::parse_json::<Options>(&bytes)?
    };
    let Ok(_one_at_a_time) = state.backups.try_lock() else {
        return Err(Error::Conflict {
            code: "BACKUP_RUNNING",
            message: "Another backup is running; try again when it has finished.".to_string(),
        });
    };
    let data_dir = state.config.store.data_dir.clone();
    let to = backup::destination(
        &data_dir,
        options.to.as_deref(),
        std::time::SystemTime::now(),
    )
    .map_err(|e| Error::Validation {
        field: "to".to_string(),
        message: e.to_string(),
    })?;
    let state = state.clone();
    let to_default = options.to.is_none();
    let report = tokio::task::spawn_blocking(move || {
        let mut report = backup::online(&state.store, &state.audit.log, &data_dir, &to)?;
        // Only once the new backup verified, and only among the default ones.
        if to_default {
            match backup::prune(&data_dir, state.config.backup.keep) {
                Ok(pruned) => report.pruned = pruned,
                Err(e) => tracing::warn!(error = %e, "older backups could not be deleted"),
            }
        }
        Ok::<_, backup::BackupError>(report)
    })
    .await
    .map_err(|_| Error::Internal("the backup task panicked".to_string()))?
    .map_err(|e| Error::Internal(format!("backup: {e}")))?;
    tracing::info!(path = %report.path.display(), bytes = report.bytes, paused_ms = report.paused_ms, pruned = report.pruned.len(), "backup verified");
    Ok(body::json(StatusCode::CREATED, &report))
}

/// Who made an admin change: the `X-Seawall-Actor` header, else `admin`.
pub fn actor(headers: &http::HeaderMap) -> Result<String, Error> {
    match headers.get("x-seawall-actor") {
        None => Ok("admin".to_string()),
        Some(value) => match value.to_str() {
            Ok(actor) if !actor.trim().is_empty() && actor.len() <= 128 => {
                Ok(actor.trim().to_string())
            }
            _ => Err(Error::BadRequest(
                "x-seawall-actor must be 1-128 printable characters.".to_string(),
            )),
        },
    }
}
