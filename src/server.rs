//! The HTTP server: two listeners, the per-request frame, and graceful shutdown.
//!
//! `server` owns sockets and connections: binding, the cap on open connections, hyper's
//! HTTP/1.1 connection settings (keep-alive, header-read timeout), and the frame around every
//! request (request id, client address, the request timeout, metrics, the access log, turning
//! an [`Error`] into its JSON answer, and a panicking handler into a 500 on a connection that
//! stays open). What a request means is decided by a [`Service`]:
//! `router::ProxyService` on the proxy listener, `admin::AdminService` on the admin listener.
//!
//! The proxy listener is served on the proxy threads (`proxy_threads`), its connections spread
//! over them by `conn_balance`; the admin listener on the runtime that calls [`run`].
//!
//! Shutdown runs in a fixed order: readiness answers 503, the listeners keep accepting for
//! `shutdown_delay` so a load balancer can notice, then stop; open connections finish their
//! in-flight request within `shutdown_grace` while upgraded connections (`tunnel`) are
//! closed; the store is flushed; the proxy threads end; `run` returns. Connections are served with upgrades enabled,
//! so draining them is done here rather than by hyper-util's `GracefulShutdown`, which cannot
//! watch such connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::Instrument;

use crate::admin::AdminService;
use crate::audit::middleware::{Plan, RequestAudit};
use crate::body::{Body, RequestBody};
use crate::config::ServerConfig;
use crate::conn_balance::{Handoff, Post, Seat};
use crate::error::Error;
use crate::metrics::Counter;
use crate::request_context::RequestContext;
use crate::request_stats::Listener;
use crate::router::ProxyService;
use crate::send_timeout::SendTimeout;
use crate::state::{AppState, StartError};

/// The most a connection's read buffer holds, unless `server.max_header_bytes` is larger.
const READ_BUFFER: usize = 64 * 1024;

/// What a listener serves. `classify` runs first and cheaply, so the route label for metrics
/// is known even when `call` times out or fails.
pub trait Service: Send + Sync + 'static {
    type Target: Send;
    const LISTENER: Listener;

    fn state(&self) -> &Arc<AppState>;

    /// The route label for metrics and logs, and what to do with the request. It may first put
    /// the request target in canonical form (the proxy listener does: `request_target`), so
    /// that every later step sees the path that was classified.
    fn classify(&self, request: &mut Request<Incoming>) -> (Arc<str>, Self::Target);

    /// Whether and how the request is audited; `None` for no event.
    fn audit_plan(
        &self,
        route: &Arc<str>,
        target: &Self::Target,
        request: &Request<Incoming>,
        ctx: &RequestContext,
    ) -> Option<Plan<'_>>;

    fn call(
        &self,
        request: Request<RequestBody>,
        ctx: &RequestContext,
        target: Self::Target,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + Send;
}

/// Both listeners, bound: the proxy socket once per proxy thread (the same socket each time).
pub struct Listeners {
    proxy: Vec<std::net::TcpListener>,
    admin: TcpListener,
}

impl Listeners {
    pub async fn bind(server: &ServerConfig) -> Result<Listeners, StartError> {
        let failed = |what: &'static str, addr: SocketAddr| {
            move |source| StartError::Bind { what, addr, source }
        };
        let proxy = crate::proxy_threads::bind(server.listen, server.proxy_threads)
            .map_err(failed("proxy", server.listen))?;
        let admin = TcpListener::bind(server.admin_listen)
            .await
            .map_err(failed("admin", server.admin_listen))?;
        Ok(Listeners { proxy, admin })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy[0]
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }
}

