//! The audit trail: events about requests, admin actions, applications and seawall itself,
//! with personal data sealed, tamper-evident chains, retention and query (SPEC §8).
//!
//! - `event`: the model (header, personal parts, records) and the hashing.
//! - `redact`, `detect`: what may be captured at all.
//! - `keys`: the keys outside sled (KEK, pseudonyms) and sealing.
//! - `log`: the layout in sled and reading it back; `writer`: the single writer.
//! - `policy`: which requests are audited at which level, as which event type.
//! - `retention`: expiring personal parts (by destroying keys) and headers (by whole buckets),
//!   `anchor`: the signed record of where it cut a stream; `capacity`: shortening the least
//!   needed periods when the data volume fills up; `clock_guard`: holding it off after the
//!   clock jumped forward.
//! - `verify`, `digest`, `merkle`: checking chains, and the signed digests that cover them
//!   (with a Merkle root over each batch, for single-event inclusion proofs).
//! - `watermark`: the heads each flush made durable, kept beside the store, so a start can
//!   tell that the store went back.
//! - `gdpr`, `shred`, `ledger`: subject access, erasure and its record; `proofs`: the
//!   exported events' inclusion proofs; `manifest`: the export's signature; `export_check`:
//!   checking an export offline.
//! - `query`: the admin query of headers.
//! - `jobs`: the background maintenance (retention, verification, KEK rotation) and its events.
//!
//! [`AuditTrail`] is the handle the rest of seawall uses: producers submit [`Draft`]s into a
//! bounded queue; one writer task group-commits them and flushes at least every
//! `flush_interval`. Ordinary request events are dropped (and counted) when the queue is full;
//! important events (admin, security, application, system) wait for room instead.

pub mod anchor;
pub mod application;
pub mod capacity;
pub mod clock_guard;
pub mod detect;
pub mod digest;
pub mod event;
pub mod export_check;
pub mod gdpr;
mod jobs;
pub mod keys;
pub mod ledger;
pub mod log;
pub mod manifest;
pub mod merkle;
pub mod middleware;
pub mod policy;
pub mod proofs;
pub mod query;
pub mod redact;
pub mod retention;
pub mod shred;
pub mod verify;
pub mod watermark;
pub mod witness;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use event::{Draft, IdKind, Level, Role, Stream, Subject};

use crate::audit::capacity::Step;
use crate::audit::clock_guard::ClockGuard;
use crate::audit::keys::Keyring;
use crate::audit::ledger::Ledger;
use crate::audit::log::AuditLog;
use crate::audit::watermark::Watermark;
use crate::audit::writer::Writer;
use crate::hex;
use crate::metrics::{Counter, Exposition, Gauge, Histogram, LATENCY_BUCKETS};
use crate::store::{Store, StoreError};

/// Events taken from the queue per write.
const MAX_BATCH: usize = 1024;
/// Below this many events, a batch lingers once for [`LINGER`] before it is written.
const MIN_BATCH: usize = 64;
const LINGER: Duration = Duration::from_millis(2);

/// Retention of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StreamRetention {
    pub header_days: u32,
    /// Personal parts; `0` for streams that hold none.
    pub payload_days: u32,
}

