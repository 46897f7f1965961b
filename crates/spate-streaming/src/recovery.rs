//! `get_or_create`: recovery from a checkpoint (Spark's `StreamingContext.getOrCreate` +
//! `CheckpointReader` + `JobGenerator.restart`), with a compatibility check Spark does not make and
//! a restart report it does not write.
//!
//! Recovery steps (docs/design/0001-fault-tolerance.md, "Recovery"):
//! 1. resolve the newest verifying manifest, falling back past damaged ones (reported);
//! 2. build the graph with the user's closure and compare it with the checkpoint's
//!    ([`crate::compat`]); any difference → [`StreamingError::IncompatibleCheckpoint`];
//! 3. replay the WAL (torn tail truncated and reported) into the block tracker and the inputs;
//! 4. restore every stateful operator's state from the checkpoint's data objects;
//! 5. at `start`, run `(pending ∪ [checkpoint time, restart time)) ∩ grid` in order
//!    ([`restart_schedule`]), each with its recorded allocation or selection, then resume the timer;
//! 6. write the [`RestartReport`] beside the checkpoint, return it, log it.

use crate::checkpointer::wal_dir;
use crate::config::{MissedBatches, StreamingConfig};
use crate::context::RestoreInput;
use crate::context::StreamingContext;
use crate::error::{Result, StreamingError};
use crate::plan::{
    plan_recovery, replayed_batches, CheckpointFacts, RecoveryDecision, RecoveryFacts, Refusal,
    RestartFacts, WalFacts,
};
use serde::{Deserialize, Serialize};
use spate_checkpoint::Manifest;
use spate_checkpoint::{BlockingCheckpointStore, CheckpointError, StoreOptions};
use spate_io::{Clock, SystemClock};
use spate_types::OperatorId;
use spate_types::{BatchTime, DurationMs};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// How a `get_or_create` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RestartOutcome {
    /// No checkpoint: a fresh context was built.
    Fresh,
    /// Nothing valid was found, the location was archived (`create_on_error`) and a fresh context
    /// was built.
    FreshAfterArchive,
    /// Restored from a checkpoint.
    Restored,
    /// The checkpoint is incompatible with this build; nothing was restored or modified.
    Incompatible,
    /// Manifests exist but none verifies and `create_on_error` is off; nothing was modified.
    NoValidCheckpoint,
}

/// The checkpoint recovery chose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChosenCheckpoint {
    /// Its manifest object.
    pub manifest: String,
    /// `Generated`, `Completed` or `Data`.
    pub kind: String,
    /// The batch time it is for, ms since the Unix epoch.
    pub batch_time: u64,
    /// The generation that wrote it.
    pub generation: u64,
    /// True if newer candidates were rejected (a fallback).
    pub fell_back: bool,
}

/// A candidate rejected during resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedCheckpoint {
    /// Its manifest object.
    pub manifest: String,
    /// Why.
    pub reason: String,
}

/// One stateful operator's restored state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateRestored {
    /// Operator id.
    pub operator: u32,
    /// `update_state_by_key` or `map_with_state`.
    pub kind: String,
    /// The batch time the state is as of (its newest data checkpoint), ms.
    pub time: u64,
    /// Keys restored.
    pub keys: u64,
    /// Objects read (snapshots and deltas over all partitions).
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
}

/// What WAL recovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecoverySummary {
    /// The WAL directory.
    pub dir: String,
    /// Segments found.
    pub segments: u64,
    /// Valid records replayed.
    pub records: u64,
    /// Bytes of a torn tail truncated (0 if none); the bytes are kept in `torn_tail_saved_to`.
    pub bytes_truncated: u64,
    /// The torn segment and offset, if any.
    pub torn_tail: Option<String>,
    /// Where the torn bytes were copied.
    pub torn_tail_saved_to: Option<String>,
}

