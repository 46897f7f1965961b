//! The engine's decisions as pure functions over plain facts (no I/O, no locks, no clock), as
//! `spate_checkpoint::protocol` is for the store. The I/O shell (the checkpointer, the job
//! scheduler, `get_or_create`) gathers the facts, calls a planner and executes its plan.
//!
//! * [`plan_completion`]: what the completion of batch `T` commits (DESIGN.md §4 steps 5–7):
//!   which stateful operators are due for a data checkpoint, snapshot or delta for each, and the
//!   batch time before which inputs may be cleaned up once that commit is durable.
//! * [`wal_truncate_below`]: the WAL truncation bound of step 7 (I-REC-4).
//! * [`plan_recovery`]: what a `get_or_create` does (fresh, archive, refuse, restore with which
//!   schedule), with [`orphan_wal`] (I-REC-2) and [`plan_restart`] (I-REC-3) its parts.
//! * [`replayed_batches`]: what the WAL's tracker events say about the batches before the crash.

use crate::recovery::{restart_schedule, CatchUp, RestartSchedule};
use crate::tracker::TrackerEvent;
use spate_types::{BatchTime, DurationMs, Lsn, OperatorId};
use std::collections::{BTreeMap, BTreeSet};

/// A stateful operator's data-checkpoint chain, as far as the planners need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChainFacts {
    /// The batch time its state is as of (its newest durable data checkpoint).
    pub(crate) time: BatchTime,
    /// Deltas written since the snapshot.
    pub(crate) deltas: u32,
    /// Partitions of the chain.
    pub(crate) partitions: usize,
    /// The data checkpoint before `time`, if any.
    pub(crate) previous: Option<BatchTime>,
}

/// One stateful operator at the completion of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OpFacts {
    /// The operator.
    pub(crate) id: OperatorId,
    /// Its slide (it has a state at times on this grid).
    pub(crate) slide: DurationMs,
    /// Its data-checkpoint interval (a positive multiple of the slide).
    pub(crate) interval: DurationMs,
    /// Its partitions now.
    pub(crate) partitions: usize,
    /// Its chain, if it has one.
    pub(crate) chain: Option<ChainFacts>,
}

/// What the completion of a batch knows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompletionFacts<'a> {
    /// Zero time of the grid.
    pub(crate) zero: BatchTime,
    /// The batch interval.
    pub(crate) batch: DurationMs,
    /// The longest remember duration of any operator, ms.
    pub(crate) max_remember: u64,
    /// True if a checkpoint location is configured.
    pub(crate) checkpointing: bool,
    /// The oldest batch still generated but not completed, once the completed one is removed.
    pub(crate) oldest_pending: Option<BatchTime>,
    /// `state_snapshot_every`: a snapshot every k-th data checkpoint, deltas between.
    pub(crate) snapshot_every: u32,
    /// The stateful operators, in registration order.
    pub(crate) ops: &'a [OpFacts],
    /// The batch is one a restart rescheduled (catch-up, I-REC-6): its completion is a data
    /// checkpoint of every stateful operator on its slide grid when none was written in this
    /// process for a batch interval of wall time (`since_data_checkpoint_ms`), so a kill during
    /// catch-up loses at most about one batch interval of state work.
    pub(crate) catch_up: bool,
    /// Wall time since this process last committed a data checkpoint, ms (`None`: none yet).
    pub(crate) since_data_checkpoint_ms: Option<u64>,
    /// `max_recovery_batches`: a data checkpoint is due when a restore would recompute at least
    /// this many batches of some operator's state (0: no bound).
    pub(crate) max_recovery_batches: u64,
}

/// How a due operator's state is written (DESIGN.md §4 step 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SnapshotOrDelta {
    /// Its whole state.
    Snapshot,
    /// The changes since its data checkpoint at `base`.
    Delta {
        /// The chain's time the delta applies to.
        base: BatchTime,
    },
}

impl SnapshotOrDelta {
    pub(crate) fn is_snapshot(self) -> bool {
        matches!(self, SnapshotOrDelta::Snapshot)
    }
}

/// A stateful operator whose state the data checkpoint of this batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DueOp {
    /// Its index in [`CompletionFacts::ops`].
    pub(crate) index: usize,
    /// The operator.
    pub(crate) id: OperatorId,
    /// Snapshot or delta.
    pub(crate) snapshot_or_delta: SnapshotOrDelta,
}

