//! The single writer: assigns sequence numbers, seals personal parts, chains records and
//! group-commits batches to sled.
//!
//! One writer means one order: sequence numbers are gapless per stream and the chain needs no
//! locking. A commit writes tree by tree, keys first and records last, so a crash between
//! the trees leaves at worst a data key without events (harmless), never an event whose key
//! is missing. If sled refuses a write, the in-memory heads are not advanced, so the numbers
//! are reused and stay gapless.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::audit::DigestPolicy;
use crate::audit::anchor;
use crate::audit::digest::{self, Coverage, Digest};
use crate::audit::event::{self, Draft, Hash, KeyClass, Record, StoredPart, Stream, Subject};
use crate::audit::keys::{self, DataKey, Pseudonym};
use crate::audit::log::{self, AuditLog, KeyRecord};
use crate::audit::merkle::Frontier;
use crate::audit::watermark::{self, Watermark};
use crate::store::{self, StoreError};

/// Bounds on the writer's caches: past these they are cleared and refilled from sled.
const KEY_CACHE: usize = 50_000;
const INDEX_CACHE: usize = 200_000;
const PSEUDONYM_CACHE: usize = 100_000;

type KeySlot = (Pseudonym, Stream, KeyClass, u32);

pub struct Writer {
    log: Arc<AuditLog>,
    heads: HashMap<Stream, (u64, Hash)>,
    keys: HashMap<KeySlot, ([u8; 16], DataKey)>,
    indexed: HashSet<(Pseudonym, Stream, u32)>,
    pseudonyms: HashMap<Subject, Pseudonym>,
    /// Alias links known to be stored.
    linked: HashSet<(Pseudonym, Pseudonym)>,
    /// Per stream: the newest digest and when it was signed.
    signed: HashMap<Stream, (Option<Digest>, SystemTime)>,
    /// Per stream: the Merkle tree of the events since the newest digest, which the next one
    /// signs the root of; `None` when some of them could not be read back at start.
    unsigned: HashMap<Stream, Option<Frontier>>,
    /// The origin as a JSON string, the same in every header.
    origin_json: String,
    /// The log's generation the caches were filled at.
    generation: u64,
    /// The bucket day never goes backwards, even if the clock does, so each stream's buckets
    /// stay in sequence order.
    day: u32,
    /// Where each flush leaves the heads it made durable, if anywhere.
    watermark: Option<Watermark>,
}

/// Two lists of header fields, each in name order, as one in name order.
fn merge_by_name<'a>(
    a: impl Iterator<Item = (&'static str, &'a [u8])>,
    b: impl IntoIterator<Item = (&'static str, &'a [u8])>,
) -> Vec<(&'static str, &'a [u8])> {
    let mut a = a.peekable();
    let mut b = b.into_iter().peekable();
    let mut out = Vec::with_capacity(24);
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 <= y.0 => a.next(),
            (_, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => return out,
        };
        out.extend(next);
    }
}

/// Records are grouped up to about this many bytes before compression (about 3.8 KiB stored,
/// some 8 metadata events). Large enough that sled does one insert per several events: sled
/// clones a leaf on every insert and rewrites it whole when it splits it or every ten inserts, so
/// the insert count is what the writer pays for. Measured under saturating audited load, the
/// writer thread used 8.6-12.2 µs per event against 10.5-15.3 with half this bound, less in each
/// of seven alternating pairs. Small enough that those whole-leaf writes stay inline in sled's
/// log rather than becoming blob files, which sled makes of any message over 128 KiB (a quarter
/// of its 512 KiB segment) and which groups of sealed bodies, incompressible, reach first: in
/// `groups_of_sealed_bodies_keep_sleds_leaves_out_of_blob_files` they stayed inline up to 16 KiB
/// and did not at 24. Larger groups also cost resident memory, which a smaller sled cache takes
/// back (sled keeps replaced leaves until its epoch-based reclamation catches up): 16 KiB held
/// about 30 MB more than 4 KiB. Reading the trail back (`store::scan_from`) holds memory in
/// proportion to sled's leaves, 16 groups each: a verification peaked 39-41 MiB above serving
/// with this bound and 21-24 with half of it, which cost the writer about 2 µs more per event.
const GROUP_BYTES: usize = 8 * 1024;

