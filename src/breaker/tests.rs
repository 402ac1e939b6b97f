//! The breaker on a mock clock: research/breaker-pool.md §9 A.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// resilience4j's state-machine test fixture, count-based.
fn fixture() -> BreakerConfig {
    BreakerConfig {
        window: WindowKind::Count(5),
        minimum_calls: 5,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 50.0,
        slow_call_duration: Duration::from_secs(2),
        half_open_permits: 4,
        wait_in_open: Duration::from_secs(5),
        wait_multiplier: 2.0,
        max_wait_in_open: Duration::from_secs(20),
        max_wait_in_half_open: Duration::ZERO,
    }
}

struct Clock(Instant);

impl Clock {
    fn at(&self, ms: u64) -> Instant {
        self.0 + Duration::from_millis(ms)
    }
}

fn breaker(config: BreakerConfig) -> (Arc<Breaker>, Clock, Arc<Mutex<Vec<Transition>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let clock = Clock(Instant::now());
    let listener: Listener = Box::new(move |t: &Transition| sink.lock().unwrap().push(t.clone()));
    (
        Arc::new(Breaker::new("dep", config, clock.0, Some(listener))),
        clock,
        seen,
    )
}

const FAST: Duration = Duration::from_millis(10);

fn call(b: &Arc<Breaker>, outcome: Outcome, took: Duration, now: Instant) {
    b.try_acquire(now)
        .expect("permitted")
        .record(outcome, took, now);
}

fn calls(b: &Arc<Breaker>, outcomes: &[Outcome], now: Instant) {
    for outcome in outcomes {
        call(b, *outcome, FAST, now);
    }
}

use Outcome::{Failure as F, Ignored as I, Success as S};

/// Drives a fixture breaker to HALF_OPEN at `t = 5 s` and returns it.
fn half_open(config: BreakerConfig) -> (Arc<Breaker>, Clock, Arc<Mutex<Vec<Transition>>>) {
    let (b, clock, seen) = breaker(config);
    calls(&b, &[F, F, F, F, F], clock.at(0));
    assert_eq!(b.state(clock.at(5000)), State::HalfOpen);
    (b, clock, seen)
}

#[test]
fn a1_below_the_minimum_nothing_happens() {
    let (b, clock, _) = breaker(fixture());
    calls(&b, &[F, F, F, F], clock.at(0));
    let s = b.snapshot(clock.at(0));
    assert_eq!(
        (s.state, s.failure_rate, s.buffered.failed),
        (State::Closed, -1.0, 4)
    );
}

#[test]
fn a2_failure_rate_trips_and_rejects_with_retry_after() {
    let (b, clock, seen) = breaker(fixture());
    calls(&b, &[F, S, F, S, F], clock.at(0));
    let s = b.snapshot(clock.at(0));
    assert_eq!(s.state, State::Open);
    let transitions = seen.lock().unwrap().clone();
    assert_eq!(transitions.len(), 1);
    assert_eq!(
        (transitions[0].cause, transitions[0].failure_rate),
        (Cause::FailureRate, 60.0)
    );
    let rejected = b.try_acquire(clock.at(0)).err().unwrap();
    assert_eq!(
        rejected,
        Rejected {
            reason: RejectReason::Open,
            retry_after: Duration::from_secs(5)
        }
    );
    assert_eq!(b.snapshot(clock.at(0)).totals.not_permitted_open, 1);
}

#[test]
fn a3_the_threshold_is_inclusive() {
    let (b, clock, _) = breaker(BreakerConfig {
        window: WindowKind::Count(4),
        minimum_calls: 4,
        ..fixture()
    });
    calls(&b, &[F, F, S, S], clock.at(0));
    assert_eq!(b.state(clock.at(0)), State::Open);
}

#[test]
fn a4_the_oldest_outcome_leaves_a_count_window() {
    let (b, clock, _) = breaker(BreakerConfig {
        failure_rate_threshold: 80.0,
        ..fixture()
    });
    calls(&b, &[F, F, F, S, S], clock.at(0));
    let mut rates = vec![b.snapshot(clock.at(0)).failure_rate];
    for _ in 0..3 {
        call(&b, S, FAST, clock.at(0));
        rates.push(b.snapshot(clock.at(0)).failure_rate);
    }
    assert_eq!(rates, [60.0, 40.0, 20.0, 0.0]);
    assert_eq!(b.state(clock.at(0)), State::Closed);
}

