//! DStream operators against hand-computed results (Spark's `BasicOperationsSuite` /
//! `WindowOperationsSuite` style), graph description, and the API rules.

use proptest::prelude::*;
use spate::testing::{run_operation, run_operation2, run_operation_with_times};
use spate::{BatchTime, DStream, DurationMs, StreamingContext, StreamingError};
use std::collections::BTreeMap;

const B: DurationMs = DurationMs(1000);

fn sorted<T: Ord>(v: Vec<Vec<T>>) -> Vec<Vec<T>> {
    v.into_iter()
        .map(|mut b| {
            b.sort();
            b
        })
        .collect()
}

fn s(x: &str) -> String {
    x.to_owned()
}

#[test]
fn narrow_operators() {
    let input = vec![vec![1, 2, 3, 4], vec![5], vec![]];
    assert_eq!(
        run_operation(input.clone(), B, 3, |d| d.map(|x| x * 10)).unwrap(),
        vec![vec![10, 20, 30, 40], vec![50], vec![]]
    );
    assert_eq!(
        run_operation(input.clone(), B, 3, |d| d.filter(|x| x % 2 == 1)).unwrap(),
        vec![vec![1, 3], vec![5], vec![]]
    );
    assert_eq!(
        run_operation(input.clone(), B, 3, |d| d
            .flat_map(|x| vec![x; x as usize % 3]))
        .unwrap(),
        vec![vec![1, 2, 2, 4], vec![5, 5], vec![]]
    );
    // Two partitions per batch (test config): map_partitions sees each one.
    assert_eq!(
        run_operation(input.clone(), B, 3, |d| d.map_partitions(|p| vec![p.len()])).unwrap(),
        vec![vec![2, 2], vec![1], vec![0]]
    );
    assert_eq!(
        run_operation(input.clone(), B, 3, |d| d.count()).unwrap(),
        vec![vec![4], vec![1], vec![0]]
    );
    assert_eq!(
        run_operation(input.clone(), B, 3, |d| d.reduce(|a, b| a + b)).unwrap(),
        vec![vec![10], vec![5], vec![]]
    );
    assert_eq!(
        run_operation(input.clone(), B, 3, |d| d
            .repartition(3)?
            .map_partitions(|p| vec![p.len()]))
        .unwrap(),
        vec![vec![2, 1, 1], vec![1, 0, 0], vec![0, 0, 0]]
    );
    assert_eq!(
        run_operation(input, B, 2, |d| {
            d.transform(|b, t| spate::Batch::from_vec(vec![(t.0, b.len())]))
        })
        .unwrap(),
        vec![vec![(1000, 4)], vec![(2000, 1)]]
    );
}

#[test]
fn by_key_operators() {
    let words = vec![vec![s("a"), s("b"), s("a"), s("c")], vec![s("b")], vec![]];
    assert_eq!(
        sorted(run_operation(words.clone(), B, 3, |d| d.count_by_value()).unwrap()),
        vec![
            vec![(s("a"), 2), (s("b"), 1), (s("c"), 1)],
            vec![(s("b"), 1)],
            vec![]
        ]
    );
    let pairs = vec![
        vec![(s("a"), 1), (s("b"), 2), (s("a"), 3)],
        vec![(s("b"), 4)],
    ];
    assert_eq!(
        sorted(run_operation(pairs.clone(), B, 2, |d| d.reduce_by_key(|a, b| a + b)).unwrap()),
        vec![vec![(s("a"), 4), (s("b"), 2)], vec![(s("b"), 4)]]
    );
    assert_eq!(
        sorted(run_operation(pairs.clone(), B, 2, |d| d.group_by_key()).unwrap()),
        vec![
            vec![(s("a"), vec![1, 3]), (s("b"), vec![2])],
            vec![(s("b"), vec![4])]
        ]
    );
    // combine_by_key: (sum, count) per key into 4 partitions.
    assert_eq!(
        sorted(
            run_operation(pairs.clone(), B, 1, |d| d.combine_by_key(
                |v| (v, 1),
                |(s, c), v| (s + v, c + 1),
                |(s1, c1), (s2, c2)| (s1 + s2, c1 + c2),
                Some(4)
            ))
            .unwrap()
        ),
        vec![vec![(s("a"), (4, 2)), (s("b"), (2, 1))]]
    );
    assert_eq!(
        sorted(run_operation(pairs.clone(), B, 1, |d| d.map_values(|v| v * 2)).unwrap()),
        vec![vec![(s("a"), 2), (s("a"), 6), (s("b"), 4)]]
    );
    assert_eq!(
        sorted(run_operation(pairs, B, 1, |d| d.flat_map_values(|v| 0..v.min(2))).unwrap()),
        vec![vec![
            (s("a"), 0),
            (s("a"), 0),
            (s("a"), 1),
            (s("b"), 0),
            (s("b"), 1)
        ]]
    );
}