/// What one `get_or_create` did and found, as JSON under `restart-reports/` beside the checkpoint,
/// in the log, and from [`StreamingContext::restart_report`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestartReport {
    /// Checkpoint location.
    pub url: String,
    /// Wall-clock time of the call, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// The verdict.
    pub outcome: RestartOutcome,
    /// The checkpoint restored (or compared, for `incompatible`).
    pub checkpoint: Option<ChosenCheckpoint>,
    /// Newer candidates rejected, with reasons.
    pub rejected: Vec<RejectedCheckpoint>,
    /// Compatibility differences (empty when compatible).
    pub compatibility: Vec<String>,
    /// Where damaged checkpoints / an orphan WAL were archived (`create_on_error`).
    pub archived: Vec<String>,
    /// WAL recovery.
    pub wal: WalRecoverySummary,
    /// Received blocks found in the WAL, and the records they hold.
    pub blocks_recovered: u64,
    /// Records in the recovered blocks.
    pub records_recovered: u64,
    /// Recovered blocks not yet allocated to a batch (they go to the first rescheduled batch).
    pub blocks_unallocated: u64,
    /// Replayable-source selections recovered from the WAL.
    pub selections_recovered: u64,
    /// Durable source position per receiver id (where an acknowledged source resumes).
    pub receiver_positions: BTreeMap<u32, u64>,
    /// State restored per stateful operator.
    #[serde(default)]
    pub state: Vec<StateRestored>,
    /// Zero time of the restored grid, ms.
    pub zero_time: Option<u64>,
    /// First timer tick after the restart (the next grid time after "now"), ms.
    pub restart_time: Option<u64>,
    /// Batches the checkpoint listed as generated but not completed, ms.
    pub pending_batches: Vec<u64>,
    /// Batches run again on restart, in order, ms.
    pub batches_rescheduled: Vec<u64>,
    /// Missed empty batches not generated (`missed_batches = coalesce_empty`), ms.
    pub batches_skipped: Vec<u64>,
    /// Runs of missed grid times merged into one batch each (`missed_batches = coalesce`): the
    /// batch at `batch` read the input of every grid time in `[from, batch]`, and only it wrote
    /// outputs (its time is in `batches_rescheduled`).
    #[serde(default)]
    pub batches_coalesced: Vec<CoalescedSpan>,
    /// Why `missed_batches = coalesce` was not applied to this graph (it ran as `generate_all`).
    #[serde(default)]
    pub coalesce_refused: Option<String>,
    /// The restored checkpoint's grid high-water mark (I-REC-6), ms; `None` for a manifest written
    /// before it was recorded.
    #[serde(default)]
    pub high_water_mark: Option<u64>,
    /// The restored position (I-REC-6): every grid time up to it had completed, ms. Monotone
    /// non-decreasing across restarts.
    #[serde(default)]
    pub restored_through: Option<u64>,
    /// "A crash now would replay N batches" at the restored checkpoint: the batches this restart
    /// runs plus the state recomputation they need.
    #[serde(default)]
    pub replay_batches: Option<u64>,
    /// Duration of each phase (`resolve`, `build`, `compare`, `wal_replay`, `restore`), ms.
    pub phases_ms: BTreeMap<String, f64>,
    /// The report object written, if the write succeeded.
    pub written_to: Option<String>,
}

impl RestartReport {
    fn new(url: &str, started_at_ms: u64) -> Self {
        RestartReport {
            url: url.to_owned(),
            started_at_ms,
            outcome: RestartOutcome::Fresh,
            checkpoint: None,
            rejected: Vec::new(),
            compatibility: Vec::new(),
            archived: Vec::new(),
            wal: WalRecoverySummary::default(),
            blocks_recovered: 0,
            records_recovered: 0,
            blocks_unallocated: 0,
            selections_recovered: 0,
            receiver_positions: BTreeMap::new(),
            state: Vec::new(),
            zero_time: None,
            restart_time: None,
            pending_batches: Vec::new(),
            batches_rescheduled: Vec::new(),
            batches_skipped: Vec::new(),
            batches_coalesced: Vec::new(),
            coalesce_refused: None,
            high_water_mark: None,
            restored_through: None,
            replay_batches: None,
            phases_ms: BTreeMap::new(),
            written_to: None,
        }
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        let ck = self.checkpoint.as_ref().map_or_else(
            || "none".to_owned(),
            |c| format!("{} ({} @ {})", c.manifest, c.kind, c.batch_time),
        );
        let coalesced: String = self
            .batches_coalesced
            .iter()
            .map(|c| format!(" {}..{}", c.from, c.batch))
            .collect();
        let coalesced = if coalesced.is_empty() {
            String::new()
        } else {
            format!("; coalesced{coalesced}")
        };
        format!(
            "{:?}: checkpoint {ck}; {} rejected; {} difference(s); WAL {} records, {} bytes truncated; \
             {} blocks ({} records) recovered, {} unallocated; {} batches rescheduled, {} skipped; \
             restored through {}{coalesced}",
            self.outcome,
            self.rejected.len(),
            self.compatibility.len(),
            self.wal.records,
            self.wal.bytes_truncated,
            self.blocks_recovered,
            self.records_recovered,
            self.blocks_unallocated,
            self.batches_rescheduled.len(),
            self.batches_skipped.len(),
            self.restored_through
                .map_or_else(|| "-".to_owned(), |t| t.to_string())
        )
    }
}

