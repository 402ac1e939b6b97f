//! A circuit breaker with resilience4j's semantics, as pure logic: no IO, no timers, time passed
//! in by the caller.
//!
//! States CLOSED, OPEN, HALF_OPEN plus DISABLED, FORCED_OPEN and METRICS_ONLY, with
//! resilience4j's table of legal transitions. CLOSED records outcomes in a count- or time-based
//! window and trips to OPEN when, with at least `minimum_calls` recorded, the failure rate or the
//! slow-call rate reaches its threshold (`>=`). OPEN rejects with a `retry_after` until its
//! deadline, which grows by `wait_multiplier` per consecutive trip up to `max_wait_in_open`. The
//! first consultation after the deadline moves it to HALF_OPEN (transitions are lazy: no
//! background timer), which lets `half_open_permits` probe calls through and decides once that
//! many outcomes are recorded, or gives up after `max_wait_in_half_open`.
//!
//! Every call holds a [`Permit`]; it records exactly once, and a permit dropped without a
//! result (the client went away) counts as ignored and hands its half-open slot back. Results
//! that arrive after the breaker changed state (late results) are counted but change nothing.
//! Wiring breakers to dependencies, persisting them and serving them is `breakers`' job.

mod window;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use window::Window;
pub use window::{Counts, Mark, WindowKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
    Disabled,
    ForcedOpen,
    MetricsOnly,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::Disabled,
        State::ForcedOpen,
        State::MetricsOnly,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced_open",
            State::MetricsOnly => "metrics_only",
        }
    }

    /// resilience4j's transition table: everything may go anywhere except CLOSED → HALF_OPEN
    /// and METRICS_ONLY → OPEN or HALF_OPEN.
    pub fn may_become(self, to: State) -> bool {
        !matches!(
            (self, to),
            (State::Closed, State::HalfOpen)
                | (State::MetricsOnly, State::Open)
                | (State::MetricsOnly, State::HalfOpen)
        )
    }

    /// States only an operator sets and only an operator leaves.
    pub fn is_manual(self) -> bool {
        matches!(
            self,
            State::Disabled | State::ForcedOpen | State::MetricsOnly
        )
    }
}

/// Configuration of one breaker, validated by `config`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerConfig {
    #[serde(serialize_with = "window_kind")]
    pub window: WindowKind,
    pub minimum_calls: u32,
    /// Percent, in (0, 100].
    pub failure_rate_threshold: f64,
    /// Percent, in (0, 100].
    pub slow_call_rate_threshold: f64,
    /// A call is slow when it takes strictly longer than this.
    #[serde(serialize_with = "millis")]
    pub slow_call_duration: Duration,
    pub half_open_permits: u32,
    #[serde(serialize_with = "millis")]
    pub wait_in_open: Duration,
    /// Each consecutive trip multiplies the open wait by this (>= 1).
    pub wait_multiplier: f64,
    #[serde(serialize_with = "millis")]
    pub max_wait_in_open: Duration,
    /// HALF_OPEN gives up and returns to OPEN after this long; zero waits for the probes.
    #[serde(serialize_with = "millis")]
    pub max_wait_in_half_open: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

fn window_kind<S: serde::Serializer>(k: &WindowKind, s: S) -> Result<S::Ok, S::Error> {
    match k {
        WindowKind::Count(n) => s.collect_str(&format_args!("count:{n}")),
        WindowKind::Time(n) => s.collect_str(&format_args!("time:{n}s")),
    }
}

impl BreakerConfig {
    /// The minimum number of calls, clamped to a count window's size.
    fn effective_minimum(&self) -> u32 {
        match self.window {
            WindowKind::Count(n) => self.minimum_calls.min(n),
            WindowKind::Time(_) => self.minimum_calls,
        }
    }

    /// How long OPEN lasts on the `attempts`-th consecutive trip.
    pub fn open_wait(&self, attempts: u32) -> Duration {
        let factor = self
            .wait_multiplier
            .powi(attempts.saturating_sub(1).min(64) as i32);
        let wait = self.wait_in_open.as_secs_f64() * factor;
        Duration::from_secs_f64(wait.min(self.max_wait_in_open.as_secs_f64()))
    }
}

/// How a permitted call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    /// Neither: client cancellation, or a rejection before the dependency was touched.
    Ignored,
}

/// Why a call was refused; `retry_after` says when trying again makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub reason: RejectReason,
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    Open,
    HalfOpenFull,
    ForcedOpen,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Open => "open",
            RejectReason::HalfOpenFull => "half_open_full",
            RejectReason::ForcedOpen => "forced_open",
        }
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    FailureRate,
    SlowCallRate,
    WaitElapsed,
    ProbesSucceeded,
    ProbesFailed,
    MaxWaitInHalfOpen,
    Manual,
}

