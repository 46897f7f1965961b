//! Stateful operators, end to end and at the state layer (criterion, `harness = false`).
//! Checkpoints, WALs and sled directories live under `CARGO_TARGET_TMPDIR` (the build disk, not a
//! tmpfs); every WAL append is fdatasync'd and every checkpoint object fsynced (file + directory).
//!
//! * `stateful_throughput/<variant>` (criterion, `iter_custom`): lines/s through the engine on the
//!   system clock, batch 1 s. Input: the Spark harness corpus (`common.generate_lines(500000, 1)`
//!   = `spate gen words --lines 500000 --seed 1`, 10 words per line, 75 B with the newline), fed
//!   by `SPATE_BENCH_STORE_THREADS` (8) threads that each clone a 75 000-line chunk (one `String`
//!   per line, as the socket receiver makes) and `store_many` it (`store_many` returns at the block
//!   cut, so the threads share each block), paused while more than `SPATE_BENCH_MAX_BACKLOG`
//!   (15 M) stored lines are not yet processed (bounded memory; the engine, not the feeder, sets
//!   the rate). Block interval `SPATE_BENCH_BLOCK_MS` (50 ms): a block is one WAL record, at most
//!   64 MiB, here ≤ 8 × 75 000 lines ≈ 46 MB; the feeder's cap is 8 × 75 000 × 20 = 12 M lines/s.
//!   The job is `spate wordcount`'s: `map_partitions(count words)` → `reduce_by_key(+)` →
//!   `update_state_by_key(total + Σ new)` (running totals, data checkpoint every 10 batches —
//!   the default for a 1 s batch — snapshot every 10th data checkpoint, deltas between) →
//!   `foreach_batch` (a full pass over the totals: lines processed = Σ totals / 10). Variants:
//!   - `stateless_nockpt`: no checkpoint, so no WAL and no state — `spate wordcount` without
//!     `--checkpoint` (per-batch counts). `update_state_by_key` requires a checkpoint, so this is
//!     the "off" baseline;
//!   - `stateful_ckpt_nowal`: checkpoint + state (memory backend), receiver WAL off;
//!   - `stateful_ckpt_wal`: checkpoint + state (memory) + receiver WAL (the `--checkpoint` job);
//!   - `stateful_ckpt_wal_sled`: the same with the sled backend.
//!
//!   One iteration = 100 000 lines processed. A sample runs from the output of one batch to the
//!   output of a later one (whole batches, steady state) and is scaled to the lines actually
//!   processed. Printed after the group: median per-batch processing time and lines, MB/s written
//!   to storage (`/proc/self/io`), CPU cores used by this process and by all others
//!   (`/proc/self/stat`, `/proc/stat`) during the sample windows.
//! * `restart_first_batch_1e6/<backend>` (criterion, `iter_custom`): `get_or_create` + `start` +
//!   the first rescheduled batch completed, for the stateful word count holding 10⁶ keys (loaded as
//!   initial state, data checkpoint every batch), `ManualClock`, no input records. As the recovery
//!   bench: each restart follows a non-graceful stop; the restart report's phases are printed.
//! * `state_size` (printed, not criterion: 10⁷ keys take seconds per step, criterion's minimum of
//!   10 samples would take minutes): spate-state directly, 2 partitions of
//!   `MemoryBackend<String, u64>` (the word count's types, keys `k00000000`…), exported in parallel
//!   as the engine does, committed with `Committer::commit` on a local directory (fsync). For
//!   10⁴, 10⁶, 10⁷ keys: full snapshot (export, commit, bytes); deltas with 1 %, 10 %, 100 % of the
//!   keys changed (`take_changes` + `export_delta`, commit, bytes); restore of a snapshot and of a
//!   snapshot + 9 deltas (1 % each): `resolve_latest` as the engine does it (`VerifyLevel::Full`,
//!   which reads and crc-checks every object) and with `VerifyLevel::Size`, `read_object` of every
//!   object, decode (`format::restore`) and import into a fresh `MemoryBackend` and into a fresh
//!   sled backend; plus a plain `std::fs::read` of the same object files (page cache warm) for the
//!   disk's read bandwidth. Medians of 10 / 5 / 3 repetitions (sled at 10⁷: 1).
//!
//! Run: `cargo bench -p spate-benches --bench state -- --warm-up-time 1 --measurement-time 3`
//! (a filter selects groups: `stateful_throughput`, `restart_first_batch_1e6`, `state_size`).
//! `SPATE_BENCH_STATE_SIZES=10000,1000000` limits the sweep. mimalloc is the global allocator.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../../crates/spate-cli/src/jobs/words.rs"]
#[allow(dead_code, unreachable_pub)]
mod words;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use spate_benches::{median, proc_write_bytes};
use spate_checkpoint::{
    BlockingCheckpointStore, CheckpointDraft, CheckpointKind, Committer, DataObjectRef,
    StoreOptions, VerifyLevel,
};
use spate_state::{
    export_delta, export_snapshot, format, import, MemoryBackend, SledStore, Start, StateBackend,
};
use spate_streaming::testing::advance_and_wait;
use spate_streaming::{
    BatchInfo, BatchTime, DurationMs, ManualClock, Receiver, ReceiverContext, ReceiverError,
    StateBackendKind, StreamingConfig, StreamingContext, StreamingListener, SystemClock,
    UpdateStateSpec,
};
use spate_types::{OperatorId, PartitionId};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BATCH: DurationMs = DurationMs(1000);
const CHUNK: usize = 75_000;
const UNIT: u64 = 100_000;

