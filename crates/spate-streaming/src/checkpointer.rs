//! [`Checkpointer`]: the batch commit protocol's I/O at run time (DESIGN.md §4 steps 2, 3, 5, 6,
//! 7) — the engine's write-ahead log ([`EngineWal`]), the checkpoint store and its async writer,
//! and the commit state (pending batches, each retained batch's first WAL record, the stateful
//! operators' data-checkpoint chains) under one lock. The engine calls it on its events
//! (`on_allocated`, `on_selected`, `on_generated`, `on_jobs_done`, `on_completed`,
//! `on_data_checkpoint`, `on_completion_durable`, `restore`, `shutdown`); the decisions are
//! [`crate::plan`]'s.

use crate::compat;
use crate::error::{Result, StreamingError};
use crate::journal::{block_handle, EngineWal, Replayed};
use crate::plan::{OpFacts, Progress, RestartFacts, SnapshotOrDelta};
use crate::recovery::RestartSchedule;
use crate::recovery::{RestartReport, WalRecoverySummary};
use crate::state::StatefulOp;
use crate::tracker::{ReceivedBlockInfo, SharedTracker, TrackerEvent};
use parking_lot::{Condvar, Mutex};
use spate_checkpoint::{
    BlockingCheckpointStore, CheckpointDraft, CheckpointError, CheckpointKind, CheckpointPaths,
    CheckpointWriter, CommitTicket, CorruptReason, DataObjectRef, GraphDescriptionBlob, Manifest,
    Retention, StoreOptions, WriterConfig,
};
use spate_io::Clock;
use spate_sources::Selection;
use spate_types::{BatchTime, DurationMs, Lsn, OperatorId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod records;
pub(crate) use records::{hwm_of, spans_of, ManifestInputs, OpChain};
use records::{output_label, OpMeta, StateMeta, COALESCED_KEY, PROGRESS_KEY, STATE_KEY};

/// The local directory of a checkpoint URL, if it is a local one (a bare path or `file://`): the
/// engine's one reading of a checkpoint URL (the WAL and sled state directories derive from it).
pub(crate) fn local_dir(url: &str) -> Option<PathBuf> {
    spate_checkpoint::CheckpointUrl::parse(url)
        .ok()?
        .local_path()
        .map(Path::to_path_buf)
}

/// The WAL directory for a configuration: `wal_dir`, else `<checkpoint path>/wal` for a local
/// checkpoint.
pub(crate) fn wal_dir(url: &str, configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = configured {
        return Ok(d.to_owned());
    }
    local_dir(url).map(|d| d.join("wal")).ok_or_else(|| {
        StreamingError::Config(crate::config::ConfigError::InvalidValue {
            key: "wal_dir".into(),
            value: String::new(),
            reason: format!(
                "checkpoint {url} is not on local disk: set wal_dir to a local directory for the \
                 write-ahead log"
            ),
        })
    })
}

/// How long a submission waits for room in the writer's queue (back-pressure on the job generator,
/// e.g. when a restart generates many missed batches at once) before failing.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a graceful stop waits for the last checkpoints beyond its own timeout.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The outcome of a checkpoint the writer committed asynchronously.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Durable; for a completion checkpoint, step 7 may clean up before `cleanup_before`.
    Durable {
        /// Clean up batches before this time.
        cleanup_before: Option<BatchTime>,
    },
    /// Not durable: the context fails (I-REC-5).
    Failed(StreamingError),
}

/// A submitted checkpoint whose outcome the waiter thread handles.
struct Submitted {
    kind: CheckpointKind,
    time: BatchTime,
    ticket: CommitTicket,
    cleanup_before: Option<BatchTime>,
}

