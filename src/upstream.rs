//! HTTP upstreams: a keep-alive connection pool per configured upstream, its circuit breaker,
//! its concurrency cap and wait queue, its metrics and its health probe.
//!
//! [`Upstream::call`] sends one prepared request: breaker permission (when the circuit-breaker
//! feature is on for the request), a connection slot, the request with connect and
//! response-head timeouts, then the outcome recorded once. Outcomes (research §7.4): connect
//! errors, timeouts, resets, 5xx, 408 and 429 are failures; other answers are successes; a full
//! wait queue and everything the client did (a body too large, malformed or broken off, a body
//! that stopped coming until the timeout, a client that went away) are ignored. With enhanced
//! pooling the wait for a slot is bounded (`max_queue` waiters, `acquire_timeout`); without, a
//! request waits for a slot until its timeout. Headers and routes are `proxy`'s business.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fxhash::FxBuildHasher;
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::{self, Body, BodyStalled, Guarded, IdleTimeout};
use crate::breaker::{Breaker, Outcome, Rejected, State};
use crate::client_body::{BodyWatch, Watched};
use crate::config::{UpstreamConfig, UpstreamKind};
use crate::health::{Probe, ProbeFuture, Reading, Status};
use crate::metrics::{Counter, Exposition, Histogram, LATENCY_BUCKETS};

/// Idle pooled connections are closed after this long; below typical server keep-alive limits
/// so seawall, not the upstream, closes them and a request never races a closing socket.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive probes on upstream sockets, so a dead peer is noticed on idle connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why an upstream call did not produce a response head.
#[derive(Debug)]
pub enum UpstreamError {
    /// The breaker refused the call; the network was not touched.
    CircuitOpen(Rejected),
    /// Enhanced pooling: the wait queue is full.
    QueueFull,
    /// No connection slot freed up in time.
    SlotTimeout,
    /// The TCP connection could not be made (refused, unreachable, connect timeout).
    Connect(String),
    /// No response head within the upstream's timeout.
    Timeout(Duration),
    /// The client's request body broke the size limit while streaming.
    BodyTooLarge,
    /// The client's request body broke off or was malformed: the client's fault, not the
    /// upstream's.
    ClientBody,
    /// The call timed out waiting for the client's request body, not for the upstream.
    ClientStalled(Duration),
    /// Anything else: refused writes, reset connections, malformed responses.
    Failed(String),
}

impl UpstreamError {
    fn kind(&self) -> &'static str {
        match self {
            UpstreamError::CircuitOpen(_) => "circuit_open",
            UpstreamError::QueueFull => "queue_full",
            UpstreamError::SlotTimeout => "slot_timeout",
            UpstreamError::Connect(_) => "connect",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::BodyTooLarge => "body_too_large",
            UpstreamError::ClientBody => "client_body",
            UpstreamError::ClientStalled(_) => "client_stalled",
            UpstreamError::Failed(_) => "failed",
        }
    }
}

/// Per-request switches, decided from the request's feature flags.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions {
    /// Guard the call with the upstream's breaker (`seawall.circuit-breaker`).
    pub breaker: bool,
    /// Bounded wait queue (`seawall.enhanced-pooling`).
    pub bounded_queue: bool,
}

/// How many idle connections each runtime's pool keeps: the upstream's share for one proxy
/// thread, so that the pools together keep about `max_connections` idle, as one pool did.
/// Requests in flight are capped by the slots, not here; a thread busier than its share
/// closes what it cannot keep. (The main runtime's pool only carries health probes.)
pub fn idle_per_pool(max_connections: usize, proxy_threads: usize) -> usize {
    max_connections.div_ceil(proxy_threads.max(1))
}

/// One configured upstream.
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    pub breaker: Arc<Breaker>,
    /// One pool per runtime, indexed by `proxy_threads::runtime_index`: a pooled connection's
    /// task runs on the runtime that opened it, so sharing one pool would hand each request's
    /// IO to another thread.
    clients: Box<[Client<HttpConnector, Body>]>,
    authority: Authority,
    host: HeaderValue,
    /// Caps requests in flight, so one slow upstream cannot take every socket and task.
    slots: Arc<Semaphore>,
    waiters: AtomicUsize,
    /// Shared with response bodies, which count their own stalls.
    metrics: Arc<PoolMetrics>,
}

#[derive(Default)]
struct PoolMetrics {
    /// Requests that reached the network (breaker rejections and queue refusals do not).
    requests: Counter,
    errors: HashMap<&'static str, Counter>,
    acquire: Option<Histogram>,
}

const ERROR_KINDS: [&str; 9] = [
    "queue_full",
    "slot_timeout",
    "connect",
    "timeout",
    "body_too_large",
    "client_body",
    "client_stalled",
    "body_timeout",
    "failed",
];

