//! Prioritized rate limiting and overload shedding (SPEC §7).
//!
//! Five levels, `critical`, `high`, `medium`, `low`, `strict`, each a per-client quota and a
//! share of the in-flight cap. A request is first offered to the shedder (system state: 503
//! `SERVICE_OVERLOADED`, no quota used), then to its route's custom policies and its level's
//! policy (client behaviour: 429 `RATE_LIMIT_EXCEEDED`); it passes only when all admit it.
//! Policies in dry-run decide and count but never refuse. Quotas are GCRA per client key in
//! bounded tables (`gcra`); the shedder is in `shedder`; the wire format is in `headers`.
//! Operators change a policy at runtime; the change is kept in sled until it is removed.

mod gcra;
pub mod headers;
mod shedder;

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use fxhash::FxBuildHasher;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use gcra::{Gcra, Quota, Verdict};
pub use shedder::{Shedder, Slot};

use crate::metrics::{Counter, Exposition, Family, LabelSet, Pairs};
use crate::store::{Store, StoreError, trees};

/// Priority levels, from the one shed last to the one shed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Critical,
    High,
    Medium,
    Low,
    Strict,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Critical,
        Level::High,
        Level::Medium,
        Level::Low,
        Level::Strict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Critical => "critical",
            Level::High => "high",
            Level::Medium => "medium",
            Level::Low => "low",
            Level::Strict => "strict",
        }
    }

    pub fn parse(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == name)
    }

    /// The original system's quotas: requests per 60 s per client key.
    pub fn default_quota(self) -> u32 {
        match self {
            Level::Critical => 1000,
            Level::High => 200,
            Level::Medium => 100,
            Level::Low => 30,
            Level::Strict => 10,
        }
    }

    /// The share of the in-flight cap below which the level is admitted.
    pub fn default_shed_at(self) -> f64 {
        match self {
            Level::Critical => 1.0,
            Level::High => 0.95,
            Level::Medium => 0.85,
            Level::Low => 0.7,
            Level::Strict => 0.5,
        }
    }

    /// The original system's 429 messages.
    pub fn message(self) -> &'static str {
        match self {
            Level::Critical => "Critical endpoint rate limit exceeded",
            Level::High => "High priority endpoint rate limit exceeded",
            Level::Medium => "Standard endpoint rate limit exceeded",
            Level::Low => "Low priority endpoint rate limit exceeded",
            Level::Strict => "Strict rate limit exceeded for expensive operation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Enforce,
    /// Decide and count, never refuse, send no rate-limit fields.
    DryRun,
    Off,
}

impl Mode {
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "enforce" => Some(Mode::Enforce),
            "dry_run" => Some(Mode::DryRun),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }
}

/// One policy's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PolicySettings {
    pub quota: u32,
    pub window_s: u32,
    pub mode: Mode,
}

impl PolicySettings {
    fn quota(self) -> Quota {
        Quota {
            quota: self.quota,
            window: Duration::from_secs(self.window_s as u64),
        }
    }
}

/// `[ratelimit]`, validated by `config`.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimitConfig {
    pub max_in_flight: usize,
    /// Clients presenting this header are keyed by a hash of its value.
    pub api_key_header: Option<String>,
    pub max_keys: usize,
    pub ofrep_priority: Level,
    /// Per level: its policy and its share of the in-flight cap.
    pub levels: BTreeMap<Level, (PolicySettings, f64)>,
    pub policies: BTreeMap<String, PolicySettings>,
}

struct Policy {
    name: String,
    level: Option<Level>,
    configured: PolicySettings,
    settings: RwLock<PolicySettings>,
    gcra: Gcra,
    /// This policy's series of `seawall_ratelimit_decisions_total`, by level and outcome,
    /// each taken from the family on first use: counting a request's decision then needs no
    /// key built, hashed or allocated.
    decisions: [[OnceLock<Arc<Counter>>; Outcome::ALL.len()]; Level::ALL.len()],
}

/// What one policy decided for one request.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Allowed,
    DryRunLimited,
    Limited,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Allowed, Outcome::DryRunLimited, Outcome::Limited];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::DryRunLimited => "dry_run_limited",
            Outcome::Limited => "limited",
        }
    }
}

/// One policy's verdict for a request, for the response headers.
#[derive(Debug, Clone)]
pub struct Checked<'a> {
    pub policy: &'a str,
    pub quota: u32,
    pub window_s: u32,
    pub verdict: Verdict,
}

/// What the limiter decided.
pub enum Admission {
    /// Go on; add `headers` to the answer and hold `slot` until it is sent.
    Admitted {
        slot: Slot,
        headers: headers::Fields,
    },
    /// 503: the level is being shed.
    Shed { level: Level, retry_after: u64 },
    /// 429: a policy refused.
    Limited(Box<Limited>),
}

#[derive(Debug)]
pub struct Limited {
    pub level: Level,
    pub policy: String,
    pub retry_after: u64,
    pub headers: headers::Fields,
}

