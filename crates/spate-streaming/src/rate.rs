//! Rate estimation for back-pressure: the control law that turns what a completed batch took into the
//! rate (records per second) the receivers should ingest next.
//!
//! The law is Spark's `PIDRateEstimator` (spark-streaming `scheduler/rate/PIDRateEstimator.scala`),
//! kept as a pure state machine: [`PidRateEstimator::compute`] takes the facts of one completed batch
//! and returns the new rate, with no clock, no locks and no I/O, so it is table-tested here and can be
//! replayed from a listener log.
//!
//! For a batch that completed at `time` (ms) with `records` processed in `processing_delay` ms after
//! waiting `scheduling_delay` ms:
//!
//! ```text
//! processing_rate  = records / processing_delay * 1000                      (records/s)
//! error            = latest_rate - processing_rate
//! historical_error = scheduling_delay * processing_rate / batch_interval     (records/s)
//! d_error          = (error - latest_error) / ((time - latest_time) / 1000)
//! new_rate         = max(min_rate,
//!                        latest_rate - proportional * error
//!                                    - integral * historical_error
//!                                    - derivative * d_error)
//! ```
//!
//! The first batch only seeds the estimator (its processing rate becomes the latest rate; no estimate
//! is returned), exactly as Spark's; a batch with no records, no processing delay, or a time not after
//! the latest one changes nothing and returns `None`. Defaults are Spark's: proportional 1.0, integral
//! 0.2, derivative 0.0, min rate 100 records/s.
//!
//! [`RateController`] turns the estimates into a receiver's rate limit (wired by
//! `StreamingContext::receiver_stream` when `backpressure` is on; see `docs/flow-control.md`).

use std::fmt;

/// The gains and bounds of a [`PidRateEstimator`]; defaults are Spark's
/// (`spark.streaming.backpressure.pid.*`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct PidGains {
    /// Weight of the current error (Spark's `pid.proportional`, default 1.0; must be >= 0).
    pub proportional: f64,
    /// Weight of the accumulated error, i.e. the backlog shown by the scheduling delay (Spark's
    /// `pid.integral`, default 0.2; must be >= 0).
    pub integral: f64,
    /// Weight of the error's rate of change (Spark's `pid.derived`, default 0.0; must be >= 0).
    pub derivative: f64,
    /// The lowest rate ever returned, records/s (Spark's `pid.minRate`, default 100; must be > 0).
    pub min_rate: f64,
}

impl Default for PidGains {
    fn default() -> Self {
        PidGains {
            proportional: 1.0,
            integral: 0.2,
            derivative: 0.0,
            min_rate: 100.0,
        }
    }
}

/// A gain or interval out of range; carries the field's name and the rejected value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RateEstimatorError {
    /// The batch interval must be at least 1 ms.
    #[error("rate estimator: batch interval must be > 0 ms, got {0} ms")]
    BatchInterval(u64),
    /// A gain is negative or not finite, or the min rate is not strictly positive.
    #[error("rate estimator: {name} must be {bound}, got {value}")]
    Gain {
        /// `proportional`, `integral`, `derivative` or `min_rate`.
        name: &'static str,
        /// What the value must satisfy (`>= 0`, `> 0`).
        bound: &'static str,
        /// The rejected value.
        value: f64,
    },
}

/// The facts of one completed batch the estimator reads (Spark's `compute` arguments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSample {
    /// When the batch completed (or its batch time), ms; must increase between samples.
    pub time_ms: u64,
    /// Records the batch processed.
    pub records: u64,
    /// How long the batch's jobs ran, ms.
    pub processing_delay_ms: u64,
    /// How long the batch waited before its jobs started, ms.
    pub scheduling_delay_ms: u64,
}

/// Spark's PID rate estimator as a pure state machine (see the module docs for the law).
#[derive(Clone, PartialEq)]
pub struct PidRateEstimator {
    batch_interval_ms: u64,
    gains: PidGains,
    seeded: bool,
    latest_time_ms: u64,
    latest_rate: f64,
    latest_error: f64,
}