/// Serves both listeners until `shutdown` resolves, then drains and flushes.
pub async fn run(listeners: Listeners, state: Arc<AppState>, shutdown: impl Future<Output = ()>) {
    let server = state.config.server.clone();
    state.health.run_once().await;
    let background = state.start_background();
    if let Some(started) = state.unclean_previous_run {
        state.audit.unclean_end_event(started).await;
    }
    state.audit.rollback_event().await;
    state.audit.system_event("sys.startup").await;
    tracing::info!(proxy = %listeners.proxy_addr(), admin = %listeners.admin_addr(), "listening");

    // Every connection task holds a receiver: it tells them to finish, and the sender sees
    // when the last one has gone.
    let (drain_tx, drain_rx) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    // The proxy threads run until the end of shutdown, so that whatever their requests left
    // running (an important audit event waiting for room in the queue) still runs.
    let (done_tx, done_rx) = watch::channel(false);
    let proxy_threads = {
        let proxy = Arc::new(ProxyService::new(state.clone()));
        let slots = Arc::new(Semaphore::new(server.max_connections));
        // Each thread owns its receivers: the drain is over when the last one is dropped.
        let inputs = listeners
            .proxy
            .into_iter()
            .map(|socket| (socket, drain_rx.clone(), stop_rx.clone(), done_rx.clone()))
            .collect();
        crate::proxy_threads::start(inputs, move |index, (socket, drain, stop, mut done)| {
            let (proxy, slots) = (proxy.clone(), slots.clone());
            async move {
                let name = crate::proxy_threads::thread_name(index);
                proxy.state().watchdog.watch_this_runtime(&name);
                let post = proxy.state().connections.post(index);
                match TcpListener::from_std(socket) {
                    Ok(listener) => {
                        accept_loop(listener, proxy, slots, drain, stop, Some(post)).await
                    }
                    // The other threads go on serving the socket.
                    Err(e) => {
                        tracing::error!(error = %e, thread = %name, "proxy thread cannot watch the listener")
                    }
                }
                let _ = done.wait_for(|done| *done).await;
            }
        })
    };
    let admin = Arc::new(AdminService::new(state.clone()));
    let accepting = accept_loop(
        listeners.admin,
        admin,
        Arc::new(Semaphore::new(server.admin_max_connections)),
        drain_rx.clone(),
        stop_rx.clone(),
        None,
    );
    let controller = async {
        shutdown.await;
        state.health.set_draining();
        tracing::info!(
            delay_ms = server.shutdown_delay.as_millis() as u64,
            "shutdown requested: readiness is now 503"
        );
        tokio::time::sleep(server.shutdown_delay).await;
        let _ = stop_tx.send(true);
    };
    tokio::join!(accepting, controller);
    drop(drain_rx);

    tracing::info!(
        connections = drain_tx.receiver_count(),
        tunnels = state.tunnels.open_count(),
        grace_ms = server.shutdown_grace.as_millis() as u64,
        "listeners closed; draining"
    );
    drain_tx.send_replace(true);
    state.tunnels.close_all();
    if tokio::time::timeout(server.shutdown_grace, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!("grace period over with requests still in flight; closing them");
    }
    for task in background {
        task.abort();
    }
    state.audit.system_event("sys.shutdown").await;
    state.close().await;
    let saving = state.clone();
    match tokio::task::spawn_blocking(move || saving.save()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "saving state on shutdown failed"),
        Err(_) => tracing::error!("saving state on shutdown panicked"),
    }
    match state.store.flush_async().await {
        Ok(()) => tracing::info!("store flushed; shutdown complete"),
        Err(e) => tracing::error!(error = %e, "store flush on shutdown failed"),
    }
    done_tx.send_replace(true);
    let joined = tokio::task::spawn_blocking(move || {
        proxy_threads
            .into_iter()
            .all(|thread| thread.join().is_ok())
    });
    if !matches!(joined.await, Ok(true)) {
        tracing::error!("a proxy thread panicked");
    }
}

