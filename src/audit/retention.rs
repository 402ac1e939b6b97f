//! Retention: personal parts expire by destroying their data keys (their sealed bytes are
//! dropped from the records too, so expired ciphertext does not take space until its bucket
//! goes), headers by dropping whole day buckets (research/audit.md §2.3). Time is an argument,
//! so tests use any clock.
//!
//! A run is idempotent and works in bounded batches, each applied under the store's write
//! gate, so a backup never copies half a batch and an interrupted run leaves a consistent
//! store: a key is either there or not, and its parts go before it does; a bucket is dropped
//! only after the signed anchor that continues its stream's chain has been written, and
//! [`verify`](crate::audit::verify) accepts a bucket that is anchored but not yet dropped. The
//! request path never waits for a run: the writer is only held off for one batch at a time.
//!
//! A run refuses to prune when the clock is behind what the store has seen (a bucket for a
//! later day than today, or a digest signed later than now): a clock that went back, or went
//! forward and was corrected, cannot be trusted to say what has expired (research/audit.md
//! §2.3 "clock safety", §6 D6). The writer never moves to an earlier day either, so new events
//! keep landing in the newest bucket meanwhile.
//!
//! Legal holds win over retention: a held subject's keys are kept, and a stream's pruning
//! stops at the first bucket holding a held subject's events (pruning stays a prefix, so the
//! chain stays verifiable from its anchor).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::audit::AuditConfig;
use crate::audit::anchor::{self, Anchor};
use crate::audit::clock_guard::Held;
use crate::audit::digest;
use crate::audit::event::{self, KeyClass, Stream};
use crate::audit::gdpr::{self, Hold};
use crate::audit::log::{self, AuditLog, KeyRecord};
use crate::audit::shred;
use crate::hex;
use crate::store::{self, StoreError};

/// Keys destroyed per batch.
const KEY_BATCH: usize = 1_000;

/// Expired keys whose parts are dropped in one sweep of the buckets they cover. Bounds the
/// memory a run holds (about 100 bytes a key) and how often a bucket is scanned.
const SWEEP_KEYS: usize = 100_000;

/// What one run removed, per stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    pub streams: BTreeMap<&'static str, StreamRun>,
    /// False when the run stopped at its batch limit (the next run continues) or was refused.
    pub complete: bool,
    /// Set when the run removed nothing because the clock is behind the stored events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<ClockBehind>,
    /// Set when the run removed nothing because the clock jumped forward (`clock_guard`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
}

impl RunReport {
    /// Why the run removed nothing, as `sys.retention.refused` names it; `None` if it ran.
    pub fn refusal(&self) -> Option<&'static str> {
        if self.refused.is_some() {
            Some("clock_behind")
        } else if self.held.is_some() {
            Some("clock_jumped")
        } else {
            None
        }
    }
}

/// The clock against the newest time the store has seen (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClockBehind {
    pub now: String,
    /// The start of the newest day holding events, or the newest digest's signing time.
    pub stored: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamRun {
    pub keys_destroyed: u64,
    /// Sealed parts removed from the records because their keys expired.
    pub parts_dropped: u64,
    pub buckets_dropped: u64,
    pub events_pruned: u64,
    /// The newest sequence number retention has removed from this stream, if any.
    pub pruned_through: Option<u64>,
}

/// Applies retention as of `now`, stopping after `max_batches` batches (`usize::MAX` for a
/// whole run). Blocking.
pub fn run(
    log: &AuditLog,
    config: &AuditConfig,
    now: SystemTime,
    max_batches: usize,
) -> Result<RunReport, StoreError> {
    let _maintenance = log.lock_maintenance();
    let today = log::day_of(now);
    let mut report = RunReport::default();
    if let Some(behind) = clock_behind(log, now)? {
        report.refused = Some(behind);
        return Ok(report);
    }
    let mut batches = 0;
    let holds = gdpr::holds(log)?;
    let destroyed = expire_keys(
        log,
        config,
        &holds,
        today,
        &mut report,
        &mut batches,
        max_batches,
    );
    if !matches!(destroyed, Ok(true)) {
        if destroyed.is_ok() {
            log.keys_destroyed();
        }
        return destroyed.map(|_| report);
    }
    let mut dropped: Vec<(Stream, u32)> = Vec::new();
    for stream in Stream::ALL {
        let header_days = config.retention[&stream].header_days;
        for day in log.buckets(stream) {
            // Pruning stays a prefix: a held bucket stops its stream's pruning.
            if day + header_days > today || bucket_held(log, &holds, stream, day)? {
                break;
            }
            if batches >= max_batches {
                prune_index(log, &dropped)?;
                return Ok(report);
            }
            let run = report.streams.entry(stream.as_str()).or_default();
            drop_bucket(log, (stream, day), header_days, now, run)?;
            dropped.push((stream, day));
            batches += 1;
        }
    }
    prune_index(log, &dropped)?;
    report.complete = true;
    Ok(report)
}

