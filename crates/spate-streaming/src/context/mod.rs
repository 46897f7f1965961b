//! [`StreamingContext`]: graph registry and lifecycle (start / stop / await termination). The job
//! generator is in [`generator`], the job scheduler in [`scheduler`], restore in
//! [`crate::recovery`].

mod generator;
mod graph_builder;
mod scheduler;

use crate::checkpointer::{Checkpointer, ManifestInputs, Outcome};
use crate::config::StreamingConfig;
use crate::error::{Result, StreamingError};
use crate::graph::{
    plan_remember, ComputeFn, GraphDescription, GraphNode, NarrowFn, Node, NodeMeta,
};
use crate::journal::Replayed;
use crate::listener::{BatchInfo, Event, ListenerBus, OutputOperationInfo, StreamingListener};
use crate::plan::{
    orphan_wal, plan_completion, plan_restart, snapshot_or_delta, CompletionCommit, CompletionFacts,
};
use crate::tracker::{ReceivedBlockInfo, SharedTracker};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use spate_io::{Clock, SystemClock};
use spate_types::{BatchTime, DurationMs, OperatorId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(20);

/// The process-wide active context (Spark allows one active `StreamingContext` per JVM).
static ACTIVE: Mutex<Option<String>> = parking_lot::const_mutex(None);

/// Forgets the active context's registration (tests only: see `testing::context_lock`).
pub(crate) fn clear_active_registration() {
    *ACTIVE.lock() = None;
}

/// Lifecycle state of a context (Spark's `StreamingContextState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextState {
    /// Created; operators may be added.
    Initialized,
    /// Started; the graph is frozen.
    Active,
    /// Stopped; cannot be restarted.
    Stopped,
}

/// What recovery hands each input.
pub(crate) struct RestoreInput<'a> {
    pub(crate) checkpoint_time: BatchTime,
    pub(crate) positions: &'a BTreeMap<String, Vec<u8>>,
    pub(crate) replayed: &'a Replayed,
}

/// An input operator as the job generator sees it.
pub(crate) trait InputStream: Send + Sync {
    /// Fixes the input of batch `t` before its jobs run (DESIGN.md §4 step 2), making it durable
    /// in the WAL when checkpointing; returns the number of records known at this point.
    fn generate(&self, t: BatchTime, checkpointer: Option<&Checkpointer>) -> Result<u64>;
    /// `Some(reason)` if this input cannot be checkpointed.
    fn checkpointable(&self) -> Option<&'static str> {
        None
    }
    /// Entries for the manifest's source positions.
    fn checkpoint_state(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(Vec::new())
    }
    /// Restores positions and recorded selections after a restart.
    fn restore(&self, _r: &RestoreInput<'_>) -> Result<()> {
        Ok(())
    }
    /// Starts receivers.
    fn start(&self) -> Result<()> {
        Ok(())
    }
    /// Stops receivers (flushing their block generators).
    fn stop(&self) {}
    /// Drops inputs recorded for batches at or before `t`, and the given cleaned-up blocks.
    fn clear(&self, _t: BatchTime, _blocks: &[ReceivedBlockInfo]) {}
    /// Received blocks not read by any batch, and their records (graceful-stop report).
    fn unprocessed(&self) -> (u64, u64) {
        (0, 0)
    }
    /// The longest span of grid times one batch may cover and still read all of this input's
    /// records of that span (`missed_batches = coalesce`); `None`: unbounded.
    fn max_batch_span(&self) -> Option<DurationMs> {
        None
    }
}

/// An output operation: a job per valid batch time.
pub(crate) struct OutputOp {
    pub(crate) meta: Arc<Node<()>>,
    pub(crate) run: Box<dyn Fn(BatchTime) -> std::result::Result<(), String> + Send + Sync>,
}

