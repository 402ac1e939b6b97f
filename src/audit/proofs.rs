//! Inclusion proofs for exported and queried events (research/audit.md §4.2): which signed
//! digest covers an event, and the audit path from its leaf to that digest's Merkle root. With
//! the digest and the pinned public key, a third party can check one event without seeing any
//! other event of its batch (docs/audit-format.md says how).
//!
//! The tree math is `merkle`'s, finding the covering digest `digest`'s; what goes into an
//! export, and for whom, is `gdpr`'s, and which events a page holds is `query`'s.

use std::collections::BTreeMap;

use crate::audit::digest::{self, Digest};
use crate::audit::event::{Hash, Stream};
use crate::audit::log::AuditLog;
use crate::audit::merkle::Tree;
use crate::hex;
use crate::store::StoreError;

/// Proofs for events visited in sequence order per stream. The digest covering an event is
/// looked up when an event falls outside the one held (a bisection of the stream's digests,
/// which a busy machine holds millions of), and one digest's tree is kept at a time. A range
/// holds at most `audit.digest_every` events plus one writer batch (the writer signs as soon as
/// that many are new), so that bounds the memory, and every stored event is read at most once
/// per pass.
pub struct Proofs<'a> {
    log: &'a AuditLog,
    /// The digests some proof or event names, for the export to include.
    cited: BTreeMap<(Stream, u64), Digest>,
    /// The digest the last event fell in, and its tree when it signed a root.
    held: Option<(Digest, Option<Tree>)>,
}

/// Where an event stands: the digest covering it, and its path when that digest signed a root.
pub struct Inclusion {
    pub digest: Option<u64>,
    pub path: Option<Vec<Hash>>,
}

impl Inclusion {
    /// Adds `digest` (its number, or null when no digest covers the event yet) and `proof`
    /// (`{"path": [hex, ...]}`, or null when that digest signed no root) to an event's
    /// `integrity` member, as exports and the query API show them (docs/audit-format.md).
    pub fn add_to(&self, integrity: &mut serde_json::Value) {
        integrity["digest"] = serde_json::json!(self.digest);
        integrity["proof"] = match &self.path {
            Some(path) => {
                serde_json::json!({ "path": path.iter().map(|h| hex::encode(h)).collect::<Vec<_>>() })
            }
            None => serde_json::Value::Null,
        };
    }
}

impl<'a> Proofs<'a> {
    pub fn new(log: &'a AuditLog) -> Proofs<'a> {
        Proofs {
            log,
            cited: BTreeMap::new(),
            held: None,
        }
    }

    /// Where event `seq` of `stream` stands. Blocking.
    pub fn prove(&mut self, stream: Stream, seq: u64) -> Result<Inclusion, StoreError> {
        let covers = |d: &Digest| d.stream == stream && d.from_seq <= seq && seq < d.next_seq;
        if !self.held.as_ref().is_some_and(|(d, _)| covers(d)) {
            let Some(digest) = digest::covering(self.log, stream, seq)? else {
                return Ok(Inclusion {
                    digest: None,
                    path: None,
                });
            };
            let mut tree = None;
            if digest.batch_merkle_root.is_some() {
                let mut leaves = Vec::new();
                let complete =
                    self.log
                        .each_leaf(stream, digest.from_seq, digest.next_seq, |leaf| {
                            leaves.push(*leaf)
                        })?;
                tree = complete.then(|| Tree::new(leaves));
            }
            self.cited
                .entry((stream, digest.number))
                .or_insert_with(|| digest.clone());
            self.held = Some((digest, tree));
        }
        let (digest, tree) = self.held.as_ref().expect("held above");
        Ok(Inclusion {
            digest: Some(digest.number),
            path: tree
                .as_ref()
                .and_then(|tree| tree.path((seq - digest.from_seq) as usize)),
        })
    }

    /// The digests named so far, by stream and number.
    pub fn cited(&self) -> Vec<&Digest> {
        self.cited.values().collect()
    }
}
