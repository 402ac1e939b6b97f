//! The PostgreSQL connection pool and what it reports (research/breaker-pool.md §6.3, §8.2).
//!
//! r2d2 is built around [`Instrumented`], a connection manager wrapper that times each
//! connection's set-up and remembers why each connection is closed, plus r2d2's own event and
//! error hooks for checkout, check-in, timeouts and failed connection attempts. Together they
//! give the pool's histograms (acquire, usage, creation) and counters (created, closed by
//! reason, connection errors by kind). The call path around the pool (breaker, bulkhead,
//! timeouts, statement errors) belongs to `pg`; this module only builds and watches the pool.
//!
//! A connection's close reason is counted when the connection itself is dropped, so every
//! close is counted exactly once whichever r2d2 path drops it: a failed validation on checkout
//! (`invalid`), a connection found broken on return (`broken`), the reaper (`max_lifetime` or
//! `idle_timeout`, told apart by age), or the pool's own drop at shutdown (`shutdown`).

use std::collections::HashMap;
use std::error::Error as _;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres::NoTls;
use r2d2::{Builder, HandleError, HandleEvent, ManageConnection, Pool};
use r2d2_postgres::PostgresConnectionManager;

use crate::config::PostgresConfig;
use crate::metrics::{Counter, Exposition, Histogram, LATENCY_BUCKETS};

pub type PgPool = Pool<Instrumented<PostgresConnectionManager<NoTls>>>;

/// r2d2's defaults, set explicitly so that the close reason can be told from a connection's
/// age: the reaper closes a connection at `MAX_LIFETIME` of age or after `IDLE_TIMEOUT` idle.
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

pub const CONNECTION_ERROR_KINDS: [&str; 6] = [
    "refused",
    "timeout",
    "auth",
    "db_missing",
    "too_many_connections",
    "other",
];

/// Why the pool closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Validation on checkout failed (the server ended the session, the socket is gone).
    Invalid,
    /// The connection was found broken when it came back to the pool.
    Broken,
    /// The reaper retired it at its maximum lifetime.
    MaxLifetime,
    /// The reaper closed it after it sat idle too long.
    IdleTimeout,
    /// The pool itself was dropped.
    Shutdown,
}

