//! Recovery: `get_or_create`, metadata checkpoints, the WAL, restart rules, incompatible
//! builds, damaged checkpoints. In-process, deterministic (ManualClock), in the spirit of Spark's
//! CheckpointSuite: stop at every batch of a scripted run, restart, compare with an uninterrupted
//! run. DESIGN.md §4 step numbers are cited where a test pins one.

use parking_lot::Mutex;
use spate::testing::{advance_and_wait, context_lock, test_config};
use spate::{
    BatchTime, DurationMs, ManualClock, RestartOutcome, StreamingConfig, StreamingContext,
    StreamingError,
};
use spate_tests::sources::PerSecond;
use std::collections::BTreeMap;
use std::sync::Arc;

const B: DurationMs = DurationMs(1000);

/// A replayable source: batch `t` selects "file" `t/1000`, which holds `s` numbers; the position
/// is the highest second selected, and selecting a second twice panics.
fn seconds() -> PerSecond<u64> {
    PerSecond::new("seconds", |s| (0..s).map(|i| s * 100 + i).collect()).strict()
}

type Outputs = Arc<Mutex<BTreeMap<u64, Vec<(u64, u64)>>>>;

/// The scripted application: numbers → (n % 3, n) → reduce_by_key(+) → collect per batch time.
fn app(ctx: &StreamingContext, out: &Outputs) -> spate::Result<()> {
    let s = ctx.replayable_stream(seconds())?;
    let sums = s
        .map(|n: u64| (n % 3, n))?
        .reduce_by_key(|a, b| a + b)?
        .name("sums")?;
    let o = Arc::clone(out);
    sums.foreach_batch(move |t, b| {
        let mut v = b.to_vec();
        v.sort_unstable();
        o.lock().insert(t.0, v);
    })?;
    Ok(())
}

fn conf() -> StreamingConfig {
    test_config(B)
}

fn url(dir: &tempfile::TempDir) -> String {
    dir.path().join("ckpt").display().to_string()
}

/// Opens (restores or creates) the context at `url` on a ManualClock `clock`, building the graph
/// with `build` when nothing is restored.
fn open(
    url: &str,
    conf: StreamingConfig,
    clock: &ManualClock,
    build: impl FnOnce(&StreamingContext) -> spate::Result<()>,
) -> spate::Result<StreamingContext> {
    StreamingContext::get_or_create_with_clock(url, conf, Arc::new(clock.clone()), build)
}

/// Opens the scripted [`app`] at `url` with a ManualClock at `at_ms`.
fn open_app(
    url: &str,
    conf: StreamingConfig,
    at_ms: u64,
    out: &Outputs,
) -> spate::Result<StreamingContext> {
    open(url, conf, &ManualClock::new(at_ms), |c| app(c, out))
}

/// Runs the graph `build` builds from `start_ms` (clock time at start) through batch `to`
/// (seconds) and stops (non-gracefully: queued work is dropped, as in a crash of the scheduler).
fn run_built(
    url: &str,
    conf: StreamingConfig,
    start_ms: u64,
    to: u64,
    build: impl FnOnce(&StreamingContext) -> spate::Result<()>,
) -> spate::Result<StreamingContext> {
    let clock = ManualClock::new(start_ms);
    let ctx = open(url, conf, &clock, build)?;
    ctx.start()?;
    let first = start_ms / 1000 + 1;
    for s in first..=to {
        advance_and_wait(&ctx, &clock, BatchTime(s * 1000))?;
    }
    ctx.stop(false)?;
    Ok(ctx)
}

/// [`run_built`] with the scripted [`app`].
fn run_until(
    url: &str,
    conf: StreamingConfig,
    start_ms: u64,
    to: u64,
    out: &Outputs,
) -> spate::Result<StreamingContext> {
    run_built(url, conf, start_ms, to, |c| app(c, out))
}

/// A fresh location where the scripted app ran batches 1..=`to` and stopped, with its outputs.
fn ran_through(to: u64) -> (tempfile::TempDir, Outputs) {
    let dir = tempfile::tempdir().unwrap();
    let out = Outputs::default();
    run_until(&url(&dir), conf(), 0, to, &out).unwrap();
    (dir, out)
}

