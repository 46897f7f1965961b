//! Batch times and durations, both in milliseconds.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A span of time in **milliseconds** (Spark's `Duration`): batch interval, window, slide, block
/// interval, timeouts.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct DurationMs(pub u64);

impl DurationMs {
    /// Zero milliseconds.
    pub const ZERO: DurationMs = DurationMs(0);

    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        DurationMs(ms)
    }

    /// `s` seconds (saturating).
    pub const fn from_secs(s: u64) -> Self {
        DurationMs(s.saturating_mul(1000))
    }

    /// The length in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// True if this duration is a positive whole multiple of `unit` (Spark's `Duration.isMultipleOf`,
    /// used to validate window and slide against the batch interval). A zero `unit` divides nothing.
    pub const fn is_multiple_of(self, unit: DurationMs) -> bool {
        unit.0 != 0 && self.0 != 0 && self.0.is_multiple_of(unit.0)
    }

    /// Converts to a [`std::time::Duration`].
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

impl From<std::time::Duration> for DurationMs {
    fn from(d: std::time::Duration) -> Self {
        DurationMs(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for DurationMs {
    /// Human form used in diffs and logs: `200 ms`, `30 s`, `1500 ms`, `2 min`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms != 0 && ms.is_multiple_of(60_000) {
            write!(f, "{} min", ms / 60_000)
        } else if ms != 0 && ms.is_multiple_of(1000) {
            write!(f, "{} s", ms / 1000)
        } else {
            write!(f, "{ms} ms")
        }
    }
}

/// The time of a batch: **milliseconds since the Unix epoch**, on the grid
/// `zero_time + k * batch_interval` (Spark's `Time`). Its `Display` is Spark's `"<ms> ms"`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct BatchTime(pub u64);

/// Errors of batch-time arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The interval was zero; every grid needs a positive interval.
    #[error("interval must be positive, got 0 ms")]
    ZeroInterval,
    /// The time is before the grid's zero time.
    #[error("time {time} ms is before zero time {zero} ms")]
    BeforeZero {
        /// The offending time in ms.
        time: u64,
        /// The grid's zero time in ms.
        zero: u64,
    },
}

impl BatchTime {
    /// The batch time `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        BatchTime(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    #[must_use]
    pub const fn plus(self, d: DurationMs) -> Self {
        BatchTime(self.0.saturating_add(d.0))
    }

    /// `self - d`, saturating at 0.
    #[must_use]
    pub const fn minus(self, d: DurationMs) -> Self {
        BatchTime(self.0.saturating_sub(d.0))
    }

    /// The span from `earlier` to `self` (0 if `earlier` is later).
    pub const fn since(self, earlier: BatchTime) -> DurationMs {
        DurationMs(self.0.saturating_sub(earlier.0))
    }

    /// True if `self` lies on the grid `zero + k * interval` for some `k >= 0`.
    pub const fn is_on_grid(self, zero: BatchTime, interval: DurationMs) -> bool {
        interval.0 != 0 && self.0 >= zero.0 && (self.0 - zero.0).is_multiple_of(interval.0)
    }

    /// The largest grid point `<= self` (Spark's `Time.floor(interval, zeroTime)`).
    ///
    /// # Errors
    /// [`TimeError::ZeroInterval`] for a zero interval, [`TimeError::BeforeZero`] if `self < zero`.
    pub fn floor(self, zero: BatchTime, interval: DurationMs) -> Result<BatchTime, TimeError> {
        if interval.0 == 0 {
            return Err(TimeError::ZeroInterval);
        }
        if self.0 < zero.0 {
            return Err(TimeError::BeforeZero {
                time: self.0,
                zero: zero.0,
            });
        }
        Ok(BatchTime(
            zero.0 + (self.0 - zero.0) / interval.0 * interval.0,
        ))
    }

    /// The smallest grid point `> self`: the next batch time after `self`.
    ///
    /// # Errors
    /// As [`BatchTime::floor`].
    pub fn next_after(self, zero: BatchTime, interval: DurationMs) -> Result<BatchTime, TimeError> {
        Ok(self.floor(zero, interval)?.plus(interval))
    }

    /// Grid points in the half-open range `[from, until)`, in order (Spark's `Time.until`), where
    /// `from` is first rounded up to the grid.
    ///
    /// # Errors
    /// As [`BatchTime::floor`].
    pub fn grid_range(
        from: BatchTime,
        until: BatchTime,
        zero: BatchTime,
        interval: DurationMs,
    ) -> Result<Vec<BatchTime>, TimeError> {
        if interval.0 == 0 {
            return Err(TimeError::ZeroInterval);
        }
        let from = if from.0 < zero.0 { zero } else { from };
        let mut t = if from.is_on_grid(zero, interval) {
            from
        } else {
            from.next_after(zero, interval)?
        };
        let mut out = Vec::new();
        while t < until {
            out.push(t);
            t = t.plus(interval);
        }
        Ok(out)
    }
}

impl fmt::Display for BatchTime {
    /// Spark's format: `1700000000000 ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duration_display_picks_the_largest_exact_unit() {
        assert_eq!(DurationMs(200).to_string(), "200 ms");
        assert_eq!(DurationMs(30_000).to_string(), "30 s");
        assert_eq!(DurationMs(120_000).to_string(), "2 min");
        assert_eq!(DurationMs(1500).to_string(), "1500 ms");
        assert_eq!(DurationMs(0).to_string(), "0 ms");
    }

    #[test]
    fn batch_time_display_is_sparks() {
        assert_eq!(BatchTime(1_000).to_string(), "1000 ms");
    }

    #[test]
    fn multiples_follow_spark() {
        assert!(DurationMs(30_000).is_multiple_of(DurationMs(10_000)));
        assert!(!DurationMs(15_000).is_multiple_of(DurationMs(10_000)));
        assert!(!DurationMs(0).is_multiple_of(DurationMs(10_000)));
        assert!(!DurationMs(10).is_multiple_of(DurationMs(0)));
    }

    #[test]
    fn floor_and_grid_range() {
        let zero = BatchTime(1000);
        let iv = DurationMs(500);
        assert_eq!(BatchTime(2300).floor(zero, iv).unwrap(), BatchTime(2000));
        assert_eq!(
            BatchTime(2000).next_after(zero, iv).unwrap(),
            BatchTime(2500)
        );
        assert_eq!(
            BatchTime::grid_range(BatchTime(1900), BatchTime(3000), zero, iv).unwrap(),
            vec![BatchTime(2000), BatchTime(2500)]
        );
        assert_eq!(
            BatchTime(10).floor(zero, iv),
            Err(TimeError::BeforeZero {
                time: 10,
                zero: 1000
            })
        );
        assert_eq!(
            BatchTime(10).floor(zero, DurationMs(0)),
            Err(TimeError::ZeroInterval)
        );
    }

    proptest! {
        #[test]
        fn floor_is_on_grid_and_not_after(t in 0u64..1u64<<40, z in 0u64..1u64<<30, iv in 1u64..100_000) {
            let zero = BatchTime(z);
            let iv = DurationMs(iv);
            let t = BatchTime(t.max(z));
            let f = t.floor(zero, iv).unwrap();
            prop_assert!(f.is_on_grid(zero, iv));
            prop_assert!(f <= t);
            prop_assert!(t.0 - f.0 < iv.0);
        }
    }
}