/// The commit that completes a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompletionCommit {
    /// No checkpointing: forget old batches now.
    None,
    /// A metadata checkpoint "T completed" (step 6), written asynchronously.
    Completed,
    /// A data checkpoint of the due operators (step 5, which is also step 6), committed before the
    /// next batch may change the state.
    Data,
}

/// What completing a batch does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompletionPlan {
    /// The commit.
    pub(crate) commit: CompletionCommit,
    /// The operators in the data checkpoint (empty unless `commit` is `Data`), in `ops` order.
    pub(crate) due_ops: Vec<DueOp>,
    /// Step 7 once the commit is durable (I-REC-4): batches before this time are cleaned up.
    pub(crate) cleanup_before: BatchTime,
}

/// Snapshot or delta for an operator's next data checkpoint: a snapshot without a chain, when the
/// chain's partitioning changed, or every `snapshot_every`-th checkpoint; else a delta on the chain.
pub(crate) fn snapshot_or_delta(
    chain: Option<&ChainFacts>,
    partitions: usize,
    snapshot_every: u32,
) -> SnapshotOrDelta {
    let k = snapshot_every.max(1);
    match chain {
        Some(c) if c.deltas + 1 < k && c.partitions == partitions => {
            SnapshotOrDelta::Delta { base: c.time }
        }
        _ => SnapshotOrDelta::Snapshot,
    }
}

/// The oldest batch whose inputs stateful operators may still need, so that a restore from the
/// newest or the previous data checkpoint can recompute: `None` without chains.
pub(crate) fn state_floor<'a>(
    chains: impl IntoIterator<Item = &'a ChainFacts>,
    batch: DurationMs,
) -> Option<BatchTime> {
    chains
        .into_iter()
        .map(|c| BatchTime(c.previous.unwrap_or(c.time).0 + batch.0))
        .min()
}

/// Plans the completion of batch `t` (DESIGN.md §4 steps 5–7; Spark's `ClearMetadata` and
/// `ClearCheckpointData`).
///
/// A data checkpoint covers every stateful operator on its slide grid at once (a consistent cut:
/// a chained operator recomputing from its own older checkpoint must find its parent's state at
/// the same time), whenever any of them is on its data-checkpoint grid. An operator whose chain is
/// already at or after `t` (a batch re-run after a restore from its own data checkpoint) is not
/// written again. Cleanup keeps what remember durations, pending batches and the state floor (as
/// of after the commit) still need.
pub(crate) fn plan_completion(t: BatchTime, facts: &CompletionFacts<'_>) -> CompletionPlan {
    let mut before = BatchTime(t.0.saturating_sub(facts.max_remember));
    if !facts.checkpointing {
        return CompletionPlan {
            commit: CompletionCommit::None,
            due_ops: Vec::new(),
            cleanup_before: before,
        };
    }
    if let Some(o) = facts.oldest_pending {
        before = before.min(o);
    }
    let zero = facts.zero.0;
    let on = |every: DurationMs| t.0 > zero && (t.0 - zero).is_multiple_of(every.0.max(1));
    let not_done = |op: &OpFacts| op.chain.is_none_or(|c| c.time < t);
    // I-REC-6: a rescheduled batch, or a chain a restore would recompute too long, forces one.
    let catch_up_due = facts.catch_up
        && facts
            .since_data_checkpoint_ms
            .is_none_or(|ms| ms >= facts.batch.0);
    let forced = |op: &OpFacts| {
        catch_up_due
            || (facts.max_recovery_batches > 0
                && recompute_batches(t, op.chain.as_ref(), facts.zero, facts.batch)
                    >= facts.max_recovery_batches)
    };
    let any_due = facts
        .ops
        .iter()
        .any(|op| (on(op.interval) || (on(op.slide) && forced(op))) && not_done(op));
    let due_ops: Vec<DueOp> = if any_due {
        facts
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| on(op.slide) && not_done(op))
            .map(|(index, op)| DueOp {
                index,
                id: op.id,
                snapshot_or_delta: snapshot_or_delta(
                    op.chain.as_ref(),
                    op.partitions,
                    facts.snapshot_every,
                ),
            })
            .collect()
    } else {
        Vec::new()
    };
    // The chains as they stand once the commit is durable: a due operator's is at `t`, its
    // previous the chain's time before.
    let after: Vec<ChainFacts> = facts
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| {
            if due_ops.iter().any(|d| d.index == i) {
                Some(ChainFacts {
                    time: t,
                    deltas: 0,
                    partitions: op.partitions,
                    previous: op.chain.map(|c| c.time),
                })
            } else {
                op.chain
            }
        })
        .collect();
    if let Some(f) = state_floor(&after, facts.batch) {
        before = before.min(f);
    }
    CompletionPlan {
        commit: if due_ops.is_empty() {
            CompletionCommit::Completed
        } else {
            CompletionCommit::Data
        },
        due_ops,
        cleanup_before: before,
    }
}

