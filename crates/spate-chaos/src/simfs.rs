//! The in-process SimFs mode: power loss and a full disk, which a child process cannot simulate.
//!
//! [`run`] runs a stateful word count (`update_state_by_key` running totals, as `spate wordcount
//! --checkpoint`) **in this process**, with its write-ahead log on a [`SimFs`] and its checkpoint in
//! a real directory. The input is an in-process reliable producer speaking the semantics of
//! `spate feed --ack`: a receiver stores the corpus lines with
//! [`ReceiverContext::store_many_at`] (the position is one past the last line) and acknowledges
//! them to the producer only when the engine returned `Ok` (the block is in the WAL and synced).
//! After a restart the producer resumes from `max(durable position, acknowledged)` — it never sends
//! an acknowledged line again, exactly like the feeder.
//!
//! Each cycle runs a seeded number of block-interval steps on a manual clock, then **crashes**,
//! optionally up to 3 ms into a step (mid-store, mid-batch): the context is stopped abruptly
//! (`stop(false)`: queued batches dropped, receivers stopped; no graceful drain) and dropped, then
//! [`SimFs::crash`] with [`CrashMode::DropUnsynced`] or [`CrashMode::TearUnsynced`] (seeded) loses
//! or tears every WAL write and directory change that was not synced — power loss right after
//! the process's last write (crashing first would let the dead engine keep writing checkpoints,
//! which live in a real directory). The context is rebuilt through
//! `StreamingContext::get_or_create_on`; the producer reconnects as soon as the receiver starts,
//! while the blocks recovered from the WAL are still being processed (see
//! [`SimConfig::eager_producer`]). The
//! `fill-disk` disturbance makes a seeded window of a cycle fail writes, creates and `set_len` on
//! the SimFs with ENOSPC (seeded rate); the engine must keep going or fail with a typed error, then
//! the harness frees the disk (faults off) with the crash and restarts.
//!
//! Oracle: after a final crash-free run that consumes the whole corpus, the running totals must
//! equal an independent count of the corpus words (every line is acknowledged by then): missing
//! words are `lost`, extra ones `duplicated`; a restart whose durable position is below what was
//! acknowledged is `lost` at that cycle; a panic, a failed restart or a stalled batch outside a
//! full-disk window is `program_failed`; `Fresh` after a restore is `restart_outcome`.

use crate::oracle::{Finding, FindingKind};
use crate::rng::Rng;
use crate::{ChaosError, RecoveryTimes, Report, RunRecord};
use spate::{
    BatchTime, DurationMs, ManualClock, Receiver, ReceiverContext, ReceiverError, RestartOutcome,
    StoreError, StreamingConfig, StreamingContext,
};
use spate_io::{CrashMode, Faults, SimFs};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Batch interval of the in-process word count, ms of the manual clock.
pub const BATCH_MS: u64 = 1000;
/// Block interval (one step of the harness), ms of the manual clock.
pub const BLOCK_MS: u64 = 200;
/// Data checkpoint interval of the running totals, ms.
const STATE_CHECKPOINT_MS: u64 = 2000;
/// Real time a batch may take before it counts as stalled (outside a full-disk window).
const BATCH_WAIT: Duration = Duration::from_secs(30);
/// Real time a batch may take inside a full-disk window before the cycle ends (a stall there is
/// reported in the run record, not as a finding: the disk is full).
const FULL_DISK_WAIT: Duration = Duration::from_secs(3);
/// Real time the producer gets between two steps that do not end a batch.
const STEP_PAUSE: Duration = Duration::from_millis(3);
/// Words in the corpus vocabulary.
const VOCABULARY: u64 = 60;
/// Words per corpus line.
const WORDS_PER_LINE: usize = 10;

