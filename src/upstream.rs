//! HTTP upstreams: a keep-alive connection pool per configured upstream, with a cap on
//! concurrent requests and the connect and response-head timeouts.
//!
//! An [`Upstream`] sends one already-built request and classifies what went wrong as an
//! [`UpstreamError`]. It does not know about routes, headers or clients; `proxy` prepares the
//! request and turns errors into answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use crate::body::{Body, Guarded};
use crate::config::UpstreamConfig;

/// Idle pooled connections are closed after this long; below typical server keep-alive limits
/// so seawall, not the upstream, closes them and a request never races a closing socket.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// TCP keepalive probes on upstream sockets, so a dead peer is noticed on idle connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why an upstream call did not produce a response head.
#[derive(Debug)]
pub enum UpstreamError {
    /// No connection slot freed up before the deadline.
    Busy,
    /// The TCP connection could not be made (refused, unreachable, connect timeout).
    Connect(String),
    /// No response head within the upstream's timeout.
    Timeout(Duration),
    /// The client's request body broke the size limit while streaming.
    BodyTooLarge,
    /// Anything else: reset connections, malformed responses, a failing request body.
    Failed(String),
}

/// One configured upstream.
pub struct Upstream {
    pub name: Arc<str>,
    pub config: UpstreamConfig,
    client: Client<HttpConnector, Body>,
    /// Caps requests in flight, so one slow upstream cannot take every socket and task.
    slots: Arc<Semaphore>,
}

impl Upstream {
    pub fn new(config: UpstreamConfig) -> Upstream {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(config.max_connections)
            .build(connector);
        Upstream {
            name: Arc::from(config.name.as_str()),
            slots: Arc::new(Semaphore::new(config.max_connections)),
            client,
            config,
        }
    }

    /// The absolute URI for a path-and-query on this upstream, under its base path.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let base = self.config.url.path().trim_end_matches('/');
        let authority = self
            .config
            .url
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(format!("{base}{path_and_query}"))
            .build()
    }

    /// Sends `request` and waits for the response head; the body streams afterwards and keeps
    /// its connection slot until it ends.
    pub async fn send(&self, request: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let deadline = Instant::now() + self.config.timeout;
        let permit = tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned())
            .await
            .map_err(|_| UpstreamError::Busy)?
            .expect("upstream semaphore is never closed");
        let response = tokio::time::timeout_at(deadline.into(), self.client.request(request))
            .await
            .map_err(|_| UpstreamError::Timeout(self.config.timeout))?
            .map_err(classify)?;
        Ok(response.map(|body| Guarded::new(body, permit).map_err(Into::into).boxed()))
    }

    pub fn in_flight(&self) -> usize {
        self.config.max_connections - self.slots.available_permits()
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

/// All upstreams by name.
pub struct Upstreams {
    by_name: HashMap<String, Arc<Upstream>>,
}

impl Upstreams {
    pub fn new(configs: &[UpstreamConfig]) -> Upstreams {
        let by_name = configs
            .iter()
            .map(|c| (c.name.clone(), Arc::new(Upstream::new(c.clone()))))
            .collect();
        Upstreams { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.by_name.values()
    }
}
