//! Sliding windows of call outcomes: the last N calls, or the last N one-second buckets.
//!
//! A window only counts; the breaker decides what the counts mean.

use std::time::Instant;

/// What one finished call contributes to the rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub failed: bool,
    pub slow: bool,
}

/// Totals over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u32,
    pub failed: u32,
    pub slow: u32,
    pub slow_failed: u32,
}

impl Counts {
    fn add(&mut self, mark: Mark) {
        self.total += 1;
        self.failed += mark.failed as u32;
        self.slow += mark.slow as u32;
        self.slow_failed += (mark.slow && mark.failed) as u32;
    }

    fn remove(&mut self, mark: Mark) {
        self.total -= 1;
        self.failed -= mark.failed as u32;
        self.slow -= mark.slow as u32;
        self.slow_failed -= (mark.slow && mark.failed) as u32;
    }

    fn merge(&mut self, other: &Counts) {
        self.total += other.total;
        self.failed += other.failed;
        self.slow += other.slow;
        self.slow_failed += other.slow_failed;
    }

    /// (failure rate, slow-call rate) in percent.
    pub fn rates(&self) -> (f64, f64) {
        if self.total == 0 {
            return (0.0, 0.0);
        }
        let total = self.total as f64;
        (
            self.failed as f64 * 100.0 / total,
            self.slow as f64 * 100.0 / total,
        )
    }
}

/// The shape of a window, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `n` seconds (the current second and the `n - 1` before it).
    Time(u32),
}

#[derive(Debug, Clone)]
pub enum Window {
    Count {
        ring: Vec<Option<Mark>>,
        next: usize,
        counts: Counts,
    },
    Time {
        origin: Instant,
        buckets: Vec<(u64, Counts)>,
    },
}

impl Window {
    pub fn new(kind: WindowKind, origin: Instant) -> Window {
        match kind {
            WindowKind::Count(n) => Window::Count {
                ring: vec![None; n.max(1) as usize],
                next: 0,
                counts: Counts::default(),
            },
            WindowKind::Time(n) => Window::Time {
                origin,
                buckets: vec![(u64::MAX, Counts::default()); n.max(1) as usize],
            },
        }
    }

    pub fn record(&mut self, mark: Mark, now: Instant) {
        match self {
            Window::Count { ring, next, counts } => {
                if let Some(evicted) = ring[*next].replace(mark) {
                    counts.remove(evicted);
                }
                counts.add(mark);
                *next = (*next + 1) % ring.len();
            }
            Window::Time { origin, buckets } => {
                let second = second_of(*origin, now);
                let slot = (second % buckets.len() as u64) as usize;
                if buckets[slot].0 != second {
                    buckets[slot] = (second, Counts::default());
                }
                buckets[slot].1.add(mark);
            }
        }
    }

    pub fn counts(&self, now: Instant) -> Counts {
        match self {
            Window::Count { counts, .. } => *counts,
            Window::Time { origin, buckets } => {
                let second = second_of(*origin, now);
                let oldest = second.saturating_sub(buckets.len() as u64 - 1);
                let mut total = Counts::default();
                for (at, counts) in buckets {
                    if *at != u64::MAX && *at >= oldest && *at <= second {
                        total.merge(counts);
                    }
                }
                total
            }
        }
    }
}

fn second_of(origin: Instant, now: Instant) -> u64 {
    now.saturating_duration_since(origin).as_secs()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FAIL: Mark = Mark {
        failed: true,
        slow: false,
    };
    const OK: Mark = Mark {
        failed: false,
        slow: false,
    };

    #[test]
    fn count_windows_evict_the_oldest_call() {
        let t = Instant::now();
        let mut w = Window::new(WindowKind::Count(3), t);
        for m in [FAIL, FAIL, OK] {
            w.record(m, t);
        }
        assert_eq!(w.counts(t).failed, 2);
        w.record(OK, t);
        assert_eq!((w.counts(t).total, w.counts(t).failed), (3, 1));
    }

    #[test]
    fn time_windows_forget_seconds_that_left_the_window() {
        let t = Instant::now();
        let mut w = Window::new(WindowKind::Time(10), t);
        for _ in 0..4 {
            w.record(FAIL, t);
        }
        assert_eq!(
            w.counts(t + Duration::from_secs(9)).total,
            4,
            "second 0 is still inside at second 9"
        );
        assert_eq!(
            w.counts(t + Duration::from_secs(10)).total,
            0,
            "and gone at second 10"
        );
        w.record(OK, t + Duration::from_secs(11));
        assert_eq!(
            w.counts(t + Duration::from_secs(11)),
            Counts {
                total: 1,
                failed: 0,
                slow: 0,
                slow_failed: 0
            }
        );
    }
}