/// `[audit]`, validated by `config`.
#[derive(Debug, Clone, Serialize)]
pub struct AuditConfig {
    /// Names the appliance in every header and chain.
    pub origin: String,
    #[serde(serialize_with = "crate::config::millis")]
    pub flush_interval: Duration,
    /// How long a `blocking-strict` request waits for its `request_received` event to be on
    /// disk before it is refused.
    #[serde(serialize_with = "crate::config::millis")]
    pub strict_timeout: Duration,
    pub queue_capacity: usize,
    /// The most memory the drafts waiting in the queue may hold ([`Draft::memory_size`]):
    /// events that capture bodies are a hundred times the size of metadata ones.
    pub queue_bytes: usize,
    pub retention: BTreeMap<Stream, StreamRetention>,
    /// Captured request and response bodies.
    pub body_days: u32,
    #[serde(serialize_with = "crate::config::millis")]
    pub retention_interval: Duration,
    /// How far the wall clock may run ahead of the monotonic clock between two retention runs
    /// before pruning is held ([`clock_guard`]).
    #[serde(serialize_with = "crate::config::millis")]
    pub clock_jump_tolerance: Duration,
    pub rules: Vec<policy::Rule>,
    /// Every configured route must have its own `audit` or be named by a rule (research §6 B1).
    pub require_explicit_coverage: bool,
    pub digests: DigestPolicy,
    pub capacity: CapacityPolicy,
    /// How often the key-encryption key is replaced (what makes erasures physical).
    #[serde(serialize_with = "crate::config::millis")]
    pub kek_rotation_interval: Duration,
    /// How often every chain and digest is verified in the background (Art 32(1)(d)).
    #[serde(serialize_with = "crate::config::millis")]
    pub verify_interval: Duration,
    /// What an erasure request does to each stream.
    pub erasure: BTreeMap<Stream, ErasureAction>,
}

/// When the writer signs a stream's digest.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DigestPolicy {
    /// After this many new events,
    pub every: u64,
    /// or this long after the last digest when there are new events,
    #[serde(serialize_with = "crate::config::millis")]
    pub interval: Duration,
    /// or this long after the last digest in any case (proving inactivity).
    #[serde(serialize_with = "crate::config::millis")]
    pub idle: Duration,
}

/// When the capacity guard shortens retention ([`capacity`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CapacityPolicy {
    /// Usage of the data volume, in percent, from which it acts; 100 turns it off.
    pub high_water_percent: u8,
    /// How often the volume is read.
    #[serde(serialize_with = "crate::config::millis")]
    pub check_interval: Duration,
}

/// The erasure policy of one stream (research/audit.md §3.4).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ErasureAction {
    /// Destroy the subject's keys and drop their sealed parts.
    Shred,
    /// Keep, under a documented Art 17(3) exception.
    Retain { basis: String },
}

/// The documented defaults (README, configuration reference); `config` validates overrides
/// against them.
impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            origin: "seawall".to_string(),
            flush_interval: Duration::from_millis(100),
            strict_timeout: Duration::from_secs(2),
            queue_capacity: 65_536,
            queue_bytes: 32 << 20,
            retention: AuditConfig::default_retention(),
            body_days: 7,
            retention_interval: Duration::from_secs(3_600),
            clock_jump_tolerance: Duration::from_secs(3_600),
            rules: Vec::new(),
            require_explicit_coverage: false,
            digests: DigestPolicy {
                every: 1_000,
                interval: Duration::from_secs(60),
                idle: Duration::from_secs(3_600),
            },
            capacity: CapacityPolicy {
                high_water_percent: 90,
                check_interval: Duration::from_secs(60),
            },
            kek_rotation_interval: Duration::from_secs(86_400),
            verify_interval: Duration::from_secs(86_400),
            erasure: AuditConfig::default_erasure(),
        }
    }
}

impl AuditConfig {
    /// Security events are kept for legal claims and the GDPR stream as the record of
    /// compliance; the rest is shredded (research/audit.md §3.4 and §7, open point 1).
    pub fn default_erasure() -> BTreeMap<Stream, ErasureAction> {
        let retain = |basis: &str| ErasureAction::Retain {
            basis: basis.to_string(),
        };
        BTreeMap::from([
            (
                Stream::Security,
                retain(
                    "Art 17(3)(e): establishment, exercise or defence of legal claims (security monitoring)",
                ),
            ),
            (Stream::Access, ErasureAction::Shred),
            (Stream::DataChange, ErasureAction::Shred),
            (
                Stream::Gdpr,
                retain(
                    "Art 17(3)(b): compliance with a legal obligation (the record of requests handled, Art 5(2) and 12)",
                ),
            ),
            (Stream::System, ErasureAction::Shred),
        ])
    }