/// The batches a restart runs (Spark's `JobGenerator.restart`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartSchedule {
    /// Batch times to run before the timer resumes, ascending, deduplicated.
    pub times: Vec<BatchTime>,
    /// Missed times not generated (`coalesce_empty`, or cleaned up before the crash).
    pub skipped: Vec<BatchTime>,
    /// Runs of missed times merged into one batch each (`coalesce`), ascending.
    pub coalesced: Vec<CoalescedSpan>,
    /// The timer's first tick: the next grid time strictly after `now`.
    pub restart_time: BatchTime,
}

/// A run of consecutive missed grid times that a restart ran as one batch
/// (`missed_batches = coalesce`): the batch at `batch` reads the input of every grid time in
/// `[from, batch]` and is the only one of them with outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoalescedSpan {
    /// The first grid time covered, ms.
    pub from: u64,
    /// The batch time that ran (the last grid time covered), ms.
    pub batch: u64,
    /// Grid times covered (`(batch − from) / batch interval + 1`).
    pub times: u64,
}

/// The missed-batch policy one restart applies: the configured one after the graph's veto
/// ([`crate::plan::coalesce_veto`]), and for `coalesce` the longest run merged into one batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CatchUp {
    /// The policy.
    pub(crate) policy: MissedBatches,
    /// `coalesce`: at most this many grid times per merged batch (≥ 1; the shortest remember
    /// window of the graph's replayable inputs over the batch interval).
    pub(crate) max_span: u64,
}

impl From<MissedBatches> for CatchUp {
    fn from(policy: MissedBatches) -> Self {
        CatchUp {
            policy,
            max_span: u64::MAX,
        }
    }
}

/// Spark's restart rule: run `pending ∪ {grid times in [checkpoint_time, restart_time)}`, where
/// `restart_time` is the first grid time after `now` (`RecurringTimer.getRestartTime`), keeping only
/// times after zero time, deduplicated and in order. The checkpoint time, pending batches and
/// batches `recorded` in the WAL always run; the other (missed) times run as `policy` says
/// ([`MissedBatches`]).
pub(crate) fn restart_schedule(
    zero: BatchTime,
    batch: DurationMs,
    checkpoint_time: BatchTime,
    pending: &[BatchTime],
    recorded: &BTreeSet<BatchTime>,
    now_ms: u64,
    policy: CatchUp,
) -> RestartSchedule {
    let b = batch.0.max(1);
    // First grid time at or after the checkpoint time.
    let first = if checkpoint_time.0 <= zero.0 {
        zero.0 + b
    } else {
        let k = (checkpoint_time.0 - zero.0).div_ceil(b);
        zero.0 + k * b
    };
    // The checkpointed batch itself always re-runs (Spark), as do pending and recorded ones.
    grid_schedule(zero, b, first, pending, now_ms, 0, policy, |bt| {
        recorded.contains(&bt) || bt == checkpoint_time
    })
}

/// The restart rule with a grid high-water mark (I-REC-6, docs/recovery.md "Progress during
/// catch-up"): run `pending ∪ {grid times in (hwm, restart_time)}`. Every grid time at or before
/// `hwm` that is not pending has completed, so nothing before it runs again and the restored
/// position never moves back. Times after `hwm` `recorded` in the WAL (generated by a life whose
/// manifest did not become durable) always run with their recorded input; `policy` applies to the
/// other missed times as in [`restart_schedule`].
pub(crate) fn restart_schedule_after(
    zero: BatchTime,
    batch: DurationMs,
    hwm: BatchTime,
    pending: &[BatchTime],
    recorded: &BTreeSet<BatchTime>,
    now_ms: u64,
    policy: CatchUp,
) -> RestartSchedule {
    let b = batch.0.max(1);
    // First grid time strictly after the high-water mark.
    let first = if hwm.0 < zero.0 {
        zero.0 + b
    } else {
        zero.0 + ((hwm.0 - zero.0) / b + 1) * b
    };
    // A clock behind the high-water mark (a restart on another host) does not regenerate
    // completed batches: the timer resumes after it.
    grid_schedule(zero, b, first, pending, now_ms, first, policy, |bt| {
        recorded.contains(&bt)
    })
}