impl CloseReason {
    pub const ALL: [CloseReason; 5] = [
        CloseReason::Invalid,
        CloseReason::Broken,
        CloseReason::MaxLifetime,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Invalid => "invalid",
            CloseReason::Broken => "broken",
            CloseReason::MaxLifetime => "max_lifetime",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// The reason for a connection closed without a fault of its own: the pool is going away,
    /// or the reaper took it, at its lifetime or else for idling.
    fn unfaulted(age: Duration, shutting_down: bool) -> CloseReason {
        if shutting_down {
            CloseReason::Shutdown
        } else if age >= MAX_LIFETIME {
            CloseReason::MaxLifetime
        } else {
            CloseReason::IdleTimeout
        }
    }
}

/// What the pool has done, fed by [`Instrumented`] and r2d2's hooks.
#[derive(Debug)]
pub struct PoolMetrics {
    /// Time to check a connection out (r2d2's checkout event).
    pub acquire: Histogram,
    /// Time a connection stayed checked out (r2d2's check-in event).
    pub usage: Histogram,
    /// Time to open a connection that opened.
    pub creation: Histogram,
    pub timeouts: Counter,
    pub created: Counter,
    closed: [Counter; CloseReason::ALL.len()],
    connection_errors: HashMap<&'static str, Counter>,
    shutting_down: AtomicBool,
}

impl Default for PoolMetrics {
    fn default() -> PoolMetrics {
        PoolMetrics {
            acquire: Histogram::new(LATENCY_BUCKETS),
            usage: Histogram::new(LATENCY_BUCKETS),
            creation: Histogram::new(LATENCY_BUCKETS),
            timeouts: Counter::default(),
            created: Counter::default(),
            closed: Default::default(),
            connection_errors: CONNECTION_ERROR_KINDS
                .iter()
                .map(|k| (*k, Counter::default()))
                .collect(),
            shutting_down: AtomicBool::new(false),
        }
    }
}

impl PoolMetrics {
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].get()
    }

    pub fn closed_total(&self) -> u64 {
        self.closed.iter().map(Counter::get).sum()
    }

    pub fn connection_errors(&self, kind: &str) -> u64 {
        self.connection_errors.get(kind).map_or(0, Counter::get)
    }

    /// Connections dropped from now on are counted as closed by the shutdown.
    pub fn mark_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// The series this module owns, under `pool="<pool>"`.
    pub fn render(&self, pool: &str, out: &mut Exposition) {
        let labels = [("pool", pool)];
        for (name, help, histogram) in [
            (
                "seawall_db_pool_acquire_seconds",
                "Time to check a connection out of the pool.",
                &self.acquire,
            ),
            (
                "seawall_db_pool_usage_seconds",
                "Time a connection stayed checked out of the pool.",
                &self.usage,
            ),
            (
                "seawall_db_pool_creation_seconds",
                "Time to open a new connection.",
                &self.creation,
            ),
        ] {
            out.header(name, "histogram", help);
            out.histogram_series(name, &labels, histogram);
        }
        out.single_labelled(
            "seawall_db_pool_timeouts_total",
            "counter",
            "Checkouts that gave up waiting for a connection.",
            &labels,
            self.timeouts.get() as f64,
        );
        out.single_labelled(
            "seawall_db_pool_connections_created_total",
            "counter",
            "Connections opened by the pool.",
            &labels,
            self.created.get() as f64,
        );
        out.header(
            "seawall_db_pool_connections_closed_total",
            "counter",
            "Connections closed by the pool, by reason.",
        );
        for reason in CloseReason::ALL {
            out.sample(
                "seawall_db_pool_connections_closed_total",
                &[("pool", pool), ("reason", reason.as_str())],
                self.closed(reason) as f64,
            );
        }
        out.header(
            "seawall_db_pool_connection_errors_total",
            "counter",
            "Failed connection attempts, by kind.",
        );
        for kind in CONNECTION_ERROR_KINDS {
            out.sample(
                "seawall_db_pool_connection_errors_total",
                &[("pool", pool), ("kind", kind)],
                self.connection_errors(kind) as f64,
            );
        }
    }
}

/// The PostgreSQL pool for `config`, built without connecting (so seawall starts while
/// PostgreSQL is down); r2d2 connects in the background up to `pool_min` and retries until it
/// succeeds.
pub fn postgres(config: &PostgresConfig, metrics: &Arc<PoolMetrics>) -> PgPool {
    let manager = PostgresConnectionManager::new(config.connection.clone(), NoTls);
    builder(metrics)
        .max_size(config.pool_max)
        .min_idle(Some(config.pool_min))
        .connection_timeout(config.acquire_timeout)
        .error_handler(Box::new(PostgresErrors(metrics.clone())))
        .build_unchecked(Instrumented::new(manager, metrics.clone()))
}

/// A pool builder with the lifetimes, checkout validation and event hooks every instrumented
/// pool shares; sizes, timeouts and the error hook are the caller's.
fn builder<M: ManageConnection>(metrics: &Arc<PoolMetrics>) -> Builder<Instrumented<M>> {
    Pool::builder()
        .max_lifetime(Some(MAX_LIFETIME))
        .idle_timeout(Some(IDLE_TIMEOUT))
        .test_on_check_out(true)
        .event_handler(Box::new(Events(metrics.clone())))
}

/// A connection manager that times connection set-up and tags why connections close.
#[derive(Debug)]
pub struct Instrumented<M> {
    inner: M,
    metrics: Arc<PoolMetrics>,
}

impl<M> Instrumented<M> {
    pub fn new(inner: M, metrics: Arc<PoolMetrics>) -> Instrumented<M> {
        Instrumented { inner, metrics }
    }
}

