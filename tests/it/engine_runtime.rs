//! The engine at run time: receivers under supervision (blocks, restarts, stop), replayable
//! sources, outputs on disk, listeners, job failures, graceful stop and stop on SIGTERM.

use parking_lot::Mutex;
use spate::testing::{advance_and_wait, context_lock, test_config};
use spate::{
    BatchInfo, BatchTime, DurationMs, ManualClock, OutputOperationInfo, Receiver, ReceiverContext,
    ReceiverError, ReceiverInfo, StreamingContext, StreamingError, StreamingListener,
};
use spate_tests::sources::PerSecond;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const B: DurationMs = DurationMs(1000);

/// Sends `0..total` in chunks; the position survives restarts (a replaying source would resend).
struct CountingReceiver {
    total: u64,
    chunk: u64,
    /// Records acknowledged by `store_many` (the next one to send).
    acked: Arc<AtomicU64>,
    starts: Arc<AtomicU64>,
    stops: Arc<AtomicU64>,
    /// Fail the first `on_start` (non-fatally).
    fail_first: bool,
    /// Fail every start fatally.
    fatal: bool,
    /// Ask for a restart after this many records (once).
    restart_at: Option<u64>,
    restarted: Arc<AtomicBool>,
}

impl CountingReceiver {
    fn new(total: u64, chunk: u64) -> Self {
        CountingReceiver {
            total,
            chunk,
            acked: Arc::default(),
            starts: Arc::default(),
            stops: Arc::default(),
            fail_first: false,
            fatal: false,
            restart_at: None,
            restarted: Arc::default(),
        }
    }
}

impl Receiver<u64> for CountingReceiver {
    fn on_start(&mut self, ctx: ReceiverContext<u64>) -> Result<(), ReceiverError> {
        let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fatal || (self.fail_first && n == 1) {
            return Err(ReceiverError::Start {
                message: format!("start {n} refused"),
                fatal: self.fatal,
            });
        }
        let (total, chunk) = (self.total, self.chunk);
        let acked = Arc::clone(&self.acked);
        let restart_at = self.restart_at;
        let restarted = Arc::clone(&self.restarted);
        std::thread::spawn(move || loop {
            if ctx.is_stopped() {
                return;
            }
            let from = acked.load(Ordering::SeqCst);
            if from >= total {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            if let Some(r) = restart_at {
                if from >= r && !restarted.swap(true, Ordering::SeqCst) {
                    ctx.restart("test restart", Some(Duration::from_millis(500)));
                    return;
                }
            }
            let to = (from + chunk).min(total);
            match ctx.store_many((from..to).collect()) {
                Ok(()) => acked.store(to, Ordering::SeqCst),
                Err(_) => return,
            }
        });
        Ok(())
    }

    fn on_stop(&mut self) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }

    fn describe(&self) -> String {
        format!("counting 0..{}", self.total)
    }
}

#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<BatchInfo>>,
    submitted: AtomicU64,
    started: AtomicU64,
    outputs: Mutex<Vec<OutputOperationInfo>>,
    receiver_started: AtomicU64,
    receiver_errors: Mutex<Vec<ReceiverInfo>>,
    receiver_stopped: AtomicU64,
}

impl StreamingListener for Recorder {
    fn on_batch_submitted(&self, _: &BatchInfo) {
        self.submitted.fetch_add(1, Ordering::SeqCst);
    }
    fn on_batch_started(&self, _: &BatchInfo) {
        self.started.fetch_add(1, Ordering::SeqCst);
    }
    fn on_batch_completed(&self, info: &BatchInfo) {
        self.batches.lock().push(info.clone());
    }
    fn on_output_operation_completed(&self, info: &OutputOperationInfo) {
        self.outputs.lock().push(info.clone());
    }
    fn on_receiver_started(&self, _: &ReceiverInfo) {
        self.receiver_started.fetch_add(1, Ordering::SeqCst);
    }
    fn on_receiver_error(&self, info: &ReceiverInfo) {
        self.receiver_errors.lock().push(info.clone());
    }
    fn on_receiver_stopped(&self, _: &ReceiverInfo) {
        self.receiver_stopped.fetch_add(1, Ordering::SeqCst);
    }
}