/// Pending batches after zero time, plus the grid times in `[first, restart_time)`: those `keep`
/// selects (or pending) always run, the others are missed and run as `policy` says. The restart
/// time is the first grid time after `now_ms`, at least `min_restart`.
#[allow(clippy::too_many_arguments)]
fn grid_schedule(
    zero: BatchTime,
    b: u64,
    first: u64,
    pending: &[BatchTime],
    now_ms: u64,
    min_restart: u64,
    policy: CatchUp,
    keep: impl Fn(BatchTime) -> bool,
) -> RestartSchedule {
    let restart = if now_ms < zero.0 {
        zero.0 + b
    } else {
        ((now_ms - zero.0) / b + 1) * b + zero.0
    }
    .max(min_restart);
    let mut times: BTreeSet<BatchTime> = pending.iter().copied().filter(|t| t.0 > zero.0).collect();
    // Runs of consecutive missed times (a kept time ends a run).
    let mut runs: Vec<Vec<BatchTime>> = Vec::new();
    let mut open = false;
    let mut t = first;
    while t < restart {
        let bt = BatchTime(t);
        if times.contains(&bt) || keep(bt) {
            times.insert(bt);
            open = false;
        } else {
            if !open {
                runs.push(Vec::new());
                open = true;
            }
            if let Some(r) = runs.last_mut() {
                r.push(bt);
            }
        }
        t += b;
    }
    let mut skipped = Vec::new();
    let mut coalesced = Vec::new();
    match policy.policy {
        MissedBatches::GenerateAll => times.extend(runs.into_iter().flatten()),
        MissedBatches::CoalesceEmpty => {
            let missed: Vec<BatchTime> = runs.into_iter().flatten().collect();
            let n = missed.len();
            for (i, t) in missed.into_iter().enumerate() {
                if i == 0 || i + 1 == n {
                    times.insert(t);
                } else {
                    skipped.push(t);
                }
            }
        }
        MissedBatches::Coalesce => {
            let span = usize::try_from(policy.max_span.max(1)).unwrap_or(usize::MAX);
            for run in runs {
                for chunk in run.chunks(span) {
                    let (Some(from), Some(last)) = (chunk.first(), chunk.last()) else {
                        continue;
                    };
                    times.insert(*last);
                    if chunk.len() > 1 {
                        coalesced.push(CoalescedSpan {
                            from: from.0,
                            batch: last.0,
                            times: chunk.len() as u64,
                        });
                    }
                }
            }
        }
    }
    RestartSchedule {
        times: times.into_iter().collect(),
        skipped,
        coalesced,
        restart_time: BatchTime(restart),
    }
}

/// Archives (renames, never deletes) the WAL directory beside itself, if it exists.
fn archive_wal(
    fs: &dyn spate_io::FileSystem,
    wall: &dyn Clock,
    dir: &Path,
    report: &mut RestartReport,
) -> Result<()> {
    if !fs.exists(dir) {
        return Ok(());
    }
    let target = dir.with_file_name(format!(
        "{}.archived-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("wal"),
        wall.now_ms()
    ));
    fs.rename(dir, &target).map_err(|e| StreamingError::Wal {
        dir: dir.to_owned(),
        source: spate_wal::WalError::Io {
            path: dir.to_owned(),
            source: e,
        },
    })?;
    report.archived.push(target.display().to_string());
    Ok(())
}