#[test]
fn a5_time_windows_forget_old_seconds() {
    let config = BreakerConfig {
        window: WindowKind::Time(10),
        minimum_calls: 5,
        ..fixture()
    };
    let (b, clock, _) = breaker(config.clone());
    calls(&b, &[F, F, F, F], clock.at(0));
    calls(&b, &[F, S, S, S, S], clock.at(11_000));
    let s = b.snapshot(clock.at(11_000));
    assert_eq!(
        (s.state, s.failure_rate),
        (State::Closed, 20.0),
        "without eviction it would be 5/9 and open"
    );

    let (b, clock, _) = breaker(config);
    calls(&b, &[F, F, F, F], clock.at(0));
    calls(&b, &[F], clock.at(5_000));
    assert_eq!(b.state(clock.at(5_000)), State::Open);
}

#[test]
fn a6_slow_calls_trip_on_their_own_rate() {
    let (b, clock, seen) = breaker(fixture());
    for took in [3000, 3000, 3000, 1000, 1000] {
        call(&b, S, Duration::from_millis(took), clock.at(0));
    }
    let s = b.snapshot(clock.at(0));
    assert_eq!(s.state, State::Open);
    assert_eq!(seen.lock().unwrap()[0].cause, Cause::SlowCallRate);
    assert_eq!(seen.lock().unwrap()[0].failure_rate, 0.0);
}

#[test]
fn a7_exactly_the_slow_threshold_is_not_slow() {
    let (b, clock, _) = breaker(fixture());
    for _ in 0..5 {
        call(&b, S, Duration::from_secs(2), clock.at(0));
    }
    assert_eq!(b.state(clock.at(0)), State::Closed);
}

#[test]
fn a8_slow_failures_count_in_both_rates() {
    let (b, clock, seen) = breaker(BreakerConfig {
        failure_rate_threshold: 100.0,
        ..fixture()
    });
    for _ in 0..4 {
        call(&b, F, Duration::from_secs(3), clock.at(0));
    }
    let s = b.snapshot(clock.at(0));
    assert_eq!(
        (s.buffered.failed, s.buffered.slow, s.buffered.slow_failed),
        (4, 4, 4)
    );
    call(&b, F, Duration::from_secs(3), clock.at(0));
    assert_eq!(b.state(clock.at(0)), State::Open);
    assert_eq!(seen.lock().unwrap().len(), 1, "one transition");
    assert_eq!(b.snapshot(clock.at(0)).totals.slow_failed, 5);
}

#[test]
fn a9_ignored_probes_give_their_slot_back() {
    let (b, clock, _) = half_open(fixture());
    let now = clock.at(5000);
    let permits: Vec<Permit> = (0..4).map(|_| b.try_acquire(now).unwrap()).collect();
    assert!(b.try_acquire(now).is_err(), "four permits only");
    let mut permits = permits.into_iter();
    for _ in 0..3 {
        permits.next().unwrap().record(S, FAST, now);
    }
    permits.next().unwrap().record(I, FAST, now);
    assert_eq!(
        b.state(now),
        State::HalfOpen,
        "three recorded outcomes decide nothing"
    );
    call(&b, F, FAST, now);
    assert_eq!(b.state(now), State::Closed, "1 failure in 4 is 25%");
}

#[test]
fn a10_successful_business_errors_close_the_circuit() {
    let (b, clock, _) = half_open(fixture());
    calls(&b, &[S, S, S, S], clock.at(5000));
    assert_eq!(b.state(clock.at(5000)), State::Closed);
}

#[test]
fn a11_open_moves_to_half_open_when_the_wait_is_over() {
    let (b, clock, seen) = breaker(fixture());
    calls(&b, &[F, F, F, F, F], clock.at(0));
    let early = b.try_acquire(clock.at(4900)).err().unwrap();
    assert_eq!(early.retry_after, Duration::from_millis(100));
    assert!(b.try_acquire(clock.at(5000)).is_ok());
    assert_eq!(b.state(clock.at(5000)), State::HalfOpen);
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter()
            .filter(|t| (t.from, t.to) == (State::Open, State::HalfOpen))
            .count(),
        1
    );
}

#[test]
fn a12_reading_the_state_commits_the_due_transition() {
    let (b, clock, seen) = breaker(fixture());
    calls(&b, &[F, F, F, F, F], clock.at(0));
    assert_eq!(b.snapshot(clock.at(6000)).state, State::HalfOpen);
    assert_eq!(seen.lock().unwrap().last().unwrap().to, State::HalfOpen);
}

