//! Checking a stream's chain: every stored record is recomputed from its header and part
//! digests and chained onto its predecessor, starting from the genesis value or from where
//! retention cut the stream (its anchor).
//!
//! Sealed parts are not opened: the chain commits to their digests, so a stream whose keys
//! were destroyed (retention, erasure) still verifies. A record whose sealed bytes no longer
//! match their digest is a break too.

use serde::Serialize;

use crate::audit::event::{self, Hash, Stream};
use crate::audit::log::AuditLog;
use crate::store::StoreError;

/// The result of checking one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    pub stream: Stream,
    pub events: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// Hex of the chain value after the last event: what a backup must reproduce.
    pub head: String,
    /// The first problem, if any.
    pub broken: Option<Break>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Break {
    pub seq: u64,
    /// `gap`, `header`, `part`, `leaf` or `chain`.
    pub kind: &'static str,
}

/// Verifies `stream` from its anchor (or genesis) to its newest record. Blocking.
pub fn stream(log: &AuditLog, stream: Stream) -> Result<StreamReport, StoreError> {
    let (mut expected_seq, mut previous) = match log.anchor(stream)? {
        Some(anchor) => (anchor.pruned_through + 1, anchor.chain),
        None => (0, event::genesis(&log.origin, stream)),
    };
    let mut report = StreamReport {
        stream,
        events: 0,
        first_seq: None,
        last_seq: None,
        head: hex(&previous),
        broken: None,
    };
    for item in log.events(stream) {
        let (position, record) = item?;
        // The header's number is the one the chain commits to; a record that lost it is
        // reported where it is stored.
        let Some(seq) = record.header_value().get("seq").and_then(|s| s.as_u64()) else {
            report.broken = Some(Break {
                seq: position,
                kind: "header",
            });
            return Ok(report);
        };
        // A bucket retention has anchored but not yet dropped (a run that was interrupted).
        if seq < expected_seq && report.events == 0 {
            continue;
        }
        let problem = if seq != expected_seq {
            Some("gap")
        } else if record.parts.iter().any(|p| {
            p.sealed
                .as_ref()
                .is_some_and(|s| event::part_digest(s) != p.digest)
        }) {
            Some("part")
        } else {
            let digests: Vec<Hash> = record.parts.iter().map(|p| p.digest).collect();
            if event::leaf(&event::header_hash(&record.header), &digests) != record.leaf {
                Some("leaf")
            } else if event::chain(&previous, &record.leaf) != record.chain {
                Some("chain")
            } else {
                None
            }
        };
        if let Some(kind) = problem {
            // For a gap, the first missing number; otherwise the record's own.
            report.broken = Some(Break {
                seq: expected_seq.min(seq),
                kind,
            });
            return Ok(report);
        }
        report.first_seq.get_or_insert(seq);
        report.last_seq = Some(seq);
        report.events += 1;
        previous = record.chain;
        expected_seq = seq + 1;
    }
    report.head = hex(&previous);
    Ok(report)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
