//! Retention's guard against a wall clock that jumps forward while seawall runs.
//!
//! Retention reads expiry off the wall clock, and what it removes is gone for good (a destroyed
//! key, a dropped bucket). `retention` itself refuses a clock that is behind the store; this
//! guard catches the other way. Between two checks the wall clock should advance as the
//! monotonic clock does; when it ran ahead by more than the tolerance (an NTP step, a clock set
//! by hand, a machine resumed from suspend), pruning waits [`HOLD`], so the operator alerted by
//! `sys.retention.refused` has a day to tell a wrong clock from a right one before anything
//! expires early. The hold's end is stored, so a restart does not lift it, and a clock set back
//! moves it back too. A jump while seawall is stopped cannot be told from downtime and is not
//! detected.
//!
//! What is pruned is `retention`'s; `jobs` asks this guard before each run and records the
//! refusal.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::audit::event;
use crate::store::{Store, StoreError, trees};

/// How long pruning waits after a forward jump, by the clock after the jump.
pub const HOLD: Duration = Duration::from_secs(86_400);

/// Where the hold's end is stored: nanoseconds since the epoch, big-endian.
const HOLD_UNTIL: &[u8] = b"retention_hold_until";

/// Why a retention run prunes nothing: the clock jumped forward, now or within [`HOLD`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    /// How far the wall clock ran ahead of the monotonic clock since the previous check, when
    /// this check is the one that saw the jump.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jumped_ms: Option<u64>,
    /// When pruning resumes, by the wall clock (RFC 3339, UTC).
    pub until: String,
}

pub struct ClockGuard {
    tolerance: Duration,
    /// The wall and monotonic clocks at the previous check.
    last: Option<(SystemTime, Instant)>,
    tree: sled::Tree,
    store: Store,
}

impl ClockGuard {
    /// Opens the stored hold. Blocking (startup).
    pub fn open(store: &Store, tolerance: Duration) -> Result<ClockGuard, StoreError> {
        Ok(ClockGuard {
            tolerance,
            last: None,
            tree: store.tree(trees::AUDIT_CLOCK)?,
            store: store.clone(),
        })
    }

    /// Whether retention must wait as of `wall`, read at `at`. A jump ahead seen now starts a
    /// hold (stored and flushed before this answers); a stored hold lasts until its end, which a
    /// clock set back (a wrong jump corrected) moves back with it, so a hold lasts a day of real
    /// time either way. Blocking.
    pub fn check(&mut self, wall: SystemTime, at: Instant) -> Result<Option<Held>, StoreError> {
        let moved = drift(self.last.replace((wall, at)), wall, at)
            .filter(|drift| drift.size() > self.tolerance);
        if let Some(Drift::Ahead(jumped)) = moved {
            let until = wall + HOLD;
            self.store_hold(until)?;
            return Ok(Some(Held {
                jumped_ms: Some(u64::try_from(jumped.as_millis()).unwrap_or(u64::MAX)),
                until: event::rfc3339_nanos(until),
            }));
        }
        let Some(mut until) = self.stored_hold()? else {
            return Ok(None);
        };
        if let Some(Drift::Behind(back)) = moved {
            // Stored ends count from 1970; a clock set back beyond must not panic here.
            until = until
                .checked_sub(back)
                .unwrap_or(UNIX_EPOCH)
                .max(UNIX_EPOCH);
            self.store_hold(until)?;
        }
        if wall < until {
            return Ok(Some(Held {
                jumped_ms: None,
                until: event::rfc3339_nanos(until),
            }));
        }
        let _writing = self.store.writing();
        self.tree.remove(HOLD_UNTIL)?;
        Ok(None)
    }

    fn stored_hold(&self) -> Result<Option<SystemTime>, StoreError> {
        let Some(stored) = self.tree.get(HOLD_UNTIL)? else {
            return Ok(None);
        };
        let nanos: [u8; 8] = stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt("retention hold".into()))?;
        Ok(Some(
            UNIX_EPOCH + Duration::from_nanos(u64::from_be_bytes(nanos)),
        ))
    }

    fn store_hold(&self, until: SystemTime) -> Result<(), StoreError> {
        {
            let _writing = self.store.writing();
            self.tree
                .insert(HOLD_UNTIL, &epoch_nanos(until).to_be_bytes())?;
        }
        self.store.flush()?;
        Ok(())
    }
}

/// How the wall clock moved against the monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drift {
    Ahead(Duration),
    Behind(Duration),
}

impl Drift {
    fn size(self) -> Duration {
        match self {
            Drift::Ahead(d) | Drift::Behind(d) => d,
        }
    }
}

/// How far the wall clock moved from where the monotonic clock says it should be since
/// `last`; `None` on the first check.
fn drift(last: Option<(SystemTime, Instant)>, wall: SystemTime, at: Instant) -> Option<Drift> {
    let (last_wall, last_at) = last?;
    let expected = last_wall + at.saturating_duration_since(last_at);
    Some(match wall.duration_since(expected) {
        Ok(ahead) => Drift::Ahead(ahead),
        Err(behind) => Drift::Behind(behind.duration()),
    })
}