/// Whether `now` is behind the newest day holding events or the newest digest.
fn clock_behind(log: &AuditLog, now: SystemTime) -> Result<Option<ClockBehind>, StoreError> {
    let now_text = event::rfc3339_nanos(now);
    let day_start = |day: u32| UNIX_EPOCH + Duration::from_secs(u64::from(day) * 86_400);
    let mut stored = log
        .newest_day()
        .filter(|&day| day > log::day_of(now))
        .map(|day| event::rfc3339_nanos(day_start(day)));
    // Digest times are RFC 3339 in UTC with nanoseconds, so they compare as text.
    for stream in Stream::ALL {
        if let Some(digest) = digest::last(log, stream)?
            && digest.time > now_text
            && stored.as_ref().is_none_or(|s| digest.time > *s)
        {
            stored = Some(digest.time);
        }
    }
    Ok(stored.map(|stored| ClockBehind {
        now: now_text,
        stored,
    }))
}

/// Phase A. `Ok(true)` when every expired key is gone, `Ok(false)` at the batch limit.
///
/// Expired keys are taken up to [`SWEEP_KEYS`] at a time. The sealed parts they opened are
/// dropped from the buckets their periods cover first (each bucket one batch), then the keys
/// are destroyed ([`KEY_BATCH`] a batch): a run interrupted in between finds the same keys
/// expired next time and finishes the job, where the other order would leave unreadable
/// ciphertext taking space until its bucket expires.
fn expire_keys(
    log: &AuditLog,
    config: &AuditConfig,
    holds: &[Hold],
    today: u32,
    report: &mut RunReport,
    batches: &mut usize,
    max_batches: usize,
) -> Result<bool, StoreError> {
    loop {
        let expired = expired_keys(log, config, holds, today)?;
        if expired.is_empty() {
            return Ok(true);
        }
        let kids: BTreeSet<[u8; 16]> = expired
            .iter()
            .filter_map(|(kid, _)| <[u8; 16]>::try_from(&kid[..]).ok())
            .collect();
        let mut buckets = BTreeSet::new();
        for (_, record) in &expired {
            let stream = Stream::from_code(record.stream).unwrap_or(Stream::Access);
            for day in log::period_days(record.class, record.period, record.period_end_day) {
                if log.has_bucket(stream, day) {
                    buckets.insert((stream, day));
                }
            }
        }
        for (stream, day) in buckets {
            if *batches >= max_batches {
                return Ok(false);
            }
            let dropped = shred::drop_parts(log, stream, day, &kids)?;
            report
                .streams
                .entry(stream.as_str())
                .or_default()
                .parts_dropped += dropped;
            *batches += 1;
        }
        let complete = expired.len() < SWEEP_KEYS;
        for chunk in expired.chunks(KEY_BATCH) {
            if *batches >= max_batches {
                return Ok(false);
            }
            destroy_keys(log, chunk, report)?;
            *batches += 1;
        }
        if complete {
            return Ok(true);
        }
    }
}

/// Up to [`SWEEP_KEYS`] keys whose personal data has outlived its retention and is not held.
fn expired_keys(
    log: &AuditLog,
    config: &AuditConfig,
    holds: &[Hold],
    today: u32,
) -> Result<Vec<(sled::IVec, KeyRecord)>, StoreError> {
    let mut expired = Vec::new();
    for item in store::scan_from(&log.keys, &[]) {
        let (kid, bytes) = item?;
        let Ok(record) = postcard::from_bytes::<KeyRecord>(&bytes) else {
            continue;
        };
        let stream = Stream::from_code(record.stream).unwrap_or(Stream::Access);
        let ttl = match record.class {
            KeyClass::Body => config.body_days.min(config.retention[&stream].payload_days),
            KeyClass::Identity => config.retention[&stream].payload_days,
        };
        if record.period_end_day + ttl > today
            || gdpr::is_held(holds, &record.pseudonym, stream).is_some()
        {
            continue;
        }
        expired.push((kid, record));
        if expired.len() == SWEEP_KEYS {
            break;
        }
    }
    Ok(expired)
}