/// Serves `listener` until `stop`; `slots` caps the connections open at once (shared by the
/// proxy threads, which accept from one socket). On a proxy thread, `post` spreads what it
/// accepts over the threads (`conn_balance`) and brings what the others hand it.
async fn accept_loop<S: Service>(
    listener: TcpListener,
    service: Arc<S>,
    slots: Arc<Semaphore>,
    drain: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
    mut post: Option<Post>,
) {
    let serve = Connections::new(service, drain);
    loop {
        let (stream, peer, slot) = tokio::select! {
            accepted = accept(&listener, &slots, S::LISTENER.as_str()) => match accepted {
                Some(accepted) => accepted,
                None => continue,
            },
            Some(handoff) = received(&mut post) => {
                serve.handed(handoff);
                continue;
            }
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let Some(post) = &post else {
            serve.spawn(stream, peer, slot, None);
            continue;
        };
        let seat = post.place();
        if seat.thread() == post.here() {
            serve.spawn(stream, peer, slot, Some(seat));
            continue;
        }
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, %peer, "connection lost while handing it over");
                continue;
            }
        };
        let handoff = Handoff {
            stream,
            peer,
            slot,
            seat,
        };
        // Refused only once that thread has stopped: serve it here, counted here.
        if let Err(mut handoff) = post.hand_over(handoff) {
            handoff.seat = post.seat_here();
            serve.handed(*handoff);
        }
    }
    // Connections handed over before the stop were accepted: they are served (and drained).
    if let Some(post) = &mut post {
        for handoff in post.close() {
            serve.handed(handoff);
        }
    }
}