/// A state change, reported to the breaker's listener after its lock is released.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub breaker: String,
    pub from: State,
    pub to: State,
    pub cause: Cause,
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    /// Remaining OPEN time, when the new state is OPEN.
    pub open_for: Option<Duration>,
    pub attempts: u32,
}

/// Cumulative counts since the breaker was created (or restored).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub successful: u64,
    pub failed: u64,
    pub ignored: u64,
    pub slow_successful: u64,
    pub slow_failed: u64,
    pub not_permitted_open: u64,
    pub not_permitted_half_open_full: u64,
    pub not_permitted_forced_open: u64,
}

/// What the breaker looks like at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub state: State,
    /// Percent, or -1 while fewer than the minimum number of calls are recorded.
    pub failure_rate: f64,
    pub slow_call_rate: f64,
    pub buffered: Counts,
    pub totals: Totals,
    /// Until an OPEN breaker lets probes through.
    pub retry_after: Option<Duration>,
    pub attempts: u32,
    pub transitions: BTreeMap<(State, State), u64>,
}

/// What is persisted across restarts (SPEC §5: manual states and the open deadline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub state: State,
    /// For OPEN: how much of the wait was left when it was saved.
    pub open_remaining: Option<Duration>,
    pub attempts: u32,
    pub totals: Totals,
}

type Listener = Box<dyn Fn(&Transition) + Send + Sync>;

pub struct Breaker {
    name: String,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    listener: Option<Listener>,
}

struct Inner {
    state: State,
    /// Bumped on every transition; permits of an older epoch are late.
    epoch: u64,
    window: Window,
    half_open: HalfOpen,
    open_until: Instant,
    attempts: u32,
    totals: Totals,
    transitions: BTreeMap<(State, State), u64>,
    pending: Vec<Transition>,
}

struct HalfOpen {
    since: Instant,
    permits_left: u32,
    window: Window,
}

/// The right to make one call. Record its outcome with [`Permit::record`]; dropping it records
/// [`Outcome::Ignored`].
pub struct Permit {
    breaker: Arc<Breaker>,
    epoch: u64,
    counted: bool,
    done: bool,
}

impl Breaker {
    pub fn new(
        name: &str,
        config: BreakerConfig,
        now: Instant,
        listener: Option<Listener>,
    ) -> Breaker {
        let inner = Inner {
            state: State::Closed,
            epoch: 0,
            window: Window::new(config.window, now),
            half_open: HalfOpen::new(&config, now),
            open_until: now,
            attempts: 0,
            totals: Totals::default(),
            transitions: BTreeMap::new(),
            pending: Vec::new(),
        };
        Breaker {
            name: name.to_string(),
            config,
            inner: Mutex::new(inner),
            listener,
        }
    }

    /// A breaker continuing a persisted one: manual states and OPEN deadlines carry over, an
    /// expired OPEN becomes HALF_OPEN on its first consultation, windows start empty.
    pub fn restore(
        name: &str,
        config: BreakerConfig,
        saved: &Persisted,
        now: Instant,
        listener: Option<Listener>,
    ) -> Breaker {
        let breaker = Breaker::new(name, config, now, listener);
        {
            let mut inner = breaker.lock();
            inner.totals = saved.totals;
            inner.attempts = saved.attempts;
            match saved.state {
                State::Open | State::HalfOpen => {
                    inner.state = State::Open;
                    inner.open_until = now + saved.open_remaining.unwrap_or_default();
                    inner.attempts = saved.attempts.max(1);
                }
                manual if manual.is_manual() => inner.state = manual,
                _ => {}
            }
        }
        breaker
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("breaker lock")
    }