/// Segment files in the WAL directory (read without opening the WAL, which would repair it).
fn wal_segments(fs: &dyn spate_io::FileSystem, dir: &Path) -> u64 {
    fs.list(dir).map_or(0, |names| {
        names.iter().filter(|n| n.ends_with(".wal")).count() as u64
    })
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

impl StreamingContext {
    /// Recovers a context from the checkpoint at `url`, or builds a fresh one (Spark's
    /// `StreamingContext.getOrCreate(checkpointPath, creatingFunc)`), on the system clock.
    ///
    /// `build` registers the application's graph on the context it is given — on a fresh start
    /// *and* on recovery (unlike Spark, which deserializes the old graph and never calls the
    /// function, so a changed application silently runs its old code). `conf.checkpoint` is set
    /// to `url`.
    ///
    /// * No checkpoint → a fresh context (a WAL directory holding records no checkpoint covers is
    ///   [`StreamingError::OrphanWal`], or archived with `create_on_error`).
    /// * A valid checkpoint → the built graph and computation settings are compared with it
    ///   ([`crate::compat`]); any difference is [`StreamingError::IncompatibleCheckpoint`] with the
    ///   diff. Otherwise the WAL is replayed and `start` re-runs the pending and missed batches
    ///   ([`restart_schedule`]) before resuming the timer.
    /// * A damaged newest checkpoint → an older valid one, with the rejected ones in the report.
    /// * Manifests but none valid → [`StreamingError::NoValidCheckpoint`], or with
    ///   `create_on_error` the location and WAL are **archived** (never deleted) and a fresh
    ///   context is built.
    ///
    /// Every call writes a [`RestartReport`] to `<url>/restart-reports/` (best effort) and logs
    /// it; [`restart_report`](Self::restart_report) returns it.
    ///
    /// # Errors
    /// The above, [`StreamingError::Checkpoint`] for an unreachable store (never mistaken for "no
    /// checkpoint"), [`StreamingError::Wal`] for a WAL with mid-log corruption, or `build`'s error.
    pub fn get_or_create<F>(url: &str, conf: StreamingConfig, build: F) -> Result<StreamingContext>
    where
        F: FnOnce(&StreamingContext) -> Result<()>,
    {
        Self::get_or_create_with_clock(url, conf, Arc::new(SystemClock), build)
    }

    /// As [`get_or_create`](Self::get_or_create) on `clock` (tests pass a
    /// [`spate_io::ManualClock`]).
    ///
    /// # Errors
    /// As [`get_or_create`](Self::get_or_create).
    pub fn get_or_create_with_clock<F>(
        url: &str,
        conf: StreamingConfig,
        clock: Arc<dyn Clock>,
        build: F,
    ) -> Result<StreamingContext>
    where
        F: FnOnce(&StreamingContext) -> Result<()>,
    {
        Self::get_or_create_on(url, conf, clock, Arc::new(spate_io::StdFs), build)
    }

    /// As [`get_or_create_with_clock`](Self::get_or_create_with_clock) with the WAL on `fs` (tests
    /// pass a [`spate_io::SimFs`] to crash it at any instant; the checkpoint store is unchanged).
    ///
    /// # Errors
    /// As [`get_or_create`](Self::get_or_create).
    pub fn get_or_create_on<F>(
        url: &str,
        mut conf: StreamingConfig,
        clock: Arc<dyn Clock>,
        fs: Arc<dyn spate_io::FileSystem>,
        build: F,
    ) -> Result<StreamingContext>
    where
        F: FnOnce(&StreamingContext) -> Result<()>,
    {
        conf.checkpoint = Some(url.to_owned());
        conf.validate()?;
        let wal = wal_dir(url, conf.wal_dir.as_deref())?;
        // Report names and archive labels are wall time even on a manual batch clock: they must
        // not collide between runs.
        let wall: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut report = RestartReport::new(url, wall.now_ms());
        report.wal.dir = wal.display().to_string();
        let ckpt_err = |source| StreamingError::Checkpoint {
            url: url.to_owned(),
            source: Box::new(source),
        };
        // Step 1: resolve.
        let t = Instant::now();
        let store =
            BlockingCheckpointStore::open(url, StoreOptions::default()).map_err(ckpt_err)?;
        let (resolved, found) = match store.resolve_latest() {
            Ok(r) => (r, CheckpointFacts::Absent),
            Err(CheckpointError::NoValidCheckpoint { rejected }) => {
                report.rejected = rejected
                    .iter()
                    .map(|r| RejectedCheckpoint {
                        manifest: r.manifest.clone(),
                        reason: r.reason.to_string(),
                    })
                    .collect();
                (None, CheckpointFacts::NoneValid)
            }
            Err(e) => return Err(ckpt_err(e)),
        };
        if resolved.is_none() {
            // A found checkpoint is planned once the WAL is replayed (`restore_from`).
            let wal_facts = WalFacts {
                segments: wal_segments(fs.as_ref(), &wal),
                records: None,
            };
            let decision = plan_recovery(&RecoveryFacts {
                checkpoint: found,
                create_on_error: conf.create_on_error,
                wal: wal_facts,
            });
            match decision {
                RecoveryDecision::Fresh | RecoveryDecision::Restore { .. } => {}
                RecoveryDecision::FreshAfterArchive { store: s, wal: w } => {
                    if s {
                        let label = format!("{:020}", wall.now_ms());
                        let a = store
                            .block_on(store.store().archive(&label))
                            .map_err(ckpt_err)?;
                        report.archived.push(a.prefix.clone());
                    }
                    if w {
                        archive_wal(fs.as_ref(), wall.as_ref(), &wal, &mut report)?;
                    }
                    report.outcome = RestartOutcome::FreshAfterArchive;
                }
                RecoveryDecision::Refuse(Refusal::OrphanWal(w)) => {
                    return Err(StreamingError::OrphanWal {
                        dir: wal,
                        segments: w.segments,
                        records: w.records,
                    });
                }
                RecoveryDecision::Refuse(_) => {
                    report.outcome = RestartOutcome::NoValidCheckpoint;
                    write_report(&store, &mut report);
                    return Err(StreamingError::NoValidCheckpoint {
                        url: url.to_owned(),
                        rejected: report
                            .rejected
                            .iter()
                            .map(|r| format!("{}: {}", r.manifest, r.reason))
                            .collect(),
                    });
                }
            }
        }
        report.phases_ms.insert("resolve".into(), ms(t));
        if let Some(r) = &resolved {
            let m = &r.manifest;
            report.checkpoint = Some(ChosenCheckpoint {
                manifest: spate_checkpoint::CheckpointPaths::manifest(m.key),
                kind: format!("{:?}", m.kind),
                batch_time: m.batch_time.0,
                generation: m.generation.0,
                fell_back: !r.resolution.rejected.is_empty(),
            });
            report.rejected = r
                .resolution
                .rejected
                .iter()
                .map(|x| RejectedCheckpoint {
                    manifest: x.manifest.clone(),
                    reason: x.reason.to_string(),
                })
                .collect();
            for x in &report.rejected {
                tracing::warn!(manifest = %x.manifest, reason = %x.reason, "checkpoint rejected; falling back");
            }
        }
        // Step 2: build and compare.
        let t = Instant::now();
        let wal_t = Instant::now();
        let ctx = StreamingContext::with_checkpointer(conf, clock, store, &wal, fs)?;
        let wal_ms = ms(wal_t);
        build(&ctx)?;
        report.phases_ms.insert("build".into(), ms(t) - wal_ms);
        report.phases_ms.insert("wal_open".into(), wal_ms);
        let Some(d) = ctx.inner.checkpointer.clone() else {
            return Err(StreamingError::spawn(
                "recovery",
                "checkpointing not enabled",
            ));
        };
        d.wal_summary(&mut report.wal);
        let Some(resolved) = resolved else {
            report
                .phases_ms
                .insert("total".into(), report.phases_ms.values().sum());
            d.set_report(report.clone());
            d.write_report(&mut report);
            d.set_report(report.clone());
            tracing::info!("restart report: {}", report.summary());
            return Ok(ctx);
        };
        let t = Instant::now();
        let m = resolved.manifest;
        let build_desc = ctx.describe_build();
        let diff = build_desc.compare_with_checkpoint(&m.graph.bytes, &m.conf);
        report.phases_ms.insert("compare".into(), ms(t));
        if !diff.is_compatible() {
            report.outcome = RestartOutcome::Incompatible;
            report.compatibility = diff.lines();
            d.write_report(&mut report);
            let checkpoint = spate_checkpoint::CheckpointPaths::manifest(m.key);
            // Nothing was started; the context is dropped unstarted.
            let _ = ctx.stop(false);
            return Err(StreamingError::IncompatibleCheckpoint {
                url: url.to_owned(),
                checkpoint,
                diff: Box::new(diff),
            });
        }
        // Step 3: replay the WAL into the tracker and the inputs.
        let t = Instant::now();
        ctx.restore_from(&m, &mut report)?;
        report.phases_ms.insert("restore".into(), ms(t));
        report.outcome = RestartOutcome::Restored;
        report.zero_time = Some(m.zero_time.0);
        report.pending_batches = m.pending_batches.iter().map(|t| t.0).collect();
        report
            .phases_ms
            .insert("total".into(), report.phases_ms.values().sum());
        d.write_report(&mut report);
        tracing::info!("restart report: {}", report.summary());
        d.set_report(report);
        Ok(ctx)
    }

    /// The restart report of the `get_or_create` that made this context (`None` for contexts made
    /// with `new`). `batches_rescheduled` and `restart_time` are updated by `start`.
    pub fn restart_report(&self) -> Option<RestartReport> {
        self.inner.checkpointer.as_ref().and_then(|d| d.report())
    }
}

impl StreamingContext {
    /// Recovery step 3: replays the WAL into the tracker, restores the inputs' positions and
    /// selections, and records the restart plan `start` applies.
    pub(crate) fn restore_from(&self, m: &Manifest, report: &mut RestartReport) -> Result<()> {
        let Some(d) = &self.inner.checkpointer else {
            return Ok(());
        };
        let replayed = d.take_replayed();
        let batches = {
            let (unallocated, allocated) = self
                .inner
                .replay_tracker_events(replayed.events.iter().map(|(_, e)| e));
            report.blocks_unallocated = unallocated as u64;
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
        let inputs = self.inner.inputs();
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
        let state_ops = self.inner.state_ops();
        let chains = d.restore(m, &batches.batch_lsns, !state_ops.is_empty())?;
        let restart = RestartFacts {
            zero: m.zero_time,
            batch: self.inner.config.batch_interval,
            checkpoint_time: m.batch_time,
            pending: m.pending_batches.clone(),
            recorded: batches.recorded,
            cleaned_through: batches.cleaned_through,
            policy: self.catch_up_policy(report),
            hwm: crate::checkpointer::hwm_of(m),
            spans: crate::checkpointer::spans_of(m),
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
                return Err(StreamingError::StateMismatch {
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
        report.batches_coalesced.clone_from(&schedule.coalesced);
        report.restart_time = Some(schedule.restart_time.0);
        report.high_water_mark = restart.hwm.map(|t| t.0);
        report.restored_through = Some(
            crate::plan::restored_through(
                &restart.pending,
                &restart.spans,
                restart.hwm,
                restart.checkpoint_time,
                restart.batch,
            )
            .0,
        );
        let chains_facts: Vec<_> = state_ops
            .iter()
            .map(|op| chains.get(&op.operator()).map(|c| c.facts()))
            .collect();
        let first = schedule
            .times
            .first()
            .copied()
            .unwrap_or(schedule.restart_time);
        report.replay_batches = Some(
            crate::plan::replay_estimate(
                first,
                schedule.times.len() as u64,
                &chains_facts,
                restart.zero,
                restart.batch,
                None,
            )
            .0,
        );
        d.on_restored(restart);
        Ok(())
    }
}

impl StreamingContext {
    /// The configured missed-batch policy as this graph allows it: `coalesce` is refused (and
    /// the reason reported) where per-batch boundaries matter ([`crate::plan::coalesce_veto`]).
    fn catch_up_policy(&self, report: &mut RestartReport) -> CatchUp {
        let policy = self.inner.config.missed_batches;
        if policy != MissedBatches::Coalesce {
            return policy.into();
        }
        let nodes = self.inner.merge_facts();
        let spans: Vec<DurationMs> = self
            .inner
            .inputs()
            .iter()
            .filter_map(|i| i.max_batch_span())
            .collect();
        match crate::plan::coalesce_veto(&nodes, &spans, self.inner.config.batch_interval) {
            Ok(max_span) => CatchUp { policy, max_span },
            Err(reason) => {
                tracing::warn!(%reason, "missed_batches = coalesce refused for this graph; generating every missed batch");
                report.coalesce_refused = Some(reason);
                MissedBatches::GenerateAll.into()
            }
        }
    }
}

/// Writes the report as JSON beside the checkpoint (best effort: a failure is logged).
pub(crate) fn write_report(store: &BlockingCheckpointStore, report: &mut RestartReport) {
    let json = match serde_json::to_vec_pretty(report) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!("restart report not encoded: {e}");
            return;
        }
    };
    match store.block_on(store.store().put_restart_report(
        report.started_at_ms,
        spate_types::Generation(report.checkpoint.as_ref().map_or(0, |c| c.generation)),
        bytes::Bytes::from(json),
    )) {
        Ok(name) => report.written_to = Some(name),
        Err(e) => tracing::warn!("restart report not written: {e}"),
    }
}

#[cfg(test)]
mod tests;
