//! Table and property tests of [`super`] (plan.rs).

use super::*;
use crate::config::MissedBatches;

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
    let through =
        |pending: &[BatchTime], hwm, t| restored_through(pending, &BTreeMap::new(), hwm, t, b);
    let before = through(&completed.1, None, completed.0);
    assert_eq!(before, BatchTime(11_000));
    let facts = |hwm| RestartFacts {
        zero: BatchTime(0),
        batch: b,
        checkpoint_time: completed.0,
        pending: completed.1.clone(),
        recorded: BTreeSet::new(),
        cleaned_through: None,
        policy: MissedBatches::GenerateAll.into(),
        hwm,
        spans: BTreeMap::new(),
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
        policy: MissedBatches::GenerateAll.into(),
        hwm: None,
        spans: BTreeMap::new(),
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
            coalesced: vec![],
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
        spans: BTreeMap<BatchTime, BatchTime>,
    }

    fn publish(ms: &mut Vec<M>, t: BatchTime, p: &Progress) {
        ms.push(M {
            batch_time: t,
            pending: p.pending.iter().copied().collect(),
            hwm: p.hwm,
            spans: p.spans.clone(),
        });
    }

    proptest! {
        #[test]
        fn restored_position_is_monotone(
            kills in proptest::collection::vec((0usize..40, 0u64..5000), 1..30),
            coalesce in proptest::option::of(1u64..12),
        ) {
            // `coalesce`: `missed_batches = coalesce` with that span (grid times), else
            // `generate_all`.
            let b = DurationMs(1000);
            let zero = BatchTime(0);
            let mut now = 500u64;
            let mut ms = vec![M { batch_time: zero, pending: vec![], hwm: Some(zero), spans: BTreeMap::new() }];
            let mut completed = BTreeSet::new();
            let mut last_through = BatchTime(0);
            for (steps, outage) in kills {
                let m = ms.last().cloned().expect("a manifest");
                let through = restored_through(&m.pending, &m.spans, m.hwm, m.batch_time, b);
                prop_assert!(through >= last_through, "moved back {last_through:?} -> {through:?}");
                last_through = through;
                let facts = RestartFacts {
                    zero,
                    batch: b,
                    checkpoint_time: m.batch_time,
                    pending: m.pending.clone(),
                    recorded: BTreeSet::new(),
                    cleaned_through: None,
                    policy: coalesce.map_or(MissedBatches::GenerateAll.into(), |max_span| CatchUp {
                        policy: MissedBatches::Coalesce,
                        max_span,
                    }),
                    hwm: m.hwm,
                    spans: m.spans.clone(),
                };
                let s = plan_restart(&facts, now);
                // Bounded catch-up: the missed times after the mark form one run, cut into
                // chunks of at most `max_span`.
                if let Some(span) = coalesce {
                    let missed = s.coalesced.iter().map(|c| c.times).sum::<u64>()
                        + (s.times.len() - m.pending.len()) as u64
                        - s.coalesced.len() as u64;
                    prop_assert!(
                        s.times.len() as u64 <= m.pending.len() as u64 + missed.div_ceil(span).max(1),
                        "{} batches for {} pending and {missed} missed times", s.times.len(), m.pending.len()
                    );
                    prop_assert!(s.coalesced.iter().all(|c| c.times <= span));
                }
                let covers: BTreeMap<BatchTime, Vec<BatchTime>> = s
                    .coalesced
                    .iter()
                    .map(|c| {
                        let ts: Vec<BatchTime> = (0..c.times).map(|i| BatchTime(c.from + i * b.0)).collect();
                        (BatchTime(c.batch), ts)
                    })
                    .collect();
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
                        // A coalesced batch completes every grid time it covers.
                        completed.extend(covers.get(t).into_iter().flatten().copied());
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
                let after = restored_through(&m2.pending, &m2.spans, m2.hwm, m2.batch_time, b);
                if done_any {
                    prop_assert!(after > through, "a completed batch made no progress");
                }
                now += outage;
            }
            let m = ms.last().expect("a manifest");
            let through = restored_through(&m.pending, &m.spans, m.hwm, m.batch_time, b);
            let mut t = b.0;
            while t <= through.0 {
                prop_assert!(completed.contains(&BatchTime(t)), "batch {t} lost");
                t += b.0;
            }
        }
    }
}

/// docs/recovery.md "Bounded catch-up": (case, operators, input spans, verdict).
#[test]
fn coalesce_is_refused_where_batch_boundaries_matter() {
    let b = DurationMs(500);
    let node = |id: u32, kind: &'static str, slide: u64, window: Option<u64>, why| MergeFacts {
        id: OperatorId(id),
        kind,
        slide: DurationMs(slide),
        window: window.map(DurationMs),
        unsafe_reason: why,
    };
    let files = node(0, "replayable_stream", 500, None, None);
    let fold = node(1, "update_state_by_key", 500, None, None);
    let cases: Vec<(&str, Vec<MergeFacts>, Vec<u64>, Result<u64, &str>)> = vec![
        (
            "stateless graph, no file input: unbounded",
            vec![node(0, "receiver_stream", 500, None, None)],
            vec![],
            Ok(u64::MAX),
        ),
        (
            "running totals over files: at most the remember window (60 s / 500 ms)",
            vec![files.clone(), fold.clone()],
            vec![60_000],
            Ok(120),
        ),
        (
            "the shortest remember window of several file inputs",
            vec![files.clone(), fold.clone()],
            vec![60_000, 3_000],
            Ok(6),
        ),
        (
            "a remember window below one batch still allows one grid time",
            vec![files.clone()],
            vec![100],
            Ok(1),
        ),
        (
            "a window keeps per-batch boundaries",
            vec![files.clone(), node(2, "window", 500, Some(1500), None)],
            vec![60_000],
            Err("window (operator 2) is windowed"),
        ),
        (
            "a slide other than the batch interval too",
            vec![
                files.clone(),
                node(3, "reduce_by_key_and_window", 1000, Some(1000), None),
            ],
            vec![],
            Err("reduce_by_key_and_window (operator 3) is windowed"),
        ),
        (
            "an operator that declares merging unsafe",
            vec![
                files,
                node(4, "update_state_by_key", 500, None, Some("not a fold")),
            ],
            vec![60_000],
            Err("update_state_by_key (operator 4): not a fold"),
        ),
    ];
    for (case, nodes, spans, want) in cases {
        let spans: Vec<DurationMs> = spans.into_iter().map(DurationMs).collect();
        match (coalesce_veto(&nodes, &spans, b), want) {
            (Ok(got), Ok(w)) => assert_eq!(got, w, "{case}"),
            (Err(got), Err(w)) => assert!(got.starts_with(w), "{case}: {got}"),
            (got, w) => panic!("{case}: got {got:?}, want {w:?}"),
        }
    }
}

