//! PostgreSQL: the call path around the pool, and its health probe. Building the r2d2 pool and
//! watching what it does (its metrics) is `pg_pool`'s.
//!
//! The call path (research/breaker-pool.md §7.1): breaker permission, a slot in a bulkhead as
//! large as the pool (with a bounded wait queue under enhanced pooling), then on the blocking
//! pool: check out a connection within what is left of the acquire timeout, run the statement,
//! and drop the connection, all inside the closure. The async side waits at most the call
//! timeout; the statement itself is bounded by the server-side `statement_timeout`. The outcome
//! is classified (research §7.4) and recorded once.
//!
//! **Invariant:** no `postgres::Client`, pooled connection or pool is used or dropped on a
//! tokio worker thread: the sync client owns a runtime of its own and would panic there. The
//! pool itself is dropped through [`Database::close`] on the blocking pool.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::Type;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::breaker::{Breaker, Outcome, Rejected, State};
use crate::config::PostgresConfig;
use crate::health::{Probe, ProbeFuture, Reading, Status};
use crate::metrics::{Counter, Exposition};
use crate::pg_pool::{self, CONNECTION_ERROR_KINDS, CloseReason, PgPool, PoolMetrics};
use crate::upstream::CallOptions;

/// Why a database call did not return rows.
#[derive(Debug)]
pub enum DbError {
    /// The breaker refused; the database was not touched.
    CircuitOpen(Rejected),
    /// Enhanced pooling: the wait queue is full.
    QueueFull,
    /// No connection within the acquire timeout: the database is unreachable (no connection
    /// could be made) or every connection is busy.
    PoolTimeout { unavailable: bool },
    /// The call took longer than the call timeout, or the server cancelled the statement.
    Timeout,
    /// The connection broke, or the server is going away or out of resources.
    Connection(String),
    /// PostgreSQL refused the statement for a reason of the request (constraints, bad input).
    Rejected { sqlstate: String, conflict: bool },
    /// PostgreSQL refused the statement for a reason of the route (syntax, missing table).
    Failed { sqlstate: String, detail: String },
    /// seawall is shutting down.
    Closed,
}

impl DbError {
    /// The breaker outcome (research §7.4): the database answering with an error about the
    /// request is a success; outages, exhaustion and timeouts are failures.
    fn outcome(&self) -> Outcome {
        match self {
            DbError::CircuitOpen(_) | DbError::QueueFull | DbError::Closed => Outcome::Ignored,
            DbError::PoolTimeout { .. } | DbError::Timeout | DbError::Connection(_) => {
                Outcome::Failure
            }
            DbError::Rejected { .. } | DbError::Failed { .. } => Outcome::Success,
        }
    }
}

/// What the call path counts beyond the pool's own metrics.
#[derive(Debug, Default)]
struct CallMetrics {
    rejected: Counter,
    query_errors: Mutex<HashMap<String, u64>>,
}

pub struct Database {
    pub config: PostgresConfig,
    pub breaker: Arc<Breaker>,
    /// `None` once closed.
    pool: Mutex<Option<PgPool>>,
    slots: Arc<Semaphore>,
    waiters: AtomicUsize,
    pool_metrics: Arc<PoolMetrics>,
    metrics: CallMetrics,
}

impl Database {
    /// Builds the pool without connecting (see [`pg_pool::postgres`]).
    pub fn new(config: PostgresConfig, breaker: Arc<Breaker>) -> Database {
        let pool_metrics = Arc::new(PoolMetrics::default());
        Database {
            slots: Arc::new(Semaphore::new(config.pool_max as usize)),
            waiters: AtomicUsize::new(0),
            pool: Mutex::new(Some(pg_pool::postgres(&config, &pool_metrics))),
            breaker,
            config,
            pool_metrics,
            metrics: CallMetrics::default(),
        }
    }

    fn pool(&self) -> Option<PgPool> {
        self.pool.lock().expect("pool lock").clone()
    }

    /// Runs `sql` (already wrapped to return one JSON text) with text parameters; the rows as
    /// JSON text.
    pub async fn query_json(
        &self,
        sql: Arc<str>,
        params: Vec<Option<String>>,
        options: CallOptions,
    ) -> Result<String, DbError> {
        let permit = match options.breaker {
            true => Some(
                self.breaker
                    .try_acquire(Instant::now())
                    .map_err(DbError::CircuitOpen)?,
            ),
            false => None,
        };
        let started = Instant::now();
        let result = self.call(sql, params, options.bounded_queue, started).await;
        if let Err(e) = &result {
            self.count_error(e);
        }
        if let Some(permit) = permit {
            let outcome = result
                .as_ref()
                .map_or_else(DbError::outcome, |_| Outcome::Success);
            permit.record(outcome, started.elapsed(), Instant::now());
        }
        result
    }