fn bench_dir(name: &str) -> PathBuf {
    spate_benches::fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "state-bench", name)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU ticks (1/100 s): (this process's user + system, the machine's busy, i.e. all but idle and
/// iowait).
fn cpu_ticks() -> (u64, u64) {
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            // (`rest` starts at field 3, the state letter.)
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    let all = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let l = s.lines().next()?.to_owned();
            let f: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: u64 = f.iter().take(8).sum();
            Some(total - f.get(3)? - f.get(4)?)
        })
        .unwrap_or(0);
    (own, all)
}

// ---------------------------------------------------------------------------------------------
// (1) stateful word count throughput

/// Store threads that clone corpus chunks into `store_many`, bounded by the unprocessed backlog.
struct Feeder {
    lines: Arc<Vec<String>>,
    threads_n: usize,
    stored: Arc<AtomicU64>,
    processed: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Receiver<String> for Feeder {
    fn on_start(&mut self, ctx: ReceiverContext<String>) -> Result<(), ReceiverError> {
        self.stop.store(false, Ordering::SeqCst);
        for k in 0..self.threads_n {
            let ctx = ctx.clone();
            let lines = Arc::clone(&self.lines);
            let (stored, processed, failures, stop) = (
                Arc::clone(&self.stored),
                Arc::clone(&self.processed),
                Arc::clone(&self.failures),
                Arc::clone(&self.stop),
            );
            let t = spate_benches::spawn_worker(format!("bench-store-{k}"), move || {
                let max_backlog = env_num("SPATE_BENCH_MAX_BACKLOG", 15_000_000);
                let mut off = (k * CHUNK) % lines.len();
                while !stop.load(Ordering::Relaxed) {
                    let backlog = stored
                        .load(Ordering::Acquire)
                        .saturating_sub(processed.load(Ordering::Acquire));
                    if backlog > max_backlog {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    let end = (off + CHUNK).min(lines.len());
                    let chunk: Vec<String> = lines[off..end].to_vec();
                    off = if end == lines.len() { 0 } else { end };
                    if !spate_benches::store_counted(
                        &ctx,
                        chunk,
                        &stored,
                        &failures,
                        "bench feeder",
                    ) {
                        return;
                    }
                }
            })?;
            self.threads.push(t);
        }
        Ok(())
    }
    fn on_stop(&mut self) {
        spate_benches::stop_and_join(&self.stop, &mut self.threads);
    }
    fn describe(&self) -> String {
        "bench feeder".into()
    }
}

/// Per-batch figures from the listener.
#[derive(Default)]
struct BatchLog {
    processing_ms: Mutex<Vec<(u64, f64)>>,
}

impl StreamingListener for BatchLog {
    fn on_batch_completed(&self, info: &BatchInfo) {
        if let Some(p) = info.processing_delay_ms() {
            self.processing_ms
                .lock()
                .expect("log")
                .push((info.num_records, p as f64));
        }
    }
}

struct Run {
    ctx: StreamingContext,
    /// Lines processed as of the last batch output, and when.
    last: Arc<Mutex<(Instant, u64)>>,
    processed: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    log: Arc<BatchLog>,
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    StatelessNoCkpt,
    StatefulNoWal,
    StatefulWal,
    StatefulWalSled,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::StatelessNoCkpt => "stateless_nockpt",
            Variant::StatefulNoWal => "stateful_ckpt_nowal",
            Variant::StatefulWal => "stateful_ckpt_wal",
            Variant::StatefulWalSled => "stateful_ckpt_wal_sled",
        }
    }
}