struct Harness {
    clock: ManualClock,
    ctx: StreamingContext,
    sum: Arc<AtomicU64>,
    count: Arc<AtomicU64>,
    rec: Arc<Recorder>,
}

fn receiver_harness(r: CountingReceiver, block_ms: u64, restart_ms: u64) -> Harness {
    let clock = ManualClock::new(0);
    let mut cfg = test_config(B);
    cfg.block_interval = DurationMs(block_ms);
    cfg.receiver_restart_delay = DurationMs(restart_ms);
    let ctx = StreamingContext::with_clock(cfg, Arc::new(clock.clone())).unwrap();
    let rec = Arc::new(Recorder::default());
    ctx.add_listener(rec.clone());
    let s = ctx.receiver_stream(r).unwrap();
    let (sum, count) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (s2, c2) = (Arc::clone(&sum), Arc::clone(&count));
    s.map(|x| x)
        .unwrap()
        .foreach_batch(move |_, b| {
            s2.fetch_add(b.iter().sum::<u64>(), Ordering::SeqCst);
            c2.fetch_add(b.len() as u64, Ordering::SeqCst);
        })
        .unwrap();
    Harness {
        clock,
        ctx,
        sum,
        count,
        rec,
    }
}

/// Advances batch by batch until `done()` or 200 batches.
fn run_until(h: &Harness, mut done: impl FnMut() -> bool) -> u64 {
    let mut t = 0;
    while !done() {
        t += 1000;
        assert!(t <= 200_000, "condition not reached after 200 batches");
        advance_and_wait(&h.ctx, &h.clock, BatchTime(t)).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    t
}

#[test]
fn receiver_records_all_arrive_exactly_once() {
    let _g = context_lock();
    let r = CountingReceiver::new(20_000, 1000);
    let acked = Arc::clone(&r.acked);
    let h = receiver_harness(r, 200, 2000);
    h.ctx.start().unwrap();
    run_until(&h, || h.count.load(Ordering::SeqCst) >= 20_000);
    h.ctx.stop(true).unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), 20_000);
    assert_eq!(h.count.load(Ordering::SeqCst), 20_000);
    assert_eq!(h.sum.load(Ordering::SeqCst), 20_000 * 19_999 / 2);
    // Listener: every batch completed with its records counted; receiver started and stopped once.
    let batches = h.rec.batches.lock().clone();
    assert_eq!(batches.iter().map(|b| b.num_records).sum::<u64>(), 20_000);
    assert!(batches
        .iter()
        .all(|b| b.succeeded() && b.processing_delay_ms().is_some()));
    assert_eq!(h.rec.submitted.load(Ordering::SeqCst), batches.len() as u64);
    assert_eq!(h.rec.receiver_started.load(Ordering::SeqCst), 1);
    assert_eq!(h.rec.receiver_stopped.load(Ordering::SeqCst), 1);
}

#[test]
fn receiver_restarts_after_non_fatal_start_error_and_on_request() {
    let _g = context_lock();
    let mut r = CountingReceiver::new(5000, 500);
    r.fail_first = true;
    r.restart_at = Some(2000);
    let (starts, stops, acked) = (
        Arc::clone(&r.starts),
        Arc::clone(&r.stops),
        Arc::clone(&r.acked),
    );
    let h = receiver_harness(r, 100, 1500);
    h.ctx.start().unwrap();
    run_until(&h, || h.count.load(Ordering::SeqCst) >= 5000);
    h.ctx.stop(false).unwrap();
    // Start 1 failed, start 2 ran until the requested restart, start 3 finished.
    assert_eq!(starts.load(Ordering::SeqCst), 3);
    // on_stop once for the restart, once for the final stop (not for the failed start).
    assert_eq!(stops.load(Ordering::SeqCst), 2);
    assert_eq!(acked.load(Ordering::SeqCst), 5000);
    assert_eq!(h.sum.load(Ordering::SeqCst), 5000 * 4999 / 2);
    let errors = h.rec.receiver_errors.lock().clone();
    assert!(
        errors
            .iter()
            .any(|e| e.last_error.as_deref() == Some("receiver failed to start: start 1 refused")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e
        .last_error
        .as_deref()
        .is_some_and(|m| m.contains("test restart"))));
}