    /// research/audit.md §2.2.
    pub fn default_retention() -> BTreeMap<Stream, StreamRetention> {
        BTreeMap::from([
            (
                Stream::Security,
                StreamRetention {
                    header_days: 365,
                    payload_days: 180,
                },
            ),
            (
                Stream::Access,
                StreamRetention {
                    header_days: 180,
                    payload_days: 30,
                },
            ),
            (
                Stream::DataChange,
                StreamRetention {
                    header_days: 365,
                    payload_days: 365,
                },
            ),
            (
                Stream::Gdpr,
                StreamRetention {
                    header_days: 1095,
                    payload_days: 1095,
                },
            ),
            (
                Stream::System,
                StreamRetention {
                    header_days: 1095,
                    payload_days: 0,
                },
            ),
        ])
    }
}

/// What the writer is asked to do. An event comes with the room it took in the queue's byte
/// budget, which the writer gives back once it is written.
enum Command {
    Event(Box<Draft>, u32),
    /// Write and flush everything queued before this, then answer whether the last batch
    /// reached the disk.
    Flush(oneshot::Sender<bool>),
    /// Write this event and flush it at once; answer whether it is on disk.
    Durable(Box<Draft>, u32, oneshot::Sender<bool>),
}

#[derive(Default)]
struct AuditMetrics {
    appended: Counter,
    dropped: Counter,
    write_errors: Counter,
    flushes: Counter,
    digests: Counter,
    retention_refused: Counter,
    strict_refusals: Counter,
    volume_size: Gauge,
    volume_available: Gauge,
    /// Full verifications against this machine's key (the scheduled ones, and admin calls over
    /// every stream), by result; the latest one's verdict and time.
    verifications_passed: Counter,
    verifications_failed: Counter,
    verification_broken: Gauge,
    verified_at: Gauge,
    /// 1 when this start found the store behind the watermark.
    rolled_back: Gauge,
    writer_times: WriterTimes,
}

/// How long the writer's commits and flushes take: a writer that falls behind shows here
/// before its queue fills.
struct WriterTimes {
    commit: Histogram,
    flush: Histogram,
}