/// The commit state: everything a manifest records that changes batch by batch, and what recovery
/// left for `start`. One lock; never held across a store or WAL call that may block.
#[derive(Default)]
struct CommitState {
    /// What replaying the WAL at open found; consumed by recovery (or checked for orphans).
    replayed: Option<Replayed>,
    /// Batches generated or rescheduled but not completed (the manifest's pending batches), and
    /// the grid high-water mark (I-REC-6).
    progress: Progress,
    /// WAL LSN of each retained batch's first record (allocation or selection).
    batch_lsn: BTreeMap<BatchTime, Lsn>,
    /// Data-checkpoint chains of the stateful operators.
    chains: BTreeMap<OperatorId, OpChain>,
    /// The graph blob and settings written into every manifest (set at start).
    blob: GraphDescriptionBlob,
    settings: BTreeMap<String, String>,
    /// Set by `get_or_create` when restoring.
    restart: Option<RestartFacts>,
    report: Option<RestartReport>,
    /// Submitted checkpoints whose outcome is not known yet.
    outstanding: u64,
}

impl CommitState {
    /// The state meta and carried objects for a draft: every chain as it stands, except the
    /// operators in `replaced` (whose new objects the caller adds).
    fn state_part(
        &self,
        replaced: &BTreeMap<OperatorId, OpMeta>,
    ) -> (StateMeta, Vec<DataObjectRef>) {
        let mut meta = StateMeta::default();
        let mut carried = Vec::new();
        let mut seen = BTreeSet::new();
        let mut carry = |o: &DataObjectRef| {
            if seen.insert(o.path.clone()) {
                carried.push(o.clone());
            }
        };
        for (op, c) in &self.chains {
            if let Some(m) = replaced.get(op) {
                // A delta keeps the chain before it.
                if m.deltas > 0 {
                    c.partitions.iter().flatten().for_each(&mut carry);
                }
                continue;
            }
            c.partitions.iter().flatten().for_each(&mut carry);
            if let Some(o) = &c.output {
                carry(o);
            }
            meta.ops.push(OpMeta {
                op: op.0,
                time: c.time.0,
                deltas: c.deltas,
                previous: c.previous.map(|t| t.0),
                partitions: c
                    .partitions
                    .iter()
                    .map(|v| v.iter().map(|o| o.path.clone()).collect())
                    .collect(),
                output: c.output.as_ref().map(|o| o.path.clone()),
            });
        }
        meta.ops.extend(replaced.values().cloned());
        meta.ops.sort_by_key(|m| m.op);
        (meta, carried)
    }
}

/// The writer, its outcome channel and the waiter thread (lifecycle handles, not commit state).
#[derive(Default)]
struct WriterHandles {
    writer: Option<CheckpointWriter>,
    submit_tx: Option<crossbeam_channel::Sender<Submitted>>,
    waiter: Option<JoinHandle<()>>,
}

/// The engine's checkpointer: what the batch commit protocol writes, and what recovery restores.
pub(crate) struct Checkpointer {
    url: String,
    wal: Arc<EngineWal>,
    store: BlockingCheckpointStore,
    /// True once a receiver writes its blocks to the WAL (then allocations are logged too).
    receiver_wal: AtomicBool,
    state: Mutex<CommitState>,
    /// Signalled when `outstanding` drops.
    resolved_cv: Condvar,
    handles: Mutex<WriterHandles>,
    /// When this process last committed a data checkpoint (I-REC-6 during catch-up).
    last_data: Mutex<Option<Instant>>,
    /// Held from a draft's snapshot of the commit state until it is enqueued, so that manifests
    /// are published in the order of the states they describe (I-REC-6: the newest manifest's
    /// restored position is the newest).
    order: Mutex<()>,
}

impl fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpointer")
            .field("url", &self.url)
            .field("wal", &self.wal.dir())
            .finish()
    }
}