fn start_run(v: Variant, lines: &Arc<Vec<String>>) -> Run {
    let conf = StreamingConfig {
        app_name: "bench-state".into(),
        batch_interval: BATCH,
        block_interval: DurationMs(env_num("SPATE_BENCH_BLOCK_MS", 50)),
        parallelism: 2,
        default_partitions: 2,
        receiver_wal: v != Variant::StatefulNoWal,
        state_backend: if v == Variant::StatefulWalSled {
            StateBackendKind::Sled
        } else {
            StateBackendKind::Memory
        },
        ..StreamingConfig::default()
    };
    let processed = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let feeder = Feeder {
        lines: Arc::clone(lines),
        threads_n: env_num("SPATE_BENCH_STORE_THREADS", 8) as usize,
        stored: Arc::default(),
        processed: Arc::clone(&processed),
        failures: Arc::clone(&failures),
        stop: Arc::default(),
        threads: Vec::new(),
    };
    let last = Arc::new(Mutex::new((Instant::now(), 0u64)));
    let (p2, l2) = (Arc::clone(&processed), Arc::clone(&last));
    let stateful = v != Variant::StatelessNoCkpt;
    let build = move |c: &StreamingContext| -> spate_streaming::Result<()> {
        let counts = c
            .receiver_stream(feeder)?
            .map_partitions(|part: Vec<String>| words::count_words(&part))?
            .reduce_by_key(|a, b| a + b)?;
        let out = if stateful {
            counts.update_state_by_key(|new: &[u64], old: Option<u64>| {
                Some(old.unwrap_or(0) + new.iter().sum::<u64>())
            })?
        } else {
            counts
        };
        out.foreach_batch(move |_t, b| {
            let words: u64 = b.iter().map(|(_, n)| *n).sum();
            let now = if stateful {
                p2.store(words / 10, Ordering::Release);
                words / 10
            } else {
                p2.fetch_add(words / 10, Ordering::AcqRel) + words / 10
            };
            *l2.lock().expect("last") = (Instant::now(), now);
        })?;
        Ok(())
    };
    let ctx = if stateful {
        let dir = bench_dir(&format!("tput-{}", v.name()));
        let url = dir.join("ckpt").display().to_string();
        StreamingContext::get_or_create_with_clock(&url, conf, Arc::new(SystemClock), build)
            .expect("context")
    } else {
        let ctx = StreamingContext::with_clock(conf, Arc::new(SystemClock)).expect("context");
        build(&ctx).expect("graph");
        ctx
    };
    let log = Arc::new(BatchLog::default());
    ctx.add_listener(Arc::clone(&log) as Arc<dyn StreamingListener>);
    ctx.start().expect("start");
    Run {
        ctx,
        last,
        processed,
        failures,
        log,
    }
}

