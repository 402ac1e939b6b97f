//! The trail's background maintenance, each run recorded as a system event: retention (with
//! the capacity guard reading the data volume between runs), scheduled verification, and KEK
//! rotation. What each job does to the store is `retention`'s, `capacity`'s, `verify`'s and
//! `shred`'s; this module schedules them off the request path and reports their outcomes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;

use crate::audit::capacity::{CapacityGuard, Step, VolumeUsage};
use crate::audit::{AuditConfig, AuditTrail, Stream, retention, shred, system_draft, verify};
use crate::store::StoreError;

/// How long after start the first scheduled verification runs: late enough that a start is
/// not slowed by it, soon enough that frequent restarts do not skip it.
const FIRST_VERIFICATION: Duration = Duration::from_secs(600);

impl AuditTrail {
    /// Runs retention every `retention_interval`, starting now, and reads the data volume every
    /// `capacity.check_interval`: a change of the capacity guard's step runs retention at once.
    pub fn spawn_retention(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let trail = self.clone();
        tokio::spawn(async move {
            let every = |period| {
                let mut ticker = tokio::time::interval(period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticker
            };
            let mut retention = every(trail.config.retention_interval);
            let mut capacity = every(trail.config.capacity.check_interval);
            let mut guard = CapacityGuard::new(trail.config.capacity.high_water_percent);
            loop {
                tokio::select! {
                    biased;
                    _ = retention.tick() => {}
                    _ = capacity.tick() => {
                        if !trail.check_capacity(&mut guard).await {
                            continue;
                        }
                    }
                }
                let _ = trail.run_retention(SystemTime::now(), Instant::now()).await;
            }
        })
    }

    /// Reads the data volume into the metrics and the guard; a new step is recorded as a
    /// `sys.retention.capacity_override` event. True when the step changed.
    async fn check_capacity(&self, guard: &mut CapacityGuard) -> bool {
        let dir = self.data_dir.clone();
        let usage = match tokio::task::spawn_blocking(move || VolumeUsage::read(&dir)).await {
            Ok(Ok(usage)) => usage,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the data volume's free space");
                return false;
            }
            Err(_) => return false,
        };
        let clamp = |bytes: u64| i64::try_from(bytes).unwrap_or(i64::MAX);
        self.metrics.volume_size.set(clamp(usage.total_bytes));
        self.metrics
            .volume_available
            .set(clamp(usage.available_bytes));
        let Some(step) = guard.observe(usage) else {
            return false;
        };
        self.capacity_step.store(step.level(), Ordering::Relaxed);
        let effective = self.effective_config();
        let access = effective.retention[&Stream::Access];
        // Whole percent: audit headers hold integers only (canonical JSON, docs/audit-format.md).
        let used_percent = usage.used_percent().floor() as u64;
        if step == Step::Normal {
            tracing::info!(
                used_percent,
                "data volume back under its mark: configured retention restored"
            );
        } else {
            tracing::warn!(
                step = step.as_str(),
                used_percent,
                available_bytes = usage.available_bytes,
                "data volume filling: audit retention shortened"
            );
        }
        let draft = system_draft("sys.retention.capacity_override", "success")
            .field("step", json!(step))
            .field("used_percent", json!(used_percent))
            .field("available_bytes", json!(usage.available_bytes))
            .field("total_bytes", json!(usage.total_bytes))
            .field(
                "high_water_percent",
                json!(self.config.capacity.high_water_percent),
            )
            .field(
                "retention",
                json!({"body_days": effective.body_days, "access": access}),
            );
        self.record(draft.important()).await;
        true
    }

    /// The capacity guard's current step.
    pub fn capacity_step(&self) -> Step {
        Step::from_level(self.capacity_step.load(Ordering::Relaxed))
    }

    /// The configuration with the periods retention applies now: shorter than configured while
    /// the capacity guard has stepped in.
    pub fn effective_config(&self) -> AuditConfig {
        self.capacity_step().apply(&self.config)
    }

    /// One whole retention run as of the wall clock `now`, read at `at`, with the periods the
    /// capacity guard's step leaves, recorded as a `sys.retention.run` event. A run refused
    /// because the clock is behind the store, or jumped forward (`clock_guard`), is recorded as
    /// `sys.retention.refused`.
    pub async fn run_retention(
        &self,
        now: SystemTime,
        at: Instant,
    ) -> Result<retention::RunReport, StoreError> {
        let log = self.log.clone();
        let config = self.effective_config();
        let clock_guard = self.clock_guard.clone();
        let result = tokio::task::spawn_blocking(move || {
            let held = clock_guard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .check(now, at)?;
            if held.is_some() {
                return Ok(retention::RunReport {
                    held,
                    ..retention::RunReport::default()
                });
            }
            retention::run(&log, &config, now, usize::MAX)
        })
        .await
        .expect("retention does not panic");
        if let Ok(report) = &result
            && let Some(reason) = report.refusal()
        {
            self.metrics.retention_refused.inc();
            tracing::warn!(
                reason,
                refused = ?report.refused,
                held = ?report.held,
                "retention refused: the clock is behind the stored audit events or jumped forward"
            );
            let draft = system_draft("sys.retention.refused", "failure")
                .field("reason", json!(reason))
                .field("retention", json!(report));
            self.record(draft.important()).await;
        } else {
            self.record_job("sys.retention.run", "retention", &result)
                .await;
        }
        result
    }