/// The WAL truncation bound of step 7, computed when the completion commit is durable (I-REC-4):
/// segments wholly below it may be deleted. Nothing still referenced may go: not the first record
/// of a retained batch (its allocation or selection), not a block still allocated to a retained
/// batch or unallocated; never beyond the WAL's end.
pub(crate) fn wal_truncate_below(
    next_lsn: Lsn,
    retained_batch_lsns: impl IntoIterator<Item = Lsn>,
    referenced_block_lsns: impl IntoIterator<Item = Lsn>,
) -> Lsn {
    retained_batch_lsns
        .into_iter()
        .chain(referenced_block_lsns)
        .fold(next_lsn, Lsn::min)
}

/// What the WAL says about the batches before a crash (recovery step 3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReplayedBatches {
    /// Batch times after the checkpoint that the WAL shows were generated (allocated or selected).
    pub(crate) recorded: BTreeSet<BatchTime>,
    /// The newest batch whose allocation was cleaned up (its inputs are gone).
    pub(crate) cleaned_through: Option<BatchTime>,
    /// The WAL LSN of each retained batch's first record.
    pub(crate) batch_lsns: BTreeMap<BatchTime, Lsn>,
}

/// Reads the replayed tracker events and selections against a checkpoint at `checkpoint_time`.
/// `allocated` are the times the tracker still holds allocations for after replay: a batch whose
/// allocation was cleaned up keeps no LSN. Selections keep theirs from the checkpoint time on.
pub(crate) fn replayed_batches<'a>(
    checkpoint_time: BatchTime,
    events: impl IntoIterator<Item = &'a (Lsn, TrackerEvent)>,
    selections: impl IntoIterator<Item = (Lsn, BatchTime)>,
    allocated: &BTreeSet<BatchTime>,
) -> ReplayedBatches {
    let mut r = ReplayedBatches::default();
    for (lsn, e) in events {
        match e {
            TrackerEvent::BatchAllocated { time, .. } => {
                if *time > checkpoint_time {
                    r.recorded.insert(*time);
                }
                r.batch_lsns.entry(*time).or_insert(*lsn);
            }
            TrackerEvent::BatchCleanup { times } => {
                r.cleaned_through = r.cleaned_through.max(times.iter().max().copied());
            }
            TrackerEvent::BlockAdded(_) => {}
        }
    }
    r.batch_lsns.retain(|t, _| allocated.contains(t));
    for (lsn, time) in selections {
        if time > checkpoint_time {
            r.recorded.insert(time);
        }
        if time >= checkpoint_time {
            r.batch_lsns.entry(time).or_insert(lsn);
        }
    }
    r
}

/// The batches a restore of a checkpoint taken now would recompute for one stateful operator's
/// state to reach `t`: the batches after its chain's time (from zero time without a chain).
pub(crate) fn recompute_batches(
    t: BatchTime,
    chain: Option<&ChainFacts>,
    zero: BatchTime,
    batch: DurationMs,
) -> u64 {
    let from = chain.map_or(zero, |c| c.time);
    t.0.saturating_sub(from.0) / batch.0.max(1)
}

/// "A crash now would replay `batches` batches, ≈ `ms` ms" (docs/recovery.md, "Recovery-time
/// estimate"): the batches a restart would run (`pending`, generated or rescheduled but not
/// completed; `t` the oldest of them) plus the longest state recomputation of any operator before
/// `t`, times the measured mean processing time per batch (`mean_ms`, ms; `None` before the first
/// batch).
pub(crate) fn replay_estimate(
    t: BatchTime,
    pending: u64,
    chains: &[Option<ChainFacts>],
    zero: BatchTime,
    batch: DurationMs,
    mean_ms: Option<f64>,
) -> (u64, Option<f64>) {
    let recompute = chains
        .iter()
        .map(|c| {
            recompute_batches(
                BatchTime(t.0.saturating_sub(batch.0)),
                c.as_ref(),
                zero,
                batch,
            )
        })
        .max()
        .unwrap_or(0);
    let n = pending + recompute;
    // Batch counts are far below 2^52: the conversion is exact.
    #[allow(clippy::cast_precision_loss)]
    let s = mean_ms.map(|m| m * n as f64);
    (n, s)
}