impl fmt::Debug for PidRateEstimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PidRateEstimator")
            .field("batch_interval_ms", &self.batch_interval_ms)
            .field("gains", &self.gains)
            .field("latest_rate", &self.latest_rate)
            .finish()
    }
}

impl PidRateEstimator {
    /// An estimator for batches of `batch_interval_ms`; rejects a zero interval, negative or
    /// non-finite gains and a min rate that is not strictly positive (as Spark's constructor does).
    pub fn new(batch_interval_ms: u64, gains: PidGains) -> Result<Self, RateEstimatorError> {
        if batch_interval_ms == 0 {
            return Err(RateEstimatorError::BatchInterval(batch_interval_ms));
        }
        for (name, value) in [
            ("proportional", gains.proportional),
            ("integral", gains.integral),
            ("derivative", gains.derivative),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(RateEstimatorError::Gain {
                    name,
                    bound: ">= 0",
                    value,
                });
            }
        }
        if !(gains.min_rate.is_finite() && gains.min_rate > 0.0) {
            return Err(RateEstimatorError::Gain {
                name: "min_rate",
                bound: "> 0",
                value: gains.min_rate,
            });
        }
        Ok(PidRateEstimator {
            batch_interval_ms,
            gains,
            seeded: false,
            latest_time_ms: 0,
            latest_rate: -1.0,
            latest_error: -1.0,
        })
    }

    /// The last rate returned (or seeded), records/s; `None` before the first usable batch.
    pub fn latest_rate(&self) -> Option<f64> {
        self.seeded.then_some(self.latest_rate)
    }

    /// Feeds one completed batch; returns the new rate in records/s, or `None` when the sample only
    /// seeds the estimator (the first usable one) or carries no information (no records, no
    /// processing delay, or a time not after the latest sample's).
    pub fn compute(&mut self, s: BatchSample) -> Option<f64> {
        let usable = (!self.seeded || s.time_ms > self.latest_time_ms)
            && s.records > 0
            && s.processing_delay_ms > 0;
        if !usable {
            return None;
        }
        let processing_rate = s.records as f64 / s.processing_delay_ms as f64 * 1000.0;
        if !self.seeded {
            self.seeded = true;
            self.latest_time_ms = s.time_ms;
            self.latest_rate = processing_rate;
            self.latest_error = 0.0;
            return None;
        }
        let since_update_s = (s.time_ms - self.latest_time_ms) as f64 / 1000.0;
        let error = self.latest_rate - processing_rate;
        let historical_error =
            s.scheduling_delay_ms as f64 * processing_rate / self.batch_interval_ms as f64;
        let d_error = (error - self.latest_error) / since_update_s;
        let g = self.gains;
        let new_rate = (self.latest_rate
            - g.proportional * error
            - g.integral * historical_error
            - g.derivative * d_error)
            .max(g.min_rate);
        self.latest_time_ms = s.time_ms;
        self.latest_rate = new_rate;
        self.latest_error = error;
        Some(new_rate)
    }
}

/// The rate limit of one receiver after each completed batch (pure; Spark's `RateController`
/// plus a load hysteresis): the PID estimate applies while the engine is *loaded* — it enters that
/// state when a batch's scheduling plus processing delay reaches the batch interval and leaves it
/// when that falls below half the interval; otherwise only the hard cap (`max_rate_per_receiver`)
/// applies. (Spark applies every estimate: tiny batches, whose processing time is mostly fixed
/// overhead, then estimate a low rate that throttles the next burst of an idle stream.)
#[derive(Debug, Clone, PartialEq)]
pub struct RateController {
    estimator: PidRateEstimator,
    batch_interval_ms: u64,
    cap: Option<u64>,
    loaded: bool,
    limit: Option<u64>,
}