/// `iters` × [`UNIT`] lines from the last batch output on; scaled to the lines actually processed.
fn measure(
    run: &Run,
    iters: u64,
    written: &mut u64,
    window: &mut Duration,
    cpu: &mut (u64, u64, Duration),
) -> Duration {
    let (t0, p0) = *run.last.lock().expect("last");
    let w0 = proc_write_bytes();
    let (c0, a0) = cpu_ticks();
    let wall0 = Instant::now();
    let target = p0 + iters * UNIT;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (t1, p1) = *run.last.lock().expect("last");
        if p1 >= target {
            *written += proc_write_bytes().saturating_sub(w0);
            let (c1, a1) = cpu_ticks();
            cpu.0 += c1.saturating_sub(c0);
            cpu.1 += a1.saturating_sub(a0);
            cpu.2 += wall0.elapsed();
            let dt = t1 - t0;
            *window += dt;
            return dt.mul_f64((iters * UNIT) as f64 / (p1 - p0) as f64);
        }
        assert!(
            Instant::now() < deadline,
            "no progress: {p1} of {target} lines, {} feeder failures",
            run.failures.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn throughput_benches(c: &mut Criterion) {
    let lines = Arc::new(spate_benches::corpus_lines(500_000, 1));
    let bytes_per_line =
        lines.iter().map(|l| l.len() + 1).sum::<usize>() as f64 / lines.len() as f64;
    let mut g = c.benchmark_group("stateful_throughput");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(UNIT));
    let mut summary = Vec::new();
    for v in [
        Variant::StatelessNoCkpt,
        Variant::StatefulNoWal,
        Variant::StatefulWal,
        Variant::StatefulWalSled,
    ] {
        let run = start_run(v, &lines);
        // Settle: the first batches include start-up.
        while run.processed.load(Ordering::Acquire) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(1500));
        let n0 = run.log.processing_ms.lock().expect("log").len();
        let (mut written, mut window) = (0u64, Duration::ZERO);
        let mut cpu = (0u64, 0u64, Duration::ZERO);
        let (p_start, _) = (run.processed.load(Ordering::Acquire), ());
        g.bench_function(BenchmarkId::from_parameter(v.name()), |b| {
            b.iter_custom(|iters| measure(&run, iters, &mut written, &mut window, &mut cpu))
        });
        let lines_done = run.processed.load(Ordering::Acquire) - p_start;
        let mut proc: Vec<f64> = run.log.processing_ms.lock().expect("log")[n0..]
            .iter()
            .map(|x| x.1)
            .collect();
        let mut recs: Vec<f64> = run.log.processing_ms.lock().expect("log")[n0..]
            .iter()
            .map(|x| x.0 as f64)
            .collect();
        let fails = run.failures.load(Ordering::Relaxed);
        run.ctx.stop(false).expect("stop");
        summary.push(format!(
            "{}: {} batches, median processing {:.0} ms, median lines/batch {:.0}, {:.2} M lines processed; storage writes {:.0} MB/s over {:.1} s of sample windows (payload ≈ {:.0} B/line); feeder failures {fails}; CPU: this process {:.2} cores, other processes {:.2} cores",
            v.name(),
            proc.len(),
            median(&mut proc),
            median(&mut recs),
            lines_done as f64 / 1e6,
            written as f64 / 1e6 / window.as_secs_f64().max(1e-9),
            window.as_secs_f64(),
            bytes_per_line,
            cpu.0 as f64 / 100.0 / cpu.2.as_secs_f64().max(1e-9),
            cpu.1.saturating_sub(cpu.0) as f64 / 100.0 / cpu.2.as_secs_f64().max(1e-9),
        ));
        drop(run);
        let _ = std::fs::remove_dir_all(bench_dir(&format!("tput-{}", v.name())));
    }
    g.finish();
    eprintln!("\nstateful_throughput (after the warm-up):");
    for s in summary {
        eprintln!("  {s}");
    }
}

// ---------------------------------------------------------------------------------------------
// (3b) restart to the first batch with 10⁶ keys of state

/// A receiver that stores nothing.
struct Idle;

impl Receiver<String> for Idle {
    fn on_start(&mut self, _ctx: ReceiverContext<String>) -> Result<(), ReceiverError> {
        Ok(())
    }
    fn on_stop(&mut self) {}
    fn describe(&self) -> String {
        "idle".into()
    }
}

fn restart_app(
    c: &StreamingContext,
    initial: Option<Vec<(String, u64)>>,
    keys: &Arc<AtomicU64>,
) -> spate_streaming::Result<()> {
    let mut spec = UpdateStateSpec::new();
    if let Some(i) = initial {
        spec = spec.initial_state(i);
    }
    let keys = Arc::clone(keys);
    c.receiver_stream(Idle)?
        .map_partitions(|part: Vec<String>| words::count_words(&part))?
        .reduce_by_key(|a, b| a + b)?
        .update_state_by_key_with(spec, |new: &[u64], old: Option<u64>| {
            Some(old.unwrap_or(0) + new.iter().sum::<u64>())
        })?
        .checkpoint(BATCH)?
        .foreach_batch(move |_t, b| {
            keys.store(b.len() as u64, Ordering::Release);
        })?;
    Ok(())
}

fn key(i: usize) -> String {
    format!("k{i:08}")
}

#[derive(Default)]
struct RestartStats {
    phases: BTreeMap<String, Vec<f64>>,
    state_bytes: Vec<f64>,
    keys: Vec<f64>,
    batch_ms: Vec<f64>,
    restarts: u64,
}

fn restart_conf(backend: StateBackendKind) -> StreamingConfig {
    StreamingConfig {
        app_name: "bench-state-restart".into(),
        batch_interval: BATCH,
        parallelism: 2,
        default_partitions: 2,
        state_backend: backend,
        ..StreamingConfig::default()
    }
}

