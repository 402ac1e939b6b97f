//! The audit trail's layout in sled (research/audit.md §1.7), and reading it back.
//!
//! | tree | key → value |
//! |---|---|
//! | `audit/<stream>/<day>` | first seq (big-endian) → a group of consecutive [`Record`]s of about 8 KiB before compression, headers compressed ([`encode_group`]; one tree per stream and UTC day, so retention drops whole trees) |
//! | `audit_keys` | key id → [`KeyRecord`]: a data key wrapped under the current KEK |
//! | `audit_subject_keys` | pseudonym, stream, class, period → key id |
//! | `audit_subjects` | pseudonym, stream, day → (): which buckets hold a subject's events; and alias pseudonym, `0xff`, pseudonym → (): another identifier of a subject whose parts are keyed to the latter |
//! | `audit_anchors` | stream → signed [`Anchor`](crate::audit::anchor::Anchor): where retention cut the chain |
//! | `audit_digests` | stream, number → signed [`Digest`](crate::audit::digest::Digest) (JSON) |
//! | `audit_holds` | hold id → [`Hold`](crate::audit::gdpr::Hold) (JSON) |
//!
//! Writing events is `writer`'s job; this module owns names, encodings and lookups.
//! [`AuditLog::key_lock`] orders everything that creates or destroys data keys and index
//! entries (the writer, retention, erasure, KEK rotation), so no cache outlives a destruction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::audit::anchor;
use crate::audit::event::{self, Hash, KeyClass, Record, StoredPart, Stream, Subject};
use crate::audit::keys::{DataKey, Keyring, Pseudonym};
use crate::store::{self, Store, StoreError, trees};

/// Days since the Unix epoch (UTC).
pub fn day_of(time: SystemTime) -> u32 {
    (time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / 86_400) as u32
}

/// The key period a day falls in, and the first day after that period.
pub fn period(class: KeyClass, day: u32) -> (u32, u32) {
    match class {
        KeyClass::Body => (day, day + 1),
        KeyClass::Identity => {
            let date = NaiveDate::from_num_days_from_ce_opt(day as i32 + 719_163)
                .expect("days since 1970 are dates");
            let month = date.year() as u32 * 12 + date.month0();
            let next = if date.month() == 12 {
                NaiveDate::from_ymd_opt(date.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
            }
            .expect("the first of a month is a date");
            (month, (next.num_days_from_ce() - 719_163) as u32)
        }
    }
}

/// The days of a key period, from its first day up to (not including) `end_day`.
pub fn period_days(class: KeyClass, period: u32, end_day: u32) -> std::ops::Range<u32> {
    let first = match class {
        KeyClass::Body => period,
        KeyClass::Identity => {
            let date = NaiveDate::from_ymd_opt((period / 12) as i32, period % 12 + 1, 1)
                .expect("the first of a month is a date");
            (date.num_days_from_ce() - 719_163) as u32
        }
    };
    first..end_day
}

pub fn bucket_name(stream: Stream, day: u32) -> String {
    format!("{}{}/{day:06}", trees::AUDIT_BUCKET_PREFIX, stream.as_str())
}

/// A data key as stored: wrapped, with what it is for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub epoch: u32,
    pub wrapped: Vec<u8>,
    pub stream: u8,
    pub class: KeyClass,
    pub period: u32,
    /// The first day after the key's period: its data expires a retention time after this.
    pub period_end_day: u32,
    pub pseudonym: Pseudonym,
}

pub fn subject_key_id(
    pseudonym: &Pseudonym,
    stream: Stream,
    class: KeyClass,
    period: u32,
) -> Vec<u8> {
    let mut key = pseudonym.to_vec();
    key.push(stream.code());
    key.push(class.code());
    key.extend_from_slice(&period.to_be_bytes());
    key
}

pub fn subject_index_key(pseudonym: &Pseudonym, stream: Stream, day: u32) -> Vec<u8> {
    let mut key = pseudonym.to_vec();
    key.push(stream.code());
    key.extend_from_slice(&day.to_be_bytes());
    key
}

pub fn subject_link_key(alias: &Pseudonym, pseudonym: &Pseudonym) -> Vec<u8> {
    let mut key = alias.to_vec();
    key.push(0xff);
    key.extend_from_slice(pseudonym);
    key
}