/// Settings of a SimFs-mode run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed every random choice (corpus, steps, crash modes and instants, chunk sizes, full-disk
    /// windows, SimFs tears) is drawn from.
    pub seed: u64,
    /// Crash cycles (each ends with a `SimFs::crash` and a restart).
    pub cycles: u32,
    /// Corpus lines; `None`: `cycles × 40 + 40` (mostly consumed during the cycles).
    pub lines: Option<u64>,
    /// Enable the `fill-disk` disturbance.
    pub fill_disk: bool,
    /// Probability (0.0–1.0) that a cycle gets a full-disk window when `fill_disk` is on.
    pub disturb_rate: f64,
    /// Largest number of steps (block intervals, 200 ms of the manual clock) a cycle runs before
    /// its crash; the number is drawn from `1..=max_steps`.
    pub max_steps: u64,
    /// Where the checkpoint goes (`<work_dir>/ck`, a real directory). Created if missing; the
    /// checkpoint location must not exist yet.
    pub work_dir: PathBuf,
    /// The producer connects as soon as the receiver starts (default `true`), so new blocks are
    /// stored while recovered ones are still being processed. `false`: it connects once the
    /// restarted context completed its first batch (a feeder reconnecting later). The eager
    /// producer found an engine bug, now fixed: block ids restarted at 0 in every process and a
    /// recovered block could be read as a new block with the same id (one block lost, another
    /// counted twice; regression: `tests/chaos_simfs.rs`).
    pub eager_producer: bool,
    /// The command that reproduces the run (printed on failure).
    pub command: String,
    /// Progress lines on stderr (one per cycle).
    pub verbose: bool,
    /// Set (e.g. by a signal handler) to stop between steps: [`run`] returns
    /// [`ChaosError::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl SimConfig {
    /// Defaults for `seed` and `cycles`: 200 ms … 4.8 s of manual clock per cycle, no disturbance.
    pub fn new(seed: u64, cycles: u32, work_dir: PathBuf) -> SimConfig {
        SimConfig {
            seed,
            cycles,
            lines: None,
            fill_disk: false,
            disturb_rate: 0.3,
            max_steps: 24,
            eager_producer: true,
            work_dir,
            command: String::new(),
            verbose: false,
            stop: None,
        }
    }
}

/// The corpus: `lines` lines, line `i` being the word `l<i>` (`l000042`: each line's own key, so
/// the oracle names lost and double-counted lines) followed by [`WORDS_PER_LINE`] words of a
/// skewed vocabulary (`w00` … `w59`), drawn from `seed`.
pub fn corpus(seed: u64, lines: u64) -> Vec<String> {
    let mut r = Rng::new(seed ^ 0xC0_4B05);
    (0..lines)
        .map(|i| {
            let mut l = format!("l{i:06}");
            for _ in 0..WORDS_PER_LINE {
                // Skewed: the minimum of two draws favours low word numbers.
                let w = r.range(0, VOCABULARY - 1).min(r.range(0, VOCABULARY - 1));
                l.push_str(&format!(" w{w:02}"));
            }
            l
        })
        .collect()
}

/// `3-5, 9, 12-13` for sorted line numbers (at most 12 ranges, then `...`).
fn ranges(v: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    if out.len() > 12 {
        out.truncate(12);
        out.push("...".into());
    }
    out.join(", ")
}

/// The independent count of the corpus's words.
fn count(lines: &[String]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for l in lines {
        for w in l.split_whitespace() {
            *m.entry(w.to_owned()).or_insert(0) += 1;
        }
    }
    m
}

