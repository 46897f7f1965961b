//! Hash partitioning and map-side-combining shuffles for the by-key operators.
//!
//! Partitioning is deterministic across processes and runs: the partition of a key is a seeded
//! `rustc_hash::FxHasher` hash of the key modulo the partition count (no per-process random
//! state), so a recovered run partitions exactly as the original (on the same platform: FxHash of
//! `usize`-sized values depends on the pointer width).

use crate::batch::{take_arc, Batch};
use crate::graph::{batch_producers, Producer};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHasher};
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

const PARTITION_SEED: u64 = 0x5370_6174_6550_6172; // "SpatePar"

/// The partition (`0..n`) of `key` (Spark's `HashPartitioner.getPartition`, with a fixed-key
/// hash). `n` is clamped to at least 1.
pub fn partition_of<K: Hash + ?Sized>(key: &K, n: usize) -> usize {
    let n = n.max(1);
    if n == 1 {
        return 0;
    }
    let mut h = FxHasher::default();
    h.write_u64(PARTITION_SEED);
    key.hash(&mut h);
    // Use the high bits (FxHash's low bits are weak); multiply-shift maps to 0..n.
    ((u128::from(h.finish()) * n as u128) >> 64) as usize
}

type Buckets<K, C> = Vec<FxHashMap<K, Option<C>>>;

fn map_side<K, V, C, CF, MV>(
    part: Producer<(K, V)>,
    n: usize,
    create: &CF,
    merge_value: &MV,
) -> Buckets<K, C>
where
    K: Hash + Eq,
    CF: Fn(V) -> C,
    MV: Fn(C, V) -> C,
{
    let mut buckets: Buckets<K, C> = (0..n).map(|_| FxHashMap::default()).collect();
    part(&mut |(k, v)| {
        let b = partition_of(&k, n);
        match buckets[b].entry(k) {
            Entry::Occupied(e) => {
                let slot = e.into_mut();
                if let Some(c) = slot.take() {
                    *slot = Some(merge_value(c, v));
                }
            }
            Entry::Vacant(e) => {
                e.insert(Some(create(v)));
            }
        }
    });
    buckets
}

fn merge_into<K: Hash + Eq, C, MC: Fn(C, C) -> C>(
    acc: &mut FxHashMap<K, Option<C>>,
    other: FxHashMap<K, Option<C>>,
    merge: &MC,
) {
    if acc.is_empty() {
        *acc = other;
        return;
    }
    for (k, c) in other {
        let Some(c) = c else { continue };
        match acc.entry(k) {
            Entry::Occupied(e) => {
                let slot = e.into_mut();
                if let Some(a) = slot.take() {
                    *slot = Some(merge(a, c));
                }
            }
            Entry::Vacant(e) => {
                e.insert(Some(c));
            }
        }
    }
}

/// Spark's `reduceByKey` (`combineByKey(identity, f, f)`) over a materialized batch: see
/// [`combine_by_key`].
pub(crate) fn reduce_batch<K, V, F>(batch: Batch<(K, V)>, n: usize, f: &F) -> Batch<(K, V)>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: Fn(V, V) -> V + Sync,
{
    combine_by_key(batch_producers(batch), n, &|v| v, f, f)
}

/// Spark's `combineByKey` with map-side combining: every input partition is combined into `n`
/// hash buckets in parallel, then bucket `p` of every input partition is merged into output
/// partition `p` in parallel. Output order is deterministic for a given input. The inputs are
/// producers (fused with the element-wise operators before it).
pub(crate) fn combine_by_key<K, V, C, CF, MV, MC>(
    parts: Vec<Producer<(K, V)>>,
    n: usize,
    create: &CF,
    merge_value: &MV,
    merge_combiners: &MC,
) -> Batch<(K, C)>
where
    K: Hash + Eq + Clone + Send + Sync,
    V: Clone + Send + Sync,
    C: Send + Sync,
    CF: Fn(V) -> C + Sync,
    MV: Fn(C, V) -> C + Sync,
    MC: Fn(C, C) -> C + Sync,
{
    let n = n.max(1);
    let maps: Vec<Buckets<K, C>> = parts
        .into_par_iter()
        .map(|p| map_side(p, n, create, merge_value))
        .collect();
    let mut per_bucket: Vec<Vec<FxHashMap<K, Option<C>>>> =
        (0..n).map(|_| Vec::with_capacity(maps.len())).collect();
    for buckets in maps {
        for (i, b) in buckets.into_iter().enumerate() {
            per_bucket[i].push(b);
        }
    }
    let out: Vec<Arc<Vec<(K, C)>>> = per_bucket
        .into_par_iter()
        .map(|maps| {
            let mut acc: FxHashMap<K, Option<C>> = FxHashMap::default();
            for m in maps {
                merge_into(&mut acc, m, merge_combiners);
            }
            present(acc)
        })
        .collect();
    Batch::from_arcs(out)
}