/// A fresh chain (10⁶ keys as initial state, batches 1000 and 2000 with a data checkpoint each,
/// non-graceful stop), then `iters` timed restarts.
fn restart_chain(
    name: &str,
    backend: StateBackendKind,
    n: usize,
    iters: u64,
    stats: &mut RestartStats,
) -> Duration {
    let dir = bench_dir(name);
    let url = dir.join("ckpt").display().to_string();
    let keys = Arc::new(AtomicU64::new(0));
    let initial: Vec<(String, u64)> = (0..n).map(|i| (key(i), i as u64)).collect();
    let clock = ManualClock::new(0);
    let mut init = Some(initial);
    let ctx = StreamingContext::get_or_create_with_clock(
        &url,
        restart_conf(backend),
        Arc::new(clock.clone()),
        |c| restart_app(c, init.take(), &keys),
    )
    .expect("fresh context");
    ctx.start().expect("start");
    for t in [1000, 2000] {
        let t0 = Instant::now();
        advance_and_wait(&ctx, &clock, BatchTime(t)).expect("batch");
        stats.batch_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    assert_eq!(keys.load(Ordering::Acquire), n as u64, "state size");
    ctx.stop(false).expect("stop");
    drop(ctx);
    let mut grid = 3000u64;
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let clock = ManualClock::new(grid + 100);
        keys.store(0, Ordering::Release);
        let t0 = Instant::now();
        let ctx = StreamingContext::get_or_create_with_clock(
            &url,
            restart_conf(backend),
            Arc::new(clock.clone()),
            |c| restart_app(c, None, &keys),
        )
        .expect("restart");
        let (dt, report) =
            spate_benches::start_until_first_rescheduled(&ctx, t0, Duration::from_secs(120));
        total += dt;
        assert_eq!(keys.load(Ordering::Acquire), n as u64, "restored keys");
        spate_benches::await_last_rescheduled(&ctx, &report, Duration::from_secs(120));
        let report = ctx.restart_report().expect("report");
        stats.restarts += 1;
        for (k, v) in &report.phases_ms {
            stats.phases.entry(k.clone()).or_default().push(*v);
        }
        for s in &report.state {
            stats.state_bytes.push(s.bytes as f64);
            stats.keys.push(s.keys as f64);
        }
        grid = report.restart_time.unwrap_or(grid + 1000);
        ctx.stop(false).expect("stop");
    }
    let _ = std::fs::remove_dir_all(&dir);
    total
}