/// What the producer side shares with the harness across restarts.
#[derive(Default)]
struct Shared {
    /// One past the last line acknowledged to the producer (over all runs).
    acked: AtomicU64,
    /// Per receiver start: (durable position the engine reported, acknowledged at that moment).
    resumes: Mutex<Vec<(Option<u64>, u64)>>,
    /// Stores the engine refused (`StoreError::Failed`), with the last reason.
    refused: AtomicU64,
    last_refusal: Mutex<Option<String>>,
    /// The producer may connect (see [`SimConfig::eager_producer`]).
    gate: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reliable in-process producer and its receiver (WAL before acknowledgement).
struct AckedLines {
    corpus: Arc<Vec<String>>,
    shared: Arc<Shared>,
    seed: u64,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver<String> for AckedLines {
    fn on_start(&mut self, ctx: ReceiverContext<String>) -> Result<(), ReceiverError> {
        let corpus = Arc::clone(&self.corpus);
        let shared = Arc::clone(&self.shared);
        let stop = Arc::clone(&self.stop);
        let seed = self.seed;
        stop.store(false, Ordering::SeqCst);
        self.thread = Some(std::thread::spawn(move || {
            // The producer connects once the harness opens the gate.
            while !shared.gate.load(Ordering::SeqCst)
                && !ctx.is_stopped()
                && !stop.load(Ordering::SeqCst)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            if ctx.is_stopped() || stop.load(Ordering::SeqCst) {
                return;
            }
            // As `spate feed --ack` after HELLO resume=<n>: never send an acknowledged line again.
            let durable = ctx.durable_position();
            let acked = shared.acked.load(Ordering::SeqCst);
            lock(&shared.resumes).push((durable, acked));
            let total = corpus.len() as u64;
            let mut next = durable.unwrap_or(0).max(acked).min(total);
            while next < total && !ctx.is_stopped() && !stop.load(Ordering::SeqCst) {
                // Chunk sizes depend only on the seed and the position: replays are identical.
                let size = Rng::new(seed ^ next.wrapping_mul(0x9E37_79B9)).range(1, 4);
                let end = (next + size).min(total);
                let items = corpus[next as usize..end as usize].to_vec();
                match ctx.store_many_at(items, end) {
                    Ok(()) => {
                        shared.acked.fetch_max(end, Ordering::SeqCst);
                        next = end;
                    }
                    Err(StoreError::Failed { reason, .. }) => {
                        // As the socket receiver: nothing more on this "connection"; start again
                        // from the durable position.
                        shared.refused.fetch_add(1, Ordering::SeqCst);
                        *lock(&shared.last_refusal) = Some(reason.clone());
                        ctx.restart(&format!("store refused: {reason}"), None);
                        return;
                    }
                    Err(_) => return,
                }
            }
        }));
        Ok(())
    }

    fn on_stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn describe(&self) -> String {
        "chaos acked lines".into()
    }
}

/// Running totals after each batch, as the output operation saw them (re-runs overwrite).
type Seen = Arc<Mutex<BTreeMap<u64, BTreeMap<String, u64>>>>;

fn build(
    ctx: &StreamingContext,
    corpus: &Arc<Vec<String>>,
    shared: &Arc<Shared>,
    seed: u64,
    seen: &Seen,
) -> spate::Result<()> {
    let lines = ctx.receiver_stream(AckedLines {
        corpus: Arc::clone(corpus),
        shared: Arc::clone(shared),
        seed,
        stop: Arc::default(),
        thread: None,
    })?;
    let seen = Arc::clone(seen);
    lines
        .flat_map(|l: String| {
            l.split_whitespace()
                .map(|w| (w.to_owned(), 1u64))
                .collect::<Vec<_>>()
        })?
        .reduce_by_key(|a, b| a + b)?
        .update_state_by_key(|new: &[u64], old: Option<u64>| {
            Some(old.unwrap_or(0) + new.iter().sum::<u64>())
        })?
        .checkpoint(DurationMs(STATE_CHECKPOINT_MS))?
        .foreach_batch(move |t, b| {
            lock(&seen).insert(t.0, b.iter().cloned().collect());
        })?;
    Ok(())
}

fn config() -> StreamingConfig {
    StreamingConfig {
        app_name: "spate-chaos-simfs".into(),
        batch_interval: DurationMs(BATCH_MS),
        block_interval: DurationMs(BLOCK_MS),
        parallelism: 2,
        default_partitions: 2,
        receiver_restart_delay: DurationMs(BLOCK_MS),
        wal_dir: Some("/wal".into()),
        // Small segments: rolls (create + set_len, ENOSPC targets) and cleanup happen often.
        wal_segment_bytes: 64 << 10,
        state_snapshot_every: 2,
        ..StreamingConfig::default()
    }
}

/// Counts panics (any thread) while installed; forwards to the previous hook.
struct PanicCounter {
    msgs: Arc<Mutex<Vec<String>>>,
    prev: Arc<PanicHook>,
}

type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync + 'static>;

impl PanicCounter {
    fn install() -> PanicCounter {
        let msgs: Arc<Mutex<Vec<String>>> = Arc::default();
        let m = Arc::clone(&msgs);
        let prev: Arc<PanicHook> = Arc::new(std::panic::take_hook());
        let p = Arc::clone(&prev);
        std::panic::set_hook(Box::new(move |info| {
            lock(&m).push(info.to_string());
            p(info);
        }));
        PanicCounter { msgs, prev }
    }
}

impl Drop for PanicCounter {
    fn drop(&mut self) {
        // Back to the previous hook.
        let prev = Arc::clone(&self.prev);
        std::panic::set_hook(Box::new(move |info| prev(info)));
    }
}

/// One cycle's seeded plan.
#[derive(Clone, Debug)]
struct Plan {
    steps: u64,
    mode: CrashMode,
    /// Real microseconds into the last step at which the crash happens (`None`: after the step).
    mid_us: Option<u64>,
    /// Full-disk window: (first step, ENOSPC rate per mille).
    full_disk: Option<(u64, u32)>,
}

fn draw(r: &mut Rng, cfg: &SimConfig) -> Plan {
    let steps = r.range(1, cfg.max_steps.max(1));
    let mode = if r.chance(0.5) {
        CrashMode::DropUnsynced
    } else {
        CrashMode::TearUnsynced
    };
    let mid_us = r.chance(0.5).then(|| r.range(0, 3000));
    let full_disk = (cfg.fill_disk && r.chance(cfg.disturb_rate))
        .then(|| (r.range(1, steps), r.range(250, 1000) as u32));
    Plan {
        steps,
        mode,
        mid_us,
        full_disk,
    }
}

/// The harness's state over the runs.
struct Harness<'a> {
    cfg: &'a SimConfig,
    url: String,
    sim: Arc<SimFs>,
    corpus: Arc<Vec<String>>,
    shared: Arc<Shared>,
    seen: Seen,
    /// Manual clock time, ms (never goes back across restarts).
    now: u64,
    findings: Vec<Finding>,
    restored_once: bool,
    /// Receiver starts already checked by [`Harness::check_resumes`].
    resumes_checked: usize,
}

impl Harness<'_> {
    fn interrupted(&self) -> bool {
        self.cfg
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    }