/// Until the year 2554, which is far enough for a hold's end.
fn epoch_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3_600);

    fn store(dir: &tempfile::TempDir) -> Store {
        Store::open(&crate::config::StoreConfig {
            data_dir: dir.path().to_path_buf(),
            cache_capacity_bytes: 16 << 20,
        })
        .unwrap()
    }

    /// A fixed wall time to start from (November 2023).
    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    /// A guard that has made its first check, at [`start`]; a first check never holds.
    fn checked_once() -> (tempfile::TempDir, ClockGuard, SystemTime, Instant) {
        let dir = tempfile::tempdir().unwrap();
        let mut guard = ClockGuard::open(&store(&dir), HOUR).unwrap();
        let (wall, at) = (start(), Instant::now());
        assert_eq!(guard.check(wall, at).unwrap(), None, "first check");
        (dir, guard, wall, at)
    }

    #[test]
    fn the_wall_clock_is_compared_with_the_monotonic_one() {
        let wall = start();
        let at = Instant::now();
        assert_eq!(drift(None, wall, at), None);
        let last = Some((wall, at));
        assert_eq!(
            drift(last, wall + HOUR, at + HOUR),
            Some(Drift::Ahead(Duration::ZERO))
        );
        assert_eq!(
            drift(last, wall + 3 * HOUR, at + HOUR),
            Some(Drift::Ahead(2 * HOUR))
        );
        assert_eq!(
            drift(last, wall + HOUR, at + 2 * HOUR),
            Some(Drift::Behind(HOUR))
        );
        assert_eq!(
            drift(last, wall - HOUR, at + HOUR),
            Some(Drift::Behind(2 * HOUR))
        );
    }

    #[test]
    fn a_jump_past_the_tolerance_holds_pruning_for_a_day_by_the_new_clock() {
        let (_dir, mut guard, wall, at) = checked_once();
        // Within the tolerance: an hour's run plus a few minutes of drift.
        let wall = wall + HOUR + Duration::from_secs(300);
        let at = at + HOUR;
        assert_eq!(guard.check(wall, at).unwrap(), None);

        // The clock is set a year ahead between two hourly checks.
        let year = Duration::from_secs(365 * 86_400);
        let jumped = wall + HOUR + year;
        let at = at + HOUR;
        let held = guard.check(jumped, at).unwrap().expect("held");
        assert_eq!(held.jumped_ms, Some(year.as_millis() as u64));
        assert_eq!(held.until, event::rfc3339_nanos(jumped + HOLD));

        // Later checks keep the hold until its end, without a new jump.
        let later = guard
            .check(jumped + HOUR, at + HOUR)
            .unwrap()
            .expect("held");
        assert_eq!(later.jumped_ms, None);
        assert_eq!(later.until, held.until);
        let end = jumped + HOLD;
        assert!(guard.check(end - HOUR, at + HOLD - HOUR).unwrap().is_some());
        assert_eq!(guard.check(end, at + HOLD).unwrap(), None);
        assert_eq!(
            guard.tree.get(HOLD_UNTIL).unwrap(),
            None,
            "the hold is gone"
        );
    }

    #[test]
    fn a_restart_does_not_lift_a_hold() {
        let dir = tempfile::tempdir().unwrap();
        let (wall, at) = (start(), Instant::now());
        let until = {
            let mut guard = ClockGuard::open(&store(&dir), HOUR).unwrap();
            guard.check(wall, at).unwrap();
            guard
                .check(wall + 10 * HOUR, at + HOUR)
                .unwrap()
                .expect("held")
                .until
        };
        let mut guard = ClockGuard::open(&store(&dir), HOUR).unwrap();
        let held = guard
            .check(wall + 11 * HOUR, at)
            .unwrap()
            .expect("still held");
        assert_eq!((held.jumped_ms, held.until), (None, until));
    }

    #[test]
    fn a_clock_set_back_without_a_hold_is_left_to_the_clock_behind_check() {
        let (_dir, mut guard, wall, at) = checked_once();
        assert_eq!(guard.check(wall - 10 * HOUR, at + HOUR).unwrap(), None);
        // The next check measures from the clock as it is now.
        assert_eq!(guard.check(wall - 9 * HOUR, at + 2 * HOUR).unwrap(), None);
    }

    #[test]
    fn a_wrong_jump_corrected_ends_its_hold_a_day_after_the_jump_in_real_time() {
        let (_dir, mut guard, wall, at) = checked_once();
        let year = Duration::from_secs(365 * 86_400);
        assert!(
            guard
                .check(wall + HOUR + year, at + HOUR)
                .unwrap()
                .is_some()
        );
        // An hour later the clock is set right again: the hold moves back by the year.
        let held = guard
            .check(wall + 2 * HOUR, at + 2 * HOUR)
            .unwrap()
            .expect("still held");
        assert_eq!(held.until, event::rfc3339_nanos(wall + HOUR + HOLD));
        assert!(guard.check(wall + HOLD, at + HOLD).unwrap().is_some());
        assert_eq!(
            guard.check(wall + HOUR + HOLD, at + HOUR + HOLD).unwrap(),
            None
        );

        // Set back to 1970 during a hold, the clock still waits out the day; set back further,
        // the hold's end stops at 1970 instead of panicking the retention thread.
        let later = wall + 2 * HOLD;
        let at = at + 2 * HOLD;
        guard.check(later, at).unwrap();
        assert!(
            guard
                .check(later + HOUR + year, at + HOUR)
                .unwrap()
                .is_some()
        );
        let held = guard.check(UNIX_EPOCH, at + 2 * HOUR).unwrap();
        assert_eq!(
            held.map(|h| h.until),
            Some(event::rfc3339_nanos(UNIX_EPOCH + HOLD - HOUR))
        );
        let before_1970 = UNIX_EPOCH - 10 * year;
        let held = guard.check(before_1970, at + 3 * HOUR).unwrap();
        assert_eq!(
            held.map(|h| h.until),
            Some(event::rfc3339_nanos(UNIX_EPOCH))
        );
    }
}