pub struct RateLimiter {
    origin: Instant,
    shedder: Arc<Shedder>,
    shares: BTreeMap<Level, f64>,
    /// By name. FxHash: the names are the operator's, and each request looks up one or more.
    policies: HashMap<String, Arc<Policy>, FxBuildHasher>,
    hasher: std::collections::hash_map::RandomState,
    overrides: sled::Tree,
    store: Store,
    decisions: Family<DecisionKey, Counter>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct DecisionKey {
    level: Level,
    policy: Arc<str>,
    outcome: &'static str,
}

impl LabelSet for DecisionKey {
    fn pairs(&self) -> Pairs {
        vec![
            ("level", self.level.as_str().to_string()),
            ("policy", self.policy.to_string()),
            ("outcome", self.outcome.to_string()),
        ]
    }
}

/// A runtime change of one policy, as the admin API takes it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub quota: Option<u32>,
    pub window_s: Option<u32>,
    pub mode: Option<Mode>,
}

impl RateLimiter {
    /// Builds the policies and applies stored overrides. Blocking (reads sled) at startup.
    pub fn open(config: &RateLimitConfig, store: &Store) -> Result<RateLimiter, StoreError> {
        let mut policies = HashMap::default();
        for (level, (settings, _)) in &config.levels {
            policies.insert(
                level.as_str().to_string(),
                Arc::new(Policy::new(
                    level.as_str(),
                    Some(*level),
                    *settings,
                    config.max_keys,
                )),
            );
        }
        for (name, settings) in &config.policies {
            policies.insert(
                name.clone(),
                Arc::new(Policy::new(name, None, *settings, config.max_keys)),
            );
        }
        let overrides = store.tree(trees::RATELIMIT_OVERRIDES)?;
        for item in overrides.iter() {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key).into_owned();
            let change: Override = serde_json::from_slice(&value)
                .map_err(|e| StoreError::Corrupt(format!("rate-limit override {name:?}: {e}")))?;
            match policies.get(&name) {
                Some(policy) => {
                    policy.apply(change);
                    tracing::info!(policy = %name, "rate-limit policy override restored");
                }
                None => {
                    tracing::warn!(policy = %name, "stored override names a policy that is no longer configured; ignored")
                }
            }
        }
        Ok(RateLimiter {
            origin: Instant::now(),
            shedder: Arc::new(Shedder::new(config.max_in_flight)),
            shares: config
                .levels
                .iter()
                .map(|(level, (_, share))| (*level, *share))
                .collect(),
            policies,
            hasher: std::collections::hash_map::RandomState::new(),
            overrides,
            store: store.clone(),
            decisions: Family::counters(),
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Decides a request of `client_key` at `level` with the route's custom `policies`.
    pub fn admit(&self, level: Level, policies: &[String], client_key: &str) -> Admission {
        let share = self.shares.get(&level).copied().unwrap_or(1.0);
        let Some(slot) = self.shedder.admit(share) else {
            // Shedding is the rare path: its series is looked up by key.
            let key = DecisionKey {
                level,
                policy: Arc::from(level.as_str()),
                outcome: "shed",
            };
            self.decisions.with(&key, Counter::inc);
            return Admission::Shed {
                level,
                retry_after: rand::random_range(1..=5),
            };
        };
        let key = self.hasher.hash_one(client_key);
        let now = self.now();
        let mut checked = Vec::new();
        // Custom policies are usually the tighter ones; checking them first wastes the least
        // quota when a later policy refuses (GCRA cannot give a unit back).
        let names = policies
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(level.as_str()));
        for name in names {
            let Some(policy) = self.policies.get(name) else {
                continue;
            };
            let settings = *policy.settings.read().expect("policy lock");
            if settings.mode == Mode::Off {
                continue;
            }
            let verdict = policy.gcra.check(key, settings.quota(), now);
            let outcome = match (verdict.admitted, settings.mode) {
                (true, _) => Outcome::Allowed,
                (false, Mode::DryRun) => Outcome::DryRunLimited,
                (false, _) => Outcome::Limited,
            };
            self.decided(policy, level, outcome);
            if settings.mode == Mode::DryRun {
                continue;
            }
            checked.push(Checked {
                policy: &policy.name,
                quota: settings.quota,
                window_s: settings.window_s,
                verdict,
            });
            if !verdict.admitted {
                let retry_after = headers::whole_seconds(verdict.retry_after);
                let headers = headers::limited(level, &checked, SystemTime::now());
                return Admission::Limited(Box::new(Limited {
                    level,
                    policy: name.to_string(),
                    retry_after,
                    headers,
                }));
            }
        }
        // The level's policy comes last in checking but first in the fields.
        checked.reverse();
        Admission::Admitted {
            slot,
            headers: headers::admitted(&checked, SystemTime::now()),
        }
    }

    /// Counts `policy`'s decision for a request at `level`.
    fn decided(&self, policy: &Policy, level: Level, outcome: Outcome) {
        policy.decisions[level as usize][outcome as usize]
            .get_or_init(|| {
                self.decisions.get(&DecisionKey {
                    level,
                    policy: Arc::from(policy.name.as_str()),
                    outcome: outcome.as_str(),
                })
            })
            .inc();
    }

    /// Forgets keys whose state is fresh again; run periodically.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.policies.values().map(|p| p.gcra.sweep(now)).sum()
    }

