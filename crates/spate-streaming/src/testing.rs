//! Test support in the style of Spark's `TestSuiteBase`: run an operation over queued input for a
//! number of batches on a [`ManualClock`] and collect the outputs.
//!
//! ```
//! use spate_streaming::testing::run_operation;
//! use spate_types::DurationMs;
//!
//! let out = run_operation(
//!     vec![vec!["a b", "a"], vec!["b"]],
//!     DurationMs(1000),
//!     2,
//!     |s| s.flat_map(|l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
//!         .map(|w| (w, 1u64))?
//!         .reduce_by_key(|a, b| a + b),
//! )
//! .unwrap();
//! let sorted: Vec<Vec<(String, u64)>> = out.into_iter().map(|mut b| { b.sort(); b }).collect();
//! assert_eq!(sorted, vec![vec![("a".into(), 2), ("b".into(), 1)], vec![("b".into(), 1)]]);
//! ```

use crate::config::StreamingConfig;
use crate::context::StreamingContext;
use crate::dstream::{DStream, Data};
use crate::error::{Result, StreamingError};
use parking_lot::{Mutex, MutexGuard};
use spate_io::ManualClock;
use spate_types::{BatchTime, DurationMs};
use std::sync::Arc;
use std::time::Duration;

static CONTEXT_LOCK: Mutex<()> = parking_lot::const_mutex(());

/// Serialises in-process tests that start a context (only one context may be active per
/// process). Hold the guard for the whole life of the context.
///
/// A test that panicked while its context was active leaves the process-wide "active context"
/// registration behind; taking the lock clears it, so one failure does not fail every later test
/// with `AnotherContextActive` (the leaked context's threads may still run; they share nothing).
pub fn context_lock() -> MutexGuard<'static, ()> {
    let g = CONTEXT_LOCK.lock();
    crate::context::clear_active_registration();
    g
}

/// A config for deterministic tests: the given batch interval, 2 worker threads, 2 partitions.
pub fn test_config(batch: DurationMs) -> StreamingConfig {
    StreamingConfig {
        app_name: "spate-test".into(),
        batch_interval: batch,
        parallelism: 2,
        default_partitions: 2,
        ..StreamingConfig::default()
    }
}

/// How long [`advance_and_wait`] waits (real time) for one batch.
pub const BATCH_WAIT: Duration = Duration::from_secs(20);

/// Advances `clock` to batch time `t` and waits until the batch is processed.
///
/// # Errors
/// The context's failure, or [`StreamingError::Failed`] on timeout.
pub fn advance_and_wait(ctx: &StreamingContext, clock: &ManualClock, t: BatchTime) -> Result<()> {
    clock.set_time(t.0);
    if ctx.await_batch_completed(t, BATCH_WAIT)? {
        Ok(())
    } else {
        Err(StreamingError::Failed {
            message: format!("batch {t} not completed within {BATCH_WAIT:?}"),
        })
    }
}

/// Runs `op` over `input` (one queue element per batch) for `num_batches` batches of `batch`
/// on a manual clock starting at 0 (batch times `batch, 2 × batch, ...`), and returns the output
/// of every batch at which the result stream produced one, in order (elements in partition order).
///
/// # Errors
/// Graph-building errors from `op`, or the first batch failure.
pub fn run_operation<T: Data, U: Data>(
    input: Vec<Vec<T>>,
    batch: DurationMs,
    num_batches: usize,
    op: impl FnOnce(DStream<T>) -> Result<DStream<U>>,
) -> Result<Vec<Vec<U>>> {
    Ok(run_operation_with_times(input, batch, num_batches, op)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// As [`run_operation`], with each output's batch time.
///
/// # Errors
/// As [`run_operation`].
pub fn run_operation_with_times<T: Data, U: Data>(
    input: Vec<Vec<T>>,
    batch: DurationMs,
    num_batches: usize,
    op: impl FnOnce(DStream<T>) -> Result<DStream<U>>,
) -> Result<Vec<(BatchTime, Vec<U>)>> {
    run_graph(batch, num_batches, |ctx| {
        let s = ctx.queue_stream(input, true, None)?;
        op(s)
    })
}

/// As [`run_operation_with_times`] for two inputs (join, union, cogroup).
///
/// # Errors
/// As [`run_operation`].
pub fn run_operation2<A: Data, B: Data, U: Data>(
    input1: Vec<Vec<A>>,
    input2: Vec<Vec<B>>,
    batch: DurationMs,
    num_batches: usize,
    op: impl FnOnce(DStream<A>, DStream<B>) -> Result<DStream<U>>,
) -> Result<Vec<Vec<U>>> {
    Ok(run_graph(batch, num_batches, |ctx| {
        let a = ctx.queue_stream(input1, true, None)?;
        let b = ctx.queue_stream(input2, true, None)?;
        op(a, b)
    })?
    .into_iter()
    .map(|(_, v)| v)
    .collect())
}

/// Builds a graph with `build` on a fresh test context (manual clock at 0), collects the stream it
/// returns, runs `num_batches` batches and stops the context.
///
/// # Errors
/// As [`run_operation`].
pub fn run_graph<U: Data>(
    batch: DurationMs,
    num_batches: usize,
    build: impl FnOnce(&StreamingContext) -> Result<DStream<U>>,
) -> Result<Vec<(BatchTime, Vec<U>)>> {
    let _guard = context_lock();
    let clock = ManualClock::new(0);
    let ctx = StreamingContext::with_clock(test_config(batch), Arc::new(clock.clone()))?;
    let out = build(&ctx)?;
    let collected: Arc<Mutex<Vec<(BatchTime, Vec<U>)>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&collected);
    out.foreach_batch(move |t, b| sink.lock().push((t, b.to_vec())))?;
    ctx.start()?;
    let mut result = Ok(());
    for i in 1..=num_batches as u64 {
        if let Err(e) = advance_and_wait(&ctx, &clock, BatchTime(i * batch.0)) {
            result = Err(e);
            break;
        }
    }
    ctx.stop(false)?;
    result?;
    let mut v = std::mem::take(&mut *collected.lock());
    v.sort_by_key(|(t, _)| *t);
    Ok(v)
}
