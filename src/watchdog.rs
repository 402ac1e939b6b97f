//! The runtime watchdog: notices when an async runtime (the main one, or a proxy thread's)
//! stops running tasks, and past `server.watchdog_kill_ms` ends the process so that its
//! supervisor (Fly's restart policy, systemd) starts a fresh one.
//!
//! A runtime worker blocked on a lock or a stuck call takes its queued tasks with it; when
//! every worker is blocked, seawall still accepts TCP connections (the kernel does) but
//! answers nothing, not even `/health/live`. A restart is better than that. A heartbeat task
//! on the runtime counts beats; a plain thread looks at the count every [`CHECK`]. Time counts
//! as stalled only while that thread itself runs on time, so a paused process (SIGSTOP, a
//! suspended machine) is not taken for a stall. Stalls of at least [`REPORT_AFTER`] are logged
//! when they reach it and when they end, and counted in `seawall_runtime_stalls_total`. What
//! blocked is not visible from here; a stack dump (`gdb -p PID -batch -ex "thread apply all
//! bt"`) taken during a stall is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{Counter, Exposition};

/// How often the heartbeat task beats.
const BEAT: Duration = Duration::from_millis(100);
/// How often the checking thread looks.
const CHECK: Duration = Duration::from_millis(250);
/// Stalls shorter than this are not reported: a busy machine can delay a task that long.
pub const REPORT_AFTER: Duration = Duration::from_secs(1);
/// Exit status after a kill: sysexits' EX_SOFTWARE.
pub const EXIT_STALLED: i32 = 70;

/// What one look at the heartbeat found.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Running,
    /// No beat for this long (of the checker's own on-time running).
    Stalled(Duration),
    /// Beats again after a reportable stall of this long.
    Recovered(Duration),
}

/// The stall arithmetic, apart from threads and clocks so that tests can drive it.
#[derive(Debug, Default)]
pub struct StallClock {
    beats: u64,
    stalled: Duration,
}

impl StallClock {
    /// One look: `beats` is the heartbeat count now, `slept` how long since the last look.
    /// A look that came much later than asked means this thread was not running either,
    /// so at most two checks' worth of that time counts.
    pub fn observe(&mut self, beats: u64, slept: Duration) -> Verdict {
        if beats != self.beats {
            self.beats = beats;
            let stalled = std::mem::take(&mut self.stalled);
            return if stalled >= REPORT_AFTER {
                Verdict::Recovered(stalled)
            } else {
                Verdict::Running
            };
        }
        self.stalled += slept.min(2 * CHECK);
        Verdict::Stalled(self.stalled)
    }
}

/// The watchdog of the process's runtimes: [`Watchdog::start`] watches the main one,
/// [`Watchdog::watch_this_runtime`] each proxy thread's.
pub struct Watchdog {
    /// `None`: stalls are reported but never end the process.
    kill_after: Option<Duration>,
    stalls: Counter,
    started: AtomicBool,
}

/// What the heartbeat and the checking thread share.
struct Shared {
    beats: AtomicU64,
    /// Cleared when the heartbeat task is dropped (its runtime shut down): the checker ends.
    alive: AtomicBool,
}

/// Owned by the heartbeat task; dropping the task stops the checker.
struct Heartbeat(Arc<Shared>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}

impl Watchdog {
    pub fn new(kill_after: Option<Duration>) -> Watchdog {
        Watchdog {
            kill_after,
            stalls: Counter::default(),
            started: AtomicBool::new(false),
        }
    }