    fn finding(&mut self, kind: FindingKind, cycle: Option<u32>, detail: String) {
        self.findings.push(Finding {
            kind,
            cycle,
            detail,
        });
    }

    /// get_or_create_on + start; records the restart in `rec`.
    fn open(
        &mut self,
        cycle: Option<u32>,
        rec: &mut RunRecord,
    ) -> Option<(StreamingContext, ManualClock)> {
        let clock = ManualClock::new(self.now);
        self.shared
            .gate
            .store(self.cfg.eager_producer, Ordering::SeqCst);
        let t0 = Instant::now();
        let (corpus, shared, seen, seed) = (
            Arc::clone(&self.corpus),
            Arc::clone(&self.shared),
            Arc::clone(&self.seen),
            self.cfg.seed,
        );
        let ctx = match StreamingContext::get_or_create_on(
            &self.url,
            config(),
            Arc::new(clock.clone()),
            Arc::clone(&self.sim) as Arc<dyn spate_io::FileSystem>,
            |c| build(c, &corpus, &shared, seed, &seen),
        ) {
            Ok(c) => c,
            Err(e) => {
                rec.ended = format!("restart failed: {e}");
                self.finding(
                    FindingKind::ProgramFailed,
                    cycle,
                    format!("get_or_create_on failed: {e}"),
                );
                return None;
            }
        };
        rec.restart_ms = Some(t0.elapsed().as_millis() as u64);
        if let Some(r) = ctx.restart_report() {
            let word = format!("{:?}", r.outcome);
            if r.outcome == RestartOutcome::Fresh && self.restored_once {
                self.finding(
                    FindingKind::RestartOutcome,
                    cycle,
                    format!("Fresh after an earlier restore: {}", r.summary()),
                );
            }
            if r.outcome == RestartOutcome::Restored {
                self.restored_once = true;
            } else if r.outcome != RestartOutcome::Fresh {
                self.finding(FindingKind::RestartOutcome, cycle, r.summary());
            }
            rec.outcome = Some(word);
            rec.restart = Some(r.summary());
        }
        if let Err(e) = ctx.start() {
            rec.ended = format!("start failed: {e}");
            self.finding(FindingKind::ProgramFailed, cycle, format!("start: {e}"));
            let _ = ctx.stop(false);
            return None;
        }
        Some((ctx, clock))
    }

    /// A receiver start below what the producer was told is durable: acknowledged lines are gone.
    /// Checks the starts since the previous call.
    fn check_resumes(&mut self, cycle: Option<u32>) {
        let all = lock(&self.shared.resumes).clone();
        let from = self.resumes_checked.min(all.len());
        self.resumes_checked = all.len();
        let bad: Vec<(Option<u64>, u64)> = all[from..]
            .iter()
            .filter(|(d, a)| d.unwrap_or(0) < *a)
            .copied()
            .collect();
        for (d, a) in bad {
            self.finding(
                FindingKind::Lost,
                cycle,
                format!(
                    "resume below acknowledged: the engine's durable position is {} but lines below {a} were acknowledged ({} lines lost)",
                    d.map_or_else(|| "none".to_owned(), |d| d.to_string()),
                    a - d.unwrap_or(0)
                ),
            );
        }
    }

