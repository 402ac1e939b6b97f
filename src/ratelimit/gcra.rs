//! GCRA (the generic cell rate algorithm) per client key, in a bounded, sharded table.
//!
//! A quota of `q` requests per `w` seconds has emission interval `T = w / q` and burst `q`.
//! Each key keeps one number, its theoretical arrival time (TAT). A request at `now` is admitted
//! when `max(TAT, now) - now <= (q - 1) * T`, and then moves TAT forward by `T`; a refused
//! request changes nothing. Refill is smooth, `Retry-After` is exact, and there is no double
//! burst at a window boundary. Time is an argument (nanoseconds since an origin the caller
//! keeps), so the algorithm is tested on a fake clock.
//!
//! The table is bounded: a key whose TAT has passed is indistinguishable from a fresh key and is
//! dropped by [`Gcra::sweep`]; when a shard is full even after sweeping it, new keys share one
//! overflow state, so memory stays bounded and fairness, not availability, degrades.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::time::Duration;

const SHARDS: usize = 16;

/// A quota: `quota` requests per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub quota: u32,
    pub window: Duration,
}

impl Quota {
    fn interval(self) -> u64 {
        (self.window.as_nanos() / self.quota.max(1) as u128) as u64
    }

    /// How far ahead of `now` the TAT may run and still admit one more request.
    fn tolerance(self) -> u64 {
        self.interval() * (self.quota.max(1) as u64 - 1)
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub admitted: bool,
    /// Requests that would still be admitted right now.
    pub remaining: u32,
    /// Until at least one more request is admitted (zero when some already would be).
    pub retry_after: Duration,
    /// Until the next unit of quota is added (the `t` of the `RateLimit` field).
    pub next_unit: Duration,
    /// Until the quota is completely restored.
    pub reset: Duration,
}

pub struct Gcra {
    shards: Vec<Mutex<Shard>>,
    /// Keys per shard before new keys spill into the overflow state.
    shard_capacity: usize,
}

/// Keys arrive already hashed (uniform 64-bit values), so the table uses them as they are.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[derive(Default)]
struct Shard {
    tats: HashMap<u64, u64, BuildHasherDefault<KeyHasher>>,
    /// The state shared by keys that did not fit.
    overflow: u64,
    /// When a full shard was last swept for room; a full shard sweeps at most once a second,
    /// so a flood of new keys costs one sweep, not one per key.
    swept_at: Option<u64>,
}

const SWEEP_SPACING: u64 = 1_000_000_000;

impl Gcra {
    /// A table holding at most about `max_keys` keys.
    pub fn new(max_keys: usize) -> Gcra {
        Gcra {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity: max_keys.div_ceil(SHARDS).max(1),
        }
    }

    /// Decides one request of `key` (a hash of the client key) at `now` under `quota`.
    pub fn check(&self, key: u64, quota: Quota, now: u64) -> Verdict {
        let mut shard = self.shards[(key % SHARDS as u64) as usize]
            .lock()
            .expect("gcra lock");
        let due = shard.swept_at.is_none_or(|at| now >= at + SWEEP_SPACING);
        if due && !shard.tats.contains_key(&key) && shard.tats.len() >= self.shard_capacity {
            shard.tats.retain(|_, tat| *tat > now);
            shard.swept_at = Some(now);
        }
        let shard = &mut *shard;
        let fits = shard.tats.contains_key(&key) || shard.tats.len() < self.shard_capacity;
        let tat = match fits {
            true => shard.tats.entry(key).or_insert(0),
            false => &mut shard.overflow,
        };
        decide(tat, quota, now)
    }

