//! Operators on key-value streams `DStream<(K, V)>` (Spark's `PairDStreamFunctions`).

use crate::batch::Batch;
use crate::dstream::{DStream, Data, Key};
use crate::error::{Result, StreamingError};
use crate::shuffle;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use spate_types::{BatchTime, DurationMs};
use std::collections::hash_map::Entry;
use std::sync::{Arc, OnceLock, Weak};

type Cogrouped<K, V, W> = (K, (Vec<V>, Vec<W>));

impl<K: Key, V: Data> DStream<(K, V)> {
    fn partitions_or_default(&self, n: Option<usize>, kind: &'static str) -> Result<usize> {
        match n {
            Some(0) => Err(StreamingError::InvalidArgument {
                kind,
                reason: "partition count must be at least 1".into(),
            }),
            Some(n) => Ok(n),
            None => Ok(self.ctx.config().default_partitions),
        }
    }

    /// Applies `f` to every value, keeping the key.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn map_values<W: Data>(
        &self,
        f: impl Fn(V) -> W + Send + Sync + 'static,
    ) -> Result<DStream<(K, W)>> {
        self.map(move |(k, v)| (k, f(v)))
    }

    /// Maps every value to zero or more values, keeping the key.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn flat_map_values<W: Data, I>(
        &self,
        f: impl Fn(V) -> I + Send + Sync + 'static,
    ) -> Result<DStream<(K, W)>>
    where
        I: IntoIterator<Item = W>,
    {
        self.flat_map(move |(k, v)| f(v).into_iter().map(|w| (k.clone(), w)).collect::<Vec<_>>())
    }

    /// Spark's `combineByKey`: per key, `create` makes a combiner from the first value,
    /// `merge_value` folds further values in (map side, per input partition), `merge_combiners`
    /// merges combiners of different partitions. The result is hash-partitioned into `partitions`
    /// (default: `default_partitions`).
    ///
    /// # Errors
    /// [`StreamingError::InvalidArgument`] for 0 partitions, [`StreamingError::AlreadyStarted`].
    pub fn combine_by_key<C: Data>(
        &self,
        create: impl Fn(V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(C, V) -> C + Send + Sync + 'static,
        merge_combiners: impl Fn(C, C) -> C + Send + Sync + 'static,
        partitions: Option<usize>,
    ) -> Result<DStream<(K, C)>> {
        self.combine_kind(
            "combine_by_key",
            create,
            merge_value,
            merge_combiners,
            partitions,
        )
    }

    fn combine_kind<C: Data>(
        &self,
        kind: &'static str,
        create: impl Fn(V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(C, V) -> C + Send + Sync + 'static,
        merge_combiners: impl Fn(C, C) -> C + Send + Sync + 'static,
        partitions: Option<usize>,
    ) -> Result<DStream<(K, C)>> {
        let n = self.partitions_or_default(partitions, kind)?;
        let parent = Arc::clone(&self.node);
        self.derive(
            kind,
            vec![self.id()],
            |m| m.partitions = u32::try_from(n).ok(),
            move |t| {
                Ok(parent.producers(t)?.map(|ps| {
                    shuffle::combine_by_key(ps, n, &create, &merge_value, &merge_combiners)
                }))
            },
        )
    }

    /// Per key, the values combined with the associative, commutative `f` (map-side combining,
    /// hash-partitioned into `default_partitions`).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn reduce_by_key(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
    ) -> Result<DStream<(K, V)>> {
        self.reduce_by_key_into(f, None)
    }

    /// As [`reduce_by_key`](Self::reduce_by_key) into `partitions` partitions.
    ///
    /// # Errors
    /// [`StreamingError::InvalidArgument`] for 0 partitions, [`StreamingError::AlreadyStarted`].
    pub fn reduce_by_key_into(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        partitions: Option<usize>,
    ) -> Result<DStream<(K, V)>> {
        let f = Arc::new(f);
        let f2 = Arc::clone(&f);
        self.combine_kind(
            "reduce_by_key",
            |v| v,
            move |a, b| f(a, b),
            move |a, b| f2(a, b),
            partitions,
        )
    }

    /// Per key, all values of the batch in input order.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn group_by_key(&self) -> Result<DStream<(K, Vec<V>)>> {
        self.combine_kind(
            "group_by_key",
            |v| vec![v],
            |mut c: Vec<V>, v| {
                c.push(v);
                c
            },
            |mut a: Vec<V>, b| {
                a.extend(b);
                a
            },
            None,
        )
    }

    /// Per key of either stream, the values of each stream in the batch (Spark's `cogroup`).
    ///
    /// # Errors
    /// [`StreamingError::DifferentContext`], [`StreamingError::SlideMismatch`],
    /// [`StreamingError::AlreadyStarted`].
    pub fn cogroup<W: Data>(&self, other: &DStream<(K, W)>) -> Result<DStream<Cogrouped<K, V, W>>> {
        self.cogroup_kind("cogroup", other)
    }

    fn cogroup_kind<W: Data>(
        &self,
        kind: &'static str,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<Cogrouped<K, V, W>>> {
        self.check_pair(kind, other.id(), other.slide(), &other.ctx)?;
        let n = self.ctx.config().default_partitions;
        let (a, b) = (Arc::clone(&self.node), Arc::clone(&other.node));
        self.derive(
            kind,
            vec![self.id(), other.id()],
            |m| m.partitions = u32::try_from(n).ok(),
            move |t| {
                let l = a.get_or_compute(t)?.unwrap_or_default();
                let r = b.get_or_compute(t)?.unwrap_or_default();
                Ok(Some(shuffle::cogroup(l, r, n)))
            },
        )
    }

    fn join_kind<W: Data, O: Data>(
        &self,
        kind: &'static str,
        other: &DStream<(K, W)>,
        emit: impl Fn(&K, &[V], &[W], &mut Vec<O>) + Send + Sync + 'static,
    ) -> Result<DStream<O>> {
        self.check_pair(kind, other.id(), other.slide(), &other.ctx)?;
        let co = self.cogroup_kind("cogroup", other)?;
        // The cogroup node is an internal step of the join; the join is the flat map over it.
        co.narrow(kind, move |p: Vec<Cogrouped<K, V, W>>| {
            let mut out = Vec::new();
            for (k, (vs, ws)) in &p {
                emit(k, vs, ws, &mut out);
            }
            out
        })
    }

    /// Inner join: `(k, (v, w))` for every pair of values with the same key in the batch.
    ///
    /// # Errors
    /// As [`cogroup`](Self::cogroup).
    pub fn join<W: Data>(&self, other: &DStream<(K, W)>) -> Result<DStream<(K, (V, W))>> {
        self.join_kind("join", other, |k, vs, ws, out| {
            for v in vs {
                for w in ws {
                    out.push((k.clone(), (v.clone(), w.clone())));
                }
            }
        })
    }

    /// Left outer join: every left value, with `None` where the key has no right value.
    ///
    /// # Errors
    /// As [`cogroup`](Self::cogroup).
    pub fn left_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<(K, (V, Option<W>))>> {
        self.join_kind("left_outer_join", other, |k, vs, ws, out| {
            for v in vs {
                if ws.is_empty() {
                    out.push((k.clone(), (v.clone(), None)));
                }
                for w in ws {
                    out.push((k.clone(), (v.clone(), Some(w.clone()))));
                }
            }
        })
    }

    /// Right outer join: every right value, with `None` where the key has no left value.
    ///
    /// # Errors
    /// As [`cogroup`](Self::cogroup).
    pub fn right_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<(K, (Option<V>, W))>> {
        self.join_kind("right_outer_join", other, |k, vs, ws, out| {
            for w in ws {
                if vs.is_empty() {
                    out.push((k.clone(), (None, w.clone())));
                }
                for v in vs {
                    out.push((k.clone(), (Some(v.clone()), w.clone())));
                }
            }
        })
    }

    /// Full outer join: every pair, and every unmatched value of either side with `None`.
    ///
    /// # Errors
    /// As [`cogroup`](Self::cogroup).
    pub fn full_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> Result<DStream<(K, (Option<V>, Option<W>))>> {
        self.join_kind("full_outer_join", other, |k, vs, ws, out| {
            if ws.is_empty() {
                for v in vs {
                    out.push((k.clone(), (Some(v.clone()), None)));
                }
            } else if vs.is_empty() {
                for w in ws {
                    out.push((k.clone(), (None, Some(w.clone()))));
                }
            } else {
                for v in vs {
                    for w in ws {
                        out.push((k.clone(), (Some(v.clone()), Some(w.clone()))));
                    }
                }
            }
        })
    }

    /// Every `slide`, per key, the values of the last `window` combined with `f` (Spark's
    /// `reduceByKeyAndWindow(func, windowDuration, slideDuration)`): recomputed from the window's
    /// batches each time.
    ///
    /// # Errors
    /// [`StreamingError::InvalidWindow`], [`StreamingError::AlreadyStarted`].
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        window: DurationMs,
        slide: DurationMs,
    ) -> Result<DStream<(K, V)>> {
        let n = self.ctx.config().default_partitions;
        self.windowed(
            "reduce_by_key_and_window",
            window,
            slide,
            Some(n),
            move |b| shuffle::reduce_batch(b, n, &f),
        )
    }

    /// The incremental variant (Spark's `reduceByKeyAndWindow(func, invFunc, window, slide,
    /// numPartitions, filterFunc)`, `ReducedWindowedDStream`): the window at `t` is the window at
    /// `t - slide`, with the batches that left the window removed by `inv` and the batches that
    /// entered added by `f` — `f(inv(previous, old), new)` per key. Keys whose value becomes the
    /// neutral element stay unless `filter` drops them (e.g. `|(_, c)| *c != 0`).
    /// Requires `f` associative and commutative and `inv` its inverse.
    ///
    /// # Errors
    /// [`StreamingError::InvalidWindow`] (also if `window < slide`), [`StreamingError::AlreadyStarted`].
    pub fn reduce_by_key_and_window_inv(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        inv: impl Fn(V, V) -> V + Send + Sync + 'static,
        window: DurationMs,
        slide: DurationMs,
        filter: Option<Box<dyn Fn(&(K, V)) -> bool + Send + Sync>>,
    ) -> Result<DStream<(K, V)>> {
        const KIND: &str = "reduce_by_key_and_window_inverse";
        self.check_window(KIND, window, slide)?;
        if window < slide {
            return Err(StreamingError::InvalidWindow {
                kind: KIND,
                parent: self.id(),
                window,
                slide,
                parent_slide: self.slide(),
                reason: "the window must be at least the slide for the inverse-function variant",
            });
        }
        let n = self.ctx.config().default_partitions;
        let parent = Arc::clone(&self.node);
        let ps = self.slide();
        let me: Arc<OnceLock<Weak<crate::graph::Node<(K, V)>>>> = Arc::new(OnceLock::new());
        let me2 = Arc::clone(&me);
        let has_filter = filter.is_some();
        let out = self.derive(
            KIND,
            vec![self.id()],
            |m| {
                m.slide = slide;
                m.window = Some(window);
                m.parent_lookback = DurationMs(window.0 + slide.0);
                m.self_remember = DurationMs(slide.0.saturating_mul(2));
                m.partitions = u32::try_from(n).ok();
                m.detail = has_filter.then(|| "with filter".to_owned());
            },
            move |t| {
                let prev = match me2.get().and_then(Weak::upgrade) {
                    Some(node) if t.0 > slide.0 => node.get_or_compute(BatchTime(t.0 - slide.0))?,
                    _ => None,
                };
                let gather = |end: u64| -> Result<Batch<(K, V)>> {
                    let mut bs = Vec::new();
                    if end > 0 {
                        for tt in Self::window_times(BatchTime(end), slide, ps) {
                            if let Some(b) = parent.get_or_compute(tt)? {
                                bs.push(b);
                            }
                        }
                    }
                    Ok(Batch::concat(bs))
                };
                // Batches that left: (t - slide - window, t - window]; entered: (t - slide, t].
                let old_b = gather(t.0.saturating_sub(window.0))?;
                let new_b = gather(t.0)?;
                let old = shuffle::reduce_batch(old_b, n, &f);
                let new = shuffle::reduce_batch(new_b, n, &f);
                let prev = prev.unwrap_or_default();
                let parts: Vec<Vec<(K, V)>> = (0..n)
                    .into_par_iter()
                    .map(|p| {
                        let mut m: FxHashMap<K, Option<V>> = FxHashMap::default();
                        for (k, v) in prev.partition(p).unwrap_or(&[]) {
                            m.insert(k.clone(), Some(v.clone()));
                        }
                        for (k, o) in old.partition(p).unwrap_or(&[]) {
                            if let Some(slot) = m.get_mut(k) {
                                if let Some(v) = slot.take() {
                                    *slot = Some(inv(v, o.clone()));
                                }
                            }
                        }
                        for (k, nv) in new.partition(p).unwrap_or(&[]) {
                            match m.entry(k.clone()) {
                                Entry::Occupied(e) => {
                                    let slot = e.into_mut();
                                    if let Some(v) = slot.take() {
                                        *slot = Some(f(v, nv.clone()));
                                    }
                                }
                                Entry::Vacant(e) => {
                                    e.insert(Some(nv.clone()));
                                }
                            }
                        }
                        m.into_iter()
                            .filter_map(|(k, v)| v.map(|v| (k, v)))
                            .filter(|kv| filter.as_ref().is_none_or(|flt| flt(kv)))
                            .collect()
                    })
                    .collect();
                Ok(Some(Batch::from_partitions(parts)))
            },
        )?;
        let _ = me.set(Arc::downgrade(&out.node));
        Ok(out)
    }
}

impl<T: Key> DStream<T> {
    /// Every `slide`, per distinct element, its count over the last `window` (Spark's
    /// `countByValueAndWindow`: the inverse-function variant, dropping keys whose count falls to 0).
    ///
    /// # Errors
    /// As [`reduce_by_key_and_window_inv`](DStream::reduce_by_key_and_window_inv).
    pub fn count_by_value_and_window(
        &self,
        window: DurationMs,
        slide: DurationMs,
    ) -> Result<DStream<(T, u64)>> {
        self.check_window("count_by_value_and_window", window, slide)?;
        self.map(|x| (x, 1u64))?.reduce_by_key_and_window_inv(
            |a, b| a + b,
            |a, b| a - b,
            window,
            slide,
            Some(Box::new(|(_, c): &(T, u64)| *c != 0)),
        )
    }
}
