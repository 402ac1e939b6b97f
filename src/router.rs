//! The proxy listener's request dispatch: health endpoints, then the configured routes.
//!
//! Endpoints served here (besides the routes from the configuration):
//! `/health`, `/health/live`, `/health/ready`, `/health/detailed` and OFREP
//! (`/ofrep/v1/evaluate/flags[/{key}]`, see `ofrep`). They are answered before route matching
//! so that no route can shadow them. A route with `flag = "..."` answers 404, as if it did not
//! exist, while that flag is off for the client.

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::audit::Level;
use crate::audit::middleware::Plan;
use crate::audit::policy::{self, Durability};
use crate::body::{Body, Guarded, RequestBody};
use crate::config::RouteTarget;
use crate::error::Error;
use crate::features::Feature;
use crate::ofrep;
use crate::path_pattern::Params;
use crate::proxy;
use crate::ratelimit::Admission;
use crate::request_context::RequestContext;
use crate::request_stats::Listener;
use crate::request_target::{self, Refused};
use crate::route::{Resolution, Route};
use crate::server::Service;
use crate::sql_route;
use crate::state::AppState;
use http_body_util::BodyExt;

/// What a proxy-listener request turned out to be.
pub enum Target {
    Health(HealthEndpoint),
    Ofrep(ofrep::Endpoint),
    Route(Arc<Route>, Params),
    Rejected(Error),
}

#[derive(Clone, Copy)]
pub enum HealthEndpoint {
    Basic,
    Live,
    Ready,
    Detailed,
}

impl HealthEndpoint {
    /// What every health endpoint answers; other methods get 405, on either listener.
    pub const METHODS: &[Method] = &[Method::GET, Method::HEAD];

    /// The health endpoint at `path`, if it is one.
    pub fn from_path(path: &str) -> Option<HealthEndpoint> {
        match path {
            "/health" => Some(HealthEndpoint::Basic),
            "/health/live" => Some(HealthEndpoint::Live),
            "/health/ready" => Some(HealthEndpoint::Ready),
            "/health/detailed" => Some(HealthEndpoint::Detailed),
            _ => None,
        }
    }

    pub fn respond(self, state: &AppState) -> Response<Body> {
        match self {
            HealthEndpoint::Basic => state.health.basic(),
            HealthEndpoint::Live => state.health.live(),
            HealthEndpoint::Ready => state.health.ready(),
            HealthEndpoint::Detailed => state.health.detailed(),
        }
    }
}

pub struct ProxyService {
    state: Arc<AppState>,
    health_label: Arc<str>,
    ofrep_label: Arc<str>,
    unmatched_label: Arc<str>,
}

impl ProxyService {
    pub fn new(state: Arc<AppState>) -> ProxyService {
        ProxyService {
            state,
            health_label: Arc::from("health"),
            ofrep_label: Arc::from("ofrep"),
            unmatched_label: Arc::from("unmatched"),
        }
    }
}

impl Service for ProxyService {
    type Target = Target;
    const LISTENER: Listener = Listener::Proxy;

    fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    fn classify(&self, request: &mut Request<Incoming>) -> (Arc<str>, Target) {
        // Probes get their answer whatever else is wrong with the request.
        if let Some(endpoint) = HealthEndpoint::from_path(request.uri().path()) {
            let target = if HealthEndpoint::METHODS.contains(request.method()) {
                Target::Health(endpoint)
            } else {
                Target::Rejected(Error::MethodNotAllowed {
                    allow: HealthEndpoint::METHODS.to_vec(),
                })
            };
            return (self.health_label.clone(), target);
        }
        if let Err(Refused(message)) = request_target::canonicalize(request) {
            let refused = Error::BadRequest(message.to_string());
            return (self.unmatched_label.clone(), Target::Rejected(refused));
        }
        let path = request.uri().path();
        if let Some(endpoint) = ofrep::Endpoint::from_path(path) {
            return (self.ofrep_label.clone(), Target::Ofrep(endpoint));
        }
        match self.state.routes.resolve(request.method(), path) {
            Resolution::Matched { route, params } => {
                (route.name.clone(), Target::Route(route.clone(), params))
            }
            Resolution::MethodNotAllowed { allow } => (
                self.unmatched_label.clone(),
                Target::Rejected(Error::MethodNotAllowed { allow }),
            ),
            Resolution::NotFound => (
                self.unmatched_label.clone(),
                Target::Rejected(Error::NotFound),
            ),
        }
    }