    /// Drops keys whose state equals a fresh key's. Returns how many were dropped.
    pub fn sweep(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().expect("gcra lock");
                let before = shard.tats.len();
                shard.tats.retain(|_, tat| *tat > now);
                if shard.tats.capacity() > 4 * shard.tats.len().max(64) {
                    shard.tats.shrink_to_fit();
                }
                before - shard.tats.len()
            })
            .sum()
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("gcra lock").tats.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn decide(tat: &mut u64, quota: Quota, now: u64) -> Verdict {
    let interval = quota.interval();
    let tolerance = quota.tolerance();
    let start = (*tat).max(now);
    let ahead = start - now;
    if ahead > tolerance {
        let wait = ahead - tolerance;
        return Verdict {
            admitted: false,
            remaining: 0,
            retry_after: Duration::from_nanos(wait),
            next_unit: Duration::from_nanos(wait),
            reset: Duration::from_nanos(ahead),
        };
    }
    *tat = start + interval;
    let ahead = *tat - now;
    // Room left below the limit, in whole intervals, and the part of an interval already refilled.
    let room = tolerance + interval - ahead;
    let remaining = (room / interval.max(1)) as u32;
    let partial = room % interval.max(1);
    Verdict {
        admitted: true,
        remaining,
        retry_after: Duration::ZERO,
        next_unit: Duration::from_nanos(interval - partial),
        reset: Duration::from_nanos(ahead),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn per_minute(quota: u32) -> Quota {
        Quota {
            quota,
            window: Duration::from_secs(60),
        }
    }

    fn admitted(g: &Gcra, key: u64, quota: Quota, times: impl IntoIterator<Item = u64>) -> usize {
        times
            .into_iter()
            .filter(|t| g.check(key, quota, *t).admitted)
            .count()
    }

    #[test]
    fn strict_admits_ten_and_the_eleventh_waits_six_seconds() {
        let g = Gcra::new(1000);
        let strict = per_minute(10);
        for i in 0..10 {
            let v = g.check(1, strict, 0);
            assert!(v.admitted);
            assert_eq!(v.remaining, 9 - i);
        }
        let eleventh = g.check(1, strict, 0);
        assert!(!eleventh.admitted);
        assert_eq!(eleventh.retry_after, Duration::from_secs(6));
        assert_eq!(eleventh.reset, Duration::from_secs(60));
        let early = g.check(1, strict, 5_900_000_000);
        assert!(!early.admitted);
        assert_eq!(
            early.retry_after,
            Duration::from_millis(100),
            "Retry-After rounds this up to 1"
        );
        assert!(g.check(1, strict, 6 * S).admitted);
        assert_eq!(
            g.check(1, strict, 6 * S).retry_after,
            Duration::from_secs(6)
        );
    }

    #[test]
    fn refused_requests_consume_nothing() {
        let g = Gcra::new(1000);
        let strict = per_minute(10);
        admitted(&g, 1, strict, [0; 10]);
        assert!(g.check(1, strict, 6 * S).admitted);
        assert_eq!(admitted(&g, 1, strict, [6 * S; 1000]), 0);
        assert!(g.check(1, strict, 12 * S).admitted);
    }

    #[test]
    fn a_steady_two_per_second_on_low_admits_fifty_nine_in_a_minute() {
        let g = Gcra::new(1000);
        let times = (0..120).map(|i| i * S / 2);
        assert_eq!(admitted(&g, 1, per_minute(30), times), 59);
    }

    #[test]
    fn there_is_no_double_burst_at_a_window_boundary() {
        let g = Gcra::new(1000);
        let strict = per_minute(10);
        assert_eq!(admitted(&g, 1, strict, [59_900_000_000; 10]), 10);
        assert_eq!(admitted(&g, 1, strict, [60_100_000_000; 10]), 0);
    }

    #[test]
    fn idle_restores_the_full_burst_and_keys_are_separate() {
        let g = Gcra::new(1000);
        let strict = per_minute(10);
        assert_eq!(admitted(&g, 1, strict, [0; 20]), 10);
        assert_eq!(
            admitted(&g, 2, strict, [0; 20]),
            10,
            "another key has its own quota"
        );
        assert_eq!(admitted(&g, 1, strict, [60 * S; 20]), 10);
    }

    #[test]
    fn admitted_answers_say_when_the_next_unit_comes() {
        let g = Gcra::new(1000);
        let medium = per_minute(100);
        let first = g.check(1, medium, 0);
        assert_eq!(
            (first.remaining, first.next_unit, first.reset),
            (99, Duration::from_millis(600), Duration::from_millis(600))
        );
        let later = g.check(1, medium, 300_000_000);
        assert_eq!(
            later.remaining, 98,
            "half an interval refilled is not a whole unit"
        );
        assert_eq!(later.next_unit, Duration::from_millis(300));
    }

    #[test]
    fn a_million_keys_stay_within_the_cap() {
        let g = Gcra::new(10_000);
        let strict = per_minute(10);
        for key in 0..1_000_000u64 {
            g.check(key.wrapping_mul(0x9E37_79B9_7F4A_7C15), strict, 0);
        }
        assert!(g.len() <= 10_000 + SHARDS, "{} keys tracked", g.len());
        assert!(g.sweep(61 * S) > 0);
        assert_eq!(g.len(), 0, "a minute later every state is fresh again");
    }
}