impl Upstream {
    /// An upstream for the main runtime and `proxy_threads` proxy threads.
    pub fn new(config: UpstreamConfig, breaker: Arc<Breaker>, proxy_threads: usize) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        let clients = (0..=proxy_threads)
            .map(|_| {
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(POOL_IDLE_TIMEOUT)
                    .pool_max_idle_per_host(idle_per_pool(config.max_connections, proxy_threads))
                    .build(connector.clone())
            })
            .collect();
        let metrics = Arc::new(PoolMetrics {
            requests: Counter::default(),
            errors: ERROR_KINDS
                .iter()
                .map(|k| (*k, Counter::default()))
                .collect(),
            acquire: Some(Histogram::new(LATENCY_BUCKETS)),
        });
        let authority = config
            .url
            .authority()
            .cloned()
            .expect("validated upstream URLs have an authority");
        let host = host_header(&authority);
        Upstream {
            name: Arc::from(config.name.as_str()),
            authority,
            host,
            slots: Arc::new(Semaphore::new(config.max_connections)),
            waiters: AtomicUsize::new(0),
            breaker,
            clients,
            config,
            metrics,
        }
    }

    /// The pool of the runtime the caller runs on.
    fn client(&self) -> &Client<HttpConnector, Body> {
        let index = crate::proxy_threads::runtime_index();
        self.clients.get(index).unwrap_or(&self.clients[0])
    }

    /// The absolute URI for a path-and-query on this upstream, under its base path.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let base = self.config.url.path().trim_end_matches('/');
        let mut joined = String::with_capacity(base.len() + path_and_query.len());
        joined.push_str(base);
        joined.push_str(path_and_query);
        let mut parts = uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(PathAndQuery::try_from(joined)?);
        Ok(Uri::from_parts(parts)?)
    }

    /// The `Host` header of requests sent to this upstream, as the HTTP client would derive it
    /// from the URI: built once rather than formatted on every request.
    pub fn host(&self) -> &HeaderValue {
        &self.host
    }

    /// Sends `request` and waits for the response head; the body streams afterwards and keeps
    /// its connection slot until it ends.
    pub async fn call(
        &self,
        request: Request<Body>,
        options: CallOptions,
    ) -> Result<Response<Body>, UpstreamError> {
        let permit = match options.breaker {
            true => Some(
                self.breaker
                    .try_acquire(Instant::now())
                    .map_err(UpstreamError::CircuitOpen)?,
            ),
            false => None,
        };
        let started = Instant::now();
        let result = self.send(request, options.bounded_queue).await;
        if let Err(e) = &result {
            self.metrics.errors.get(e.kind()).map(Counter::inc);
        }
        if let Some(permit) = permit {
            permit.record(outcome(&result), started.elapsed(), Instant::now());
        }
        result
    }

    async fn send(
        &self,
        request: Request<Body>,
        bounded_queue: bool,
    ) -> Result<Response<Body>, UpstreamError> {
        let deadline = Instant::now() + self.config.timeout;
        let slot = self.slot(bounded_queue, deadline).await?;
        self.metrics.requests.inc();
        let watch = BodyWatch::default();
        let request = match request.body().is_end_stream() {
            true => request,
            false => request.map(|body| Watched::new(body, watch.clone()).boxed()),
        };
        let timeout = self.config.timeout;
        let response = tokio::time::timeout_at(deadline.into(), self.client().request(request))
            .await
            .map_err(|_| match watch.awaiting_client() {
                true => UpstreamError::ClientStalled(timeout),
                false => UpstreamError::Timeout(timeout),
            })?
            .map_err(|e| match classify(e) {
                UpstreamError::Failed(_) if watch.failed() => UpstreamError::ClientBody,
                other => other,
            })?;
        let body_timeout = self.config.body_timeout;
        let metrics = self.metrics.clone();
        Ok(response.map(|body| {
            Guarded::new(IdleTimeout::new(body, body_timeout), slot)
                .map_err(move |e| {
                    if e.is::<BodyStalled>() {
                        metrics.errors["body_timeout"].inc();
                    }
                    e
                })
                .boxed()
        }))
    }

    async fn slot(
        &self,
        bounded_queue: bool,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, UpstreamError> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            self.observe_acquire(Duration::ZERO);
            return Ok(slot);
        }
        let limit = match bounded_queue {
            true if self.waiters.load(Ordering::SeqCst) >= self.config.max_queue => {
                return Err(UpstreamError::QueueFull);
            }
            true => deadline.min(Instant::now() + self.config.acquire_timeout),
            false => deadline,
        };
        let started = Instant::now();
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        let acquired =
            tokio::time::timeout_at(limit.into(), self.slots.clone().acquire_owned()).await;
        self.observe_acquire(started.elapsed());
        match acquired {
            Ok(slot) => Ok(slot.expect("upstream semaphore is never closed")),
            Err(_) => Err(UpstreamError::SlotTimeout),
        }
    }

    fn observe_acquire(&self, waited: Duration) {
        if let Some(histogram) = &self.metrics.acquire {
            histogram.observe(waited);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.config.max_connections - self.slots.available_permits()
    }

    pub fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    /// Pool figures for `/admin/pools` and health checks.
    pub fn view(&self) -> serde_json::Value {
        let errors: serde_json::Map<String, serde_json::Value> = ERROR_KINDS
            .iter()
            .map(|k| (k.to_string(), json!(self.metrics.errors[k].get())))
            .collect();
        json!({
            "name": self.config.name,
            "kind": self.config.kind,
            "url": self.config.url.to_string(),
            "maxConnections": self.config.max_connections,
            "inFlight": self.in_flight(),
            "waiters": self.waiters(),
            "maxQueue": self.config.max_queue,
            "acquireTimeoutMs": self.config.acquire_timeout.as_millis() as u64,
            "timeoutMs": self.config.timeout.as_millis() as u64,
            "requests": self.metrics.requests.get(),
            "errors": errors,
            "breaker": self.breaker.state(Instant::now()).as_str(),
        })
    }

    /// A probe request to the upstream's health path, bypassing slots and breaker.
    async fn probe_once(&self, path: &str) -> Result<StatusCode, String> {
        let uri = self
            .uri_for(path)
            .map_err(|e| format!("bad probe path: {e}"))?;
        let request = Request::get(uri)
            .body(body::empty())
            .expect("a GET without body builds");
        let response = self
            .client()
            .request(request)
            .await
            .map_err(|e| match classify(e) {
                UpstreamError::Connect(detail) => format!("connect failed: {detail}"),
                other => format!("request failed: {other:?}"),
            })?;
        let status = response.status();
        // Drain the (small) body so the connection goes back to the pool.
        let _ = response.into_body().collect().await;
        Ok(status)
    }
}

