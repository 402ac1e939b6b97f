//! The embedded sled store: opened once per process, one tree per concern.
//!
//! `Store` owns the sled `Db` and knows its layout: the directory inside the data directory,
//! the schema version in the `meta` tree, and the names of the trees that other modules use.
//! It deliberately offers no typed records; each subsystem encodes its own values and only asks
//! the store for its tree. Every call into sled that may block on IO (flush, open) must come from
//! `spawn_blocking` or from startup code, never from an async task directly.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::StoreConfig;

/// The on-disk layout version this build writes. Bump it with a migration in `open`.
pub const SCHEMA_VERSION: u32 = 1;

const SCHEMA_KEY: &[u8] = b"schema_version";
const PROBE_KEY: &[u8] = b"health_probe";
/// When the process serving from this store started; removed by its shutdown.
const RUNNING_KEY: &[u8] = b"running_since";

/// Trees by concern; other modules ask for them by these names.
pub mod trees {
    /// Store-level metadata: schema version, health probe, the running mark.
    pub const META: &str = "meta";
    /// Flag records by name (JSON).
    pub const FLAGS: &str = "flags";
    /// Flag change history, keyed by name, 0x00, version (big-endian).
    pub const FLAG_HISTORY: &str = "flag_history";
    /// Segments by id (big-endian i64).
    pub const FLAG_SEGMENTS: &str = "flag_segments";
    /// Breaker state to restore, by breaker name (JSON).
    pub const BREAKERS: &str = "breakers";
    /// Breaker transitions, keyed by breaker name, 0x00, id (big-endian).
    pub const BREAKER_LOG: &str = "breaker_log";
    /// Runtime changes of rate-limit policies, by policy name (JSON).
    pub const RATELIMIT_OVERRIDES: &str = "ratelimit_overrides";
    /// Audit events live in per-stream, per-day trees named `audit/<stream>/<day>`.
    pub const AUDIT_BUCKET_PREFIX: &str = "audit/";
    /// Wrapped audit data keys by key id.
    pub const AUDIT_KEYS: &str = "audit_keys";
    /// pseudonym, stream, class, period → key id.
    pub const AUDIT_SUBJECT_KEYS: &str = "audit_subject_keys";
    /// pseudonym, stream, day → (): the buckets that hold a subject's events.
    pub const AUDIT_SUBJECTS: &str = "audit_subjects";
    /// Per stream: what retention removed, with the chain value to verify onward from.
    pub const AUDIT_ANCHORS: &str = "audit_anchors";
    /// Signed chain digests, keyed by stream and digest number (big-endian).
    pub const AUDIT_DIGESTS: &str = "audit_digests";
    /// Legal holds by id.
    pub const AUDIT_HOLDS: &str = "audit_holds";
    /// Retention's hold after the clock jumped forward (`audit::clock_guard`).
    pub const AUDIT_CLOCK: &str = "audit_clock";
    /// Answers of executed erasure requests, by idempotency key.
    pub const GDPR_REQUESTS: &str = "gdpr_requests";
}

/// Why the store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error(
        "the store in {path} is locked by another process: is another seawall running on this data directory?"
    )]
    Locked { path: PathBuf },
    #[error(
        "the store in {path} is corrupt ({detail}): restore the last verified backup (docs/runbook.md, \"Back up and restore\"), or move the directory away to start with an empty store"
    )]
    Corrupted { path: PathBuf, detail: String },
    #[error("cannot open the store in {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error(
        "the store in {path} has schema version {found}, newer than this build's {SCHEMA_VERSION}; run a newer seawall or restore a backup"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error("the store in {path} has a malformed schema version record")]
    BadSchema { path: PathBuf },
    #[error("store operation failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(
        "the audit keys this store was written with are not in {path} ({detail}): restore the keys folder that belongs with this store, from the same backup (docs/runbook.md, \"Back up and restore\"); new keys would leave its sealed data unreadable and its subjects unfindable for erasure"
    )]
    KeysNotThisStores { path: PathBuf, detail: String },
    #[error("{path} is not a seawall data directory: {missing} is missing")]
    NotADataDir { path: PathBuf, missing: PathBuf },
}

/// What went wrong opening sled, in the operator's terms: another process holding the lock
/// (sled says so only in an I/O error's text), a store that does not read back, or anything else.
fn open_error(dir: &Path, source: sled::Error) -> StoreError {
    let path = dir.to_path_buf();
    match source {
        sled::Error::Io(e)
            if e.kind() == io::ErrorKind::Other
                && e.to_string().contains("could not acquire lock") =>
        {
            StoreError::Locked { path }
        }
        sled::Error::Corruption { at, .. } => StoreError::Corrupted {
            path,
            detail: at.map_or("unreadable data".to_string(), |at| {
                format!("unreadable data at {at:?}")
            }),
        },
        source => StoreError::Open { path, source },
    }
}