pub struct AuditLog {
    pub store: Store,
    /// Held by the writer while it commits and by whatever destroys keys or index entries.
    pub key_lock: Mutex<()>,
    /// Held by whatever rewrites or drops buckets (retention, shredding, KEK rotation).
    maintenance: Mutex<()>,
    /// Bumped whenever keys or index entries are destroyed, so the writer drops its caches.
    generation: AtomicU64,
    pub keyring: Arc<Keyring>,
    pub origin: String,
    pub keys: sled::Tree,
    pub subject_keys: sled::Tree,
    pub subjects: sled::Tree,
    pub anchors: sled::Tree,
    pub digests: sled::Tree,
    pub holds: sled::Tree,
}

impl AuditLog {
    pub fn open(
        store: &Store,
        keyring: Arc<Keyring>,
        origin: &str,
    ) -> Result<AuditLog, StoreError> {
        Ok(AuditLog {
            keys: store.tree(trees::AUDIT_KEYS)?,
            subject_keys: store.tree(trees::AUDIT_SUBJECT_KEYS)?,
            subjects: store.tree(trees::AUDIT_SUBJECTS)?,
            anchors: store.tree(trees::AUDIT_ANCHORS)?,
            digests: store.tree(trees::AUDIT_DIGESTS)?,
            holds: store.tree(trees::AUDIT_HOLDS)?,
            key_lock: Mutex::new(()),
            maintenance: Mutex::new(()),
            store: store.clone(),
            generation: AtomicU64::new(0),
            keyring,
            origin: origin.to_string(),
        })
    }

    /// Says that keys or index entries were destroyed: cached copies are stale.
    pub fn keys_destroyed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// See [`AuditLog::key_lock`]; a panic elsewhere does not poison the log.
    pub fn lock_keys(&self) -> MutexGuard<'_, ()> {
        self.key_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See `maintenance`.
    pub fn lock_maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The newest day any stream has a bucket for.
    pub fn newest_day(&self) -> Option<u32> {
        Stream::ALL
            .into_iter()
            .filter_map(|stream| self.buckets(stream).last().copied())
            .max()
    }

    /// The days that have a bucket for `stream`, oldest first.
    pub fn buckets(&self, stream: Stream) -> Vec<u32> {
        let prefix = format!("{}{}/", trees::AUDIT_BUCKET_PREFIX, stream.as_str());
        let mut days: Vec<u32> = self
            .store
            .tree_names()
            .iter()
            .filter_map(|name| name.strip_prefix(&prefix)?.parse().ok())
            .collect();
        days.sort_unstable();
        days
    }

    pub fn bucket(&self, stream: Stream, day: u32) -> Result<sled::Tree, StoreError> {
        self.store.tree(&bucket_name(stream, day))
    }

    /// The next sequence number and the chain value of a stream, from its newest record (the
    /// records are the truth, so a crash between a write and any bookkeeping cannot matter).
    pub fn head(&self, stream: Stream) -> Result<(u64, Hash), StoreError> {
        for day in self.buckets(stream).into_iter().rev() {
            if let Some((seq, record)) = self.newest(&self.bucket(stream, day)?, stream)? {
                return Ok((seq + 1, record.chain));
            }
        }
        Ok(match anchor::load(self, stream)? {
            Some(anchor) => (anchor.pruned_through + 1, anchor.chain),
            None => (0, event::genesis(&self.origin, stream)),
        })
    }

    /// The newest record in one bucket, with its sequence number.
    pub fn newest(
        &self,
        bucket: &sled::Tree,
        stream: Stream,
    ) -> Result<Option<(u64, Record)>, StoreError> {
        let Some((key, value)) = bucket.last()? else {
            return Ok(None);
        };
        let first = group_key(&key, stream)?;
        let mut records = decode_group(&value).ok_or_else(|| corrupt(stream, "record group"))?;
        let count = records.len() as u64;
        Ok(records.pop().map(|record| (first + count - 1, record)))
    }

