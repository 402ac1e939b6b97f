//! Crypto-shredding (research/audit.md §3.4): destroying data keys, dropping the sealed parts
//! they opened, removing the subject index entries, and rotating the key-encryption key.
//!
//! sled does not physically erase a removed value, so destroying a data key in sled only
//! removes it logically; the stale copies in sled's files stay wrapped under the KEK of their
//! epoch. [`rotate_kek`] rewraps every live data key under a new KEK and deletes the old one,
//! which is what makes those copies (and so the subject's ciphertexts) unreadable for good.
//!
//! Deciding *what* to shred is `gdpr`'s job (and the erasure ledger's on replay); this module
//! only carries it out. Everything here holds [`AuditLog::lock_maintenance`], so it never
//! races a retention run dropping the same buckets, and takes the key lock only for the short
//! moment it removes keys, so the writer's caches never outlive a destruction.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::audit::event::Stream;
use crate::audit::keys::Pseudonym;
use crate::audit::log::{self, AuditLog, KeyRecord};
use crate::store::{self, StoreError};

/// Keys rewrapped per sled batch during a rotation.
const REWRAP_BATCH: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Shredded {
    pub keys_destroyed: u64,
    pub parts_dropped: u64,
    pub index_entries_removed: u64,
}

/// Destroys the data keys `keys`, removes the index entries `(pseudonym, stream, day)` in
/// `index`, then drops the sealed parts of those keys from the buckets their periods cover.
/// Blocking.
pub fn shred(
    log: &AuditLog,
    keys: &BTreeMap<[u8; 16], KeyRecord>,
    index: &BTreeSet<(Pseudonym, Stream, u32)>,
) -> Result<Shredded, StoreError> {
    let _maintenance = log.lock_maintenance();
    let mut report = Shredded::default();
    {
        let mut key_batch = store::Batch::default();
        let mut slot_batch = store::Batch::default();
        let mut index_batch = store::Batch::default();
        let _keys = log.lock_keys();
        for (kid, record) in keys {
            let Some(stream) = Stream::from_code(record.stream) else {
                continue;
            };
            key_batch.remove(kid);
            let slot = log::subject_key_id(&record.pseudonym, stream, record.class, record.period);
            // The slot may already name a newer key of the same period (after an earlier
            // erasure); only a slot naming this key goes.
            if log.subject_keys.get(&slot)?.as_deref() == Some(&kid[..]) {
                slot_batch.remove(slot);
            }
            report.keys_destroyed += 1;
        }
        for (pseudonym, stream, day) in index {
            index_batch.remove(log::subject_index_key(pseudonym, *stream, *day));
            report.index_entries_removed += 1;
        }
        let _writing = log.store.writing();
        key_batch.apply(&log.keys)?;
        slot_batch.apply(&log.subject_keys)?;
        index_batch.apply(&log.subjects)?;
        log.keys_destroyed();
    }
    let kids: BTreeSet<[u8; 16]> = keys.keys().copied().collect();
    let mut buckets = BTreeSet::new();
    for record in keys.values() {
        if let Some(stream) = Stream::from_code(record.stream) {
            for day in log::period_days(record.class, record.period, record.period_end_day) {
                buckets.insert((stream, day));
            }
        }
    }
    for (stream, day) in buckets {
        report.parts_dropped += drop_parts(log, stream, day, &kids)?;
    }
    log.store.flush()?;
    Ok(report)
}

/// Up to this many keys, a bucket's groups are found by searching their bytes for each key;
/// beyond, every group is decoded once instead.
const BYTE_SEARCH_KEYS: usize = 32;

/// Removes the sealed bytes (keeping their digests, which the chain commits to) of every part
/// in one bucket whose key is in `kids`. Returns how many parts went. Erasure calls it with a
/// subject's few keys, retention with a day's or a month's expired ones.
pub(crate) fn drop_parts(
    log: &AuditLog,
    stream: Stream,
    day: u32,
    kids: &BTreeSet<[u8; 16]>,
) -> Result<u64, StoreError> {
    let wanted: Vec<[u8; 16]> = kids.iter().copied().collect();
    let search = (wanted.len() <= BYTE_SEARCH_KEYS).then_some(&wanted[..]);
    let mut dropped = 0;
    let mut tree: Option<sled::Tree> = None;
    log.groups_with_kids(stream, day, search, |key, value, _, mut records| {
        let mut changed = 0;
        for part in records.iter_mut().flat_map(|r| r.parts.iter_mut()) {
            if part.kid.is_some_and(|kid| kids.contains(&kid)) {
                part.kid = None;
                part.sealed = None;
                changed += 1;
            }
        }
        if changed == 0 {
            return Ok(true);
        }
        // Swapped as found, so a bucket's worth of groups is never held in memory. The bucket
        // exists: its groups are being visited.
        let tree = match &tree {
            Some(tree) => tree,
            None => tree.insert(log.bucket(stream, day)?),
        };
        let _writing = log.store.writing();
        // Only this module rewrites groups, under the maintenance lock; the swap still makes
        // sure nothing else changed the group in between.
        tree.compare_and_swap(key, Some(value), Some(log::encode_group(&records)))?
            .map_err(|_| {
                StoreError::Corrupt(
                    "an audit record group changed while its parts were dropped".into(),
                )
            })?;
        dropped += changed;
        Ok(true)
    })?;
    Ok(dropped)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rotation {
    pub epoch: u32,
    pub keys_rewrapped: u64,
    /// Keys whose KEK was already gone (they open nothing and are left for retention).
    pub keys_unreadable: u64,
    pub keks_retired: usize,
}

/// Starts a new KEK epoch, rewraps every data key under it, makes that durable, then deletes
/// the older KEKs. A crash before the end leaves the older KEKs in place (nothing is lost);
/// the next rotation finishes the job. Blocking; holds the writer off while it rewraps.
pub fn rotate_kek(log: &AuditLog) -> Result<Rotation, StoreError> {
    let io = |e: std::io::Error| StoreError::Corrupt(format!("audit keys: {e}"));
    let _maintenance = log.lock_maintenance();
    let _keys = log.lock_keys();
    let epoch = log.keyring.rotate().map_err(io)?;
    let mut rotation = Rotation {
        epoch,
        keys_rewrapped: 0,
        keys_unreadable: 0,
        keks_retired: 0,
    };
    let mut batch = store::Batch::default();
    let mut in_batch = 0;
    for item in store::scan_from(&log.keys, &[]) {
        let (kid, bytes) = item?;
        let Ok(mut record) = postcard::from_bytes::<KeyRecord>(&bytes) else {
            continue;
        };
        if record.epoch >= epoch {
            continue;
        }
        let Some(key) = log.keyring.unwrap(&kid, record.epoch, &record.wrapped) else {
            rotation.keys_unreadable += 1;
            continue;
        };
        (record.epoch, record.wrapped) = log.keyring.wrap(&kid, &key);
        batch.insert(
            kid,
            postcard::to_allocvec(&record).expect("key records encode"),
        );
        rotation.keys_rewrapped += 1;
        in_batch += 1;
        if in_batch == REWRAP_BATCH {
            let _writing = log.store.writing();
            std::mem::take(&mut batch).apply(&log.keys)?;
            in_batch = 0;
        }
    }
    {
        let _writing = log.store.writing();
        batch.apply(&log.keys)?;
        log.store.flush()?;
    }
    rotation.keks_retired = log.keyring.retire(epoch).map_err(io)?;
    Ok(rotation)
}