/// The outputs of an uninterrupted run of the scripted app through batch `to`.
fn uninterrupted(to: u64) -> BTreeMap<u64, Vec<(u64, u64)>> {
    let (_dir, out) = ran_through(to);
    let v = out.lock().clone();
    v
}

/// The WAL's segment files under `<dir>/ckpt/wal`, sorted.
fn wal_segments(dir: &tempfile::TempDir) -> Vec<std::path::PathBuf> {
    let mut segs: Vec<_> = std::fs::read_dir(dir.path().join("ckpt/wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    segs
}

/// Opening the context at `dir` with `conf` at 3 s fails; returns the error.
fn open_fails(dir: &tempfile::TempDir, out: &Outputs) -> StreamingError {
    open_app(&url(dir), conf(), 3000, out).unwrap_err()
}

#[test]
fn fresh_start_writes_a_report_and_a_first_checkpoint() {
    let _g = context_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = Outputs::default();
    let ctx = run_until(&url(&dir), conf(), 0, 3, &out).unwrap();
    let r = ctx.restart_report().unwrap();
    assert_eq!(r.outcome, RestartOutcome::Fresh);
    assert!(r.written_to.is_some(), "report not written: {r:?}");
    assert_eq!(out.lock().len(), 3);
    // Manifests exist; the WAL lives under <checkpoint>/wal.
    assert!(
        dir.path()
            .join("ckpt/manifests")
            .read_dir()
            .unwrap()
            .count()
            >= 2
    );
    assert!(dir.path().join("ckpt/wal").is_dir());
}

/// CheckpointSuite: stop after every batch k of a 6-batch script, restart, finish; the output of
/// every batch equals the uninterrupted run's, and the source never selects a second twice.
#[test]
fn restart_after_every_batch_matches_an_uninterrupted_run() {
    let _g = context_lock();
    let expected = uninterrupted(6);
    assert_eq!(expected.len(), 6);
    for k in 1..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let out = Outputs::default();
        run_until(&url(&dir), conf(), 0, k, &out).unwrap();
        let ctx = run_until(&url(&dir), conf(), k * 1000, 6, &out).unwrap();
        let r = ctx.restart_report().unwrap();
        assert_eq!(r.outcome, RestartOutcome::Restored, "k={k}: {r:?}");
        // I-REC-6: batch k completed and the checkpoint records it (high-water mark k): unlike
        // Spark's JobGenerator.restart it does not run again, the position stays at k.
        assert!(r.batches_rescheduled.is_empty(), "k={k}: {r:?}");
        assert_eq!(r.restored_through, Some(k * 1000), "k={k}: {r:?}");
        assert_eq!(r.restart_time, Some((k + 1) * 1000));
        assert_eq!(*out.lock(), expected, "k={k}");
    }
}

/// Batches missed while the application was down are generated on restart (default policy), in
/// order; `coalesce_empty` generates only the first and the last.
#[test]
fn missed_batches_are_generated_or_coalesced() {
    let _g = context_lock();
    // Runs batches 1–2, is down from 2 s to 6.5 s, restarts with `conf` and waits for 6 s.
    let down_and_up = |conf: StreamingConfig, out: &Outputs| {
        let dir = tempfile::tempdir().unwrap();
        run_until(&url(&dir), test_config(B), 0, 2, out).unwrap();
        let ctx = open_app(&url(&dir), conf, 6500, out).unwrap();
        ctx.start().unwrap();
        assert!(ctx
            .await_batch_completed(BatchTime(6000), std::time::Duration::from_secs(20))
            .unwrap());
        let r = ctx.restart_report().unwrap();
        ctx.stop(false).unwrap();
        r
    };
    let out = Outputs::default();
    let r = down_and_up(conf(), &out);
    // Batch 2 completed (the checkpoint's high-water mark): only the missed ones run (I-REC-6).
    assert_eq!(r.batches_rescheduled, vec![3000, 4000, 5000, 6000]);
    assert_eq!(
        out.lock().keys().copied().collect::<Vec<_>>(),
        vec![1000, 2000, 3000, 4000, 5000, 6000]
    );

    let out = Outputs::default();
    let c2 = StreamingConfig {
        missed_batches: spate::MissedBatches::CoalesceEmpty,
        ..conf()
    };
    let r = down_and_up(c2, &out);
    assert_eq!(r.batches_rescheduled, vec![3000, 6000]);
    assert_eq!(r.batches_skipped, vec![4000, 5000]);
    assert!(!out.lock().contains_key(&4000));
}

fn incompatible(
    dir: &tempfile::TempDir,
    conf: StreamingConfig,
    build: impl FnOnce(&StreamingContext) -> spate::Result<()>,
) -> Vec<String> {
    match open(&url(dir), conf, &ManualClock::new(10_000), build) {
        Err(StreamingError::IncompatibleCheckpoint { diff, .. }) => diff.lines(),
        Err(e) => panic!("expected IncompatibleCheckpoint, got {e}"),
        Ok(_) => panic!("expected IncompatibleCheckpoint, got a context"),
    }
}

/// Every kind of graph or computation change is rejected with a diff naming it; nothing is
/// modified (the original build restores fine afterwards). Spark restores the old code silently.
#[test]
fn incompatible_builds_are_rejected_with_a_diff() {
    let _g = context_lock();
    let (dir, out) = ran_through(2);

    // An added operator.
    let d = incompatible(&dir, conf(), |c| {
        app(c, &out)?;
        let s = c.replayable_stream(seconds())?;
        s.filter(|n| n % 2 == 0)?.foreach_batch(|_, _| {})?;
        Ok(())
    });
    assert!(
        d.iter().any(|l| l.contains("added: replayable_stream")),
        "{d:?}"
    );
    // A changed batch interval (Spark silently keeps the old one).
    let d = incompatible(&dir, test_config(DurationMs(2000)), |c| app(c, &out));
    assert!(
        d.iter().any(|l| l.contains("batch interval 1 s → 2 s")),
        "{d:?}"
    );
    // A changed partition count (computation-defining setting).
    let d = incompatible(
        &dir,
        StreamingConfig {
            default_partitions: 3,
            ..conf()
        },
        |c| app(c, &out),
    );
    assert!(d.iter().any(|l| l.contains("partitions")), "{d:?}");
    // A changed element type.
    let d = incompatible(&dir, conf(), |c| {
        let s = c.replayable_stream(seconds())?;
        s.map(|n: u64| (n % 3, n as i64))?
            .reduce_by_key(|a, b| a + b)?
            .name("sums")?
            .foreach_batch(|_, _| {})?;
        Ok(())
    });
    assert!(d.iter().any(|l| l.contains("element type")), "{d:?}");
    // A renamed operator.
    let d = incompatible(&dir, conf(), |c| {
        let s = c.replayable_stream(seconds())?;
        s.map(|n: u64| (n % 3, n))?
            .reduce_by_key(|a, b| a + b)?
            .name("totals")?
            .foreach_batch(|_, _| {})?;
        Ok(())
    });
    assert!(d.iter().any(|l| l.contains("name sums → totals")), "{d:?}");

    // Operational settings may change: parallelism, app name, block interval.
    let c = StreamingConfig {
        parallelism: 1,
        app_name: "renamed".into(),
        block_interval: DurationMs(50),
        ..conf()
    };
    let ctx = open_app(&url(&dir), c, 2000, &out).unwrap();
    assert_eq!(
        ctx.restart_report().unwrap().outcome,
        RestartOutcome::Restored
    );
}

fn newest_manifest(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(dir.path().join("ckpt/manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.pop().unwrap()
}

/// A damaged newest manifest: recovery falls back to the previous one and says so.
#[test]
fn damaged_newest_manifest_falls_back_and_reports() {
    let _g = context_lock();
    let (dir, _out) = ran_through(4);
    let newest = newest_manifest(&dir);
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    let out2 = Outputs::default();
    let ctx = run_until(&url(&dir), conf(), 4000, 6, &out2).unwrap();
    let r = ctx.restart_report().unwrap();
    assert_eq!(r.outcome, RestartOutcome::Restored);
    assert!(r.checkpoint.as_ref().unwrap().fell_back, "{r:?}");
    assert_eq!(r.rejected.len(), 1, "{r:?}");
    assert!(r.rejected[0]
        .manifest
        .ends_with(newest.file_name().unwrap().to_str().unwrap()));
    // The fallback checkpoint is older, so more batches re-run; outputs are still exact.
    let exp = uninterrupted(6);
    for (t, v) in out2.lock().iter() {
        assert_eq!(Some(v), exp.get(t), "batch {t}");
    }
    assert!(out2.lock().contains_key(&6000));
}

/// Every manifest damaged: a typed error naming each, nothing modified; with `create_on_error`
/// the location is archived (not deleted) and a fresh context starts.
#[test]
fn no_valid_checkpoint_errors_or_archives() {
    let _g = context_lock();
    let (dir, out) = ran_through(2);
    for e in std::fs::read_dir(dir.path().join("ckpt/manifests")).unwrap() {
        let p = e.unwrap().path();
        std::fs::write(&p, b"garbage").unwrap();
    }
    let err = open_fails(&dir, &out);
    match &err {
        StreamingError::NoValidCheckpoint { rejected, .. } => assert!(!rejected.is_empty()),
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("create_on_error"), "{err}");
    let c = StreamingConfig {
        create_on_error: true,
        ..conf()
    };
    let out2 = Outputs::default();
    let ctx = run_until(&url(&dir), c, 3000, 5, &out2).unwrap();
    let r = ctx.restart_report().unwrap();
    assert_eq!(r.outcome, RestartOutcome::FreshAfterArchive, "{r:?}");
    assert!(!r.archived.is_empty());
    assert!(dir.path().join("ckpt/archived").is_dir());
    assert_eq!(
        out2.lock().keys().copied().collect::<Vec<_>>(),
        vec![4000, 5000]
    );
}

/// Garbage appended to the WAL's last segment (a torn tail): truncated, reported with its size,
/// bytes kept beside the segment, and recovery proceeds.
#[test]
fn torn_wal_tail_is_truncated_and_reported() {
    let _g = context_lock();
    let (dir, out) = ran_through(3);
    let mut segs = wal_segments(&dir);
    let last = segs.pop().expect("a WAL segment");
    // Find the end of data (first zero run after the header) and write a partial frame there.
    let bytes = std::fs::read(&last).unwrap();
    let end = bytes
        .windows(64)
        .rposition(|w| w.iter().any(|b| *b != 0))
        .map_or(32, |p| p + 64);
    let mut f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(end as u64)).unwrap();
    f.write_all(&[0x55; 17]).unwrap();
    drop(f);
    let ctx = run_until(&url(&dir), conf(), 3000, 4, &out).unwrap();
    let r = ctx.restart_report().unwrap();
    assert_eq!(r.outcome, RestartOutcome::Restored);
    assert!(r.wal.bytes_truncated >= 17, "{r:?}");
    assert!(r.wal.torn_tail_saved_to.is_some());
}

/// A WAL directory with records but no checkpoint is not silently replayed into a new
/// application, nor deleted.
#[test]
fn orphan_wal_is_an_error() {
    let _g = context_lock();
    let (dir, out) = ran_through(2);
    std::fs::remove_dir_all(dir.path().join("ckpt/manifests")).unwrap();
    let err = open_fails(&dir, &out);
    assert!(matches!(err, StreamingError::OrphanWal { .. }), "{err}");
}

/// queue_stream keeps its data in memory: checkpointing it is refused at start, as Spark does.
#[test]
fn queue_stream_cannot_be_checkpointed() {
    let _g = context_lock();
    let dir = tempfile::tempdir().unwrap();
    let ctx = open(&url(&dir), conf(), &ManualClock::new(0), |c| {
        c.queue_stream(vec![vec![1u32]], true, None)?
            .foreach_batch(|_, _| {})?;
        Ok(())
    })
    .unwrap();
    let err = ctx.start().unwrap_err();
    assert!(err.to_string().contains("queue_stream"), "{err}");
}

/// Garbage at the checkpoint URL's manifests that is not even a manifest name is ignored; garbage
/// config values are typed errors.
#[test]
fn garbage_settings_are_typed_errors() {
    let mut c = conf();
    let err = c
        .apply_env([("SPATE_MISSED_BATCHES", "sometimes")])
        .unwrap_err();
    assert!(err.to_string().contains("missed-batch policy"), "{err}");
    let err = c.apply_env([("SPATE_RECEIVER_WAL", "maybe")]).unwrap_err();
    assert!(err.to_string().contains("true/false"), "{err}");
    // A remote checkpoint without a wal_dir is refused with a clear message.
    let err = StreamingContext::get_or_create("memory://", conf(), |_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("wal_dir"), "{err}");
}

/// A reliable in-process source: stores `0..total` in chunks with `store_many_at(chunk, end)`,
/// resuming after a restart from `durable_position()` (as the socket receiver in ack mode does).
struct Sequence {
    total: u64,
    chunk: u64,
    payload: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sequence {
    fn new(total: u64, chunk: u64, payload: usize) -> Self {
        Sequence {
            total,
            chunk,
            payload,
            stop: Arc::default(),
            thread: None,
        }
    }
}

impl spate::Receiver<(u64, String)> for Sequence {
    fn on_start(
        &mut self,
        ctx: spate::ReceiverContext<(u64, String)>,
    ) -> Result<(), spate::ReceiverError> {
        let (total, chunk, payload) = (self.total, self.chunk, self.payload);
        let stop = Arc::clone(&self.stop);
        stop.store(false, std::sync::atomic::Ordering::SeqCst);
        self.thread = Some(std::thread::spawn(move || {
            let mut next = ctx.durable_position().unwrap_or(0);
            while next < total
                && !ctx.is_stopped()
                && !stop.load(std::sync::atomic::Ordering::SeqCst)
            {
                let end = (next + chunk).min(total);
                let items: Vec<(u64, String)> =
                    (next..end).map(|i| (i, "x".repeat(payload))).collect();
                match ctx.store_many_at(items, end) {
                    Ok(()) => next = end,
                    Err(_) => return,
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }));
        Ok(())
    }
    fn on_stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
    fn describe(&self) -> String {
        "sequence".into()
    }
}

type Seen = Arc<Mutex<BTreeMap<u64, (u64, u64)>>>;

/// Per batch: (records, sum of numbers); re-runs overwrite their batch.
fn seq_app(ctx: &StreamingContext, total: u64, payload: usize, seen: &Seen) -> spate::Result<()> {
    let s = ctx.receiver_stream(Sequence::new(total, 500, payload))?;
    let o = Arc::clone(seen);
    s.foreach_batch(move |t, b| {
        let v = b.to_vec();
        o.lock()
            .insert(t.0, (v.len() as u64, v.iter().map(|(n, _)| *n).sum()));
    })?;
    Ok(())
}

fn totals(seen: &Seen) -> (u64, u64) {
    seen.lock()
        .values()
        .fold((0, 0), |(c, s), (c2, s2)| (c + c2, s + s2))
}

/// DESIGN.md §4 step 1 + recovery step 3: blocks a receiver stored (WAL, synced) but no batch
/// processed survive a non-graceful stop; the restarted receiver resumes after the durable
/// position; the per-batch results (re-runs overwrite) cover every record exactly once. Small WAL
/// segments show that cleanup deletes segments only once nothing retained needs them.
#[test]
fn receiver_blocks_survive_an_abrupt_stop_and_the_wal_is_cleaned() {
    let _g = context_lock();
    let dir = tempfile::tempdir().unwrap();
    let total = 60_000u64;
    let c = StreamingConfig {
        batch_interval: DurationMs(100),
        block_interval: DurationMs(20),
        wal_segment_bytes: 64 << 10,
        ..conf()
    };
    let seen = Seen::default();
    let open_seq = |c: StreamingConfig| {
        StreamingContext::get_or_create(&url(&dir), c, |ctx| seq_app(ctx, total, 64, &seen))
            .unwrap()
    };
    let mut abrupt_stops = 0;
    let mut recovered_records = 0;
    for round in 0..8 {
        let ctx = open_seq(c.clone());
        let r = ctx.restart_report().unwrap();
        recovered_records += r.records_recovered;
        if round > 0 {
            assert_eq!(r.outcome, RestartOutcome::Restored, "{r:?}");
        }
        ctx.start().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(250));
        if totals(&seen).0 >= total {
            ctx.stop(true).unwrap();
            break;
        }
        // As abrupt as in-process gets: queued batches dropped, receivers stopped mid-stream.
        ctx.stop(false).unwrap();
        abrupt_stops += 1;
    }
    // Drain whatever is left (graceful).
    let ctx = open_seq(c.clone());
    ctx.start().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while totals(&seen).0 < total && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ctx.stop(true).unwrap();
    assert!(abrupt_stops >= 2, "only {abrupt_stops} abrupt stops");
    assert!(
        recovered_records > 0,
        "no block was ever recovered from the WAL"
    );
    assert_eq!(totals(&seen), (total, total * (total - 1) / 2));
    // ~60k records × ~80 bytes = ~5 MB of blocks in 64 KiB segments: most were deleted.
    let segments = wal_segments(&dir).len();
    assert!(segments < 20, "{segments} WAL segments left");
    // After a graceful stop nothing is pending or unallocated.
    let ctx = open_seq(c);
    let r = ctx.restart_report().unwrap();
    assert_eq!(r.blocks_unallocated, 0, "{r:?}");
    assert!(r.pending_batches.is_empty(), "{r:?}");
}

/// A window over restarts: the windowed result of every batch equals the uninterrupted run's,
/// because the batches a window needs keep their recorded inputs (selections) in the checkpoint.
#[test]
fn windows_see_the_same_batches_after_a_restart() {
    let _g = context_lock();
    fn win_app(ctx: &StreamingContext, out: &Outputs) -> spate::Result<()> {
        let s = ctx.replayable_stream(seconds())?;
        let o = Arc::clone(out);
        s.map(|n: u64| (n % 2, n))?
            .reduce_by_key_and_window(|a, b| a + b, DurationMs(3000), DurationMs(1000))?
            .foreach_batch(move |t, b| {
                let mut v = b.to_vec();
                v.sort_unstable();
                o.lock().insert(t.0, v);
            })?;
        Ok(())
    }
    let run = |url: &str, start: u64, to: u64, out: &Outputs| {
        run_built(url, conf(), start, to, |c| win_app(c, out)).unwrap();
    };
    let base = tempfile::tempdir().unwrap();
    let expected = Outputs::default();
    run(&url(&base), 0, 7, &expected);
    for k in [2u64, 4, 5] {
        let dir = tempfile::tempdir().unwrap();
        let out = Outputs::default();
        run(&url(&dir), 0, k, &out);
        run(&url(&dir), k * 1000, 7, &out);
        assert_eq!(*out.lock(), *expected.lock(), "restart after batch {k}");
    }
}

/// A metadata checkpoint that cannot be written stops the context with a typed error from
/// `await_termination` (Spark only logs it and keeps running, so its next recovery silently starts
/// from an older checkpoint).
#[test]
fn a_failed_metadata_checkpoint_surfaces() {
    let _g = context_lock();
    let dir = tempfile::tempdir().unwrap();
    let out = Outputs::default();
    let clock = ManualClock::new(0);
    let ctx = open(&url(&dir), conf(), &clock, |c| app(c, &out)).unwrap();
    ctx.start().unwrap();
    advance_and_wait(&ctx, &clock, BatchTime(1000)).unwrap();
    // Make every further manifest write fail: `manifests` becomes a plain file.
    let m = dir.path().join("ckpt/manifests");
    // Renamed away atomically (a writer may be putting a temp file into it right now).
    std::fs::rename(&m, dir.path().join("ckpt/manifests.old")).unwrap();
    std::fs::write(&m, b"not a directory").unwrap();
    clock.set_time(2000);
    let err = match ctx.await_termination_timeout(std::time::Duration::from_secs(30)) {
        Err(e) => e,
        Ok(true) => panic!("terminated without an error"),
        Ok(false) => panic!("no error within 30 s"),
    };
    assert!(matches!(err, StreamingError::Checkpoint { .. }), "{err}");
    ctx.stop(false).unwrap();
}