    fn audit_plan(
        &self,
        route: &Arc<str>,
        target: &Target,
        request: &Request<Incoming>,
        ctx: &RequestContext,
    ) -> Option<Plan<'_>> {
        if !self.state.feature_on(Feature::AuditTrail, ctx) {
            return None;
        }
        let route_rule = match target {
            Target::Route(matched, _) => matched.config.audit.as_ref(),
            _ => None,
        };
        let rules = &self.state.config.audit.rules;
        let decision = policy::decide(rules, route_rule, route, request.method());
        (decision.level != Level::None).then(|| Plan {
            important: decision.durability == Durability::BlockingStrict,
            decision,
            route: route.clone(),
            durable: false,
            admin_actor: None,
            api_key_header: self.state.config.ratelimit.api_key_header.as_deref(),
        })
    }

    async fn call(
        &self,
        request: Request<RequestBody>,
        ctx: &RequestContext,
        target: Target,
    ) -> Result<Response<Body>, Error> {
        let (level, policies) = match &target {
            Target::Health(endpoint) => return Ok(endpoint.respond(&self.state)),
            Target::Rejected(_) => (None, &[][..]),
            Target::Ofrep(_) => (Some(self.state.config.ratelimit.ofrep_priority), &[][..]),
            Target::Route(route, _) => {
                if let Some(flag) = &route.config.flag
                    && !self.state.flags.is_on(flag, &ctx.flag_context)
                {
                    return Err(Error::NotFound);
                }
                (Some(route.config.priority), &route.config.rate_limits[..])
            }
        };
        let admission = match level {
            Some(level) if self.state.feature_on(Feature::PrioritizedRateLimit, ctx) => Some(
                self.state
                    .ratelimiter
                    .admit(level, policies, &ctx.client_key),
            ),
            _ => None,
        };
        let (slot, fields) = match admission {
            None => (None, Vec::new()),
            Some(Admission::Shed { level, retry_after }) => {
                return Err(Error::Overloaded { level, retry_after });
            }
            Some(Admission::Limited(limited)) => return Err(Error::RateLimited(limited)),
            Some(Admission::Admitted { slot, headers }) => (Some(slot), headers),
        };
        let mut response = self.dispatch(request, ctx, target).await?;
        response.headers_mut().extend(fields);
        // The in-flight slot is held until the answer has been sent, body included.
        Ok(match slot {
            Some(slot) => response.map(|body| Guarded::new(body, slot).boxed()),
            None => response,
        })
    }
}

impl ProxyService {
    async fn dispatch(
        &self,
        request: Request<RequestBody>,
        ctx: &RequestContext,
        target: Target,
    ) -> Result<Response<Body>, Error> {
        match target {
            Target::Health(endpoint) => Ok(endpoint.respond(&self.state)),
            Target::Ofrep(endpoint) => ofrep::serve(&self.state, endpoint, request, ctx).await,
            Target::Rejected(error) => Err(error),
            Target::Route(route, params) => match &route.config.target {
                RouteTarget::Upstream(name) => {
                    let upstream = self.state.upstreams.get(name).ok_or_else(|| {
                        Error::Internal(format!("route {} names a missing upstream", route.name))
                    })?;
                    let options = self.state.call_options(ctx);
                    proxy::forward(upstream, &route, request, ctx, options, &self.state.tunnels)
                        .await
                }
                RouteTarget::Postgres(sql) => {
                    let wrapped = route
                        .wrapped_sql
                        .clone()
                        .expect("SQL routes carry their statement");
                    sql_route::serve(&self.state, &route, sql, wrapped, params, request, ctx).await
                }
            },
        }
    }
}