    /// Watches the current runtime, the main one, once: see [`Watchdog::watch_this_runtime`].
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        self.watch_this_runtime("main");
    }

    /// Starts a heartbeat on the current runtime and a thread checking it, which stops when
    /// the runtime shuts down; a stall of `kill_after` logs an error and exits with
    /// [`EXIT_STALLED`]. `runtime` names the runtime in the log.
    pub fn watch_this_runtime(self: &Arc<Self>, runtime: &str) {
        let name = runtime.to_string();
        self.watch_with(runtime, move |stalled| {
            tracing::error!(
                runtime = %name,
                stalled_ms = stalled.as_millis() as u64,
                "the async runtime has run no task for this long: exiting so that the supervisor starts seawall again (server.watchdog_kill_ms)"
            );
            std::process::exit(EXIT_STALLED);
        });
    }

    /// [`Watchdog::watch_this_runtime`] with what to do at `kill_after` given (tests observe
    /// instead).
    pub fn watch_with(self: &Arc<Self>, runtime: &str, kill: impl Fn(Duration) + Send + 'static) {
        let shared = Arc::new(Shared {
            beats: AtomicU64::new(0),
            alive: AtomicBool::new(true),
        });
        let heartbeat = Heartbeat(shared.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(BEAT);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                heartbeat.0.beats.fetch_add(1, Ordering::Release);
            }
        });
        let watchdog = self.clone();
        let runtime = runtime.to_string();
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || watchdog.check(&runtime, &shared, kill))
            .expect("the watchdog thread starts");
    }

    fn check(&self, runtime: &str, shared: &Shared, kill: impl Fn(Duration)) {
        let mut clock = StallClock::default();
        let mut reported = false;
        let mut last = Instant::now();
        while shared.alive.load(Ordering::Acquire) {
            std::thread::sleep(CHECK);
            let now = Instant::now();
            let verdict = clock.observe(shared.beats.load(Ordering::Acquire), now - last);
            last = now;
            match verdict {
                Verdict::Running => {}
                Verdict::Stalled(stalled) => {
                    if stalled >= REPORT_AFTER && !reported {
                        reported = true;
                        self.stalls.inc();
                        tracing::warn!(
                            runtime,
                            stalled_ms = stalled.as_millis() as u64,
                            "the async runtime has run no task for this long: a worker is blocked"
                        );
                    }
                    if self.kill_after.is_some_and(|after| stalled >= after) {
                        kill(stalled);
                        return;
                    }
                }
                Verdict::Recovered(stalled) => {
                    reported = false;
                    tracing::warn!(
                        runtime,
                        stalled_ms = stalled.as_millis() as u64,
                        "the async runtime runs tasks again after a stall"
                    );
                }
            }
        }
    }

    pub fn render_metrics(&self, out: &mut Exposition) {
        out.single(
            "seawall_runtime_stalls_total",
            "counter",
            "Times the async runtime ran no task for at least a second (a blocked worker).",
            self.stalls.get() as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, mpsc};

    #[test]
    fn beats_keep_the_clock_at_zero() {
        let mut clock = StallClock::default();
        for beats in 1..10 {
            assert_eq!(clock.observe(beats, CHECK), Verdict::Running);
        }
    }

    #[test]
    fn missing_beats_add_up_and_a_long_stall_is_reported_when_it_ends() {
        let mut clock = StallClock::default();
        assert_eq!(clock.observe(1, CHECK), Verdict::Running);
        for n in 1..=8 {
            assert_eq!(clock.observe(1, CHECK), Verdict::Stalled(CHECK * n));
        }
        assert_eq!(clock.observe(2, CHECK), Verdict::Recovered(CHECK * 8));
        // A short one is not worth a report.
        assert_eq!(clock.observe(2, CHECK), Verdict::Stalled(CHECK));
        assert_eq!(clock.observe(3, CHECK), Verdict::Running);
    }

    #[test]
    fn a_paused_process_is_not_a_stall() {
        // The checker itself slept a minute (SIGSTOP, a suspended machine): at most two
        // checks of it count, and the heartbeat, paused as well, catches up next time.
        let mut clock = StallClock::default();
        assert_eq!(clock.observe(1, CHECK), Verdict::Running);
        assert_eq!(
            clock.observe(1, Duration::from_secs(60)),
            Verdict::Stalled(2 * CHECK)
        );
        assert_eq!(clock.observe(2, CHECK), Verdict::Running);
    }

    /// The failure it exists for: the only worker blocks on a lock the test holds. The kill
    /// comes, and the stall was counted before it.
    #[test]
    fn a_runtime_blocked_on_a_lock_is_killed() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let watchdog = Arc::new(Watchdog::new(Some(Duration::from_secs(2))));
        let (killed, kills) = mpsc::channel();
        runtime.block_on(async {
            watchdog.watch_with("test", move |stalled| killed.send(stalled).unwrap());
        });
        let lock = Arc::new(Mutex::new(()));
        let held = lock.lock().unwrap();
        let (entered, blocked) = mpsc::channel();
        let blocker = lock.clone();
        runtime.spawn(async move {
            entered.send(()).unwrap();
            drop(blocker.lock().unwrap());
        });
        blocked.recv_timeout(Duration::from_secs(60)).unwrap();
        let stalled = kills
            .recv_timeout(Duration::from_secs(60))
            .expect("the watchdog kills a blocked runtime");
        assert!(stalled >= Duration::from_secs(2), "{stalled:?}");
        assert_eq!(watchdog.stalls.get(), 1);
        drop(held);
        runtime.shutdown_timeout(Duration::from_secs(10));
    }

    #[test]
    fn a_runtime_that_shuts_down_stops_its_watchdog() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let watchdog = Arc::new(Watchdog::new(Some(Duration::from_secs(2))));
        let (killed, kills) = mpsc::channel();
        runtime.block_on(async {
            watchdog.watch_with("test", move |stalled| killed.send(stalled).unwrap());
        });
        drop(runtime);
        // The checker ends instead of taking the missing beats for a stall: its sender goes.
        assert_eq!(
            kills.recv_timeout(Duration::from_secs(60)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