    /// Every stored event of a stream in sequence order, bucket by bucket.
    pub fn events(
        &self,
        stream: Stream,
    ) -> impl Iterator<Item = Result<(u64, Record), StoreError>> + '_ {
        self.buckets(stream)
            .into_iter()
            .flat_map(move |day| self.bucket_events(stream, day, 0))
    }

    /// The stored events of a stream from sequence number `from` on, in order. Buckets hold
    /// consecutive numbers in day order, so reading starts at the last one whose first group
    /// begins at or before `from`, found by its keys alone.
    pub fn events_from(
        &self,
        stream: Stream,
        from: u64,
    ) -> impl Iterator<Item = Result<(u64, Record), StoreError>> + '_ {
        let days = self.buckets(stream);
        let starts_at_or_before = |day: &u32| {
            let first = self.bucket(stream, *day).ok().and_then(|b| b.first().ok()?);
            first.is_some_and(|(key, _)| group_key(&key, stream).is_ok_and(|seq| seq <= from))
        };
        let start = days.partition_point(starts_at_or_before).saturating_sub(1);
        days.into_iter()
            .skip(start)
            .flat_map(move |day| self.bucket_events(stream, day, from))
    }

    /// Visits the leaves of the stored events `from..next` of `stream`, in order; false when
    /// any of them is gone (retention cut into the range), and then not all were visited.
    /// Blocking.
    pub fn each_leaf(
        &self,
        stream: Stream,
        from: u64,
        next: u64,
        mut visit: impl FnMut(&Hash),
    ) -> Result<bool, StoreError> {
        let mut expected = from;
        for item in self.events_from(stream, from) {
            let (seq, record) = item?;
            if seq >= next {
                break;
            }
            if seq != expected {
                return Ok(false);
            }
            visit(&record.leaf);
            expected += 1;
        }
        Ok(expected == next)
    }

    /// The events of one bucket from sequence number `from` on.
    pub fn bucket_events(
        &self,
        stream: Stream,
        day: u32,
        from: u64,
    ) -> Box<dyn Iterator<Item = Result<(u64, Record), StoreError>> + '_> {
        let tree = match self.bucket(stream, day) {
            Ok(tree) => tree,
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        // The group holding `from` starts at or before it.
        let start = match tree.range(..=from.to_be_bytes()).next_back() {
            Some(Ok((key, _))) => key.to_vec(),
            Some(Err(e)) => return Box::new(std::iter::once(Err(e.into()))),
            None => from.to_be_bytes().to_vec(),
        };
        Box::new(store::scan_from(&tree, &start).flat_map(move |item| {
            let group = item.and_then(|(key, value)| {
                let first = group_key(&key, stream)?;
                let records =
                    decode_group(&value).ok_or_else(|| corrupt(stream, "record group"))?;
                Ok((first, records))
            });
            let records: Box<dyn Iterator<Item = Result<(u64, Record), StoreError>>> = match group {
                Ok((first, records)) => Box::new(
                    (first..)
                        .zip(records)
                        .filter(move |(seq, _)| *seq >= from)
                        .map(Ok),
                ),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            records
        }))
    }

    /// Visits the record groups of one bucket, decoded, with their key, stored value and first
    /// sequence number, until `visit` returns false. With `Some(kids)`, only the groups that
    /// hold a part under one of them: key ids are stored verbatim, so a byte search skips every
    /// other group undecoded, what makes finding one subject among millions of events cheap.
    /// `None` visits every group (cheaper than searching for thousands of keys).
    pub fn groups_with_kids(
        &self,
        stream: Stream,
        day: u32,
        kids: Option<&[[u8; 16]]>,
        mut visit: impl FnMut(&sled::IVec, &sled::IVec, u64, Vec<Record>) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        if kids.is_some_and(|kids| kids.is_empty()) || !self.has_bucket(stream, day) {
            return Ok(());
        }
        let finders: Option<Vec<memchr::memmem::Finder<'_>>> =
            kids.map(|kids| kids.iter().map(memchr::memmem::Finder::new).collect());
        for item in store::scan_from(&self.bucket(stream, day)?, &[]) {
            let (key, value) = item?;
            if let Some(finders) = &finders
                && !finders.iter().any(|f| f.find(&value).is_some())
            {
                continue;
            }
            let first = group_key(&key, stream)?;
            let records = decode_group(&value).ok_or_else(|| corrupt(stream, "record group"))?;
            if !visit(&key, &value, first, records)? {
                break;
            }
        }
        Ok(())
    }

    /// Number of events in one bucket, without decoding them.
    pub fn bucket_count(&self, bucket: &sled::Tree, stream: Stream) -> Result<usize, StoreError> {
        let mut total = 0;
        for item in store::scan_from(bucket, &[]) {
            let (_, value) = item?;
            total += group_len(&value).ok_or_else(|| corrupt(stream, "record group"))?;
        }
        Ok(total)
    }

    /// The pseudonyms of `subjects`, and of the subjects they are aliases of.
    pub fn resolve(&self, subjects: &[Subject]) -> Result<BTreeSet<Pseudonym>, StoreError> {
        let mut out = BTreeSet::new();
        for subject in subjects {
            let pseudonym = self.keyring.pseudonym(
                subject.kind.as_str(),
                &subject.kind.normalise(&subject.value),
            );
            out.insert(pseudonym);
            for item in self.subjects.scan_prefix(pseudonym) {
                let (key, _) = item?;
                if key.len() == 33 && key[16] == 0xff {
                    out.insert(key[17..].try_into().expect("16 bytes"));
                }
            }
        }
        Ok(out)
    }

    /// Every data key of these subjects, with its record.
    pub fn subject_keys(
        &self,
        pseudonyms: &BTreeSet<Pseudonym>,
    ) -> Result<BTreeMap<[u8; 16], KeyRecord>, StoreError> {
        let mut out = BTreeMap::new();
        for pseudonym in pseudonyms {
            for item in self.subject_keys.scan_prefix(pseudonym) {
                let (_, kid) = item?;
                let Ok(kid) = <[u8; 16]>::try_from(kid.as_ref()) else {
                    continue;
                };
                if let Some(bytes) = self.keys.get(kid)?
                    && let Ok(record) = postcard::from_bytes::<KeyRecord>(&bytes)
                {
                    out.insert(kid, record);
                }
            }
        }
        Ok(out)
    }

    /// The index entries of these subjects: (pseudonym, stream, day) of every bucket that
    /// holds their events.
    pub fn subject_index(
        &self,
        pseudonyms: &BTreeSet<Pseudonym>,
    ) -> Result<BTreeSet<(Pseudonym, Stream, u32)>, StoreError> {
        let mut out = BTreeSet::new();
        for pseudonym in pseudonyms {
            for item in self.subjects.scan_prefix(pseudonym) {
                let (key, _) = item?;
                // Alias links share the prefix; only index entries are 21 bytes long.
                if key.len() == 21
                    && let Some(stream) = Stream::from_code(key[16])
                {
                    let day = u32::from_be_bytes(key[17..21].try_into().expect("4 bytes"));
                    out.insert((*pseudonym, stream, day));
                }
            }
        }
        Ok(out)
    }

    /// Whether a bucket exists (without creating it, as opening would).
    pub fn has_bucket(&self, stream: Stream, day: u32) -> bool {
        let name = bucket_name(stream, day);
        self.store.tree_names().contains(&name)
    }

    /// The clear data key of `kid`, while it exists and its KEK does.
    pub fn data_key(&self, kid: &[u8; 16]) -> Option<DataKey> {
        let bytes = self.keys.get(kid).ok()??;
        let record: KeyRecord = postcard::from_bytes(&bytes).ok()?;
        self.keyring.unwrap(kid, record.epoch, &record.wrapped)
    }

    /// The content of one sealed part, or `None` once its key is gone.
    pub fn open_part(&self, record: &Record, part: &StoredPart) -> Option<Value> {
        let (kid, sealed) = (part.kid.as_ref()?, part.sealed.as_ref()?);
        let key = self.data_key(kid)?;
        let aad = event::part_aad(&event::header_hash(&record.header), part.role);
        let plain = crate::audit::keys::open(&key, &aad, sealed)?;
        serde_json::from_slice(&plain).ok()
    }

    /// Number of stored events per stream (all buckets).
    pub fn count(&self, stream: Stream) -> Result<usize, StoreError> {
        let mut total = 0;
        for day in self.buckets(stream) {
            total += self.bucket_count(&self.bucket(stream, day)?, stream)?;
        }
        Ok(total)
    }
}