/// I-REC-6 with `coalesce`: the planner over the high-water mark, pending and recorded batches.
#[test]
fn restart_plan_coalesces_runs_of_missed_batches() {
    use crate::recovery::CoalescedSpan;
    let facts =
        |pending: &[u64], recorded: &[u64], max_span: u64, cleaned: Option<u64>| RestartFacts {
            zero: BatchTime(0),
            batch: DurationMs(1000),
            checkpoint_time: BatchTime(2000),
            pending: ts(pending),
            recorded: ts(recorded).into_iter().collect(),
            cleaned_through: cleaned.map(BatchTime),
            policy: CatchUp {
                policy: MissedBatches::Coalesce,
                max_span,
            },
            hwm: Some(BatchTime(3000)),
            spans: BTreeMap::new(),
        };
    let span = |from: u64, batch: u64, times: u64| CoalescedSpan { from, batch, times };
    // (case, facts, now, times, coalesced)
    let cases = vec![
        (
            "one run: everything after the mark in one batch at its last time",
            facts(&[], &[], u64::MAX, None),
            12_500,
            vec![12_000],
            vec![span(4000, 12_000, 9)],
        ),
        (
            "pending batches run as recorded and split the run",
            facts(&[2000, 7000], &[], u64::MAX, None),
            12_500,
            vec![2000, 6000, 7000, 12_000],
            vec![span(4000, 6000, 3), span(8000, 12_000, 5)],
        ),
        (
            "a time recorded in the WAL (generated by a life whose manifest was lost) keeps its input",
            facts(&[], &[5000], u64::MAX, None),
            9500,
            vec![4000, 5000, 9000],
            vec![span(6000, 9000, 4)],
        ),
        (
            "runs longer than the span are cut into chunks",
            facts(&[], &[], 4, None),
            12_500,
            vec![7000, 11_000, 12_000],
            vec![span(4000, 7000, 4), span(8000, 11_000, 4)],
        ),
        (
            "nothing missed: no span",
            facts(&[3000], &[], u64::MAX, None),
            3500,
            vec![3000],
            vec![],
        ),
        (
            "a single missed time is an ordinary batch",
            facts(&[], &[], u64::MAX, None),
            4500,
            vec![4000],
            vec![],
        ),
    ];
    for (case, f, now, times, coalesced) in cases {
        let s = plan_restart(&f, now);
        assert_eq!(s.times, ts(&times), "{case}");
        assert_eq!(s.coalesced, coalesced, "{case}");
        assert!(s.skipped.is_empty(), "{case}");
        // Every grid time after the mark is run, pending, or covered by exactly one span.
        let mut t = 4000;
        while t < s.restart_time.0 {
            let covered = s
                .coalesced
                .iter()
                .filter(|c| c.from <= t && t <= c.batch)
                .count();
            let runs = s.times.contains(&BatchTime(t));
            assert!(
                covered == 1 || (covered == 0 && runs),
                "{case}: grid time {t} covered {covered} times, runs {runs}"
            );
            t += 1000;
        }
    }
}

/// A pending coalesced batch re-runs as recorded, its span listed again (so a restart line lost
/// to a kill is repeated), and the restored position is the grid time before its span.
#[test]
fn pending_coalesced_batches_keep_their_span() {
    let spans: BTreeMap<BatchTime, BatchTime> = [(BatchTime(3000), BatchTime(1000))].into();
    let f = RestartFacts {
        zero: BatchTime(0),
        batch: DurationMs(1000),
        checkpoint_time: BatchTime(3000),
        pending: ts(&[3000]),
        recorded: BTreeSet::new(),
        cleaned_through: None,
        policy: CatchUp {
            policy: MissedBatches::Coalesce,
            max_span: u64::MAX,
        },
        hwm: Some(BatchTime(3000)),
        spans: spans.clone(),
    };
    let s = plan_restart(&f, 6500);
    assert_eq!(s.times, ts(&[3000, 6000]));
    let got: Vec<(u64, u64, u64)> = s
        .coalesced
        .iter()
        .map(|c| (c.from, c.batch, c.times))
        .collect();
    assert_eq!(got, vec![(1000, 3000, 3), (4000, 6000, 3)]);
    assert_eq!(
        restored_through(&f.pending, &spans, f.hwm, f.checkpoint_time, f.batch),
        BatchTime(0),
        "the grid time before the pending batch's span"
    );
    let mut p = Progress::default();
    p.on_restart(&s, f.batch);
    assert_eq!(p.spans.len(), 2);
    p.on_done(BatchTime(3000));
    assert_eq!(p.spans, [(BatchTime(6000), BatchTime(4000))].into());
}