/// Counts a waiter out when its wait ends, however it ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a call's result means for its breaker.
fn outcome(result: &Result<Response<Body>, UpstreamError>) -> Outcome {
    match result {
        Ok(response) => {
            let status = response.status();
            let failed = status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS;
            if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            }
        }
        Err(
            UpstreamError::QueueFull
            | UpstreamError::BodyTooLarge
            | UpstreamError::ClientBody
            | UpstreamError::ClientStalled(_)
            | UpstreamError::CircuitOpen(_),
        ) => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

fn classify(error: hyper_util::client::legacy::Error) -> UpstreamError {
    if error.is_connect() {
        return UpstreamError::Connect(chain(&error));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return UpstreamError::BodyTooLarge;
        }
        source = e.source();
    }
    UpstreamError::Failed(chain(&error))
}

/// An error and its causes on one line, for the log.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The `Host` header for requests to `authority` over plain HTTP: the port is left out when it
/// is the default, as HTTP clients do.
fn host_header(authority: &Authority) -> HeaderValue {
    match authority.port_u16() {
        Some(80) | None => HeaderValue::from_str(authority.host()),
        Some(port) => HeaderValue::from_str(&format!("{}:{port}", authority.host())),
    }
    .expect("an authority is a valid header value")
}

/// All upstreams by name. Looked up for every proxied request; FxHash because the names are
/// the operator's, never a client's.
pub struct Upstreams {
    by_name: HashMap<String, Arc<Upstream>, FxBuildHasher>,
}