/// The first byte of a group with compressed headers. Groups written before it are a postcard
/// sequence of [`Record`]s, which starts with the record count, and the writer never wrote an
/// empty group, so a stored group that starts with 0 and goes on is always this format.
const COMPRESSED_HEADERS: u8 = 0;

/// A decoded group's headers are refused past this size (corrupt data, not a real group).
const MAX_HEADERS_BYTES: usize = 16 << 20;

/// What a record holds besides its header, as encoded (borrowed when writing).
#[derive(Serialize)]
struct RecordRestRef<'a> {
    parts: &'a [StoredPart],
    leaf: &'a Hash,
    chain: &'a Hash,
}

#[derive(Deserialize)]
struct RecordRest {
    parts: Vec<StoredPart>,
    leaf: Hash,
    chain: Hash,
}

/// Encodes consecutive records as one sled value, stored under the sequence number of the
/// first (one sled insert per event costs more than sealing and hashing it): `0`, the record
/// count, then the headers
/// (each after its length) compressed together with LZ4, then the rest of each record in
/// postcard. Headers are most of a metadata event's bytes and repeat each other's field names
/// and values, so this roughly halves them; the parts are ciphertext, which does not compress,
/// and stay outside the compressed block so their key ids can be found by a byte search
/// ([`AuditLog::groups_with_kids`]).
pub fn encode_group(records: &[Record]) -> Vec<u8> {
    let mut headers = Vec::with_capacity(records.iter().map(|r| r.header.len() + 3).sum());
    for record in records {
        headers = postcard::to_extend(&record.header.len(), headers).expect("lengths encode");
        headers.extend_from_slice(record.header.as_bytes());
    }
    let compressed = lz4_flex::block::compress_prepend_size(&headers);
    // Sized once: grown push by push, the buffer was reallocated several times per group.
    let rests_size: usize = records
        .iter()
        .map(|r| stored_size(r) - r.header.len())
        .sum();
    let mut out = Vec::with_capacity(1 + 20 + compressed.len() + rests_size);
    out.push(COMPRESSED_HEADERS);
    out = postcard::to_extend(&records.len(), out).expect("lengths encode");
    out = postcard::to_extend(&compressed.len(), out).expect("lengths encode");
    out.extend_from_slice(&compressed);
    let rests: Vec<RecordRestRef<'_>> = records
        .iter()
        .map(|r| RecordRestRef {
            parts: &r.parts,
            leaf: &r.leaf,
            chain: &r.chain,
        })
        .collect();
    postcard::to_extend(&rests, out).expect("records encode")
}

