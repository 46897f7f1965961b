//! Time source seam.

use parking_lot::{Condvar, Mutex};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in **milliseconds since the Unix epoch**.
///
/// The job generator's timer, block intervals and timeouts all read time through a `Clock`, so tests
/// can drive them with a [`ManualClock`].
pub trait Clock: Send + Sync + fmt::Debug {
    /// Current time, ms since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Blocks until `now_ms() >= target_ms` and returns the time then (Spark's
    /// `Clock.waitTillTime`). A [`ManualClock`] returns only once a test has advanced it that far.
    fn wait_till(&self, target_ms: u64) -> u64;

    /// Like [`wait_till`](Clock::wait_till) but gives up after `max_real_wait` of real time,
    /// returning `None` (used so stoppable loops can re-check their stop flag).
    fn wait_till_timeout(&self, target_ms: u64, max_real_wait: Duration) -> Option<u64>;
}

/// The system clock (`SystemTime::now()`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    fn wait_till(&self, target_ms: u64) -> u64 {
        loop {
            let now = self.now_ms();
            if now >= target_ms {
                return now;
            }
            std::thread::sleep(Duration::from_millis((target_ms - now).min(1000)));
        }
    }

    fn wait_till_timeout(&self, target_ms: u64, max_real_wait: Duration) -> Option<u64> {
        let deadline = std::time::Instant::now() + max_real_wait;
        loop {
            let now = self.now_ms();
            if now >= target_ms {
                return Some(now);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(target_ms - now).min(left));
        }
    }
}

/// A clock that moves only when told to (Spark's `ManualClock`). Cheap to clone; clones share time.
#[derive(Clone, Default)]
pub struct ManualClock {
    inner: Arc<(Mutex<u64>, Condvar)>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now_ms", &self.now_ms())
            .finish()
    }
}

impl ManualClock {
    /// A manual clock at `start_ms`.
    pub fn new(start_ms: u64) -> Self {
        ManualClock {
            inner: Arc::new((Mutex::new(start_ms), Condvar::new())),
        }
    }

    /// Sets the time to `ms` (may not go backwards: earlier values are ignored) and wakes waiters.
    pub fn set_time(&self, ms: u64) {
        let (lock, cv) = &*self.inner;
        let mut t = lock.lock();
        if ms > *t {
            *t = ms;
        }
        cv.notify_all();
    }

    /// Advances the time by `by_ms` and wakes waiters.
    pub fn advance(&self, by_ms: u64) {
        let (lock, cv) = &*self.inner;
        let mut t = lock.lock();
        *t = t.saturating_add(by_ms);
        cv.notify_all();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.inner.0.lock()
    }

    fn wait_till(&self, target_ms: u64) -> u64 {
        let (lock, cv) = &*self.inner;
        let mut t = lock.lock();
        while *t < target_ms {
            cv.wait(&mut t);
        }
        *t
    }

    fn wait_till_timeout(&self, target_ms: u64, max_real_wait: Duration) -> Option<u64> {
        let (lock, cv) = &*self.inner;
        let deadline = std::time::Instant::now() + max_real_wait;
        let mut t = lock.lock();
        while *t < target_ms {
            if cv.wait_until(&mut t, deadline).timed_out() {
                return (*t >= target_ms).then_some(*t);
            }
        }
        Some(*t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_wakes_waiters_only_when_advanced_far_enough() {
        let c = ManualClock::new(1000);
        let c2 = c.clone();
        let h = std::thread::spawn(move || c2.wait_till(1500));
        c.advance(200);
        assert_eq!(c.wait_till_timeout(1500, Duration::from_millis(20)), None);
        c.advance(300);
        assert_eq!(h.join().unwrap(), 1500);
    }

    #[test]
    fn manual_clock_never_goes_back() {
        let c = ManualClock::new(1000);
        c.set_time(500);
        assert_eq!(c.now_ms(), 1000);
    }

    #[test]
    fn system_clock_is_after_2020() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
