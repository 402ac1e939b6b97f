//! `kill -9` while the store is being written: it reopens without repair and everything that
//! was flushed is there.
//!
//! The writer is this test binary itself, re-run as a child process with `WRITER_DIR` set, so
//! the kill hits a real process in the middle of sled writes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};

use seawall::config::StoreConfig;
use seawall::store::{Store, StoreError};
use tempfile::TempDir;

use crate::support::{PROCESS_TIMEOUT, Seawall, run_until_exit};

const WRITER_DIR: &str = "SEAWALL_TEST_WRITER_DIR";
const TREE: &str = "crash_test";

fn open(dir: &std::path::Path) -> Store {
    Store::open_when_free(
        &StoreConfig {
            data_dir: dir.to_path_buf(),
            cache_capacity_bytes: 16 << 20,
        },
        PROCESS_TIMEOUT,
    )
    .expect("store opens")
}

fn value(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat(200)).into_bytes()
}

/// In a child process (with `WRITER_DIR` set): writes forever, reporting each flush. Run
/// directly: checks that flushed writes survive a clean reopen.
#[test]
fn store_writer() {
    let Ok(dir) = std::env::var(WRITER_DIR) else {
        let dir = TempDir::new().unwrap();
        {
            let store = open(dir.path());
            store
                .tree(TREE)
                .unwrap()
                .insert(1u64.to_be_bytes(), value(1))
                .unwrap();
            store.flush().unwrap();
        }
        assert_eq!(
            open(dir.path())
                .tree(TREE)
                .unwrap()
                .get(1u64.to_be_bytes())
                .unwrap()
                .as_deref(),
            Some(&value(1)[..])
        );
        return;
    };
    let store = open(std::path::Path::new(&dir));
    let tree = store.tree(TREE).unwrap();
    for i in 0u64.. {
        tree.insert(i.to_be_bytes(), value(i)).unwrap();
        if i % 25 == 24 {
            store.flush().unwrap();
            println!("flushed {i}");
        }
    }
}

#[test]
fn kill_9_under_writes_loses_nothing_that_was_flushed() {
    let dir = TempDir::new().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_recovery::store_writer",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("flushed ") {
                let _ = tx.send(n.parse::<u64>().unwrap());
            }
        }
    });
    let mut flushed = 0;
    while flushed < 2_000 {
        flushed = rx
            .recv_timeout(PROCESS_TIMEOUT)
            .expect("the writer keeps flushing");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let store = open(dir.path());
    let tree = store.tree(TREE).unwrap();
    for i in 0..=flushed {
        assert_eq!(
            tree.get(i.to_be_bytes()).unwrap().as_deref(),
            Some(&value(i)[..]),
            "record {i} of {flushed} flushed"
        );
    }
}

/// research/health-metrics-fly.md §5.4: a store sled cannot read back (here the first 4 KiB of
/// its log overwritten) stops the start with a message saying so and where the way back is,
/// not a hint at another process, and without a panic.
#[test]
fn a_corrupt_store_stops_the_start_and_names_the_way_back() {
    // A store as seawall leaves it after a restart: written, flushed and closed twice, so that
    // sled has written a snapshot. Without one, the same damage opened as an empty store (the
    // limitation ARCHITECTURE.md names).
    let dir = Arc::new(TempDir::new().unwrap());
    let mut data = dir.path().to_path_buf();
    for _ in 0..2 {
        let mut run = Seawall::start_in(dir.clone(), "", &[]);
        run.signal("TERM");
        assert!(run.wait_exit(PROCESS_TIMEOUT).success());
        data = run.data_dir();
    }
    let log = data.join("store").join("db");
    let mut file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, &[0xff; 4096]).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let config = StoreConfig {
        data_dir: data.clone(),
        cache_capacity_bytes: 16 << 20,
    };
    match Store::open_when_free(&config, PROCESS_TIMEOUT) {
        Err(e @ StoreError::Corrupted { .. }) => {
            assert!(
                e.to_string().contains("restore the last verified backup"),
                "{e}"
            )
        }
        Err(e) => panic!("not reported as corrupt: {e}"),
        Ok(_) => panic!("a store with an overwritten log opened"),
    }

    let config_file = dir.path().join("seawall.toml");
    std::fs::write(&config_file, "").unwrap();
    let (code, stderr) = run_until_exit(dir.path(), &config_file, &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is corrupt"), "{stderr}");
    assert!(stderr.contains("\"Back up and restore\""), "{stderr}");
    assert!(!stderr.contains("another"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
