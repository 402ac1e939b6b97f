//! Checking a stream: every stored record is recomputed from its header and part digests and
//! chained onto its predecessor, starting from the genesis value or from where retention cut
//! the stream (its anchor, whose signature and period are checked too); then every signed
//! digest is checked against the pinned public key, its predecessor, the chain value it names
//! and the Merkle root of the leaves it covers (research/audit.md §4.4).
//!
//! Sealed parts are not opened: the chain commits to their digests, so a stream whose keys
//! were destroyed (retention, erasure) still verifies. A record whose sealed bytes no longer
//! match their digest is a break too.
//!
//! Limits, stated in the report: events after the newest digest (`unanchored_tail`) are only
//! as trustworthy as the machine; a digest copied off the machine proves the rest.

use std::collections::{BTreeSet, HashMap};

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use crate::audit::anchor::{self, Anchor};
use crate::audit::digest::{self, Digest};
use crate::audit::event::{self, Hash, Record, Stream};
use crate::audit::log::AuditLog;
use crate::audit::merkle::{self, Frontier};
use crate::hex;
use crate::store::StoreError;

/// The result of checking several streams.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub alg: &'static str,
    /// The key the digests were checked against.
    pub public_key: String,
    pub key_fingerprint: String,
    pub streams: Vec<StreamReport>,
}

/// Verifies `streams` against `pinned`. Blocking.
pub fn streams(
    log: &AuditLog,
    streams: &[Stream],
    pinned: &VerifyingKey,
) -> Result<Report, StoreError> {
    let streams = streams
        .iter()
        .map(|s| stream(log, *s, pinned))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Report {
        ok: streams.iter().all(|r| r.broken.is_none()),
        alg: digest::ALGORITHM,
        public_key: hex::encode(pinned.as_bytes()),
        key_fingerprint: digest::fingerprint(pinned),
        streams,
    })
}

/// Verifies every stream of a data directory that no server is using (a copy, a backup):
/// `seawall audit verify`. Digests are checked against `pinned`, or against the directory's
/// own signing key, which only proves anything if its fingerprint matches the one recorded
/// off the machine. Blocking.
pub fn data_dir(
    data_dir: &std::path::Path,
    origin: &str,
    pinned: Option<VerifyingKey>,
) -> Result<Report, StoreError> {
    require_data_dir(data_dir)?;
    let config = crate::config::StoreConfig {
        data_dir: data_dir.to_path_buf(),
        cache_capacity_bytes: 64 << 20,
    };
    let store = crate::store::Store::open(&config)?;
    let keyring = crate::audit::keys::Keyring::open_existing(data_dir)
        .map_err(|e| StoreError::Corrupt(format!("audit keys: {e}")))?;
    let pinned = pinned.unwrap_or_else(|| keyring.signing_key().verifying_key());
    let log = AuditLog::open(&store, std::sync::Arc::new(keyring), origin)?;
    streams(&log, &Stream::ALL, &pinned)
}

/// Refuses a folder that holds no store or no audit keys, before the commands that work on
/// the data directory of a stopped server open it: opening would create an empty store and
/// new keys there, and a mistyped path would then verify, or back up, as empty.
pub fn require_data_dir(data_dir: &std::path::Path) -> Result<(), StoreError> {
    let needed = [
        data_dir.join("store").join("conf"),
        data_dir.join("keys").join("signing.key"),
    ];
    match needed.into_iter().find(|file| !file.is_file()) {
        Some(missing) => Err(StoreError::NotADataDir {
            path: data_dir.to_path_buf(),
            missing,
        }),
        None => Ok(()),
    }
}

/// A stream's retention cut, as its signed anchor states it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cut {
    pub pruned_through: u64,
    pub header_days: u32,
    pub time: String,
}

