//! The clock the client counts leases on.
//!
//! A lease is a promise about elapsed time, so it must be counted on a clock that keeps
//! running whenever the server's clock does. `Instant` is `CLOCK_MONOTONIC` on Linux,
//! which stops while the machine is suspended: a laptop or VM that sleeps past the TTL
//! would wake up believing it still holds a lease the cluster has ended. On Linux the
//! client therefore reads `CLOCK_BOOTTIME`, which counts suspended time too. Elsewhere
//! it falls back to `Instant`; on macOS that is `mach_absolute_time`-based and stops
//! during sleep as well, so there a suspend longer than the margin is covered only by
//! the fencing token.
//!
//! Only the *rate* of the clock matters: the client subtracts two readings of the same
//! clock and never compares a reading with another machine's, or with wall-clock time.
//! The safety margin covers a rate difference between the client's and the leader's
//! clocks (bounded drift, as NTP keeps it).
//!
//! Waiting on this clock: tokio's timers run on `CLOCK_MONOTONIC` and so stop during a
//! suspend too. [`LeaseClock::sleep_until`] of the real clock therefore naps at most
//! [`MAX_NAP`] at a time and reads the clock again after each nap, so a deadline that
//! passed during a suspend is noticed within `MAX_NAP` of waking.

use futures::future::BoxFuture;
use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::time::Duration;

/// The longest a wait on the real lease clock sleeps before reading the clock again.
pub(crate) const MAX_NAP: Duration = Duration::from_millis(250);

/// A reading of a [`LeaseClock`]: the time since the clock's (arbitrary) origin.
/// Readings of different clocks are not comparable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseInstant(Duration);

impl LeaseInstant {
    /// The reading `since_origin` after the clock's origin.
    #[cfg(any(test, feature = "test-support"))]
    pub fn from_origin(since_origin: Duration) -> LeaseInstant {
        LeaseInstant(since_origin)
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: LeaseInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for LeaseInstant {
    type Output = LeaseInstant;

    fn add(self, rhs: Duration) -> LeaseInstant {
        LeaseInstant(self.0.saturating_add(rhs))
    }
}

impl Sub<Duration> for LeaseInstant {
    type Output = LeaseInstant;

    fn sub(self, rhs: Duration) -> LeaseInstant {
        LeaseInstant(self.0.saturating_sub(rhs))
    }
}

/// The clock leases are counted on (see the module docs). The client uses
/// the system's clock; tests may inject another one (feature `test-support`).
pub trait LeaseClock: Send + Sync + fmt::Debug + 'static {
    /// The current reading; never goes backwards.
    fn now(&self) -> LeaseInstant;

    /// Resolves once [`LeaseClock::now`] has reached `deadline` (and, for the real
    /// clock, within a quarter of a second of it even across a suspend).
    fn sleep_until(&self, deadline: LeaseInstant) -> BoxFuture<'static, ()>;
}

/// The system's lease clock: `CLOCK_BOOTTIME` on Linux, `Instant` elsewhere.
pub(crate) fn system_clock() -> Arc<dyn LeaseClock> {
    Arc::new(SystemClock::new())
}

/// `CLOCK_BOOTTIME` on Linux and Android; elsewhere `Instant` since the clock's creation.
#[derive(Debug, Clone, Copy)]
struct SystemClock {
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    origin: std::time::Instant,
}

impl SystemClock {
    fn new() -> SystemClock {
        SystemClock {
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            origin: std::time::Instant::now(),
        }
    }
}

impl LeaseClock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now(&self) -> LeaseInstant {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        // The kernel's timespec is normalized and never negative on this clock.
        let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
        LeaseInstant(Duration::new(seconds, nanos))
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn now(&self) -> LeaseInstant {
        LeaseInstant(self.origin.elapsed())
    }

    fn sleep_until(&self, deadline: LeaseInstant) -> BoxFuture<'static, ()> {
        let clock = *self;
        Box::pin(async move {
            loop {
                let left = deadline.saturating_duration_since(clock.now());
                if left.is_zero() {
                    return;
                }
                tokio::time::sleep(left.min(MAX_NAP)).await;
            }
        })
    }
}

/// A lease clock for tests: it runs with tokio's clock (so paused tokio time drives it)
/// and [`ManualClock::advance`] makes it jump forward. That is what a suspend looks like
/// from inside the process: nothing ran, `CLOCK_MONOTONIC` and tokio's timers stood
/// still, and on waking the lease clock is ahead by the time asleep. Waits on it wake as
/// soon as a jump passes their deadline.
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
pub struct ManualClock {
    origin: tokio::time::Instant,
    start: Duration,
    jumped: tokio::sync::watch::Sender<Duration>,
}

#[cfg(any(test, feature = "test-support"))]
impl ManualClock {
    /// A clock reading `start` now.
    pub fn new(start: Duration) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            origin: tokio::time::Instant::now(),
            start,
            jumped: tokio::sync::watch::channel(Duration::ZERO).0,
        })
    }

    /// Jump forward by `by`, as after a suspend of that long.
    pub fn advance(&self, by: Duration) {
        self.jumped.send_modify(|jumped| *jumped += by);
    }
}

#[cfg(any(test, feature = "test-support"))]
impl LeaseClock for ManualClock {
    fn now(&self) -> LeaseInstant {
        LeaseInstant(self.start + self.origin.elapsed() + *self.jumped.borrow())
    }

    fn sleep_until(&self, deadline: LeaseInstant) -> BoxFuture<'static, ()> {
        let (origin, start) = (self.origin, self.start);
        let mut jumped = self.jumped.subscribe();
        Box::pin(async move {
            loop {
                let now = LeaseInstant(start + origin.elapsed() + *jumped.borrow_and_update());
                let left = deadline.saturating_duration_since(now);
                if left.is_zero() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(left) => {}
                    changed = jumped.changed() => {
                        if changed.is_err() {
                            // The clock is gone: no more jumps, only time.
                            tokio::time::sleep(left).await;
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_never_goes_backwards() {
        let clock = system_clock();
        let mut last = clock.now();
        for _ in 0..1_000 {
            let now = clock.now();
            assert!(now >= last);
            last = now;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_clock_wakes_its_sleepers_when_it_jumps() {
        let clock = ManualClock::new(Duration::from_secs(100));
        let deadline = clock.now() + Duration::from_secs(10);
        assert_eq!(
            clock.now(),
            LeaseInstant::from_origin(Duration::from_secs(100))
        );
        let sleeper = tokio::spawn(clock.sleep_until(deadline));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(60));
        // Paused tokio time does not move: only the jump can have woken it.
        tokio::time::timeout(Duration::from_millis(1), sleeper)
            .await
            .expect("woken by the jump")
            .unwrap();
    }
}
