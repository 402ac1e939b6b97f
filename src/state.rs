//! The running state: every long-lived handle, built once from the validated config.
//!
//! Building the state is the step from "configuration" to "resources": it opens the store,
//! restores flags and breakers, loads the admin token and prepares the upstream pools, health
//! probes and the route table. Sockets are bound by `server`; nothing here touches the network.
//! Background tasks that need the runtime start in [`AppState::start_background`].

use std::io;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::admin_token::AdminToken;
use crate::audit::{AuditTrail, capacity};
use crate::breaker::Transition;
use crate::breakers::Breakers;
use crate::config::Config;
use crate::conn_balance::Balancer;
use crate::features::Feature;
use crate::flags::store::FlagStore;
use crate::health::{Health, Probe, StoreProbe};
use crate::metrics::Gauge;
use crate::pg::{Database, DatabaseProbe};
use crate::ratelimit::RateLimiter;
use crate::request_context::RequestContext;
use crate::request_stats::RequestStats;
use crate::route::RouteTable;
use crate::store::{Store, StoreError};
use crate::tunnel::Tunnels;
use crate::upstream::{CallOptions, UpstreamProbe, Upstreams};
use crate::watchdog::Watchdog;

/// Why seawall could not start with a valid configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("admin token: {0}")]
    AdminToken(io::Error),
    #[error("cannot bind {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: io::Error,
    },
}

pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub flags: Arc<FlagStore>,
    pub breakers: Arc<Breakers>,
    pub health: Arc<Health>,
    pub stats: RequestStats,
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    /// Upgraded connections (WebSockets) joined to their upstream.
    pub tunnels: Arc<Tunnels>,
    pub ratelimiter: Arc<RateLimiter>,
    /// The PostgreSQL pool, when a database is configured.
    pub database: Option<Arc<Database>>,
    pub admin_token: AdminToken,
    pub store_size: Arc<Gauge>,
    pub audit: Arc<AuditTrail>,
    /// Held by the backup that is running, so backups do not overlap.
    pub backups: tokio::sync::Mutex<()>,
    /// When the previous process serving this store started, if it ended without a shutdown.
    pub unclean_previous_run: Option<SystemTime>,
    /// Notices a runtime that runs no task; started with the background tasks.
    pub watchdog: Arc<Watchdog>,
    /// How many client connections each proxy thread serves, and the hand-overs between them.
    pub connections: Arc<Balancer>,
    /// Breaker transitions for the recorder, taken when background tasks start.
    transitions: Mutex<Option<mpsc::Receiver<Transition>>>,
}

