//! Backups of the data directory (SPEC §11): copied while writers are paused, then opened
//! and verified before anyone is told it worked.
//!
//! A sled directory copied while it is being written can open empty, so an online backup
//! holds the store's write gate ([`Store::pause_writes`]) while it flushes, counts every
//! tree and copies the files; requests keep being served meanwhile (audit events queue up
//! in the writer's bounded queue). The copy is then opened as a store of its own and
//! checked: the same entry count in every tree, and every audit stream verifying to the same
//! chain head. It also holds the audit maintenance lock, so no KEK rotation, retention run or
//! erasure changes `keys/` or the buckets meanwhile (a backup waits for one that is running).
//! `seawall backup --to DIR` does the same for a stopped server.
//!
//! What is copied: the store, `keys/` and the top-level files of the data directory (the
//! admin token), not earlier backups, not the erasure ledger (`audit::ledger`), which a
//! restore must keep as it is so that erasures made after the backup are replayed, and not
//! the audit watermark (`audit::watermark`), which would hide the rollback a restore is.
//!
//! Default backups (`backups/<UTC time>`) are bounded: after each verified one, [`prune`]
//! deletes the oldest beyond `backup.keep`, since they share the volume with the store and a
//! full volume makes the capacity guard shorten audit retention. Named ones are left alone.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::audit::event::Stream;
use crate::audit::keys::Keyring;
use crate::audit::ledger;
use crate::audit::log::AuditLog;
use crate::audit::verify;
use crate::audit::watermark;
use crate::config::StoreConfig;
use crate::hex;
use crate::store::{self, Store, StoreError};

/// The folder inside the data directory that default backups go to.
pub const BACKUPS: &str = "backups";

/// How default backups are named: their UTC time.
const STAMP: &str = "%Y%m%dT%H%M%S%.3fZ";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The requested destination is not acceptable; nothing was written.
    #[error("{0}")]
    Destination(String),
    #[error("copying {path}: {source}")]
    Copy { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The copy was made but does not match the original; it is left for inspection.
    #[error("the backup in {path} did not verify: {reason}")]
    Verify { path: PathBuf, reason: String },
}

/// What a verified backup holds.
#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Entries per tree, equal in the original and the copy.
    pub trees: BTreeMap<String, usize>,
    /// Per audit stream: the number of events and the chain head the copy verified to.
    pub audit: BTreeMap<&'static str, StreamHead>,
    pub paused_ms: u64,
    pub total_ms: u64,
    /// Older backups in `backups/` deleted after this one, beyond `backup.keep`.
    pub pruned: Vec<PathBuf>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct StreamHead {
    pub events: u64,
    pub head: String,
}

/// Longest `to` a backup request may name, and longest name in it (ext4's and most others').
const MAX_DESTINATION_BYTES: usize = 1024;
const MAX_NAME_BYTES: usize = 255;

/// Resolves a destination given relative to the data directory; `None` picks
/// `backups/<UTC time>`. The destination must not exist yet.
pub fn destination(
    data_dir: &Path,
    requested: Option<&str>,
    now: SystemTime,
) -> Result<PathBuf, BackupError> {
    let bad = |message: &str| Err(BackupError::Destination(message.to_string()));
    let relative = match requested {
        Some(text) => {
            let path = Path::new(text);
            if text.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
                return bad("must be a relative path inside the data directory, without '..'");
            }
            let first = path
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default();
            if ["store", "keys"].contains(&first) {
                return bad("must not be inside the store or the keys folder");
            }
            // What the file system would refuse is refused here, as the caller's mistake.
            if text.chars().any(char::is_control) {
                return bad("must not contain control characters");
            }
            if text.len() > MAX_DESTINATION_BYTES
                || path
                    .components()
                    .any(|c| c.as_os_str().len() > MAX_NAME_BYTES)
            {
                return bad(&format!(
                    "must be at most {MAX_DESTINATION_BYTES} bytes, each name at most {MAX_NAME_BYTES}"
                ));
            }
            if let Some(file) = path
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .find(|a| {
                    let there = data_dir.join(a);
                    there.exists() && !there.is_dir()
                })
            {
                return bad(&format!("{} is a file, not a folder", file.display()));
            }
            path.to_path_buf()
        }
        None => {
            let stamp = chrono::DateTime::<chrono::Utc>::from(now)
                .format(STAMP)
                .to_string();
            let mut path = Path::new(BACKUPS).join(&stamp);
            let mut n = 1;
            while data_dir.join(&path).exists() {
                n += 1;
                path = Path::new(BACKUPS).join(format!("{stamp}-{n}"));
            }
            path
        }
    };
    let path = data_dir.join(relative);
    if path.exists() {
        return bad("already exists; backups never overwrite");
    }
    outside_what_is_copied(data_dir, &path).map_err(BackupError::Destination)?;
    Ok(path)
}

