//! Health: background dependency checks and the four health endpoints.
//!
//! | path | answers |
//! |---|---|
//! | `/health` | `{"status": ...}`, the worst status of all checks; 503 on `fail` |
//! | `/health/live` | 200 while the process can answer; touches nothing else |
//! | `/health/ready` | 503 while draining or while a readiness-gating check (the store) fails |
//! | `/health/detailed` | the `application/health+json` document with a `checks` map |
//!
//! Checks are [`Probe`]s run in the background every `health.interval`, each bounded by
//! `health.timeout`; endpoints only read the latest [`Reading`], so a slow dependency can never
//! pile up probe requests. The store probe is registered first; other subsystems add theirs
//! when the state is built. A dependency behind an open breaker reports `warn`, never `fail`,
//! so an outage of one dependency does not take the only machine out of routing.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Response, StatusCode, header};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::audit::capacity::VolumeUsage;
use crate::body::{self, Body};
use crate::config::HealthConfig;
use crate::metrics::{Exposition, Gauge};
use crate::store::Store;

const HEALTH_JSON: &str = "application/health+json";

/// A check's verdict, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    fn http_status(self) -> StatusCode {
        match self {
            Status::Pass | Status::Warn => StatusCode::OK,
            Status::Fail => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// The latest result of one check.
#[derive(Debug, Clone)]
pub struct Reading {
    pub status: Status,
    pub observed_value: Option<Value>,
    pub observed_unit: Option<&'static str>,
    /// Why the check is not passing. Operator-facing; never holds secrets.
    pub output: Option<String>,
    /// Extra fields for this check (pool figures, breaker state).
    pub extra: Map<String, Value>,
    pub time: SystemTime,
    pub duration: Duration,
}

impl Reading {
    pub fn pass(observed_value: Value, observed_unit: Option<&'static str>) -> Reading {
        Reading {
            status: Status::Pass,
            observed_value: Some(observed_value),
            observed_unit,
            output: None,
            extra: Map::new(),
            time: SystemTime::now(),
            duration: Duration::ZERO,
        }
    }

    pub fn fail(output: String) -> Reading {
        Reading {
            status: Status::Fail,
            observed_value: None,
            observed_unit: None,
            output: Some(output),
            extra: Map::new(),
            time: SystemTime::now(),
            duration: Duration::ZERO,
        }
    }
}

/// A probe's result; `None` when the probe is switched off (its check is then not shown).
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Option<Reading>> + Send + 'a>>;

/// A dependency check run in the background.
pub trait Probe: Send + Sync + 'static {
    /// The `checks` key, `"{component}:{measurement}"`.
    fn key(&self) -> &str;
    /// `datastore`, `component` or `system`.
    fn component_type(&self) -> &'static str;
    /// Whether a `fail` makes `/health/ready` answer 503.
    fn gates_readiness(&self) -> bool;
    fn check(&self) -> ProbeFuture<'_>;
}

pub struct Health {
    config: HealthConfig,
    probes: Vec<Arc<dyn Probe>>,
    readings: RwLock<BTreeMap<String, Reading>>,
    draining: AtomicBool,
    started: Instant,
}