#[test]
fn a13_half_open_admits_exactly_the_permitted_probes() {
    let (b, clock, _) = half_open(fixture());
    let results: Vec<_> = (0..6).map(|_| b.try_acquire(clock.at(5000))).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 4);
    let reasons: Vec<_> = results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|e| e.reason)
        .collect();
    assert_eq!(
        reasons,
        [RejectReason::HalfOpenFull, RejectReason::HalfOpenFull]
    );
}

#[test]
fn a14_good_probes_close_with_a_fresh_window() {
    let (b, clock, _) = half_open(fixture());
    calls(&b, &[F, S, S, S], clock.at(5000));
    let s = b.snapshot(clock.at(5000));
    assert_eq!(
        (s.state, s.buffered.total, s.attempts),
        (State::Closed, 0, 0)
    );
}

#[test]
fn a15_failed_probes_reopen_with_backoff_up_to_the_cap() {
    let (b, clock, _) = half_open(fixture());
    calls(&b, &[F, F, S, S], clock.at(5000));
    assert_eq!(
        b.snapshot(clock.at(5000)).retry_after,
        Some(Duration::from_secs(10))
    );
    assert_eq!(b.state(clock.at(15_000)), State::HalfOpen);
    calls(&b, &[F, F, F, F], clock.at(15_000));
    assert_eq!(
        b.snapshot(clock.at(15_000)).retry_after,
        Some(Duration::from_secs(20))
    );
    assert_eq!(b.state(clock.at(35_000)), State::HalfOpen);
    calls(&b, &[F, F, F, F], clock.at(35_000));
    assert_eq!(
        b.snapshot(clock.at(35_000)).retry_after,
        Some(Duration::from_secs(20)),
        "capped at max_wait_in_open"
    );
}

#[test]
fn a16_half_open_gives_up_after_its_maximum_wait() {
    let (b, clock, _) = half_open(BreakerConfig {
        max_wait_in_half_open: Duration::from_secs(1),
        ..fixture()
    });
    let first = b.try_acquire(clock.at(5000)).unwrap();
    let second = b.try_acquire(clock.at(5000)).unwrap();
    assert_eq!(b.state(clock.at(6100)), State::Open);
    first.record(S, FAST, clock.at(6100));
    second.record(S, FAST, clock.at(6100));
    assert_eq!(
        b.state(clock.at(6100)),
        State::Open,
        "late probe results change nothing"
    );
}

#[test]
fn a17_dropped_permits_do_not_leave_half_open_stuck() {
    let (b, clock, _) = half_open(fixture());
    let now = clock.at(5000);
    for _ in 0..4 {
        drop(b.try_acquire(now).unwrap());
    }
    assert_eq!(b.snapshot(now).totals.ignored, 4);
    calls(&b, &[S, S, S, S], now);
    assert_eq!(b.state(now), State::Closed);
}

#[test]
fn a18_late_results_while_open_change_nothing() {
    let (b, clock, _) = breaker(fixture());
    let late = b.try_acquire(clock.at(0)).unwrap();
    calls(&b, &[F, F, F, F, F], clock.at(0));
    let before = b.snapshot(clock.at(100));
    late.record(F, FAST, clock.at(100));
    let after = b.snapshot(clock.at(100));
    assert_eq!(
        (after.state, after.retry_after),
        (State::Open, before.retry_after)
    );
    assert_eq!(after.totals.failed, before.totals.failed + 1, "counted");
}

#[test]
fn a19_forced_open_rejects_until_an_operator_acts() {
    let (b, clock, seen) = breaker(fixture());
    b.transition_to(State::ForcedOpen, clock.at(0)).unwrap();
    for t in [0, 60_000, 3_600_000] {
        assert_eq!(
            b.try_acquire(clock.at(t)).err().unwrap().reason,
            RejectReason::ForcedOpen
        );
    }
    assert_eq!(b.snapshot(clock.at(0)).totals.not_permitted_forced_open, 3);
    assert_eq!(seen.lock().unwrap().len(), 1);
    b.reset(clock.at(0));
    assert!(b.try_acquire(clock.at(0)).is_ok());
}

#[test]
fn a20_disabled_permits_everything_and_records_nothing() {
    let (b, clock, _) = breaker(fixture());
    b.transition_to(State::Disabled, clock.at(0)).unwrap();
    calls(&b, &[F; 20], clock.at(0));
    let s = b.snapshot(clock.at(0));
    assert_eq!(
        (s.state, s.buffered.total, s.totals.failed),
        (State::Disabled, 0, 0)
    );
}