#[derive(Default)]
pub(crate) struct GraphState {
    pub(crate) nodes: Vec<Arc<dyn GraphNode>>,
    pub(crate) outputs: Vec<Arc<OutputOp>>,
    pub(crate) inputs: Vec<Arc<dyn InputStream>>,
    pub(crate) next_receiver: u32,
    pub(crate) state_ops: Vec<Arc<dyn crate::state::StatefulOp>>,
}

#[derive(Default)]
struct Progress {
    last_processed: Option<BatchTime>,
    processed: std::collections::BTreeSet<BatchTime>,
    error: Option<StreamingError>,
    error_text: Option<String>,
    terminated: bool,
}

struct Running {
    generator: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    jobs_tx: Option<Sender<JobSet>>,
    signal_ids: Vec<signal_hook::SigId>,
}

struct JobSet {
    time: BatchTime,
    info: BatchInfo,
    jobs: Vec<Arc<OutputOp>>,
}

pub(crate) struct Inner {
    pub(crate) config: StreamingConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) pool: rayon::ThreadPool,
    state: Mutex<ContextState>,
    graph: Mutex<GraphState>,
    tracker: SharedTracker,
    pub(crate) bus: Arc<ListenerBus>,
    /// The receivers' memory budget (`receiver_memory_budget`, issue 13).
    pub(crate) budget: Arc<crate::supervisor::MemoryBudget>,
    progress: Mutex<Progress>,
    progress_cv: Condvar,
    running: Mutex<Option<Running>>,
    gen_stop_now: AtomicBool,
    gen_stop_after_tick: AtomicBool,
    gen_stop_time: AtomicU64,
    zero_time: AtomicU64,
    batch_records: Mutex<BTreeMap<BatchTime, u64>>,
    stop_lock: Mutex<()>,
    /// Checkpointing (WAL, store, writer), when a checkpoint location is configured.
    pub(crate) checkpointer: Option<Arc<Checkpointer>>,
    /// Times to run before the timer resumes (restart), set by `start`.
    reschedule: Mutex<Vec<BatchTime>>,
    /// Exponentially weighted mean processing time per batch, ms (the recovery-time estimate).
    mean_processing_ms: Mutex<Option<f64>>,
}

/// The entry point (Spark's `StreamingContext`): build the graph, then `start`.
///
/// Cheap to clone; clones share the context.
#[derive(Clone)]
pub struct StreamingContext {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for StreamingContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingContext")
            .field("app_name", &self.inner.config.app_name)
            .field("state", &self.state())
            .field("operators", &self.inner.graph.lock().nodes.len())
            .finish()
    }
}

impl StreamingContext {
    /// A context on the system clock.
    ///
    /// # Errors
    /// [`StreamingError::Config`] for an invalid config, [`StreamingError::Spawn`] if the worker
    /// pool cannot be created.
    pub fn new(config: StreamingConfig) -> Result<Self> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A context reading all time (batch timer, block intervals, rate limits, restart delays)
    /// from `clock`; tests pass a [`spate_io::ManualClock`].
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_clock(config: StreamingConfig, clock: Arc<dyn Clock>) -> Result<Self> {
        config.validate()?;
        let checkpointer = match &config.checkpoint {
            Some(url) => {
                let wal = crate::checkpointer::wal_dir(url, config.wal_dir.as_deref())?;
                Some(Arc::new(Checkpointer::open(
                    url,
                    &wal,
                    Arc::clone(&clock),
                    None,
                    config.wal_segment_bytes,
                    Arc::new(spate_io::StdFs),
                )?))
            }
            None => None,
        };
        Self::build(config, clock, checkpointer)
    }

    pub(crate) fn with_checkpointer(
        config: StreamingConfig,
        clock: Arc<dyn Clock>,
        store: spate_checkpoint::BlockingCheckpointStore,
        wal: &std::path::Path,
        fs: Arc<dyn spate_io::FileSystem>,
    ) -> Result<Self> {
        let url = config.checkpoint.clone().unwrap_or_default();
        let d = Checkpointer::open(
            &url,
            wal,
            Arc::clone(&clock),
            Some(store),
            config.wal_segment_bytes,
            fs,
        )?;
        Self::build(config, clock, Some(Arc::new(d)))
    }

