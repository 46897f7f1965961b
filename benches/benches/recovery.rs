//! Recovery end to end, in process (criterion, `harness = false`, `iter_custom`). The
//! checkpoint is a local directory under `CARGO_TARGET_TMPDIR` (the build disk, not a tmpfs), the
//! receiver WAL is `<checkpoint>/wal` (the default), every WAL append is fdatasync'd.
//!
//! * `restart_first_batch/<n>`: `StreamingContext::get_or_create_with_clock` + `start` + wait
//!   (`await_batch_completed`) until the **first rescheduled batch** has completed, with `n`
//!   received-but-unprocessed records (0, 1 000, 100 000 lines of ~100 bytes) in the WAL. The graph:
//!   `receiver_stream` → `map((first word, 1))` → `reduce_by_key(+)` → `foreach_batch`, batch 1 s,
//!   block interval 200 ms, 2 workers, `ManualClock` (rescheduled batches do not wait for the
//!   timer, with any clock). Each iteration restarts from the state the previous one left: after
//!   the timed part (untimed) the remaining rescheduled batches complete, the receiver stores `n`
//!   records in one block (the clock is advanced to the block cut, never to the next batch), and
//!   the context is stopped non-gracefully, so the block is durable in the WAL and allocated to no
//!   batch, as after a crash between two batch ticks. A chain (new directory, 2 batches run,
//!   untimed) holds at most 5 restarts (see `RESTARTS_PER_CHAIN`). The restart report is checked
//!   (exactly one unallocated block for `n > 0`, none for 0, `records_recovered >= n`; a mismatch is
//!   counted and printed). Printed after the group: median time until *all*
//!   rescheduled batches completed (this includes reading the recovered records back from the WAL
//!   and processing them), and the median of the report's phases.
//! * `graceful_stop_wal/100k_lines_per_s`: `ctx.stop(true)` of a context with the receiver WAL on,
//!   batch 1 s, `SystemClock`, a receiver storing 1 000-line batches every 10 ms (100 000 lines/s),
//!   stopped 2.0–2.9 s after `start` (the offset varies per iteration, so the stop lands at
//!   different phases of the batch interval). Checked: every stored record was processed.
//! * `receiver_wal/{off,on}`: records/s through `receiver_stream` (`SystemClock`, batch 1 s) with
//!   no checkpoint (`off`) or checkpoint + receiver WAL (`on`). A producer thread makes 1 000-line
//!   batches of 100-byte strings in a tight loop into a bounded queue; a store thread hands
//!   everything queued to one `store_many` (which returns at the block cut, as the socket
//!   receiver's store thread does). So one block holds at most the queue (600 batches = 600 000
//!   lines ≈ 61 MB encoded, below the WAL's 64 MiB record limit: a larger block fails its store),
//!   and a receiver stores at most queue / block interval records/s: 12 M/s with the default 50 ms
//!   block interval, which the WAL-on variant stays below while the WAL-off one reaches it (the
//!   producer thread is faster), so "off" measures the harness, not the engine
//!   (`SPATE_BENCH_PENDING_BATCHES`, `SPATE_BENCH_BLOCK_MS` override: with the engine's default
//!   200 ms and 600 batches the cap is 3 M/s, with 20 ms 30 M/s). The pipeline counts each batch
//!   (`foreach_batch(len)`). One iteration = 1 000 000 records stored (`Ok` returned); the context
//!   is started before the clock runs and stopped after. Printed after the group: MB/s of payload
//!   and of storage writes (`/proc/self/io` `write_bytes`) during the timed windows.
//!
//! * `catch_up/600_missed_batches` (issue 14): a running-total graph (`receiver_stream` →
//!   `map((first word, 1))` → `update_state_by_key(total + Σ new)` → `foreach_batch`, batch 1 s,
//!   `ManualClock`) runs 2 batches, stops, and is restarted 600 batch intervals later: the time from
//!   `get_or_create` to the completion of the last rescheduled batch (600 batches). One figure,
//!   printed as `catch_up: 600 missed batches in X s (report: N rescheduled)`; run once per
//!   iteration (`iter_custom`, sample size 10).
//!
//! Run: `cargo bench -p spate-benches --bench recovery -- --warm-up-time 1 --measurement-time 3`.
//! One context is active per process; the benchmarks run one after the other. mimalloc is the
//! global allocator, as in the pipeline bench.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use spate_benches::{median, proc_write_bytes};
use spate_streaming::testing::advance_and_wait;
use spate_streaming::{
    BatchTime, Clock, DurationMs, ManualClock, Receiver, ReceiverContext, ReceiverError,
    StreamingConfig, StreamingContext, SystemClock,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const BATCH: DurationMs = DurationMs(1000);
const LINE_BYTES: usize = 100;
const LINES_PER_STORE: usize = 1000;

fn bench_dir(name: &str) -> PathBuf {
    spate_benches::fresh_dir(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "recovery-bench",
        name,
    )
}

/// 1 000 distinct lines of exactly `LINE_BYTES` bytes: ten words from a 10 000-word vocabulary,
/// padded.
fn line_pool() -> Arc<Vec<String>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let v = (0..LINES_PER_STORE)
        .map(|_| {
            let mut l = spate_benches::xorshift_line(&mut x, "w", 10_000, LINE_BYTES);
            while l.len() < LINE_BYTES {
                l.push('x');
            }
            l.truncate(LINE_BYTES);
            l
        })
        .collect();
    Arc::new(v)
}