/// The result of checking one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    pub stream: Stream,
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hex of the chain value after the last event: what a backup must reproduce.
    pub head: String,
    /// Sealed parts still present, and dropped (erased or expired; their digests remain).
    pub parts_present: u64,
    pub parts_dropped: u64,
    /// Digests checked, and the last sequence number a valid digest covers.
    pub digests: u64,
    pub signed_through: Option<u64>,
    /// Events after the newest valid digest: nothing on this machine proves they were not cut
    /// off or rewritten; an external copy of a later digest does.
    pub unanchored_tail: u64,
    /// Where retention cut the stream, if it has: the newest event removed, the header period
    /// the cut applied (shorter than configured when the capacity guard had stepped in; 0 for
    /// a cut made before anchors were signed) and when.
    pub cut: Option<Cut>,
    /// The first problem by sequence number, if any.
    pub broken: Option<Break>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Break {
    pub seq: u64,
    /// Anchors: `anchor_signature` (not signed by the pinned key, or unreadable),
    /// `anchor_period` (the cut removed events younger than the period it names).
    /// Records: `gap` (missing), `order` (out of place), `header` (header altered), `digest`
    /// (a part's stored digest altered), `ciphertext` (sealed bytes altered), `leaf`, `chain`.
    /// Digests: `signature` (not signed by the pinned key), `digest_link` (the digest chain is
    /// broken), `head` (the chain value it signed differs: history was rewritten somewhere in
    /// its range, reported at its first event), `merkle` (the Merkle root it signed is not
    /// that of the leaves it covers), `truncated` (it covers events that are gone).
    pub kind: &'static str,
    /// The digest number, for digest problems.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

impl Break {
    fn record(seq: u64, kind: &'static str) -> Break {
        Break {
            seq,
            kind,
            digest: None,
        }
    }
}

/// Verifies `stream` from its anchor (or genesis) to its newest record, and its digests
/// against `pinned`. Blocking.
pub fn stream(
    log: &AuditLog,
    stream: Stream,
    pinned: &VerifyingKey,
) -> Result<StreamReport, StoreError> {
    let (anchor, anchor_break) = match anchor::load(log, stream) {
        Ok(anchor) => {
            let problem = anchor
                .as_ref()
                .and_then(|a| anchor_problem(a, log, stream, pinned));
            (anchor, problem)
        }
        // Unreadable: the records are checked from genesis, and the anchor is the break.
        Err(StoreError::Corrupt(_)) => (None, Some(Break::record(0, "anchor_signature"))),
        Err(e) => return Err(e),
    };
    let (start_seq, start_chain) = match &anchor {
        Some(anchor) => (anchor.pruned_through + 1, anchor.chain),
        None => (0, event::genesis(&log.origin, stream)),
    };
    let digests = digest::list(log, stream, 0)?;
    let wanted: BTreeSet<u64> = digests
        .iter()
        .flatten()
        .filter_map(|d| d.next_seq.checked_sub(1))
        .collect();
    let starts: BTreeSet<u64> = digests.iter().flatten().map(|d| d.from_seq).collect();
    let mut recomputed = Recomputed {
        start_seq,
        start_chain,
        chains: HashMap::new(),
        roots: HashMap::new(),
    };
    // The tree of the digest range being passed through, from its first event on.
    let mut tree: Option<Frontier> = None;
    let mut report = StreamReport {
        stream,
        events: 0,
        first_seq: None,
        last_seq: None,
        head: hex::encode(&start_chain),
        parts_present: 0,
        parts_dropped: 0,
        digests: 0,
        signed_through: None,
        unanchored_tail: 0,
        cut: anchor.as_ref().map(|a| Cut {
            pruned_through: a.pruned_through,
            header_days: a.header_days,
            time: a.time.clone(),
        }),
        broken: None,
    };
    let (mut expected_seq, mut previous) = (start_seq, start_chain);
    let mut records = log.events(stream).peekable();
    while let Some(item) = records.next() {
        let (position, record) = item?;
        // The header's number is the one the chain commits to; a record that lost it is
        // reported where it is stored.
        let Some(seq) = record.header_seq() else {
            report.broken = Some(Break::record(position, "header"));
            break;
        };
        // A bucket retention has anchored but not yet dropped (a run that was interrupted).
        if seq < expected_seq && report.events == 0 {
            continue;
        }
        let problem = if seq != expected_seq {
            let missing_follows = matches!(
                records.peek(),
                Some(Ok((_, next))) if next.header_seq() == Some(expected_seq)
            );
            Some(if seq < expected_seq || missing_follows {
                "order"
            } else {
                "gap"
            })
        } else {
            record_problem(&record, &previous)
        };
        if let Some(kind) = problem {
            // For a gap, the first missing number; otherwise the record's own.
            report.broken = Some(Break::record(expected_seq.min(seq), kind));
            break;
        }
        for part in &record.parts {
            if part.sealed.is_some() {
                report.parts_present += 1;
            } else {
                report.parts_dropped += 1;
            }
        }
        report.first_seq.get_or_insert(seq);
        report.last_seq = Some(seq);
        report.events += 1;
        previous = record.chain;
        if starts.contains(&seq) {
            tree = Some(Frontier::default());
        }
        if let Some(tree) = &mut tree {
            tree.push(&record.leaf);
        }
        if wanted.contains(&seq) {
            recomputed.chains.insert(seq, previous);
            if let Some(tree) = tree.take() {
                recomputed.roots.insert(seq + 1, tree.root());
            }
        }
        expected_seq = seq + 1;
    }
    report.head = hex::encode(&previous);
    let checked_until = report.broken.as_ref().map_or(expected_seq, |b| b.seq);
    if let Some(found) = check_digests(
        &digests,
        pinned,
        &recomputed,
        expected_seq,
        checked_until,
        &mut report,
    ) && report.broken.as_ref().is_none_or(|b| found.seq < b.seq)
    {
        report.broken = Some(found);
    }
    // Below every stored event, so the first problem when there is one.
    if anchor_break.is_some() {
        report.broken = anchor_break;
    }
    Ok(report)
}

/// What is wrong with the stream's anchor, if anything.
fn anchor_problem(
    anchor: &Anchor,
    log: &AuditLog,
    stream: Stream,
    pinned: &VerifyingKey,
) -> Option<Break> {
    let kind = if !anchor.signed_by(pinned, &log.origin, stream) {
        "anchor_signature"
    } else if !anchor.within_period() {
        "anchor_period"
    } else {
        return None;
    };
    Some(Break::record(anchor.pruned_through, kind))
}

/// What is wrong with a record at its expected place, if anything.
fn record_problem(record: &Record, previous: &Hash) -> Option<&'static str> {
    let digests: Vec<Hash> = record.parts.iter().map(|p| p.digest).collect();
    let leaf = event::leaf(&event::header_hash(&record.header), &digests);
    let altered_part = record.parts.iter().any(|p| {
        p.sealed
            .as_ref()
            .is_some_and(|s| event::part_digest(s) != p.digest)
    });
    if altered_part {
        // The stored digests still produce the leaf: the sealed bytes changed, not the digest.
        return Some(if leaf == record.leaf {
            "ciphertext"
        } else {
            "digest"
        });
    }
    if leaf != record.leaf {
        // The stored leaf still chains: what it was computed from changed.
        return Some(if event::chain(previous, &record.leaf) == record.chain {
            "header"
        } else {
            "leaf"
        });
    }
    (event::chain(previous, &record.leaf) != record.chain).then_some("chain")
}