/// Refuses a destination inside the store or the keys however it is spelled (`..`, a
/// symbolic link): a copy into what is being copied would never end.
fn outside_what_is_copied(data_dir: &Path, to: &Path) -> Result<(), String> {
    let target = resolved(to).map_err(|e| format!("cannot tell where it is ({e})"))?;
    for copied in ["store", "keys"].map(|folder| data_dir.join(folder)) {
        if copied
            .canonicalize()
            .is_ok_and(|real| target.starts_with(real))
        {
            return Err(format!(
                "it is inside {}, which the backup copies",
                copied.display()
            ));
        }
    }
    Ok(())
}

/// Takes a backup of a running store into `to`. Blocking: run on `spawn_blocking`.
pub fn online(
    store: &Store,
    log: &AuditLog,
    data_dir: &Path,
    to: &Path,
) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    // `keys/` changes outside the store: a KEK rotation adds a key file and retires the old
    // ones. Rotation, like retention and erasure, runs under the maintenance lock, so holding
    // it keeps the copied keys those the copied store was wrapped with (a key retired between
    // listing and copying once failed a backup under load).
    let _maintenance = log.lock_maintenance();
    let paused = store.pause_writes();
    let pause_started = Instant::now();
    store.flush()?;
    let trees = counts(store)?;
    let heads = audit_heads(log)?;
    let bytes = copy_data_dir(data_dir, to)?;
    drop(paused);
    let paused_ms = pause_started.elapsed().as_millis() as u64;
    let audit = check_copy(to, &trees, &heads, &log.origin)?;
    record_success(store, SystemTime::now())?;
    Ok(BackupReport {
        path: to.to_path_buf(),
        bytes,
        trees,
        audit,
        paused_ms,
        total_ms: started.elapsed().as_millis() as u64,
        pruned: Vec::new(),
    })
}

/// Deletes the oldest backups in `backups/` beyond the newest `keep` (0 keeps all), so that
/// daily backups do not fill the volume and make the capacity guard shorten audit retention.
/// Only folders named as seawall names them count; anything else there is the operator's.
/// Returns what was deleted. Blocking.
pub fn prune(data_dir: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let folder = data_dir.join(BACKUPS);
    if keep == 0 || !folder.is_dir() {
        return Ok(Vec::new());
    }
    let mut ours: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(&folder)? {
        let entry = entry?;
        let named_by_us = entry.file_name().to_str().is_some_and(is_backup_name);
        if named_by_us && entry.file_type()?.is_dir() {
            ours.push(entry.path());
        }
    }
    // The names are UTC times, so their order is the order they were taken in.
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    let old: Vec<PathBuf> = ours.into_iter().take(excess).collect();
    for path in &old {
        fs::remove_dir_all(path)?;
    }
    Ok(old)
}

/// `20261127T162743.574Z`, or with `-N` when two backups fell in the same millisecond.
fn is_backup_name(name: &str) -> bool {
    let stamp = name.split_once('-').map_or(name, |(stamp, _)| stamp);
    chrono::NaiveDateTime::parse_from_str(stamp, STAMP).is_ok()
}

const LAST_SUCCESS: &[u8] = b"backup_last_success_unix";

/// Notes a verified backup in the store, for the backup-stale alert.
fn record_success(store: &Store, now: SystemTime) -> Result<(), StoreError> {
    let seconds = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let _writing = store.writing();
    store
        .tree(crate::store::trees::META)?
        .insert(LAST_SUCCESS, &seconds.to_be_bytes())?;
    store.flush()?;
    Ok(())
}

