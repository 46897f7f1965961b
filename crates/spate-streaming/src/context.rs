//! [`StreamingContext`]: graph registry, lifecycle (start / stop / await termination), the job
//! generator (timer on the [`Clock`]) and the job scheduler.

use crate::checkpointer::{Checkpointer, ManifestInputs, Outcome};
use crate::config::StreamingConfig;
use crate::error::{Result, StreamingError};
use crate::graph::{
    plan_remember, ComputeFn, GraphDescription, GraphNode, NarrowFn, Node, NodeMeta,
};
use crate::journal::Replayed;
use crate::listener::{BatchInfo, Event, ListenerBus, OutputOperationInfo, StreamingListener};
use crate::plan::{
    orphan_wal, plan_completion, plan_recovery, plan_restart, replayed_batches, snapshot_or_delta,
    CheckpointFacts, CompletionCommit, CompletionFacts, RecoveryDecision, RecoveryFacts, Refusal,
    RestartFacts, WalFacts,
};
use crate::recovery::RestartReport;
use crate::tracker::{ReceivedBlockInfo, ReceivedBlockTracker};
use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};
use spate_checkpoint::Manifest;
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
    fn generate(&self, t: BatchTime, durability: Option<&Checkpointer>) -> Result<u64>;
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
    pub(crate) durability: Option<Arc<Checkpointer>>,
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
        durability: Option<Arc<Checkpointer>>,
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
        let replayed = d.take_replayed();
        let batches = {
            let mut tr = self.inner.tracker.lock();
            for (_, e) in &replayed.events {
                tr.apply(e);
            }
            report.blocks_unallocated = tr.unallocated_blocks() as u64;
            let allocated: std::collections::BTreeSet<BatchTime> =
                tr.allocated_times().into_iter().collect();
            replayed_batches(
                m.batch_time,
                &replayed.events,
                replayed
                    .selections
                    .iter()
                    .map(|(lsn, _, sel)| (*lsn, sel.time)),
                &allocated,
            )
        };
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
        let chains = d.restore(m, &batches.batch_lsns, !state_ops.is_empty())?;
        let restart = RestartFacts {
            zero: m.zero_time,
            batch: self.inner.config.batch_interval,
            checkpoint_time: m.batch_time,
            pending: m.pending_batches.clone(),
            recorded: batches.recorded,
            cleaned_through: batches.cleaned_through,
            policy: self.inner.config.missed_batches,
        };
        let state: Vec<(OperatorId, Option<BatchTime>)> = state_ops
            .iter()
            .map(|op| (op.operator(), chains.get(&op.operator()).map(|c| c.time)))
            .collect();
        let checkpoint = spate_checkpoint::CheckpointPaths::manifest(m.key);
        // Recovery steps 4–5 decided on the replayed WAL and the checkpoint's state.
        let decision = plan_recovery(&RecoveryFacts {
            checkpoint: CheckpointFacts::Found {
                restart: restart.clone(),
                state,
                now_ms: self.inner.clock.now_ms(),
            },
            create_on_error: self.inner.config.create_on_error,
            wal: WalFacts {
                segments: replayed.report.segments.len() as u64,
                records: Some(replayed.records),
            },
        });
        let schedule = match decision {
            RecoveryDecision::Restore { schedule } => schedule,
            RecoveryDecision::Refuse(Refusal::CheckpointHasNoState { operator }) => {
                return Err(StreamingError::State {
                    operator,
                    reason: format!("checkpoint {checkpoint} holds no state for it"),
                })
            }
            RecoveryDecision::Refuse(Refusal::CheckpointTooOld {
                operator,
                state_time,
                cleaned_through,
            }) => {
                return Err(StreamingError::CheckpointTooOld {
                    checkpoint,
                    reason: format!(
                        "{operator}'s state is as of {state_time} but the inputs of batches up to \
                         {cleaned_through} were cleaned up after a newer checkpoint; restoring \
                         would lose them"
                    ),
                })
            }
            other => {
                unreachable!("a found checkpoint is restored or refused for its state: {other:?}")
            }
        };
        if !state_ops.is_empty() {
            let source = self.inner.state_source()?;
            for op in &state_ops {
                let id = op.operator();
                let Some(c) = chains.get(&id) else {
                    continue; // plan_restore refused operators without state
                };
                op.open(&source)?;
                let read = |r: &spate_checkpoint::DataObjectRef| d.read_object(r);
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
        report.batches_rescheduled = schedule.times.iter().map(|t| t.0).collect();
        report.batches_skipped = schedule.skipped.iter().map(|t| t.0).collect();
        report.restart_time = Some(schedule.restart_time.0);
        d.on_restored(restart);
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
        let plan = inner.durability.as_ref().and_then(|d| d.restart_facts());
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
                    // Recovery step 5 (Spark's JobGenerator.restart), as of this start.
                    let s = plan_restart(p, now);
                    zero = p.zero.0;
                    start_time = s.restart_time.0;
                    d.on_restart_scheduled(&s);
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
            if let Err(e) = self
                .manifest_inputs()
                .and_then(|inputs| d.on_generated(t, inputs))
            {
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
                d.on_allocated(t, &e)?;
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

    /// What every manifest records besides the commit state.
    pub(crate) fn manifest_inputs(&self) -> Result<ManifestInputs> {
        Ok(ManifestInputs {
            zero: BatchTime(self.zero_time.load(Ordering::Acquire)),
            batch: self.config.batch_interval,
            positions: self.source_positions()?,
        })
    }

    /// Spark's `ClearMetadata(time)`: forget old batches, old allocations and their blocks. With
    /// checkpointing, allocations, blocks and WAL segments are dropped only once the completion
    /// checkpoint of `t` is durable (Spark's `ClearCheckpointData`; DESIGN.md §4 steps 5–7): the
    /// decisions are [`plan_completion`]'s, this executes them.
    fn clear_metadata(&self, t: BatchTime) {
        let (nodes, state_ops) = {
            let g = self.graph.lock();
            (g.nodes.clone(), g.state_ops.clone())
        };
        let mut max_remember = 0;
        for n in &nodes {
            n.clear_metadata(t);
            max_remember = max_remember.max(n.meta().remember.load(Ordering::Acquire));
        }
        let oldest_pending = self.durability.as_ref().and_then(|d| d.on_jobs_done(t));
        let ops = match &self.durability {
            Some(d) => d.op_facts(&state_ops),
            None => Vec::new(),
        };
        let plan = plan_completion(
            t,
            &CompletionFacts {
                zero: BatchTime(self.zero_time.load(Ordering::Acquire)),
                batch: self.config.batch_interval,
                max_remember,
                checkpointing: self.durability.is_some(),
                oldest_pending,
                snapshot_every: self.config.state_snapshot_every,
                ops: &ops,
            },
        );
        let before = plan.cleanup_before;
        let r = match (&self.durability, plan.commit) {
            (Some(d), CompletionCommit::Completed) => self
                .manifest_inputs()
                .and_then(|inputs| d.on_completed(t, inputs, before)),
            (Some(d), CompletionCommit::Data) => {
                let due: Vec<_> = plan
                    .due_ops
                    .iter()
                    .map(|o| (Arc::clone(&state_ops[o.index]), o.snapshot_or_delta))
                    .collect();
                self.manifest_inputs()
                    .and_then(|inputs| d.on_data_checkpoint(t, inputs, &due))
                    .map(|()| self.after_completed(before))
            }
            (_, CompletionCommit::None) | (None, _) => {
                let inputs = self.graph.lock().inputs.clone();
                let (_, removed) = self.tracker.lock().cleanup_old_batches(before);
                for i in &inputs {
                    i.clear(before, &removed);
                }
                Ok(())
            }
        };
        if let Err(e) = r {
            self.record_failure(e);
        }
    }

    /// The state backends' home, from the configuration (sled: rebuilt empty, the checkpoint is the
    /// source of truth).
    pub(crate) fn state_source(&self) -> Result<crate::state::BackendSource> {
        match self.config.state_backend {
            crate::config::StateBackendKind::Memory => Ok(crate::state::BackendSource::Memory),
            crate::config::StateBackendKind::Sled => {
                let dir = match (&self.config.state_dir, &self.config.checkpoint) {
                    (Some(d), _) => d.clone(),
                    (None, Some(url)) => crate::checkpointer::local_dir(url)
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
    fn after_completed(&self, before: BatchTime) {
        let Some(d) = &self.durability else { return };
        match d.on_completion_durable(&self.tracker, before) {
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
