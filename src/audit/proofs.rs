//! Inclusion proofs for exported events (research/audit.md §4.2): which signed digest covers
//! an event, and the audit path from its leaf to that digest's Merkle root. With the digest
//! and the pinned public key, a third party can check one exported event without seeing any
//! other event of its batch (docs/audit-format.md says how).
//!
//! The tree math is `merkle`'s; what goes into an export, and for whom, is `gdpr`'s.

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::digest::{self, Digest};
use crate::audit::event::{Hash, Stream};
use crate::audit::log::AuditLog;
use crate::audit::merkle::Tree;
use crate::store::StoreError;

/// Proofs for events visited in sequence order per stream: one digest's tree is kept at a
/// time, read back from the store when an event of another range comes. A range holds at most
/// `audit.digest_every` events plus one writer batch (the writer signs as soon as that many are
/// new), so that bounds the memory, and every stored event is read at most once per export.
pub struct Proofs<'a> {
    log: &'a AuditLog,
    digests: BTreeMap<Stream, Vec<Digest>>,
    /// The digests some proof or event names, for the export to include.
    cited: BTreeSet<(Stream, u64)>,
    tree: Option<((Stream, u64), Option<Tree>)>,
}

/// Where an event stands: the digest covering it, and its path when that digest signed a root.
pub struct Inclusion {
    pub digest: Option<u64>,
    pub path: Option<Vec<Hash>>,
}

impl<'a> Proofs<'a> {
    /// Loads the digests of `streams`. Blocking.
    pub fn new(log: &'a AuditLog, streams: &BTreeSet<Stream>) -> Result<Proofs<'a>, StoreError> {
        let mut digests = BTreeMap::new();
        for &stream in streams {
            let list: Vec<Digest> = digest::list(log, stream, 0)?
                .into_iter()
                .flatten()
                .collect();
            digests.insert(stream, list);
        }
        Ok(Proofs {
            log,
            digests,
            cited: BTreeSet::new(),
            tree: None,
        })
    }

    /// Where event `seq` of `stream` stands. Blocking.
    pub fn prove(&mut self, stream: Stream, seq: u64) -> Result<Inclusion, StoreError> {
        let list = self.digests.get(&stream).map_or(&[][..], Vec::as_slice);
        let at = list.partition_point(|d| d.next_seq <= seq);
        let Some(digest) = list.get(at).filter(|d| d.from_seq <= seq) else {
            return Ok(Inclusion {
                digest: None,
                path: None,
            });
        };
        self.cited.insert((stream, digest.number));
        if digest.batch_merkle_root.is_none() {
            return Ok(Inclusion {
                digest: Some(digest.number),
                path: None,
            });
        }
        let slot = (stream, digest.number);
        if self.tree.as_ref().is_none_or(|(held, _)| *held != slot) {
            let mut leaves = Vec::new();
            let complete =
                self.log
                    .each_leaf(stream, digest.from_seq, digest.next_seq, |leaf| {
                        leaves.push(*leaf)
                    })?;
            self.tree = Some((slot, complete.then(|| Tree::new(leaves))));
        }
        let path = self
            .tree
            .as_ref()
            .and_then(|(_, tree)| tree.as_ref())
            .and_then(|tree| tree.path((seq - digest.from_seq) as usize));
        Ok(Inclusion {
            digest: Some(slot.1),
            path,
        })
    }

    /// The digests named so far, by stream and number.
    pub fn cited(&self) -> Vec<&Digest> {
        self.cited
            .iter()
            .filter_map(|(stream, number)| {
                // Listed in number order, as stored.
                let list = &self.digests[stream];
                let at = list.binary_search_by_key(number, |d| d.number).ok()?;
                Some(&list[at])
            })
            .collect()
    }
}
