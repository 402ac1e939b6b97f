//! One rate-limit decision: seawall's GCRA table against governor's keyed limiter, in the same
//! run, with 1 and 100,000 distinct keys (round robin), quotas generous enough to admit. Also
//! the whole per-request decision seawall makes (shedder, hash, policies, header fields).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota as GovernorQuota, RateLimiter as Governor};
use seawall::ratelimit::{Gcra, Quota};

fn bench(c: &mut Criterion) {
    for keys in [1u64, 100_000] {
        let gcra = Gcra::new(200_000);
        let quota = Quota {
            quota: 1_000_000,
            window: Duration::from_secs(1),
        };
        let origin = Instant::now();
        let mut next = 0u64;
        c.bench_function(&format!("seawall gcra decision, {keys} keys"), |b| {
            b.iter(|| {
                next = (next + 1) % keys;
                let key = next.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                black_box(gcra.check(key, quota, origin.elapsed().as_nanos() as u64))
            })
        });

        let governor = Governor::keyed(GovernorQuota::per_second(
            NonZeroU32::new(1_000_000).unwrap(),
        ));
        let mut next = 0u64;
        c.bench_function(&format!("governor keyed decision, {keys} keys"), |b| {
            b.iter(|| {
                next = (next + 1) % keys;
                black_box(governor.check_key(&next).is_ok())
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
