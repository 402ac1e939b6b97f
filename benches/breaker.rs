//! Breaker permission: one permit and its record, uncontended and with two threads contending
//! for the same breaker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use seawall::breaker::{Breaker, BreakerConfig, Outcome, WindowKind};

fn breaker() -> Arc<Breaker> {
    let config = BreakerConfig {
        window: WindowKind::Time(10),
        minimum_calls: 10,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 80.0,
        slow_call_duration: Duration::from_secs(5),
        half_open_permits: 3,
        wait_in_open: Duration::from_secs(30),
        wait_multiplier: 2.0,
        max_wait_in_open: Duration::from_secs(300),
        max_wait_in_half_open: Duration::from_secs(10),
    };
    Arc::new(Breaker::new("bench", config, Instant::now(), None))
}

fn permit_and_record(b: &Arc<Breaker>) {
    let now = Instant::now();
    let permit = b.try_acquire(now).expect("closed breakers permit");
    permit.record(Outcome::Success, Duration::from_millis(3), now);
}

fn bench(c: &mut Criterion) {
    let b = breaker();
    c.bench_function("breaker permit + record, uncontended", |bench| {
        bench.iter(|| permit_and_record(&b))
    });

    let b = breaker();
    c.bench_function("breaker permit + record, 2 threads contending", |bench| {
        bench.iter_custom(|iterations| {
            let started = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    let b = b.clone();
                    scope.spawn(move || {
                        for _ in 0..iterations {
                            permit_and_record(&b);
                        }
                    });
                }
            });
            // Both threads did `iterations` pairs each: report the time per pair.
            started.elapsed() / 2
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