    async fn call(
        &self,
        sql: Arc<str>,
        params: Vec<Option<String>>,
        bounded: bool,
        started: Instant,
    ) -> Result<String, DbError> {
        let deadline = started + self.config.call_timeout;
        let slot = self.slot(bounded, deadline).await?;
        let pool = self.pool().ok_or(DbError::Closed)?;
        let acquire = self
            .config
            .acquire_timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let work = tokio::task::spawn_blocking(move || {
            // The slot is held for as long as the blocking work runs, even if the caller has
            // stopped waiting, so the bulkhead counts what the pool really does.
            let _slot = slot;
            let mut connection = pool
                .get_timeout(acquire)
                .map_err(|_| DbError::PoolTimeout {
                    unavailable: pool.state().connections == 0,
                })?;
            let typed: Vec<(&(dyn postgres::types::ToSql + Sync), Type)> = params
                .iter()
                .map(|p| (p as &(dyn postgres::types::ToSql + Sync), Type::TEXT))
                .collect();
            let result = connection.query_typed_one(&sql, &typed).map_err(classify);
            drop(connection);
            result.map(|row| row.get::<_, String>(0))
        });
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(joined) => joined.expect("database task does not panic"),
            Err(_) => Err(DbError::Timeout),
        }
    }

    async fn slot(
        &self,
        bounded: bool,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, DbError> {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return Ok(slot);
        }
        let limit = match bounded {
            true if self.waiters.load(Ordering::SeqCst) >= self.config.max_queue => {
                return Err(DbError::QueueFull);
            }
            true => deadline.min(Instant::now() + self.config.acquire_timeout),
            false => deadline,
        };
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let acquired =
            tokio::time::timeout_at(limit.into(), self.slots.clone().acquire_owned()).await;
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        match acquired {
            Ok(slot) => Ok(slot.expect("database semaphore is never closed")),
            Err(_) => Err(DbError::PoolTimeout { unavailable: false }),
        }
    }

    fn count_error(&self, error: &DbError) {
        match error {
            DbError::QueueFull => self.metrics.rejected.inc(),
            DbError::Rejected { sqlstate, .. } | DbError::Failed { sqlstate, .. } => {
                let class = sqlstate.get(..2).unwrap_or("??").to_string();
                *self
                    .metrics
                    .query_errors
                    .lock()
                    .expect("metrics lock")
                    .entry(class)
                    .or_default() += 1;
            }
            _ => {}
        }
    }

    /// Drops the pool on the blocking pool (its connections own runtimes of their own).
    pub async fn close(&self) {
        let pool = self.pool.lock().expect("pool lock").take();
        self.pool_metrics.mark_shutting_down();
        let _ = tokio::task::spawn_blocking(move || drop(pool)).await;
    }

    /// `(connections, idle)` as r2d2 reports them.
    fn state(&self) -> (u32, u32) {
        self.pool()
            .map(|p| p.state())
            .map(|s| (s.connections, s.idle_connections))
            .unwrap_or((0, 0))
    }

    pub fn view(&self) -> serde_json::Value {
        let (connections, idle) = self.state();
        let errors: serde_json::Map<String, serde_json::Value> = CONNECTION_ERROR_KINDS
            .iter()
            .map(|k| (k.to_string(), json!(self.pool_metrics.connection_errors(k))))
            .collect();
        let closed: serde_json::Map<String, serde_json::Value> = CloseReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), json!(self.pool_metrics.closed(*r))))
            .collect();
        json!({
            "name": "postgres",
            "kind": "postgres",
            "url": self.config.url,
            "maxConnections": self.config.pool_max,
            "minIdle": self.config.pool_min,
            "connections": connections,
            "idle": idle,
            "inUse": connections - idle,
            "waiters": self.waiters.load(Ordering::SeqCst),
            "maxQueue": self.config.max_queue,
            "acquireTimeoutMs": self.config.acquire_timeout.as_millis() as u64,
            "statementTimeoutMs": self.config.statement_timeout.as_millis() as u64,
            "timeouts": self.pool_metrics.timeouts.get(),
            "rejected": self.metrics.rejected.get(),
            "connectionsCreated": self.pool_metrics.created.get(),
            "connectionsClosed": self.pool_metrics.closed_total(),
            "connectionsClosedByReason": closed,
            "connectionErrors": errors,
            "breaker": self.breaker.state(Instant::now()).as_str(),
        })
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        let (connections, idle) = self.state();
        let pool = [("pool", "postgres")];
        out.header(
            "seawall_db_pool_connections",
            "gauge",
            "Connections held by the PostgreSQL pool, by state.",
        );
        out.sample(
            "seawall_db_pool_connections",
            &[("pool", "postgres"), ("state", "idle")],
            idle as f64,
        );
        out.sample(
            "seawall_db_pool_connections",
            &[("pool", "postgres"), ("state", "in_use")],
            (connections - idle) as f64,
        );
        out.single_labelled(
            "seawall_db_pool_max_connections",
            "gauge",
            "Configured maximum size of the PostgreSQL pool.",
            &pool,
            self.config.pool_max as f64,
        );
        out.single_labelled(
            "seawall_db_pool_waiters",
            "gauge",
            "Requests waiting for a PostgreSQL slot.",
            &pool,
            self.waiters.load(Ordering::SeqCst) as f64,
        );
        out.single_labelled(
            "seawall_db_pool_rejected_total",
            "counter",
            "Calls refused because the wait queue was full.",
            &pool,
            self.metrics.rejected.get() as f64,
        );
        self.pool_metrics.render("postgres", out);
        out.header(
            "seawall_db_query_errors_total",
            "counter",
            "Statements PostgreSQL refused, by SQLSTATE class.",
        );
        let mut classes: Vec<(String, u64)> = self
            .metrics
            .query_errors
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        classes.sort();
        for (class, count) in classes {
            out.sample(
                "seawall_db_query_errors_total",
                &[("pool", "postgres"), ("sqlstate_class", &class)],
                count as f64,
            );
        }
    }
}