/// Destroys one batch of keys and their subject slots.
fn destroy_keys(
    log: &AuditLog,
    expired: &[(sled::IVec, KeyRecord)],
    report: &mut RunReport,
) -> Result<(), StoreError> {
    let mut keys = store::Batch::default();
    let mut subject_keys = store::Batch::default();
    for (kid, record) in expired {
        let stream = Stream::from_code(record.stream).unwrap_or(Stream::Access);
        keys.remove(kid);
        subject_keys.remove(log::subject_key_id(
            &record.pseudonym,
            stream,
            record.class,
            record.period,
        ));
        report
            .streams
            .entry(stream.as_str())
            .or_default()
            .keys_destroyed += 1;
    }
    let _keys = log.lock_keys();
    let _writing = log.store.writing();
    keys.apply(&log.keys)?;
    subject_keys.apply(&log.subject_keys)?;
    log.keys_destroyed();
    Ok(())
}

/// Whether a legal hold covers a subject with events in this bucket.
fn bucket_held(
    log: &AuditLog,
    holds: &[Hold],
    stream: Stream,
    day: u32,
) -> Result<bool, StoreError> {
    for hold in holds {
        if !hold.streams.is_empty() && !hold.streams.contains(&stream) {
            continue;
        }
        for pseudonym in &hold.pseudonyms {
            let Some(pseudonym) = hex::decode(pseudonym).and_then(|p| <[u8; 16]>::try_from(p).ok())
            else {
                continue;
            };
            if log
                .subjects
                .contains_key(log::subject_index_key(&pseudonym, stream, day))?
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Phase B for one bucket: anchor the chain at its last record (signed, naming the period
/// applied), then drop it whole.
fn drop_bucket(
    log: &AuditLog,
    (stream, day): (Stream, u32),
    header_days: u32,
    now: SystemTime,
    run: &mut StreamRun,
) -> Result<(), StoreError> {
    let tree = log.bucket(stream, day)?;
    let _writing = log.store.writing();
    if let Some((seq, record)) = log.newest(&tree, stream)? {
        let newer = anchor::load(log, stream)?.is_none_or(|anchor| anchor.pruned_through < seq);
        if newer {
            let anchor = Anchor::sign(
                log.keyring.signing_key(),
                &log.origin,
                stream,
                (seq, record.chain, day),
                event::rfc3339_nanos(now),
                header_days,
            );
            anchor::store(log, stream, &anchor)?;
        }
        digest::prune(log, stream, seq)?;
        run.events_pruned += log.bucket_count(&tree, stream)? as u64;
        run.pruned_through = Some(run.pruned_through.unwrap_or(0).max(seq));
    }
    drop(tree);
    log.store.drop_tree(&log::bucket_name(stream, day))?;
    run.buckets_dropped += 1;
    Ok(())
}

/// Removes the subject index entries that point at dropped buckets.
fn prune_index(log: &AuditLog, dropped: &[(Stream, u32)]) -> Result<(), StoreError> {
    if dropped.is_empty() {
        return Ok(());
    }
    let mut batch = store::Batch::default();
    let mut count = 0;
    for item in store::scan_from(&log.subjects, &[]) {
        let (key, _) = item?;
        // pseudonym (16) || stream (1) || day (4)
        if key.len() != 21 {
            continue;
        }
        let stream = Stream::from_code(key[16]);
        let day = u32::from_be_bytes(key[17..21].try_into().expect("four bytes"));
        if stream.is_some_and(|s| dropped.contains(&(s, day))) {
            batch.remove(key);
            count += 1;
        }
        if count == KEY_BATCH {
            let _keys = log.lock_keys();
            let _writing = log.store.writing();
            std::mem::take(&mut batch).apply(&log.subjects)?;
            count = 0;
        }
    }
    let _keys = log.lock_keys();
    let _writing = log.store.writing();
    batch.apply(&log.subjects)?;
    log.keys_destroyed();
    Ok(())
}