    /// Advances the clock one step; at a batch boundary waits for the batch. `Err`: the reason the
    /// cycle cannot go on (engine error or a stall).
    fn step(
        &mut self,
        ctx: &StreamingContext,
        clock: &ManualClock,
        wait: Duration,
    ) -> Result<(), String> {
        self.now += BLOCK_MS;
        clock.set_time(self.now);
        if self.now.is_multiple_of(BATCH_MS) {
            match ctx.await_batch_completed(BatchTime(self.now), wait) {
                Ok(true) => {
                    // The restarted context ran its first batch: let the producer connect.
                    self.shared.gate.store(true, Ordering::SeqCst);
                    Ok(())
                }
                Ok(false) => Err(format!("batch {} not completed within {wait:?}", self.now)),
                Err(e) => Err(format!("engine error: {e}")),
            }
        } else {
            std::thread::sleep(STEP_PAUSE);
            Ok(())
        }
    }

    fn cycle(&mut self, c: u32, plan: &Plan) -> Result<RunRecord, ChaosError> {
        let mut rec = RunRecord {
            cycle: Some(c),
            ..RunRecord::default()
        };
        let t0 = Instant::now();
        let Some((ctx, clock)) = self.open(Some(c), &mut rec) else {
            rec.ran_ms = t0.elapsed().as_millis() as u64;
            return Ok(rec);
        };
        let mut stopped_by: Option<String> = None;
        let mut in_window = false;
        let faults_before = self.sim.stats().faults_injected;
        for s in 1..=plan.steps {
            if self.interrupted() {
                self.sim.crash(plan.mode);
                let _ = ctx.stop(false);
                return Err(ChaosError::Interrupted);
            }
            if let Some((from, rate)) = plan.full_disk {
                if s == from {
                    self.sim.set_faults(Faults {
                        enospc_per_mille: rate,
                        ..Faults::default()
                    });
                    in_window = true;
                }
            }
            let last = s == plan.steps;
            if last {
                if let Some(us) = plan.mid_us {
                    // Crash during the last step: the clock moves, the crash follows after `us`.
                    self.now += BLOCK_MS;
                    clock.set_time(self.now);
                    std::thread::sleep(Duration::from_micros(us));
                    break;
                }
            }
            let wait = if in_window {
                FULL_DISK_WAIT
            } else {
                BATCH_WAIT
            };
            if let Err(e) = self.step(&ctx, &clock, wait) {
                if !in_window {
                    self.finding(FindingKind::ProgramFailed, Some(c), e.clone());
                }
                stopped_by = Some(e);
                break;
            }
        }
        let stop = ctx.stop(false);
        drop(ctx);
        self.check_resumes(Some(c));
        self.sim.crash(plan.mode);
        // "Free the disk": the next process sees a healthy file system.
        self.sim.set_faults(Faults::default());
        rec.ended = format!(
            "crash {:?} after {} ms of clock{}{}",
            plan.mode,
            plan.steps * BLOCK_MS,
            plan.mid_us
                .map(|us| format!(", {us} us into the last step"))
                .unwrap_or_default(),
            stopped_by
                .as_ref()
                .map(|e| format!(" (cycle ended early: {e})"))
                .unwrap_or_default()
        );
        if let Err(e) = stop {
            rec.ended.push_str(&format!("; stop: {e}"));
        }
        if let Some((from, rate)) = plan.full_disk {
            let injected = self.sim.stats().faults_injected - faults_before;
            rec.disturbed = Some(format!(
                "fill-disk: ENOSPC at {rate} per mille from step {from}: {injected} faults injected, {} stores refused so far",
                self.shared.refused.load(Ordering::SeqCst),
            ));
        }
        rec.ran_ms = t0.elapsed().as_millis() as u64;
        Ok(rec)
    }