#[test]
fn union_joins_and_cogroup() {
    let left = vec![vec![(1, 'a'), (2, 'b'), (2, 'c')], vec![(3, 'x')]];
    let right = vec![vec![(2, 10), (4, 40)], vec![]];
    assert_eq!(
        sorted(
            run_operation2(
                vec![vec![1, 2], vec![3]],
                vec![vec![9], vec![]],
                B,
                2,
                |a, b| a.union(&b)
            )
            .unwrap()
        ),
        vec![vec![1, 2, 9], vec![3]]
    );
    assert_eq!(
        sorted(run_operation2(left.clone(), right.clone(), B, 2, |a, b| a.join(&b)).unwrap()),
        vec![vec![(2, ('b', 10)), (2, ('c', 10))], vec![]]
    );
    assert_eq!(
        sorted(
            run_operation2(left.clone(), right.clone(), B, 2, |a, b| a
                .left_outer_join(&b))
            .unwrap()
        ),
        vec![
            vec![(1, ('a', None)), (2, ('b', Some(10))), (2, ('c', Some(10)))],
            vec![(3, ('x', None))]
        ]
    );
    assert_eq!(
        sorted(
            run_operation2(left.clone(), right.clone(), B, 2, |a, b| a
                .right_outer_join(&b))
            .unwrap()
        ),
        vec![
            vec![(2, (Some('b'), 10)), (2, (Some('c'), 10)), (4, (None, 40))],
            vec![]
        ]
    );
    assert_eq!(
        sorted(
            run_operation2(left.clone(), right.clone(), B, 2, |a, b| a
                .full_outer_join(&b))
            .unwrap()
        ),
        vec![
            vec![
                (1, (Some('a'), None)),
                (2, (Some('b'), Some(10))),
                (2, (Some('c'), Some(10))),
                (4, (None, Some(40)))
            ],
            vec![(3, (Some('x'), None))]
        ]
    );
    assert_eq!(
        sorted(run_operation2(left, right, B, 1, |a, b| a.cogroup(&b)).unwrap()),
        vec![vec![
            (1, (vec!['a'], vec![])),
            (2, (vec!['b', 'c'], vec![10])),
            (4, (vec![], vec![40]))
        ]]
    );
}

fn ones(n: usize) -> Vec<Vec<u32>> {
    (1..=n as u32).map(|i| vec![i]).collect()
}

#[test]
fn window_contents_and_times() {
    // Window 3 s, slide 1 s over batches [1], [2], ...: (t - 3 s, t].
    let out = run_operation(ones(5), B, 5, |d| d.window(DurationMs(3000), B)).unwrap();
    assert_eq!(
        sorted(out),
        vec![
            vec![1],
            vec![1, 2],
            vec![1, 2, 3],
            vec![2, 3, 4],
            vec![3, 4, 5]
        ]
    );
    // Window 4 s, slide 2 s: only at even seconds.
    let out = run_operation_with_times(ones(6), B, 6, |d| {
        d.window(DurationMs(4000), DurationMs(2000))
    })
    .unwrap();
    let out = sorted_by_time(out);
    assert_eq!(
        out,
        vec![
            (2000, vec![1, 2]),
            (4000, vec![1, 2, 3, 4]),
            (6000, vec![3, 4, 5, 6])
        ]
    );
    // Window of a window: slide 2 s then window 4 s / slide 4 s over it.
    let out = run_operation_with_times(ones(8), B, 8, |d| {
        d.window(DurationMs(2000), DurationMs(2000))?
            .window(DurationMs(4000), DurationMs(4000))
    })
    .unwrap();
    let out = sorted_by_time(out);
    assert_eq!(
        out,
        vec![(4000, vec![1, 2, 3, 4]), (8000, vec![5, 6, 7, 8])]
    );
}