/// The map side of one input: each of its partitions bucketed by key into `n` combiner maps.
fn map_partitions<K, E, C, CF, MV>(
    side: &Batch<(K, E)>,
    n: usize,
    create: &CF,
    merge_value: &MV,
) -> Vec<Buckets<K, C>>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
    C: Send,
    CF: Fn(E) -> C + Sync,
    MV: Fn(C, E) -> C + Sync,
{
    side.arcs()
        .to_vec()
        .into_par_iter()
        .map(|p| {
            map_side(
                Box::new(move |sink: &mut dyn FnMut((K, E))| {
                    for x in take_arc(p) {
                        sink(x);
                    }
                }),
                n,
                create,
                merge_value,
            )
        })
        .collect()
}

/// The keys of a merged bucket that still hold a combiner, as one partition.
fn present<K, C>(acc: FxHashMap<K, Option<C>>) -> Arc<Vec<(K, C)>> {
    Arc::new(
        acc.into_iter()
            .filter_map(|(k, c)| c.map(|c| (k, c)))
            .collect(),
    )
}

/// Spark's `cogroup`: both sides hash-partitioned into `n` partitions; per key the values of each
/// side in input order.
pub(crate) fn cogroup<K, V, W>(
    left: Batch<(K, V)>,
    right: Batch<(K, W)>,
    n: usize,
) -> Batch<(K, (Vec<V>, Vec<W>))>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    W: Clone + Send + Sync + 'static,
{
    let n = n.max(1);
    type Groups<K, V, W> = FxHashMap<K, Option<(Vec<V>, Vec<W>)>>;
    let lmaps: Vec<Vec<Groups<K, V, W>>> = map_partitions(
        &left,
        n,
        &|v| (vec![v], Vec::new()),
        &|mut c: (Vec<V>, Vec<W>), v| {
            c.0.push(v);
            c
        },
    );
    let rmaps: Vec<Vec<Groups<K, V, W>>> = map_partitions(
        &right,
        n,
        &|w| (Vec::new(), vec![w]),
        &|mut c: (Vec<V>, Vec<W>), w| {
            c.1.push(w);
            c
        },
    );
    let mut per_bucket: Vec<Vec<Groups<K, V, W>>> = (0..n).map(|_| Vec::new()).collect();
    for buckets in lmaps.into_iter().chain(rmaps) {
        for (i, b) in buckets.into_iter().enumerate() {
            per_bucket[i].push(b);
        }
    }
    let out: Vec<Arc<Vec<(K, (Vec<V>, Vec<W>))>>> = per_bucket
        .into_par_iter()
        .map(|maps| {
            let mut acc: Groups<K, V, W> = FxHashMap::default();
            for m in maps {
                merge_into(
                    &mut acc,
                    m,
                    &|mut a: (Vec<V>, Vec<W>), b: (Vec<V>, Vec<W>)| {
                        a.0.extend(b.0);
                        a.1.extend(b.1);
                        a
                    },
                );
            }
            present(acc)
        })
        .collect();
    Batch::from_arcs(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_is_stable_and_in_range() {
        // Pinned values: a change here changes every persisted partitioning.
        let p: Vec<usize> = ["a", "b", "spate", ""]
            .iter()
            .map(|k| partition_of(k, 8))
            .collect();
        assert!(p.iter().all(|x| *x < 8));
        assert_eq!(
            p,
            ["a", "b", "spate", ""]
                .iter()
                .map(|k| partition_of(k, 8))
                .collect::<Vec<_>>()
        );
        assert_eq!(partition_of(&42u64, 1), 0);
        assert_eq!(partition_of(&42u64, 0), 0);
        let mut counts = [0usize; 4];
        for i in 0..10_000u64 {
            counts[partition_of(&i, 4)] += 1;
        }
        assert!(counts.iter().all(|c| *c > 2000), "{counts:?}");
    }

    #[test]
    fn combine_counts_words_across_partitions() {
        let b = Batch::from_partitions(vec![
            vec![("a", 1u64), ("b", 1), ("a", 1)],
            vec![("b", 1), ("c", 1)],
        ]);
        let out = reduce_batch(b, 3, &|a, b| a + b);
        assert_eq!(out.num_partitions(), 3);
        let mut v = out.to_vec();
        v.sort();
        assert_eq!(v, vec![("a", 2), ("b", 2), ("c", 1)]);
        for (i, p) in out.partitions().enumerate() {
            assert!(p.iter().all(|(k, _)| partition_of(k, 3) == i));
        }
    }
}