impl Default for WriterTimes {
    fn default() -> WriterTimes {
        WriterTimes {
            commit: Histogram::new(LATENCY_BUCKETS),
            flush: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

pub struct AuditTrail {
    pub log: Arc<AuditLog>,
    pub config: AuditConfig,
    pub ledger: Arc<Ledger>,
    /// Erasure requests run one at a time (idempotency keys are checked and answered
    /// atomically).
    pub erasures: tokio::sync::Mutex<()>,
    tx: mpsc::Sender<Command>,
    /// The queue's byte budget ([`AuditConfig::queue_bytes`]) as permits: a producer takes a
    /// draft's [`Draft::memory_size`] before queueing it, the writer gives them back after
    /// the batch is written. The channel itself bounds the count.
    room: Arc<Semaphore>,
    /// Taken by [`AuditTrail::start`].
    rx: std::sync::Mutex<Option<(mpsc::Receiver<Command>, Writer)>>,
    /// Dropped since the last notice event.
    unreported_drops: AtomicU64,
    metrics: Arc<AuditMetrics>,
    /// Where the volume is read for the capacity guard.
    data_dir: PathBuf,
    /// The guard's current [`Step`], which retention runs apply.
    capacity_step: AtomicU8,
    /// Asked before every retention run, on the blocking thread the run takes; each check
    /// moves its reference point, hence the lock.
    clock_guard: Arc<std::sync::Mutex<ClockGuard>>,
    /// Where the store was found behind the watermark at start, for the `integrity.rollback`
    /// event.
    rollback: Vec<watermark::Rollback>,
}

/// Where the store keeps a check value of the pseudonym key it was written with.
const KEYRING_BINDING: &[u8] = b"audit_keyring";

/// The audit keys. The first start creates them and notes in the store which pseudonym key
/// it uses (a check value, not the key); later starts refuse a missing KEK or pseudonym key,
/// or another store's (a restore that brought the store back without its `keys/`, or with
/// another's). New ones would leave the sealed data unreadable and the subjects already
/// stored unfindable for erasure, and nothing else would say so. A lost signing key is made
/// anew, as before: verification reports the digests it did not sign. Blocking (startup).
fn open_keyring(store: &Store, data_dir: &Path) -> Result<Keyring, StoreError> {
    let meta = store.tree(crate::store::trees::META)?;
    let binding = |keyring: &Keyring| hex::encode(&keyring.pseudonym("seawall", "keyring binding"));
    let not_ours = |detail: String| StoreError::KeysNotThisStores {
        path: data_dir.join("keys"),
        detail,
    };
    match meta.get(KEYRING_BINDING)? {
        Some(noted) => {
            let keyring = Keyring::open_existing(data_dir).map_err(|e| not_ours(e.to_string()))?;
            if binding(&keyring).as_bytes() != noted.as_ref() {
                return Err(not_ours("those there are another store's".into()));
            }
            Ok(keyring)
        }
        None => {
            let keyring = Keyring::open(data_dir)
                .map_err(|e| StoreError::Corrupt(format!("audit keys: {e}")))?;
            let _writing = store.writing();
            meta.insert(KEYRING_BINDING, binding(&keyring).as_bytes())?;
            store.flush()?;
            Ok(keyring)
        }
    }
}

/// Holds the store against the watermark the previous run left (`watermark`), says what it
/// found behind, and hands the watermark to the writer to keep. Blocking (startup).
fn check_watermark(writer: &mut Writer, data_dir: &Path) -> Vec<watermark::Rollback> {
    let watermark = Watermark::new(data_dir);
    let rollback = match watermark.read() {
        Ok(Some(mark)) => writer.behind(&mark),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!(
                path = %watermark.path().display(),
                error = %e,
                "the audit watermark is unreadable, so this start cannot tell whether the store went back; the next flush rewrites it"
            );
            Vec::new()
        }
    };
    writer.keep_watermark(watermark);
    if !rollback.is_empty() {
        let streams: Vec<String> = rollback
            .iter()
            .map(|r| {
                if r.chain_differs {
                    format!(
                        "{}: not the trail marked at {}",
                        r.stream, r.watermark_next_seq
                    )
                } else {
                    format!("{}: {} missing", r.stream, r.missing_events)
                }
            })
            .collect();
        tracing::error!(
            streams = streams.join(", "),
            "the audit store holds less than the previous run flushed (a restored backup, or a replaced or damaged store): recorded as integrity.rollback"
        );
    }
    rollback
}

impl AuditTrail {
    /// Opens the keys and the log and prepares the writer. Blocking (startup).
    pub fn open(
        store: &Store,
        data_dir: &Path,
        config: AuditConfig,
    ) -> Result<AuditTrail, StoreError> {
        let keyring = Arc::new(open_keyring(store, data_dir)?);
        let log = Arc::new(AuditLog::open(store, keyring, &config.origin)?);
        let ledger = Arc::new(Ledger::new(data_dir));
        // A restored backup may hold keys erased after it was taken: they go before anything
        // is served, and the KEK they were wrapped under goes with the rotation.
        let replayed = gdpr::replay(&log, &ledger)?;
        if replayed.keys_destroyed > 0 {
            let rotation = shred::rotate_kek(&log)?;
            tracing::warn!(
                keys = replayed.keys_destroyed,
                parts = replayed.parts_dropped,
                epoch = rotation.epoch,
                "erasure ledger replayed: keys erased after this store was copied were destroyed again"
            );
        }
        let signed = anchor::sign_unsigned(&log)?;
        if signed > 0 {
            tracing::info!(
                anchors = signed,
                "retention anchors from an earlier version signed (their period unknown)"
            );
        }
        let mut writer = Writer::new(log.clone())?;
        let rollback = check_watermark(&mut writer, data_dir);
        let metrics = AuditMetrics::default();
        metrics.rolled_back.set(i64::from(!rollback.is_empty()));
        let clock_guard = ClockGuard::open(store, config.clock_jump_tolerance)?;
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let room = Arc::new(Semaphore::new(config.queue_bytes));
        Ok(AuditTrail {
            log,
            config,
            ledger,
            erasures: tokio::sync::Mutex::new(()),
            tx,
            room,
            rx: std::sync::Mutex::new(Some((rx, writer))),
            unreported_drops: AtomicU64::new(0),
            metrics: Arc::new(metrics),
            data_dir: data_dir.to_path_buf(),
            capacity_step: AtomicU8::new(Step::Normal.level()),
            clock_guard: Arc::new(std::sync::Mutex::new(clock_guard)),
            rollback,
        })
    }

    /// Starts the writer thread; it ends when every sender is gone.
    pub fn start(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let (rx, writer) = self
            .rx
            .lock()
            .expect("audit lock")
            .take()
            .expect("the writer starts once");
        let metrics = self.metrics.clone();
        let room = self.room.clone();
        let interval = self.config.flush_interval;
        let digests = self.config.digests;
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .expect("the audit writer's runtime starts");
                runtime.block_on(write_loop(rx, writer, room, metrics, interval, digests));
            })
            .expect("the audit writer thread starts")
    }