impl AppState {
    /// Opens the store and prepares everything else. Blocking (sled open): call at startup.
    pub fn build(config: Config) -> Result<AppState, StartError> {
        let store = Store::open(&config.store)?;
        let flags = Arc::new(FlagStore::open(&store, &config.flags)?);
        let snapshot = flags.snapshot();
        for route in config.routes.iter() {
            if let Some(flag) = &route.flag
                && snapshot.live(flag).is_none()
            {
                // Likely a name spelled one way here and another in the API or FF_* variable.
                tracing::warn!(
                    route = %route.name,
                    flag = %flag,
                    "the route's flag does not exist: the route answers 404 until the flag is created"
                );
            }
        }
        let mut breaker_configs: Vec<_> = config
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.breaker.clone()))
            .collect();
        if let Some(postgres) = &config.postgres {
            breaker_configs.push(("postgres".to_string(), postgres.breaker.clone()));
        }
        let (breakers, transitions) = Breakers::open(&store, &breaker_configs)?;
        let breakers = Arc::new(breakers);
        let upstreams = Upstreams::new(
            &config.upstreams,
            |name| {
                breakers
                    .get(name)
                    .expect("one breaker per upstream")
                    .clone()
            },
            config.server.proxy_threads,
        );
        let ratelimiter = Arc::new(RateLimiter::open(&config.ratelimit, &store)?);
        let database = config.postgres.as_ref().map(|postgres| {
            let breaker = breakers
                .get("postgres")
                .expect("the postgres breaker")
                .clone();
            Arc::new(Database::new(postgres.clone(), breaker))
        });
        let admin_token = AdminToken::load(&config.admin, &config.store.data_dir)
            .map_err(StartError::AdminToken)?;
        let audit = Arc::new(AuditTrail::open(
            &store,
            &config.store.data_dir,
            config.audit.clone(),
        )?);

        let store_probe = StoreProbe::new(
            store.clone(),
            capacity::mark(config.audit.capacity.high_water_percent),
        );
        let store_size = store_probe.size_on_disk.clone();
        let mut probes: Vec<Arc<dyn Probe>> = vec![Arc::new(store_probe)];
        if let Some(database) = &database {
            probes.push(Arc::new(DatabaseProbe::new(
                database.clone(),
                config.health.timeout,
            )));
        }
        for upstream in upstreams.sorted() {
            if let Some(path) = &upstream.config.health_path {
                let flags = flags.clone();
                let enabled =
                    Box::new(move || flags.is_switched_on(Feature::EnhancedPooling.flag()));
                probes.push(Arc::new(UpstreamProbe::new(
                    upstream.clone(),
                    path.clone(),
                    enabled,
                )));
            }
        }
        // Last, so a start that fails while opening does not pass for a crash next time.
        let unclean_previous_run = store.mark_running(SystemTime::now())?;
        Ok(AppState {
            health: Arc::new(Health::new(config.health.clone(), probes)),
            stats: RequestStats::default(),
            watchdog: Arc::new(Watchdog::new(config.server.watchdog_kill)),
            connections: Balancer::new(config.server.proxy_threads),
            routes: RouteTable::new(&config.routes),
            upstreams,
            tunnels: Arc::new(Tunnels::new(&config.server)),
            ratelimiter,
            database,
            admin_token,
            store_size,
            audit,
            backups: tokio::sync::Mutex::new(()),
            unclean_previous_run,
            flags,
            breakers,
            store,
            transitions: Mutex::new(Some(transitions)),
            config: Arc::new(config),
        })
    }

    /// Starts the tasks that run for the life of the process: health probes, the breaker
    /// recorder, audit retention, KEK rotation and verification. Abort the handles to stop
    /// them. The audit writer and the watchdog start here too but are not among them: the
    /// writer stops after [`AppState::close`] has drained it, the watchdog with the runtime.
    pub fn start_background(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        self.audit.start();
        self.watchdog.start();
        let mut tasks = vec![
            self.health.spawn(),
            self.ratelimiter.spawn_sweeper(),
            self.audit.spawn_retention(),
            self.audit.spawn_kek_rotation(),
            self.audit.spawn_verification(),
        ];
        if let Some(transitions) = self.transitions.lock().expect("state lock").take() {
            tasks.push(self.breakers.spawn_recorder(transitions));
        }
        tasks
    }

    /// Saves what must outlive the process (breaker state) and clears the store's running
    /// mark, before the final flush: the next start then knows this one ended cleanly.
    /// Blocking.
    pub fn save(&self) -> Result<(), StoreError> {
        self.breakers.save_all()?;
        self.store.mark_stopped()
    }

    /// Writes and flushes the queued audit events, then closes the database pool (on the
    /// blocking pool, where its connections may be dropped).
    pub async fn close(&self) {
        self.audit.flush().await;
        if let Some(database) = &self.database {
            database.close().await;
        }
    }

    /// Whether one of seawall's own features is on for this request's client.
    pub fn feature_on(&self, feature: Feature, ctx: &RequestContext) -> bool {
        self.flags.is_on(feature.flag(), &ctx.flag_context)
    }

    /// The upstream call switches for this request.
    pub fn call_options(&self, ctx: &RequestContext) -> CallOptions {
        CallOptions {
            breaker: self.feature_on(Feature::CircuitBreaker, ctx),
            bounded_queue: self.feature_on(Feature::EnhancedPooling, ctx),
        }
    }
}