/// A pooled connection with its birth and, once known, the fault it will be closed for.
pub struct Tracked<C> {
    connection: C,
    born: Instant,
    fault: Option<CloseReason>,
    metrics: Arc<PoolMetrics>,
}

impl<C> Deref for Tracked<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.connection
    }
}

impl<C> DerefMut for Tracked<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.connection
    }
}

impl<C> Drop for Tracked<C> {
    fn drop(&mut self) {
        let reason = self.fault.unwrap_or_else(|| {
            CloseReason::unfaulted(
                self.born.elapsed(),
                self.metrics.shutting_down.load(Ordering::SeqCst),
            )
        });
        self.metrics.closed[reason as usize].inc();
    }
}

impl<M: ManageConnection> ManageConnection for Instrumented<M> {
    type Connection = Tracked<M::Connection>;
    type Error = M::Error;

    fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let started = Instant::now();
        let connection = self.inner.connect()?;
        self.metrics.creation.observe(started.elapsed());
        self.metrics.created.inc();
        Ok(Tracked {
            connection,
            born: Instant::now(),
            fault: None,
            metrics: self.metrics.clone(),
        })
    }

    fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        let valid = self.inner.is_valid(&mut conn.connection);
        if valid.is_err() {
            conn.fault = Some(CloseReason::Invalid);
        }
        valid
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        let broken = self.inner.has_broken(&mut conn.connection);
        if broken {
            conn.fault = Some(CloseReason::Broken);
        }
        broken
    }
}

#[derive(Debug)]
struct Events(Arc<PoolMetrics>);

impl HandleEvent for Events {
    fn handle_checkout(&self, event: r2d2::event::CheckoutEvent) {
        self.0.acquire.observe(event.duration());
    }

    fn handle_checkin(&self, event: r2d2::event::CheckinEvent) {
        self.0.usage.observe(event.duration());
    }

    fn handle_timeout(&self, _: r2d2::event::TimeoutEvent) {
        self.0.timeouts.inc();
    }
}

#[derive(Debug)]
struct PostgresErrors(Arc<PoolMetrics>);

impl HandleError<postgres::Error> for PostgresErrors {
    fn handle_error(&self, error: postgres::Error) {
        let kind = connection_error_kind(&error);
        self.0.connection_errors[kind].inc();
        tracing::debug!(kind, error = %error, "PostgreSQL connection error");
    }
}