fn restart_benches(c: &mut Criterion) {
    const N: usize = 1_000_000;
    let mut g = c.benchmark_group("restart_first_batch_1e6");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut all = Vec::new();
    for (name, backend) in [
        ("memory", StateBackendKind::Memory),
        ("sled", StateBackendKind::Sled),
    ] {
        let mut stats = RestartStats::default();
        let mut chain = 0;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| {
                chain += 1;
                restart_chain(
                    &format!("restart-{name}-{chain}"),
                    backend,
                    N,
                    iters,
                    &mut stats,
                )
            })
        });
        all.push((name, stats));
    }
    g.finish();
    eprintln!("\nrestart_first_batch_1e6 (medians over all timed restarts):");
    for (name, mut s) in all {
        let phases: Vec<String> = s
            .phases
            .iter_mut()
            .map(|(k, v)| format!("{k} {:.1}", median(v)))
            .collect();
        eprintln!(
            "  {name}: {} restarts, keys restored {:.0}, state bytes {:.1} MB, fresh-run batches (10⁶ keys, no input, data checkpoint each) {:.0} ms; phases ms: {}",
            s.restarts,
            median(&mut s.keys),
            median(&mut s.state_bytes) / 1e6,
            median(&mut s.batch_ms),
            phases.join(", ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (2) + (3a) data-checkpoint size and duration, restore, vs state size (spate-state directly)

const PARTS: usize = 2;
const OP: OperatorId = OperatorId(7);

type Mem = MemoryBackend<String, u64>;

fn build_state(n: usize) -> Vec<Mem> {
    let mut bs: Vec<Mem> = (0..PARTS).map(|_| Mem::new()).collect();
    for i in 0..n {
        bs[i % PARTS].put(key(i), (i as u64) * 7).expect("put");
    }
    for b in &mut bs {
        b.clear_changes();
    }
    bs
}

fn part(p: usize) -> PartitionId {
    PartitionId(p as u32)
}

/// `f(p, backend)` for every partition `p` in parallel (one thread per partition), in partition
/// order.
fn per_partition<F>(bs: &mut [Mem], f: F) -> Vec<Vec<u8>>
where
    F: Fn(usize, &mut Mem) -> Vec<u8> + Sync,
{
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = bs
            .iter_mut()
            .enumerate()
            .map(|(p, b)| s.spawn(move || f(p, b)))
            .collect();
        hs.into_iter().map(|h| h.join().expect("export")).collect()
    })
}

/// Snapshot objects of every partition, exported in parallel (one thread per partition).
fn export_snapshots(bs: &mut [Mem], t: u64) -> Vec<Vec<u8>> {
    per_partition(bs, |p, b| {
        let bytes = export_snapshot(&*b, OP, part(p), BatchTime(t)).expect("snapshot");
        b.clear_changes();
        bytes
    })
}

fn export_deltas(bs: &mut [Mem], t: u64, base: u64) -> Vec<Vec<u8>> {
    per_partition(bs, |p, b| {
        let ch = b.take_changes().expect("changes");
        export_delta(&ch, OP, part(p), BatchTime(t), BatchTime(base)).expect("delta")
    })
}

/// Changes every `1/frac`-th key (value + `round`).
fn change(bs: &mut [Mem], n: usize, frac: f64, round: u64) {
    let step = ((1.0 / frac).round() as usize).max(1);
    for i in (0..n).step_by(step) {
        bs[i % PARTS]
            .put(key(i), (i as u64) * 7 + round)
            .expect("put");
    }
}

fn open_store(dir: &Path, verify: VerifyLevel) -> BlockingCheckpointStore {
    BlockingCheckpointStore::open(
        &dir.display().to_string(),
        StoreOptions {
            verify,
            request_timeout: Duration::from_secs(300),
            ..StoreOptions::default()
        },
    )
    .expect("store")
}

/// Commits `objects` (labels `<prefix>-p<partition>`) plus `carried`; returns the duration and
/// the new manifest's object refs.
fn commit(
    bs: &BlockingCheckpointStore,
    c: &mut Committer,
    t: u64,
    prefix: &str,
    objects: Vec<Vec<u8>>,
    carried: Vec<DataObjectRef>,
) -> (Duration, Vec<DataObjectRef>) {
    let mut d = CheckpointDraft::new(CheckpointKind::Data, BatchTime(t), BatchTime(0), BATCH);
    d.pending_batches = vec![BatchTime(t + 1000)];
    d.new_objects = objects
        .into_iter()
        .enumerate()
        .map(|(p, b)| (format!("{prefix}-p{p}"), Bytes::from(b)))
        .collect();
    d.carried_objects = carried;
    let t0 = Instant::now();
    let m = bs
        .block_on(c.commit(d))
        .expect("commit")
        .expect("published");
    (t0.elapsed(), m.objects)
}

struct Row {
    label: String,
    ms: Vec<f64>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The partitions' object chains (labels sort snapshot `a…` before deltas `d01…`).
fn chains(objs: &[DataObjectRef]) -> Vec<Vec<DataObjectRef>> {
    (0..PARTS)
        .map(|p| {
            let mut v: Vec<DataObjectRef> = objs
                .iter()
                .filter(|o| o.label().ends_with(&format!("-p{p}")))
                .cloned()
                .collect();
            v.sort_by(|a, b| a.label().cmp(b.label()));
            v
        })
        .collect()
}

#[allow(clippy::type_complexity)]
fn decode_all(objs: &[Vec<Vec<u8>>]) -> Vec<Vec<(&[u8], &[u8])>> {
    std::thread::scope(|s| {
        let hs: Vec<_> = objs
            .iter()
            .enumerate()
            .map(|(p, chain)| {
                s.spawn(move || {
                    format::restore_borrowed(OP, part(p), chain.iter().map(Vec::as_slice))
                        .expect("restore")
                        .1
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("decode")).collect()
    })
}

fn import_all<B: StateBackend<String, u64>>(backends: &mut [B], entries: Vec<Vec<(&[u8], &[u8])>>) {
    std::thread::scope(|s| {
        for (b, e) in backends.iter_mut().zip(entries) {
            s.spawn(move || {
                import(b, spate_types::format::CODEC_BINCODE2, "bench", &e).expect("import");
            });
        }
    });
}

/// Restore from the newest checkpoint in `dir`; pushes rows
/// `<what>/{resolve_full,resolve_size,read,decode,import_memory,import_sled,raw_read}`.
fn restore_rows(
    dir: &Path,
    what: &str,
    n: usize,
    reps: usize,
    sled_reps: usize,
    rows: &mut Vec<Row>,
) {
    let full = open_store(dir, VerifyLevel::Full);
    let size = open_store(dir, VerifyLevel::Size);
    let mut r: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut bytes = 0u64;
    for rep in 0..reps {
        let t0 = Instant::now();
        let res = full.resolve_latest().expect("resolve").expect("checkpoint");
        r.entry("resolve_full").or_default().push(ms(t0.elapsed()));
        let t0 = Instant::now();
        let _ = size.resolve_latest().expect("resolve").expect("checkpoint");
        r.entry("resolve_size").or_default().push(ms(t0.elapsed()));
        let refs = chains(&res.manifest.objects);
        bytes = refs.iter().flatten().map(|o| o.size).sum();
        let t0 = Instant::now();
        let objs: Vec<Vec<Vec<u8>>> = std::thread::scope(|s| {
            let hs: Vec<_> = refs
                .iter()
                .map(|chain| {
                    let size = &size;
                    s.spawn(move || {
                        chain
                            .iter()
                            .map(|o| {
                                size.block_on(size.store().read_object(o))
                                    .expect("read")
                                    .to_vec()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().expect("read")).collect()
        });
        r.entry("read").or_default().push(ms(t0.elapsed()));
        // Raw: the same files with std::fs::read.
        let files: Vec<PathBuf> = refs.iter().flatten().map(|o| dir.join(&o.path)).collect();
        let t0 = Instant::now();
        let raw: usize = files
            .iter()
            .map(|f| std::fs::read(f).expect("raw read").len())
            .sum();
        r.entry("raw_read").or_default().push(ms(t0.elapsed()));
        assert_eq!(raw as u64, bytes);
        let t0 = Instant::now();
        let entries = decode_all(&objs);
        r.entry("decode").or_default().push(ms(t0.elapsed()));
        assert_eq!(entries.iter().map(Vec::len).sum::<usize>(), n);
        let mut mem: Vec<Mem> = (0..PARTS).map(|_| Mem::new()).collect();
        let t0 = Instant::now();
        import_all(&mut mem, entries);
        r.entry("import_memory").or_default().push(ms(t0.elapsed()));
        assert_eq!(mem.iter().map(|b| b.len()).sum::<u64>(), n as u64);
        drop(mem);
        if rep < sled_reps {
            let entries = decode_all(&objs);
            let sdir = bench_dir(&format!("sled-{what}"));
            let store = SledStore::open_fresh(&sdir).expect("sled");
            let mut sb: Vec<_> = (0..PARTS)
                .map(|p| {
                    store
                        .backend::<String, u64>(OP, part(p), Start::Empty)
                        .expect("sled backend")
                })
                .collect();
            let t0 = Instant::now();
            import_all(&mut sb, entries);
            r.entry("import_sled").or_default().push(ms(t0.elapsed()));
            assert_eq!(sb.iter().map(|b| b.len()).sum::<u64>(), n as u64);
            drop(sb);
            drop(store);
            let _ = std::fs::remove_dir_all(&sdir);
        }
    }
    let mb = bytes as f64 / 1e6;
    for (k, v) in r {
        rows.push(Row {
            label: format!("{what}/{k} ({mb:.1} MB)"),
            ms: v,
        });
    }
}

fn sizes() -> Vec<usize> {
    std::env::var("SPATE_BENCH_STATE_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 1_000_000, 10_000_000])
}

fn state_size_sweep() {
    eprintln!("\nstate_size (medians; ms unless noted):");
    for n in sizes() {
        let reps = match n {
            0..=99_999 => 10,
            100_000..=1_999_999 => 5,
            _ => 3,
        };
        let sled_reps = if n >= 5_000_000 { 1 } else { reps };
        let t0 = Instant::now();
        let mut bs = build_state(n);
        eprintln!("n = {n}: state built in {:.0} ms", ms(t0.elapsed()));
        let mut rows: Vec<Row> = Vec::new();
        let mut sizes_mb: BTreeMap<String, f64> = BTreeMap::new();
        // Full snapshots.
        let (mut ex, mut cm) = (Vec::new(), Vec::new());
        let snap_dir = bench_dir(&format!("snap-{n}"));
        for rep in 0..reps {
            let _ = std::fs::remove_dir_all(&snap_dir);
            let st = open_store(&snap_dir, VerifyLevel::Full);
            let mut c = st.block_on(st.store().open_committer()).expect("committer");
            let t0 = Instant::now();
            let objs = export_snapshots(&mut bs, 1000);
            ex.push(ms(t0.elapsed()));
            sizes_mb.insert(
                "snapshot".into(),
                objs.iter().map(Vec::len).sum::<usize>() as f64 / 1e6,
            );
            let _ = rep;
            let (d, _) = commit(&st, &mut c, 1000, "a", objs, Vec::new());
            cm.push(ms(d));
        }
        rows.push(Row {
            label: format!("snapshot/export ({:.1} MB)", sizes_mb["snapshot"]),
            ms: ex,
        });
        rows.push(Row {
            label: "snapshot/commit".into(),
            ms: cm,
        });
        // Deltas.
        for frac in [0.01, 0.1, 1.0] {
            let (mut ex, mut cm, mut chg) = (Vec::new(), Vec::new(), Vec::new());
            let ddir = bench_dir(&format!("delta-{n}-{frac}"));
            let mut mb = 0.0;
            for rep in 0..reps {
                let t0 = Instant::now();
                change(&mut bs, n, frac, rep as u64 + 1);
                chg.push(ms(t0.elapsed()));
                let _ = std::fs::remove_dir_all(&ddir);
                let st = open_store(&ddir, VerifyLevel::Full);
                let mut c = st.block_on(st.store().open_committer()).expect("committer");
                let t0 = Instant::now();
                let objs = export_deltas(&mut bs, 2000, 1000);
                ex.push(ms(t0.elapsed()));
                mb = objs.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
                let (d, _) = commit(&st, &mut c, 2000, "d01", objs, Vec::new());
                cm.push(ms(d));
            }
            let _ = std::fs::remove_dir_all(&ddir);
            let pct = frac * 100.0;
            rows.push(Row {
                label: format!("delta {pct}%/put changed keys (untimed part of a batch)"),
                ms: chg,
            });
            rows.push(Row {
                label: format!("delta {pct}%/take_changes+export ({mb:.2} MB)"),
                ms: ex,
            });
            rows.push(Row {
                label: format!("delta {pct}%/commit"),
                ms: cm,
            });
        }
        // Restore: the snapshot dir (one snapshot), and a chain of snapshot + 9 deltas of 1 %.
        restore_rows(&snap_dir, "restore snapshot", n, reps, sled_reps, &mut rows);
        let _ = std::fs::remove_dir_all(&snap_dir);
        let chain_dir = bench_dir(&format!("chain-{n}"));
        {
            let st = open_store(&chain_dir, VerifyLevel::Size);
            let mut c = st.block_on(st.store().open_committer()).expect("committer");
            let objs = export_snapshots(&mut bs, 1000);
            let (_, mut refs) = commit(&st, &mut c, 1000, "a", objs, Vec::new());
            for k in 1..=9u64 {
                change(&mut bs, n, 0.01, 100 + k);
                let objs = export_deltas(&mut bs, 1000 + 1000 * k, 1000 * k);
                let (_, r) = commit(
                    &st,
                    &mut c,
                    1000 + 1000 * k,
                    &format!("d{k:02}"),
                    objs,
                    refs,
                );
                refs = r;
            }
        }
        restore_rows(
            &chain_dir,
            "restore snapshot+9 deltas(1%)",
            n,
            reps,
            sled_reps,
            &mut rows,
        );
        let _ = std::fs::remove_dir_all(&chain_dir);
        for mut r in rows {
            let lo = r.ms.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = r.ms.iter().copied().fold(0.0, f64::max);
            let k = r.ms.len();
            eprintln!(
                "  n={n} {}: {:.2} (range {lo:.2}–{hi:.2}, {k} runs)",
                r.label,
                median(&mut r.ms)
            );
        }
        drop(bs);
    }
}

// ---------------------------------------------------------------------------------------------

/// The positional filter given to the bench binary, if any (criterion options and their values
/// skipped).
fn filter() -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--profile-time",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
        "--output-format",
        "--color",
        "--plotting-backend",
        "--format",
    ];
    let mut args = std::env::args().skip(1);
    let mut found = None;
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            let _ = args.next();
        } else if !a.starts_with('-') {
            found = Some(a);
        }
    }
    found
}

fn main() {
    let f = filter();
    let wants = |group: &str| f.as_deref().is_none_or(|f| group.contains(f));
    let mut c = Criterion::default().configure_from_args();
    if wants("stateful_throughput") {
        throughput_benches(&mut c);
    }
    if wants("restart_first_batch_1e6") {
        restart_benches(&mut c);
    }
    if wants("state_size") {
        state_size_sweep();
    }
    c.final_summary();
}