    /// The final crash-free run: until every line is acknowledged and two more batches completed.
    fn final_run(&mut self) -> Result<RunRecord, ChaosError> {
        let mut rec = RunRecord::default();
        let t0 = Instant::now();
        let Some((ctx, clock)) = self.open(None, &mut rec) else {
            rec.ran_ms = t0.elapsed().as_millis() as u64;
            return Ok(rec);
        };
        let total = self.corpus.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut after_done = 0;
        loop {
            if self.interrupted() {
                let _ = ctx.stop(false);
                return Err(ChaosError::Interrupted);
            }
            if Instant::now() > deadline {
                let acked = self.shared.acked.load(Ordering::SeqCst);
                self.finding(
                    FindingKind::ProgramFailed,
                    None,
                    format!("final run: {acked} of {total} lines acknowledged after 120 s"),
                );
                rec.ended = "timed out".into();
                break;
            }
            if let Err(e) = self.step(&ctx, &clock, BATCH_WAIT) {
                self.finding(FindingKind::ProgramFailed, None, format!("final run: {e}"));
                rec.ended = e;
                break;
            }
            if self.now.is_multiple_of(BATCH_MS)
                && self.shared.acked.load(Ordering::SeqCst) >= total
            {
                after_done += 1;
                if after_done >= 2 {
                    rec.ended = "all lines acknowledged and processed".into();
                    break;
                }
            }
        }
        let _ = ctx.stop(false);
        self.check_resumes(None);
        rec.ran_ms = t0.elapsed().as_millis() as u64;
        Ok(rec)
    }
}

