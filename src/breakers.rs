//! The breakers of seawall's dependencies: one per upstream (and PostgreSQL), restored from and
//! saved to sled, logged, and reported as metrics and through the admin API.
//!
//! Automatic transitions reach a bounded channel from the breaker's listener and are written by
//! a background recorder (sled's periodic flush makes them durable within half a second);
//! operator transitions are written and flushed before the admin API answers. What is saved is
//! what a restart needs: the state when it is manual or OPEN (with its wall-clock deadline), the
//! attempt count and the cumulative counters. Windows are not saved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::breaker::{
    Breaker, BreakerConfig, Cause, IllegalTransition, Persisted, Snapshot, State, Transition,
};
use crate::metrics::Exposition;
use crate::store::{Store, StoreError, trees};

/// Transitions waiting to be written; far more than any breaker produces between two writes.
const TRANSITION_QUEUE: usize = 1024;
/// Cumulative counters are saved this often.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// A breaker's saved state with the wall-clock time it was saved, so an OPEN deadline keeps
/// counting down while seawall is stopped.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    persisted: Persisted,
    saved_at_ms: u64,
}

/// One entry of a breaker's transition log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    pub breaker: String,
    pub from: State,
    pub to: State,
    pub cause: Cause,
    /// Percent; -1 when not measured (time-driven and manual transitions).
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for_ms: Option<u64>,
    pub attempts: u32,
    pub at: String,
    pub actor: String,
}

/// Why an operator's change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("no breaker is named {0:?}")]
    Unknown(String),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Breakers {
    by_name: BTreeMap<String, Arc<Breaker>>,
    store: Store,
    states: sled::Tree,
    log: sled::Tree,
}

impl Breakers {
    /// Builds (or restores) one breaker per `(name, config)`. Blocking: call at startup. The
    /// receiver carries automatic transitions to [`Breakers::spawn_recorder`].
    pub fn open(
        store: &Store,
        configs: &[(String, BreakerConfig)],
    ) -> Result<(Breakers, mpsc::Receiver<Transition>), StoreError> {
        let states = store.tree(trees::BREAKERS)?;
        let log = store.tree(trees::BREAKER_LOG)?;
        let (tx, rx) = mpsc::channel(TRANSITION_QUEUE);
        let now = Instant::now();
        let mut by_name = BTreeMap::new();
        for (name, config) in configs {
            let listener = listener(tx.clone());
            let breaker = match states.get(name.as_bytes())? {
                Some(bytes) => {
                    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| {
                        StoreError::Corrupt(format!("breaker {name:?} state does not parse: {e}"))
                    })?;
                    let mut persisted = saved.persisted;
                    let stopped_for =
                        Duration::from_millis(unix_ms().saturating_sub(saved.saved_at_ms));
                    persisted.open_remaining = persisted
                        .open_remaining
                        .map(|r| r.saturating_sub(stopped_for));
                    if persisted.state != State::Closed {
                        tracing::info!(breaker = %name, state = persisted.state.as_str(), "breaker state restored");
                    }
                    Breaker::restore(name, config.clone(), &persisted, now, Some(listener))
                }
                None => Breaker::new(name, config.clone(), now, Some(listener)),
            };
            by_name.insert(name.clone(), Arc::new(breaker));
        }
        Ok((
            Breakers {
                by_name,
                store: store.clone(),
                states,
                log,
            },
            rx,
        ))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Breaker>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Breaker>> {
        self.by_name.values()
    }