/// About how many bytes `record` takes in a group before compression: its header, its parts
/// with their key ids and digests, its leaf and chain values, and postcard's lengths (an
/// upper bound for all but the header).
pub fn stored_size(record: &Record) -> usize {
    record.header.len()
        + record
            .parts
            .iter()
            .map(|p| p.sealed.as_ref().map_or(0, Vec::len) + 96)
            .sum::<usize>()
        + 80
}

/// Decodes a group of either format; `None` if it is not one.
pub fn decode_group(bytes: &[u8]) -> Option<Vec<Record>> {
    let Some(body) = compressed_body(bytes) else {
        return postcard::from_bytes(bytes).ok();
    };
    let (count, body) = postcard::take_from_bytes::<usize>(body).ok()?;
    let (size, body) = postcard::take_from_bytes::<usize>(body).ok()?;
    let (compressed, rests) = body.split_at_checked(size)?;
    let (headers_size, block) = lz4_flex::block::uncompressed_size(compressed).ok()?;
    if headers_size > MAX_HEADERS_BYTES {
        return None;
    }
    let headers = lz4_flex::block::decompress(block, headers_size).ok()?;
    let (rests, trailing) = postcard::take_from_bytes::<Vec<RecordRest>>(rests).ok()?;
    if rests.len() != count || !trailing.is_empty() {
        return None;
    }
    let mut remaining = &headers[..];
    let mut records = Vec::with_capacity(count);
    for rest in rests {
        let (len, after) = postcard::take_from_bytes::<usize>(remaining).ok()?;
        let (header, after) = after.split_at_checked(len)?;
        remaining = after;
        records.push(Record {
            header: String::from_utf8(header.to_vec()).ok()?,
            parts: rest.parts,
            leaf: rest.leaf,
            chain: rest.chain,
        });
    }
    remaining.is_empty().then_some(records)
}

/// The number of records in an encoded group, without decoding it: both formats write it
/// first.
pub fn group_len(bytes: &[u8]) -> Option<usize> {
    postcard::take_from_bytes::<usize>(compressed_body(bytes).unwrap_or(bytes))
        .ok()
        .map(|(n, _)| n)
}

/// What follows the marker of a group with compressed headers.
fn compressed_body(bytes: &[u8]) -> Option<&[u8]> {
    match bytes {
        [COMPRESSED_HEADERS, body @ ..] if !body.is_empty() => Some(body),
        _ => None,
    }
}

fn group_key(key: &[u8], stream: Stream) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| corrupt(stream, "key"))?,
    ))
}