/// Waits for a free slot, then accepts a connection; `None` after an accept error, which is
/// logged and followed by a short pause instead of spinning on it.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    name: &'static str,
) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    // Waiting for a slot before accepting leaves excess connections in the kernel's backlog
    // instead of accepting sockets that cannot be served.
    let slot = slots
        .clone()
        .acquire_owned()
        .await
        .expect("connection semaphore is never closed");
    match listener.accept().await {
        Ok((stream, peer)) => Some((stream, peer, slot)),
        Err(e) => {
            // Usually EMFILE.
            tracing::warn!(error = %e, listener = name, "accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// The next connection another thread handed over; never, without a post.
async fn received(post: &mut Option<Post>) -> Option<Handoff> {
    match post {
        Some(post) => post.received().await,
        None => std::future::pending().await,
    }
}

/// Serves accepted connections of one listener on the calling thread's runtime.
struct Connections<S> {
    service: Arc<S>,
    builder: http1::Builder,
    send_timeout: Duration,
    send_timeouts: Arc<Counter>,
    drain: watch::Receiver<bool>,
}

impl<S: Service> Connections<S> {
    fn new(service: Arc<S>, drain: watch::Receiver<bool>) -> Connections<S> {
        let server = &service.state().config.server;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .max_header_size(server.max_header_bytes)
            // hyper's default read buffer (up to about 400 KiB per connection) times the
            // connection cap would let clients pin gigabytes; bodies stream fine through 64 KiB.
            .max_buf_size(server.max_header_bytes.max(READ_BUFFER))
            .keep_alive(true);
        Connections {
            send_timeout: server.send_timeout,
            send_timeouts: service.state().stats.send_timeouts(),
            service,
            builder,
            drain,
        }
    }

    /// Serves a connection another thread accepted, on this thread's reactor.
    fn handed(&self, handoff: Handoff) {
        let Handoff {
            stream,
            peer,
            slot,
            seat,
        } = handoff;
        match TcpStream::from_std(stream) {
            Ok(stream) => self.spawn(stream, peer, slot, Some(seat)),
            Err(e) => {
                tracing::warn!(error = %e, %peer, "a handed-over connection could not be served")
            }
        }
    }

    /// Serves one connection in a task of its own until it ends or the drain closes it; the
    /// slot and the seat are held until then.
    fn spawn(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: OwnedSemaphorePermit,
        seat: Option<Seat>,
    ) {
        let _ = stream.set_nodelay(true);
        let service = self.service.clone();
        let handler = service_fn(move |request| {
            let service = service.clone();
            async move { Ok::<_, Infallible>(exchange(&*service, request, peer).await) }
        });
        let stream = SendTimeout::new(stream, self.send_timeout, self.send_timeouts.clone());
        let connection = self
            .builder
            .serve_connection(TokioIo::new(stream), handler)
            .with_upgrades();
        let mut drain = self.drain.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = async { drain.wait_for(|drain| *drain).await.is_ok() } => {
                    // Finish the request in flight, then close; an idle connection closes now.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop((slot, seat));
        });
    }
}

/// The frame around one request: context, timeout, error answer, headers, metrics, log.
async fn exchange<S: Service>(
    service: &S,
    mut request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let state = service.state();
    let mut ctx = RequestContext::new(
        peer,
        request.headers(),
        &state.config.server.trusted_proxies,
    );
    if let Some(header) = &state.config.ratelimit.api_key_header {
        ctx = ctx.keyed_by_api_key(request.headers(), header);
    }
    let (route, target) = service.classify(&mut request);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut tracker = InFlight::start(state, S::LISTENER, route.clone(), method.clone());
    let (mut audit, request) = match service.audit_plan(&route, &target, &request, &ctx) {
        Some(plan) => {
            let (audit, request) = RequestAudit::begin(state.audit.clone(), plan, request, &ctx);
            (Some(audit), request)
        }
        None => (None, request.map(BodyExt::boxed)),
    };
    let span = tracing::info_span!("request", id = %ctx.request_id);
    let timeout = state.config.server.request_timeout;
    let call = async {
        // blocking-strict: nothing happens to the request until its arrival is on disk.
        if let Some(audit) = audit.as_mut().filter(|audit| audit.is_strict())
            && !audit.record_received().await
        {
            return Err(Error::AuditUnavailable);
        }
        service.call(request, &ctx, target).await
    };
    // Boxed once here, the handler's future (several KiB: the upstream call is nested inside it)
    // is not copied again by each future that wraps it, nor by hyper when it stores this one.
    let called = Box::pin(tokio::time::timeout(timeout, call));
    let outcome = catch_panic(called).instrument(span.clone()).await;
    let panicked = outcome.is_err();
    let mut response = match outcome {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(error))) => answer_error(&error, &ctx, &span),
        Ok(Err(_)) => answer_error(&Error::RequestTimeout(timeout), &ctx, &span),
        Err(panic) => {
            span.in_scope(|| tracing::error!(panic = %panic, "request handler panicked"));
            answer_error(&Error::Internal(format!("panic: {panic}")), &ctx, &span)
        }
    };
    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&ctx.request_id) {
        headers.insert(crate::request_context::X_REQUEST_ID, id);
    }
    // A 101 keeps `Connection: upgrade` or the client cannot switch; its tunnel is closed
    // when the drain begins, like the others.
    if state.health.is_draining() && !switching {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(audit) = audit {
        response = if panicked {
            audit.answer_panicked(response).await
        } else {
            audit.answer(response).await
        };
    }
    let status = response.status().as_u16();
    let elapsed = tracker.finish(status);
    span.in_scope(|| {
        tracing::info!(
            listener = S::LISTENER.as_str(),
            route = %route,
            method = %method,
            path = %path,
            status,
            client = %ctx.client_ip,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        )
    });
    response
}

/// Runs `future`, turning a panic inside it into `Err` with the panic's message. The future is
/// not polled again after it panicked.
fn catch_panic<F: Future + Unpin>(
    mut future: F,
) -> impl Future<Output = Result<F::Output, String>> {
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(&mut future).poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
}

fn answer_error(error: &Error, ctx: &RequestContext, span: &tracing::Span) -> Response<Body> {
    if error.status().is_server_error() {
        span.in_scope(|| tracing::warn!(error = %error, code = error.code(), "request failed"));
    }
    error.to_response(&ctx.request_id)
}