#[test]
fn fatal_receiver_start_error_is_reported_and_not_retried() {
    let _g = context_lock();
    let mut r = CountingReceiver::new(10, 10);
    r.fatal = true;
    let starts = Arc::clone(&r.starts);
    let h = receiver_harness(r, 100, 100);
    h.ctx.start().unwrap();
    run_until(&h, || h.clock.now_ms_pub() >= 5000);
    h.ctx.stop(false).unwrap();
    assert_eq!(starts.load(Ordering::SeqCst), 1);
    assert_eq!(h.count.load(Ordering::SeqCst), 0);
    assert_eq!(h.rec.receiver_errors.lock().len(), 1);
}

trait NowMs {
    fn now_ms_pub(&self) -> u64;
}
impl NowMs for ManualClock {
    fn now_ms_pub(&self) -> u64 {
        spate::Clock::now_ms(self)
    }
}

#[test]
fn graceful_stop_processes_every_acknowledged_record() {
    let _g = context_lock();
    // A receiver that never finishes: stop while it is sending.
    let r = CountingReceiver::new(u64::MAX / 4, 300);
    let acked = Arc::clone(&r.acked);
    let h = receiver_harness(r, 200, 2000);
    h.ctx.start().unwrap();
    run_until(&h, || h.count.load(Ordering::SeqCst) >= 3000);
    let ctx = h.ctx.clone();
    let stopper = std::thread::spawn(move || ctx.stop(true));
    // Keep time moving so the last blocks are allocated and the last tick fires.
    let mut t = spate::Clock::now_ms(&h.clock);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stopper.is_finished() {
        assert!(Instant::now() < deadline, "graceful stop hung");
        t += 100;
        h.clock.set_time(t);
        std::thread::sleep(Duration::from_millis(3));
    }
    stopper.join().unwrap().unwrap();
    let acked = acked.load(Ordering::SeqCst);
    // Every record whose store returned Ok was processed (Spark's "stop gracefully" assertion).
    assert_eq!(h.count.load(Ordering::SeqCst), acked);
    assert_eq!(h.sum.load(Ordering::SeqCst), acked * (acked - 1) / 2);
    assert!(h.ctx.await_termination().is_ok());
}

#[test]
fn replayable_stream_selects_once_per_batch_in_order() {
    // A replayable source over numbered "files": batch `t` selects the numbers of its second.
    let src = PerSecond::new("numbers", |s| {
        (0..s).map(|i| s * 100 + i).collect::<Vec<u64>>()
    });
    let selected = src.selects();
    let out = spate::testing::run_graph(B, 3, |ctx| ctx.replayable_stream(src)).unwrap();
    let out: Vec<(u64, Vec<u64>)> = out.into_iter().map(|(t, v)| (t.0, v)).collect();
    assert_eq!(
        out,
        vec![
            (1000, vec![100]),
            (2000, vec![200, 201]),
            (3000, vec![300, 301, 302])
        ]
    );
    let sel = selected.lock().unwrap().clone();
    assert_eq!(&sel[..3], &[1, 2, 3]);
}

