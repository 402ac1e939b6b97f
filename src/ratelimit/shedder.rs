//! Overload shedding: requests in flight against a cap, each priority level admitted only while
//! the count is below its share of the cap.
//!
//! Shares are monotone (`strict` lowest, `critical` the whole cap), so under rising load the
//! levels are shed strictly in order, `strict` first. The admission is one atomic increment
//! with a roll-back, so the count never passes a level's limit however many requests race.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Shedder {
    in_flight: AtomicUsize,
    max: usize,
}

/// A request's place in the count; released when dropped (when its response has been sent).
pub struct Slot(Arc<Shedder>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shedder {
    pub fn new(max: usize) -> Shedder {
        Shedder {
            in_flight: AtomicUsize::new(0),
            max,
        }
    }

    /// The request limit of a level admitted below `share` (0..=1) of the cap.
    pub fn limit(&self, share: f64) -> usize {
        (self.max as f64 * share).floor() as usize
    }

    /// A slot when fewer than `limit(share)` requests are in flight.
    pub fn admit(self: &Arc<Self>, share: f64) -> Option<Slot> {
        let limit = self.limit(share);
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        if before >= limit {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Slot(self.clone()))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARES: [f64; 5] = [0.5, 0.7, 0.85, 0.95, 1.0];

    /// Which of strict, low, medium, high, critical are shed with `n` requests in flight.
    fn shed_with(n: usize) -> Vec<bool> {
        let shedder = Arc::new(Shedder::new(100));
        let _held: Vec<Slot> = (0..n).map(|_| shedder.admit(1.0).expect("room")).collect();
        SHARES
            .iter()
            .map(|share| shedder.admit(*share).is_none())
            .collect()
    }

    #[test]
    fn levels_are_shed_in_order_at_their_thresholds() {
        assert_eq!(shed_with(49), [false, false, false, false, false]);
        assert_eq!(shed_with(50), [true, false, false, false, false]);
        assert_eq!(shed_with(70), [true, true, false, false, false]);
        assert_eq!(shed_with(85), [true, true, true, false, false]);
        assert_eq!(shed_with(95), [true, true, true, true, false]);
        assert_eq!(shed_with(100), [true, true, true, true, true]);
    }

    #[test]
    fn the_shed_set_only_grows_with_load() {
        let mut previous = vec![false; 5];
        for n in 0..=100 {
            let shed = shed_with(n);
            assert!(
                previous
                    .iter()
                    .zip(&shed)
                    .all(|(before, now)| !before || *now),
                "at {n}"
            );
            assert!(
                shed.windows(2).all(|w| w[0] || !w[1]),
                "a suffix from strict at {n}: {shed:?}"
            );
            previous = shed;
        }
    }

    #[test]
    fn racing_requests_never_pass_a_limit() {
        let shedder = Arc::new(Shedder::new(100));
        let admitted = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if let Some(slot) = shedder.admit(0.5) {
                            admitted.lock().unwrap().push(slot);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.lock().unwrap().len(), 50);
        drop(admitted);
        assert_eq!(shedder.in_flight(), 0, "slots release on drop");
    }
}