    /// Sweeps every ten seconds until the task is aborted.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let limiter = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(10));
            loop {
                ticker.tick().await;
                let swept = limiter.sweep();
                tracing::debug!(swept, "rate-limit keys swept");
            }
        })
    }

    /// Changes a policy at runtime and keeps the change in sled (flushed before returning).
    /// `None` removes the override: the configured settings apply again.
    pub async fn set_override(
        &self,
        name: &str,
        change: Option<Override>,
    ) -> Result<Option<Value>, StoreError> {
        let Some(policy) = self.policies.get(name).cloned() else {
            return Ok(None);
        };
        let tree = self.overrides.clone();
        let store = self.store.clone();
        let key = name.to_string();
        tokio::task::spawn_blocking(move || {
            let _writing = store.writing();
            match change {
                Some(change) => tree.insert(
                    key.as_bytes(),
                    serde_json::to_vec(&change).expect("overrides serialize"),
                )?,
                None => tree.remove(key.as_bytes())?,
            };
            store.flush()?;
            Ok::<(), StoreError>(())
        })
        .await
        .expect("override task does not panic")?;
        match change {
            Some(change) => policy.apply(change),
            None => *policy.settings.write().expect("policy lock") = policy.configured,
        }
        Ok(Some(self.policy_view(&policy)))
    }

    fn policy_view(&self, policy: &Policy) -> Value {
        let settings = *policy.settings.read().expect("policy lock");
        let decisions: BTreeMap<String, u64> = self
            .decisions
            .snapshot()
            .into_iter()
            .filter(|(pairs, _)| pairs[1].1 == policy.name)
            .fold(BTreeMap::new(), |mut map, (pairs, counter)| {
                *map.entry(pairs[2].1.clone()).or_default() += counter.get();
                map
            });
        let mut view = json!({
            "name": policy.name,
            "quota": settings.quota,
            "windowSeconds": settings.window_s,
            "mode": settings.mode,
            "overridden": settings != policy.configured,
            "trackedKeys": policy.gcra.len(),
            "decisions": decisions,
        });
        if let Some(level) = policy.level {
            view["shedAt"] = json!(self.shares.get(&level));
            view["shedBelowInFlight"] = json!(
                self.shedder
                    .limit(self.shares.get(&level).copied().unwrap_or(1.0))
            );
        }
        view
    }

    /// `GET /admin/ratelimits`.
    pub fn view(&self) -> Value {
        let levels: Vec<Value> = Level::ALL
            .iter()
            .filter_map(|l| self.policies.get(l.as_str()))
            .map(|p| self.policy_view(p))
            .collect();
        let mut custom: Vec<&Arc<Policy>> = self
            .policies
            .values()
            .filter(|p| p.level.is_none())
            .collect();
        custom.sort_by(|a, b| a.name.cmp(&b.name));
        let policies: Vec<Value> = custom.into_iter().map(|p| self.policy_view(p)).collect();
        json!({
            "maxInFlight": self.shedder.max(),
            "inFlight": self.shedder.in_flight(),
            "levels": levels,
            "policies": policies,
        })
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        out.counter_family(
            "seawall_ratelimit_decisions_total",
            "Rate-limit decisions by level, policy and outcome.",
            &self.decisions,
        );
        out.single(
            "seawall_ratelimit_in_flight",
            "gauge",
            "Requests holding an in-flight slot of the overload shedder.",
            self.shedder.in_flight() as f64,
        );
        out.single(
            "seawall_ratelimit_max_in_flight",
            "gauge",
            "The overload shedder's in-flight cap.",
            self.shedder.max() as f64,
        );
        out.header(
            "seawall_ratelimit_tracked_keys",
            "gauge",
            "Client keys tracked per policy.",
        );
        let mut names: Vec<&String> = self.policies.keys().collect();
        names.sort();
        for name in names {
            out.sample(
                "seawall_ratelimit_tracked_keys",
                &[("policy", name)],
                self.policies[name].gcra.len() as f64,
            );
        }
    }
}

impl Policy {
    fn new(name: &str, level: Option<Level>, settings: PolicySettings, max_keys: usize) -> Policy {
        Policy {
            name: name.to_string(),
            level,
            configured: settings,
            settings: RwLock::new(settings),
            gcra: Gcra::new(max_keys),
            decisions: Default::default(),
        }
    }

    fn apply(&self, change: Override) {
        let mut settings = self.settings.write().expect("policy lock");
        if let Some(quota) = change.quota {
            settings.quota = quota;
        }
        if let Some(window_s) = change.window_s {
            settings.window_s = window_s;
        }
        if let Some(mode) = change.mode {
            settings.mode = mode;
        }
    }
}
