//! The clock a suspended holder counts its lease on.
//!
//! A real system suspend cannot be triggered from a test. What the harness can do is
//! stop a holder process (SIGSTOP) for longer than its TTL and let it go on (SIGCONT):
//! to the process that is a suspend, except for its clocks. `CLOCK_MONOTONIC` and
//! `CLOCK_BOOTTIME` both ran on while it was stopped, so after SIGCONT both have jumped
//! forward by the stop — which is what `CLOCK_BOOTTIME` does across a real suspend. A
//! clock that *missed* the suspend, as `CLOCK_MONOTONIC` does across a real one, is
//! modelled by [`SuspendBlindClock`]: it notices that its process was stopped (its ticker
//! thread saw a gap) and takes the gap away.
//!
//! [`HolderClock`] names the two. The client library counts its lease on its own clock;
//! a holder that checks its lease on a [`SuspendBlindClock`] trusts the lease longer by
//! [`SuspendBlindClock::missed`], exactly as long as the library would if its clock had
//! missed the suspend. Once the library takes an injected lease clock, the same clock
//! can be handed to it instead (its [`SuspendBlindClock::now`] is an `Instant` that
//! stands still while the process is stopped).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often the blind clock's ticker looks at the time.
const TICK: Duration = Duration::from_millis(10);
/// A gap between two ticks longer than this is counted as a stop of the process. Far
/// above a tick, so that a scheduler delay on a loaded machine is not taken for one.
const STOP_GAP: Duration = Duration::from_millis(400);

/// Which clock a suspended holder counts its lease on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HolderClock {
    /// A clock that counts the suspend (`CLOCK_BOOTTIME`): the client library's own.
    Boottime,
    /// A clock that missed the suspend (`CLOCK_MONOTONIC` across a real one): the
    /// control run's, which the lease checker must catch.
    SuspendBlind,
}

/// A monotonic clock that stands still while its process is stopped: the time the
/// process spent stopped is taken away from it.
#[derive(Clone)]
pub struct SuspendBlindClock {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    /// Real (monotonic) time of the last tick, ns since `started`.
    last_tick_ns: AtomicU64,
    /// Time missed in stops so far, ns.
    missed_ns: AtomicU64,
    stop: AtomicBool,
}

impl Inner {
    /// Look at the time: a gap since the last look longer than [`STOP_GAP`] was a stop.
    fn observe(&self) {
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let last = self.last_tick_ns.swap(now, Ordering::AcqRel);
        let gap = now.saturating_sub(last);
        if gap > STOP_GAP.as_nanos() as u64 {
            self.missed_ns
                .fetch_add(gap - TICK.as_nanos() as u64, Ordering::AcqRel);
        }
    }
}

impl SuspendBlindClock {
    /// Start the clock (and its ticker thread, which ends when the last clone is dropped).
    pub fn start() -> SuspendBlindClock {
        let inner = Arc::new(Inner {
            started: Instant::now(),
            last_tick_ns: AtomicU64::new(0),
            missed_ns: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(inner) if !inner.stop.load(Ordering::Acquire) => inner.observe(),
                    _ => return,
                }
            }
        });
        SuspendBlindClock { inner }
    }

    /// The time the process spent stopped since the clock started.
    pub fn missed(&self) -> Duration {
        // A reader may run before the ticker after a SIGCONT: look first.
        self.inner.observe();
        Duration::from_nanos(self.inner.missed_ns.load(Ordering::Acquire))
    }

    /// Now on this clock: the machine's monotonic time minus the time missed.
    pub fn now(&self) -> Instant {
        let missed = self.missed();
        let now = Instant::now();
        now.checked_sub(missed).unwrap_or(now)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blind_clock_runs_with_the_machine_while_the_process_runs() {
        let clock = SuspendBlindClock::start();
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(20));
            clock.missed();
        }
        assert_eq!(clock.missed(), Duration::ZERO);
    }

    #[test]
    fn a_gap_no_tick_saw_is_missed() {
        let clock = SuspendBlindClock::start();
        std::thread::sleep(Duration::from_millis(600));
        // As after a SIGCONT: the last look was at the start, 600 ms ago. (Stopping the
        // test process itself is not an option; the ticker's last look is set back.)
        clock.inner.last_tick_ns.store(0, Ordering::Release);
        let missed = clock.missed();
        assert!(missed >= Duration::from_millis(500), "{missed:?}");
        let on_clock = clock.now();
        let behind = Instant::now() - on_clock;
        // Nothing more was missed since: behind by the same, give or take the two reads.
        assert!(
            behind + Duration::from_millis(50) >= missed,
            "{behind:?} {missed:?}"
        );
    }
}