fn ckpt_config() -> StreamingConfig {
    StreamingConfig {
        app_name: "bench-recovery".into(),
        batch_interval: BATCH,
        parallelism: 2,
        default_partitions: 2,
        ..StreamingConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// (a) restart to the first completed batch

/// A receiver whose context the benchmark drives directly.
struct Handle {
    slot: Arc<Mutex<Option<ReceiverContext<String>>>>,
}

impl Receiver<String> for Handle {
    fn on_start(&mut self, ctx: ReceiverContext<String>) -> Result<(), ReceiverError> {
        *self.slot.lock().expect("slot") = Some(ctx);
        Ok(())
    }
    fn on_stop(&mut self) {
        self.slot.lock().expect("slot").take();
    }
    fn describe(&self) -> String {
        "bench handle".into()
    }
}

type Slot = Arc<Mutex<Option<ReceiverContext<String>>>>;

fn restart_app(
    ctx: &StreamingContext,
    slot: &Slot,
    seen: &Arc<AtomicU64>,
) -> spate_streaming::Result<()> {
    let s = ctx.receiver_stream(Handle {
        slot: Arc::clone(slot),
    })?;
    let seen = Arc::clone(seen);
    s.map(|l: String| {
        let w = l.split(' ').next().unwrap_or("").to_owned();
        (w, 1u64)
    })?
    .reduce_by_key(|a, b| a + b)?
    .name("counts")?
    .foreach_batch(move |_t, b| {
        seen.fetch_add(b.iter().map(|(_, n)| *n).sum::<u64>(), Ordering::Relaxed);
    })?;
    Ok(())
}

/// Stores `n` lines in one block: a helper thread calls `store_many` (which returns at the block
/// cut) while the manual clock is moved to the next block boundaries, never reaching `limit` (the
/// next batch time). Returns whether the store returned `Ok`.
fn store_block(slot: &Slot, clock: &ManualClock, pool: &[String], n: usize, limit: u64) -> bool {
    if n == 0 {
        return true;
    }
    let Some(rctx) = slot.lock().expect("slot").clone() else {
        return false;
    };
    let items: Vec<String> = (0..n).map(|i| pool[i % pool.len()].clone()).collect();
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(());
        rctx.store_many(items).is_ok()
    });
    let _ = rx.recv();
    std::thread::sleep(Duration::from_millis(5));
    let block = ckpt_config().block_interval.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h.is_finished() {
        let next = (clock.now_ms() / block + 1) * block;
        if next < limit {
            clock.set_time(next);
        }
        assert!(
            Instant::now() < deadline,
            "store of {n} records not cut in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    h.join().unwrap_or(false)
}

#[derive(Default)]
struct RestartStats {
    all_rescheduled_ms: Vec<f64>,
    phases: std::collections::BTreeMap<String, Vec<f64>>,
    rescheduled: Vec<f64>,
    recovered: Vec<f64>,
    mismatches: u64,
    restarts: u64,
}

/// Restarts per checkpoint directory. A longer chain with 100 000-record blocks rolls the first
/// 64 MiB WAL segment, after which `Wal::open` fails with `LsnGap` (a sealed segment's reader stops
/// after a record that ends exactly where its incremental read ended; see docs/performance.md,
/// "Recovery"), so each chain stays within one segment.
const RESTARTS_PER_CHAIN: u64 = 5;

/// `iters` timed restarts, in chains of at most [`RESTARTS_PER_CHAIN`]: `chain(k, len)` runs
/// chain `k` (from 1) of `len` restarts. Returns the summed time to the first rescheduled batch.
fn in_chains(iters: u64, mut chain: impl FnMut(u64, u64) -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    let mut done = 0;
    let mut k = 0;
    while done < iters {
        let len = (iters - done).min(RESTARTS_PER_CHAIN);
        k += 1;
        total += chain(k, len);
        done += len;
    }
    total
}

/// Opens (restores or creates) the restart app at `url` on `clock`.
fn open_restart_app(
    url: &str,
    clock: &ManualClock,
    slot: &Slot,
    seen: &Arc<AtomicU64>,
) -> spate_streaming::Result<StreamingContext> {
    StreamingContext::get_or_create_with_clock(url, ckpt_config(), Arc::new(clock.clone()), |c| {
        restart_app(c, slot, seen)
    })
}

/// One chain: a fresh checkpoint, 2 batches, `n` records stored, non-graceful stop; then `iters`
/// timed restarts. Returns the summed time to the first rescheduled batch.
fn restart_chain(
    name: &str,
    n: usize,
    iters: u64,
    pool: &[String],
    stats: &mut RestartStats,
) -> Duration {
    let dir = bench_dir(name);
    let url = dir.join("ckpt").display().to_string();
    let slot: Slot = Arc::default();
    let seen = Arc::new(AtomicU64::new(0));
    // Initial run: clock 0 → batches 1000 and 2000, then a block of n records at 2200, stop.
    let clock = ManualClock::new(0);
    let ctx = open_restart_app(&url, &clock, &slot, &seen).expect("fresh context");
    ctx.start().expect("start");
    for t in [1000, 2000] {
        advance_and_wait(&ctx, &clock, BatchTime(t)).expect("batch");
    }
    assert!(
        store_block(&slot, &clock, pool, n, 3000),
        "initial store failed"
    );
    ctx.stop(false).expect("stop");
    drop(ctx);
    let mut grid = 3000u64; // the next batch time the chain has not run
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let clock = ManualClock::new(grid + 100);
        let t0 = Instant::now();
        let ctx = open_restart_app(&url, &clock, &slot, &seen).expect("restart");
        let (dt, report) =
            spate_benches::start_until_first_rescheduled(&ctx, t0, Duration::from_secs(60));
        total += dt;
        // Untimed: the rest of the rescheduled batches, then the next crash's state.
        spate_benches::await_last_rescheduled(&ctx, &report, Duration::from_secs(60));
        stats
            .all_rescheduled_ms
            .push(t0.elapsed().as_secs_f64() * 1e3);
        let report = ctx.restart_report().expect("report");
        stats.restarts += 1;
        stats
            .rescheduled
            .push(report.batches_rescheduled.len() as f64);
        // The WAL replay covers every retained segment (whole segments are deleted), so
        // `records_recovered` includes older, processed blocks; the crash's block is the one
        // left unallocated.
        stats.recovered.push(report.records_recovered as f64);
        if report.blocks_unallocated != u64::from(n > 0) || report.records_recovered < n as u64 {
            stats.mismatches += 1;
            if stats.mismatches <= 3 {
                eprintln!(
                    "restart_first_batch/{n}: expected {} unallocated block(s) holding {n} records: {}",
                    u64::from(n > 0),
                    report.summary()
                );
            }
        }
        for (k, v) in &report.phases_ms {
            stats.phases.entry(k.clone()).or_default().push(*v);
        }
        grid = report.restart_time.unwrap_or(grid + 1000);
        assert!(
            store_block(&slot, &clock, pool, n, grid),
            "store before the simulated crash failed"
        );
        ctx.stop(false).expect("stop");
    }
    let _ = std::fs::remove_dir_all(&dir);
    total
}

fn restart_benches(c: &mut Criterion) {
    let pool = line_pool();
    let mut g = c.benchmark_group("restart_first_batch");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut all = Vec::new();
    for n in [0usize, 1000, 100_000] {
        let mut stats = RestartStats::default();
        let mut chain = 0;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter_custom(|iters| {
                chain += 1;
                let name = format!("restart-{n}-{chain}");
                in_chains(iters, |k, len| {
                    restart_chain(&format!("{name}-{k}"), n, len, &pool, &mut stats)
                })
            });
        });
        all.push((n, stats));
    }
    g.finish();
    eprintln!("\nrestart (medians over all timed restarts):");
    for (n, mut s) in all {
        if s.restarts == 0 {
            continue;
        }
        let phases: Vec<String> = s
            .phases
            .iter_mut()
            .map(|(k, v)| format!("{k} {:.2}", median(v)))
            .collect();
        eprintln!(
            "restart {n}: {} restarts, {} unexpected reports, records_recovered {}, all rescheduled completed {:.1} ms, {} batches rescheduled, phases ms: {}",
            s.restarts,
            s.mismatches,
            median(&mut s.recovered),
            median(&mut s.all_rescheduled_ms),
            median(&mut s.rescheduled),
            phases.join(", ")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (b) graceful stop and (c) receiver WAL throughput: a producer + store thread receiver

/// A receiver fed by a producer thread (1 000-line batches, paced or as fast as possible) through
/// a bounded queue; a store thread hands everything queued to one `store_many`.
struct Pump {
    pool: Arc<Vec<String>>,
    /// Pause between produced batches (`None`: tight loop).
    pace: Option<Duration>,
    queue_batches: usize,
    stored: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Pump {
    fn new(pool: Arc<Vec<String>>, pace: Option<Duration>, queue_batches: usize) -> Self {
        Pump {
            pool,
            pace,
            queue_batches,
            stored: Arc::default(),
            failures: Arc::default(),
            stop: Arc::default(),
            threads: Vec::new(),
        }
    }
}

impl Receiver<String> for Pump {
    fn on_start(&mut self, ctx: ReceiverContext<String>) -> Result<(), ReceiverError> {
        self.stop.store(false, Ordering::SeqCst);
        let (tx, rx) = mpsc::sync_channel::<Vec<String>>(self.queue_batches);
        let pool = Arc::clone(&self.pool);
        let pace = self.pace;
        let stop = Arc::clone(&self.stop);
        let producer = spate_benches::spawn_worker("bench-producer".into(), move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<String> = pool.iter().cloned().collect();
                if tx.send(batch).is_err() {
                    return;
                }
                if let Some(p) = pace {
                    next += p;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
            }
        })?;
        let stored = Arc::clone(&self.stored);
        let failures = Arc::clone(&self.failures);
        let cap = self.queue_batches;
        let storer = spate_benches::spawn_worker("bench-store".into(), move || {
            while let Ok(first) = rx.recv() {
                let mut all = first;
                for _ in 0..cap {
                    match rx.try_recv() {
                        Ok(more) => all.extend(more),
                        Err(_) => break,
                    }
                }
                if !spate_benches::store_counted(&ctx, all, &stored, &failures, "bench receiver") {
                    return;
                }
            }
        })?;
        self.threads = vec![producer, storer];
        Ok(())
    }
    fn on_stop(&mut self) {
        // The producer exits on the flag or when the store thread (which returns on `Stopped`)
        // drops the queue.
        spate_benches::stop_and_join(&self.stop, &mut self.threads);
    }
    fn describe(&self) -> String {
        "bench pump".into()
    }
}

struct PumpRun {
    ctx: StreamingContext,
    stored: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    processed: Arc<AtomicU64>,
}

/// Starts a context on the system clock fed by a [`Pump`]; `ckpt`: with checkpoint + WAL.
fn start_pump(
    ckpt: Option<&str>,
    pool: &Arc<Vec<String>>,
    pace: Option<Duration>,
    queue: usize,
    block: DurationMs,
) -> PumpRun {
    let conf = StreamingConfig {
        block_interval: block,
        ..ckpt_config()
    };
    let pump = Pump::new(Arc::clone(pool), pace, queue);
    let stored = Arc::clone(&pump.stored);
    let failures = Arc::clone(&pump.failures);
    let processed = Arc::new(AtomicU64::new(0));
    let p2 = Arc::clone(&processed);
    let build = move |c: &StreamingContext| -> spate_streaming::Result<()> {
        c.receiver_stream(pump)?.foreach_batch(move |_t, b| {
            p2.fetch_add(b.len() as u64, Ordering::Relaxed);
        })?;
        Ok(())
    };
    let ctx = match ckpt {
        Some(url) => {
            StreamingContext::get_or_create_with_clock(url, conf, Arc::new(SystemClock), build)
                .expect("context")
        }
        None => {
            let ctx = StreamingContext::with_clock(conf, Arc::new(SystemClock)).expect("context");
            build(&ctx).expect("graph");
            ctx
        }
    };
    ctx.start().expect("start");
    PumpRun {
        ctx,
        stored,
        failures,
        processed,
    }
}

fn graceful_stop_benches(c: &mut Criterion) {
    let pool = line_pool();
    let mut g = c.benchmark_group("graceful_stop_wal");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut k = 0u64;
    let mut samples = Vec::new();
    let mut unprocessed = 0u64;
    g.bench_function("100k_lines_per_s", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                k += 1;
                let dir = bench_dir(&format!("graceful-{k}"));
                let url = dir.join("ckpt").display().to_string();
                let run = start_pump(
                    Some(&url),
                    &pool,
                    Some(Duration::from_millis(10)),
                    64,
                    DurationMs(200),
                );
                std::thread::sleep(Duration::from_millis(2000 + (k * 137) % 1000));
                let t0 = Instant::now();
                run.ctx.stop(true).expect("graceful stop");
                let dt = t0.elapsed();
                total += dt;
                samples.push(dt.as_secs_f64() * 1e3);
                let (s, p) = (
                    run.stored.load(Ordering::Acquire),
                    run.processed.load(Ordering::Acquire),
                );
                if s != p || run.failures.load(Ordering::Acquire) > 0 {
                    unprocessed += 1;
                    eprintln!("graceful stop: stored {s}, processed {p}");
                }
                drop(run);
                let _ = std::fs::remove_dir_all(&dir);
            }
            total
        });
    });
    g.finish();
    let mut s = samples.clone();
    if s.is_empty() {
        return;
    }
    eprintln!(
        "\ngraceful stop: {} stops, median {:.0} ms, min {:.0} ms, max {:.0} ms, {} with stored != processed",
        s.len(),
        median(&mut s),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
        unprocessed
    );
}