    /// The room `draft` takes in the queue's byte budget: its memory, but never more than the
    /// whole budget, so that even a draft larger than that is written eventually.
    fn room_for(&self, draft: &Draft) -> u32 {
        let budget = self.config.queue_bytes.min(u32::MAX as usize);
        draft.memory_size().clamp(1, budget) as u32
    }

    /// Waits for room for `draft` in the queue, then sends it as the command `queued` makes;
    /// true once it is sent. Waiters are served in order, before anyone who only tries. The
    /// room passes to the writer (which gives it back once the draft is written) only with a
    /// sent draft: a failed send, or a wait cancelled by a timeout, drops the permit and so
    /// gives the room back at once.
    async fn send_when_room(
        &self,
        draft: Draft,
        queued: impl FnOnce(Box<Draft>, u32) -> Command,
    ) -> bool {
        let bytes = self.room_for(&draft);
        let room = self
            .room
            .acquire_many(bytes)
            .await
            .expect("the queue's room is never closed");
        let sent = self.tx.send(queued(Box::new(draft), bytes)).await.is_ok();
        if sent {
            room.forget();
        }
        sent
    }

    /// Submits an event. Ordinary events are dropped and counted when the queue is full;
    /// important ones wait for room.
    pub async fn record(&self, draft: Draft) {
        if !draft.important {
            return self.record_now(draft);
        }
        if !self.send_when_room(draft, Command::Event).await {
            tracing::error!("audit writer stopped; an important event was lost");
        }
    }

    /// Submits an event from where waiting is impossible (a `Drop`): important events that
    /// find no room are sent from a task of their own.
    pub fn record_detached(self: &Arc<Self>, draft: Draft) {
        if !draft.important {
            return self.record_now(draft);
        }
        if let Err(draft) = self.try_queue(draft) {
            let trail = self.clone();
            tokio::spawn(async move { trail.record(draft).await });
        }
    }

