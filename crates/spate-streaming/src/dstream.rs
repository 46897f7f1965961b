//! [`DStream<T>`]: a discretized stream, and its transformations and window operations.

use crate::batch::Batch;
use crate::context::StreamingContext;
use crate::error::{Result, StreamingError};
use crate::graph::{NarrowFn, Node, NodeMeta, Producer};
use spate_types::{BatchTime, DurationMs, OperatorId};
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

/// What a DStream element must be: cloneable (windows and multi-consumer streams share batches)
/// and shareable across worker threads.
pub trait Data: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Data for T {}

/// What a key of a by-key operator must be.
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

/// A discretized stream (Spark's `DStream[T]`): a sequence of [`Batch`]es, one per valid batch
/// time (every `slide`). Built from a [`StreamingContext`]'s inputs with transformations; nothing
/// runs until an output operation is registered and the context started.
///
/// Every method that adds an operator returns `Result`: operators can only be added before
/// `start` ([`StreamingError::AlreadyStarted`]) and window lengths and slides are validated when
/// the operator is built ([`StreamingError::InvalidWindow`]).
pub struct DStream<T> {
    pub(crate) ctx: StreamingContext,
    pub(crate) node: Arc<Node<T>>,
}

impl<T> Clone for DStream<T> {
    fn clone(&self) -> Self {
        DStream {
            ctx: self.ctx.clone(),
            node: Arc::clone(&self.node),
        }
    }
}

impl<T> fmt::Debug for DStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DStream")
            .field("id", &self.node.meta.id)
            .field("kind", &self.node.meta.kind)
            .field("slide", &self.node.meta.slide)
            .finish()
    }
}

impl<T: Data> DStream<T> {
    pub(crate) fn from_node(ctx: StreamingContext, node: Arc<Node<T>>) -> Self {
        DStream { ctx, node }
    }

    /// This operator's stable id.
    pub fn id(&self) -> OperatorId {
        self.node.meta.id
    }

    /// This operator's slide (how often it produces a batch).
    pub fn slide(&self) -> DurationMs {
        self.node.meta.slide
    }

    /// The context this stream belongs to.
    pub fn context(&self) -> &StreamingContext {
        &self.ctx
    }

    /// Gives the operator a user name (shown in descriptions, diffs and listener events).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`]: names are part of the graph's identity.
    pub fn name(self, name: impl Into<String>) -> Result<Self> {
        if self.ctx.state() != crate::context::ContextState::Initialized {
            return Err(StreamingError::AlreadyStarted { kind: "name" });
        }
        self.node.meta.set_name(name.into());
        Ok(self)
    }

    pub(crate) fn derive<U: Data>(
        &self,
        kind: &'static str,
        inputs: Vec<OperatorId>,
        adjust: impl FnOnce(&mut NodeMeta),
        compute: impl Fn(BatchTime) -> Result<Option<Batch<U>>> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        let slide = self.slide();
        let node = self.ctx.register::<U>(kind, |id| {
            let mut m = NodeMeta::new(id, kind, inputs, slide, std::any::type_name::<U>());
            adjust(&mut m);
            (m, Box::new(compute))
        })?;
        Ok(DStream::from_node(self.ctx.clone(), node))
    }

    /// A batch-to-batch transformation of this stream alone (nothing in its graph description
    /// beyond `kind`): `f` gets each generated batch of the parent and its batch time.
    fn per_batch<U: Data>(
        &self,
        kind: &'static str,
        f: impl Fn(Batch<T>, BatchTime) -> Batch<U> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        let parent = Arc::clone(&self.node);
        self.derive(
            kind,
            vec![self.id()],
            |_| {},
            move |t| Ok(parent.get_or_compute(t)?.map(|b| f(b, t))),
        )
    }

    /// A per-partition transformation of this stream (map, filter, flat_map, map_partitions).
    pub(crate) fn narrow<U: Data>(
        &self,
        kind: &'static str,
        f: impl Fn(Vec<T>) -> Vec<U> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        self.per_batch(kind, move |b, _| b.par_map_partitions(&f))
    }

