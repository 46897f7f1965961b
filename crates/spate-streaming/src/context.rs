//! [`StreamingContext`]: graph registry, lifecycle (start / stop / await termination), the job
//! generator (timer on the [`Clock`]) and the job scheduler.

use crate::config::StreamingConfig;
use crate::durability::{Durability, Submitted};
use crate::error::{Result, StreamingError};
use crate::graph::{
    plan_remember, ComputeFn, GraphDescription, GraphNode, NarrowFn, Node, NodeMeta,
};
use crate::journal::Replayed;
use crate::listener::{BatchInfo, Event, ListenerBus, OutputOperationInfo, StreamingListener};
use crate::recovery::{restart_schedule, RestartPlan, RestartReport};
use crate::tracker::{ReceivedBlockInfo, ReceivedBlockTracker};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use spate_checkpoint::{CheckpointKind, Manifest};
use spate_io::{Clock, SystemClock};
use spate_types::{BatchTime, DurationMs, OperatorId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    fn generate(&self, t: BatchTime, durability: Option<&Durability>) -> Result<u64>;
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
    pub(crate) graph: Mutex<GraphState>,
    pub(crate) tracker: Arc<Mutex<ReceivedBlockTracker>>,
    pub(crate) bus: Arc<ListenerBus>,
    progress: Mutex<Progress>,
    progress_cv: Condvar,
    running: Mutex<Option<Running>>,
    gen_stop_now: AtomicBool,
    gen_stop_after_tick: AtomicBool,
    gen_stop_time: AtomicU64,
    zero_time: AtomicU64,
    pub(crate) batch_records: Mutex<BTreeMap<BatchTime, u64>>,
    stop_lock: Mutex<()>,
    /// Checkpointing (WAL, store, writer), when a checkpoint location is configured.
    pub(crate) durability: Option<Arc<Durability>>,
    /// Times to run before the timer resumes (restart), set by `start`.
    reschedule: Mutex<Vec<BatchTime>>,
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
        let durability = match &config.checkpoint {
            Some(url) => {
                let wal = crate::durability::wal_dir(url, config.wal_dir.as_deref())?;
                Some(Arc::new(Durability::open(
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
        Self::build(config, clock, durability)
    }

    pub(crate) fn with_durability(
        config: StreamingConfig,
        clock: Arc<dyn Clock>,
        store: spate_checkpoint::BlockingCheckpointStore,
        wal: &std::path::Path,
        fs: Arc<dyn spate_io::FileSystem>,
    ) -> Result<Self> {
        let url = config.checkpoint.clone().unwrap_or_default();
        let d = Durability::open(
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
        durability: Option<Arc<Durability>>,
    ) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.parallelism)
            .thread_name(|i| format!("spate-worker-{i}"))
            .build()
            .map_err(|e| StreamingError::spawn("worker pool", e))?;
        Ok(StreamingContext {
            inner: Arc::new(Inner {
                config,
                clock,
                pool,
                state: Mutex::new(ContextState::Initialized),
                graph: Mutex::new(GraphState::default()),
                tracker: Arc::new(Mutex::new(ReceivedBlockTracker::new())),
                bus: Arc::new(ListenerBus::new()),
                progress: Mutex::new(Progress::default()),
                progress_cv: Condvar::new(),
                running: Mutex::new(None),
                gen_stop_now: AtomicBool::new(false),
                gen_stop_after_tick: AtomicBool::new(false),
                gen_stop_time: AtomicU64::new(0),
                zero_time: AtomicU64::new(u64::MAX),
                batch_records: Mutex::new(BTreeMap::new()),
                stop_lock: Mutex::new(()),
                durability,
                reschedule: Mutex::new(Vec::new()),
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

    /// Recovery step 3: replays the WAL into the tracker, restores the inputs' positions and
    /// selections, and records the restart plan `start` applies.
    pub(crate) fn restore_from(&self, m: &Manifest, report: &mut RestartReport) -> Result<()> {
        let Some(d) = &self.inner.durability else {
            return Ok(());
        };
        let replayed = d.replayed.lock().take().unwrap_or_default();
        let mut recorded = std::collections::BTreeSet::new();
        let mut cleaned_through: Option<BatchTime> = None;
        {
            let mut tr = self.inner.tracker.lock();
            for (lsn, e) in &replayed.events {
                match e {
                    crate::tracker::TrackerEvent::BatchAllocated { time, .. } => {
                        if *time > m.batch_time {
                            recorded.insert(*time);
                        }
                        d.note_batch_lsn(*time, *lsn);
                    }
                    crate::tracker::TrackerEvent::BatchCleanup { times } => {
                        cleaned_through = cleaned_through.max(times.iter().max().copied());
                    }
                    crate::tracker::TrackerEvent::BlockAdded(_) => {}
                }
                tr.apply(e);
            }
            report.blocks_unallocated = tr.unallocated_blocks() as u64;
            let cleaned: Vec<BatchTime> = {
                let alloc: std::collections::BTreeSet<BatchTime> =
                    tr.allocated_times().into_iter().collect();
                d.batch_lsn
                    .lock()
                    .keys()
                    .filter(|t| !alloc.contains(t))
                    .copied()
                    .collect()
            };
            let mut lsns = d.batch_lsn.lock();
            for t in cleaned {
                lsns.remove(&t);
            }
        }
        for (lsn, _, sel) in &replayed.selections {
            if sel.time > m.batch_time {
                recorded.insert(sel.time);
            }
            if sel.time >= m.batch_time {
                d.note_batch_lsn(sel.time, *lsn);
            }
        }
        report.blocks_recovered = replayed.blocks;
        report.records_recovered = replayed.block_records;
        report.selections_recovered = replayed.selections.len() as u64;
        let inputs = self.inner.graph.lock().inputs.clone();
        let r = RestoreInput {
            checkpoint_time: m.batch_time,
            positions: &m.source_positions,
            replayed: &replayed,
        };
        for i in &inputs {
            i.restore(&r)?;
        }
        for (rid, p) in &replayed.positions {
            report.receiver_positions.insert(rid.0, *p);
        }
        for (k, v) in &m.source_positions {
            if let Some(id) = k
                .strip_prefix("receiver-")
                .and_then(|x| x.parse::<u32>().ok())
            {
                if let Ok(p) = spate_types::codec::decode::<u64>(v) {
                    let e = report.receiver_positions.entry(id).or_insert(p);
                    *e = (*e).max(p);
                }
            }
        }
        // Recovery step 4: the state of every stateful operator as of its newest data checkpoint
        // in this manifest (snapshot + deltas, partitions in parallel).
        let state_ops = self.inner.graph.lock().state_ops.clone();
        if !state_ops.is_empty() {
            let checkpoint = spate_checkpoint::CheckpointPaths::manifest(m.key);
            d.set_chains_from(m)?;
            let chains = d.chains.lock().clone();
            let source = self.inner.state_source()?;
            for op in &state_ops {
                let id = op.operator();
                let Some(c) = chains.get(&id) else {
                    return Err(StreamingError::State {
                        operator: id,
                        reason: format!("checkpoint {checkpoint} holds no state for it"),
                    });
                };
                if let Some(ct) = cleaned_through.filter(|ct| *ct > c.time) {
                    return Err(StreamingError::CheckpointTooOld {
                        checkpoint,
                        reason: format!(
                            "{id}'s state is as of {} but the inputs of batches up to {ct} were \
                             cleaned up after a newer checkpoint; restoring would lose them",
                            c.time
                        ),
                    });
                }
                op.open(&source)?;
                let read = |r: &spate_checkpoint::DataObjectRef| -> Result<Vec<u8>> {
                    d.store
                        .block_on(d.store.store().read_object(r))
                        .map(|b| b.to_vec())
                        .map_err(|e| d.ckpt_err(e))
                };
                let objects: Vec<Vec<Vec<u8>>> = {
                    use rayon::prelude::*;
                    c.partitions
                        .par_iter()
                        .map(|refs| refs.iter().map(read).collect::<Result<Vec<_>>>())
                        .collect::<Result<Vec<_>>>()?
                };
                let bytes: u64 = c.partitions.iter().flatten().map(|o| o.size).sum();
                let output = c.output.as_ref().map(read).transpose()?;
                op.restore(c.time, objects, output.as_deref())?;
                report.state.push(crate::recovery::StateRestored {
                    operator: id.0,
                    kind: op.kind().to_owned(),
                    time: c.time.0,
                    keys: op.len(),
                    objects: c.partitions.iter().map(Vec::len).sum::<usize>() as u64,
                    bytes,
                });
            }
        }
        *d.plan.lock() = Some(RestartPlan {
            zero: m.zero_time,
            checkpoint_time: m.batch_time,
            pending: m.pending_batches.clone(),
            recorded,
            cleaned_through,
        });
        Ok(())
    }

    /// Checks the stateful operators' requirements (Spark's `validateAtStart`): a checkpoint
    /// location, and data-checkpoint intervals that are positive multiples of their slides.
    fn check_state_ops(&self) -> Result<()> {
        let ops = self.inner.graph.lock().state_ops.clone();
        let Some(first) = ops.first() else {
            return Ok(());
        };
        if self.inner.durability.is_none() {
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

    /// Registers an operator node; refused once the context has started.
    pub(crate) fn register<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        build: impl FnOnce(OperatorId) -> (NodeMeta, ComputeFn<T>),
    ) -> Result<Arc<Node<T>>> {
        self.register_node(kind, |id| {
            let (meta, compute) = build(id);
            Node::new(meta, compute)
        })
    }

    /// Registers a fused element-wise operator (map, flat_map, filter).
    pub(crate) fn register_narrow<T: Clone + Send + Sync + 'static>(
        &self,
        kind: &'static str,
        build: impl FnOnce(OperatorId) -> (NodeMeta, NarrowFn<T>),
    ) -> Result<Arc<Node<T>>> {
        self.register_node(kind, |id| {
            let (meta, narrow) = build(id);
            Node::new_narrow(meta, narrow)
        })
    }

    fn register_node<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        build: impl FnOnce(OperatorId) -> Node<T>,
    ) -> Result<Arc<Node<T>>> {
        let mut g = self.inner.graph.lock();
        match *self.inner.state.lock() {
            ContextState::Initialized => {}
            ContextState::Active | ContextState::Stopped => {
                return Err(StreamingError::AlreadyStarted { kind })
            }
        }
        let id = OperatorId(u32::try_from(g.nodes.len()).unwrap_or(u32::MAX));
        let node = Arc::new(build(id));
        for p in &node.meta.inputs {
            if let Some(pn) = g.nodes.get(p.0 as usize) {
                pn.meta().consumers.fetch_add(1, Ordering::AcqRel);
            }
        }
        g.nodes.push(Arc::clone(&node) as Arc<dyn GraphNode>);
        Ok(node)
    }

    pub(crate) fn register_output(&self, output: OutputOp) {
        self.inner.graph.lock().outputs.push(Arc::new(output));
    }

    pub(crate) fn register_input(&self, input: Arc<dyn InputStream>) {
        self.inner.graph.lock().inputs.push(input);
    }

    pub(crate) fn next_receiver_id(&self) -> spate_types::ReceiverId {
        let mut g = self.inner.graph.lock();
        let id = g.next_receiver;
        g.next_receiver += 1;
        spate_types::ReceiverId(id)
    }

    pub(crate) fn same_context(&self, other: &StreamingContext) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
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
        let plan = inner
            .durability
            .as_ref()
            .and_then(|d| d.plan.lock().clone());
        self.check_state_ops()?;
        if let Some(d) = &inner.durability {
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
                    // Recovery step 5 (Spark's JobGenerator.restart).
                    let s = restart_schedule(
                        p.zero,
                        inner.config.batch_interval,
                        p.checkpoint_time,
                        &p.pending,
                        &p.recorded,
                        now,
                        inner.config.missed_batches,
                    );
                    zero = p.zero.0;
                    start_time = s.restart_time.0;
                    let mut s = s;
                    if let Some(ct) = p.cleaned_through {
                        // Completed before the crash and their inputs cleaned up since (a fallback
                        // to an older checkpoint): re-running them would emit wrong outputs.
                        let (gone, keep): (Vec<BatchTime>, Vec<BatchTime>) =
                            s.times.iter().partition(|t| **t <= ct);
                        s.times = keep;
                        s.skipped.extend(gone);
                        s.skipped.sort_unstable();
                    }
                    if let Some(r) = d.report.lock().as_mut() {
                        let times: Vec<u64> = s.times.iter().map(|t| t.0).collect();
                        let changed =
                            r.batches_rescheduled != times || r.restart_time != Some(start_time);
                        r.batches_rescheduled = times;
                        r.batches_skipped = s.skipped.iter().map(|t| t.0).collect();
                        r.restart_time = Some(start_time);
                        if changed {
                            // Time passed between get_or_create and start: the stored report
                            // shows the schedule actually run.
                            crate::recovery::write_report(&d.store, r);
                        }
                    }
                    tracing::info!(
                        rescheduled = s.times.len(),
                        skipped = s.skipped.len(),
                        restart_time = start_time,
                        "restarting from checkpoint"
                    );
                    *inner.reschedule.lock() = s.times;
                }
                None => {
                    let records = d.replayed.lock().as_ref().map_or(0, |r| r.records);
                    if records > 0 {
                        return Err(StreamingError::OrphanWal {
                            dir: d.journal.dir().to_owned(),
                            records,
                        });
                    }
                }
            }
            d.replayed.lock().take();
            d.open_writer(inner.config.checkpoint_retain)?;
            if plan.is_none() {
                // The first checkpoint, before any receiver stores a block: every WAL record is
                // covered by some manifest from now on. With stateful operators it is a data
                // checkpoint of their initial state.
                inner.zero_time.store(zero, Ordering::Release);
                let state_ops = inner.graph.lock().state_ops.clone();
                if state_ops.is_empty() {
                    let positions = inner.source_positions()?;
                    let draft = d.draft(
                        CheckpointKind::Completed,
                        BatchTime(zero),
                        BatchTime(zero),
                        inner.config.batch_interval,
                        positions,
                    );
                    d.submit(draft, None)?;
                } else {
                    let source = inner.state_source()?;
                    for op in &state_ops {
                        op.open(&source)?;
                        op.load_initial(BatchTime(zero))?;
                    }
                    inner.data_checkpoint(d, BatchTime(zero), &state_ops, None)?;
                }
            }
            let (tx, rx) = crossbeam_channel::unbounded::<Submitted>();
            *d.submit_tx.lock() = Some(tx);
            let weak = Arc::downgrade(inner);
            let dd = Arc::clone(d);
            let h = std::thread::Builder::new()
                .name("spate-checkpoint-waiter".into())
                .spawn(move || run_checkpoint_waiter(&dd, &weak, &rx))
                .map_err(|e| StreamingError::spawn("checkpoint waiter", e))?;
            *d.waiter.lock() = Some(h);
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
        let mut ids = Vec::new();
        for sig in [SIGTERM, SIGINT] {
            // A second signal while stopping terminates the process (exit code 1).
            ids.push(
                signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&flag))
                    .map_err(|e| StreamingError::spawn("signal handler", e))?,
            );
            ids.push(
                signal_hook::flag::register(sig, Arc::clone(&flag))
                    .map_err(|e| StreamingError::spawn("signal handler", e))?,
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
                    tracing::info!("signal received: stopping gracefully");
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
            while inner.tracker.lock().has_unallocated_blocks() && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
            if inner.tracker.lock().has_unallocated_blocks() {
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
        if let Some(d) = &inner.durability {
            if graceful && !d.drain(Instant::now() + timeout + crate::durability::DRAIN_GRACE) {
                tracing::warn!("graceful stop: last checkpoints not durable before timeout");
            }
            d.shutdown();
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
            if let Some(r) = take_failure(&mut p) {
                return r;
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
        let deadline = Instant::now() + timeout;
        let mut p = self.inner.progress.lock();
        loop {
            if let Some(r) = take_failure(&mut p) {
                return r.map(|()| true);
            }
            if p.terminated {
                return Ok(true);
            }
            if self
                .inner
                .progress_cv
                .wait_until(&mut p, deadline)
                .timed_out()
            {
                return Ok(p.terminated);
            }
        }
    }

    /// Blocks until batch `time` has been processed (all its jobs ran) or `timeout` (real time)
    /// passes; `Ok(false)` on timeout. Used by tests driving a `ManualClock`.
    ///
    /// # Errors
    /// The first failure, as [`await_termination`](Self::await_termination).
    pub fn await_batch_completed(&self, time: BatchTime, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut p = self.inner.progress.lock();
        loop {
            if let Some(r) = take_failure(&mut p) {
                return r.map(|()| false);
            }
            if p.processed.contains(&time)
                || p.last_processed
                    .is_some_and(|l| l > time && self.inner.config.concurrent_jobs == 1)
            {
                return Ok(true);
            }
            if p.terminated {
                return Ok(false);
            }
            if self
                .inner
                .progress_cv
                .wait_until(&mut p, deadline)
                .timed_out()
            {
                return Ok(p.processed.contains(&time));
            }
        }
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

fn take_failure(p: &mut Progress) -> Option<Result<()>> {
    if let Some(e) = p.error.take() {
        return Some(Err(e));
    }
    p.error_text
        .as_ref()
        .map(|m| Err(StreamingError::Failed { message: m.clone() }))
}

impl Inner {
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

    fn run_generator(self: Arc<Self>, start: BatchTime, jobs_tx: &Sender<JobSet>) {
        let batch = self.config.batch_interval;
        let rescheduled = std::mem::take(&mut *self.reschedule.lock());
        for t in rescheduled {
            if self.gen_stop_now.load(Ordering::Acquire) {
                return;
            }
            self.generate_batch(t, jobs_tx);
        }
        let mut next = start;
        loop {
            loop {
                if self.gen_stop_now.load(Ordering::Acquire) {
                    return;
                }
                if self.clock.wait_till_timeout(next.0, POLL).is_some() {
                    break;
                }
            }
            if self.gen_stop_now.load(Ordering::Acquire) {
                return;
            }
            let last = self.gen_stop_after_tick.load(Ordering::Acquire);
            self.generate_batch(next, jobs_tx);
            if last {
                self.gen_stop_time.store(next.0, Ordering::Release);
                return;
            }
            next = next.plus(batch);
        }
    }

    /// Spark's `JobGenerator.generateJobs(time)`: allocate blocks, fix every input, create the jobs.
    fn generate_batch(&self, t: BatchTime, jobs_tx: &Sender<JobSet>) {
        let allocated = match self.allocate(t) {
            Ok(n) => n,
            Err(e) => {
                // The allocation was not logged, so it was not applied (SPARK-23991): the blocks
                // stay unallocated for the next batch.
                self.record_failure(e);
                self.mark_processed(t);
                return;
            }
        };
        let (inputs, outputs) = {
            let g = self.graph.lock();
            (g.inputs.clone(), g.outputs.clone())
        };
        let mut records = allocated;
        for i in &inputs {
            match i.generate(t, self.durability.as_deref()) {
                Ok(n) => records += n,
                Err(e) => {
                    // Spark: a job-generation failure is reported and the batch gets no jobs.
                    self.record_failure(e);
                    self.mark_processed(t);
                    return;
                }
            }
        }
        self.batch_records.lock().insert(t, records);
        if let Some(d) = &self.durability {
            // DESIGN.md §4 step 3: metadata checkpoint "T generated", written off this thread.
            d.pending.lock().insert(t);
            if let Err(e) = self.submit_checkpoint(d, CheckpointKind::Generated, t, None) {
                self.record_failure(e);
            }
        }
        let jobs: Vec<Arc<OutputOp>> = outputs
            .into_iter()
            .filter(|o| o.meta.meta.is_time_valid(t))
            .collect();
        let info = BatchInfo {
            batch_time: t,
            num_records: records,
            submission_time_ms: self.clock.now_ms(),
            processing_start_ms: None,
            processing_end_ms: None,
            output_operations: Vec::new(),
        };
        self.bus.post(Event::BatchSubmitted(info.clone()));
        let _ = jobs_tx.send(JobSet {
            time: t,
            info,
            jobs,
        });
    }

    fn run_job_set(&self, js: JobSet) {
        if self.gen_stop_now.load(Ordering::Acquire) {
            // Non-graceful stop: queued batches are dropped.
            return;
        }
        let JobSet {
            time,
            mut info,
            jobs,
        } = js;
        info.processing_start_ms = Some(self.clock.now_ms());
        self.bus.post(Event::BatchStarted(info.clone()));
        for op in &jobs {
            let meta = &op.meta.meta;
            let description = match &*meta.name.lock() {
                Some(n) => format!("{} {n:?}", meta.kind),
                None => meta.kind.to_owned(),
            };
            let mut oi = OutputOperationInfo {
                batch_time: time,
                operator: meta.id,
                description,
                start_ms: self.clock.now_ms(),
                end_ms: None,
                failure: None,
            };
            self.bus.post(Event::OutputStarted(oi.clone()));
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                spate_types::spate_fail!("engine::job::run::before", |a| Err(
                    spate_types::failpoints::message("engine::job::run::before", &a)
                ));
                let r = self.pool.install(|| (op.run)(time));
                spate_types::spate_fail!("engine::job::run::after", |a| Err(
                    spate_types::failpoints::message("engine::job::run::after", &a)
                ));
                r
            }));
            let failure = match res {
                Ok(Ok(())) => None,
                Ok(Err(m)) => Some(m),
                Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
            };
            if let Some(m) = &failure {
                self.record_failure(StreamingError::JobFailed {
                    time,
                    operator: meta.id,
                    kind: meta.kind.to_owned(),
                    message: m.clone(),
                });
            }
            oi.end_ms = Some(self.clock.now_ms());
            oi.failure = failure;
            self.bus.post(Event::OutputCompleted(oi.clone()));
            info.output_operations.push(oi);
        }
        info.num_records = self
            .batch_records
            .lock()
            .remove(&time)
            .unwrap_or(info.num_records);
        info.processing_end_ms = Some(self.clock.now_ms());
        self.bus.post(Event::BatchCompleted(info));
        self.clear_metadata(time);
        self.mark_processed(time);
    }

    /// DESIGN.md §4 step 2: allocates unallocated blocks to `t`, logging the allocation to the WAL
    /// first when receivers write to it. Returns the records allocated.
    fn allocate(&self, t: BatchTime) -> Result<u64> {
        let mut tr = self.tracker.lock();
        if let Some(e) = tr.plan_allocation(t) {
            if let Some(d) = self.durability.as_ref().filter(|d| d.logs_allocations()) {
                spate_types::spate_fail!("engine::allocate::before", |a| Err(d
                    .journal
                    .failpoint("engine::allocate::before", &a)));
                let lsn = d.journal.append_event(&e)?;
                d.note_batch_lsn(t, lsn);
                spate_types::spate_fail!("engine::allocate::after", |a| Err(d
                    .journal
                    .failpoint("engine::allocate::after", &a)));
            }
            tr.apply(&e);
        }
        Ok(tr.blocks_of_batch(t).num_records())
    }

    /// Source positions of every input (for a manifest).
    pub(crate) fn source_positions(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let inputs = self.graph.lock().inputs.clone();
        let mut m = BTreeMap::new();
        for i in &inputs {
            m.extend(i.checkpoint_state()?);
        }
        Ok(m)
    }

    fn submit_checkpoint(
        &self,
        d: &Durability,
        kind: CheckpointKind,
        t: BatchTime,
        cleanup_before: Option<BatchTime>,
    ) -> Result<()> {
        let zero = BatchTime(self.zero_time.load(Ordering::Acquire));
        let positions = self.source_positions()?;
        let draft = d.draft(kind, t, zero, self.config.batch_interval, positions);
        if kind == CheckpointKind::Generated {
            spate_types::spate_fail!("engine::checkpoint::generated::submit", |a| Err(
                d.failpoint("engine::checkpoint::generated::submit", &a, false)
            ));
        } else {
            spate_types::spate_fail!("engine::checkpoint::completed::submit", |a| Err(
                d.failpoint("engine::checkpoint::completed::submit", &a, false)
            ));
        }
        d.submit(draft, cleanup_before)
    }

    /// Spark's `ClearMetadata(time)`: forget old batches, old allocations and their blocks. With
    /// checkpointing, allocations, blocks and WAL segments are dropped only once the completion
    /// checkpoint of `t` is durable (Spark's `ClearCheckpointData`; DESIGN.md §4 steps 6–7).
    fn clear_metadata(&self, t: BatchTime) {
        let (nodes, inputs) = {
            let g = self.graph.lock();
            (g.nodes.clone(), g.inputs.clone())
        };
        let mut max_remember = 0;
        for n in &nodes {
            n.clear_metadata(t);
            max_remember = max_remember.max(n.meta().remember.load(Ordering::Acquire));
        }
        let mut before = BatchTime(t.0.saturating_sub(max_remember));
        if let Some(d) = &self.durability {
            let oldest_pending = {
                let mut p = d.pending.lock();
                p.remove(&t);
                p.first().copied()
            };
            if let Some(o) = oldest_pending {
                before = before.min(o);
            }
            let zero = self.zero_time.load(Ordering::Acquire);
            // A data checkpoint covers every stateful operator at once (a consistent cut: a
            // chained operator recomputing from its own older checkpoint must find its parent's
            // state at the same time), whenever any of them is due.
            let state_ops = self.graph.lock().state_ops.clone();
            let on_grid = |op: &Arc<dyn crate::state::StatefulOp>| {
                t.0 > zero && (t.0 - zero).is_multiple_of(op.slide().0.max(1))
            };
            let not_done = |op: &Arc<dyn crate::state::StatefulOp>| {
                // Not again for a batch re-run after a restore from its own data checkpoint.
                d.chains
                    .lock()
                    .get(&op.operator())
                    .is_none_or(|c| c.time < t)
            };
            let any_due = state_ops.iter().any(|op| {
                t.0 > zero && (t.0 - zero).is_multiple_of(op.interval().0.max(1)) && not_done(op)
            });
            let due: Vec<Arc<dyn crate::state::StatefulOp>> = if any_due {
                state_ops
                    .iter()
                    .filter(|op| on_grid(op) && not_done(op))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            let r = if due.is_empty() {
                if let Some(f) = d.state_floor(self.config.batch_interval) {
                    before = before.min(f);
                }
                self.submit_checkpoint(d, CheckpointKind::Completed, t, Some(before))
            } else {
                self.data_checkpoint(d, t, &due, Some(before))
            };
            if let Err(e) = r {
                self.record_failure(e);
            }
            return;
        }
        let (_, removed) = self.tracker.lock().cleanup_old_batches(before);
        for i in &inputs {
            i.clear(before, &removed);
        }
    }

    /// DESIGN.md §4 step 5: a data checkpoint at `t` (the state of `due` is as of `t`): each
    /// operator's partitions as a snapshot (every `state_snapshot_every`-th time, or with no chain)
    /// or a delta on its previous data checkpoint, written and committed before the next batch may
    /// change the state; then, the checkpoint being durable, step-7 cleanup up to `before` (bounded
    /// by the state floor).
    fn data_checkpoint(
        &self,
        d: &Durability,
        t: BatchTime,
        due: &[Arc<dyn crate::state::StatefulOp>],
        before: Option<BatchTime>,
    ) -> Result<()> {
        use crate::durability::{output_label, OpMeta, STATE_KEY};
        let k = self.config.state_snapshot_every.max(1);
        let mut new_objects = Vec::new();
        let mut replaced = BTreeMap::new();
        for op in due {
            let id = op.operator();
            let chain = d.chains.lock().get(&id).cloned();
            let snapshot = chain
                .as_ref()
                .is_none_or(|c| c.deltas + 1 >= k || c.partitions.len() != op.partitions());
            let base = chain.as_ref().map_or(t, |c| c.time);
            let (objs, output) = op.checkpoint(t, snapshot, base)?;
            let mut parts = Vec::new();
            for (p, bytes) in objs.into_iter().enumerate() {
                let label = spate_state::format::object_label(
                    id,
                    spate_types::PartitionId(u32::try_from(p).unwrap_or(u32::MAX)),
                    snapshot,
                );
                let mut paths: Vec<String> = match (&chain, snapshot) {
                    (Some(c), false) => c
                        .partitions
                        .get(p)
                        .map(|v| v.iter().map(|o| o.path.clone()).collect())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                paths.push(label.clone());
                parts.push(paths);
                new_objects.push((label, bytes::Bytes::from(bytes)));
            }
            let output = output.map(|b| {
                let l = output_label(id);
                new_objects.push((l.clone(), bytes::Bytes::from(b)));
                l
            });
            replaced.insert(
                id,
                OpMeta {
                    op: id.0,
                    time: t.0,
                    deltas: if snapshot {
                        0
                    } else {
                        chain.as_ref().map_or(0, |c| c.deltas + 1)
                    },
                    previous: chain.as_ref().map(|c| c.time.0),
                    partitions: parts,
                    output,
                },
            );
        }
        let (meta, carried) = d.state_part(&replaced);
        let zero = BatchTime(self.zero_time.load(Ordering::Acquire));
        let positions = self.source_positions()?;
        let mut draft = d.draft(
            CheckpointKind::Data,
            t,
            zero,
            self.config.batch_interval,
            positions,
        );
        draft.source_positions.insert(
            STATE_KEY.to_owned(),
            spate_types::codec::encode(&meta)
                .map_err(|e| StreamingError::spawn("state meta encoding", e))?,
        );
        draft.carried_objects = carried;
        draft.new_objects = new_objects;
        spate_types::spate_fail!("engine::checkpoint::data::commit::before", |a| Err(
            d.failpoint("engine::checkpoint::data::commit::before", &a, false)
        ));
        let m = d.commit_now(draft)?;
        spate_types::spate_fail!("engine::checkpoint::data::commit::after", |a| Err(
            d.failpoint("engine::checkpoint::data::commit::after", &a, true)
        ));
        d.set_chains_from(&m)?;
        tracing::debug!(
            time = t.0,
            objects = m.objects.len(),
            bytes = m.data_bytes(),
            "data checkpoint committed"
        );
        if let Some(mut before) = before {
            if let Some(f) = d.state_floor(self.config.batch_interval) {
                before = before.min(f);
            }
            self.after_completed(d, before);
        }
        Ok(())
    }

    /// The state backends' home, from the configuration (sled: rebuilt empty, the checkpoint is the
    /// source of truth).
    pub(crate) fn state_source(&self) -> Result<crate::state::BackendSource> {
        match self.config.state_backend {
            crate::config::StateBackendKind::Memory => Ok(crate::state::BackendSource::Memory),
            crate::config::StateBackendKind::Sled => {
                let dir = match (&self.config.state_dir, &self.config.checkpoint) {
                    (Some(d), _) => d.clone(),
                    (None, Some(url)) => crate::durability::local_dir(url)
                        .map(|d| d.join("state"))
                        .ok_or_else(|| {
                            StreamingError::Config(crate::config::ConfigError::InvalidValue {
                                key: "state_dir".into(),
                                value: String::new(),
                                reason: "the sled state backend needs a local directory: set \
                                         state_dir (the checkpoint is not on local disk)"
                                    .into(),
                            })
                        })?,
                    (None, None) => std::path::PathBuf::from("spate-state"),
                };
                let store = spate_state::SledStore::open_fresh(&dir).map_err(|e| {
                    StreamingError::State {
                        operator: OperatorId(u32::MAX),
                        reason: format!("opening sled at {}: {e}", dir.display()),
                    }
                })?;
                Ok(crate::state::BackendSource::Sled(Arc::new(store)))
            }
        }
    }

    /// Clears inputs after a durable completion checkpoint (called by the waiter thread).
    fn after_completed(&self, d: &Durability, before: BatchTime) {
        match d.cleanup(&self.tracker, before) {
            Ok(removed) => {
                let inputs = self.graph.lock().inputs.clone();
                for i in &inputs {
                    i.clear(before, &removed);
                }
            }
            Err(e) => self.record_failure(e),
        }
    }

    fn mark_processed(&self, t: BatchTime) {
        let mut p = self.progress.lock();
        p.processed.insert(t);
        while p.processed.len() > 1024 {
            p.processed.pop_first();
        }
        if p.last_processed.is_none_or(|l| t > l) {
            p.last_processed = Some(t);
        }
        self.progress_cv.notify_all();
    }
}

pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Handles checkpoint outcomes in submission order: counts commits, surfaces failures to
/// `await_termination`, and runs step-7 cleanup after each durable completion checkpoint.
fn run_checkpoint_waiter(
    d: &Arc<Durability>,
    inner: &Weak<Inner>,
    rx: &crossbeam_channel::Receiver<Submitted>,
) {
    for s in rx {
        let outcome = s.ticket.wait_blocking();
        if let Some(inner) = inner.upgrade() {
            match outcome {
                Ok(Ok(_)) => {
                    *d.committed.lock() += 1;
                    tracing::debug!(kind = ?s.kind, time = s.time.0, "checkpoint committed");
                    if let Some(before) = s.cleanup_before {
                        inner.after_completed(d, before);
                    }
                }
                Ok(Err(spate_checkpoint::AlreadyPublished::Superseded)) => {
                    // A newer metadata manifest was queued behind it; its cleanup waits for a
                    // durable one.
                    tracing::debug!(kind = ?s.kind, time = s.time.0, "checkpoint superseded");
                }
                Ok(Err(a)) => inner.record_failure(d.ckpt_err(
                    spate_checkpoint::CheckpointError::InvalidArgument(format!(
                        "checkpoint for batch {} not published: {a:?}",
                        s.time
                    )),
                )),
                Err(e) => inner.record_failure(d.ckpt_err(e)),
            }
        }
        d.resolved();
    }
}