/// The restart progress the checkpointer records in every manifest (I-REC-6): the batches still
/// to run and the grid high-water mark `hwm` — every grid time in `(zero, hwm]` not in `pending`
/// has completed (or was skipped by the missed-batch policy, or cleaned up).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Generated or rescheduled, not completed.
    pub(crate) pending: BTreeSet<BatchTime>,
    /// The grid high-water mark (`None`: nothing generated yet, or a pre-`hwm` restore).
    pub(crate) hwm: Option<BatchTime>,
    /// The rescheduled batches of this run not completed yet (catch-up while non-empty).
    pub(crate) rescheduled: BTreeSet<BatchTime>,
    /// Pending coalesced batches (`missed_batches = coalesce`): batch time → the first grid time
    /// it covers. Recorded in every manifest (`source_positions["coalesced"]`).
    pub(crate) spans: BTreeMap<BatchTime, BatchTime>,
}

impl Progress {
    /// Recovery step 5: the restart's schedule is pending from now on, and every grid time before
    /// its first timer tick is accounted for (run, skipped or cleaned up).
    pub(crate) fn on_restart(&mut self, s: &RestartSchedule, batch: DurationMs) {
        self.pending.extend(s.times.iter().copied());
        self.rescheduled = s.times.iter().copied().collect();
        self.spans.extend(
            s.coalesced
                .iter()
                .map(|c| (BatchTime(c.batch), BatchTime(c.from))),
        );
        let last = BatchTime(s.restart_time.0.saturating_sub(batch.0));
        self.hwm = self.hwm.max(Some(last));
    }

    /// Step 3: `t` is generated.
    pub(crate) fn on_generated(&mut self, t: BatchTime) {
        self.pending.insert(t);
        self.hwm = self.hwm.max(Some(t));
    }

    /// `t`'s jobs ran: returns the oldest batch still pending and whether `t` was rescheduled.
    pub(crate) fn on_done(&mut self, t: BatchTime) -> (Option<BatchTime>, bool) {
        self.pending.remove(&t);
        self.spans.remove(&t);
        let catch_up = self.rescheduled.remove(&t);
        (self.pending.first().copied(), catch_up)
    }
}

/// The restored position of a manifest (I-REC-6): the newest batch time through which every grid
/// time has completed — the grid time before the oldest one a pending batch covers (its own time,
/// or the first of its coalesced span in `spans`), else the high-water mark, else (a manifest
/// without one) its batch time.
pub(crate) fn restored_through(
    pending: &[BatchTime],
    spans: &BTreeMap<BatchTime, BatchTime>,
    hwm: Option<BatchTime>,
    checkpoint_time: BatchTime,
    batch: DurationMs,
) -> BatchTime {
    match pending
        .iter()
        .map(|p| spans.get(p).copied().unwrap_or(*p).min(*p))
        .min()
    {
        Some(p) => BatchTime(p.0.saturating_sub(batch.0)),
        None => hwm.unwrap_or(checkpoint_time),
    }
}

/// What a restart needs to know to schedule its batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RestartFacts {
    /// Zero time of the restored grid.
    pub(crate) zero: BatchTime,
    /// The batch interval.
    pub(crate) batch: DurationMs,
    /// The restored checkpoint's batch time.
    pub(crate) checkpoint_time: BatchTime,
    /// Batches the checkpoint lists as generated but not completed.
    pub(crate) pending: Vec<BatchTime>,
    /// Batches after the checkpoint the WAL shows were generated.
    pub(crate) recorded: BTreeSet<BatchTime>,
    /// The newest batch whose inputs were cleaned up.
    pub(crate) cleaned_through: Option<BatchTime>,
    /// The missed-batch policy (after the graph's veto, [`coalesce_veto`]).
    pub(crate) policy: CatchUp,
    /// The checkpoint's grid high-water mark ([`Progress::hwm`]); `None` for a manifest written
    /// before it was recorded (then Spark's rule, [`restart_schedule`]).
    pub(crate) hwm: Option<BatchTime>,
    /// Its pending coalesced batches ([`Progress::spans`]): they re-run as recorded, and the
    /// schedule lists their spans again.
    pub(crate) spans: BTreeMap<BatchTime, BatchTime>,
}