/// Splits consecutive records (the first numbered `first`) into groups of about
/// [`GROUP_BYTES`], each with its first sequence number.
fn groups(first: u64, records: &[Record]) -> Vec<(u64, &[Record])> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let record_size = log::stored_size(record);
        if size > 0 && size + record_size > GROUP_BYTES {
            out.push((first + start as u64, &records[start..i]));
            (start, size) = (i, 0);
        }
        size += record_size;
    }
    if start < records.len() {
        out.push((first + start as u64, &records[start..]));
    }
    out
}

/// The first event of `stream` the next digest covers: the one after the newest digest, or
/// after where retention cut the stream, or the first.
fn unsigned_from(log: &AuditLog, stream: Stream, last: Option<&Digest>) -> Result<u64, StoreError> {
    Ok(match last {
        Some(last) => last.next_seq,
        None => match anchor::load(log, stream)? {
            Some(anchor) => anchor.pruned_through + 1,
            None => 0,
        },
    })
}

/// The Merkle tree of the stored events `from..next` of `stream`; `None` if any is missing.
fn stored_frontier(
    log: &AuditLog,
    stream: Stream,
    from: u64,
    next: u64,
) -> Result<Option<Frontier>, StoreError> {
    let mut frontier = Frontier::default();
    let complete = log.each_leaf(stream, from, next, |leaf| frontier.push(leaf))?;
    Ok(complete.then_some(frontier))
}

/// Writes prepared for one batch.
#[derive(Default)]
struct Pending {
    keys: store::Batch,
    subject_keys: store::Batch,
    subjects: store::Batch,
    /// Per stream and day: the first sequence number and the records from it on.
    buckets: BTreeMap<(Stream, u32), (u64, Vec<Record>)>,
    heads: HashMap<Stream, (u64, Hash)>,
    new_keys: HashMap<KeySlot, ([u8; 16], DataKey)>,
    new_index: HashSet<(Pseudonym, Stream, u32)>,
    new_links: HashSet<(Pseudonym, Pseudonym)>,
}