/// Runs the SimFs mode (see the [module docs](self)).
///
/// # Errors
/// [`ChaosError::Config`] for inconsistent settings or a non-empty checkpoint location,
/// [`ChaosError::Io`] when the work directory cannot be created, [`ChaosError::Interrupted`].
pub fn run(cfg: &SimConfig) -> Result<Report, ChaosError> {
    if cfg.cycles == 0 {
        return Err(ChaosError::Config("--cycles 0: nothing to do".into()));
    }
    if !(0.0..=1.0).contains(&cfg.disturb_rate) {
        return Err(ChaosError::Config(
            "the disturbance rate is a probability (0.0–1.0)".into(),
        ));
    }
    let started = Instant::now();
    std::fs::create_dir_all(&cfg.work_dir).map_err(crate::io_err(format!(
        "creating {}",
        cfg.work_dir.display()
    )))?;
    let ck = cfg.work_dir.join("ck");
    if ck.exists() {
        return Err(ChaosError::Config(format!(
            "checkpoint location {} already exists (use an empty work directory)",
            ck.display()
        )));
    }
    let lines = cfg.lines.unwrap_or(u64::from(cfg.cycles) * 40 + 40).max(1);
    let corpus = Arc::new(corpus(cfg.seed, lines));
    let expected = count(&corpus);
    let panics = PanicCounter::install();
    let mut h = Harness {
        cfg,
        url: ck.display().to_string(),
        sim: Arc::new(SimFs::new(cfg.seed)),
        corpus,
        shared: Arc::default(),
        seen: Seen::default(),
        now: 0,
        findings: Vec::new(),
        restored_once: false,
        resumes_checked: 0,
    };
    let mut rng = Rng::new(cfg.seed);
    let mut runs = Vec::new();
    let mut disturbances = 0;
    let mut dead = false;
    for c in 1..=cfg.cycles {
        let plan = draw(&mut rng, cfg);
        disturbances += u32::from(plan.full_disk.is_some());
        let rec = h.cycle(c, &plan)?;
        if cfg.verbose {
            eprintln!(
                "chaos simfs: cycle {c}/{}: {}: {}{}; acked {}/{} lines",
                cfg.cycles,
                rec.outcome.as_deref().unwrap_or("(no restart)"),
                rec.ended,
                rec.disturbed
                    .as_ref()
                    .map(|d| format!("; {d}"))
                    .unwrap_or_default(),
                h.shared.acked.load(Ordering::SeqCst),
                lines
            );
        }
        dead = rec.restart_ms.is_none();
        runs.push(rec);
        if dead {
            break;
        }
    }
    if !dead {
        let rec = h.final_run()?;
        if cfg.verbose {
            eprintln!(
                "chaos simfs: final run: {}: {}; acked {}/{} lines",
                rec.outcome.as_deref().unwrap_or("(no restart)"),
                rec.ended,
                h.shared.acked.load(Ordering::SeqCst),
                lines
            );
        }
        runs.push(rec);
    }
    // Oracle.
    let seen = lock(&h.seen).clone();
    let last = seen.iter().next_back();
    let found = last.map(|(_, m)| m.clone()).unwrap_or_default();
    let keys: Vec<String> = expected
        .keys()
        .chain(found.keys().filter(|k| !expected.contains_key(*k)))
        .cloned()
        .collect();
    let (mut lost, mut duplicated) = (0u64, 0u64);
    // Line keys (`l<i>`) name the lines; the vocabulary words show the damage per word.
    let (mut lost_lines, mut dup_lines) = (Vec::new(), Vec::new());
    // A run that could not restart has no final state to judge (its finding says why).
    let judged: &[String] = if dead { &[] } else { &keys };
    for k in judged {
        let e = expected.get(k).copied().unwrap_or(0);
        let f = found.get(k).copied().unwrap_or(0);
        let line = k.strip_prefix('l').and_then(|n| n.parse::<u64>().ok());
        if f < e {
            lost += e - f;
            lost_lines.extend(line);
        } else if f > e {
            duplicated += f - e;
            dup_lines.extend(line);
        }
    }
    let at = last.map_or(0, |(t, _)| *t);
    if lost > 0 {
        h.finding(
            FindingKind::Lost,
            None,
            format!(
                "{lost} words of acknowledged lines missing from the running totals after batch {at}; lines lost: {} ({})",
                lost_lines.len(),
                ranges(&lost_lines)
            ),
        );
    }
    if duplicated > 0 {
        h.finding(
            FindingKind::Duplicated,
            None,
            format!(
                "{duplicated} words counted more than once in the running totals after batch {at}; lines: {} ({})",
                dup_lines.len(),
                ranges(&dup_lines)
            ),
        );
    }
    // A running total above the final expected one in any batch is double counting too.
    if let Some((t, k, v, e)) = seen.iter().find_map(|(t, m)| {
        m.iter().find_map(|(k, v)| {
            let e = expected.get(k).copied().unwrap_or(0);
            (*v > e).then(|| (*t, k.clone(), *v, e))
        })
    }) {
        if duplicated == 0 {
            h.finding(
                FindingKind::Duplicated,
                None,
                format!("batch {t}: running total of {k} is {v}, above the corpus count {e}"),
            );
        }
    }
    let panic_msgs = lock(&panics.msgs).clone();
    drop(panics);
    for p in panic_msgs.iter().take(5) {
        h.finding(FindingKind::ProgramFailed, None, format!("panic: {p}"));
    }
    let findings = std::mem::take(&mut h.findings);
    let verdict = if findings.is_empty() { "pass" } else { "fail" };
    let mut restart: Vec<u64> = runs.iter().filter_map(|r| r.restart_ms).collect();
    restart.sort_unstable();
    Ok(Report {
        seed: cfg.seed,
        command: cfg.command.clone(),
        program: "wordcount (in-process, WAL on SimFs)".into(),
        mode: "simfs".into(),
        cycles: cfg.cycles,
        kills: runs.iter().filter(|r| r.cycle.is_some()).count() as u32,
        failpoint_cycles: 0,
        failpoints_hit: Vec::new(),
        failpoints_not_reached: Vec::new(),
        disturbances,
        input_lines: lines,
        lost,
        duplicated,
        output_files: seen.len(),
        reemitted_identical: 0,
        recovery: RecoveryTimes {
            restarts: restart.len(),
            median_restart_ms: restart.get(restart.len() / 2).copied().unwrap_or(0),
            max_restart_ms: restart.last().copied().unwrap_or(0),
            first_batches: 0,
            median_first_batch_ms: 0,
            max_first_batch_ms: 0,
        },
        runs,
        reference: None,
        findings,
        verdict: verdict.into(),
        duration_s: started.elapsed().as_secs_f64(),
        work_dir: cfg.work_dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::{corpus, count, ranges};

    #[test]
    fn corpus_is_seeded_and_names_each_line() {
        let a = corpus(7, 50);
        assert_eq!(a, corpus(7, 50));
        assert_ne!(a, corpus(8, 50));
        assert!(a[42].starts_with("l000042 "));
        assert_eq!(a[3].split_whitespace().count(), 11);
        let c = count(&a);
        assert_eq!(c["l000000"], 1);
        assert_eq!(c.values().sum::<u64>(), 50 * 11);
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges(&[]), "");
        assert_eq!(ranges(&[3, 4, 5, 9, 12, 13]), "3-5, 9, 12-13");
        let many: Vec<u64> = (0..40).map(|i| i * 2).collect();
        assert!(ranges(&many).ends_with(", ..."));
    }
}