#[test]
fn window_aggregates() {
    assert_eq!(
        run_operation(ones(4), B, 4, |d| d.count_by_window(DurationMs(2000), B)).unwrap(),
        vec![vec![1], vec![2], vec![2], vec![2]]
    );
    assert_eq!(
        run_operation(ones(4), B, 4, |d| d.reduce_by_window(
            |a, b| a + b,
            DurationMs(2000),
            B
        ))
        .unwrap(),
        vec![vec![1], vec![3], vec![5], vec![7]]
    );
    let kv: Vec<Vec<(String, u64)>> = vec![
        vec![(s("a"), 1), (s("b"), 1)],
        vec![(s("a"), 1)],
        vec![],
        vec![(s("b"), 5)],
    ];
    let expected = vec![
        vec![(s("a"), 1), (s("b"), 1)],
        vec![(s("a"), 2), (s("b"), 1)],
        vec![(s("a"), 1)],
        vec![(s("b"), 5)],
    ];
    assert_eq!(
        sorted(
            run_operation(kv.clone(), B, 4, |d| d.reduce_by_key_and_window(
                |a, b| a + b,
                DurationMs(2000),
                B
            ))
            .unwrap()
        ),
        expected
    );
    // Inverse variant without a filter keeps zero-valued keys (as Spark).
    let inv = sorted(
        run_operation(kv.clone(), B, 4, |d| {
            d.reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, DurationMs(2000), B, None)
        })
        .unwrap(),
    );
    assert_eq!(
        inv,
        vec![
            vec![(s("a"), 1), (s("b"), 1)],
            vec![(s("a"), 2), (s("b"), 1)],
            vec![(s("a"), 1), (s("b"), 0)],
            vec![(s("a"), 0), (s("b"), 5)],
        ]
    );
    let words = vec![vec![s("x"), s("y")], vec![s("x")], vec![], vec![]];
    assert_eq!(
        sorted(
            run_operation(words, B, 4, |d| d
                .count_by_value_and_window(DurationMs(2000), B))
            .unwrap()
        ),
        vec![
            vec![(s("x"), 1), (s("y"), 1)],
            vec![(s("x"), 2), (s("y"), 1)],
            vec![(s("x"), 1)],
            vec![]
        ]
    );
}

fn window_sums(
    input: Vec<Vec<(u8, i64)>>,
    window: u64,
    slide: u64,
    inverse: bool,
) -> Vec<(u64, BTreeMap<u8, i64>)> {
    let n = input.len();
    run_operation_with_times(input, B, n, |d: DStream<(u8, i64)>| {
        if inverse {
            d.reduce_by_key_and_window_inv(
                |a, b| a + b,
                |a, b| a - b,
                DurationMs(window * 1000),
                DurationMs(slide * 1000),
                Some(Box::new(|(_, v): &(u8, i64)| *v != 0)),
            )
        } else {
            d.reduce_by_key_and_window(
                |a, b| a + b,
                DurationMs(window * 1000),
                DurationMs(slide * 1000),
            )
        }
    })
    .unwrap()
    .into_iter()
    .map(|(t, v)| (t.0, v.into_iter().filter(|(_, x)| *x != 0).collect()))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// The incremental (inverse-function) window equals the recomputed one on random input.
    #[test]
    fn inverse_window_equals_plain_window(
        input in prop::collection::vec(prop::collection::vec((0u8..6, 1i64..5), 0..6), 1..9),
        slide in 1u64..3,
        mult in 1u64..4,
    ) {
        let window = slide * mult;
        let plain = window_sums(input.clone(), window, slide, false);
        let inv = window_sums(input, window, slide, true);
        prop_assert_eq!(plain, inv);
    }
}

#[test]
fn invalid_windows_are_typed_errors_at_build_time() {
    let _g = spate::testing::context_lock();
    let ctx = StreamingContext::new(spate::testing::test_config(B)).unwrap();
    let d = ctx.queue_stream(vec![vec![1u32]], true, None).unwrap();
    let err = d.window(DurationMs(1500), B).unwrap_err();
    assert!(
        matches!(
            err,
            StreamingError::InvalidWindow {
                window: DurationMs(1500),
                parent_slide: DurationMs(1000),
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        d.window(DurationMs(3000), DurationMs(0)),
        Err(StreamingError::InvalidWindow { .. })
    ));
    let w = d.window(DurationMs(4000), DurationMs(2000)).unwrap();
    // A window over a 2 s-slide stream must use multiples of 2 s.
    assert!(matches!(
        w.window(DurationMs(3000), DurationMs(3000)),
        Err(StreamingError::InvalidWindow { .. })
    ));
    let pairs = d.map(|x| (x, 1u64)).unwrap();
    assert!(matches!(
        pairs.reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, B, DurationMs(2000), None),
        Err(StreamingError::InvalidWindow { .. })
    ));
    // Union of different slides.
    assert!(matches!(
        d.union(&w),
        Err(StreamingError::SlideMismatch { .. })
    ));
    assert!(matches!(
        d.repartition(0),
        Err(StreamingError::InvalidArgument { .. })
    ));
    // No output operations.
    assert!(matches!(
        ctx.start(),
        Err(StreamingError::NoOutputOperations)
    ));
}

