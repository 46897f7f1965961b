//! Shared helpers for spate benchmarks (`benches/benches/*.rs`): the Spark harness corpus, the
//! xorshift word lines, and the counted `store_many` of the bench receivers.

#[path = "../../crates/spate-cli/src/jobs/pyrand.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod pyrand;

use spate_sources::{ReceiverContext, ReceiverError, StoreError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

/// The Spark harness corpus: `common.generate_lines(n, seed)` (10 words a line over the harness's
/// 10 000-word vocabulary, seed 20240601), one `String` per line.
#[must_use]
pub fn corpus_lines(n: usize, seed: u64) -> Vec<String> {
    let vocab = pyrand::vocabulary(10_000, 20_240_601);
    let mut rng = pyrand::PyRandom::new(seed);
    (0..n)
        .map(|_| {
            let mut l = String::with_capacity(80);
            for k in 0..10 {
                if k > 0 {
                    l.push(' ');
                }
                l.push_str(&vocab[rng.choices_index(vocab.len())]);
            }
            l
        })
        .collect()
}

/// [`corpus_lines`] as the harness writes it: joined with `\n` plus a final `\n`.
#[must_use]
pub fn corpus_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 80);
    for l in corpus_lines(n, seed) {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

/// One line of 10 words `<prefix><x % vocabulary>`, advancing the xorshift state `x`.
pub fn xorshift_line(x: &mut u64, prefix: &str, vocabulary: u64, capacity: usize) -> String {
    let mut l = String::with_capacity(capacity);
    for i in 0..10 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        if i > 0 {
            l.push(' ');
        }
        l.push_str(prefix);
        l.push_str(&(*x % vocabulary).to_string());
    }
    l
}

/// Stores `items` through `ctx.store_many` and adds their count to `stored`; `false` when the
/// feeding thread should end: the receiver stopped, or the store failed (the first three failures
/// are printed, tagged `who`, and counted in `failures`).
pub fn store_counted<T: Send + 'static>(
    ctx: &ReceiverContext<T>,
    items: Vec<T>,
    stored: &AtomicU64,
    failures: &AtomicU64,
    who: &str,
) -> bool {
    let n = items.len() as u64;
    match ctx.store_many(items) {
        Ok(()) => {
            stored.fetch_add(n, Ordering::AcqRel);
            true
        }
        Err(StoreError::Stopped(_)) => false,
        Err(e) => {
            if failures.fetch_add(1, Ordering::AcqRel) < 3 {
                eprintln!("{who}: {e}");
            }
            false
        }
    }
}

/// Spawns a bench receiver's worker thread named `name`; a failed spawn is a fatal
/// [`ReceiverError::Start`].
///
/// # Errors
/// When the thread cannot be spawned.
pub fn spawn_worker<F: FnOnce() + Send + 'static>(
    name: String,
    f: F,
) -> Result<JoinHandle<()>, ReceiverError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map_err(|e| ReceiverError::Start {
            message: e.to_string(),
            fatal: true,
        })
}

/// A bench receiver's `on_stop`: raises `stop`, then joins (and forgets) every thread.
pub fn stop_and_join(stop: &AtomicBool, threads: &mut Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::SeqCst);
    for t in threads.drain(..) {
        let _ = t.join();
    }
}

/// Starts the restored `ctx` and waits up to `timeout` for its first rescheduled batch; returns
/// the time since `t0` (taken before `get_or_create`) and the restart report.
///
/// # Panics
/// If the start fails, nothing was rescheduled, or the batch does not complete in time.
#[must_use]
pub fn start_until_first_rescheduled(
    ctx: &spate_streaming::StreamingContext,
    t0: std::time::Instant,
    timeout: std::time::Duration,
) -> (std::time::Duration, spate_streaming::RestartReport) {
    ctx.start().expect("start");
    let report = ctx.restart_report().expect("report");
    let first = *report
        .batches_rescheduled
        .first()
        .expect("a rescheduled batch");
    let done = ctx
        .await_batch_completed(spate_types::BatchTime(first), timeout)
        .expect("first batch");
    let dt = t0.elapsed();
    assert!(
        done,
        "first rescheduled batch {first} not completed in {timeout:?}"
    );
    (dt, report)
}

/// Waits up to `timeout` for the last batch `report` rescheduled.
///
/// # Panics
/// If nothing was rescheduled or the batch does not complete in time.
pub fn await_last_rescheduled(
    ctx: &spate_streaming::StreamingContext,
    report: &spate_streaming::RestartReport,
    timeout: std::time::Duration,
) {
    let last = *report.batches_rescheduled.last().expect("last");
    assert!(ctx
        .await_batch_completed(spate_types::BatchTime(last), timeout)
        .expect("rescheduled batches"));
}

/// `root/<group>/<name>`, emptied and created (a bench's scratch directory).
///
/// # Panics
/// If the directory cannot be created.
#[must_use]
pub fn fresh_dir(root: &std::path::Path, group: &str, name: &str) -> std::path::PathBuf {
    let d = root.join(group).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("bench dir");
    d
}

/// The median of `v` (sorted in place; the upper one of an even count), NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Bytes this process caused to be written to storage (`write_bytes` of `/proc/self/io`; 0 when
/// unavailable).
#[must_use]
pub fn proc_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}