    /// An element-wise operator fused with its parent's producers.
    fn fused<U: Data>(
        &self,
        kind: &'static str,
        stage: impl Fn(T, &mut dyn FnMut(U)) + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        let parent = Arc::clone(&self.node);
        let stage = Arc::new(stage);
        let slide = self.slide();
        let input = self.id();
        let node = self.ctx.register_narrow::<U>(kind, |id| {
            let m = NodeMeta::new(id, kind, vec![input], slide, std::any::type_name::<U>());
            let f: NarrowFn<U> = Box::new(move |t| {
                Ok(parent.producers(t)?.map(|ps| {
                    ps.into_iter()
                        .map(|pp| {
                            let st = Arc::clone(&stage);
                            Box::new(move |sink: &mut dyn FnMut(U)| {
                                pp(&mut |x| st(x, &mut *sink));
                            }) as Producer<U>
                        })
                        .collect()
                }))
            });
            (m, f)
        })?;
        Ok(DStream::from_node(self.ctx.clone(), node))
    }

    /// Applies `f` to every element.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn map<U: Data>(&self, f: impl Fn(T) -> U + Send + Sync + 'static) -> Result<DStream<U>> {
        self.fused("map", move |x, sink| sink(f(x)))
    }

    /// Maps every element to zero or more elements.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn flat_map<U: Data, I>(
        &self,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> Result<DStream<U>>
    where
        I: IntoIterator<Item = U>,
    {
        self.fused("flat_map", move |x, sink| {
            for y in f(x) {
                sink(y);
            }
        })
    }

    /// Keeps the elements for which `f` is true.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Result<DStream<T>> {
        self.fused("filter", move |x, sink| {
            if f(&x) {
                sink(x);
            }
        })
    }

    /// Transforms each partition as a whole (Spark's `mapPartitions`).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn map_partitions<U: Data, I>(
        &self,
        f: impl Fn(Vec<T>) -> I + Send + Sync + 'static,
    ) -> Result<DStream<U>>
    where
        I: IntoIterator<Item = U>,
    {
        self.narrow("map_partitions", move |p| f(p).into_iter().collect())
    }

    /// Applies a batch-to-batch function (Spark's `transform((rdd, time) => ...)`).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(Batch<T>, BatchTime) -> Batch<U> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        self.per_batch("transform", f)
    }

    /// The elements of both streams (partitions of `self` first).
    ///
    /// # Errors
    /// [`StreamingError::DifferentContext`], [`StreamingError::SlideMismatch`],
    /// [`StreamingError::AlreadyStarted`].
    pub fn union(&self, other: &DStream<T>) -> Result<DStream<T>> {
        self.check_pair("union", other.id(), other.slide(), &other.ctx)?;
        let (a, b) = (Arc::clone(&self.node), Arc::clone(&other.node));
        self.derive(
            "union",
            vec![self.id(), other.id()],
            |_| {},
            move |t| {
                let parts = [a.get_or_compute(t)?, b.get_or_compute(t)?];
                Ok(Some(Batch::concat(parts.into_iter().flatten())))
            },
        )
    }

    pub(crate) fn check_pair(
        &self,
        kind: &'static str,
        other: OperatorId,
        other_slide: DurationMs,
        other_ctx: &StreamingContext,
    ) -> Result<()> {
        if !self.ctx.same_context(other_ctx) {
            return Err(StreamingError::DifferentContext { kind });
        }
        if self.slide() != other_slide {
            return Err(StreamingError::SlideMismatch {
                kind,
                left: self.id(),
                left_slide: self.slide(),
                right: other,
                right_slide: other_slide,
            });
        }
        Ok(())
    }

    /// Redistributes the elements round-robin over `partitions` partitions (deterministic).
    ///
    /// # Errors
    /// [`StreamingError::InvalidArgument`] for 0 partitions, [`StreamingError::AlreadyStarted`].
    pub fn repartition(&self, partitions: usize) -> Result<DStream<T>> {
        if partitions == 0 {
            return Err(StreamingError::InvalidArgument {
                kind: "repartition",
                reason: "partition count must be at least 1".into(),
            });
        }
        let parent = Arc::clone(&self.node);
        self.derive(
            "repartition",
            vec![self.id()],
            |m| m.partitions = u32::try_from(partitions).ok(),
            move |t| {
                Ok(parent.get_or_compute(t)?.map(|b| {
                    let mut parts: Vec<Vec<T>> = (0..partitions).map(|_| Vec::new()).collect();
                    for (i, x) in b.into_vec().into_iter().enumerate() {
                        parts[i % partitions].push(x);
                    }
                    Batch::from_partitions(parts)
                }))
            },
        )
    }

    /// One element per batch: the number of elements (0 for an empty batch, as Spark's `count`).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn count(&self) -> Result<DStream<u64>> {
        self.per_batch("count", |b, _| Batch::from_vec(vec![b.len() as u64]))
    }

    /// One element per non-empty batch: all elements combined with the associative `f`
    /// (partitions reduced in parallel, then in partition order).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Send + Sync + 'static) -> Result<DStream<T>> {
        self.per_batch("reduce", move |b, _| {
            let partials = b.par_map_partitions(|p| p.into_iter().reduce(&f).into_iter().collect());
            Batch::from_vec(
                partials
                    .into_vec()
                    .into_iter()
                    .reduce(&f)
                    .into_iter()
                    .collect(),
            )
        })
    }

    /// Per distinct element, its number of occurrences in the batch.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn count_by_value(&self) -> Result<DStream<(T, u64)>>
    where
        T: Hash + Eq,
    {
        self.map(|x| (x, 1u64))?.reduce_by_key(|a, b| a + b)
    }

    pub(crate) fn check_window(
        &self,
        kind: &'static str,
        window: DurationMs,
        slide: DurationMs,
    ) -> Result<()> {
        let ps = self.slide();
        let err = |reason| StreamingError::InvalidWindow {
            kind,
            parent: self.id(),
            window,
            slide,
            parent_slide: ps,
            reason,
        };
        if !window.is_multiple_of(ps) {
            return Err(err(
                "the window duration must be a positive multiple of the parent's slide duration",
            ));
        }
        if !slide.is_multiple_of(ps) {
            return Err(err(
                "the slide duration must be a positive multiple of the parent's slide duration",
            ));
        }
        Ok(())
    }

    /// The parent's batches at its valid times in `(t - window, t]`, oldest first.
    pub(crate) fn window_times(
        t: BatchTime,
        window: DurationMs,
        parent_slide: DurationMs,
    ) -> Vec<BatchTime> {
        let mut times = Vec::new();
        let mut k = 0u64;
        while k * parent_slide.0 < window.0 {
            match t.0.checked_sub(k * parent_slide.0) {
                Some(x) if x > 0 => times.push(BatchTime(x)),
                _ => break,
            }
            k += 1;
        }
        times.reverse();
        times
    }

    /// Every `slide`, the union of this stream's batches of the last `window` (Spark's
    /// `window(windowDuration, slideDuration)`): the batches at this stream's times in
    /// `(t - window, t]`.
    ///
    /// # Errors
    /// [`StreamingError::InvalidWindow`] unless both are positive multiples of this stream's slide;
    /// [`StreamingError::AlreadyStarted`].
    pub fn window(&self, window: DurationMs, slide: DurationMs) -> Result<DStream<T>> {
        self.windowed("window", window, slide, None, |b| b)
    }

    /// A windowed operator: every `slide`, `f` over the batches of the last `window` concatenated
    /// (in time order, newest first as [`Self::window_times`] lists them); `partitions` is recorded
    /// in the graph description when the output is hash-partitioned.
    pub(crate) fn windowed<U: Data>(
        &self,
        kind: &'static str,
        window: DurationMs,
        slide: DurationMs,
        partitions: Option<usize>,
        f: impl Fn(Batch<T>) -> Batch<U> + Send + Sync + 'static,
    ) -> Result<DStream<U>> {
        self.check_window(kind, window, slide)?;
        let parent = Arc::clone(&self.node);
        let ps = self.slide();
        let adjust = |m: &mut NodeMeta| {
            m.slide = slide;
            m.window = Some(window);
            m.parent_lookback = window;
            m.partitions = partitions.and_then(|n| u32::try_from(n).ok());
        };
        self.derive(kind, vec![self.id()], adjust, move |t| {
            let mut bs = Vec::new();
            for tt in Self::window_times(t, window, ps) {
                if let Some(b) = parent.get_or_compute(tt)? {
                    bs.push(b);
                }
            }
            Ok(Some(f(Batch::concat(bs))))
        })
    }

    /// Every `slide`, the number of elements in the last `window` (one element, 0 if empty).
    ///
    /// # Errors
    /// As [`window`](Self::window).
    pub fn count_by_window(&self, window: DurationMs, slide: DurationMs) -> Result<DStream<u64>> {
        self.window(window, slide)?.count()
    }

    /// Every `slide`, the elements of the last `window` combined with the associative `f` (Spark's
    /// `reduceByWindow`: each batch is reduced once, then the window of reductions is reduced).
    ///
    /// # Errors
    /// As [`window`](Self::window).
    pub fn reduce_by_window(
        &self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        window: DurationMs,
        slide: DurationMs,
    ) -> Result<DStream<T>> {
        self.check_window("reduce_by_window", window, slide)?;
        let f = Arc::new(f);
        let f2 = Arc::clone(&f);
        self.reduce(move |a, b| f(a, b))?
            .window(window, slide)?
            .reduce(move |a, b| f2(a, b))
    }
}