    /// Verifies every stream every `verify_interval`, the first time [`FIRST_VERIFICATION`]
    /// after start (or one interval, if shorter): a machine restarted more often than the
    /// interval (daily deploys) is still verified. Records `integrity.verified` or
    /// `integrity.failure`.
    pub fn spawn_verification(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let trail = self.clone();
        tokio::spawn(async move {
            let period = trail.config.verify_interval;
            let first = tokio::time::Instant::now() + period.min(FIRST_VERIFICATION);
            let mut ticker = tokio::time::interval_at(first, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                if let Err(e) = trail.verify_against(None, trail.public_key(), true).await {
                    tracing::error!(error = %e, "audit trail verification could not run");
                }
            }
        })
    }

    /// Verifies `streams` (all when `None`) against `pinned`. A failure is recorded as
    /// `integrity.failure` with the breaks; a success as `integrity.verified` with the counts
    /// when `record_success` (the scheduled runs; an admin call is its own `audit.read`).
    pub async fn verify_against(
        &self,
        streams: Option<Vec<Stream>>,
        pinned: ed25519_dalek::VerifyingKey,
        record_success: bool,
    ) -> Result<verify::Report, StoreError> {
        let log = self.log.clone();
        let streams = streams.unwrap_or_else(|| Stream::ALL.to_vec());
        let full = streams.len() == Stream::ALL.len() && pinned == self.public_key();
        let report = tokio::task::spawn_blocking(move || verify::streams(&log, &streams, &pinned))
            .await
            .expect("verification does not panic")?;
        if full {
            self.note_verification(report.ok);
        }
        if report.ok && !record_success {
            return Ok(report);
        }
        let draft = if report.ok {
            let events: u64 = report.streams.iter().map(|s| s.events).sum();
            system_draft("integrity.verified", "success").field("events", json!(events))
        } else {
            let breaks: Vec<_> = report
                .streams
                .iter()
                .filter_map(|r| Some(json!({"stream": r.stream, "break": r.broken.as_ref()?})))
                .collect();
            tracing::error!(?breaks, key = %report.key_fingerprint, "audit trail verification failed");
            system_draft("integrity.failure", "failure")
                .field("breaks", json!(breaks))
                .field("key_fingerprint", json!(report.key_fingerprint))
        };
        self.record(draft.important()).await;
        Ok(report)
    }

    /// Counts a full verification against this machine's key and keeps its verdict, which
    /// the `SeawallAuditIntegrityBroken` alert watches.
    fn note_verification(&self, passed: bool) {
        let metrics = &self.metrics;
        match passed {
            true => metrics.verifications_passed.inc(),
            false => metrics.verifications_failed.inc(),
        }
        metrics.verification_broken.set(i64::from(!passed));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        metrics.verified_at.set(now.as_secs() as i64);
    }

    /// Rotates the KEK whenever the current one is `kek_rotation_interval` old.
    pub fn spawn_kek_rotation(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let trail = self.clone();
        tokio::spawn(async move {
            loop {
                let started = trail.log.keyring.epoch_started().unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot read the KEK's age; rotating now");
                    SystemTime::UNIX_EPOCH
                });
                let due = started + trail.config.kek_rotation_interval;
                let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::sleep(wait).await;
                if trail.rotate_kek().await.is_err() {
                    // Not in a tight loop: try again after a minute.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
            }
        })
    }

    /// Rotates the KEK now, recorded as a `key.rotation` event.
    pub async fn rotate_kek(&self) -> Result<shred::Rotation, StoreError> {
        let log = self.log.clone();
        let result = tokio::task::spawn_blocking(move || shred::rotate_kek(&log))
            .await
            .expect("rotation does not panic");
        self.record_job("sys.key_rotation", "rotation", &result)
            .await;
        result
    }

    /// Records the outcome of a maintenance job (retention, KEK rotation) as a system event:
    /// its report under `field`, or the failure, logged, with reason `store_error`.
    async fn record_job<T: Serialize>(
        &self,
        event_type: &str,
        field: &'static str,
        result: &Result<T, StoreError>,
    ) {
        let draft = match result {
            Ok(report) => system_draft(event_type, "success").field(field, json!(report)),
            Err(e) => {
                tracing::error!(error = %e, job = event_type, "audit maintenance job failed");
                system_draft(event_type, "failure").field("reason", json!("store_error"))
            }
        };
        self.record(draft.important()).await;
    }

    /// When the next KEK rotation is due: by then, erased data is physically unreadable.
    pub fn next_rotation(&self) -> SystemTime {
        self.log
            .keyring
            .epoch_started()
            .unwrap_or_else(|_| SystemTime::now())
            + self.config.kek_rotation_interval
    }
}