fn connection_error_kind(error: &postgres::Error) -> &'static str {
    if let Some(code) = error.code() {
        return match code.code() {
            c if c.starts_with("28") => "auth",
            "3D000" => "db_missing",
            "53300" => "too_many_connections",
            _ => "other",
        };
    }
    let mut source = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "refused",
                std::io::ErrorKind::TimedOut => "timeout",
                _ => "other",
            };
        }
        source = e.source();
    }
    if error.to_string().contains("timed out") {
        "timeout"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    //! research/breaker-pool.md §9 B4-B8 with a fake connection manager, r2d2's own pattern.

    use std::fmt;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[derive(Debug)]
    struct FakeError;

    impl fmt::Display for FakeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }

    impl std::error::Error for FakeError {}

    /// Connects after `delay`, refusing the first `refusals` attempts; validation and the
    /// broken check fail as many times as asked.
    #[derive(Debug, Default)]
    struct FakeManager {
        delay: Duration,
        refusals: usize,
        attempts: AtomicUsize,
        invalid: AtomicUsize,
        broken: AtomicUsize,
    }

    fn take_one(budget: &AtomicUsize) -> bool {
        budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    impl ManageConnection for FakeManager {
        type Connection = usize;
        type Error = FakeError;

        fn connect(&self) -> Result<usize, FakeError> {
            std::thread::sleep(self.delay);
            let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
            match attempt < self.refusals {
                true => Err(FakeError),
                false => Ok(attempt),
            }
        }

        fn is_valid(&self, _: &mut usize) -> Result<(), FakeError> {
            match take_one(&self.invalid) {
                true => Err(FakeError),
                false => Ok(()),
            }
        }

        fn has_broken(&self, _: &mut usize) -> bool {
            take_one(&self.broken)
        }
    }

    fn pool(manager: FakeManager) -> (Pool<Instrumented<FakeManager>>, Arc<PoolMetrics>) {
        let metrics = Arc::new(PoolMetrics::default());
        let pool = builder(&metrics)
            .max_size(1)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .build_unchecked(Instrumented::new(manager, metrics.clone()));
        (pool, metrics)
    }

    #[test]
    fn checkout_and_use_are_timed_and_the_initial_fill_is_counted() {
        let (pool, metrics) = pool(FakeManager::default());
        let held = pool.get().expect("a connection");
        assert_eq!(metrics.acquire.count(), 1);
        assert_eq!(metrics.created.get(), 1);
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert_eq!(metrics.usage.count(), 1);
        assert!(metrics.usage.sum() >= Duration::from_millis(50));
        assert_eq!(metrics.closed_total(), 0);
    }

    #[test]
    fn creation_time_is_that_of_the_connect() {
        let (pool, metrics) = pool(FakeManager {
            delay: Duration::from_millis(100),
            ..FakeManager::default()
        });
        drop(pool.get().expect("a connection"));
        assert_eq!(metrics.creation.count(), 1);
        assert!(metrics.creation.sum() >= Duration::from_millis(100));
    }

    #[test]
    fn a_connection_failing_validation_is_replaced_and_closed_as_invalid() {
        let (pool, metrics) = pool(FakeManager {
            invalid: AtomicUsize::new(1),
            ..FakeManager::default()
        });
        let connection = pool.get().expect("a fresh connection");
        assert_eq!(**connection, 1, "the first connection was discarded");
        assert_eq!(metrics.closed(CloseReason::Invalid), 1);
        assert_eq!(metrics.created.get(), 2);
    }

    #[test]
    fn a_connection_returned_broken_is_closed_as_broken_and_refilled() {
        let (pool, metrics) = pool(FakeManager {
            broken: AtomicUsize::new(1),
            ..FakeManager::default()
        });
        drop(pool.get().expect("a connection"));
        assert_eq!(metrics.closed(CloseReason::Broken), 1);
        let refilled = pool.get().expect("the pool refills");
        assert_eq!(**refilled, 1);
        assert_eq!(metrics.closed_total(), 1);
    }

    #[test]
    fn a_database_that_comes_back_is_reached_within_the_acquire_timeout() {
        let (pool, metrics) = pool(FakeManager {
            refusals: 3,
            ..FakeManager::default()
        });
        let connection = pool.get().expect("r2d2 retries until connect succeeds");
        assert_eq!(**connection, 3);
        assert_eq!(metrics.created.get(), 1);
    }

    #[test]
    fn dropping_the_pool_closes_its_connections_as_shutdown() {
        let (pool, metrics) = pool(FakeManager::default());
        drop(pool.get().expect("a connection"));
        metrics.mark_shutting_down();
        drop(pool);
        // r2d2's background thread may hold the pool for a moment after the last handle goes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.closed(CloseReason::Shutdown) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(metrics.closed(CloseReason::Shutdown), 1);
        assert_eq!(metrics.closed_total(), 1);
    }

    #[test]
    fn the_reaper_s_closes_are_told_apart_by_age() {
        let young = IDLE_TIMEOUT;
        assert_eq!(
            CloseReason::unfaulted(young, false),
            CloseReason::IdleTimeout
        );
        assert_eq!(
            CloseReason::unfaulted(MAX_LIFETIME, false),
            CloseReason::MaxLifetime
        );
        assert_eq!(CloseReason::unfaulted(young, true), CloseReason::Shutdown);
    }
}