impl Checkpointer {
    /// Opens the store and the WAL (replaying it).
    pub(crate) fn open(
        url: &str,
        wal: &Path,
        clock: Arc<dyn Clock>,
        store: Option<BlockingCheckpointStore>,
        segment_bytes: u64,
        fs: Arc<dyn spate_io::FileSystem>,
    ) -> Result<Checkpointer> {
        let store =
            match store {
                Some(s) => s,
                None => BlockingCheckpointStore::open(url, StoreOptions::default()).map_err(
                    |source| StreamingError::Checkpoint {
                        url: url.to_owned(),
                        source: Box::new(source),
                    },
                )?,
            };
        let (wal, replayed) = EngineWal::open(fs, wal, clock, segment_bytes)?;
        Ok(Checkpointer {
            url: url.to_owned(),
            wal: Arc::new(wal),
            store,
            receiver_wal: AtomicBool::new(false),
            state: Mutex::new(CommitState {
                replayed: Some(replayed),
                ..CommitState::default()
            }),
            resolved_cv: Condvar::new(),
            handles: Mutex::new(WriterHandles::default()),
            order: Mutex::new(()),
            last_data: Mutex::new(None),
        })
    }

    fn ckpt_err(&self, source: CheckpointError) -> StreamingError {
        if let CheckpointError::Fenced { ours, newer, .. } = source {
            return StreamingError::Fenced {
                url: self.url.clone(),
                ours,
                newer,
            };
        }
        StreamingError::Checkpoint {
            url: self.url.clone(),
            source: Box::new(source),
        }
    }

    /// The error of an engine checkpoint fail point site (`docs/failpoints.md`).
    #[cfg(feature = "failpoints")]
    fn failpoint(&self, name: &str, arg: &str, indeterminate: bool) -> StreamingError {
        self.ckpt_err(CheckpointError::failpoint(name, "", arg, indeterminate))
    }

    /// True once a receiver writes its blocks to the WAL: allocations are logged too.
    pub(crate) fn logs_allocations(&self) -> bool {
        self.receiver_wal.load(Ordering::Acquire)
    }

    /// A receiver stream writes its blocks to the WAL (step 1): from now on allocations are logged
    /// too. Returns the WAL for its block handler.
    pub(crate) fn on_receiver_wal(&self) -> Arc<EngineWal> {
        self.receiver_wal.store(true, Ordering::Release);
        Arc::clone(&self.wal)
    }

    /// Step 2: batch `t`'s allocation is durable in the WAL before the tracker applies it (the
    /// caller holds the tracker and applies `event` only if this returns `Ok`; SPARK-23991).
    pub(crate) fn on_allocated(&self, t: BatchTime, event: &TrackerEvent) -> Result<()> {
        spate_types::spate_fail!("engine::allocate::before", |a| Err(self
            .wal
            .failpoint("engine::allocate::before", &a)));
        let lsn = self.wal.append_event(event)?;
        self.note_batch_lsn(t, lsn);
        spate_types::spate_fail!("engine::allocate::after", |a| Err(self
            .wal
            .failpoint("engine::allocate::after", &a)));
        Ok(())
    }

    /// Step 2: a replayable input's selection for `t` is durable before the batch runs.
    pub(crate) fn on_selected(&self, t: BatchTime, op: OperatorId, sel: &Selection) -> Result<()> {
        let lsn = self.wal.append_selection(op, sel)?;
        self.note_batch_lsn(t, lsn);
        Ok(())
    }

    fn note_batch_lsn(&self, t: BatchTime, lsn: Lsn) {
        self.state.lock().batch_lsn.entry(t).or_insert(lsn);
    }

    /// Step 3: batch `t` is generated: it is pending, and the metadata checkpoint "T generated"
    /// is submitted (written off this thread).
    pub(crate) fn on_generated(&self, t: BatchTime, inputs: ManifestInputs) -> Result<()> {
        let _order = self.order.lock();
        self.state.lock().progress.on_generated(t);
        let draft = self.draft(CheckpointKind::Generated, t, inputs);
        spate_types::spate_fail!("engine::checkpoint::generated::submit", |a| Err(
            self.failpoint("engine::checkpoint::generated::submit", &a, false)
        ));
        self.submit(draft, None)
    }