/// What a statement's error means (research §7.4).
fn classify(error: postgres::Error) -> DbError {
    let Some(state) = error.code() else {
        return if error.is_closed() || error.source().is_some() {
            DbError::Connection(error.to_string())
        } else {
            DbError::Failed {
                sqlstate: "XX000".to_string(),
                detail: error.to_string(),
            }
        };
    };
    let code = state.code().to_string();
    if *state == SqlState::QUERY_CANCELED {
        return DbError::Timeout;
    }
    match &code[..2] {
        "08" | "53" | "58" => DbError::Connection(error.to_string()),
        "57" => DbError::Connection(error.to_string()),
        "23" | "40" | "22" => {
            let conflict =
                matches!(code.as_str(), "23505" | "23503" | "23P01") || code.starts_with("40");
            DbError::Rejected {
                sqlstate: code,
                conflict,
            }
        }
        _ if code == "55P03" => DbError::Rejected {
            sqlstate: code,
            conflict: true,
        },
        _ => DbError::Failed {
            detail: error.to_string(),
            sqlstate: code,
        },
    }
}

/// Wraps a route's statement so PostgreSQL turns its rows into one JSON array.
pub fn wrap_as_json(sql: &str) -> String {
    let sql = sql.trim().trim_end_matches(';');
    format!(
        "WITH seawall_rows AS ({sql}) SELECT coalesce(json_agg(seawall_rows), '[]'::json)::text FROM seawall_rows"
    )
}

/// The background `SELECT 1`, bounded by the health timeout. A database behind an open
/// breaker is `warn`.
pub struct DatabaseProbe {
    database: Arc<Database>,
    timeout: Duration,
}

impl DatabaseProbe {
    pub fn new(database: Arc<Database>, timeout: Duration) -> DatabaseProbe {
        DatabaseProbe { database, timeout }
    }
}

impl Probe for DatabaseProbe {
    fn key(&self) -> &str {
        "postgres:responseTime"
    }

    fn component_type(&self) -> &'static str {
        "datastore"
    }

    fn gates_readiness(&self) -> bool {
        false
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let pool = self.database.pool()?;
            let timeout = self.timeout;
            let started = Instant::now();
            let result = tokio::task::spawn_blocking(move || {
                let mut connection = pool
                    .get_timeout(timeout)
                    .map_err(|e| format!("no connection: {e}"))?;
                connection
                    .simple_query("SELECT 1")
                    .map_err(|e| format!("SELECT 1 failed: {e}"))?;
                Ok::<(), String>(())
            })
            .await
            .unwrap_or_else(|_| Err("probe panicked".to_string()));
            let mut reading = match result {
                Ok(()) => Reading::pass(
                    json!((started.elapsed().as_secs_f64() * 1e4).round() / 10.0),
                    Some("ms"),
                ),
                Err(e) => Reading::fail(e),
            };
            let breaker = self.database.breaker.state(Instant::now());
            if !matches!(
                breaker,
                State::Closed | State::Disabled | State::MetricsOnly
            ) {
                reading.status = Status::Warn;
            }
            let (connections, idle) = self.database.state();
            reading
                .extra
                .insert("circuitBreaker".into(), json!(breaker.as_str()));
            reading
                .extra
                .insert("connections".into(), json!(connections));
            reading.extra.insert("idle".into(), json!(idle));
            reading.extra.insert(
                "maxConnections".into(),
                json!(self.database.config.pool_max),
            );
            reading.extra.insert(
                "waiters".into(),
                json!(self.database.waiters.load(Ordering::SeqCst)),
            );
            Some(reading)
        })
    }
}