/// When the newest verified backup of this store finished (Unix seconds), if any.
pub fn last_success(store: &Store) -> Option<u64> {
    let bytes = store
        .tree(crate::store::trees::META)
        .ok()?
        .get(LAST_SUCCESS)
        .ok()??;
    Some(u64::from_be_bytes(bytes.as_ref().try_into().ok()?))
}

/// Backs up the data directory of a stopped server into `to` (any new folder outside its
/// store and keys). Blocking.
pub fn offline(
    store_config: &StoreConfig,
    origin: &str,
    to: &Path,
) -> Result<BackupReport, BackupError> {
    let data_dir = &store_config.data_dir;
    verify::require_data_dir(data_dir)?;
    if to.exists() {
        return Err(BackupError::Destination(format!(
            "{} already exists; backups never overwrite",
            to.display()
        )));
    }
    outside_what_is_copied(data_dir, to)
        .map_err(|why| BackupError::Destination(format!("{}: {why}", to.display())))?;
    let store = Store::open(store_config)?;
    let keyring =
        Arc::new(
            Keyring::open_existing(data_dir).map_err(|source| BackupError::Copy {
                path: data_dir.join("keys"),
                source,
            })?,
        );
    let log = AuditLog::open(&store, keyring, origin)?;
    let report = online(&store, &log, data_dir, to);
    drop(log);
    drop(store);
    report
}

/// Where `path` is, with symbolic links and `..` resolved as far as it exists; a relative path
/// starts at the working directory. The part that does not exist yet must be plain names.
fn resolved(path: &Path) -> io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                return Ok(missing
                    .iter()
                    .rev()
                    .fold(real, |path, name| path.join(name)));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(name), Some(parent)) = (existing.file_name(), existing.parent()) else {
                    return Err(e);
                };
                missing.push(name);
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

fn counts(store: &Store) -> Result<BTreeMap<String, usize>, StoreError> {
    store
        .tree_names()
        .into_iter()
        .map(|name| {
            let count = store::count(&store.tree(&name)?)?;
            Ok((name, count))
        })
        .collect()
}

fn audit_heads(log: &AuditLog) -> Result<BTreeMap<&'static str, StreamHead>, StoreError> {
    let mut heads = BTreeMap::new();
    for stream in Stream::ALL {
        let (_, head) = log.head(stream)?;
        heads.insert(
            stream.as_str(),
            StreamHead {
                events: log.count(stream)? as u64,
                head: hex::encode(&head),
            },
        );
    }
    Ok(heads)
}

/// Opens the copy and checks it against what was counted before copying.
fn check_copy(
    to: &Path,
    trees: &BTreeMap<String, usize>,
    heads: &BTreeMap<&'static str, StreamHead>,
    origin: &str,
) -> Result<BTreeMap<&'static str, StreamHead>, BackupError> {
    let failed = |reason: String| BackupError::Verify {
        path: to.to_path_buf(),
        reason,
    };
    let config = StoreConfig {
        data_dir: to.to_path_buf(),
        cache_capacity_bytes: 16 << 20,
    };
    let copy = Store::open(&config).map_err(|e| failed(format!("it does not open: {e}")))?;
    let copied = counts(&copy).map_err(|e| failed(format!("it does not read back: {e}")))?;
    for (name, count) in trees {
        let found = copied.get(name).copied().unwrap_or(0);
        if found != *count {
            return Err(failed(format!(
                "tree {name} has {found} entries instead of {count}"
            )));
        }
    }
    let keyring = Arc::new(
        Keyring::open_existing(to).map_err(|e| failed(format!("its keys do not open: {e}")))?,
    );
    let log = AuditLog::open(&copy, keyring, origin)?;
    let mut verified = BTreeMap::new();
    for stream in Stream::ALL {
        let pinned = log.keyring.signing_key().verifying_key();
        let report = verify::stream(&log, stream, &pinned)?;
        if let Some(broken) = report.broken {
            return Err(failed(format!(
                "audit stream {} breaks at {} ({})",
                stream.as_str(),
                broken.seq,
                broken.kind
            )));
        }
        let head = StreamHead {
            events: report.events,
            head: report.head,
        };
        if heads.get(stream.as_str()) != Some(&head) {
            return Err(failed(format!(
                "audit stream {} does not end where the original does",
                stream.as_str()
            )));
        }
        verified.insert(stream.as_str(), head);
    }
    Ok(verified)
}