impl RateController {
    /// A controller for batches of `batch_interval_ms`, with `cap` the hard limit (records/s,
    /// `None`: none) and `initial_rate` the limit until the first completed batch
    /// (`spark.streaming.backpressure.initialRate`).
    ///
    /// # Errors
    /// As [`PidRateEstimator::new`].
    pub fn new(
        batch_interval_ms: u64,
        gains: PidGains,
        cap: Option<u64>,
        initial_rate: Option<u64>,
    ) -> Result<Self, RateEstimatorError> {
        let cap = cap.filter(|c| *c > 0);
        Ok(RateController {
            estimator: PidRateEstimator::new(batch_interval_ms, gains)?,
            batch_interval_ms,
            cap,
            loaded: false,
            limit: min_limit(initial_rate.filter(|r| *r > 0), cap),
        })
    }

    /// The current limit, records/s (`None`: unlimited).
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Feeds one completed batch of this receiver (its records, the batch's delays) and returns
    /// the new limit, records/s (`None`: unlimited).
    pub fn on_batch_completed(&mut self, s: BatchSample) -> Option<u64> {
        let estimate = self.estimator.compute(s);
        let total = s.scheduling_delay_ms.saturating_add(s.processing_delay_ms);
        self.loaded = if self.loaded {
            total.saturating_mul(2) >= self.batch_interval_ms
        } else {
            total >= self.batch_interval_ms
        };
        self.limit = if !self.loaded {
            self.cap
        } else {
            match estimate.or(self.estimator.latest_rate()) {
                // `as` saturates; the estimate is at least min_rate > 0.
                Some(r) => min_limit(Some(r.ceil() as u64), self.cap),
                None => self.limit,
            }
        };
        self.limit
    }
}

/// The tighter of two optional limits.
fn min_limit(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    //! Cases of Spark's `PIDRateEstimatorSuite`, named after them, with Spark's inputs.
    use super::*;

    fn gains(p: f64, i: f64, d: f64, min: f64) -> PidGains {
        PidGains {
            proportional: p,
            integral: i,
            derivative: d,
            min_rate: min,
        }
    }

    fn sample(time_ms: u64, records: u64, proc_ms: u64, sched_ms: u64) -> BatchSample {
        BatchSample {
            time_ms,
            records,
            processing_delay_ms: proc_ms,
            scheduling_delay_ms: sched_ms,
        }
    }

    #[test]
    fn estimator_checks_ranges() {
        let cases: &[(u64, PidGains, Option<&str>)] = &[
            (0, PidGains::default(), Some("interval")),
            (100, gains(-1.0, 0.0, 0.0, 10.0), Some("proportional")),
            (100, gains(0.0, -1.0, 0.0, 10.0), Some("integral")),
            (100, gains(0.0, 0.0, -1.0, 10.0), Some("derivative")),
            (100, gains(0.0, 0.0, 0.0, 0.0), Some("min_rate")),
            (100, gains(0.0, 0.0, 0.0, -1.0), Some("min_rate")),
            (100, gains(f64::NAN, 0.0, 0.0, 1.0), Some("proportional")),
            (100, gains(0.0, 0.0, 0.0, 1.0), None),
            (1, PidGains::default(), None),
        ];
        for (interval, g, expect) in cases {
            let r = PidRateEstimator::new(*interval, *g);
            match (expect, &r) {
                (None, Ok(_)) => {}
                (Some("interval"), Err(RateEstimatorError::BatchInterval(0))) => {}
                (Some(name), Err(RateEstimatorError::Gain { name: n, .. })) if n == name => {}
                _ => panic!("interval {interval} gains {g:?}: expected {expect:?}, got {r:?}"),
            }
        }
    }

    #[test]
    fn first_estimate_is_none() {
        let mut p = PidRateEstimator::new(20, PidGains::default()).unwrap();
        assert_eq!(p.compute(sample(0, 10, 10, 0)), None);
        assert_eq!(
            p.latest_rate(),
            Some(1000.0),
            "the first batch seeds the rate"
        );
    }

    #[test]
    fn second_estimate_is_not_none() {
        let mut p = PidRateEstimator::new(20, PidGains::default()).unwrap();
        p.compute(sample(0, 10, 10, 0));
        assert!(p.compute(sample(10, 10, 10, 0)).is_some());
    }

    #[test]
    fn no_estimate_when_no_time_difference_between_successive_calls() {
        let mut p = PidRateEstimator::new(20, PidGains::default()).unwrap();
        p.compute(sample(0, 10, 10, 0));
        assert!(p.compute(sample(10, 10, 10, 0)).is_some());
        assert_eq!(p.compute(sample(10, 10, 10, 0)), None);
        assert_eq!(p.compute(sample(5, 10, 10, 0)), None, "time going back");
    }

    #[test]
    fn no_estimate_when_no_records_in_previous_batch() {
        let mut p = PidRateEstimator::new(20, PidGains::default()).unwrap();
        p.compute(sample(0, 10, 10, 0));
        assert_eq!(p.compute(sample(10, 0, 10, 0)), None);
        assert_eq!(p.compute(sample(20, 0, 10, 0)), None);
        assert!(p.compute(sample(30, 10, 10, 0)).is_some());
    }

    #[test]
    fn no_estimate_when_there_is_no_processing_delay() {
        let mut p = PidRateEstimator::new(20, PidGains::default()).unwrap();
        assert_eq!(p.compute(sample(0, 10, 0, 0)), None, "does not seed either");
        assert_eq!(p.latest_rate(), None);
        p.compute(sample(10, 10, 10, 0));
        assert_eq!(p.compute(sample(20, 10, 0, 0)), None);
    }

    #[test]
    fn estimate_is_never_less_than_min_rate() {
        let min = 10.0;
        let mut p = PidRateEstimator::new(20, gains(1.0, 1.0, 0.0, min)).unwrap();
        // A large backlog (scheduling delay) drives the integral term far below zero.
        let mut out = Vec::new();
        for i in 0..50u64 {
            out.push(p.compute(sample(i * 100, 1000, 10 + i * 10, 10_000)));
        }
        assert_eq!(out[0], None);
        assert!(out[1..].iter().all(|r| r.is_some_and(|r| r >= min)));
        assert!(out[1..].contains(&Some(min)), "{out:?}");
    }

    #[test]
    fn with_no_accumulated_or_positive_error_i_gt_0_follow_the_processing_speed() {
        let mut p = PidRateEstimator::new(20, gains(1.0, 1.0, 0.0, 10.0)).unwrap();
        // 1000 records in 20 ms each batch: a steady 50 000 records/s, nothing queued.
        let out: Vec<_> = (1..=50u64)
            .map(|i| p.compute(sample(i * 20, 1000, 20, 0)))
            .collect();
        assert_eq!(out[0], None);
        assert!(out[1..].iter().all(|r| *r == Some(50_000.0)), "{out:?}");
    }

    #[test]
    fn with_no_accumulated_but_some_positive_error_i_gt_0_follow_the_processing_speed() {
        let mut p = PidRateEstimator::new(20, gains(1.0, 1.0, 0.0, 10.0)).unwrap();
        // Processing slows down batch after batch; with no scheduling delay and proportional 1 the
        // estimate is exactly each batch's processing rate.
        let elements: Vec<u64> = (0..50).map(|i| 1000 - i * 10).collect();
        let mut out = Vec::new();
        for (i, e) in elements.iter().enumerate() {
            out.push(p.compute(sample((i as u64 + 1) * 20, *e, 20, 0)));
        }
        assert_eq!(out[0], None);
        for (i, r) in out.iter().enumerate().skip(1) {
            let expected = elements[i] as f64 / 20.0 * 1000.0;
            assert!(
                (r.unwrap() - expected).abs() < 1e-6,
                "batch {i}: {r:?} vs {expected}"
            );
        }
    }

    #[test]
    fn with_some_accumulated_and_some_positive_error_i_gt_0_stay_below_the_processing_speed() {
        let mut p = PidRateEstimator::new(20, gains(1.0, 0.01, 0.0, 10.0)).unwrap();
        let elements: Vec<u64> = (0..50).map(|i| 1000 - i * 10).collect();
        let sched: Vec<u64> = (0..50).map(|i| 20 + i * 2).collect();
        let mut out = Vec::new();
        for i in 0..50 {
            out.push(p.compute(sample((i as u64 + 1) * 20, elements[i], 20, sched[i])));
        }
        assert_eq!(out[0], None);
        for (i, r) in out.iter().enumerate().skip(1) {
            let processing = elements[i] as f64 / 20.0 * 1000.0;
            let r = r.unwrap();
            assert!(r < processing, "batch {i}: {r} >= {processing}");
            assert!(r >= 10.0);
        }
    }

    #[test]
    fn a_step_down_in_processing_speed_settles_at_the_new_speed_without_backlog() {
        // Stability on a step change: throughput halves; with Spark's defaults and the backlog
        // draining (scheduling delay falling to 0), the rate converges to the new processing rate.
        let mut p = PidRateEstimator::new(1000, PidGains::default()).unwrap();
        p.compute(sample(1000, 100_000, 500, 0));
        let mut last = 0.0;
        for i in 2..40u64 {
            let sched = if i < 10 { 1000 / i } else { 0 };
            last = p.compute(sample(i * 1000, 50_000, 500, sched)).unwrap();
        }
        assert!((last - 100_000.0).abs() < 1.0, "{last}");
    }

    #[test]
    fn controller_limits_only_while_loaded_and_never_above_the_cap() {
        // (records, processing ms, scheduling ms) per 1 s batch → expected limit after it.
        type Case = (
            &'static str,
            Option<u64>,
            Option<u64>,
            &'static [(u64, u64, u64, Option<u64>)],
        );
        let cases: &[Case] = &[
            (
                "idle stream: tiny fast batches never limit",
                None,
                None,
                &[(10, 5, 0, None), (10, 50, 0, None), (5, 50, 1, None)],
            ),
            (
                "overload: limited to the processing rate, lifted when batches get short",
                None,
                None,
                &[
                    (2_000_000, 1000, 0, Some(2_000_000)), // seeds: the seeded rate
                    (2_000_000, 1000, 0, Some(2_000_000)),
                    (1_000_000, 600, 0, Some(1_666_667)), // still loaded (>= half)
                    (500_000, 300, 0, None),              // below half: lifted
                ],
            ),
            (
                "a backlog (scheduling delay) pulls the limit below the processing rate",
                None,
                None,
                &[
                    (1_000_000, 1000, 0, Some(1_000_000)),
                    (1_000_000, 1000, 2000, Some(600_000)),
                ],
            ),
            (
                "the hard cap wins over the estimate and applies when unloaded",
                Some(500_000),
                None,
                &[
                    (10, 5, 0, Some(500_000)),
                    (1_000_000, 1000, 0, Some(500_000)),
                    (1_000_000, 1000, 0, Some(500_000)),
                ],
            ),
            (
                "the initial rate holds until a batch completes",
                Some(500_000),
                Some(1000),
                &[(1000, 1000, 0, Some(1000)), (1000, 10, 0, Some(500_000))],
            ),
        ];
        for (name, cap, initial, steps) in cases {
            let mut c = RateController::new(1000, PidGains::default(), *cap, *initial).unwrap();
            assert_eq!(
                c.limit(),
                initial.map(|i| i.min(cap.unwrap_or(u64::MAX))).or(*cap),
                "{name}"
            );
            for (i, (records, proc_ms, sched_ms, want)) in steps.iter().enumerate() {
                let got = c.on_batch_completed(sample(
                    (i as u64 + 1) * 1000,
                    *records,
                    *proc_ms,
                    *sched_ms,
                ));
                assert_eq!(got, *want, "{name}, batch {i}");
            }
        }
    }
}