impl Writer {
    /// A writer continuing from what is stored. Blocking.
    pub fn new(log: Arc<AuditLog>) -> Result<Writer, StoreError> {
        let mut heads = HashMap::new();
        let mut signed = HashMap::new();
        let mut unsigned = HashMap::new();
        let own = digest::fingerprint(&log.keyring.signing_key().verifying_key());
        for stream in Stream::ALL {
            let head = log.head(stream)?;
            heads.insert(stream, head);
            let last = digest::last(&log, stream)?;
            let time = last
                .as_ref()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d.time).ok())
                .map_or_else(SystemTime::now, SystemTime::from);
            if let Some(last) = last.as_ref().filter(|d| d.key_fingerprint != own) {
                // The next digest links to one this key did not sign: verification will fail
                // from there back (SeawallAuditIntegrityBroken), so say why now.
                tracing::warn!(
                    stream = stream.as_str(),
                    signed_by = %last.key_fingerprint,
                    key = %own,
                    "the stored digests were signed by another key than keys/signing.key: restore the original key from a backup, or record this one off the machine"
                );
            }
            let from_seq = unsigned_from(&log, stream, last.as_ref())?;
            unsigned.insert(stream, stored_frontier(&log, stream, from_seq, head.0)?);
            signed.insert(stream, (last, time));
        }
        let day = log.newest_day().unwrap_or(0);
        let generation = log.generation();
        let origin_json = serde_json::to_string(&log.origin).expect("strings serialize");
        Ok(Writer {
            origin_json,
            log,
            heads,
            keys: HashMap::new(),
            indexed: HashSet::new(),
            pseudonyms: HashMap::new(),
            linked: HashSet::new(),
            signed,
            unsigned,
            generation,
            day,
            watermark: None,
        })
    }

    /// From now on each successful flush records the heads in `watermark`.
    pub fn keep_watermark(&mut self, watermark: Watermark) {
        self.watermark = Some(watermark);
    }

    /// Where the store is behind what `watermark` says an earlier run flushed, or is not the
    /// trail it was taken of. Blocking.
    pub fn behind(&self, mark: &watermark::Mark) -> Vec<watermark::Rollback> {
        let chain_at = |stream, seq| match self.log.events_from(stream, seq).next() {
            Some(Ok((stored, record))) if stored == seq => Some(record.chain),
            _ => None,
        };
        watermark::compare(mark, &self.heads, chain_at)
    }

    /// Makes everything committed so far durable, then records the heads in the watermark.
    /// Blocking.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.log.store.flush()?;
        if let Some(watermark) = &mut self.watermark {
            watermark.record(&self.heads);
        }
        Ok(())
    }

    /// The next sequence number of each stream.
    pub fn next_seq(&self, stream: Stream) -> u64 {
        self.heads[&stream].0
    }

    /// Seals, chains and writes `drafts` (in order) as of `now`. Blocking.
    pub fn commit(&mut self, drafts: Vec<Draft>, now: SystemTime) -> Result<usize, StoreError> {
        let log = self.log.clone();
        let _keys = log.lock_keys();
        let generation = log.generation();
        if generation != self.generation {
            self.keys.clear();
            self.indexed.clear();
            self.linked.clear();
            self.generation = generation;
        }
        self.day = self.day.max(log::day_of(now));
        let day = self.day;
        let mut pending = Pending::default();
        let count = drafts.len();
        for draft in drafts {
            self.prepare(draft, day, &mut pending)?;
        }
        let _writing = self.log.store.writing();
        std::mem::take(&mut pending.keys).apply(&self.log.keys)?;
        std::mem::take(&mut pending.subject_keys).apply(&self.log.subject_keys)?;
        std::mem::take(&mut pending.subjects).apply(&self.log.subjects)?;
        self.write_groups(&pending.buckets)?;
        self.heads.extend(pending.heads);
        // Only now that every bucket is written: a refused write leaves the trees as they were.
        for ((stream, _), (_, records)) in &pending.buckets {
            if let Some(Some(frontier)) = self.unsigned.get_mut(stream) {
                records
                    .iter()
                    .for_each(|record| frontier.push(&record.leaf));
            }
        }
        if self.keys.len() + pending.new_keys.len() > KEY_CACHE {
            self.keys.clear();
        }
        self.keys.extend(pending.new_keys);
        if self.indexed.len() + pending.new_index.len() > INDEX_CACHE {
            self.indexed.clear();
        }
        self.indexed.extend(pending.new_index);
        if self.linked.len() + pending.new_links.len() > INDEX_CACHE {
            self.linked.clear();
        }
        self.linked.extend(pending.new_links);
        Ok(count)
    }

    /// Inserts the records of each bucket in groups, in sequence order. Each group is a
    /// plain insert, not one batch: sled writes out its IO buffer for every batch, twice,
    /// which cost more than the inserts. Recovery after a crash keeps a prefix of sled's log,
    /// so it keeps a prefix of the groups and the chain stays whole. If an insert fails, the
    /// groups inserted before it are removed again, so that the sequence numbers the next
    /// commit reuses find no stale group in their way.
    fn write_groups(
        &self,
        buckets: &BTreeMap<(Stream, u32), (u64, Vec<Record>)>,
    ) -> Result<(), StoreError> {
        let mut written = Vec::new();
        let result = self.insert_groups(buckets, &mut written);
        if result.is_err() {
            for (bucket, key) in written {
                let _ = bucket.remove(key);
            }
        }
        result
    }

    /// The inserts of [`Writer::write_groups`], each recorded in `written` once it is done.
    fn insert_groups(
        &self,
        buckets: &BTreeMap<(Stream, u32), (u64, Vec<Record>)>,
        written: &mut Vec<(sled::Tree, [u8; 8])>,
    ) -> Result<(), StoreError> {
        for (&(stream, day), (first, records)) in buckets {
            let bucket = self.log.bucket(stream, day)?;
            for (first, group) in groups(*first, records) {
                let key = first.to_be_bytes();
                bucket.insert(key, log::encode_group(group))?;
                written.push((bucket.clone(), key));
            }
        }
        Ok(())
    }

    /// Signs the digests that are due as of `now` (research/audit.md §4.2): after
    /// `policy.every` new events, `policy.interval` after the last digest when there are new
    /// events, and `policy.idle` after it in any case. Blocking.
    pub fn sign_due(
        &mut self,
        now: SystemTime,
        policy: &DigestPolicy,
    ) -> Result<usize, StoreError> {
        let mut signed = 0;
        for stream in Stream::ALL {
            let (next_seq, head) = self.heads[&stream];
            let (last, last_time) = &self.signed[&stream];
            let from_seq = unsigned_from(&self.log, stream, last.as_ref())?;
            let new = next_seq - from_seq.min(next_seq);
            let age = now.duration_since(*last_time).unwrap_or_default();
            let due =
                new >= policy.every || (new > 0 && age >= policy.interval) || age >= policy.idle;
            if !due {
                continue;
            }
            let coverage = Coverage {
                origin: &self.log.origin,
                stream,
                from_seq,
                next_seq,
                chain_head: &head,
                // A tree that does not cover exactly this range would prove nothing.
                batch_merkle_root: match &self.unsigned[&stream] {
                    Some(tree) if from_seq + tree.size() == next_seq => Some(tree.root()),
                    _ => None,
                },
                time: event::rfc3339_nanos(now),
            };
            let digest = Digest::sign(self.log.keyring.signing_key(), coverage, last.as_ref());
            {
                let _writing = self.log.store.writing();
                digest::store(&self.log, &digest)?;
            }
            self.signed.insert(stream, (Some(digest), now));
            self.unsigned.insert(stream, Some(Frontier::default()));
            signed += 1;
        }
        Ok(signed)
    }

    fn prepare(&mut self, draft: Draft, day: u32, pending: &mut Pending) -> Result<(), StoreError> {
        let stream = draft.stream;
        let (seq, previous) = pending
            .heads
            .get(&stream)
            .copied()
            .unwrap_or_else(|| self.heads[&stream]);
        let mut declared = String::with_capacity(40 * draft.parts.len() + 2);
        declared.push('[');
        for (i, part) in draft.parts.iter().enumerate() {
            if i > 0 {
                declared.push(',');
            }
            declared.push_str(part.role.declaration());
        }
        declared.push(']');
        let mut seq_digits = itoa::Buffer::new();
        let seq_json = seq_digits.format(seq);
        // In name order, as the draft's own fields are: the header is their merge.
        let own: [(&'static str, &[u8]); 5] = [
            ("origin", self.origin_json.as_bytes()),
            ("parts", declared.as_bytes()),
            ("seq", seq_json.as_bytes()),
            ("stream", stream.json().as_bytes()),
            ("v", event::VERSION_JSON.as_bytes()),
        ];
        let fields = merge_by_name(draft.fields(), own);
        let header = event::join(&fields);
        let header_hash = event::header_hash(&header);
        let mut parts = Vec::with_capacity(draft.parts.len());
        for part in &draft.parts {
            let pseudonym = match &part.subject {
                Some(subject) => self.pseudonym(subject),
                None => self.log.keyring.pseudonym("anonymous", stream.as_str()),
            };
            let (kid, key) = self.data_key(pseudonym, stream, part.role.class(), day, pending)?;
            let sealed = keys::seal(
                &key,
                &event::part_aad(&header_hash, part.role),
                &part.content,
            );
            parts.push(StoredPart {
                role: part.role,
                kid: Some(kid),
                digest: event::part_digest(&sealed),
                sealed: Some(sealed),
            });
            self.index(pseudonym, stream, day, pending);
            for alias in &part.aliases {
                let alias = self.pseudonym(alias);
                self.link(alias, pseudonym, pending);
            }
        }
        let digests: Vec<Hash> = parts.iter().map(|p| p.digest).collect();
        let leaf = event::leaf(&header_hash, &digests);
        let chain = event::chain(&previous, &leaf);
        let record = Record {
            header,
            parts,
            leaf,
            chain,
        };
        pending
            .buckets
            .entry((stream, day))
            .or_insert_with(|| (seq, Vec::new()))
            .1
            .push(record);
        pending.heads.insert(stream, (seq + 1, chain));
        Ok(())
    }

    /// Pseudonyms are keyed hashes, worth remembering for the subjects seen again and again.
    fn pseudonym(&mut self, subject: &Subject) -> Pseudonym {
        if let Some(known) = self.pseudonyms.get(subject) {
            return *known;
        }
        let pseudonym = self.log.keyring.pseudonym(
            subject.kind.as_str(),
            &subject.kind.normalise(&subject.value),
        );
        if self.pseudonyms.len() >= PSEUDONYM_CACHE {
            self.pseudonyms.clear();
        }
        self.pseudonyms.insert(subject.clone(), pseudonym);
        pseudonym
    }

    fn index(&self, pseudonym: Pseudonym, stream: Stream, day: u32, pending: &mut Pending) {
        let entry = (pseudonym, stream, day);
        if self.indexed.contains(&entry) || !pending.new_index.insert(entry) {
            return;
        }
        pending
            .subjects
            .insert(log::subject_index_key(&pseudonym, stream, day), &[]);
    }

    /// Records that `alias` names the subject `pseudonym` (whose keys hold the parts).
    fn link(&self, alias: Pseudonym, pseudonym: Pseudonym, pending: &mut Pending) {
        let entry = (alias, pseudonym);
        if alias == pseudonym || self.linked.contains(&entry) || !pending.new_links.insert(entry) {
            return;
        }
        pending
            .subjects
            .insert(log::subject_link_key(&alias, &pseudonym), &[]);
    }

    /// The data key for a subject's data in this stream and period, created when needed.
    fn data_key(
        &mut self,
        pseudonym: Pseudonym,
        stream: Stream,
        class: KeyClass,
        day: u32,
        pending: &mut Pending,
    ) -> Result<([u8; 16], DataKey), StoreError> {
        let (period, period_end_day) = log::period(class, day);
        let slot = (pseudonym, stream, class, period);
        if let Some(found) = self.keys.get(&slot) {
            return Ok(*found);
        }
        if let Some(found) = pending.new_keys.get(&slot) {
            return Ok(*found);
        }
        let index_key = log::subject_key_id(&pseudonym, stream, class, period);
        if let Some(kid) = self.log.subject_keys.get(&index_key)? {
            let kid: [u8; 16] = kid
                .as_ref()
                .try_into()
                .map_err(|_| StoreError::Corrupt("audit key id".into()))?;
            if let Some(key) = self.log.data_key(&kid) {
                pending.new_keys.insert(slot, (kid, key));
                return Ok((kid, key));
            }
        }
        let kid: [u8; 16] = rand::random();
        let key = keys::new_data_key();
        let (epoch, wrapped) = self.log.keyring.wrap(&kid, &key);
        let record = KeyRecord {
            epoch,
            wrapped,
            stream: stream.code(),
            class,
            period,
            period_end_day,
            pseudonym,
        };
        pending.keys.insert(
            &kid,
            postcard::to_allocvec(&record).expect("key records encode"),
        );
        pending.subject_keys.insert(index_key, &kid);
        pending.new_keys.insert(slot, (kid, key));
        Ok((kid, key))
    }
}