impl Upstreams {
    /// Builds the upstreams; `breaker_for` hands each its breaker.
    pub fn new(
        configs: &[UpstreamConfig],
        breaker_for: impl Fn(&str) -> Arc<Breaker>,
        proxy_threads: usize,
    ) -> Upstreams {
        let by_name = configs
            .iter()
            .map(|c| {
                let upstream = Upstream::new(c.clone(), breaker_for(&c.name), proxy_threads);
                (c.name.clone(), Arc::new(upstream))
            })
            .collect();
        Upstreams { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    /// In name order.
    pub fn sorted(&self) -> Vec<&Arc<Upstream>> {
        let mut all: Vec<&Arc<Upstream>> = self.by_name.values().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        let all = self.sorted();
        out.header(
            "seawall_pool_requests_total",
            "counter",
            "Requests sent to each HTTP upstream (reached the network).",
        );
        for u in &all {
            out.sample(
                "seawall_pool_requests_total",
                &[("pool", &u.name)],
                u.metrics.requests.get() as f64,
            );
        }
        out.header("seawall_pool_errors_total", "counter", "Failed upstream calls by kind (queue_full, slot_timeout, connect, timeout, body_too_large, failed).");
        for u in &all {
            for kind in ERROR_KINDS {
                out.sample(
                    "seawall_pool_errors_total",
                    &[("pool", &u.name), ("kind", kind)],
                    u.metrics.errors[kind].get() as f64,
                );
            }
        }
        out.header(
            "seawall_pool_in_flight",
            "gauge",
            "Requests holding a connection slot of each upstream.",
        );
        for u in &all {
            out.sample(
                "seawall_pool_in_flight",
                &[("pool", &u.name)],
                u.in_flight() as f64,
            );
        }
        out.header(
            "seawall_pool_waiters",
            "gauge",
            "Requests waiting for a connection slot of each upstream.",
        );
        for u in &all {
            out.sample(
                "seawall_pool_waiters",
                &[("pool", &u.name)],
                u.waiters() as f64,
            );
        }
        out.header(
            "seawall_pool_max_connections",
            "gauge",
            "Configured connection slots of each upstream.",
        );
        for u in &all {
            out.sample(
                "seawall_pool_max_connections",
                &[("pool", &u.name)],
                u.config.max_connections as f64,
            );
        }
        out.header(
            "seawall_pool_acquire_seconds",
            "histogram",
            "Time spent waiting for a connection slot.",
        );
        for u in &all {
            if let Some(histogram) = &u.metrics.acquire {
                out.histogram_series(
                    "seawall_pool_acquire_seconds",
                    &[("pool", &u.name)],
                    histogram,
                );
            }
        }
    }
}

/// The background health check of one upstream: `GET health_path`, 2xx passes. While the
/// upstream's breaker is not closed the check is `warn` (seawall is already shielding clients
/// from it) rather than `fail`.
pub struct UpstreamProbe {
    upstream: Arc<Upstream>,
    path: String,
    key: String,
    /// Whether probes are switched on (`seawall.enhanced-pooling`), asked before each run.
    enabled: Box<dyn Fn() -> bool + Send + Sync>,
}

impl UpstreamProbe {
    pub fn new(
        upstream: Arc<Upstream>,
        path: String,
        enabled: Box<dyn Fn() -> bool + Send + Sync>,
    ) -> UpstreamProbe {
        let key = format!("{}:responseTime", upstream.name);
        UpstreamProbe {
            upstream,
            path,
            key,
            enabled,
        }
    }
}

impl Probe for UpstreamProbe {
    fn key(&self) -> &str {
        &self.key
    }

    fn component_type(&self) -> &'static str {
        match self.upstream.config.kind {
            UpstreamKind::Chroma => "datastore",
            UpstreamKind::Http => "component",
        }
    }

    fn gates_readiness(&self) -> bool {
        false
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            if !(self.enabled)() {
                return None;
            }
            let started = Instant::now();
            let mut reading = match self.upstream.probe_once(&self.path).await {
                Ok(status) if status.is_success() => Reading::pass(
                    json!((started.elapsed().as_secs_f64() * 1e4).round() / 10.0),
                    Some("ms"),
                ),
                Ok(status) => {
                    Reading::fail(format!("{} answered HTTP {}", self.path, status.as_u16()))
                }
                Err(e) => Reading::fail(e),
            };
            let breaker = self.upstream.breaker.state(Instant::now());
            if !matches!(
                breaker,
                State::Closed | State::Disabled | State::MetricsOnly
            ) {
                reading.status = Status::Warn;
                reading
                    .output
                    .get_or_insert_with(|| format!("circuit breaker {}", breaker.as_str()));
            }
            reading
                .extra
                .insert("circuitBreaker".into(), json!(breaker.as_str()));
            reading
                .extra
                .insert("inFlight".into(), json!(self.upstream.in_flight()));
            reading.extra.insert(
                "maxConnections".into(),
                json!(self.upstream.config.max_connections),
            );
            reading
                .extra
                .insert("waiters".into(), json!(self.upstream.waiters()));
            Some(reading)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_leaves_out_only_the_default_port() {
        for (authority, host) in [
            ("127.0.0.1:3000", "127.0.0.1:3000"),
            ("app.internal:80", "app.internal"),
            ("app.internal", "app.internal"),
            ("[::1]:8080", "[::1]:8080"),
            ("[::1]:80", "[::1]"),
        ] {
            let authority: Authority = authority.parse().unwrap();
            assert_eq!(host_header(&authority), host, "{authority}");
        }
    }

    #[test]
    fn the_pools_together_keep_about_max_connections_idle() {
        for (max, threads, each) in [(64, 1, 64), (64, 2, 32), (64, 3, 22), (1, 4, 1), (5, 2, 3)] {
            assert_eq!(idle_per_pool(max, threads), each, "{max} over {threads}");
            // Never fewer than max together, never a whole thread's share more.
            assert!(each * threads >= max && each * threads < max + threads);
        }
    }
}