const WAL_ITER_RECORDS: u64 = 1_000_000;

fn wal_throughput_benches(c: &mut Criterion) {
    let pool = line_pool();
    let queue: usize = std::env::var("SPATE_BENCH_PENDING_BATCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let block_ms: u64 = std::env::var("SPATE_BENCH_BLOCK_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut g = c.benchmark_group("receiver_wal");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(WAL_ITER_RECORDS));
    let mut lines = Vec::new();
    let mut calls = 0u64;
    for wal in [false, true] {
        let mut rates = Vec::new();
        let mut disk = Vec::new();
        g.bench_function(if wal { "on" } else { "off" }, |b| {
            b.iter_custom(|iters| {
                calls += 1;
                let dir = bench_dir(&format!("throughput-{calls}"));
                let url = dir.join("ckpt").display().to_string();
                let run = start_pump(
                    wal.then_some(url.as_str()),
                    &pool,
                    None,
                    queue,
                    DurationMs(block_ms),
                );
                // Let the first block cut pass so the pipeline is in its steady state.
                let begin = run.stored.load(Ordering::Acquire);
                while run.stored.load(Ordering::Acquire) == begin
                    && run.failures.load(Ordering::Acquire) == 0
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let start_count = run.stored.load(Ordering::Acquire);
                let target = start_count + iters * WAL_ITER_RECORDS;
                let w0 = proc_write_bytes();
                let t0 = Instant::now();
                while run.stored.load(Ordering::Acquire) < target {
                    assert_eq!(run.failures.load(Ordering::Acquire), 0, "store failed");
                    std::thread::sleep(Duration::from_millis(1));
                }
                let dt = t0.elapsed();
                let n = run.stored.load(Ordering::Acquire) - start_count;
                let written = proc_write_bytes().saturating_sub(w0);
                // Scale to exactly iters × records (the last store may overshoot the target).
                let scaled = dt.mul_f64((iters * WAL_ITER_RECORDS) as f64 / n as f64);
                rates.push(n as f64 / dt.as_secs_f64());
                disk.push(written as f64 / dt.as_secs_f64() / 1e6);
                run.ctx.stop(false).expect("stop");
                drop(run);
                let _ = std::fs::remove_dir_all(&dir);
                scaled
            });
        });
        lines.push((wal, rates, disk));
    }
    g.finish();
    eprintln!("\nreceiver WAL throughput (block interval {block_ms} ms, queue {queue} batches of {LINES_PER_STORE} lines of {LINE_BYTES} B):");
    for (wal, mut rates, mut disk) in lines {
        if rates.is_empty() {
            continue;
        }
        let r = median(&mut rates);
        eprintln!(
            "receiver_wal/{}: {} runs, median {:.0} records/s, payload {:.1} MB/s, storage writes {:.1} MB/s",
            if wal { "on" } else { "off" },
            rates.len(),
            r,
            r * LINE_BYTES as f64 / 1e6,
            median(&mut disk)
        );
    }
}