    /// Runs `f` under the lock, then hands the transitions it caused to the listener outside
    /// the lock (one lock acquisition per call).
    fn locked<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let (result, pending) = {
            let mut inner = self.lock();
            let result = f(&mut inner);
            (result, std::mem::take(&mut inner.pending))
        };
        if let Some(listener) = &self.listener {
            for transition in &pending {
                listener(transition);
            }
        }
        result
    }

    /// Asks to make a call now.
    pub fn try_acquire(self: &Arc<Self>, now: Instant) -> Result<Permit, Rejected> {
        let result = self.locked(|inner| {
            self.advance(inner, now);
            let reject = |reason, retry_after| {
                Err(Rejected {
                    reason,
                    retry_after,
                })
            };
            match inner.state {
                State::Closed | State::MetricsOnly => Ok((inner.epoch, true)),
                State::Disabled => Ok((inner.epoch, false)),
                State::Open => {
                    inner.totals.not_permitted_open += 1;
                    reject(
                        RejectReason::Open,
                        inner.open_until.saturating_duration_since(now),
                    )
                }
                State::ForcedOpen => {
                    inner.totals.not_permitted_forced_open += 1;
                    reject(RejectReason::ForcedOpen, self.config.wait_in_open)
                }
                State::HalfOpen if inner.half_open.permits_left > 0 => {
                    inner.half_open.permits_left -= 1;
                    Ok((inner.epoch, true))
                }
                State::HalfOpen => {
                    inner.totals.not_permitted_half_open_full += 1;
                    let retry_after = match self.config.max_wait_in_half_open {
                        Duration::ZERO => Duration::from_secs(1),
                        max => (inner.half_open.since + max)
                            .saturating_duration_since(now)
                            .max(Duration::from_millis(1)),
                    };
                    reject(RejectReason::HalfOpenFull, retry_after)
                }
            }
        });
        result.map(|(epoch, counted)| Permit {
            breaker: self.clone(),
            epoch,
            counted,
            done: false,
        })
    }

    /// The state now (committing any transition that is due).
    pub fn state(&self, now: Instant) -> State {
        self.locked(|inner| {
            self.advance(inner, now);
            inner.state
        })
    }

    pub fn snapshot(&self, now: Instant) -> Snapshot {
        self.locked(|inner| {
            self.advance(inner, now);
            let buffered = match inner.state {
                State::HalfOpen => inner.half_open.window.counts(now),
                _ => inner.window.counts(now),
            };
            let minimum = match inner.state {
                State::HalfOpen => self.config.half_open_permits,
                _ => self.config.effective_minimum(),
            };
            let (failure_rate, slow_call_rate) = if buffered.total >= minimum && buffered.total > 0
            {
                buffered.rates()
            } else {
                (-1.0, -1.0)
            };
            Snapshot {
                state: inner.state,
                failure_rate,
                slow_call_rate,
                buffered,
                totals: inner.totals,
                retry_after: (inner.state == State::Open)
                    .then(|| inner.open_until.saturating_duration_since(now)),
                attempts: inner.attempts,
                transitions: inner.transitions.clone(),
            }
        })
    }

    /// What to save so that a restart continues where this left off.
    pub fn persisted(&self, now: Instant) -> Persisted {
        self.locked(|inner| {
            self.advance(inner, now);
            Persisted {
                state: inner.state,
                open_remaining: (inner.state == State::Open)
                    .then(|| inner.open_until.saturating_duration_since(now)),
                attempts: inner.attempts,
                totals: inner.totals,
            }
        })
    }

    /// An operator's transition: `reset` (to a fresh CLOSED), `force_open`, `disable`,
    /// `metrics_only`, or any legal state. Illegal ones are refused and change nothing.
    pub fn transition_to(&self, to: State, now: Instant) -> Result<(), IllegalTransition> {
        self.locked(|inner| {
            self.advance(inner, now);
            let from = inner.state;
            if !from.may_become(to) {
                return Err(IllegalTransition { from, to });
            }
            if to == State::Open {
                inner.attempts += 1;
            }
            self.enter(inner, to, Cause::Manual, now, (-1.0, -1.0));
            Ok(())
        })
    }

    /// Back to a fresh CLOSED from any state.
    pub fn reset(&self, now: Instant) {
        self.transition_to(State::Closed, now)
            .expect("every state may become CLOSED");
    }

    fn record(
        &self,
        permit_epoch: u64,
        counted: bool,
        outcome: Outcome,
        duration: Duration,
        now: Instant,
    ) {
        self.locked(|inner| {
            // An ignored outcome decides nothing, so it needs no clock (a dropped permit has none).
            if outcome != Outcome::Ignored {
                self.advance(inner, now);
            }
            let slow = duration > self.config.slow_call_duration;
            let current = permit_epoch == inner.epoch;
            if outcome == Outcome::Ignored {
                inner.totals.ignored += counted as u64;
                if current && inner.state == State::HalfOpen {
                    inner.half_open.permits_left += 1;
                }
            } else if counted {
                let failed = outcome == Outcome::Failure;
                let t = &mut inner.totals;
                match (failed, slow) {
                    (false, false) => t.successful += 1,
                    (false, true) => {
                        t.successful += 1;
                        t.slow_successful += 1;
                    }
                    (true, false) => t.failed += 1,
                    (true, true) => {
                        t.failed += 1;
                        t.slow_failed += 1;
                    }
                }
                if current {
                    self.judge(inner, Mark { failed, slow }, now);
                }
            }
        })
    }

    /// Records a current-epoch outcome into the state's window and decides on a transition.
    fn judge(&self, inner: &mut Inner, mark: Mark, now: Instant) {
        match inner.state {
            State::Closed | State::MetricsOnly => {
                inner.window.record(mark, now);
                let counts = inner.window.counts(now);
                if inner.state == State::MetricsOnly
                    || counts.total < self.config.effective_minimum()
                {
                    return;
                }
                let (failure_rate, slow_rate) = counts.rates();
                let cause = if failure_rate >= self.config.failure_rate_threshold {
                    Cause::FailureRate
                } else if slow_rate >= self.config.slow_call_rate_threshold {
                    Cause::SlowCallRate
                } else {
                    return;
                };
                inner.attempts = 1;
                self.enter(inner, State::Open, cause, now, (failure_rate, slow_rate));
            }
            State::HalfOpen => {
                inner.half_open.window.record(mark, now);
                let counts = inner.half_open.window.counts(now);
                if counts.total < self.config.half_open_permits {
                    return;
                }
                let (failure_rate, slow_rate) = counts.rates();
                if failure_rate >= self.config.failure_rate_threshold
                    || slow_rate >= self.config.slow_call_rate_threshold
                {
                    inner.attempts += 1;
                    self.enter(
                        inner,
                        State::Open,
                        Cause::ProbesFailed,
                        now,
                        (failure_rate, slow_rate),
                    );
                } else {
                    self.enter(
                        inner,
                        State::Closed,
                        Cause::ProbesSucceeded,
                        now,
                        (failure_rate, slow_rate),
                    );
                }
            }
            // Permits of these states are not counted, or these states grant none.
            State::Disabled | State::Open | State::ForcedOpen => {}
        }
    }

    /// Commits the transitions that time alone makes due.
    fn advance(&self, inner: &mut Inner, now: Instant) {
        if inner.state == State::Open && now >= inner.open_until {
            self.enter(
                inner,
                State::HalfOpen,
                Cause::WaitElapsed,
                now,
                (-1.0, -1.0),
            );
        }
        let max = self.config.max_wait_in_half_open;
        if inner.state == State::HalfOpen
            && max > Duration::ZERO
            && now >= inner.half_open.since + max
        {
            inner.attempts += 1;
            self.enter(
                inner,
                State::Open,
                Cause::MaxWaitInHalfOpen,
                now,
                (-1.0, -1.0),
            );
        }
    }

    fn enter(&self, inner: &mut Inner, to: State, cause: Cause, now: Instant, rates: (f64, f64)) {
        let from = inner.state;
        inner.state = to;
        inner.epoch += 1;
        match to {
            State::Closed | State::MetricsOnly => {
                inner.window = Window::new(self.config.window, now);
                if to == State::Closed {
                    inner.attempts = 0;
                }
            }
            State::Open => inner.open_until = now + self.config.open_wait(inner.attempts.max(1)),
            State::HalfOpen => inner.half_open = HalfOpen::new(&self.config, now),
            State::Disabled | State::ForcedOpen => {}
        }
        if from == to {
            // Internal transitions (resilience4j's X → X) are not reported.
            return;
        }
        *inner.transitions.entry((from, to)).or_default() += 1;
        inner.pending.push(Transition {
            breaker: self.name.clone(),
            from,
            to,
            cause,
            failure_rate: rates.0,
            slow_call_rate: rates.1,
            open_for: (to == State::Open).then(|| inner.open_until.saturating_duration_since(now)),
            attempts: inner.attempts,
        });
    }
}

impl HalfOpen {
    fn new(config: &BreakerConfig, now: Instant) -> HalfOpen {
        HalfOpen {
            since: now,
            permits_left: config.half_open_permits,
            window: Window::new(WindowKind::Count(config.half_open_permits), now),
        }
    }
}

impl Permit {
    /// Records how the call ended and how long it took (from permit to result).
    pub fn record(mut self, outcome: Outcome, duration: Duration, now: Instant) {
        self.done = true;
        self.breaker
            .record(self.epoch, self.counted, outcome, duration, now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.record(
                self.epoch,
                self.counted,
                Outcome::Ignored,
                Duration::ZERO,
                Instant::now(),
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a breaker cannot go from {} to {}", from.as_str(), to.as_str())]
pub struct IllegalTransition {
    pub from: State,
    pub to: State,
}

#[cfg(test)]
mod tests;