/// What the records pass computed, for the digests to be checked against.
struct Recomputed {
    /// Where the records start (after the anchor, or 0), and the chain value before that.
    start_seq: u64,
    start_chain: Hash,
    /// The verified chain value after event `seq`, for each digest's last event.
    chains: HashMap<u64, Hash>,
    /// Per digest range passed whole, keyed by its `next_seq`: the Merkle root of its leaves.
    roots: HashMap<u64, Hash>,
}

impl Recomputed {
    /// The verified chain value before event `next_seq`, when the records pass reached it.
    fn chain_before(&self, next_seq: u64) -> Option<Hash> {
        if next_seq == self.start_seq {
            Some(self.start_chain)
        } else {
            self.chains.get(&(next_seq - 1)).copied()
        }
    }

    /// The Merkle root of the leaves `digest` covers, when the records pass saw them all.
    fn root_of(&self, digest: &Digest) -> Option<Hash> {
        if digest.from_seq == digest.next_seq {
            Some(merkle::empty_root())
        } else {
            self.roots.get(&digest.next_seq).copied()
        }
    }
}

/// Checks the digests in order; returns the first problem.
fn check_digests(
    digests: &[Result<Digest, u64>],
    pinned: &VerifyingKey,
    recomputed: &Recomputed,
    stored_next: u64,
    checked_until: u64,
    report: &mut StreamReport,
) -> Option<Break> {
    let start_seq = recomputed.start_seq;
    let mut previous: Option<&Digest> = None;
    let mut signed_next = None;
    let mut found = None;
    for item in digests {
        let digest = match item {
            Ok(digest) => digest,
            Err(number) => {
                found = Some(Break {
                    seq: previous.map_or(start_seq, |p| p.next_seq),
                    kind: "signature",
                    digest: Some(*number),
                });
                break;
            }
        };
        let at = |kind| Break {
            seq: digest.from_seq.min(digest.next_seq.saturating_sub(1)),
            kind,
            digest: Some(digest.number),
        };
        if !digest.signed_by(pinned) {
            found = Some(at("signature"));
            break;
        }
        let linked = match previous {
            Some(p) => {
                digest.number == p.number + 1
                    && digest.prev_digest.as_deref() == Some(hex::encode(&p.hash()).as_str())
                    && digest.from_seq == p.next_seq
            }
            // The oldest kept digest: its predecessors went with retention.
            None => digest.number == 0 || digest.next_seq <= start_seq,
        };
        if !linked {
            found = Some(at("digest_link"));
            break;
        }
        if digest.next_seq > stored_next {
            found = Some(Break {
                seq: stored_next,
                kind: "truncated",
                digest: Some(digest.number),
            });
            break;
        }
        if digest.next_seq >= start_seq && digest.next_seq <= checked_until {
            match recomputed.chain_before(digest.next_seq) {
                Some(chain) if hex::encode(&chain) == digest.chain_head => {}
                _ => {
                    found = Some(at("head"));
                    break;
                }
            }
        }
        // A range retention cut into cannot be recomputed; its chain head was checked.
        if let Some(signed_root) = &digest.batch_merkle_root
            && digest.from_seq >= start_seq
            && digest.next_seq <= checked_until
            && recomputed
                .root_of(digest)
                .map(|root| hex::encode(&root))
                .as_ref()
                != Some(signed_root)
        {
            found = Some(at("merkle"));
            break;
        }
        report.digests += 1;
        signed_next = Some(digest.next_seq);
        previous = Some(digest);
    }
    report.signed_through = signed_next.and_then(|n| n.checked_sub(1));
    report.unanchored_tail = stored_next - signed_next.unwrap_or(start_seq).min(stored_next);
    found
}