/// Copies the store, the keys and the top-level files (the admin token) of `data_dir` into
/// a new directory `to`; earlier backups and anything else are left out. Returns the bytes
/// copied.
fn copy_data_dir(data_dir: &Path, to: &Path) -> Result<u64, BackupError> {
    // The erasure ledger stays out: restoring a backup must never replace a newer ledger. So
    // does the watermark: restored over a data directory, it would hide the rollback.
    let mut bytes = copy_dir(data_dir, to, &|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        entry.file_type().is_ok_and(|t| t.is_file())
            && name != ledger::FILE
            && !name.starts_with(watermark::FILE)
    })?;
    for folder in ["store", "keys"] {
        if data_dir.join(folder).is_dir() {
            bytes += copy_dir(&data_dir.join(folder), &to.join(folder), &|_| true)?;
        }
    }
    Ok(bytes)
}

/// Copies the entries of `from` that `include` accepts (recursively for folders) into `to`,
/// creating it. Files keep owner-only permissions, like the keys they may be.
fn copy_dir(
    from: &Path,
    to: &Path,
    include: &dyn Fn(&fs::DirEntry) -> bool,
) -> Result<u64, BackupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BackupError::Copy { path, source }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(to)
        .map_err(err(to))?;
    let mut bytes = 0;
    for entry in fs::read_dir(from).map_err(err(from))? {
        let entry = entry.map_err(err(from))?;
        if !include(&entry) {
            continue;
        }
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(err(&source))?;
        if kind.is_dir() {
            bytes += copy_dir(&source, &target, include)?;
        } else if kind.is_file() {
            bytes += fs::copy(&source, &target).map_err(err(&source))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(0o600))
                .map_err(err(&target))?;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_default_backups_are_kept() {
        let dir = tempfile::TempDir::new().unwrap();
        let folder = dir.path().join(BACKUPS);
        let names = [
            "20261126T235959.999Z",
            "20261127T000000.000Z",
            "20261127T000000.000Z-2",
            "20261128T101010.010Z",
        ];
        for name in names.iter().chain(&["nightly-copy"]) {
            fs::create_dir_all(folder.join(name).join("store")).unwrap();
        }
        fs::write(folder.join("20261101T000000.000Z.txt"), "a file").unwrap();
        assert!(prune(dir.path(), 0).unwrap().is_empty(), "0 keeps all");
        assert_eq!(
            prune(dir.path(), 2).unwrap(),
            [folder.join(names[0]), folder.join(names[1])]
        );
        let mut left: Vec<String> = fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20261101T000000.000Z.txt",
                "20261127T000000.000Z-2",
                "20261128T101010.010Z",
                "nightly-copy"
            ]
        );
        assert!(prune(dir.path(), 2).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn destinations_stay_inside_the_data_directory() {
        let dir = tempfile::TempDir::new().unwrap();
        let now = SystemTime::UNIX_EPOCH;
        let default = destination(dir.path(), None, now).unwrap();
        assert_eq!(default, dir.path().join("backups/19700101T000000.000Z"));
        fs::create_dir_all(&default).unwrap();
        assert_eq!(
            destination(dir.path(), None, now).unwrap(),
            dir.path().join("backups/19700101T000000.000Z-2")
        );
        assert_eq!(
            destination(dir.path(), Some("nightly/1"), now).unwrap(),
            dir.path().join("nightly/1")
        );
        fs::write(dir.path().join("notes.txt"), "a file").unwrap();
        fs::create_dir_all(dir.path().join("store")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("store"), dir.path().join("link")).unwrap();
        let long_name = "n".repeat(256);
        for bad in [
            "",
            "nul\0byte",
            "line\nbreak",
            long_name.as_str(),
            "notes.txt/x",
            "/tmp/x",
            "../x",
            "a/../../x",
            "store/x",
            "keys",
            "backups/19700101T000000.000Z",
            "link/x",
        ] {
            assert!(
                matches!(
                    destination(dir.path(), Some(bad), now),
                    Err(BackupError::Destination(_))
                ),
                "{bad}"
            );
        }
    }
}