/// The restart schedule (recovery step 5, I-REC-3, I-REC-6): with a high-water mark, the pending
/// batches and the grid times after it ([`restart_schedule_after`]); without one, Spark's rule
/// ([`restart_schedule`]). Both as of `now_ms`, less the
/// batches at or before `cleaned_through` — completed before the crash with their inputs cleaned up
/// since (a fallback to an older checkpoint): re-running them would emit wrong outputs.
pub(crate) fn plan_restart(facts: &RestartFacts, now_ms: u64) -> RestartSchedule {
    let mut s = match facts.hwm {
        Some(hwm) => crate::recovery::restart_schedule_after(
            facts.zero,
            facts.batch,
            hwm,
            &facts.pending,
            &facts.recorded,
            now_ms,
            facts.policy,
        ),
        None => restart_schedule(
            facts.zero,
            facts.batch,
            facts.checkpoint_time,
            &facts.pending,
            &facts.recorded,
            now_ms,
            facts.policy,
        ),
    };
    if let Some(ct) = facts.cleaned_through {
        let (gone, keep): (Vec<BatchTime>, Vec<BatchTime>) =
            s.times.iter().partition(|t| **t <= ct);
        s.times = keep;
        s.skipped.extend(gone);
        s.skipped.sort_unstable();
        s.coalesced.retain(|c| c.batch > ct.0);
    }
    let b = facts.batch.0.max(1);
    for (batch, from) in &facts.spans {
        if s.times.contains(batch) && from < batch {
            s.coalesced.push(crate::recovery::CoalescedSpan {
                from: from.0,
                batch: batch.0,
                times: (batch.0 - from.0) / b + 1,
            });
        }
    }
    s.coalesced.sort_by_key(|c| c.batch);
    s
}

/// What [`coalesce_veto`] knows of one operator of the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MergeFacts {
    /// Operator id and kind (`window`, `update_state_by_key`, ...), for the reason.
    pub(crate) id: OperatorId,
    pub(crate) kind: &'static str,
    /// Its slide and window, ms.
    pub(crate) slide: DurationMs,
    pub(crate) window: Option<DurationMs>,
    /// Why merging two of its batches could change its result (`None`: it does not).
    pub(crate) unsafe_reason: Option<&'static str>,
}

/// `missed_batches = coalesce` for this graph (docs/recovery.md "Bounded catch-up"): `Ok(max
/// span in grid times)`, or `Err(reason)` when per-batch boundaries matter — a windowed operator
/// (window or slide other than the batch interval), or an operator that declares merging unsafe
/// (`map_with_state`, an `update_state_by_key` not declared coalescable). The span is the shortest
/// of `input_spans` (the longest span one batch of a replayable input may cover and still select
/// all of its input: a file source's remember window) over the batch interval, at least 1;
/// unbounded without one.
pub(crate) fn coalesce_veto(
    nodes: &[MergeFacts],
    input_spans: &[DurationMs],
    batch: DurationMs,
) -> Result<u64, String> {
    let b = batch.0.max(1);
    let mut span = u64::MAX;
    for n in nodes {
        if let Some(reason) = n.unsafe_reason {
            return Err(format!("{} (operator {}): {reason}", n.kind, n.id.0));
        }
        if n.slide.0 != b || n.window.is_some_and(|w| w.0 != b) {
            return Err(format!(
                "{} (operator {}) is windowed (slide {} ms, window {} ms, batch {b} ms): windows \
                 keep per-batch boundaries",
                n.kind,
                n.id.0,
                n.slide.0,
                n.window.map_or(n.slide.0, |w| w.0)
            ));
        }
    }
    for m in input_spans {
        span = span.min((m.0 / b).max(1));
    }
    Ok(span)
}

/// What the WAL directory holds at a start with no checkpoint to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalFacts {
    /// Segment files in it.
    pub(crate) segments: u64,
    /// Valid records in it, if it has been read (`get_or_create` decides before opening it, so
    /// that refusing modifies nothing: opening repairs a torn tail).
    pub(crate) records: Option<u64>,
}

/// I-REC-2: a WAL that may hold records no manifest covers, at a start with nothing to restore.
/// Known records decide; unread, any segment may hold some.
pub(crate) fn orphan_wal(wal: WalFacts) -> bool {
    match wal.records {
        Some(r) => r > 0,
        None => wal.segments > 0,
    }
}

