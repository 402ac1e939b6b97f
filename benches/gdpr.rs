//! GDPR and integrity at scale: the time to erase one subject among 1,000,000 stored events,
//! to export them, to verify every chain and digest, and to rotate the KEK.
//!
//! `cargo bench --bench gdpr` writes 1,000,000 metadata-level request events (one sealed
//! client part each, keyed to one of 10,000 client addresses, so each subject has about 100
//! events) through the real writer, signing digests every 1,000 events, then measures. Under
//! `cargo test` (no `--bench` argument) it runs the same steps on 2,000 events (20 subjects) as a
//! smoke test.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use seawall::audit::event::{Draft, IdKind, Role, Stream, Subject};
use seawall::audit::keys::Keyring;
use seawall::audit::ledger::Ledger;
use seawall::audit::log::AuditLog;
use seawall::audit::writer::Writer;
use seawall::audit::{AuditConfig, gdpr, shred, verify};
use seawall::config::StoreConfig;
use seawall::store::Store;
use serde_json::json;

/// Each subject has this many events.
const PER_SUBJECT: usize = 100;
const BATCH: usize = 1024;

fn event(n: usize, subjects: usize) -> Draft {
    let ip = address(n % subjects);
    Draft::new(
        Stream::Access,
        "http.read",
        "success",
        "5f0c6a3e9d2b4c1a8e7f6d5c4b3a2918",
        SystemTime::now(),
    )
    .field(
        "http",
        json!({"method": "GET", "route": "api", "status_code": 200, "request_body_size": 0, "response_body_size": 512}),
    )
    .field("client", json!({"net": "10.0.0.0/16"}))
    .part(
        Role::Client,
        Some(Subject {
            kind: IdKind::Ip,
            value: ip.clone(),
        }),
        json!({"address": ip, "user_agent": "bench/1.0", "path": "/api/items/42"}),
    )
}

fn address(n: usize) -> String {
    format!("10.{}.{}.{}", n / 65_536, n / 256 % 256, n % 256)
}

fn config() -> AuditConfig {
    AuditConfig {
        origin: "bench".into(),
        ..AuditConfig::default()
    }
}

fn timed<T>(what: &str, results: &mut BTreeMap<String, Duration>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    results.insert(what.to_string(), started.elapsed());
    out
}

fn main() {
    let events: usize = if std::env::args().any(|a| a == "--bench") {
        1_000_000
    } else {
        2_000
    };
    let subjects = events / PER_SUBJECT;
    let dir = tempfile::TempDir::new().unwrap();
    let store = Store::open(&StoreConfig {
        data_dir: dir.path().to_path_buf(),
        cache_capacity_bytes: StoreConfig::DEFAULT_CACHE_CAPACITY_MB << 20,
    })
    .unwrap();
    let keyring = Arc::new(Keyring::open(dir.path()).unwrap());
    let log = Arc::new(AuditLog::open(&store, keyring, "bench").unwrap());
    let config = config();
    let mut writer = Writer::new(log.clone()).unwrap();
    let mut results = BTreeMap::new();
    timed("write (with digests)", &mut results, || {
        let mut n = 0;
        while n < events {
            let batch: Vec<Draft> = (n..(n + BATCH).min(events))
                .map(|n| event(n, subjects))
                .collect();
            n += batch.len();
            writer.commit(batch, SystemTime::now()).unwrap();
            writer.sign_due(SystemTime::now(), &config.digests).unwrap();
        }
        writer.flush().unwrap();
    });
    let pinned = log.keyring.signing_key().verifying_key();
    let report = timed("verify all streams", &mut results, || {
        verify::streams(&log, &Stream::ALL, &pinned).unwrap()
    });
    assert!(report.ok, "{report:?}");
    let access = &report.streams[1];
    assert_eq!(access.events as usize, events);

    let subject = [Subject {
        kind: IdKind::Ip,
        value: address(subjects / 2),
    }];
    let exported = timed("export one subject", &mut results, || {
        let found = gdpr::find(&log, &subject).unwrap();
        gdpr::export(&log, &config, &found, SystemTime::now())
            .unwrap()
            .unwrap()
    });
    let theirs = exported["events"].as_array().unwrap().len();
    assert_eq!(theirs, PER_SUBJECT);
    let ledger = Ledger::new(dir.path());
    let erased = timed("erase one subject", &mut results, || {
        let found = gdpr::find(&log, &subject).unwrap();
        let plan = gdpr::plan(&log, &config, &found).unwrap();
        gdpr::execute(&log, &ledger, &found, &plan, "bench", SystemTime::now()).unwrap()
    });
    assert_eq!(erased.parts_dropped as usize, theirs);
    let rotation = timed("rotate the KEK", &mut results, || {
        shred::rotate_kek(&log).unwrap()
    });
    let report = timed("verify all streams after erasure", &mut results, || {
        verify::streams(&log, &Stream::ALL, &pinned).unwrap()
    });
    assert!(report.ok && report.streams[1].parts_dropped as usize == theirs);

    println!(
        "{events} events, {subjects} subjects ({theirs} events each), {} keys rewrapped",
        rotation.keys_rewrapped
    );
    for (what, took) in &results {
        println!("{what:>34}: {:>9.1} ms", took.as_secs_f64() * 1000.0);
    }
    let write = results["write (with digests)"].as_secs_f64();
    println!(
        "{:>34}: {:>9.0} events/s",
        "write rate",
        events as f64 / write
    );
}