#[test]
fn save_as_text_files_writes_one_file_per_batch_and_overwrites() {
    let _g = context_lock();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("out/counts").to_string_lossy().into_owned();
    for round in 0..2 {
        let clock = ManualClock::new(0);
        let ctx = StreamingContext::with_clock(test_config(B), Arc::new(clock.clone())).unwrap();
        let d = ctx
            .queue_stream(
                vec![vec![format!("a{round}"), "b".into()], vec![]],
                true,
                None,
            )
            .unwrap();
        d.save_as_text_files(prefix.clone(), "txt").unwrap();
        d.print(1).unwrap();
        ctx.start().unwrap();
        advance_and_wait(&ctx, &clock, BatchTime(1000)).unwrap();
        advance_and_wait(&ctx, &clock, BatchTime(2000)).unwrap();
        ctx.stop(false).unwrap();
        let first = std::fs::read_to_string(format!("{prefix}-1000.txt")).unwrap();
        assert_eq!(first, format!("a{round}\nb\n"));
        assert_eq!(
            std::fs::read_to_string(format!("{prefix}-2000.txt")).unwrap(),
            ""
        );
    }
    let files = std::fs::read_dir(dir.path().join("out")).unwrap().count();
    assert_eq!(files, 2, "no temporary files left");
}

#[test]
fn failing_output_fails_the_context_with_coordinates() {
    let _g = context_lock();
    let clock = ManualClock::new(0);
    let ctx = StreamingContext::with_clock(test_config(B), Arc::new(clock.clone())).unwrap();
    let rec = Arc::new(Recorder::default());
    ctx.add_listener(rec.clone());
    let d = ctx
        .queue_stream(vec![vec![1u32], vec![2], vec![3]], true, None)
        .unwrap();
    let id = d
        .foreach_batch(|t, _| {
            if t == BatchTime(2000) {
                panic!("boom at {t}");
            }
        })
        .unwrap();
    let id2 = d
        .try_foreach_batch(|t, _| {
            if t == BatchTime(3000) {
                Err("sink unavailable".into())
            } else {
                Ok(())
            }
        })
        .unwrap();
    ctx.start().unwrap();
    advance_and_wait(&ctx, &clock, BatchTime(1000)).unwrap();
    clock.set_time(2000);
    let err = ctx.await_termination().unwrap_err();
    match err {
        StreamingError::JobFailed {
            time,
            operator,
            message,
            ..
        } => {
            assert_eq!(time, BatchTime(2000));
            assert_eq!(operator, id);
            assert!(message.contains("boom at 2000 ms"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }
    // Later calls still report the failure.
    assert!(matches!(
        ctx.await_termination(),
        Err(StreamingError::Failed { .. })
    ));
    clock.set_time(3000);
    // The context keeps running after a failed batch (as Spark); batch 3 runs too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ctx.last_processed_batch() < Some(BatchTime(3000)) {
        assert!(Instant::now() < deadline, "batch 3 not processed");
        std::thread::sleep(Duration::from_millis(5));
    }
    ctx.stop(false).unwrap();
    let outs = rec.outputs.lock().clone();
    assert!(outs
        .iter()
        .any(|o| o.operator == id && o.batch_time == BatchTime(2000) && o.failure.is_some()));
    assert!(outs.iter().any(|o| o.operator == id2
        && o.batch_time == BatchTime(3000)
        && o.failure.as_deref() == Some("sink unavailable")));
}

#[test]
fn sigterm_stops_gracefully_when_configured() {
    let _g = context_lock();
    let mut cfg = test_config(DurationMs(100));
    cfg.stop_gracefully_on_signal = true;
    cfg.graceful_stop_timeout = Some(DurationMs(5000));
    let ctx = StreamingContext::new(cfg).unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = Arc::clone(&seen);
    ctx.queue_stream(vec![vec![1u8]; 1000], true, None)
        .unwrap()
        .foreach_batch(move |_, b| {
            s2.fetch_add(b.len() as u64, Ordering::SeqCst);
        })
        .unwrap();
    ctx.start().unwrap();
    while seen.load(Ordering::SeqCst) < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_hook::low_level::raise(signal_hook::consts::SIGTERM).unwrap();
    assert!(ctx
        .await_termination_timeout(Duration::from_secs(20))
        .unwrap());
    assert_eq!(ctx.state(), spate::ContextState::Stopped);
}
