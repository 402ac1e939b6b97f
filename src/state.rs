//! The running state: every long-lived handle, built once from the validated config.
//!
//! Building the state is the step from "configuration" to "resources": it opens the store,
//! loads the admin token and prepares the upstream pools and the route table. Sockets are
//! bound by `server`; nothing here touches the network.

use std::io;
use std::sync::Arc;

use crate::admin_token::AdminToken;
use crate::config::Config;
use crate::features::{self, Feature};
use crate::flags::store::FlagStore;
use crate::health::{Health, Probe, StoreProbe};
use crate::metrics::Gauge;
use crate::request_context::RequestContext;
use crate::request_stats::RequestStats;
use crate::route::RouteTable;
use crate::store::{Store, StoreError};
use crate::upstream::Upstreams;

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
    pub health: Arc<Health>,
    pub stats: RequestStats,
    pub routes: RouteTable,
    pub upstreams: Upstreams,
    pub admin_token: AdminToken,
    pub store_size: Arc<Gauge>,
}

impl AppState {
    /// Opens the store and prepares everything else. Blocking (sled open): call at startup.
    pub fn build(config: Config) -> Result<AppState, StartError> {
        let store = Store::open(&config.store)?;
        let flags = Arc::new(FlagStore::open(&store, &config.flags)?);
        let admin_token = AdminToken::load(&config.admin, &config.store.data_dir)
            .map_err(StartError::AdminToken)?;
        let store_probe = StoreProbe::new(store.clone());
        let store_size = store_probe.size_on_disk.clone();
        let probes: Vec<Arc<dyn Probe>> = vec![Arc::new(store_probe)];
        Ok(AppState {
            health: Arc::new(Health::new(config.health.clone(), probes)),
            stats: RequestStats::default(),
            routes: RouteTable::new(&config.routes),
            upstreams: Upstreams::new(&config.upstreams),
            admin_token,
            store_size,
            flags,
            store,
            config: Arc::new(config),
        })
    }
}

impl AppState {
    /// Whether one of seawall's own features is on for this request's client.
    pub fn feature_on(&self, feature: Feature, ctx: &RequestContext) -> bool {
        self.flags
            .is_on(feature.flag(), &features::client_context(ctx))
    }
}
