//! Table and property tests of [`super`] (recovery.rs).

use super::*;

fn ts(v: &[u64]) -> Vec<BatchTime> {
    v.iter().map(|t| BatchTime(*t)).collect()
}

#[test]
fn schedule_matches_spark_restart() {
    // zero 0, batch 1000, checkpoint at 3000 with 4000 pending, now 6500.
    let s = restart_schedule(
        BatchTime(0),
        DurationMs(1000),
        BatchTime(3000),
        &ts(&[4000]),
        &BTreeSet::new(),
        6500,
        MissedBatches::GenerateAll.into(),
    );
    assert_eq!(s.times, ts(&[3000, 4000, 5000, 6000]));
    assert_eq!(s.restart_time, BatchTime(7000));
    assert!(s.skipped.is_empty());
    // Exactly on a grid point: that point is the restart time's predecessor... Spark: now=7000
    // → restart 8000, 7000 rescheduled.
    let s = restart_schedule(
        BatchTime(0),
        DurationMs(1000),
        BatchTime(3000),
        &[],
        &BTreeSet::new(),
        7000,
        MissedBatches::GenerateAll.into(),
    );
    assert_eq!(s.times, ts(&[3000, 4000, 5000, 6000, 7000]));
    assert_eq!(s.restart_time, BatchTime(8000));
}

#[test]
fn schedule_coalesces_missed_empty_batches_but_keeps_recorded_ones() {
    let recorded: BTreeSet<BatchTime> = ts(&[5000]).into_iter().collect();
    let s = restart_schedule(
        BatchTime(0),
        DurationMs(1000),
        BatchTime(3000),
        &ts(&[4000]),
        &recorded,
        10_500,
        MissedBatches::CoalesceEmpty.into(),
    );
    assert_eq!(s.times, ts(&[3000, 4000, 5000, 6000, 10_000]));
    assert_eq!(s.skipped, ts(&[7000, 8000, 9000]));
}

/// I-REC-6: (case, hwm, pending, now, policy, times, skipped, restart time)
#[test]
fn schedule_after_high_water_mark() {
    let g = MissedBatches::GenerateAll;
    let cases = [
        (
            "pending, then the grid after the mark",
            5000,
            vec![3000, 5000],
            7500,
            g,
            vec![3000, 5000, 6000, 7000],
            vec![],
            8000,
        ),
        (
            "completed batches before the mark do not run again",
            5000,
            vec![],
            5500,
            g,
            vec![],
            vec![],
            6000,
        ),
        (
            "a clock behind the mark: the timer resumes after it",
            9000,
            vec![8000],
            4200,
            g,
            vec![8000],
            vec![],
            10_000,
        ),
        (
            "coalesce_empty applies to the missed times after the mark",
            2000,
            vec![2000],
            7500,
            MissedBatches::CoalesceEmpty,
            vec![2000, 3000, 7000],
            vec![4000, 5000, 6000],
            8000,
        ),
    ];
    for (case, hwm, pending, now, policy, times, skipped, restart) in cases {
        let s = restart_schedule_after(
            BatchTime(0),
            DurationMs(1000),
            BatchTime(hwm),
            &ts(&pending),
            &BTreeSet::new(),
            now,
            policy.into(),
        );
        assert_eq!(s.times, ts(&times), "{case}");
        assert_eq!(s.skipped, ts(&skipped), "{case}");
        assert_eq!(s.restart_time, BatchTime(restart), "{case}");
    }
}

#[test]
fn schedule_ignores_times_at_or_before_zero() {
    let s = restart_schedule(
        BatchTime(1000),
        DurationMs(1000),
        BatchTime(1000),
        &ts(&[500, 1000]),
        &BTreeSet::new(),
        2500,
        MissedBatches::GenerateAll.into(),
    );
    assert_eq!(s.times, ts(&[2000]));
    assert_eq!(s.restart_time, BatchTime(3000));
}