impl Health {
    pub fn new(config: HealthConfig, probes: Vec<Arc<dyn Probe>>) -> Health {
        Health {
            config,
            probes,
            readings: RwLock::new(BTreeMap::new()),
            draining: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Runs every probe once, concurrently, each within the timeout.
    pub async fn run_once(&self) {
        let mut runs = tokio::task::JoinSet::new();
        for probe in &self.probes {
            let probe = probe.clone();
            let timeout = self.config.timeout;
            runs.spawn(async move {
                let started = Instant::now();
                let mut reading = match tokio::time::timeout(timeout, probe.check()).await {
                    Ok(reading) => reading,
                    Err(_) => Some(Reading::fail(format!(
                        "no answer within {} ms",
                        timeout.as_millis()
                    ))),
                };
                if let Some(reading) = &mut reading {
                    reading.duration = started.elapsed();
                }
                (probe.key().to_string(), reading)
            });
        }
        while let Some(joined) = runs.join_next().await {
            let Ok((key, reading)) = joined else {
                tracing::error!("a health probe panicked");
                continue;
            };
            let Some(reading) = reading else {
                self.readings.write().expect("health lock").remove(&key);
                continue;
            };
            if reading.status != Status::Pass {
                tracing::warn!(check = %key, status = reading.status.as_str(), output = reading.output.as_deref().unwrap_or(""), "health check not passing");
            }
            self.readings
                .write()
                .expect("health lock")
                .insert(key, reading);
        }
    }

    /// Re-runs the probes every interval until the returned task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let health = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(health.config.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                health.run_once().await;
            }
        })
    }

    /// From now on `/health/ready` answers 503. Called first thing on shutdown.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The worst status, where a dependency (a check that does not gate readiness) counts at
    /// most as `warn`: one dependency's outage must not make seawall itself look down.
    fn overall(&self) -> Status {
        let readings = self.readings.read().expect("health lock");
        self.aggregate(&readings)
    }

    fn aggregate(&self, readings: &BTreeMap<String, Reading>) -> Status {
        let gating = |key: &str| {
            self.probes
                .iter()
                .any(|p| p.key() == key && p.gates_readiness())
        };
        readings
            .iter()
            .map(|(key, r)| {
                if gating(key) {
                    r.status
                } else {
                    r.status.min(Status::Warn)
                }
            })
            .max()
            .unwrap_or(Status::Pass)
    }

    /// `/health/live`.
    pub fn live(&self) -> Response<Body> {
        health_json(StatusCode::OK, &json!({ "status": "pass" }))
    }

    /// `/health`.
    pub fn basic(&self) -> Response<Body> {
        let status = self.overall();
        health_json(status.http_status(), &json!({ "status": status }))
    }

    /// `/health/ready`.
    pub fn ready(&self) -> Response<Body> {
        if self.is_draining() {
            return health_json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "fail", "output": "draining: shutting down" }),
            );
        }
        let readings = self.readings.read().expect("health lock");
        let failing: Vec<String> = self
            .probes
            .iter()
            .filter(|p| p.gates_readiness())
            .filter_map(|p| match readings.get(p.key()) {
                Some(r) if r.status == Status::Fail => Some(format!(
                    "{}: {}",
                    p.key(),
                    r.output.as_deref().unwrap_or("failing")
                )),
                None => Some(format!("{}: not checked yet", p.key())),
                _ => None,
            })
            .collect();
        if failing.is_empty() {
            health_json(StatusCode::OK, &json!({ "status": "pass" }))
        } else {
            health_json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "status": "fail", "output": failing.join("; ") }),
            )
        }
    }

    /// `/health/detailed`.
    pub fn detailed(&self) -> Response<Body> {
        let readings = self.readings.read().expect("health lock");
        let mut checks = Map::new();
        for probe in &self.probes {
            if let Some(reading) = readings.get(probe.key()) {
                checks.insert(
                    probe.key().to_string(),
                    json!([check_json(probe.component_type(), reading)]),
                );
            }
        }
        let uptime = Reading::pass(
            json!((self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
            Some("s"),
        );
        checks.insert("uptime".to_string(), json!([check_json("system", &uptime)]));
        let status = self.aggregate(&readings);
        let mut doc = json!({
            "status": status,
            "version": env!("CARGO_PKG_VERSION_MAJOR"),
            "releaseId": env!("CARGO_PKG_VERSION"),
            "serviceId": "seawall",
            "description": "seawall resilience gateway",
            "checks": checks,
        });
        if self.is_draining() {
            doc["notes"] = json!(["draining: shutting down"]);
        }
        health_json(status.http_status(), &doc)
    }

    /// `seawall_health_check_status` (one-hot by status) and check durations.
    pub fn render_metrics(&self, out: &mut Exposition) {
        let readings = self.readings.read().expect("health lock");
        out.header(
            "seawall_health_check_status",
            "gauge",
            "Latest result of each health check: 1 on the current status, 0 on the others.",
        );
        for (key, reading) in readings.iter() {
            for status in [Status::Pass, Status::Warn, Status::Fail] {
                let value = if reading.status == status { 1.0 } else { 0.0 };
                out.sample(
                    "seawall_health_check_status",
                    &[("check", key), ("status", status.as_str())],
                    value,
                );
            }
        }
        out.header(
            "seawall_health_check_duration_seconds",
            "gauge",
            "Duration of the latest run of each health check.",
        );
        for (key, reading) in readings.iter() {
            out.sample(
                "seawall_health_check_duration_seconds",
                &[("check", key)],
                reading.duration.as_secs_f64(),
            );
        }
        // From the guard held here: a second read could queue behind the probe loop's write.
        let ready = !self.is_draining() && self.aggregate(&readings) != Status::Fail;
        out.single(
            "seawall_ready",
            "gauge",
            "1 while seawall accepts traffic (not draining, no failing check).",
            if ready { 1.0 } else { 0.0 },
        );
    }
}

fn check_json(component_type: &str, reading: &Reading) -> Value {
    let mut check = Map::new();
    check.insert("componentType".into(), json!(component_type));
    if let Some(value) = &reading.observed_value {
        check.insert("observedValue".into(), value.clone());
    }
    if let Some(unit) = reading.observed_unit {
        check.insert("observedUnit".into(), json!(unit));
    }
    check.insert("status".into(), json!(reading.status));
    check.insert("time".into(), json!(crate::time::rfc3339(reading.time)));
    if let Some(output) = &reading.output {
        check.insert("output".into(), json!(output));
    }
    check.extend(reading.extra.clone());
    Value::Object(check)
}

fn health_json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = body::json_with_type(status, value, HEALTH_JSON);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The store's check: write, flush and read back a probe record; gates readiness. It warns
/// (without failing readiness) once the data volume is past the capacity guard's mark, so the
/// volume filling shows before writes fail.
pub struct StoreProbe {
    store: Store,
    /// The volume's used percentage from which the check warns; `None` never warns.
    volume_warn_percent: Option<u8>,
    /// Updated on every probe; rendered as `seawall_store_size_on_disk_bytes`.
    pub size_on_disk: Arc<Gauge>,
}

impl StoreProbe {
    pub fn new(store: Store, volume_warn_percent: Option<u8>) -> StoreProbe {
        StoreProbe {
            store,
            volume_warn_percent,
            size_on_disk: Arc::new(Gauge::default()),
        }
    }
}

impl Probe for StoreProbe {
    fn key(&self) -> &str {
        "store:responseTime"
    }

    fn component_type(&self) -> &'static str {
        "datastore"
    }

    fn gates_readiness(&self) -> bool {
        true
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            let store = self.store.clone();
            let result = tokio::task::spawn_blocking(move || {
                let elapsed = store.probe()?;
                // Informational: the capacity guard acts on it, not readiness.
                let volume = VolumeUsage::read(store.dir()).ok();
                Ok::<_, crate::store::StoreError>((elapsed, store.size_on_disk()?, volume))
            })
            .await;
            match result {
                Ok(Ok((elapsed, size, volume))) => {
                    self.size_on_disk.set(size as i64);
                    let ms = (elapsed.as_secs_f64() * 1e4).round() / 10.0;
                    let mut reading = Reading::pass(json!(ms), Some("ms"));
                    reading.extra.insert("sizeOnDiskBytes".into(), json!(size));
                    if let Some(volume) = volume {
                        let used = (volume.used_percent() * 10.0).round() / 10.0;
                        reading
                            .extra
                            .insert("volumeUsedPercent".into(), json!(used));
                        let available = volume.available_bytes;
                        reading
                            .extra
                            .insert("volumeAvailableBytes".into(), json!(available));
                        if let Some(mark) = self.volume_warn_percent
                            && used >= f64::from(mark)
                        {
                            reading.status = Status::Warn;
                            reading.output = Some(format!(
                                "data volume {used}% used, past the capacity guard's mark of {mark}%"
                            ));
                        }
                    }
                    Some(reading)
                }
                Ok(Err(e)) => Some(Reading::fail(format!("store write/flush failed: {e}"))),
                Err(_) => Some(Reading::fail("store probe panicked".to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn health() -> Health {
        let config = HealthConfig {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
        };
        Health::new(config, Vec::new())
    }

    /// std's `RwLock` makes a second read wait behind a queued writer, so a reader that locks
    /// the readings twice deadlocks with the probe loop's write (it once wedged `/metrics`
    /// and both runtime workers for good). Every reader here races a writer for a while; each
    /// must finish.
    #[test]
    fn readers_never_wait_on_themselves_behind_the_probe_loop() {
        let health = Arc::new(health());
        let rounds = 20_000;
        let (done, finished) = mpsc::channel();
        let writer = {
            let health = health.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for i in 0..rounds {
                    let reading = Reading::pass(json!(i), None);
                    health
                        .readings
                        .write()
                        .unwrap()
                        .insert(format!("check:{}", i % 3), reading);
                }
                done.send("writer").unwrap();
            })
        };
        let reader = {
            let health = health.clone();
            std::thread::spawn(move || {
                for _ in 0..rounds {
                    health.render_metrics(&mut Exposition::new());
                    let _ = health.basic();
                    let _ = health.ready();
                    let _ = health.detailed();
                }
                done.send("reader").unwrap();
            })
        };
        for _ in 0..2 {
            finished
                .recv_timeout(Duration::from_secs(60))
                .expect("a reader deadlocked with the writer");
        }
        writer.join().unwrap();
        reader.join().unwrap();
    }
}