/// The process's single handle on sled. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    dir: PathBuf,
    /// Writers hold it shared while they write; a backup holds it exclusively while it copies,
    /// because a copy taken during writes can open as an empty store.
    gate: Arc<RwLock<()>>,
}

impl Store {
    /// Opens (or creates) the store under `config.data_dir`, checking the schema version.
    ///
    /// Blocking: call at startup or from `spawn_blocking`.
    pub fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.clone(),
            source,
        })?;
        let dir = data_dir.join("store");
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(config.cache_capacity_bytes)
            .open()
            .map_err(|source| open_error(&dir, source))?;
        let store = Store {
            db,
            dir,
            gate: Arc::new(RwLock::new(())),
        };
        store.check_schema()?;
        Ok(store)
    }

    /// Opens the store, waiting up to `timeout` while another handle in this process still
    /// holds its file lock: sled's background flusher keeps a dropped store locked for up to
    /// its flush interval, so reopening a store just closed needs this.
    pub fn open_when_free(config: &StoreConfig, timeout: Duration) -> Result<Store, StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            match Store::open(config) {
                Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let meta = self.tree(trees::META)?;
        match meta.get(SCHEMA_KEY)? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())?;
                self.db.flush()?;
                Ok(())
            }
            Some(bytes) => {
                let bytes: [u8; 4] =
                    bytes
                        .as_ref()
                        .try_into()
                        .map_err(|_| StoreError::BadSchema {
                            path: self.dir.clone(),
                        })?;
                let found = u32::from_be_bytes(bytes);
                if found > SCHEMA_VERSION {
                    return Err(StoreError::TooNew {
                        path: self.dir.clone(),
                        found,
                    });
                }
                // Version 1 is the first layout; older versions do not exist yet, so there is
                // nothing to migrate. A future bump adds its migration here.
                Ok(())
            }
        }
    }

    /// Held while writing; blocks while a backup copies the store. Blocking.
    pub fn writing(&self) -> RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops every writer that uses [`Store::writing`] until the guard is dropped. Blocking.
    pub fn pause_writes(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Names of all trees, for the trees that are created per time bucket.
    pub fn tree_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect()
    }

    /// Drops a whole tree: how expired time buckets go.
    pub fn drop_tree(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.db.drop_tree(name)?)
    }

    /// The tree for one concern.
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree(name)?)
    }

    /// A crash-safe, monotonic (not contiguous) id: versions, sequence numbers.
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Makes every write so far durable. Blocking.
    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    /// Flushes on the blocking pool; what async code calls before acknowledging a change.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.flush().map(|_| ()))
            .await
            .expect("flush task does not panic")
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    /// Where sled's files live.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes sled uses on disk. Blocking (walks the files).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Marks the store as served by a process started at `now`, durably, and returns when the
    /// previous one started if it never cleared its mark: it ended without a shutdown (a
    /// crash, `kill -9`, power loss), or this store is a copy taken while it ran. Blocking.
    pub fn mark_running(&self, now: SystemTime) -> Result<Option<SystemTime>, StoreError> {
        let meta = self.tree(trees::META)?;
        let nanos = |time: SystemTime| {
            time.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
        };
        let previous = meta
            .insert(RUNNING_KEY, &nanos(now).to_be_bytes())?
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map(|bytes| UNIX_EPOCH + Duration::from_nanos(u64::from_be_bytes(bytes)));
        self.db.flush()?;
        Ok(previous)
    }

    /// Clears the running mark: the shutdown is complete but for the final flush. Blocking.
    pub fn mark_stopped(&self) -> Result<(), StoreError> {
        self.tree(trees::META)?.remove(RUNNING_KEY)?;
        Ok(())
    }

    /// Writes, flushes and reads back a probe record: the store's health check. Blocking.
    pub fn probe(&self) -> Result<Duration, StoreError> {
        let started = Instant::now();
        let meta = self.tree(trees::META)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_be_bytes();
        let writing = self.writing();
        meta.insert(PROBE_KEY, &stamp)?;
        drop(writing);
        self.db.flush()?;
        match meta.get(PROBE_KEY)? {
            Some(read) if read.as_ref() == stamp => Ok(started.elapsed()),
            _ => Err(StoreError::Sled(sled::Error::ReportableBug(
                "probe record did not read back".into(),
            ))),
        }
    }
}

/// Writes to one tree that recovery applies all or none of, and that are not applied at all
/// when there are none. sled pins its log for every `apply_batch`, even an empty one: it
/// writes out its current IO buffer and then one holding the batch manifest. Under audited
/// load, the empty batches of the audit writer's index trees were most of sled's disk writes.
#[derive(Default)]
pub struct Batch {
    writes: sled::Batch,
    len: usize,
}