    /// The jobs of `t` ran: it is no longer pending. Returns the oldest batch still pending and
    /// whether `t` was one the restart rescheduled (catch-up, I-REC-6).
    pub(crate) fn on_jobs_done(&self, t: BatchTime) -> (Option<BatchTime>, bool) {
        self.state.lock().progress.on_done(t)
    }

    /// Wall time since this process last committed a data checkpoint, ms (`None`: none yet).
    pub(crate) fn since_data_checkpoint_ms(&self) -> Option<u64> {
        self.last_data
            .lock()
            .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Batches generated or rescheduled but not completed.
    pub(crate) fn pending_len(&self) -> u64 {
        self.state.lock().progress.pending.len() as u64
    }

    /// A fresh start at `zero`: no grid time before it exists (every manifest records a
    /// high-water mark from the first one on).
    pub(crate) fn on_fresh(&self, zero: BatchTime) {
        self.state.lock().progress.hwm = Some(zero);
    }

    /// The planners' view of the stateful operators and their chains.
    pub(crate) fn op_facts(&self, ops: &[Arc<dyn StatefulOp>]) -> Vec<OpFacts> {
        let s = self.state.lock();
        ops.iter()
            .map(|op| OpFacts {
                id: op.operator(),
                slide: op.slide(),
                interval: op.interval(),
                partitions: op.partitions(),
                chain: s.chains.get(&op.operator()).map(OpChain::facts),
            })
            .collect()
    }

    /// Step 6: the metadata checkpoint "T completed" is submitted; once it is durable the waiter
    /// reports `cleanup_before` for step 7.
    pub(crate) fn on_completed(
        &self,
        t: BatchTime,
        inputs: ManifestInputs,
        cleanup_before: BatchTime,
    ) -> Result<()> {
        let _order = self.order.lock();
        let draft = self.draft(CheckpointKind::Completed, t, inputs);
        spate_types::spate_fail!("engine::checkpoint::completed::submit", |a| Err(
            self.failpoint("engine::checkpoint::completed::submit", &a, false)
        ));
        self.submit(draft, Some(cleanup_before))
    }

    /// The first checkpoint of a fresh start, before any receiver stores a block (I-REC-2: every
    /// WAL record is covered by some manifest from now on); waits until it is durable.
    pub(crate) fn on_fresh_start(&self, inputs: ManifestInputs) -> Result<()> {
        let draft = self.draft(CheckpointKind::Completed, inputs.zero, inputs);
        self.commit_now(draft).map(|_| ())
    }

    /// DESIGN.md §4 step 5: a data checkpoint at `t` (the state of `due` is as of `t`): each
    /// operator's partitions as the planned snapshot or delta on its previous data checkpoint,
    /// written and committed (waited for: the state must not move on before its objects are
    /// encoded, and the chain must know their references) before the next batch may change the
    /// state. Step 7 is the caller's, the checkpoint being durable.
    pub(crate) fn on_data_checkpoint(
        &self,
        t: BatchTime,
        inputs: ManifestInputs,
        due: &[(Arc<dyn StatefulOp>, SnapshotOrDelta)],
    ) -> Result<()> {
        let mut new_objects = Vec::new();
        let mut replaced = BTreeMap::new();
        for (op, mode) in due {
            let id = op.operator();
            let chain = self.state.lock().chains.get(&id).cloned();
            let snapshot = mode.is_snapshot();
            let base = match *mode {
                SnapshotOrDelta::Snapshot => chain.as_ref().map_or(t, |c| c.time),
                SnapshotOrDelta::Delta { base } => base,
            };
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
        let order = self.order.lock();
        let (meta, carried) = self.state.lock().state_part(&replaced);
        let mut draft = self.draft(CheckpointKind::Data, t, inputs);
        draft.source_positions.insert(
            STATE_KEY.to_owned(),
            spate_types::codec::encode(&meta).map_err(|source| StreamingError::Encode {
                what: "state meta",
                source,
            })?,
        );
        draft.carried_objects = carried;
        draft.new_objects = new_objects;
        spate_types::spate_fail!("engine::checkpoint::data::commit::before", |a| Err(
            self.failpoint("engine::checkpoint::data::commit::before", &a, false)
        ));
        let ticket = self.enqueue(draft)?;
        drop(order);
        let m = self.wait(t, ticket)?;
        spate_types::spate_fail!("engine::checkpoint::data::commit::after", |a| Err(
            self.failpoint("engine::checkpoint::data::commit::after", &a, true)
        ));
        *self.last_data.lock() = Some(Instant::now());
        let chains = self.chains_of(&m)?;
        self.state.lock().chains = chains;
        tracing::debug!(
            time = t.0,
            objects = m.objects.len(),
            bytes = m.data_bytes(),
            "data checkpoint committed"
        );
        Ok(())
    }

    /// Step 7 after a durable completion checkpoint (I-REC-4, enforced here only): log
    /// `BatchCleanup` for batches before `before`, drop them from the tracker, and delete WAL
    /// segments below [`crate::plan::wal_truncate_below`]. Returns the cleaned-up blocks (to drop
    /// from the block handlers).
    pub(crate) fn on_completion_durable(
        &self,
        tracker: &SharedTracker,
        before: BatchTime,
    ) -> Result<Vec<ReceivedBlockInfo>> {
        spate_types::spate_fail!("engine::cleanup::before", |a| Err(self
            .wal
            .failpoint("engine::cleanup::before", &a)));
        let mut removed = Vec::new();
        let bound = tracker.with_locked(|tr| -> Result<_> {
            if let Some((ev, blocks)) = tr.plan_cleanup(before) {
                if self.logs_allocations() {
                    self.wal.append_event(&ev)?;
                }
                tr.apply(&ev);
                removed = blocks;
            }
            let mut s = self.state.lock();
            let keep = s.batch_lsn.split_off(&before);
            s.batch_lsn = keep;
            Ok(crate::plan::wal_truncate_below(
                self.wal.next_lsn(),
                s.batch_lsn.values().copied(),
                tr.referenced_blocks()
                    .filter_map(|b| block_handle(b).map(|h| h.lsn)),
            ))
        })?;
        self.wal.truncate_before(bound)?;
        Ok(removed)
    }

    /// A draft with the fields common to every checkpoint.
    fn draft(
        &self,
        kind: CheckpointKind,
        time: BatchTime,
        inputs: ManifestInputs,
    ) -> CheckpointDraft {
        let mut d = CheckpointDraft::new(kind, time, inputs.zero, inputs.batch);
        let s = self.state.lock();
        d.graph = s.blob.clone();
        d.conf = s.settings.clone();
        d.pending_batches = s.progress.pending.iter().copied().collect();
        d.source_positions = inputs.positions;
        if let Some(hwm) = s.progress.hwm {
            if let Ok(b) = spate_types::codec::encode(&hwm.0) {
                d.source_positions.insert(PROGRESS_KEY.to_owned(), b);
            }
        }
        if !s.progress.spans.is_empty() {
            let spans: Vec<(u64, u64)> = s.progress.spans.iter().map(|(b, f)| (b.0, f.0)).collect();
            if let Ok(b) = spate_types::codec::encode(&spans) {
                d.source_positions.insert(COALESCED_KEY.to_owned(), b);
            }
        }
        d.wal_position = Some(self.wal.next_lsn());
        if !s.chains.is_empty() {
            let (meta, carried) = s.state_part(&BTreeMap::new());
            if let Ok(b) = spate_types::codec::encode(&meta) {
                d.source_positions.insert(STATE_KEY.to_owned(), b);
            }
            d.carried_objects = carried;
        }
        d
    }

    /// Submits a draft to the async writer; the waiter thread handles the outcome.
    fn submit(&self, draft: CheckpointDraft, cleanup_before: Option<BatchTime>) -> Result<()> {
        let (kind, time) = (draft.kind, draft.batch_time);
        let ticket = self.enqueue(draft)?;
        let tx = self.handles.lock().submit_tx.clone();
        match tx {
            Some(tx) => {
                let _ = tx.send(Submitted {
                    kind,
                    time,
                    ticket,
                    cleanup_before,
                });
                Ok(())
            }
            // No waiter (before start): wait here.
            None => self.wait(time, ticket).map(|_| ()),
        }
    }

    /// Commits a draft and waits for it.
    fn commit_now(&self, draft: CheckpointDraft) -> Result<Manifest> {
        let time = draft.batch_time;
        let ticket = self.enqueue(draft)?;
        self.wait(time, ticket)
    }

    fn enqueue(&self, draft: CheckpointDraft) -> Result<CommitTicket> {
        let ticket = {
            let h = self.handles.lock();
            let Some(w) = h.writer.as_ref() else {
                return Err(self.ckpt_err(CheckpointError::WriterStopped));
            };
            w.submit_blocking(draft, SUBMIT_TIMEOUT)
                .map_err(|e| self.ckpt_err(e))?
        };
        self.state.lock().outstanding += 1;
        Ok(ticket)
    }

    fn not_published(
        &self,
        time: BatchTime,
        reason: spate_checkpoint::AlreadyPublished,
    ) -> StreamingError {
        StreamingError::NotPublished {
            url: self.url.clone(),
            time,
            reason,
        }
    }

    fn wait(&self, time: BatchTime, ticket: CommitTicket) -> Result<Manifest> {
        let r = ticket.wait_blocking();
        self.resolved();
        match r {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(a)) => Err(self.not_published(time, a)),
            Err(e) => Err(self.ckpt_err(e)),
        }
    }

    fn resolved(&self) {
        let mut s = self.state.lock();
        s.outstanding = s.outstanding.saturating_sub(1);
        self.resolved_cv.notify_all();
    }

    /// Sets the description written into manifests.
    pub(crate) fn set_build(&self, build: &compat::BuildDescription) {
        let mut s = self.state.lock();
        s.blob = GraphDescriptionBlob {
            fingerprint: build.graph.fingerprint(),
            bytes: compat::encode_description(&build.graph),
        };
        s.settings = build.settings.clone();
    }

    /// What `get_or_create` restored for `start` to schedule (`None`: a fresh start).
    pub(crate) fn restart_facts(&self) -> Option<RestartFacts> {
        self.state.lock().restart.clone()
    }

    /// I-REC-2 at a start with nothing restored: the WAL as replayed at open.
    pub(crate) fn fresh_wal(&self) -> crate::plan::WalFacts {
        let s = self.state.lock();
        s.replayed.as_ref().map_or(
            crate::plan::WalFacts {
                segments: 0,
                records: Some(0),
            },
            |r| crate::plan::WalFacts {
                segments: r.report.segments.len() as u64,
                records: Some(r.records),
            },
        )
    }

    /// The WAL's directory.
    pub(crate) fn wal_dir(&self) -> &Path {
        self.wal.dir()
    }

    /// Recovery step 5 at `start`: the schedule actually run goes into the report (rewritten if
    /// time passed between `get_or_create` and `start`).
    pub(crate) fn on_restart_scheduled(&self, s: &RestartSchedule, batch: DurationMs) {
        let mut st = self.state.lock();
        st.progress.on_restart(s, batch);
        let Some(r) = st.report.as_mut() else {
            return;
        };
        let times: Vec<u64> = s.times.iter().map(|t| t.0).collect();
        let changed = r.batches_rescheduled != times
            || r.restart_time != Some(s.restart_time.0)
            || r.batches_coalesced != s.coalesced;
        r.batches_rescheduled = times;
        r.batches_coalesced.clone_from(&s.coalesced);
        r.batches_skipped = s.skipped.iter().map(|t| t.0).collect();
        r.restart_time = Some(s.restart_time.0);
        if changed {
            crate::recovery::write_report(&self.store, r);
        }
    }

    /// Opens the writer (claims a new generation, fencing older writers); what replay found is
    /// no longer needed.
    pub(crate) fn start_writer(&self, retain: usize) -> Result<()> {
        self.state.lock().replayed = None;
        let w = self
            .store
            .open_writer(WriterConfig {
                capacity: 64,
                retention: Some(Retention {
                    keep: retain.max(1),
                    pinned: BTreeSet::new(),
                }),
                // Metadata manifests are self-contained: a slow store skips superseded ones
                // instead of falling behind the batches.
                coalesce_metadata: true,
                gc_min_interval: Duration::from_secs(2),
            })
            .map_err(|e| self.ckpt_err(e))?;
        self.handles.lock().writer = Some(w);
        Ok(())
    }

    /// Starts the waiter thread: it handles checkpoint outcomes in submission order and hands
    /// each to `on_outcome` (superseded metadata checkpoints are not reported: their cleanup waits
    /// for a durable one).
    pub(crate) fn start_waiter(
        self: &Arc<Self>,
        on_outcome: impl Fn(Outcome) + Send + 'static,
    ) -> Result<()> {
        let (tx, rx) = crossbeam_channel::unbounded::<Submitted>();
        self.handles.lock().submit_tx = Some(tx);
        let me = Arc::clone(self);
        let h = std::thread::Builder::new()
            .name("spate-checkpoint-waiter".into())
            .spawn(move || {
                for s in rx {
                    let outcome = match s.ticket.wait_blocking() {
                        Ok(Ok(_)) => {
                            tracing::debug!(kind = ?s.kind, time = s.time.0, "checkpoint committed");
                            Some(Outcome::Durable {
                                cleanup_before: s.cleanup_before,
                            })
                        }
                        Ok(Err(spate_checkpoint::AlreadyPublished::Superseded)) => {
                            tracing::debug!(kind = ?s.kind, time = s.time.0, "checkpoint superseded");
                            None
                        }
                        Ok(Err(a)) => Some(Outcome::Failed(me.not_published(s.time, a))),
                        Err(e) => Some(Outcome::Failed(me.ckpt_err(e))),
                    };
                    if let Some(o) = outcome {
                        on_outcome(o);
                    }
                    me.resolved();
                }
            })
            .map_err(|e| StreamingError::spawn("checkpoint waiter", e))?;
        self.handles.lock().waiter = Some(h);
        Ok(())
    }

    /// Stops the writer: waits (until `drain_until`, if given) for every submitted checkpoint's
    /// outcome, then after the last outcome stops the waiter and the writer. Returns false if the
    /// wait timed out.
    pub(crate) fn shutdown(&self, drain_until: Option<Instant>) -> bool {
        let mut drained = true;
        if let Some(deadline) = drain_until {
            let mut s = self.state.lock();
            while s.outstanding > 0 {
                if self.resolved_cv.wait_until(&mut s, deadline).timed_out() {
                    drained = s.outstanding == 0;
                    break;
                }
            }
        }
        let (tx, waiter) = {
            let mut h = self.handles.lock();
            (h.submit_tx.take(), h.waiter.take())
        };
        drop(tx);
        if let Some(h) = waiter {
            let _ = h.join();
        }
        let writer = self.handles.lock().writer.take();
        if let Some(w) = writer {
            self.store.block_on(w.shutdown());
        }
        // Last: the WAL's records are durable and its lock released (one process per WAL, but a
        // stopped context holds nothing).
        if let Err(e) = self.wal.release() {
            tracing::warn!("closing the WAL at stop: {e}");
        }
        drained
    }

    // ---- recovery ----

    /// Recovery step 3: what replaying the WAL at open found (taken once).
    pub(crate) fn take_replayed(&self) -> Replayed {
        self.state.lock().replayed.take().unwrap_or_default()
    }

    /// The report's WAL part from the replay at open.
    pub(crate) fn wal_summary(&self, w: &mut WalRecoverySummary) {
        let s = self.state.lock();
        if let Some(rp) = s.replayed.as_ref() {
            w.segments = rp.report.segments.len() as u64;
            w.records = rp.records;
            if let Some(tt) = &rp.report.torn_tail {
                w.bytes_truncated = tt.dropped_bytes;
                w.torn_tail = Some(format!("{}@{}", tt.segment.display(), tt.offset));
                w.torn_tail_saved_to = tt.saved_to.as_ref().map(|p| p.display().to_string());
            }
        }
    }

    /// Recovery steps 3–4: the retained batches' first WAL records and, with stateful operators,
    /// the chains of manifest `m`; returns the chains.
    pub(crate) fn restore(
        &self,
        m: &Manifest,
        batch_lsns: &BTreeMap<BatchTime, Lsn>,
        with_state: bool,
    ) -> Result<BTreeMap<OperatorId, OpChain>> {
        let chains = if with_state {
            self.chains_of(m)?
        } else {
            BTreeMap::new()
        };
        let mut s = self.state.lock();
        for (t, lsn) in batch_lsns {
            s.batch_lsn.entry(*t).or_insert(*lsn);
        }
        s.chains = chains.clone();
        Ok(chains)
    }

    /// Recovery step 5 is planned: `start` schedules from `restart`.
    pub(crate) fn on_restored(&self, restart: RestartFacts) {
        self.state.lock().restart = Some(restart);
    }

    /// Reads one data object of a restored chain.
    pub(crate) fn read_object(&self, r: &DataObjectRef) -> Result<Vec<u8>> {
        self.store
            .block_on(self.store.store().read_object(r))
            .map(|b| b.to_vec())
            .map_err(|e| self.ckpt_err(e))
    }

    /// Keeps the restart report (returned by `restart_report`, updated by `start`).
    pub(crate) fn set_report(&self, r: RestartReport) {
        self.state.lock().report = Some(r);
    }

    /// The restart report, if this context was made by `get_or_create`.
    pub(crate) fn report(&self) -> Option<RestartReport> {
        self.state.lock().report.clone()
    }

    /// Writes the report beside the checkpoint (best effort).
    pub(crate) fn write_report(&self, r: &mut RestartReport) {
        crate::recovery::write_report(&self.store, r);
    }

    /// The chains of a committed (or restored) manifest's state meta.
    fn chains_of(&self, m: &Manifest) -> Result<BTreeMap<OperatorId, OpChain>> {
        let Some(bytes) = m.source_positions.get(STATE_KEY) else {
            return Ok(BTreeMap::new());
        };
        let meta: StateMeta = spate_types::codec::decode(bytes).map_err(|e| {
            self.ckpt_err(CheckpointError::Corrupt {
                object: CheckpointPaths::manifest(m.key),
                reason: CorruptReason::Decode(format!("state meta: {e}")),
            })
        })?;
        let own = |p: &str| -> String {
            if p.contains('/') {
                p.to_owned()
            } else {
                CheckpointPaths::data(m.key, p)
            }
        };
        let find = |p: &str| -> Result<DataObjectRef> {
            let path = own(p);
            m.objects
                .iter()
                .find(|o| o.path == path)
                .cloned()
                .ok_or_else(|| {
                    self.ckpt_err(CheckpointError::Corrupt {
                        object: CheckpointPaths::manifest(m.key),
                        reason: CorruptReason::Invalid(format!(
                            "state object {path} is not among the manifest's objects"
                        )),
                    })
                })
        };
        let mut chains = BTreeMap::new();
        for o in &meta.ops {
            let partitions = o
                .partitions
                .iter()
                .map(|v| v.iter().map(|p| find(p)).collect::<Result<Vec<_>>>())
                .collect::<Result<Vec<_>>>()?;
            let output = o.output.as_deref().map(find).transpose()?;
            chains.insert(
                OperatorId(o.op),
                OpChain {
                    time: BatchTime(o.time),
                    partitions,
                    output,
                    deltas: o.deltas,
                    previous: o.previous.map(BatchTime),
                },
            );
        }
        Ok(chains)
    }
}