    /// Submits an ordinary event without waiting (what the request path uses): it is dropped
    /// and counted when the queue holds its most events or bytes.
    pub fn record_now(&self, draft: Draft) {
        if self.try_queue(draft).is_ok() {
            self.report_drops();
        } else {
            self.metrics.dropped.inc();
            self.unreported_drops.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues `draft` if there is room for it now, in bytes and in count; gives it back if
    /// not.
    fn try_queue(&self, draft: Draft) -> Result<(), Draft> {
        let bytes = self.room_for(&draft);
        let Ok(room) = self.room.try_acquire_many(bytes) else {
            return Err(draft);
        };
        match self.tx.try_send(Command::Event(Box::new(draft), bytes)) {
            Ok(()) => {
                room.forget();
                Ok(())
            }
            Err(refused) => match refused.into_inner() {
                Command::Event(draft, _) => Err(*draft),
                _ => unreachable!("an event was sent"),
            },
        }
    }

    /// After a drop, the first event that finds room again is followed by a notice.
    fn report_drops(&self) {
        let dropped = self.unreported_drops.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return;
        }
        let notice = system_draft("sys.audit.events_dropped", "failure")
            .field("reason", json!("queue_full"))
            .field("dropped", json!(dropped));
        if self.try_queue(notice).is_err() {
            self.unreported_drops.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Records that the previous run, started at `started`, ended without a shutdown
    /// (`sys.crash`, outcome failure): the events it acknowledged in its last flush interval
    /// may be missing, and the trail says so instead of leaving a silent gap.
    pub async fn unclean_end_event(&self, started: SystemTime) {
        let previous_start = event::rfc3339_nanos(started);
        tracing::warn!(
            %previous_start,
            "the previous run ended without a shutdown: audit events of its last flush interval may be missing"
        );
        let draft = system_draft("sys.crash", "failure")
            .field("previous_start", json!(previous_start))
            .field(
                "flush_interval_ms",
                json!(self.config.flush_interval.as_millis() as u64),
            );
        self.record(draft.important()).await;
    }

    /// Records what [`AuditTrail::open`] found behind the watermark, if anything, as
    /// `integrity.rollback` (outcome failure): the trail then says where it went back instead
    /// of continuing as if it had not.
    pub async fn rollback_event(&self) {
        if self.rollback.is_empty() {
            return;
        }
        let draft = system_draft("integrity.rollback", "failure")
            .field("streams", json!(self.rollback))
            .field("watermark", json!(watermark::FILE));
        self.record(draft.important()).await;
    }

    /// Records a lifecycle event of seawall itself (`sys.startup`, `sys.shutdown`).
    pub async fn system_event(&self, event_type: &str) {
        let draft = system_draft(event_type, "success").field(
            "service",
            json!({"name": "seawall", "version": env!("CARGO_PKG_VERSION")}),
        );
        self.record(draft.important()).await;
    }

    /// The public key digests are checked against.
    pub fn public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.log.keyring.signing_key().verifying_key()
    }

    /// Writes `draft` and flushes it, waiting at most `timeout` in all (queue room included):
    /// true once it is on disk. What `blocking-strict` requests wait for before they go on. A
    /// draft whose wait timed out may still be written later; the request's completion event
    /// then says it was refused.
    pub async fn record_durably(&self, draft: Draft, timeout: Duration) -> bool {
        let (done, written) = oneshot::channel();
        let durable = async {
            let queued = self
                .send_when_room(draft, |draft, bytes| Command::Durable(draft, bytes, done))
                .await;
            queued && written.await.unwrap_or(false)
        };
        let on_disk = tokio::time::timeout(timeout, durable)
            .await
            .unwrap_or(false);
        if !on_disk {
            self.metrics.strict_refusals.inc();
        }
        on_disk
    }

    /// Writes and flushes everything submitted so far.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Command::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        let counters = [
            (
                "seawall_audit_events_written_total",
                "Audit events written to the store.",
                &self.metrics.appended,
            ),
            (
                "seawall_audit_events_dropped_total",
                "Audit events lost: ordinary ones dropped because the queue was full, and those of batches the store refused.",
                &self.metrics.dropped,
            ),
            (
                "seawall_audit_write_errors_total",
                "Audit batches the store refused.",
                &self.metrics.write_errors,
            ),
            (
                "seawall_audit_flushes_total",
                "Flushes of audit batches to disk.",
                &self.metrics.flushes,
            ),
            (
                "seawall_audit_digests_signed_total",
                "Signed chain digests written.",
                &self.metrics.digests,
            ),
            (
                "seawall_audit_retention_refused_total",
                "Retention runs that pruned nothing because the clock was behind the store.",
                &self.metrics.retention_refused,
            ),
            (
                "seawall_audit_strict_refusals_total",
                "blocking-strict requests refused because their request_received event could not be made durable in time.",
                &self.metrics.strict_refusals,
            ),
        ];
        for (name, help, counter) in counters {
            out.single(name, "counter", help, counter.get() as f64);
        }
        out.header(
            "seawall_audit_verifications_total",
            "counter",
            "Full verifications of the audit trail against this machine's key, by result.",
        );
        for (result, counter) in [
            ("passed", &self.metrics.verifications_passed),
            ("failed", &self.metrics.verifications_failed),
        ] {
            out.sample(
                "seawall_audit_verifications_total",
                &[("result", result)],
                counter.get() as f64,
            );
        }
        let gauges = [
            (
                "seawall_audit_verification_broken",
                "1 when the latest full verification found the trail broken (an integrity.failure event says where), else 0.",
                &self.metrics.verification_broken,
            ),
            (
                "seawall_audit_last_verification_timestamp_seconds",
                "When the latest full verification ended (Unix seconds; 0 before the first).",
                &self.metrics.verified_at,
            ),
            (
                "seawall_audit_store_rolled_back",
                "1 when this start found the audit store behind the watermark the previous run left (an integrity.rollback event says where), else 0.",
                &self.metrics.rolled_back,
            ),
            (
                "seawall_data_volume_size_bytes",
                "Size of the file system holding the data directory (0 until first read).",
                &self.metrics.volume_size,
            ),
            (
                "seawall_data_volume_available_bytes",
                "Space left on the file system holding the data directory.",
                &self.metrics.volume_available,
            ),
        ];
        for (name, help, gauge) in gauges {
            out.single(name, "gauge", help, gauge.get() as f64);
        }
        out.single(
            "seawall_audit_capacity_step",
            "gauge",
            "How far the capacity guard has shortened audit retention: 0 configured, 1 bodies, 2 access personal parts, 3 access headers.",
            f64::from(self.capacity_step().level()),
        );
        let depth = self.config.queue_capacity - self.tx.capacity();
        out.single(
            "seawall_audit_queue_depth",
            "gauge",
            "Audit events waiting for the writer.",
            depth as f64,
        );
        let held = self
            .config
            .queue_bytes
            .saturating_sub(self.room.available_permits());
        out.single(
            "seawall_audit_queue_bytes",
            "gauge",
            "Memory held by the audit events waiting for the writer or being written.",
            held as f64,
        );
        for (name, help, histogram) in [
            (
                "seawall_audit_commit_seconds",
                "Time the audit writer took to seal, chain and write one batch of events.",
                &self.metrics.writer_times.commit,
            ),
            (
                "seawall_audit_flush_seconds",
                "Time the audit writer took to flush the store to disk.",
                &self.metrics.writer_times.flush,
            ),
        ] {
            out.header(name, "histogram", help);
            out.histogram_series(name, &[], histogram);
        }
    }
}