/// The running-total graph of `catch_up/600_missed_batches`.
fn running_total_app(ctx: &StreamingContext, slot: &Slot) -> spate_streaming::Result<()> {
    ctx.receiver_stream(Handle {
        slot: Arc::clone(slot),
    })?
    .map(|l: String| (l.split(' ').next().unwrap_or("").to_owned(), 1u64))?
    .update_state_by_key(|new: &[u64], old: Option<u64>| {
        Some(old.unwrap_or(0) + new.iter().sum::<u64>())
    })?
    .foreach_batch(|_t, _b| {})?;
    Ok(())
}

/// One catch-up: a fresh checkpoint, 2 batches, stop; restart 600 batches later; returns the time
/// until the last rescheduled batch completed and the batches the report rescheduled.
fn catch_up_once(i: u64) -> (Duration, usize) {
    const MISSED: u64 = 600;
    let dir = bench_dir(&format!("catch-up-{i}"));
    let url = dir.join("ckpt").display().to_string();
    let slot: Slot = Arc::default();
    let clock = ManualClock::new(0);
    let open = |clock: &ManualClock| {
        StreamingContext::get_or_create_with_clock(
            &url,
            ckpt_config(),
            Arc::new(clock.clone()),
            |c| running_total_app(c, &slot),
        )
        .expect("context")
    };
    let ctx = open(&clock);
    ctx.start().expect("start");
    for t in [1000, 2000] {
        advance_and_wait(&ctx, &clock, BatchTime(t)).expect("batch");
    }
    ctx.stop(false).expect("stop");
    let clock = ManualClock::new(2000 + MISSED * BATCH.0 + 500);
    let t0 = Instant::now();
    let ctx = open(&clock);
    ctx.start().expect("restart");
    let last = BatchTime(2000 + MISSED * BATCH.0);
    assert!(
        ctx.await_batch_completed(last, Duration::from_secs(600))
            .expect("catch-up"),
        "catch-up did not finish"
    );
    let took = t0.elapsed();
    let n = ctx
        .restart_report()
        .map_or(0, |r| r.batches_rescheduled.len());
    ctx.stop(false).expect("stop");
    (took, n)
}

fn catch_up_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("catch_up");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let mut times = Vec::new();
    let mut rescheduled = 0;
    g.bench_function("600_missed_batches", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let (d, n) = catch_up_once(i);
                times.push(d.as_secs_f64());
                rescheduled = n;
                total += d;
            }
            total
        });
    });
    g.finish();
    if !times.is_empty() {
        let m = median(&mut times);
        eprintln!(
            "catch_up: 600 missed batches in {m:.2} s median over {} runs (report: {rescheduled} rescheduled)",
            times.len()
        );
    }
}

criterion_group!(
    benches,
    catch_up_benches,
    restart_benches,
    graceful_stop_benches,
    wal_throughput_benches
);
criterion_main!(benches);
