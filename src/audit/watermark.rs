//! The high-water mark: each stream's next sequence number and chain value as of the writer's
//! last successful flush, in a small file beside the store (`<data_dir>/audit-watermark.json`),
//! left out of backups.
//!
//! The store alone cannot tell that it went back in time: a store replaced by an older backup,
//! wiped, or missing its tail opens and appends from its own head as if nothing happened. At
//! start [`compare`] holds the store's heads against the mark, and what is behind (fewer events
//! than the mark says were on disk) or another trail (another chain value after the mark's
//! last event) is reported as an `integrity.rollback` event, a log line and a gauge, instead
//! of staying silent. This guards against accidents on the machine; someone who can edit the
//! data directory can edit this file too, which is what the digest feed and `seawall audit
//! witness` (from another machine) are for.
//!
//! The mark never runs ahead of the store: it is written after the flush it describes, so a
//! crash can leave it behind the store (nothing to report) but not ahead of it. It is replaced
//! by a rename and not synced: after a power cut it may be older than the store, or unreadable,
//! which is reported as unchecked and mended by the next flush.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::event::{Hash, Stream};
use crate::hex;

pub const FILE: &str = "audit-watermark.json";

/// A stream's head: the next sequence number and the chain value of the event before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub next_seq: u64,
    /// Hex.
    pub chain: String,
}

/// The mark as stored: a head per stream name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    pub streams: BTreeMap<String, Head>,
}

impl Mark {
    pub fn of(heads: &HashMap<Stream, (u64, Hash)>) -> Mark {
        let streams = heads
            .iter()
            .map(|(stream, (next_seq, chain))| {
                let head = Head {
                    next_seq: *next_seq,
                    chain: hex::encode(chain),
                };
                (stream.as_str().to_string(), head)
            })
            .collect();
        Mark { streams }
    }
}

/// A stream the store holds less of than the mark says was on disk, or another trail of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollback {
    pub stream: &'static str,
    pub watermark_next_seq: u64,
    pub store_next_seq: u64,
    /// Events the mark counted that the store does not have (0 when only the chain differs).
    pub missing_events: u64,
    /// The store holds the mark's last event with another chain value: it is another trail,
    /// or a rewritten one.
    pub chain_differs: bool,
}

/// Where the store is behind `mark`, or not the trail the mark was taken of. A store ahead of
/// the mark is normal (the mark lags the store after a crash between a flush and its write),
/// as long as it continues the marked trail: `chain_at(stream, seq)` is the stored chain value
/// after event `seq`, `None` when the store no longer holds it (retention), and then there is
/// nothing to compare.
pub fn compare(
    mark: &Mark,
    heads: &HashMap<Stream, (u64, Hash)>,
    chain_at: impl Fn(Stream, u64) -> Option<Hash>,
) -> Vec<Rollback> {
    let mut behind = Vec::new();
    for stream in Stream::ALL {
        let Some(marked) = mark.streams.get(stream.as_str()) else {
            continue;
        };
        let (next_seq, chain) = heads.get(&stream).copied().unwrap_or((0, [0; 32]));
        let stored_at_mark = match next_seq.cmp(&marked.next_seq) {
            // Before event 0 the chain value is the stream's genesis, derived from the
            // configured origin: no event was marked, and an origin changed since is no
            // rollback.
            _ if marked.next_seq == 0 => None,
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => Some(chain),
            std::cmp::Ordering::Greater => chain_at(stream, marked.next_seq - 1),
        };
        let chain_differs = stored_at_mark.is_some_and(|c| hex::encode(&c) != marked.chain);
        if next_seq < marked.next_seq || chain_differs {
            behind.push(Rollback {
                stream: stream.as_str(),
                watermark_next_seq: marked.next_seq,
                store_next_seq: next_seq,
                missing_events: marked.next_seq.saturating_sub(next_seq),
                chain_differs,
            });
        }
    }
    behind
}

pub struct Watermark {
    path: PathBuf,
    /// What the file holds, as far as this process knows: writes that change nothing are
    /// skipped.
    written: Option<Mark>,
    /// Whether the last write failed: a failure is reported once, not at every flush.
    failing: bool,
}

impl Watermark {
    pub fn new(data_dir: &Path) -> Watermark {
        Watermark {
            path: data_dir.join(FILE),
            written: None,
            failing: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored mark; `Ok(None)` when there is none yet (a new data directory, or one from
    /// before marks were kept). Blocking.
    pub fn read(&self) -> io::Result<Option<Mark>> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Records `heads`, which the store has just flushed. The store is what matters: a mark
    /// that cannot be written is logged (once until a write succeeds again), not an error.
    /// Blocking.
    pub fn record(&mut self, heads: &HashMap<Stream, (u64, Hash)>) {
        match self.write(heads) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    "the audit watermark could not be written: a rollback of the store would go unnoticed at the next start"
                );
            }
            Err(_) => {}
        }
    }