/// A system-stream event of `event_type` with `outcome`, as of now.
fn system_draft(event_type: &str, outcome: &str) -> Draft {
    Draft::new(
        Stream::System,
        event_type,
        outcome,
        &crate::request_context::new_request_id(),
        SystemTime::now(),
    )
}

/// The writer: takes batches from the queue, commits them, and flushes at least every
/// `interval` while there is unflushed data. It runs on a thread of its own (blocking sled work
/// with warm caches and no hand-offs), driven by a single-threaded runtime for its timers.
async fn write_loop(
    mut rx: mpsc::Receiver<Command>,
    mut writer: Writer,
    room: Arc<Semaphore>,
    metrics: Arc<AuditMetrics>,
    interval: Duration,
    digests: DigestPolicy,
) {
    let mut dirty_since: Option<Instant> = None;
    let mut digest_ticks = tokio::time::interval(digests.interval.min(digests.idle));
    digest_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = dirty_since.map(|t| t + interval);
        let first = tokio::select! {
            command = rx.recv() => command,
            _ = sleep_until(deadline), if deadline.is_some() => {
                flush(&mut writer, &metrics);
                dirty_since = None;
                continue;
            }
            _ = digest_ticks.tick() => {
                sign_digests(&mut writer, &metrics, &digests);
                dirty_since.get_or_insert_with(Instant::now);
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut drafts = Vec::new();
        // Everyone waiting for this batch to reach the disk.
        let mut waiting = Vec::new();
        let mut next = Some(first);
        let mut lingered = false;
        // The room the batch's drafts took, given back once they are written.
        let mut taken = 0;
        loop {
            while let Some(command) = next.take() {
                match command {
                    Command::Event(draft, bytes) => {
                        drafts.push(*draft);
                        taken += bytes as usize;
                    }
                    Command::Flush(done) => waiting.push(done),
                    Command::Durable(draft, bytes, done) => {
                        drafts.push(*draft);
                        taken += bytes as usize;
                        waiting.push(done);
                    }
                }
                // Whatever is already queued joins the batch, waiters too: concurrent flush
                // requests and durable events then share one commit and one flush.
                if drafts.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            // A small batch waits a moment for company: one commit per few dozen events
            // costs far less than one per event. Flush requests and durable events never wait.
            if lingered || drafts.len() >= MIN_BATCH || !waiting.is_empty() {
                break;
            }
            lingered = true;
            tokio::time::sleep(LINGER).await;
            next = rx.try_recv().ok();
        }
        let flush_now = !waiting.is_empty() || dirty_since.is_some_and(|t| t.elapsed() >= interval);
        let count = drafts.len();
        let started = Instant::now();
        let committed = writer.commit(drafts, SystemTime::now());
        metrics.writer_times.commit.observe(started.elapsed());
        let mut on_disk = match committed {
            Ok(n) => {
                metrics.appended.add(n as u64);
                dirty_since.get_or_insert_with(Instant::now);
                sign_digests(&mut writer, &metrics, &digests);
                true
            }
            Err(e) => {
                metrics.write_errors.inc();
                metrics.dropped.add(count as u64);
                tracing::error!(error = %e, lost = count, "audit batch could not be written");
                false
            }
        };
        room.add_permits(taken);
        if flush_now {
            on_disk &= flush(&mut writer, &metrics);
            dirty_since = None;
        }
        for done in waiting {
            let _ = done.send(on_disk);
        }
    }
    flush(&mut writer, &metrics);
}

fn sign_digests(writer: &mut Writer, metrics: &AuditMetrics, policy: &DigestPolicy) {
    match writer.sign_due(SystemTime::now(), policy) {
        Ok(n) => metrics.digests.add(n as u64),
        Err(e) => {
            metrics.write_errors.inc();
            tracing::error!(error = %e, "audit digest could not be written");
        }
    }
}

/// Flushes the store and records how that went; true if everything written is on disk.
fn flush(writer: &mut Writer, metrics: &AuditMetrics) -> bool {
    let started = Instant::now();
    let result = writer.flush();
    metrics.writer_times.flush.observe(started.elapsed());
    match result {
        Ok(()) => {
            metrics.flushes.inc();
            true
        }
        Err(e) => {
            metrics.write_errors.inc();
            tracing::error!(error = %e, "audit flush failed");
            false
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Decrypted content of a record's parts, by role, for the parts whose keys still exist.
pub fn open_parts(
    log: &AuditLog,
    record: &event::Record,
) -> BTreeMap<&'static str, serde_json::Value> {
    record
        .parts
        .iter()
        .filter_map(|part| Some((part.role.as_str(), log.open_part(record, part)?)))
        .collect()
}

#[cfg(test)]
mod tests;
