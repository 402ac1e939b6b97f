//! The audit writer: events sealed, chained and group-committed to sled per second, in
//! batches as the writer task takes them from its queue. Each event looks like a
//! metadata-level request event: a header and one sealed client part keyed to one of 1,000
//! client addresses. Flushing is included once per batch, as under sustained load the
//! writer flushes at least every interval.
//!
//! After the timed runs it prints the write amplification of the same workload: the bytes of
//! the stored record groups per event against the bytes the process wrote to files per event
//! (`wchar` in `/proc/self/io`, sled's log and segment cleaning included).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use seawall::audit::event::{Draft, IdKind, Role, Stream, Subject};
use seawall::audit::keys::Keyring;
use seawall::audit::log::AuditLog;
use seawall::audit::writer::Writer;
use seawall::config::StoreConfig;
use seawall::store::Store;
use serde_json::json;

const BATCH: usize = 1024;

/// The allocator the seawall binary runs with (`src/main.rs`), so the figure is the server's.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn drafts(offset: usize) -> Vec<Draft> {
    (0..BATCH)
        .map(|i| {
            let ip = format!("10.0.{}.{}", (offset + i) % 1000 / 250, (offset + i) % 250);
            Draft::new(Stream::Access, "http.read", "success", "5f0c6a3e9d2b4c1a8e7f6d5c4b3a2918", SystemTime::now())
                .field("http", json!({"method": "GET", "route": "api", "status_code": 200, "request_body_size": 0, "response_body_size": 512}))
                .field("duration_us", json!(850))
                .field("actor", json!({"kind": "anonymous", "auth_method": "none"}))
                .field("client", json!({"net": "10.0.0.0/16"}))
                .part(
                    Role::Client,
                    Some(Subject { kind: IdKind::Ip, value: ip.clone() }),
                    json!({"address": ip, "user_agent": "bench/1.0", "path": "/api/items/42", "query": "page=2", "headers": {"accept": "application/json"}}),
                )
        })
        .collect()
}

fn open_log(dir: &std::path::Path) -> Arc<AuditLog> {
    let config = StoreConfig {
        data_dir: dir.to_path_buf(),
        cache_capacity_bytes: StoreConfig::DEFAULT_CACHE_CAPACITY_MB << 20,
    };
    let store = Store::open(&config).unwrap();
    let keyring = Arc::new(Keyring::open(dir).unwrap());
    Arc::new(AuditLog::open(&store, keyring, "bench").unwrap())
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::TempDir::new().unwrap();
    let mut writer = Writer::new(open_log(dir.path())).unwrap();
    let mut group = c.benchmark_group("audit writer");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    let mut offset = 0;
    group.bench_function("commit + flush, batches of 1024 metadata events", |bench| {
        bench.iter_custom(|iterations| {
            let batches: Vec<Vec<Draft>> = (0..iterations)
                .map(|_| {
                    offset += BATCH;
                    drafts(offset)
                })
                .collect();
            let started = Instant::now();
            for batch in batches {
                writer.commit(batch, SystemTime::now()).unwrap();
                writer.flush().unwrap();
            }
            started.elapsed()
        })
    });
    group.finish();
}

/// Bytes written to files by this process so far.
fn written_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines()
        .find_map(|line| line.strip_prefix("wchar: ")?.parse().ok())
        .unwrap_or(0)
}

/// Commits `batches` batches and prints what they take stored against what was written.
fn write_amplification(_: &mut Criterion) {
    let batches = if std::env::args().any(|a| a == "--bench") {
        200
    } else {
        4
    };
    let dir = tempfile::TempDir::new().unwrap();
    let log = open_log(dir.path());
    let mut writer = Writer::new(log.clone()).unwrap();
    let before = written_bytes();
    for n in 0..batches {
        writer.commit(drafts(n * BATCH), SystemTime::now()).unwrap();
        writer.flush().unwrap();
    }
    let written = written_bytes() - before;
    let mut stored = 0;
    for day in log.buckets(Stream::Access) {
        for group in log.bucket(Stream::Access, day).unwrap().iter() {
            stored += group.unwrap().1.len() as u64;
        }
    }
    let events = (batches * BATCH) as u64;
    println!(
        "audit writer, {events} metadata events: {} bytes stored per event, {} bytes written per event ({:.1}x)",
        stored / events,
        written / events,
        written as f64 / stored.max(1) as f64
    );
}

criterion_group!(benches, bench, write_amplification);
criterion_main!(benches);