    /// Replaces the stored mark with `heads`, unless it already says that.
    fn write(&mut self, heads: &HashMap<Stream, (u64, Hash)>) -> io::Result<()> {
        let mark = Mark::of(heads);
        if self.written.as_ref() == Some(&mark) {
            return Ok(());
        }
        let partial = self.path.with_extension("json.partial");
        fs::write(
            &partial,
            serde_json::to_vec_pretty(&mark).expect("marks serialize"),
        )?;
        fs::rename(&partial, &self.path)?;
        self.written = Some(mark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heads(access: (u64, u8), system: (u64, u8)) -> HashMap<Stream, (u64, Hash)> {
        HashMap::from([
            (Stream::Access, (access.0, [access.1; 32])),
            (Stream::System, (system.0, [system.1; 32])),
        ])
    }

    /// A store whose chain value after event 9 of `access` is `at_9`, and holds nothing else.
    fn stored(at_9: u8) -> impl Fn(Stream, u64) -> Option<Hash> {
        move |stream, seq| (stream == Stream::Access && seq == 9).then_some([at_9; 32])
    }

    #[test]
    fn the_same_store_or_one_that_continues_it_is_not_behind() {
        let mark = Mark::of(&heads((10, 1), (3, 2)));
        assert!(compare(&mark, &heads((10, 1), (3, 2)), stored(1)).is_empty());
        assert!(compare(&mark, &heads((12, 7), (3, 2)), stored(1)).is_empty());
        // Event 9 pruned since: nothing left to compare.
        assert!(compare(&mark, &heads((12, 7), (3, 2)), |_, _| None).is_empty());
        assert!(compare(&Mark::default(), &heads((0, 0), (0, 0)), stored(1)).is_empty());
        let nothing_marked = Mark::of(&heads((0, 5), (0, 6)));
        assert!(compare(&nothing_marked, &heads((4, 1), (2, 2)), |_, _| None).is_empty());
        // Empty streams whose genesis changed with the configured origin.
        assert!(compare(&nothing_marked, &heads((0, 1), (0, 2)), |_, _| None).is_empty());
    }

    #[test]
    fn a_longer_store_that_does_not_continue_the_marked_trail_is_reported() {
        let mark = Mark::of(&heads((10, 1), (3, 2)));
        let other = compare(&mark, &heads((40, 7), (3, 2)), stored(8));
        assert_eq!(
            other,
            [Rollback {
                stream: "access",
                watermark_next_seq: 10,
                store_next_seq: 40,
                missing_events: 0,
                chain_differs: true,
            }]
        );
    }

    #[test]
    fn fewer_events_or_another_chain_is_a_rollback() {
        let mark = Mark::of(&heads((10, 1), (3, 2)));
        let behind = compare(&mark, &heads((4, 1), (3, 9)), stored(1));
        assert_eq!(
            behind,
            [
                Rollback {
                    stream: "access",
                    watermark_next_seq: 10,
                    store_next_seq: 4,
                    missing_events: 6,
                    chain_differs: false,
                },
                Rollback {
                    stream: "system",
                    watermark_next_seq: 3,
                    store_next_seq: 3,
                    missing_events: 0,
                    chain_differs: true,
                },
            ]
        );
        // A wiped store has no heads at all.
        let wiped = compare(&mark, &HashMap::new(), |_, _| None);
        assert_eq!(wiped.len(), 2);
        assert_eq!(wiped[0].missing_events, 10);
    }

    #[test]
    fn a_mark_is_written_read_back_and_unreadable_ones_are_errors() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut watermark = Watermark::new(dir.path());
        assert_eq!(watermark.read().unwrap(), None);
        let now = heads((5, 3), (1, 4));
        watermark.write(&now).unwrap();
        assert_eq!(watermark.read().unwrap(), Some(Mark::of(&now)));
        // Unchanged heads are not written again.
        fs::remove_file(watermark.path()).unwrap();
        watermark.write(&now).unwrap();
        assert!(!watermark.path().exists());
        watermark.write(&heads((6, 3), (1, 4))).unwrap();
        assert_eq!(
            watermark.read().unwrap().unwrap().streams["access"].next_seq,
            6
        );

        fs::write(watermark.path(), b"").unwrap();
        let error = watermark.read().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
