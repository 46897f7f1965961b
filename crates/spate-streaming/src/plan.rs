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

use crate::config::MissedBatches;
use crate::recovery::{restart_schedule, RestartSchedule};
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
}

impl Progress {
    /// Recovery step 5: the restart's schedule is pending from now on, and every grid time before
    /// its first timer tick is accounted for (run, skipped or cleaned up).
    pub(crate) fn on_restart(&mut self, s: &RestartSchedule, batch: DurationMs) {
        self.pending.extend(s.times.iter().copied());
        self.rescheduled = s.times.iter().copied().collect();
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
        let catch_up = self.rescheduled.remove(&t);
        (self.pending.first().copied(), catch_up)
    }
}

/// The restored position of a manifest (I-REC-6): the newest batch time through which every grid
/// time has completed — the batch before the oldest pending one, else the high-water mark, else
/// (a manifest without one) its batch time.
pub(crate) fn restored_through(
    pending: &[BatchTime],
    hwm: Option<BatchTime>,
    checkpoint_time: BatchTime,
    batch: DurationMs,
) -> BatchTime {
    match pending.iter().min() {
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
    /// The missed-batch policy.
    pub(crate) policy: MissedBatches,
    /// The checkpoint's grid high-water mark ([`Progress::hwm`]); `None` for a manifest written
    /// before it was recorded (then Spark's rule, [`restart_schedule`]).
    pub(crate) hwm: Option<BatchTime>,
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
    }
    s
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
mod tests {
    use super::*;

    fn ts(v: &[u64]) -> Vec<BatchTime> {
        v.iter().map(|t| BatchTime(*t)).collect()
    }

    fn op(id: u32, slide: u64, interval: u64, chain: Option<(u64, u32, Option<u64>)>) -> OpFacts {
        OpFacts {
            id: OperatorId(id),
            slide: DurationMs(slide),
            interval: DurationMs(interval),
            partitions: 2,
            chain: chain.map(|(time, deltas, previous)| ChainFacts {
                time: BatchTime(time),
                deltas,
                partitions: 2,
                previous: previous.map(BatchTime),
            }),
        }
    }

    fn facts(ops: &[OpFacts], pending: Option<u64>, remember: u64) -> CompletionFacts<'_> {
        CompletionFacts {
            zero: BatchTime(0),
            batch: DurationMs(1000),
            max_remember: remember,
            checkpointing: true,
            oldest_pending: pending.map(BatchTime),
            snapshot_every: 3,
            ops,
            catch_up: false,
            since_data_checkpoint_ms: None,
            max_recovery_batches: 0,
        }
    }

    /// I-REC-6: (case, t, catch_up, max_recovery_batches, commit, due operator ids with snapshot?)
    #[test]
    fn catch_up_and_bounded_recovery_force_data_checkpoints() {
        // Chain at 2000 (a snapshot + 1 delta), data-checkpoint interval 10 s, slide 1 s.
        let one = [op(1, 1000, 10_000, Some((2000, 1, None)))];
        let slow = [op(1, 2000, 10_000, Some((2000, 1, None)))];
        let stateless: [OpFacts; 0] = [];
        let cases = [
            (
                "off the interval, not catching up: metadata only",
                5000,
                &one[..],
                false,
                0,
                CompletionCommit::Completed,
                vec![],
            ),
            (
                "a rescheduled batch: a delta on the chain",
                5000,
                &one[..],
                true,
                0,
                CompletionCommit::Data,
                vec![(1, false)],
            ),
            (
                "a rescheduled batch within a batch interval of the last data checkpoint",
                5000,
                &one[..],
                true,
                999,
                CompletionCommit::Completed,
                vec![],
            ),
            (
                "a rescheduled batch a batch interval after the last data checkpoint: a delta",
                5000,
                &one[..],
                true,
                1000,
                CompletionCommit::Data,
                vec![(1, false)],
            ),
            (
                "a rescheduled batch off the operator's slide grid: no state to write",
                5000,
                &slow[..],
                true,
                0,
                CompletionCommit::Completed,
                vec![],
            ),
            (
                "a stateless rescheduled batch: nothing to write",
                5000,
                &stateless[..],
                true,
                0,
                CompletionCommit::Completed,
                vec![],
            ),
            (
                "max_recovery_batches: 3 batches to recompute reach a bound of 3",
                5000,
                &one[..],
                false,
                3,
                CompletionCommit::Data,
                vec![(1, false)],
            ),
            (
                "max_recovery_batches: 2 batches to recompute stay under 3",
                4000,
                &one[..],
                false,
                3,
                CompletionCommit::Completed,
                vec![],
            ),
        ];
        for (case, t, ops, catch_up, n, commit, due) in cases {
            // `n`: the bound when not catching up, else the wall time since this process's last
            // data checkpoint (0: none yet).
            let f = CompletionFacts {
                catch_up,
                since_data_checkpoint_ms: (catch_up && n > 0).then_some(n),
                max_recovery_batches: if catch_up { 0 } else { n },
                ..facts(ops, None, 0)
            };
            let p = plan_completion(BatchTime(t), &f);
            assert_eq!((p.commit, due_of(&p)), (commit, due), "{case}");
        }
    }

    /// (case, t = oldest batch to run, pending, chains, mean ms, expected batches, expected ms)
    #[test]
    fn replay_estimates() {
        let c = |time| {
            Some(ChainFacts {
                time: BatchTime(time),
                deltas: 0,
                partitions: 2,
                previous: None,
            })
        };
        let cases = [
            (
                "stateless: the pending batches",
                5000,
                2,
                vec![],
                Some(10.0),
                2,
                Some(20.0),
            ),
            (
                "a chain at 2000: 3000 and 4000 recompute before 5000 runs",
                5000,
                1,
                vec![c(2000)],
                Some(10.0),
                3,
                Some(30.0),
            ),
            (
                "the longest chain counts; no measurement yet",
                5000,
                1,
                vec![c(4000), None],
                None,
                5,
                None,
            ),
        ];
        for (case, t, pending, chains, mean, n, ms) in cases {
            let got = replay_estimate(
                BatchTime(t),
                pending,
                &chains,
                BatchTime(0),
                DurationMs(1000),
                mean,
            );
            assert_eq!(got, (n, ms), "{case}");
        }
    }

    /// docs/reliability.md problem 2, reproduced over the planners: the catch-up of a restart
    /// publishes "T generated" for its newest rescheduled batch, then "T' completed" for its
    /// oldest one, named after it. Without a high-water mark the newer manifest restores an older
    /// batch time and Spark's rule re-runs the completed batch `T'`, so the next generation's
    /// first manifest lists it pending again: the restored position moves back. With the
    /// high-water mark (I-REC-6) it does not.
    #[test]
    fn restored_position_moves_back_without_high_water_mark() {
        let b = DurationMs(1000);
        // Generation 1 restored at 10 000 and rescheduled 11 000..=20 000 (all generated, so the
        // newest manifest was "20 000 generated", pending all of them), then completed 11 000.
        let generated = (
            BatchTime(20_000),
            ts(&(11..=20).map(|i| i * 1000).collect::<Vec<_>>()),
        );
        let completed = (
            BatchTime(11_000),
            ts(&(12..=20).map(|i| i * 1000).collect::<Vec<_>>()),
        );
        // The restored checkpoint's batch time goes 20 000 → 11 000 between the two manifests.
        assert!(completed.0 < generated.0);
        let through = |pending: &[BatchTime], hwm, t| restored_through(pending, hwm, t, b);
        let before = through(&completed.1, None, completed.0);
        assert_eq!(before, BatchTime(11_000));
        let facts = |hwm| RestartFacts {
            zero: BatchTime(0),
            batch: b,
            checkpoint_time: completed.0,
            pending: completed.1.clone(),
            recorded: BTreeSet::new(),
            cleaned_through: None,
            policy: MissedBatches::GenerateAll,
            hwm,
        };
        let next_through = |hwm| {
            let s = plan_restart(&facts(hwm), 21_500);
            let mut p = Progress {
                hwm,
                ..Progress::default()
            };
            p.on_restart(&s, b);
            let pending: Vec<BatchTime> = p.pending.iter().copied().collect();
            (s.times, through(&pending, p.hwm, completed.0))
        };
        // Today's rule: 11 000 (completed) runs again, the position moves back to 10 000.
        let (times, after) = next_through(None);
        assert_eq!(times.first(), Some(&BatchTime(11_000)));
        assert_eq!(after, BatchTime(10_000));
        assert!(after < before);
        // With the high-water mark: pending ∪ (20 000, now], the position holds.
        let (times, after) = next_through(Some(BatchTime(20_000)));
        assert_eq!(
            times,
            ts(&[12_000, 13_000, 14_000, 15_000, 16_000, 17_000, 18_000, 19_000, 20_000, 21_000])
        );
        assert_eq!(after, BatchTime(11_000));
    }

    /// (case, t, facts, commit, due operator ids with snapshot?, cleanup_before)
    /// The due operators of a plan as `(operator id, is a snapshot)`.
    fn due_of(p: &CompletionPlan) -> Vec<(u32, bool)> {
        p.due_ops
            .iter()
            .map(|d| (d.id.0, d.snapshot_or_delta.is_snapshot()))
            .collect()
    }

    #[test]
    fn completion_plans() {
        let stateless: [OpFacts; 0] = [];
        let one = [op(1, 1000, 2000, Some((2000, 0, None)))];
        let two = [
            op(1, 1000, 2000, Some((2000, 2, Some(0)))),
            op(2, 2000, 4000, Some((0, 0, None))),
        ];
        let three = [
            op(1, 1000, 2000, Some((2000, 2, Some(0)))),
            op(2, 3000, 3000, Some((0, 0, None))),
        ];
        let rerun = [op(1, 1000, 2000, Some((4000, 0, Some(2000))))];
        type Case<'a> = (
            &'a str,
            u64,
            CompletionFacts<'a>,
            CompletionCommit,
            Vec<(u32, bool)>,
            u64,
        );
        let no_ckpt = CompletionFacts {
            checkpointing: false,
            ..facts(&one, Some(1000), 2000)
        };
        let cases: Vec<Case<'_>> = vec![
            (
                "step 7 without checkpointing: forget what remember durations no longer need, now",
                5000,
                no_ckpt,
                CompletionCommit::None,
                vec![],
                3000,
            ),
            (
                "step 6: a stateless batch is a Completed checkpoint; cleanup keeps the remember \
                 duration",
                5000,
                facts(&stateless, None, 2000),
                CompletionCommit::Completed,
                vec![],
                3000,
            ),
            (
                "I-REC-4: cleanup never passes the oldest pending batch",
                5000,
                facts(&stateless, Some(2000), 0),
                CompletionCommit::Completed,
                vec![],
                2000,
            ),
            (
                "step 5: off the data-checkpoint grid there is no data checkpoint, and the state \
                 floor (chain time + one batch) bounds cleanup",
                3000,
                facts(&one, None, 0),
                CompletionCommit::Completed,
                vec![],
                3000,
            ),
            (
                "step 5: on the grid, a delta on the chain (1 delta < snapshot_every 3 - 1); the \
                 floor after the commit is the previous data checkpoint + one batch",
                4000,
                facts(&one, None, 0),
                CompletionCommit::Data,
                vec![(1, false)],
                3000,
            ),
            (
                "step 5: every snapshot_every-th data checkpoint is a snapshot; operators on their \
                 slide grid join the cut although not on their own interval",
                4000,
                facts(&two, None, 0),
                CompletionCommit::Data,
                vec![(1, true), (2, false)],
                1000,
            ),
            (
                "step 5: an operator off its slide grid stays out of the cut",
                4000,
                facts(&three, None, 0),
                CompletionCommit::Data,
                vec![(1, true)],
                1000,
            ),
            (
                "recovery step 5: a batch re-run after a restore from its own data checkpoint is \
                 not written again",
                4000,
                facts(&rerun, None, 0),
                CompletionCommit::Completed,
                vec![],
                3000,
            ),
            (
                "batch at zero time is never on a grid",
                0,
                facts(&one, None, 0),
                CompletionCommit::Completed,
                vec![],
                0,
            ),
        ];
        for (case, t, f, commit, due, before) in cases {
            let p = plan_completion(BatchTime(t), &f);
            assert_eq!((p.commit, due_of(&p)), (commit, due), "{case}");
            assert_eq!(p.cleanup_before, BatchTime(before), "{case}");
        }
    }

    #[test]
    fn snapshot_or_delta_rules() {
        let c = |deltas, partitions| ChainFacts {
            time: BatchTime(2000),
            deltas,
            partitions,
            previous: None,
        };
        // (case, chain, partitions now, every, expected)
        let cases = [
            (
                "step 5: no chain: snapshot",
                None,
                2,
                3,
                SnapshotOrDelta::Snapshot,
            ),
            (
                "step 5: a delta on the chain",
                Some(c(0, 2)),
                2,
                3,
                SnapshotOrDelta::Delta {
                    base: BatchTime(2000),
                },
            ),
            (
                "step 5: the k-th is a snapshot",
                Some(c(2, 2)),
                2,
                3,
                SnapshotOrDelta::Snapshot,
            ),
            (
                "step 5: repartitioned: snapshot",
                Some(c(0, 4)),
                2,
                3,
                SnapshotOrDelta::Snapshot,
            ),
            (
                "step 5: snapshot_every 0 means every one is a snapshot",
                Some(c(0, 2)),
                2,
                0,
                SnapshotOrDelta::Snapshot,
            ),
        ];
        for (case, chain, partitions, every, want) in cases {
            assert_eq!(
                snapshot_or_delta(chain.as_ref(), partitions, every),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn wal_truncation_bounds() {
        // (case, next, batch lsns, block lsns, bound)
        let cases: [(&str, u64, &[u64], &[u64], u64); 4] = [
            ("I-REC-4: nothing retained: the whole WAL", 50, &[], &[], 50),
            (
                "I-REC-4: the first record of the oldest retained batch stays",
                50,
                &[30, 20],
                &[],
                20,
            ),
            (
                "I-REC-4 / I-REC-1: a referenced (allocated or unallocated) block stays",
                50,
                &[30],
                &[10, 40],
                10,
            ),
            ("never beyond the WAL's end", 5, &[30], &[40], 5),
        ];
        for (case, next, batches, blocks, want) in cases {
            let got = wal_truncate_below(
                Lsn(next),
                batches.iter().map(|l| Lsn(*l)),
                blocks.iter().map(|l| Lsn(*l)),
            );
            assert_eq!(got, Lsn(want), "{case}");
        }
    }

    #[test]
    fn replayed_batches_are_read_against_the_checkpoint() {
        use crate::tracker::AllocatedBlocks;
        let alloc = |t: u64| TrackerEvent::BatchAllocated {
            time: BatchTime(t),
            blocks: AllocatedBlocks::default(),
        };
        let events = vec![
            (Lsn(1), alloc(1000)),
            (Lsn(2), alloc(2000)),
            (Lsn(3), alloc(3000)),
            (Lsn(4), TrackerEvent::BatchCleanup { times: ts(&[1000]) }),
        ];
        let allocated: BTreeSet<BatchTime> = ts(&[2000, 3000]).into_iter().collect();
        let r = replayed_batches(
            BatchTime(2000),
            &events,
            [(Lsn(5), BatchTime(2000)), (Lsn(6), BatchTime(4000))],
            &allocated,
        );
        // Recovery step 3: generated after the checkpoint.
        assert_eq!(r.recorded, ts(&[3000, 4000]).into_iter().collect());
        // A cleaned-up allocation keeps no LSN (I-REC-4); selections from the checkpoint on do.
        assert_eq!(r.cleaned_through, Some(BatchTime(1000)));
        let lsns: Vec<(u64, u64)> = r.batch_lsns.iter().map(|(t, l)| (t.0, l.0)).collect();
        assert_eq!(lsns, vec![(2000, 2), (3000, 3), (4000, 6)]);
    }

    fn restart(cleaned: Option<u64>) -> RestartFacts {
        RestartFacts {
            zero: BatchTime(0),
            batch: DurationMs(1000),
            checkpoint_time: BatchTime(3000),
            pending: ts(&[4000]),
            recorded: BTreeSet::new(),
            cleaned_through: cleaned.map(BatchTime),
            policy: MissedBatches::GenerateAll,
            hwm: None,
        }
    }

    #[test]
    fn recovery_decisions() {
        let empty = WalFacts {
            segments: 0,
            records: None,
        };
        let segs = WalFacts {
            segments: 2,
            records: None,
        };
        let found = |cleaned: Option<u64>, state: Vec<(u32, Option<u64>)>| CheckpointFacts::Found {
            restart: restart(cleaned),
            state: state
                .into_iter()
                .map(|(o, t)| (OperatorId(o), t.map(BatchTime)))
                .collect(),
            now_ms: 6500,
        };
        let schedule = |times: &[u64], skipped: &[u64]| RecoveryDecision::Restore {
            schedule: RestartSchedule {
                times: ts(times),
                skipped: ts(skipped),
                restart_time: BatchTime(7000),
            },
        };
        // (case, checkpoint, create_on_error, wal, decision)
        let cases = vec![
            (
                "recovery step 1: no checkpoint, no WAL: fresh",
                CheckpointFacts::Absent,
                false,
                empty,
                RecoveryDecision::Fresh,
            ),
            (
                "I-REC-2: no checkpoint but WAL segments: refused",
                CheckpointFacts::Absent,
                false,
                segs,
                RecoveryDecision::Refuse(Refusal::OrphanWal(segs)),
            ),
            (
                "I-REC-2: create_on_error archives the orphan WAL",
                CheckpointFacts::Absent,
                true,
                segs,
                RecoveryDecision::FreshAfterArchive {
                    store: false,
                    wal: true,
                },
            ),
            (
                "recovery step 1: manifests, none valid: refused",
                CheckpointFacts::NoneValid,
                false,
                segs,
                RecoveryDecision::Refuse(Refusal::NoValidCheckpoint),
            ),
            (
                "recovery step 1: none valid with create_on_error: archive the store and the WAL",
                CheckpointFacts::NoneValid,
                true,
                segs,
                RecoveryDecision::FreshAfterArchive {
                    store: true,
                    wal: true,
                },
            ),
            (
                "recovery step 1: none valid with create_on_error: the WAL directory goes too",
                CheckpointFacts::NoneValid,
                true,
                empty,
                RecoveryDecision::FreshAfterArchive {
                    store: true,
                    wal: true,
                },
            ),
            (
                "I-REC-3: restore runs (pending ∪ [checkpoint, restart)) ∩ grid",
                found(None, vec![]),
                false,
                segs,
                schedule(&[3000, 4000, 5000, 6000], &[]),
            ),
            (
                "I-REC-3: batches whose inputs were cleaned up are skipped, not re-run",
                found(Some(4000), vec![(1, Some(4000))]),
                false,
                segs,
                schedule(&[5000, 6000], &[3000, 4000]),
            ),
            (
                "recovery step 4: a stateful operator needs its state in the checkpoint",
                found(None, vec![(1, None)]),
                false,
                segs,
                RecoveryDecision::Refuse(Refusal::CheckpointHasNoState {
                    operator: OperatorId(1),
                }),
            ),
            (
                "recovery step 4 / I-FT-1: state older than the cleaned-up inputs: too old",
                found(Some(4000), vec![(1, Some(3000))]),
                true,
                segs,
                RecoveryDecision::Refuse(Refusal::CheckpointTooOld {
                    operator: OperatorId(1),
                    state_time: BatchTime(3000),
                    cleaned_through: BatchTime(4000),
                }),
            ),
        ];
        for (case, checkpoint, create_on_error, wal, want) in cases {
            let got = plan_recovery(&RecoveryFacts {
                checkpoint,
                create_on_error,
                wal,
            });
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn orphan_rule_counts_records_once_read() {
        // I-REC-2: (case, segments, records, orphan)
        let cases = [
            ("unread, no segment", 0, None, false),
            ("unread, a segment may hold records", 1, None, true),
            ("read, an empty segment covers nothing", 1, Some(0), false),
            ("read, records no manifest covers", 1, Some(3), true),
        ];
        for (case, segments, records, want) in cases {
            assert_eq!(orphan_wal(WalFacts { segments, records }), want, "{case}");
        }
    }

    /// I-REC-6 as a property over seeded kill schedules, simulated over the planners the engine
    /// runs ([`plan_restart`], [`Progress`], [`restored_through`]): a generation restores the
    /// newest manifest, generates its rescheduled batches (one "generated" manifest each), runs
    /// them in order (one "completed" manifest each), then the timer's; a kill after a random
    /// number of steps and a random outage loses nothing durable. Across restarts the restored
    /// position never moves back, a generation that completed a batch advances it, and no grid
    /// time up to the final position is lost.
    mod kill_schedules {
        use super::*;
        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        struct M {
            batch_time: BatchTime,
            pending: Vec<BatchTime>,
            hwm: Option<BatchTime>,
        }

        fn publish(ms: &mut Vec<M>, t: BatchTime, p: &Progress) {
            ms.push(M {
                batch_time: t,
                pending: p.pending.iter().copied().collect(),
                hwm: p.hwm,
            });
        }

        proptest! {
            #[test]
            fn restored_position_is_monotone(
                kills in proptest::collection::vec((0usize..40, 0u64..5000), 1..30)
            ) {
                let b = DurationMs(1000);
                let zero = BatchTime(0);
                let mut now = 500u64;
                let mut ms = vec![M { batch_time: zero, pending: vec![], hwm: Some(zero) }];
                let mut completed = BTreeSet::new();
                let mut last_through = BatchTime(0);
                for (steps, outage) in kills {
                    let m = ms.last().cloned().expect("a manifest");
                    let through = restored_through(&m.pending, m.hwm, m.batch_time, b);
                    prop_assert!(through >= last_through, "moved back {last_through:?} -> {through:?}");
                    last_through = through;
                    let facts = RestartFacts {
                        zero,
                        batch: b,
                        checkpoint_time: m.batch_time,
                        pending: m.pending.clone(),
                        recorded: BTreeSet::new(),
                        cleaned_through: None,
                        policy: MissedBatches::GenerateAll,
                        hwm: m.hwm,
                    };
                    let s = plan_restart(&facts, now);
                    let mut p = Progress { hwm: m.hwm, ..Progress::default() };
                    p.on_restart(&s, b);
                    // Steps: generate each rescheduled batch, then complete them in order, then
                    // the timer's batches (generate + complete); each step costs 300 ms.
                    let mut left = steps;
                    let mut done_any = false;
                    let step = |left: &mut usize, now: &mut u64| {
                        if *left == 0 { return false; }
                        *left -= 1;
                        *now += 300;
                        true
                    };
                    let mut alive = true;
                    for t in &s.times {
                        if !step(&mut left, &mut now) { alive = false; break; }
                        p.on_generated(*t);
                        publish(&mut ms, *t, &p);
                    }
                    if alive {
                        for t in &s.times {
                            if !step(&mut left, &mut now) { alive = false; break; }
                            p.on_done(*t);
                            completed.insert(*t);
                            done_any = true;
                            publish(&mut ms, *t, &p);
                        }
                    }
                    let mut next = s.restart_time;
                    while alive {
                        if !step(&mut left, &mut now) { alive = false; continue; }
                        // The timer waits for the batch time.
                        now = now.max(next.0);
                        p.on_generated(next);
                        publish(&mut ms, next, &p);
                        if !step(&mut left, &mut now) { alive = false; continue; }
                        p.on_done(next);
                        completed.insert(next);
                        done_any = true;
                        publish(&mut ms, next, &p);
                        next = next.plus(b);
                    }
                    let m2 = ms.last().expect("a manifest");
                    let after = restored_through(&m2.pending, m2.hwm, m2.batch_time, b);
                    if done_any {
                        prop_assert!(after > through, "a completed batch made no progress");
                    }
                    now += outage;
                }
                let m = ms.last().expect("a manifest");
                let through = restored_through(&m.pending, m.hwm, m.batch_time, b);
                let mut t = b.0;
                while t <= through.0 {
                    prop_assert!(completed.contains(&BatchTime(t)), "batch {t} lost");
                    t += b.0;
                }
            }
        }
    }
}