fn corrupt(stream: Stream, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "audit stream {} has an undecodable {what}",
        stream.as_str()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_months_for_identities_and_days_for_bodies() {
        let day = day_of(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)); // 2023-11-14
        assert_eq!(period(KeyClass::Body, day), (day, day + 1));
        let (month, end) = period(KeyClass::Identity, day);
        assert_eq!(month, 2023 * 12 + 10);
        assert_eq!(
            end,
            day_of(UNIX_EPOCH + std::time::Duration::from_secs(1_701_388_800)),
            "2023-12-01"
        );
        let december = day_of(UNIX_EPOCH + std::time::Duration::from_secs(1_702_684_800)); // 2023-12-16
        assert_eq!(
            period(KeyClass::Identity, december).1,
            day_of(UNIX_EPOCH + std::time::Duration::from_secs(1_704_067_200))
        );
    }

    fn record(seq: u64, kid: u8) -> Record {
        let header = format!(
            r#"{{"action":"read","category":"http","http":{{"method":"GET","route":"api","status_code":200}},"id":"{seq:032x}","origin":"seawall","outcome":"success","seq":{seq},"stream":"access","type":"http.read","v":1}}"#
        );
        Record {
            header,
            parts: vec![
                StoredPart {
                    role: crate::audit::event::Role::Client,
                    kid: Some([kid; 16]),
                    sealed: Some(vec![seq as u8; 120]),
                    digest: [7; 32],
                },
                StoredPart {
                    role: crate::audit::event::Role::Body,
                    kid: None,
                    sealed: None,
                    digest: [8; 32],
                },
            ],
            leaf: [seq as u8; 32],
            chain: [!(seq as u8); 32],
        }
    }

    #[test]
    fn groups_round_trip_with_compressed_headers_and_key_ids_in_clear() {
        let records: Vec<Record> = (0..6).map(|seq| record(seq, 0xA0 + seq as u8)).collect();
        let encoded = encode_group(&records);
        assert_eq!(decode_group(&encoded).as_ref(), Some(&records));
        assert_eq!(group_len(&encoded), Some(6));
        let plain = postcard::to_allocvec(&records).unwrap();
        assert!(
            encoded.len() * 10 < plain.len() * 8,
            "{} bytes against {} uncompressed",
            encoded.len(),
            plain.len()
        );
        for seq in 0..6 {
            let kid = [0xA0 + seq as u8; 16];
            assert!(memchr::memmem::find(&encoded, &kid).is_some(), "kid {seq}");
        }
        assert_eq!(decode_group(&encode_group(&[])), Some(Vec::new()));
    }

    #[test]
    fn groups_written_before_compression_still_decode() {
        let records: Vec<Record> = (0..3).map(|seq| record(seq, 1)).collect();
        let old = postcard::to_allocvec(&records).unwrap();
        assert_eq!(decode_group(&old), Some(records));
        assert_eq!(group_len(&old), Some(3));
        assert_eq!(decode_group(&[0]), Some(Vec::new()), "an empty old group");
    }

    #[test]
    fn damaged_groups_are_refused_not_misread() {
        let records: Vec<Record> = (0..4).map(|seq| record(seq, 2)).collect();
        let encoded = encode_group(&records);
        for cut in [2, 5, encoded.len() / 2, encoded.len() - 1] {
            assert_eq!(decode_group(&encoded[..cut]), None, "cut at {cut}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(decode_group(&longer), None, "trailing bytes");
        // A size prefix claiming gigabytes of headers is refused before anything is allocated.
        let mut huge = vec![COMPRESSED_HEADERS, 1, 5];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.push(0);
        assert_eq!(decode_group(&huge), None);
    }

    proptest::proptest! {
        /// A damaged store must be reported, never crash the reader: any bytes, and any
        /// single-byte change to a real group, decode to something or to `None`.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = decode_group(&bytes);
            let _ = group_len(&bytes);
            let mut marked = vec![COMPRESSED_HEADERS];
            marked.extend_from_slice(&bytes);
            let _ = decode_group(&marked);
        }

        #[test]
        fn damaged_real_groups_decode_without_panicking(at in 0usize..10_000, byte in proptest::prelude::any::<u8>()) {
            let records: Vec<Record> = (0..4).map(|seq| record(seq, 3)).collect();
            let mut encoded = encode_group(&records);
            let at = at % encoded.len();
            encoded[at] = byte;
            let _ = decode_group(&encoded);
        }
    }
}