    fn build(
        config: StreamingConfig,
        clock: Arc<dyn Clock>,
        checkpointer: Option<Arc<Checkpointer>>,
    ) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.parallelism)
            .thread_name(|i| format!("spate-worker-{i}"))
            .build()
            .map_err(|e| StreamingError::spawn("worker pool", e))?;
        let budget = Arc::new(crate::supervisor::MemoryBudget::new(
            config.receiver_memory_budget,
        ));
        Ok(StreamingContext {
            inner: Arc::new(Inner {
                config,
                clock,
                pool,
                state: Mutex::new(ContextState::Initialized),
                graph: Mutex::new(GraphState::default()),
                tracker: SharedTracker::new(),
                bus: Arc::new(ListenerBus::new()),
                budget,
                progress: Mutex::new(Progress::default()),
                progress_cv: Condvar::new(),
                running: Mutex::new(None),
                gen_stop_now: AtomicBool::new(false),
                gen_stop_after_tick: AtomicBool::new(false),
                gen_stop_time: AtomicU64::new(0),
                zero_time: AtomicU64::new(u64::MAX),
                batch_records: Mutex::new(BTreeMap::new()),
                stop_lock: Mutex::new(()),
                checkpointer,
                reschedule: Mutex::new(Vec::new()),
                mean_processing_ms: Mutex::new(None),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StreamingConfig {
        &self.inner.config
    }

    /// The batch interval.
    pub fn batch_interval(&self) -> DurationMs {
        self.inner.config.batch_interval
    }

    /// The clock all timing reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.inner.clock)
    }

    /// The lifecycle state.
    pub fn state(&self) -> ContextState {
        *self.inner.state.lock()
    }

    /// Zero time (set by `start`): batch times are `zero + k × batch interval`, `k ≥ 1`.
    pub fn zero_time(&self) -> Option<BatchTime> {
        let z = self.inner.zero_time.load(Ordering::Acquire);
        (z != u64::MAX).then_some(BatchTime(z))
    }

    /// Registers a listener (allowed at any time).
    pub fn add_listener(&self, listener: Arc<dyn StreamingListener>) {
        self.inner.bus.add(listener);
    }

    /// The canonical description of the graph built so far.
    pub fn describe(&self) -> GraphDescription {
        let g = self.inner.graph.lock();
        let mut operators: Vec<_> = g.nodes.iter().map(|n| n.meta().describe()).collect();
        operators.sort_by_key(|o| o.id);
        GraphDescription {
            batch_interval: self.inner.config.batch_interval,
            operators,
        }
    }

    /// Checks the stateful operators' requirements (Spark's `validateAtStart`): a checkpoint
    /// location, and data-checkpoint intervals that are positive multiples of their slides.
    fn check_state_ops(&self) -> Result<()> {
        let ops = self.inner.graph.lock().state_ops.clone();
        let Some(first) = ops.first() else {
            return Ok(());
        };
        if self.inner.checkpointer.is_none() {
            return Err(StreamingError::InvalidArgument {
                kind: first.kind(),
                reason: "stateful operators require a checkpoint location: set \
                         StreamingConfig::checkpoint or use StreamingContext::get_or_create \
                         (Spark: \"The checkpoint directory has not been set\")"
                    .into(),
            });
        }
        if self.inner.config.concurrent_jobs > 1 {
            return Err(StreamingError::InvalidArgument {
                kind: first.kind(),
                reason: format!(
                    "stateful operators need batches applied in order: concurrent_jobs must be 1 \
                     (is {})",
                    self.inner.config.concurrent_jobs
                ),
            });
        }
        for op in &ops {
            let iv = op
                .requested_interval()
                .unwrap_or_else(|| op.default_interval());
            let slide = op.slide();
            if iv.0 == 0 || iv.0 < slide.0 || !iv.0.is_multiple_of(slide.0.max(1)) {
                return Err(StreamingError::InvalidArgument {
                    kind: "checkpoint",
                    reason: format!(
                        "{} ({}): data-checkpoint interval {iv} must be a positive multiple of \
                         its slide {slide}",
                        op.operator(),
                        op.kind()
                    ),
                });
            }
            op.set_interval(iv);
        }
        Ok(())
    }

    /// The graph description plus the computation-defining settings (what `get_or_create` compares
    /// with a checkpoint; what `--describe` writes).
    pub fn describe_build(&self) -> crate::compat::BuildDescription {
        crate::compat::BuildDescription {
            graph: self.describe(),
            settings: crate::compat::computation_settings(&self.inner.config),
        }
    }

    /// Starts the context: freezes the graph, sets zero time, starts receivers, the job generator
    /// and the scheduler (Spark's `StreamingContext.start`).
    ///
    /// The first batch time is the next multiple of the batch interval after the clock's current
    /// time; zero time is one batch interval before it (Spark's `RecurringTimer.getStartTime`).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyActive`], [`StreamingError::AlreadyStopped`],
    /// [`StreamingError::AnotherContextActive`], [`StreamingError::NoOutputOperations`],
    /// [`StreamingError::Spawn`], or a receiver's start error.
    pub fn start(&self) -> Result<()> {
        let inner = &self.inner;
        {
            let st = inner.state.lock();
            match *st {
                ContextState::Initialized => {}
                ContextState::Active => return Err(StreamingError::AlreadyActive),
                ContextState::Stopped => return Err(StreamingError::AlreadyStopped),
            }
        }
        if inner.graph.lock().outputs.is_empty() {
            return Err(StreamingError::NoOutputOperations);
        }
        {
            let mut active = ACTIVE.lock();
            if let Some(app_name) = &*active {
                return Err(StreamingError::AnotherContextActive {
                    app_name: app_name.clone(),
                });
            }
            *active = Some(inner.config.app_name.clone());
        }
        match self.start_inner() {
            Ok(()) => Ok(()),
            Err(e) => {
                *ACTIVE.lock() = None;
                self.shutdown(false);
                *inner.state.lock() = ContextState::Stopped;
                Err(e)
            }
        }
    }

    fn start_inner(&self) -> Result<()> {
        let inner = &self.inner;
        let batch = inner.config.batch_interval.0;
        let now = inner.clock.now_ms();
        let mut start_time = (now / batch + 1) * batch;
        let mut zero = start_time - batch;
        let plan = inner.checkpointer.as_ref().and_then(|d| d.restart_facts());
        self.check_state_ops()?;
        if let Some(d) = &inner.checkpointer {
            for i in &inner.graph.lock().inputs {
                if let Some(reason) = i.checkpointable() {
                    return Err(StreamingError::InvalidArgument {
                        kind: "checkpoint",
                        reason: reason.to_owned(),
                    });
                }
            }
            d.set_build(&self.describe_build());
            match &plan {
                Some(p) => {
                    // Recovery step 5 (Spark's JobGenerator.restart), as of this start.
                    let s = plan_restart(p, now);
                    zero = p.zero.0;
                    start_time = s.restart_time.0;
                    d.on_restart_scheduled(&s, inner.config.batch_interval);
                    tracing::info!(
                        rescheduled = s.times.len(),
                        skipped = s.skipped.len(),
                        restart_time = start_time,
                        "restarting from checkpoint"
                    );
                    *inner.reschedule.lock() = s.times;
                }
                None => {
                    // I-REC-2: nothing restored, so every WAL record would be an orphan.
                    let wal = d.fresh_wal();
                    if orphan_wal(wal) {
                        return Err(StreamingError::OrphanWal {
                            dir: d.wal_dir().to_owned(),
                            segments: wal.segments,
                            records: wal.records,
                        });
                    }
                }
            }
            d.start_writer(inner.config.checkpoint_retain)?;
            if plan.is_none() {
                // The first checkpoint, before any receiver stores a block: every WAL record is
                // covered by some manifest from now on. With stateful operators it is a data
                // checkpoint of their initial state.
                inner.zero_time.store(zero, Ordering::Release);
                d.on_fresh(BatchTime(zero));
                let state_ops = inner.graph.lock().state_ops.clone();
                if state_ops.is_empty() {
                    d.on_fresh_start(inner.manifest_inputs()?)?;
                } else {
                    let source = inner.state_source()?;
                    for op in &state_ops {
                        op.open(&source)?;
                        op.load_initial(BatchTime(zero))?;
                    }
                    // No chain yet: every operator's initial state is a snapshot.
                    let due: Vec<_> = state_ops
                        .iter()
                        .map(|op| {
                            let mode = snapshot_or_delta(
                                None,
                                op.partitions(),
                                inner.config.state_snapshot_every,
                            );
                            (Arc::clone(op), mode)
                        })
                        .collect();
                    d.on_data_checkpoint(BatchTime(zero), inner.manifest_inputs()?, &due)?;
                }
            }
            let weak = Arc::downgrade(inner);
            d.start_waiter(move |outcome| {
                let Some(inner) = weak.upgrade() else { return };
                match outcome {
                    Outcome::Durable {
                        cleanup_before: Some(before),
                    } => inner.after_completed(before),
                    Outcome::Durable {
                        cleanup_before: None,
                    } => {}
                    Outcome::Failed(e) => inner.record_failure(e),
                }
            })?;
        }
        inner.zero_time.store(zero, Ordering::Release);
        let inputs = {
            let g = inner.graph.lock();
            let metas: Vec<&NodeMeta> = g.nodes.iter().map(|n| n.meta()).collect();
            plan_remember(&metas);
            for m in &metas {
                m.zero_time.store(zero, Ordering::Release);
            }
            for o in &g.outputs {
                o.meta.meta.zero_time.store(zero, Ordering::Release);
            }
            g.inputs.clone()
        };
        *inner.state.lock() = ContextState::Active;
        inner
            .bus
            .start()
            .map_err(|e| StreamingError::spawn("listener bus", e))?;
        let (jobs_tx, jobs_rx) = crossbeam_channel::unbounded::<JobSet>();
        let mut running = Running {
            generator: None,
            workers: Vec::new(),
            jobs_tx: Some(jobs_tx.clone()),
            signal_ids: Vec::new(),
        };
        for i in 0..inner.config.concurrent_jobs {
            let me = Arc::clone(inner);
            let rx = jobs_rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("spate-job-{i}"))
                .spawn(move || {
                    for js in rx {
                        me.run_job_set(js);
                    }
                })
                .map_err(|e| StreamingError::spawn("job scheduler", e))?;
            running.workers.push(h);
        }
        for input in &inputs {
            input.start()?;
        }
        let me = Arc::clone(inner);
        running.generator = Some(
            std::thread::Builder::new()
                .name("spate-job-generator".into())
                .spawn(move || me.run_generator(BatchTime(start_time), &jobs_tx))
                .map_err(|e| StreamingError::spawn("job generator", e))?,
        );
        if inner.config.stop_gracefully_on_signal {
            running.signal_ids = self.install_signal_handlers()?;
        }
        *inner.running.lock() = Some(running);
        inner.bus.post(Event::StreamingStarted(start_time));
        tracing::info!(
            app = %inner.config.app_name,
            start_time,
            batch_interval_ms = batch,
            "streaming context started"
        );
        Ok(())
    }

    fn install_signal_handlers(&self) -> Result<Vec<signal_hook::SigId>> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        let mut ids = Vec::new();
        let err = |e| StreamingError::spawn("signal handler", e);
        for sig in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag as the previous signal left it: a second
            // signal while stopping ends the process at once, with the shell's `128 + signal`.
            ids.push(
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&flag))
                    .map_err(err)?,
            );
            ids.push(signal_hook::flag::register(sig, Arc::clone(&flag)).map_err(err)?);
            ids.push(
                signal_hook::flag::register_usize(sig, Arc::clone(&which), sig as usize)
                    .map_err(err)?,
            );
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("spate-signal-watch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(50));
                let Some(inner) = weak.upgrade() else { return };
                if *inner.state.lock() == ContextState::Stopped {
                    return;
                }
                if flag.load(Ordering::Acquire) {
                    let signal = i32::try_from(which.load(Ordering::Acquire)).unwrap_or(0);
                    let timeout = inner.config.effective_graceful_stop_timeout();
                    tracing::info!("signal {signal} received: stopping gracefully");
                    inner.bus.post(Event::StopSignal {
                        signal,
                        graceful_timeout_ms: timeout.0,
                    });
                    let ctx = StreamingContext { inner };
                    if let Err(e) = ctx.stop(true) {
                        tracing::error!("graceful stop on signal failed: {e}");
                    }
                    return;
                }
            })
            .map_err(|e| StreamingError::spawn("signal watcher", e))?;
        Ok(ids)
    }

    /// Stops the context (Spark's `stop(stopGracefully)`); idempotent.
    ///
    /// Graceful (Spark's order): stop receivers (their block generators flush), wait until every
    /// received block is allocated to a batch, let the timer fire one last tick, wait until that
    /// batch is processed, then stop the scheduler. Each wait is bounded by the graceful-stop
    /// timeout (10 × batch interval by default), measured in real time. Non-graceful: stop the
    /// timer and receivers now, finish the running job, drop queued batches.
    ///
    /// # Errors
    /// None today; the `Result` leaves room for checkpoint-writer errors.
    pub fn stop(&self, graceful: bool) -> Result<()> {
        let _guard = self.inner.stop_lock.lock();
        {
            let mut st = self.inner.state.lock();
            match *st {
                ContextState::Stopped => return Ok(()),
                ContextState::Initialized => {
                    *st = ContextState::Stopped;
                    drop(st);
                    self.inner.mark_terminated();
                    return Ok(());
                }
                ContextState::Active => {}
            }
        }
        self.shutdown(graceful);
        *self.inner.state.lock() = ContextState::Stopped;
        {
            let mut active = ACTIVE.lock();
            *active = None;
        }
        self.inner.mark_terminated();
        tracing::info!(app = %self.inner.config.app_name, graceful, "streaming context stopped");
        Ok(())
    }

    fn shutdown(&self, graceful: bool) {
        let inner = &self.inner;
        let running = inner.running.lock().take();
        let inputs = inner.graph.lock().inputs.clone();
        let timeout = inner.config.effective_graceful_stop_timeout().to_std();
        // 1. Receivers: stop and flush.
        for i in &inputs {
            i.stop();
        }
        let Some(mut running) = running else {
            inner.bus.stop();
            return;
        };
        if graceful {
            // 2. Wait until all received blocks are allocated.
            let deadline = Instant::now() + timeout;
            while inner.tracker.has_unallocated_blocks() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if inner.tracker.has_unallocated_blocks() {
                tracing::warn!("graceful stop: received blocks still unallocated after timeout");
            }
            // 3. One last tick.
            inner.gen_stop_after_tick.store(true, Ordering::Release);
            if let Some(g) = running.generator.take() {
                let deadline = Instant::now() + timeout;
                while !g.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(POLL);
                }
                if !g.is_finished() {
                    tracing::warn!("graceful stop: timer did not tick before timeout");
                    inner.gen_stop_now.store(true, Ordering::Release);
                }
                let _ = g.join();
            }
            // 4. Wait for the last batch.
            let stop_time = inner.gen_stop_time.load(Ordering::Acquire);
            if stop_time != 0 {
                let mut p = inner.progress.lock();
                let deadline = Instant::now() + timeout;
                while p.last_processed.is_none_or(|l| l.0 < stop_time) {
                    if inner.progress_cv.wait_until(&mut p, deadline).timed_out() {
                        tracing::warn!(
                            stop_time,
                            "graceful stop: last batch not processed before timeout"
                        );
                        break;
                    }
                }
            }
            drop(running.jobs_tx.take());
        } else {
            inner.gen_stop_now.store(true, Ordering::Release);
            if let Some(g) = running.generator.take() {
                let _ = g.join();
            }
            drop(running.jobs_tx.take());
        }
        inner.gen_stop_now.store(true, Ordering::Release);
        for w in running.workers.drain(..) {
            let _ = w.join();
        }
        // Issue 13: nothing received is dropped silently; report what the stop did not process.
        let (blocks, records) = inputs
            .iter()
            .map(|i| i.unprocessed())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        if blocks > 0 {
            tracing::warn!(
                blocks,
                records,
                wal = inner.checkpointer.is_some(),
                "stop: received blocks not processed (kept in the receiver WAL if there is one, lost otherwise)"
            );
        }
        if let Some(d) = &inner.checkpointer {
            let drain_until =
                graceful.then(|| Instant::now() + timeout + crate::checkpointer::DRAIN_GRACE);
            if !d.shutdown(drain_until) {
                tracing::warn!("graceful stop: last checkpoints not durable before timeout");
            }
        }
        for id in running.signal_ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        inner.bus.stop();
    }

    /// Blocks until the context is stopped or a batch fails (Spark's `awaitTermination`).
    ///
    /// # Errors
    /// The first job or input failure ([`StreamingError::JobFailed`], [`StreamingError::Source`],
    /// ...), once; later calls return [`StreamingError::Failed`] with its message.
    pub fn await_termination(&self) -> Result<()> {
        let mut p = self.inner.progress.lock();
        loop {
            if let Some(e) = take_failure(&mut p) {
                return Err(e);
            }
            if p.terminated {
                return Ok(());
            }
            self.inner.progress_cv.wait(&mut p);
        }
    }

    /// As [`await_termination`](Self::await_termination) for at most `timeout` (real time):
    /// `Ok(true)` if terminated, `Ok(false)` on timeout.
    ///
    /// # Errors
    /// As [`await_termination`](Self::await_termination).
    pub fn await_termination_timeout(&self, timeout: Duration) -> Result<bool> {
        self.inner
            .wait_progress(timeout, |p| p.terminated.then_some(true), |p| p.terminated)
    }

    /// Blocks until batch `time` has been processed (all its jobs ran) or `timeout` (real time)
    /// passes; `Ok(false)` on timeout. Used by tests driving a `ManualClock`.
    ///
    /// # Errors
    /// The first failure, as [`await_termination`](Self::await_termination).
    pub fn await_batch_completed(&self, time: BatchTime, timeout: Duration) -> Result<bool> {
        let sequential = self.inner.config.concurrent_jobs == 1;
        self.inner.wait_progress(
            timeout,
            |p| {
                if p.processed.contains(&time)
                    || p.last_processed.is_some_and(|l| l > time && sequential)
                {
                    Some(true)
                } else if p.terminated {
                    Some(false)
                } else {
                    None
                }
            },
            |p| p.processed.contains(&time),
        )
    }

    /// The batch times operator `op` currently memoises (Spark's `generatedRDDs` keys); empty for
    /// an unknown id. Shows the effect of remember durations.
    pub fn remembered_batches(&self, op: OperatorId) -> Vec<BatchTime> {
        let g = self.inner.graph.lock();
        g.nodes
            .get(op.0 as usize)
            .map(|n| n.generated_times())
            .unwrap_or_default()
    }

    /// The most recent batch whose jobs all ran.
    pub fn last_processed_batch(&self) -> Option<BatchTime> {
        self.inner.progress.lock().last_processed
    }
}