/// Counts a request as in flight until it is answered; a request whose future is dropped
/// (the client went away) is recorded with status 499, as nginx does.
struct InFlight<'a> {
    state: &'a AppState,
    listener: Listener,
    route: Arc<str>,
    method: Method,
    done: bool,
    started: std::time::Instant,
}

impl<'a> InFlight<'a> {
    fn start(
        state: &'a AppState,
        listener: Listener,
        route: Arc<str>,
        method: Method,
    ) -> InFlight<'a> {
        state.stats.started(listener);
        InFlight {
            state,
            listener,
            route,
            method,
            done: false,
            started: std::time::Instant::now(),
        }
    }

    fn finish(&mut self, status: u16) -> Duration {
        let elapsed = self.started.elapsed();
        self.done = true;
        self.state
            .stats
            .finished(self.listener, &self.route, &self.method, status, elapsed);
        elapsed
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.finish(499);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Empty;

    use super::*;
    use crate::audit::event::Stream;
    use crate::audit::policy;
    use crate::config::{Config, MapEnv};

    /// Every request panics; audited at the default level like a proxied route.
    struct Panicking {
        state: Arc<AppState>,
    }

    impl Service for Panicking {
        type Target = ();
        const LISTENER: Listener = Listener::Proxy;

        fn state(&self) -> &Arc<AppState> {
            &self.state
        }

        fn classify(&self, _: &mut Request<Incoming>) -> (Arc<str>, ()) {
            (Arc::from("broken"), ())
        }

        fn audit_plan(
            &self,
            route: &Arc<str>,
            _: &(),
            request: &Request<Incoming>,
            _: &RequestContext,
        ) -> Option<Plan<'_>> {
            Some(Plan {
                decision: policy::decide(&[], None, route, request.method()),
                route: route.clone(),
                important: false,
                durable: false,
                admin_actor: None,
                api_key_header: None,
            })
        }

        async fn call(
            &self,
            _: Request<RequestBody>,
            _: &RequestContext,
            _: (),
        ) -> Result<Response<Body>, Error> {
            panic!("the handler broke")
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_on_a_connection_that_stays_open_and_is_audited() {
        let dir = tempfile::TempDir::new().unwrap();
        let env: MapEnv = [(
            "SEAWALL_DATA_DIR".to_string(),
            dir.path().to_string_lossy().into_owned(),
        )]
        .into();
        let config = Config::from_toml("", &env).unwrap();
        let state = tokio::task::spawn_blocking(move || AppState::build(config))
            .await
            .unwrap()
            .unwrap();
        let state = Arc::new(state);
        state.audit.start();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let service = Arc::new(Panicking {
            state: state.clone(),
        });
        let (_drain, draining) = watch::channel(false);
        let serving = accept_loop(
            listener,
            service,
            Arc::new(Semaphore::new(4)),
            draining,
            stopped,
            None,
        );
        let exercise = async {
            exercise(addr).await;
            stop.send_replace(true);
        };
        tokio::join!(serving, exercise);

        state.audit.flush().await;
        let panics = Stream::ALL
            .into_iter()
            .flat_map(|stream| state.audit.log.events(stream))
            .map(|item| item.unwrap().1.header)
            .filter(|header| {
                header.contains(r#""reason":"panic""#) && header.contains(r#""status_code":500"#)
            })
            .count();
        assert_eq!(panics, 2);
    }

    /// Two requests on one connection: both answered 500.
    async fn exercise(addr: SocketAddr) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut client, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        for _ in 0..2 {
            let request = Request::get(format!("http://{addr}/anything"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = client.send_request(request).await.unwrap();
            assert_eq!(response.status(), 500);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"], "INTERNAL_ERROR");
            assert!(
                !body.to_string().contains("the handler broke"),
                "a panic's message is not sent to the client: {body}"
            );
        }
    }
}