impl Batch {
    pub fn insert(&mut self, key: impl Into<sled::IVec>, value: impl Into<sled::IVec>) {
        self.writes.insert(key, value);
        self.len += 1;
    }

    pub fn remove(&mut self, key: impl Into<sled::IVec>) {
        self.writes.remove(key);
        self.len += 1;
    }

    /// Applies the writes to `tree`, if there are any. Blocking.
    pub fn apply(self, tree: &sled::Tree) -> Result<(), StoreError> {
        if self.len > 0 {
            tree.apply_batch(self.writes)?;
        }
        Ok(())
    }
}

/// The entries of `tree` from `start` on, in key order, each looked up on its own: the way to
/// read a large tree.
///
/// sled's iterator keeps the leaf it is in and asks the page cache for it once per leaf, but
/// the cache (256 shards) evicts from a shard only after 64 requests for that shard's pages. A
/// long scan asks a few times per shard, so nothing was evicted and every leaf read stayed in
/// memory: verifying 1.25 million audit events took seawall from 60 to 318 MiB resident, and to
/// 509 MiB the second time. Looked up one by one, each entry is a request, the cache evicts as
/// the scan goes, and reading the same tree peaked at 71 MiB instead of 390, as fast.
pub fn scan_from(
    tree: &sled::Tree,
    start: &[u8],
) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + use<> {
    let tree = tree.clone();
    let mut first = Some(start.to_vec());
    let mut last: Option<sled::IVec> = None;
    std::iter::from_fn(move || {
        let found = match (first.take(), &last) {
            (Some(start), _) => tree.range(start..).next().transpose(),
            (None, Some(key)) => tree.get_gt(key),
            (None, None) => return None,
        };
        match found {
            Ok(Some((key, value))) => {
                last = Some(key.clone());
                Some(Ok((key, value)))
            }
            Ok(None) => {
                last = None;
                None
            }
            Err(e) => {
                last = None;
                Some(Err(e.into()))
            }
        }
    })
}

/// How many entries `tree` holds, counted as [`scan_from`] reads (sled's `len` iterates).
pub fn count(tree: &sled::Tree) -> Result<usize, StoreError> {
    scan_from(tree, &[]).try_fold(0, |n, entry| entry.map(|_| n + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_reads_every_entry_from_its_start_in_order_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let keys =
            |scan: &mut dyn Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>>| {
                scan.map(|entry| entry.unwrap().0.to_vec())
                    .collect::<Vec<_>>()
            };
        assert!(keys(&mut scan_from(&tree, &[])).is_empty());
        assert_eq!(count(&tree).unwrap(), 0);
        for key in [3u8, 1, 7, 5] {
            tree.insert([key], vec![key; 100]).unwrap();
        }
        let from = |start: &[u8]| keys(&mut scan_from(&tree, start));
        assert_eq!(from(&[]), [[1], [3], [5], [7]]);
        assert_eq!(from(&[3]), [[3], [5], [7]], "the start itself is included");
        assert_eq!(from(&[4]), [[5], [7]]);
        assert_eq!(from(&[8]), Vec::<[u8; 1]>::new());
        assert_eq!(count(&tree).unwrap(), 4);
        let mut scan = scan_from(&tree, &[]);
        assert_eq!(scan.next().unwrap().unwrap().1, vec![1; 100]);
        assert!(
            scan.by_ref().count() == 3 && scan.next().is_none(),
            "ended stays ended"
        );
    }

    #[test]
    fn an_empty_batch_writes_nothing_and_a_full_one_everything() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = sled::Config::new()
            .path(dir.path())
            .flush_every_ms(None)
            .open()
            .unwrap();
        let tree = db.open_tree("t").unwrap();
        tree.insert("a", "1").unwrap();
        // The log's size once everything is on disk. `flush`'s own count would miss the bytes
        // sled's IO threads had already written by the time it runs.
        let on_disk = |db: &sled::Db| {
            db.flush().unwrap();
            db.size_on_disk().unwrap()
        };
        let start = on_disk(&db);

        // What this type exists for: sled writes a batch manifest even for no writes.
        tree.apply_batch(sled::Batch::default()).unwrap();
        let after_raw = on_disk(&db);
        assert!(after_raw > start);
        Batch::default().apply(&tree).unwrap();
        assert_eq!(on_disk(&db), after_raw);

        let mut batch = Batch::default();
        batch.insert("b", "2");
        batch.remove("a");
        batch.apply(&tree).unwrap();
        assert!(on_disk(&db) > after_raw);
        assert_eq!(tree.get("a").unwrap(), None);
        assert_eq!(tree.get("b").unwrap().as_deref(), Some(&b"2"[..]));
    }
}