fn take_failure(p: &mut Progress) -> Option<StreamingError> {
    if let Some(e) = p.error.take() {
        return Some(e);
    }
    p.error_text
        .as_ref()
        .map(|m| StreamingError::Failed { message: m.clone() })
}

impl Inner {
    /// Waits on the progress condition for at most `timeout` (real time): the first failure wins
    /// (once, then as [`StreamingError::Failed`]), then `done`'s answer, then at the deadline
    /// `at_deadline`'s.
    fn wait_progress(
        &self,
        timeout: Duration,
        done: impl Fn(&Progress) -> Option<bool>,
        at_deadline: impl Fn(&Progress) -> bool,
    ) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut p = self.progress.lock();
        loop {
            if let Some(e) = take_failure(&mut p) {
                return Err(e);
            }
            if let Some(answer) = done(&p) {
                return Ok(answer);
            }
            if self.progress_cv.wait_until(&mut p, deadline).timed_out() {
                return Ok(at_deadline(&p));
            }
        }
    }

    /// The graph's input streams, in registration order.
    pub(crate) fn inputs(&self) -> Vec<Arc<dyn InputStream>> {
        self.graph.lock().inputs.clone()
    }

    /// What `missed_batches = coalesce` needs to know of every operator
    /// ([`crate::plan::coalesce_veto`]).
    pub(crate) fn merge_facts(&self) -> Vec<crate::plan::MergeFacts> {
        self.graph
            .lock()
            .nodes
            .iter()
            .map(|n| {
                let m = n.meta();
                crate::plan::MergeFacts {
                    id: m.id,
                    kind: m.kind,
                    slide: m.slide,
                    window: m.window,
                    unsafe_reason: m.merge_unsafe,
                }
            })
            .collect()
    }

    /// The graph's stateful operators, in registration order.
    pub(crate) fn state_ops(&self) -> Vec<Arc<dyn crate::state::StatefulOp>> {
        self.graph.lock().state_ops.clone()
    }

    /// Adds a stateful operator to the graph (its state is checkpointed and restored).
    pub(crate) fn register_state_op(&self, op: Arc<dyn crate::state::StatefulOp>) {
        self.graph.lock().state_ops.push(op);
    }

    /// The block tracker, to hand to a receiver's supervisor and its input stream (they add the
    /// blocks they store and read the blocks allocated to a batch).
    pub(crate) fn shared_tracker(&self) -> SharedTracker {
        self.tracker.clone()
    }

    /// Recovery step 3: applies the replayed tracker events in log order; returns how many blocks
    /// are left unallocated and the batch times that have allocations.
    pub(crate) fn replay_tracker_events<'a>(
        &self,
        events: impl IntoIterator<Item = &'a crate::tracker::TrackerEvent>,
    ) -> (usize, std::collections::BTreeSet<BatchTime>) {
        self.tracker.with_locked(|tr| {
            for e in events {
                tr.apply(e);
            }
            (
                tr.unallocated_blocks(),
                tr.allocated_times().into_iter().collect(),
            )
        })
    }

    /// Counts `n` records read by a replayable source into batch `t`'s record count.
    pub(crate) fn add_batch_records(&self, t: BatchTime, n: u64) {
        *self.batch_records.lock().entry(t).or_insert(0) += n;
    }

    fn mark_terminated(&self) {
        let mut p = self.progress.lock();
        p.terminated = true;
        self.progress_cv.notify_all();
    }

    pub(crate) fn record_failure(&self, e: StreamingError) {
        tracing::error!("streaming failure: {e}");
        let mut p = self.progress.lock();
        if p.error_text.is_none() {
            p.error_text = Some(e.to_string());
            p.error = Some(e);
        }
        self.progress_cv.notify_all();
    }
}