#[test]
fn lifecycle_rules_are_enforced() {
    let _g = spate::testing::context_lock();
    let ctx = StreamingContext::new(spate::testing::test_config(DurationMs(60_000))).unwrap();
    let d = ctx.queue_stream(vec![vec![1u32]], true, None).unwrap();
    d.foreach_batch(|_, _| {}).unwrap();
    ctx.start().unwrap();
    assert!(matches!(ctx.start(), Err(StreamingError::AlreadyActive)));
    assert!(matches!(
        d.map(|x| x + 1),
        Err(StreamingError::AlreadyStarted { kind: "map" })
    ));
    assert!(matches!(
        d.foreach_batch(|_, _| {}),
        Err(StreamingError::AlreadyStarted { .. })
    ));
    assert!(matches!(
        ctx.queue_stream(vec![vec![1u8]], true, None),
        Err(StreamingError::AlreadyStarted { .. })
    ));
    assert!(matches!(
        d.clone().name("late"),
        Err(StreamingError::AlreadyStarted { .. })
    ));
    // A second active context in the same process is refused.
    let other = StreamingContext::new(spate::testing::test_config(B)).unwrap();
    other
        .queue_stream(vec![vec![1u8]], true, None)
        .unwrap()
        .foreach_batch(|_, _| {})
        .unwrap();
    assert!(matches!(
        other.start(),
        Err(StreamingError::AnotherContextActive { .. })
    ));
    ctx.stop(false).unwrap();
    ctx.stop(true).unwrap(); // idempotent
    assert!(matches!(ctx.start(), Err(StreamingError::AlreadyStopped)));
    assert!(ctx
        .await_termination_timeout(std::time::Duration::from_millis(10))
        .unwrap());
    // Now the other context may start.
    other.start().unwrap();
    other.stop(false).unwrap();
}

#[test]
fn describe_is_canonical_and_diffable() {
    let _g = spate::testing::context_lock();
    let build = |window: u64| {
        let ctx = StreamingContext::new(spate::testing::test_config(B)).unwrap();
        let lines = ctx
            .queue_stream(Vec::<Vec<String>>::new(), true, None)
            .unwrap();
        let counts = lines
            .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .unwrap()
            .map(|w| (w, 1u64))
            .unwrap()
            .reduce_by_key_and_window(|a, b| a + b, DurationMs(window), B)
            .unwrap()
            .name("counts")
            .unwrap();
        counts.foreach_batch(|_, _| {}).unwrap();
        ctx.describe()
    };
    let a = build(30_000);
    let b = build(30_000);
    assert_eq!(a, b);
    assert_eq!(a.fingerprint(), b.fingerprint());
    let ids: Vec<u32> = a.operators.iter().map(|o| o.id.0).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    let kinds: Vec<&str> = a.operators.iter().map(|o| o.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "queue_stream",
            "flat_map",
            "map",
            "reduce_by_key_and_window",
            "foreach_batch"
        ]
    );
    assert_eq!(a.operators[3].name.as_deref(), Some("counts"));
    assert_eq!(a.operators[3].element_type, "(alloc::string::String, u64)");
    assert_eq!(a.operators[3].inputs, vec![spate::OperatorId(2)]);
    assert!(a.operators[4].output);
    let text = a.to_string();
    assert!(
        text.contains(
            "#3 reduce_by_key_and_window \"counts\" <- #2 | slide 1 s | window 30 s | partitions 2"
        ),
        "{text}"
    );
    let c = build(60_000);
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_eq!(
        spate::diff(&a, &c).to_string(),
        "operator 3 reduce_by_key_and_window: window 30 s → 1 min"
    );
}

#[test]
fn remember_keeps_only_what_windows_need() {
    let _g = spate::testing::context_lock();
    let clock = spate::ManualClock::new(0);
    let ctx = StreamingContext::with_clock(
        spate::testing::test_config(B),
        std::sync::Arc::new(clock.clone()),
    )
    .unwrap();
    let d = ctx.queue_stream(ones(10), true, None).unwrap();
    let m = d.map(|x| x * 2).unwrap();
    m.window(DurationMs(3000), B)
        .unwrap()
        .foreach_batch(|_, _| {})
        .unwrap();
    ctx.start().unwrap();
    for i in 1..=6 {
        spate::testing::advance_and_wait(&ctx, &clock, BatchTime(i * 1000)).unwrap();
    }
    // The map feeds a 3 s window with slide 1 s: it remembers 1 s + 3 s, so after batch 6 it holds
    // the batches in (2 s, 6 s].
    assert_eq!(
        ctx.remembered_batches(m.id()),
        vec![
            BatchTime(3000),
            BatchTime(4000),
            BatchTime(5000),
            BatchTime(6000)
        ]
    );
    // The queue input is read once and not memoised.
    assert!(ctx.remembered_batches(d.id()).is_empty());
    ctx.stop(false).unwrap();
}

/// Each batch's values sorted, keyed by batch time in ms.
fn sorted_by_time(out: Vec<(BatchTime, Vec<u32>)>) -> Vec<(u64, Vec<u32>)> {
    out.into_iter()
        .map(|(t, mut v)| {
            v.sort();
            (t.0, v)
        })
        .collect()
}
