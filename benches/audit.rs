//! The audit writer: events sealed, chained and group-committed to sled per second, in
//! batches as the writer task takes them from its queue. Each event looks like a
//! metadata-level request event: a header and one sealed client part keyed to one of 1,000
//! client addresses. Flushing is included once per batch, as under sustained load the
//! writer flushes at least every interval.

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

fn bench(c: &mut Criterion) {
    let dir = tempfile::TempDir::new().unwrap();
    let config = StoreConfig {
        data_dir: dir.path().to_path_buf(),
        cache_capacity_bytes: 64 << 20,
    };
    let store = Store::open(&config).unwrap();
    let keyring = Arc::new(Keyring::open(dir.path()).unwrap());
    let log = Arc::new(AuditLog::open(&store, keyring, "bench").unwrap());
    let mut writer = Writer::new(log).unwrap();
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

criterion_group!(benches, bench);
criterion_main!(benches);