#[test]
fn a21_metrics_only_measures_but_never_opens() {
    let (b, clock, seen) = breaker(fixture());
    b.transition_to(State::MetricsOnly, clock.at(0)).unwrap();
    calls(&b, &[F; 10], clock.at(0));
    let s = b.snapshot(clock.at(0));
    assert_eq!((s.state, s.failure_rate), (State::MetricsOnly, 100.0));
    assert_eq!(seen.lock().unwrap().len(), 1, "only the manual transition");
}

#[test]
fn a22_illegal_transitions_are_refused() {
    let (b, clock, _) = breaker(fixture());
    assert_eq!(
        b.transition_to(State::HalfOpen, clock.at(0)),
        Err(IllegalTransition {
            from: State::Closed,
            to: State::HalfOpen
        })
    );
    b.transition_to(State::MetricsOnly, clock.at(0)).unwrap();
    assert!(b.transition_to(State::Open, clock.at(0)).is_err());
    assert!(b.transition_to(State::HalfOpen, clock.at(0)).is_err());
    assert_eq!(b.state(clock.at(0)), State::MetricsOnly);
    for from in State::ALL {
        assert!(
            from.may_become(State::MetricsOnly)
                && from.may_become(from)
                && from.may_become(State::Closed)
        );
    }
}

#[test]
fn a23_self_transitions_are_not_reported() {
    let (b, clock, seen) = breaker(fixture());
    b.transition_to(State::Closed, clock.at(0)).unwrap();
    assert!(seen.lock().unwrap().is_empty());
}

#[test]
fn a24_reset_returns_to_a_fresh_closed() {
    let (b, clock, seen) = breaker(fixture());
    calls(&b, &[F, F, F, F, F], clock.at(0));
    b.reset(clock.at(0));
    let s = b.snapshot(clock.at(0));
    assert_eq!((s.state, s.buffered.total), (State::Closed, 0));
    assert_eq!(
        seen.lock().unwrap().last().map(|t| (t.from, t.to, t.cause)),
        Some((State::Open, State::Closed, Cause::Manual))
    );
}

#[test]
fn a25_concurrent_callers_get_exactly_the_half_open_permits() {
    let (b, clock, _) = half_open(fixture());
    let now = clock.at(5000);
    let granted = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let b = b.clone();
            let granted = granted.clone();
            scope.spawn(move || {
                for _ in 0..1000 {
                    if let Ok(permit) = b.try_acquire(now) {
                        granted.lock().unwrap().push(permit);
                    }
                }
            });
        }
    });
    assert_eq!(granted.lock().unwrap().len(), 4);
}

#[test]
fn a26_open_waits_grow_and_are_capped() {
    let config = fixture();
    assert_eq!(config.open_wait(1), Duration::from_secs(5));
    assert_eq!(config.open_wait(2), Duration::from_secs(10));
    assert_eq!(config.open_wait(3), Duration::from_secs(20));
    assert_eq!(config.open_wait(30), Duration::from_secs(20));
    assert_eq!(
        BreakerConfig {
            window: WindowKind::Count(3),
            minimum_calls: 10,
            ..fixture()
        }
        .effective_minimum(),
        3
    );
}

#[test]
fn a27_manual_states_and_open_deadlines_survive_a_restore() {
    let (b, clock, _) = breaker(fixture());
    b.transition_to(State::ForcedOpen, clock.at(0)).unwrap();
    let saved = b.persisted(clock.at(0));
    let restored = Arc::new(Breaker::restore(
        "dep",
        fixture(),
        &saved,
        clock.at(0),
        None,
    ));
    assert_eq!(restored.state(clock.at(999_999)), State::ForcedOpen);

    let (b, clock, _) = breaker(fixture());
    calls(&b, &[F, F, F, F, F], clock.at(0));
    let saved = b.persisted(clock.at(2000));
    assert_eq!(saved.open_remaining, Some(Duration::from_secs(3)));
    let later = clock.at(10_000);
    let restored = Arc::new(Breaker::restore("dep", fixture(), &saved, later, None));
    let rejected = restored.try_acquire(later).err().unwrap();
    assert_eq!(
        rejected.retry_after,
        Duration::from_secs(3),
        "the remaining wait carries over"
    );
    assert_eq!(
        restored.state(later + Duration::from_secs(3)),
        State::HalfOpen
    );
    assert_eq!(
        restored.snapshot(later).totals.failed,
        5,
        "cumulative counts carry over; the window does not"
    );
}
