//! The erasure ledger: the ids of every data key an erasure destroyed, in a file of its own
//! (`<data_dir>/erasure-ledger.jsonl`), outside the store and left out of backups.
//!
//! A backup taken before an erasure still holds the erased subject's keys. Restoring it must
//! not bring them back, so every start replays the ledger before serving: any key it names
//! that the store holds is shredded again (research/audit.md §3.4, point 7). Key ids are
//! random values, not personal data, so the ledger can be copied off the machine freely, and
//! it should be: it is what makes restores safe.
//!
//! An entry is appended and synced *before* the keys are destroyed, so a crash in between
//! leaves a ledger that the next start completes. A crash during the append itself can leave
//! the last line cut short (no newline): that erasure destroyed nothing and was never
//! answered, so the line is passed over and cut off before the next append. Damage anywhere
//! else is an error.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hex;

pub const FILE: &str = "erasure-ledger.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub time: String,
    pub request_id: String,
    /// Hex key ids.
    pub kids: Vec<String>,
}

pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    pub fn new(data_dir: &Path) -> Ledger {
        Ledger {
            path: data_dir.join(FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends an entry and syncs it to disk, after cutting off a last line an earlier crash
    /// left unfinished. Blocking.
    pub fn append(&self, request_id: &str, time: &str, kids: &[[u8; 16]]) -> io::Result<()> {
        let entry = Entry {
            time: time.to_string(),
            request_id: request_id.to_string(),
            kids: kids.iter().map(|k| hex::encode(k)).collect(),
        };
        let mut line = serde_json::to_vec(&entry).expect("entries serialize");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        let bytes = self.read()?;
        let (_, unfinished) = split_unfinished(&bytes);
        if !unfinished.is_empty() {
            file.set_len(file.metadata()?.len() - unfinished.len() as u64)?;
        }
        file.write_all(&line)?;
        file.sync_all()
    }

    /// The ledger's bytes; none when there is no ledger yet.
    fn read(&self) -> io::Result<Vec<u8>> {
        match fs::read(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            other => other,
        }
    }

    /// Every key id the ledger names. A missing ledger names none; a damaged line is an
    /// error, because skipping it could resurrect erased data. Blocking.
    pub fn kids(&self) -> io::Result<BTreeSet<[u8; 16]>> {
        let bytes = self.read()?;
        let (finished, unfinished) = split_unfinished(&bytes);
        if !unfinished.is_empty() {
            tracing::warn!(
                path = %self.path.display(),
                bytes = unfinished.len(),
                "erasure ledger: its last line was cut short by a crash during an erasure, which destroyed nothing and was never answered; passed over"
            );
        }
        let mut kids = BTreeSet::new();
        for (number, line) in finished.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let bad = || {
                io::Error::other(format!(
                    "{} line {} is not a ledger entry",
                    self.path.display(),
                    number + 1
                ))
            };
            let entry: Entry = serde_json::from_str(&line).map_err(|_| bad())?;
            for kid in entry.kids {
                let kid: [u8; 16] = hex::decode(&kid)
                    .and_then(|k| k.try_into().ok())
                    .ok_or_else(bad)?;
                kids.insert(kid);
            }
        }
        Ok(kids)
    }
}

/// The ledger's complete lines, and what follows the last newline: an append cut short.
fn split_unfinished(bytes: &[u8]) -> (&[u8], &[u8]) {
    let end = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    bytes.split_at(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_accumulate_and_damage_is_an_error() {
        let dir = tempfile::TempDir::new().unwrap();
        let ledger = Ledger::new(dir.path());
        assert!(ledger.kids().unwrap().is_empty());
        ledger.append("r1", "t", &[[1; 16], [2; 16]]).unwrap();
        ledger.append("r2", "t", &[[2; 16], [3; 16]]).unwrap();
        assert_eq!(ledger.kids().unwrap().len(), 3);
        fs::write(ledger.path(), "{\"broken\n").unwrap();
        assert!(ledger.kids().is_err());
    }

    #[test]
    fn an_append_cut_short_is_passed_over_and_cut_off() {
        let dir = tempfile::TempDir::new().unwrap();
        let ledger = Ledger::new(dir.path());
        ledger.append("r1", "t", &[[1; 16]]).unwrap();
        let whole = fs::read(ledger.path()).unwrap();
        let mut torn = whole.clone();
        torn.extend_from_slice(b"{\"time\":\"t\",\"request_id\":\"r2\",\"kids\":[\"0202");
        fs::write(ledger.path(), &torn).unwrap();
        assert_eq!(ledger.kids().unwrap(), BTreeSet::from([[1; 16]]));
        ledger.append("r3", "t", &[[3; 16]]).unwrap();
        assert_eq!(ledger.kids().unwrap(), BTreeSet::from([[1; 16], [3; 16]]));
        let text = fs::read_to_string(ledger.path()).unwrap();
        assert!(
            text.starts_with(std::str::from_utf8(&whole).unwrap()),
            "{text}"
        );
        assert_eq!(text.lines().count(), 2, "{text}");
        // Damage before the last line is still an error.
        fs::write(ledger.path(), [&torn[..], b"\n", &whole[..]].concat()).unwrap();
        assert!(ledger.kids().is_err());
    }
}