    /// Writes automatic transitions as they come and saves counters periodically, until aborted.
    pub fn spawn_recorder(
        self: &Arc<Self>,
        mut transitions: mpsc::Receiver<Transition>,
    ) -> tokio::task::JoinHandle<()> {
        let breakers = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SAVE_EVERY);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let work: Option<Transition> = tokio::select! {
                    received = transitions.recv() => match received {
                        Some(transition) => Some(transition),
                        None => return,
                    },
                    _ = ticker.tick() => None,
                };
                let this = breakers.clone();
                let written = tokio::task::spawn_blocking(move || match work {
                    Some(transition) => this.write_transition(&transition, "seawall"),
                    None => this.save_all(),
                })
                .await;
                if let Ok(Err(e)) = written {
                    tracing::error!(error = %e, "breaker state could not be saved");
                }
            }
        })
    }

    /// An operator's change, written and flushed before it returns.
    pub async fn set_state(
        self: &Arc<Self>,
        name: &str,
        to: State,
        actor: &str,
    ) -> Result<Snapshot, ManualError> {
        let breaker = self
            .get(name)
            .ok_or_else(|| ManualError::Unknown(name.to_string()))?
            .clone();
        let now = Instant::now();
        let from = breaker.state(now);
        breaker.transition_to(to, now)?;
        let this = self.clone();
        let actor = actor.to_string();
        let record = breaker.clone();
        tokio::task::spawn_blocking(move || {
            if from != to || to == State::Closed {
                let snapshot = record.snapshot(Instant::now());
                let transition = Transition {
                    breaker: record.name().to_string(),
                    from,
                    to,
                    cause: Cause::Manual,
                    failure_rate: -1.0,
                    slow_call_rate: -1.0,
                    open_for: snapshot.retry_after,
                    attempts: snapshot.attempts,
                };
                this.write_transition(&transition, &actor)?;
            }
            this.store.flush()?;
            Ok::<(), StoreError>(())
        })
        .await
        .expect("breaker write task does not panic")?;
        Ok(breaker.snapshot(Instant::now()))
    }

    /// The newest `limit` transitions of one breaker, newest first. Blocking (a prefix scan).
    pub fn recent(&self, name: &str, limit: usize) -> Result<Vec<LogEntry>, StoreError> {
        let mut prefix = name.as_bytes().to_vec();
        prefix.push(0);
        let mut entries = Vec::new();
        for item in self.log.scan_prefix(&prefix).rev().take(limit) {
            let (_, value) = item?;
            entries.push(
                serde_json::from_slice(&value)
                    .map_err(|e| StoreError::Corrupt(format!("breaker log: {e}")))?,
            );
        }
        Ok(entries)
    }

    /// Saves every breaker's state and counters. Blocking.
    pub fn save_all(&self) -> Result<(), StoreError> {
        for breaker in self.by_name.values() {
            self.save(breaker)?;
        }
        Ok(())
    }

    fn save(&self, breaker: &Breaker) -> Result<(), StoreError> {
        let saved = Saved {
            persisted: breaker.persisted(Instant::now()),
            saved_at_ms: unix_ms(),
        };
        let _writing = self.store.writing();
        self.states.insert(
            breaker.name().as_bytes(),
            serde_json::to_vec(&saved).expect("breaker state serializes"),
        )?;
        Ok(())
    }

    fn write_transition(&self, transition: &Transition, actor: &str) -> Result<(), StoreError> {
        let entry = LogEntry {
            breaker: transition.breaker.clone(),
            from: transition.from,
            to: transition.to,
            cause: transition.cause,
            failure_rate: transition.failure_rate,
            slow_call_rate: transition.slow_call_rate,
            open_for_ms: transition.open_for.map(|d| d.as_millis() as u64),
            attempts: transition.attempts,
            at: crate::time::rfc3339(SystemTime::now()),
            actor: actor.to_string(),
        };
        let mut key = transition.breaker.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&self.store.generate_id()?.to_be_bytes());
        let writing = self.store.writing();
        self.log.insert(
            key,
            serde_json::to_vec(&entry).expect("log entries serialize"),
        )?;
        drop(writing);
        if let Some(breaker) = self.by_name.get(&transition.breaker) {
            self.save(breaker)?;
        }
        Ok(())
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        let now = Instant::now();
        let snapshots: Vec<(&str, Snapshot)> = self
            .by_name
            .iter()
            .map(|(n, b)| (n.as_str(), b.snapshot(now)))
            .collect();
        out.header(
            "seawall_circuit_breaker_state",
            "gauge",
            "Current state of each breaker: 1 on the active state, 0 on the others.",
        );
        for (name, s) in &snapshots {
            for state in State::ALL {
                let value = if s.state == state { 1.0 } else { 0.0 };
                out.sample(
                    "seawall_circuit_breaker_state",
                    &[("name", name), ("state", state.as_str())],
                    value,
                );
            }
        }
        out.header(
            "seawall_circuit_breaker_calls_total",
            "counter",
            "Calls through each breaker by recorded outcome.",
        );
        for (name, s) in &snapshots {
            for (kind, value) in [
                ("successful", s.totals.successful),
                ("failed", s.totals.failed),
                ("ignored", s.totals.ignored),
            ] {
                out.sample(
                    "seawall_circuit_breaker_calls_total",
                    &[("name", name), ("kind", kind)],
                    value as f64,
                );
            }
        }
        out.header(
            "seawall_circuit_breaker_slow_calls_total",
            "counter",
            "Calls slower than the breaker's slow-call threshold.",
        );
        for (name, s) in &snapshots {
            for (kind, value) in [
                ("successful", s.totals.slow_successful),
                ("failed", s.totals.slow_failed),
            ] {
                out.sample(
                    "seawall_circuit_breaker_slow_calls_total",
                    &[("name", name), ("kind", kind)],
                    value as f64,
                );
            }
        }
        out.header(
            "seawall_circuit_breaker_not_permitted_calls_total",
            "counter",
            "Calls the breaker refused, by reason.",
        );
        for (name, s) in &snapshots {
            let reasons = [
                ("open", s.totals.not_permitted_open),
                ("half_open_full", s.totals.not_permitted_half_open_full),
                ("forced_open", s.totals.not_permitted_forced_open),
            ];
            for (reason, value) in reasons {
                out.sample(
                    "seawall_circuit_breaker_not_permitted_calls_total",
                    &[("name", name), ("reason", reason)],
                    value as f64,
                );
            }
        }
        out.header(
            "seawall_circuit_breaker_buffered_calls",
            "gauge",
            "Calls in the breaker's current window, by outcome.",
        );
        for (name, s) in &snapshots {
            let ok = s.buffered.total - s.buffered.failed;
            out.sample(
                "seawall_circuit_breaker_buffered_calls",
                &[("name", name), ("kind", "successful")],
                ok as f64,
            );
            out.sample(
                "seawall_circuit_breaker_buffered_calls",
                &[("name", name), ("kind", "failed")],
                s.buffered.failed as f64,
            );
        }
        out.header(
            "seawall_circuit_breaker_failure_rate",
            "gauge",
            "Failure rate in percent over the window; -1 below the minimum number of calls.",
        );
        for (name, s) in &snapshots {
            out.sample(
                "seawall_circuit_breaker_failure_rate",
                &[("name", name)],
                s.failure_rate,
            );
        }
        out.header(
            "seawall_circuit_breaker_slow_call_rate",
            "gauge",
            "Slow-call rate in percent over the window; -1 below the minimum number of calls.",
        );
        for (name, s) in &snapshots {
            out.sample(
                "seawall_circuit_breaker_slow_call_rate",
                &[("name", name)],
                s.slow_call_rate,
            );
        }
        out.header(
            "seawall_circuit_breaker_state_transitions_total",
            "counter",
            "State changes of each breaker since start, by from and to.",
        );
        for (name, s) in &snapshots {
            for ((from, to), count) in &s.transitions {
                let labels = [
                    ("name", *name),
                    ("from", from.as_str()),
                    ("to", to.as_str()),
                ];
                out.sample(
                    "seawall_circuit_breaker_state_transitions_total",
                    &labels,
                    *count as f64,
                );
            }
        }
        out.header(
            "seawall_circuit_breaker_retry_after_seconds",
            "gauge",
            "Remaining OPEN time of each breaker; 0 unless OPEN.",
        );
        for (name, s) in &snapshots {
            let value = s.retry_after.map(|d| d.as_secs_f64()).unwrap_or(0.0);
            out.sample(
                "seawall_circuit_breaker_retry_after_seconds",
                &[("name", name)],
                value,
            );
        }
    }
}

/// Logs each automatic transition and queues it for the recorder. Operator transitions are
/// written by `set_state` itself, with their actor.
fn listener(tx: mpsc::Sender<Transition>) -> Box<dyn Fn(&Transition) + Send + Sync> {
    Box::new(move |transition: &Transition| {
        if transition.cause == Cause::Manual {
            return;
        }
        let (from, to) = (transition.from.as_str(), transition.to.as_str());
        match transition.to {
            State::Open => tracing::warn!(
                breaker = %transition.breaker, from, to, cause = ?transition.cause,
                failure_rate = transition.failure_rate, slow_call_rate = transition.slow_call_rate,
                "circuit breaker opened"
            ),
            _ => {
                tracing::info!(breaker = %transition.breaker, from, to, cause = ?transition.cause, "circuit breaker changed state")
            }
        }
        if tx.try_send(transition.clone()).is_err() {
            tracing::error!(breaker = %transition.breaker, "breaker transition queue full; transition not written");
        }
    })
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