/// What resolving the checkpoint location found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CheckpointFacts {
    /// No manifest at all.
    Absent,
    /// Manifests, none of which verifies.
    NoneValid,
    /// A manifest that verifies and is compatible with this build, the WAL replayed against it.
    Found {
        /// The schedule's facts.
        restart: RestartFacts,
        /// Per stateful operator, the time of its state in the manifest (`None`: it has none).
        state: Vec<(OperatorId, Option<BatchTime>)>,
        /// The time the schedule is computed for, ms.
        now_ms: u64,
    },
}

/// Everything `get_or_create` decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecoveryFacts {
    /// What resolution found.
    pub(crate) checkpoint: CheckpointFacts,
    /// `create_on_error`: archive (never delete) what cannot be used and start fresh.
    pub(crate) create_on_error: bool,
    /// The WAL directory (read for `Absent` and `NoneValid`).
    pub(crate) wal: WalFacts,
}

/// Why a recovery refuses to start; nothing was restored or modified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Manifests exist but none verifies.
    NoValidCheckpoint,
    /// A WAL that no checkpoint covers (I-REC-2).
    OrphanWal(WalFacts),
    /// The checkpoint holds no state for a stateful operator.
    CheckpointHasNoState {
        /// The operator.
        operator: OperatorId,
    },
    /// An operator's state is older than the newest cleaned-up batch: restoring would lose inputs.
    CheckpointTooOld {
        /// The operator.
        operator: OperatorId,
        /// Its state's time.
        state_time: BatchTime,
        /// The newest cleaned-up batch.
        cleaned_through: BatchTime,
    },
}

/// What `get_or_create` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RecoveryDecision {
    /// Nothing to restore: a fresh context.
    Fresh,
    /// Archive what cannot be used (the store's manifests if `store`, the WAL if `wal`), then a
    /// fresh context.
    FreshAfterArchive {
        /// Archive the checkpoint location (manifests exist, none valid).
        store: bool,
        /// Archive the WAL directory, if it exists.
        wal: bool,
    },
    /// Refuse, modifying nothing.
    Refuse(Refusal),
    /// Restore, then run `schedule` before the timer resumes.
    Restore {
        /// The batches to run and the missed ones skipped.
        schedule: RestartSchedule,
    },
}

/// Plans a `get_or_create` (recovery steps 1, 3, 4, 5; docs/recovery.md): I-REC-2 for a start with
/// nothing to restore, a state no older than the WAL's cleaned-up inputs, and the I-REC-3 schedule.
pub(crate) fn plan_recovery(facts: &RecoveryFacts) -> RecoveryDecision {
    match &facts.checkpoint {
        CheckpointFacts::NoneValid if !facts.create_on_error => {
            RecoveryDecision::Refuse(Refusal::NoValidCheckpoint)
        }
        CheckpointFacts::NoneValid => RecoveryDecision::FreshAfterArchive {
            store: true,
            wal: true,
        },
        CheckpointFacts::Absent if !orphan_wal(facts.wal) => RecoveryDecision::Fresh,
        CheckpointFacts::Absent if facts.create_on_error => RecoveryDecision::FreshAfterArchive {
            store: false,
            wal: true,
        },
        CheckpointFacts::Absent => RecoveryDecision::Refuse(Refusal::OrphanWal(facts.wal)),
        CheckpointFacts::Found {
            restart,
            state,
            now_ms,
        } => match plan_restore(restart, state, *now_ms) {
            Ok(schedule) => RecoveryDecision::Restore { schedule },
            Err(r) => RecoveryDecision::Refuse(r),
        },
    }
}

/// The restore branch of [`plan_recovery`] (recovery steps 4–5): every stateful operator needs
/// its state in the checkpoint, no older than the newest batch whose inputs the WAL cleaned up
/// (I-FT-1); then the I-REC-3 schedule as of `now_ms`.
fn plan_restore(
    restart: &RestartFacts,
    state: &[(OperatorId, Option<BatchTime>)],
    now_ms: u64,
) -> Result<RestartSchedule, Refusal> {
    for (operator, time) in state {
        let Some(state_time) = *time else {
            return Err(Refusal::CheckpointHasNoState {
                operator: *operator,
            });
        };
        if let Some(ct) = restart.cleaned_through.filter(|ct| *ct > state_time) {
            return Err(Refusal::CheckpointTooOld {
                operator: *operator,
                state_time,
                cleaned_through: ct,
            });
        }
    }
    Ok(plan_restart(restart, now_ms))
}

#[cfg(test)]
mod tests;
