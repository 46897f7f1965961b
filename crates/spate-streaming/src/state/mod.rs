//! Stateful operators (Spark's `updateStateByKey` and `mapWithState`), their state in a
//! [`spate_state::StateBackend`] per partition, and their data checkpoints (DESIGN.md §4 step 5).
//!
//! State of batch `T` is a pure function of the state at the previous batch and `T`'s inputs, which
//! are recorded before `T` runs (I-ENG-1). The state a stateful operator holds is "as of" one batch
//! time, `applied`; computing batch `T` first brings the state to `T − slide` (recursively, from the
//! inputs recorded for those batches), then applies `T`. A restart loads the state of the newest
//! data checkpoint `D` and the rescheduled batches recompute `(D, …]` from their recorded inputs
//! (Spark's lineage from the checkpointed state RDD), so the state after recovery equals the
//! crash-free state key for key (I-FT-1).

mod spec;

pub use spec::{State, StateSpec, UpdateStateSpec};

use crate::batch::Batch;
use crate::dstream::{DStream, Data, Key};
use crate::error::{Result, StreamingError};
use crate::graph::{Node, NodeMeta};
use crate::shuffle::partition_of;
use parking_lot::Mutex;
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use serde::Serialize;
use spate_state::{MemoryBackend, SledStore, Start, StateBackend, Update};
use spate_types::{BatchTime, DurationMs, OperatorId, PartitionId};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Where a stateful operator's backends live (chosen at `start` from the configuration).
#[derive(Clone)]
pub(crate) enum BackendSource {
    Memory,
    Sled(Arc<SledStore>),
}

impl fmt::Debug for BackendSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSource::Memory => f.write_str("Memory"),
            BackendSource::Sled(_) => f.write_str("Sled"),
        }
    }
}

/// The type-erased face of a stateful operator, as the context's checkpointing sees it.
pub(crate) trait StatefulOp: Send + Sync {
    fn operator(&self) -> OperatorId;
    fn kind(&self) -> &'static str;
    fn slide(&self) -> DurationMs;
    fn partitions(&self) -> usize;
    /// The interval the user set with [`DStream::checkpoint`], if any.
    fn requested_interval(&self) -> Option<DurationMs>;
    fn set_requested(&self, d: DurationMs);
    /// Spark's default data-checkpoint interval for this operator.
    fn default_interval(&self) -> DurationMs;
    fn set_interval(&self, d: DurationMs);
    fn interval(&self) -> DurationMs;
    /// Opens empty backends (fresh start or before a restore).
    fn open(&self, source: &BackendSource) -> Result<()>;
    /// Loads the initial state (fresh start only); the state is then "as of" `zero`.
    fn load_initial(&self, zero: BatchTime) -> Result<()>;
    /// Data checkpoint at `t` (state must be as of `t`): per partition the object bytes, a snapshot
    /// if `snapshot`, else a delta on `base`; plus the encoded output of `t` if the operator needs
    /// it to re-emit `t` after a restore (`map_with_state`).
    fn checkpoint(
        &self,
        t: BatchTime,
        snapshot: bool,
        base: BatchTime,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>)>;
    /// Restores the state as of `t` from each partition's objects (snapshot then deltas), and the
    /// output of `t` if stored.
    fn restore(
        &self,
        t: BatchTime,
        objects: Vec<Vec<Vec<u8>>>,
        output: Option<&[u8]>,
    ) -> Result<()>;
    /// Keys held (all partitions).
    fn len(&self) -> u64;
}

fn state_err(op: OperatorId, source: spate_state::StateError) -> StreamingError {
    StreamingError::State {
        operator: op,
        source,
    }
}

fn state_mismatch(op: OperatorId, reason: impl fmt::Display) -> StreamingError {
    StreamingError::StateMismatch {
        operator: op,
        reason: reason.to_string(),
    }
}

/// The typed core shared by both operators: one backend per partition and the time the state is
/// as of.
pub(crate) struct StateCore<K, S> {
    kind: &'static str,
    op: OnceLock<OperatorId>,
    slide: DurationMs,
    partitions: usize,
    backends: Mutex<Vec<Arc<Mutex<Box<dyn StateBackend<K, S>>>>>>,
    /// `u64::MAX` = nothing applied yet.
    applied: AtomicU64,
    /// Serialises batch application (recursion for missed batches happens inside).
    advancing: Mutex<()>,
    requested: Mutex<Option<DurationMs>>,
    interval: AtomicU64,
    default_interval: DurationMs,
    initial: Mutex<Option<Vec<(K, S)>>>,
}

impl<K, S> StateCore<K, S>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
{
    fn new(
        kind: &'static str,
        slide: DurationMs,
        partitions: usize,
        default_interval: DurationMs,
        initial: Option<Vec<(K, S)>>,
    ) -> Self {
        StateCore {
            kind,
            op: OnceLock::new(),
            slide,
            partitions,
            backends: Mutex::new(Vec::new()),
            applied: AtomicU64::new(u64::MAX),
            advancing: Mutex::new(()),
            requested: Mutex::new(None),
            interval: AtomicU64::new(default_interval.0),
            default_interval,
            initial: Mutex::new(initial),
        }
    }

    fn id(&self) -> OperatorId {
        self.op.get().copied().unwrap_or(OperatorId(u32::MAX))
    }

    fn backends(&self) -> Vec<Arc<Mutex<Box<dyn StateBackend<K, S>>>>> {
        self.backends.lock().clone()
    }

    /// The backends, and the input of `bt` hash-partitioned by key like them.
    #[allow(clippy::type_complexity)]
    fn backends_and_input<V: Data>(
        &self,
        parent: &Node<(K, V)>,
        bt: BatchTime,
    ) -> Result<(
        Vec<Arc<Mutex<Box<dyn StateBackend<K, S>>>>>,
        Vec<Vec<(K, V)>>,
    )> {
        let input = parent.get_or_compute(bt)?.unwrap_or_else(Batch::empty);
        Ok((self.backends(), partition_pairs(&input, self.partitions)))
    }

    fn applied_time(&self) -> Option<BatchTime> {
        let a = self.applied.load(Ordering::Acquire);
        (a != u64::MAX).then_some(BatchTime(a))
    }

    /// The whole state as a batch (partition `p` = backend `p`), each partition in the canonical
    /// key order ([`sort_canonical`]) so a batch re-run after a restore emits it identically.
    fn snapshot_batch(&self) -> Result<Batch<(K, S)>> {
        let bs = self.backends();
        let parts: Result<Vec<Vec<(K, S)>>> = bs
            .par_iter()
            .map(|b| {
                let b = b.lock();
                let mut v = Vec::with_capacity(usize::try_from(b.len()).unwrap_or(0));
                b.for_each(&mut |k, s| v.push((k.clone(), s.clone())))
                    .map_err(|e| state_err(self.id(), e))?;
                sort_canonical(&mut v);
                Ok(v)
            })
            .collect();
        Ok(Batch::from_partitions(parts?))
    }

    fn open_backends(&self, source: &BackendSource) -> Result<()> {
        let op = self.id();
        let mut v: Vec<Arc<Mutex<Box<dyn StateBackend<K, S>>>>> = Vec::new();
        for p in 0..self.partitions {
            let b: Box<dyn StateBackend<K, S>> = match source {
                BackendSource::Memory => Box::new(MemoryBackend::<K, S>::new()),
                BackendSource::Sled(store) => Box::new(
                    store
                        .backend::<K, S>(
                            op,
                            PartitionId(u32::try_from(p).unwrap_or(u32::MAX)),
                            Start::Empty,
                        )
                        .map_err(|e| state_err(op, e))?,
                ),
            };
            v.push(Arc::new(Mutex::new(b)));
        }
        *self.backends.lock() = v;
        self.applied.store(u64::MAX, Ordering::Release);
        Ok(())
    }

    fn load_initial_state(&self, zero: BatchTime) -> Result<()> {
        let op = self.id();
        let bs = self.backends();
        if let Some(init) = self.initial.lock().take() {
            let mut parts: Vec<Vec<(K, S)>> = (0..self.partitions).map(|_| Vec::new()).collect();
            for (k, s) in init {
                parts[partition_of(&k, self.partitions)].push((k, s));
            }
            for (b, part) in bs.iter().zip(parts) {
                b.lock().load(part).map_err(|e| state_err(op, e))?;
            }
        }
        self.applied.store(zero.0, Ordering::Release);
        Ok(())
    }

    fn checkpoint_objects(
        &self,
        t: BatchTime,
        snapshot: bool,
        base: BatchTime,
    ) -> Result<Vec<Vec<u8>>> {
        let op = self.id();
        if self.applied_time() != Some(t) {
            return Err(state_mismatch(
                op,
                format!(
                    "data checkpoint at {t} but the state is as of {}",
                    self.applied_time()
                        .map_or_else(|| "nothing".into(), |a| a.to_string())
                ),
            ));
        }
        let bs = self.backends();
        bs.par_iter()
            .enumerate()
            .map(|(p, b)| {
                let mut b = b.lock();
                let part = PartitionId(u32::try_from(p).unwrap_or(u32::MAX));
                let bytes = if snapshot {
                    let bytes = spate_state::export_snapshot(&**b, op, part, t)
                        .map_err(|e| state_err(op, e))?;
                    b.clear_changes();
                    bytes
                } else {
                    let changes = b.take_changes().map_err(|e| state_err(op, e))?;
                    spate_state::export_delta(&changes, op, part, t, base)
                        .map_err(|e| state_err(op, e))?
                };
                Ok(bytes)
            })
            .collect()
    }

    fn restore_objects(&self, t: BatchTime, objects: Vec<Vec<Vec<u8>>>) -> Result<()> {
        let op = self.id();
        if objects.len() != self.partitions {
            return Err(state_mismatch(
                op,
                format!(
                    "checkpoint holds {} partitions, the operator has {}",
                    objects.len(),
                    self.partitions
                ),
            ));
        }
        let bs = self.backends();
        bs.par_iter()
            .zip(objects.into_par_iter())
            .enumerate()
            .try_for_each(|(p, (b, objs))| {
                let part = PartitionId(u32::try_from(p).unwrap_or(u32::MAX));
                let (header, entries) =
                    spate_state::format::restore_borrowed(op, part, objs.iter().map(Vec::as_slice))
                        .map_err(|source| StreamingError::StateRestore {
                            operator: op,
                            partition: part,
                            source,
                        })?;
                if header.time != t {
                    return Err(state_mismatch(
                        op,
                        format!(
                            "partition {p}: state objects end at {} but the checkpoint says {t}",
                            header.time
                        ),
                    ));
                }
                let mut b = b.lock();
                b.clear().map_err(|e| state_err(op, e))?;
                spate_state::import(
                    &mut **b,
                    header.codec,
                    &format!("operator {} partition {p}", op.0),
                    &entries,
                )
                .map_err(|e| state_err(op, e))?;
                Ok(())
            })?;
        self.applied.store(t.0, Ordering::Release);
        Ok(())
    }

    fn total_len(&self) -> u64 {
        self.backends().iter().map(|b| b.lock().len()).sum()
    }
}

/// Brings a stateful operator to batch `t` and returns its output, via `apply(t)` for each batch
/// not yet applied (oldest first).
fn advance_to<K, S, O>(
    core: &StateCore<K, S>,
    t: BatchTime,
    last: &Mutex<Option<(BatchTime, Batch<O>)>>,
    apply: &dyn Fn(BatchTime) -> Result<Batch<O>>,
    current: &dyn Fn(BatchTime) -> Result<Option<Batch<O>>>,
) -> Result<Option<Batch<O>>>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
    O: Data,
{
    let op = core.id();
    let _g = core.advancing.lock();
    let Some(applied) = core.applied_time() else {
        return Err(state_mismatch(
            op,
            "state not opened (was the context started?)",
        ));
    };
    if t <= applied {
        if let Some((lt, b)) = &*last.lock() {
            if *lt == t {
                return Ok(Some(b.clone()));
            }
        }
        if t == applied {
            if let Some(b) = current(t)? {
                return Ok(Some(b));
            }
        }
        return Err(state_mismatch(
            op,
            format!("batch {t} requested but the state is already as of {applied}"),
        ));
    }
    // Batches between the state's time and `t` (missed ones after a restore) are applied first, in
    // order, each from its recorded inputs.
    let step = core.slide.0.max(1);
    let mut next = applied.0 + step;
    let mut out = None;
    while next <= t.0 {
        let b = apply(BatchTime(next))?;
        core.applied.store(next, Ordering::Release);
        out = Some(b);
        next += step;
    }
    if let Some(b) = &out {
        *last.lock() = Some((t, b.clone()));
    }
    Ok(out)
}

/// Sorts entries into a canonical order that depends only on the keys: by a fixed-seed hash of the
/// key, ties broken by the key's encoding. A hash map's iteration order depends on its insertion
/// history, which a restore changes; this order does not, and costs one `u64` sort.
fn sort_canonical<K: Key + Serialize, X>(v: &mut Vec<(K, X)>) {
    use std::hash::Hasher;
    let h = |k: &K| {
        let mut s = rustc_hash::FxHasher::default();
        s.write_u64(0x5370_6174_6553_7461); // "SpateSta"
        std::hash::Hash::hash(k, &mut s);
        s.finish()
    };
    let mut keyed: Vec<(u64, (K, X))> = v.drain(..).map(|e| (h(&e.0), e)).collect();
    keyed.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            spate_types::codec::encode(&a.1 .0)
                .unwrap_or_default()
                .cmp(&spate_types::codec::encode(&b.1 .0).unwrap_or_default())
        })
    });
    v.extend(keyed.into_iter().map(|(_, e)| e));
}

/// Groups a batch of pairs by key into `n` partitions, keeping arrival order within a partition
/// (partition `p` of the result holds the keys with `partition_of(k, n) == p`).
fn partition_pairs<K: Key, V: Data>(b: &Batch<(K, V)>, n: usize) -> Vec<Vec<(K, V)>> {
    let per_input: Vec<Vec<Vec<(K, V)>>> = b
        .partitions()
        .collect::<Vec<_>>()
        .par_iter()
        .map(|part| {
            let mut buckets: Vec<Vec<(K, V)>> = (0..n).map(|_| Vec::new()).collect();
            for (k, v) in part.iter() {
                buckets[partition_of(k, n)].push((k.clone(), v.clone()));
            }
            buckets
        })
        .collect();
    let mut out: Vec<Vec<(K, V)>> = (0..n).map(|_| Vec::new()).collect();
    for buckets in per_input {
        for (p, mut v) in buckets.into_iter().enumerate() {
            out[p].append(&mut v);
        }
    }
    out
}

/// The graph description of a stateful operator: partitions, state type and version (what the
/// compatibility check compares).
fn state_meta<S>(m: &mut NodeMeta, partitions: usize, version: u32) {
    m.partitions = u32::try_from(partitions).ok();
    m.state_type = Some(std::any::type_name::<S>());
    m.state_version = Some(version);
}

/// The partitions of a stateful operator: as requested (at least 1), else the default.
fn state_partitions(kind: &'static str, requested: Option<usize>, default: usize) -> Result<usize> {
    match requested {
        Some(0) => Err(StreamingError::InvalidArgument {
            kind,
            reason: "partition count must be at least 1".into(),
        }),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

fn smallest_multiple_at_least(slide: DurationMs, min: DurationMs) -> DurationMs {
    let s = slide.0.max(1);
    DurationMs(min.0.div_ceil(s).max(1) * s)
}

/// What a stateful operator checkpoints beside its keyed state, and the hooks it needs around the
/// shared [`StateCore`] steps: nothing for `update_state_by_key` (`()`), the output of the
/// checkpointed batch for `map_with_state` ([`LastOutput`]).
trait CheckpointExtra<K, S>: Send + Sync {
    /// Forgets what it holds (backends reopened).
    fn reset(&self) {}
    /// Adjusts the initial state before it is loaded (fresh start only).
    fn prepare_initial(&self, _core: &StateCore<K, S>, _zero: BatchTime) {}
    /// The encoded extra of the data checkpoint at `t`, if any.
    fn encode_at(&self, _t: BatchTime) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Restores the extra of the checkpoint at `t` from what [`Self::encode_at`] stored.
    fn restore_at(&self, _op: OperatorId, _t: BatchTime, _stored: Option<&[u8]>) -> Result<()> {
        Ok(())
    }
}

impl<K, S> CheckpointExtra<K, S> for () {}

/// A keyed stateful operator: the typed core plus what its kind checkpoints beside the state.
struct KeyedStateOp<K, S, X> {
    core: StateCore<K, S>,
    extra: X,
}

impl<K, S, X> StatefulOp for KeyedStateOp<K, S, X>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
    X: CheckpointExtra<K, S>,
{
    fn operator(&self) -> OperatorId {
        self.core.id()
    }
    fn kind(&self) -> &'static str {
        self.core.kind
    }
    fn slide(&self) -> DurationMs {
        self.core.slide
    }
    fn partitions(&self) -> usize {
        self.core.partitions
    }
    fn requested_interval(&self) -> Option<DurationMs> {
        *self.core.requested.lock()
    }
    fn set_requested(&self, d: DurationMs) {
        *self.core.requested.lock() = Some(d);
    }
    fn default_interval(&self) -> DurationMs {
        self.core.default_interval
    }
    fn set_interval(&self, d: DurationMs) {
        self.core.interval.store(d.0, Ordering::Release);
    }
    fn interval(&self) -> DurationMs {
        DurationMs(self.core.interval.load(Ordering::Acquire))
    }
    fn len(&self) -> u64 {
        self.core.total_len()
    }
    fn open(&self, source: &BackendSource) -> Result<()> {
        self.extra.reset();
        self.core.open_backends(source)
    }
    fn load_initial(&self, zero: BatchTime) -> Result<()> {
        self.extra.prepare_initial(&self.core, zero);
        self.core.load_initial_state(zero)
    }
    fn checkpoint(
        &self,
        t: BatchTime,
        snapshot: bool,
        base: BatchTime,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>)> {
        let objects = self.core.checkpoint_objects(t, snapshot, base)?;
        Ok((objects, self.extra.encode_at(t)?))
    }
    fn restore(
        &self,
        t: BatchTime,
        objects: Vec<Vec<Vec<u8>>>,
        output: Option<&[u8]>,
    ) -> Result<()> {
        self.core.restore_objects(t, objects)?;
        self.extra.restore_at(self.core.id(), t, output)
    }
}

/// `update_state_by_key`: the keyed state only.
type UpdateStateOp<K, S> = KeyedStateOp<K, S, ()>;

/// The stored state of a `map_with_state` key: the user's state and the batch time of the last
/// record for the key (for timeouts).
type Timed<S> = (S, u64);

/// `map_with_state`: the keyed state plus the output of the checkpointed batch.
type MapWithStateOp<K, S, M> = KeyedStateOp<K, Timed<S>, LastOutput<M>>;

/// The newest batch `map_with_state` emitted, so a restart that re-runs the checkpointed batch
/// (Spark's rule) re-emits it (Spark keeps it in the checkpointed `MapWithStateRDDRecord`).
struct LastOutput<M>(Mutex<Option<(BatchTime, Batch<M>)>>);

impl<K, S, M> CheckpointExtra<K, Timed<S>> for LastOutput<M>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
    M: Data + Serialize + DeserializeOwned,
{
    fn reset(&self) {
        *self.0.lock() = None;
    }
    fn prepare_initial(&self, core: &StateCore<K, Timed<S>>, zero: BatchTime) {
        // Initial states carry the zero time as their last-record time.
        if let Some(init) = core.initial.lock().as_mut() {
            for (_, (_, t)) in init.iter_mut() {
                *t = zero.0;
            }
        }
    }
    fn encode_at(&self, t: BatchTime) -> Result<Option<Vec<u8>>> {
        let out: Vec<Vec<M>> = match &*self.0.lock() {
            Some((lt, b)) if *lt == t => b.partitions().map(<[M]>::to_vec).collect(),
            _ => Vec::new(),
        };
        let bytes = spate_types::codec::encode(&out).map_err(|source| StreamingError::Encode {
            what: "a stateful operator's output",
            source,
        })?;
        Ok(Some(bytes))
    }
    fn restore_at(&self, op: OperatorId, t: BatchTime, output: Option<&[u8]>) -> Result<()> {
        let parts: Vec<Vec<M>> = match output {
            Some(b) => spate_types::codec::decode(b).map_err(|source| {
                state_err(
                    op,
                    spate_state::StateError::Corrupt {
                        location: "the checkpointed output".into(),
                        what: spate_state::Item::Value,
                        key_prefix: "(none)".into(),
                        source,
                    },
                )
            })?,
            None => Vec::new(),
        };
        *self.0.lock() = Some((t, Batch::from_partitions(parts)));
        Ok(())
    }
}

/// The output of [`DStream::map_with_state`]: the mapped records (deref to [`DStream<M>`]) and
/// [`state_snapshots`](Self::state_snapshots).
pub struct MapWithStateDStream<K, S, M> {
    stream: DStream<M>,
    op: Arc<MapWithStateOp<K, S, M>>,
}

impl<K, S, M> fmt::Debug for MapWithStateDStream<K, S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapWithStateDStream")
            .field("operator", &self.op.core.op.get())
            .finish()
    }
}

impl<K, S, M> std::ops::Deref for MapWithStateDStream<K, S, M> {
    type Target = DStream<M>;
    fn deref(&self) -> &DStream<M> {
        &self.stream
    }
}

impl<K, S, M> MapWithStateDStream<K, S, M>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
    M: Data + Serialize + DeserializeOwned,
{
    /// The mapped records as a plain stream.
    pub fn stream(&self) -> DStream<M> {
        self.stream.clone()
    }

    /// Sets the data-checkpoint interval (see [`DStream::checkpoint`]), keeping access to
    /// [`state_snapshots`](Self::state_snapshots).
    ///
    /// # Errors
    /// As [`DStream::checkpoint`].
    pub fn checkpoint(self, interval: DurationMs) -> Result<Self> {
        self.stream.checkpoint(interval)?;
        Ok(self)
    }

    /// Every key's state after each batch (Spark's `stateSnapshots()`).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn state_snapshots(&self) -> Result<DStream<(K, S)>> {
        let op = Arc::clone(&self.op);
        let main = Arc::clone(&self.stream.node);
        self.stream.derive(
            "state_snapshots",
            vec![self.stream.id()],
            |_| {},
            move |t| {
                // The state is as of `t` once the main operator computed `t`.
                main.get_or_compute(t)?;
                let b = op.core.snapshot_batch()?;
                Ok(Some(Batch::from_partitions(
                    b.partitions()
                        .map(|p| p.iter().map(|(k, (s, _))| (k.clone(), s.clone())).collect())
                        .collect(),
                )))
            },
        )
    }
}

impl<T: Data> DStream<T> {
    /// Sets the data-checkpoint interval of this stateful stream (Spark's `DStream.checkpoint`):
    /// a positive multiple of its slide. Defaults: `update_state_by_key` the smallest multiple of
    /// the slide ≥ 10 s, `map_with_state` 10 × the slide. Checked at `start`.
    ///
    /// # Errors
    /// [`StreamingError::InvalidArgument`] if this stream is not stateful;
    /// [`StreamingError::AlreadyStarted`].
    pub fn checkpoint(&self, interval: DurationMs) -> Result<Self> {
        let ops = self.ctx.inner.state_ops();
        let id = self.id();
        let Some(op) = ops.iter().find(|o| o.operator() == id) else {
            return Err(StreamingError::InvalidArgument {
                kind: "checkpoint",
                reason: format!(
                    "{id} is not a stateful stream (update_state_by_key, map_with_state)"
                ),
            });
        };
        op.set_requested(interval);
        Ok(self.clone())
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
{
    /// Spark's `updateStateByKey`: after every batch, every key's state is
    /// `f(values of the key in this batch, previous state)`; every key with state sees every batch
    /// (with no values if it had none), `None` removes the key. The output is the whole state
    /// `(K, S)` after each batch. Requires a checkpoint location (checked at `start`); data
    /// checkpoints every 10 s by default (see [`checkpoint`](DStream::checkpoint)).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn update_state_by_key<S>(
        &self,
        f: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> Result<DStream<(K, S)>>
    where
        S: Data + Serialize + DeserializeOwned,
    {
        self.update_state_by_key_with(UpdateStateSpec::new(), f)
    }

    /// As [`update_state_by_key`](Self::update_state_by_key) with a partition count, an initial
    /// state and a state version ([`UpdateStateSpec`]).
    ///
    /// # Errors
    /// [`StreamingError::InvalidArgument`] for 0 partitions, [`StreamingError::AlreadyStarted`].
    pub fn update_state_by_key_with<S>(
        &self,
        spec: UpdateStateSpec<K, S>,
        f: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> Result<DStream<(K, S)>>
    where
        S: Data + Serialize + DeserializeOwned,
    {
        const KIND: &str = "update_state_by_key";
        let n = state_partitions(KIND, spec.partitions, self.ctx.config().default_partitions)?;
        let slide = self.slide();
        let fold = spec.coalescable;
        let op = Arc::new(UpdateStateOp {
            core: StateCore::<K, S>::new(
                KIND,
                slide,
                n,
                smallest_multiple_at_least(slide, DurationMs::from_secs(10)),
                spec.initial,
            ),
            extra: (),
        });
        let parent = Arc::clone(&self.node);
        let f = Arc::new(f);
        let me = Arc::clone(&op);
        let last: Arc<Mutex<Option<(BatchTime, Batch<(K, S)>)>>> = Arc::default();
        let stream = self.derive(
            KIND,
            vec![self.id()],
            |m| {
                state_meta::<S>(m, n, spec.version);
                if !fold {
                    m.merge_unsafe =
                        Some("update function not declared a fold (UpdateStateSpec::coalescable)");
                }
            },
            move |t| {
                let core = &me.core;
                let apply = |bt: BatchTime| -> Result<Batch<(K, S)>> {
                    let (bs, parts) = core.backends_and_input(&parent, bt)?;
                    if fold && bt != t && parts.iter().all(Vec::is_empty) {
                        // A fold leaves every state unchanged on no values (`f(&[], s) == s`):
                        // an empty batch before `t` (a coalesced or idle one) costs nothing.
                        return Ok(Batch::empty());
                    }
                    let opid = core.id();
                    bs.par_iter()
                        .zip(parts.into_par_iter())
                        .try_for_each(|(b, pairs)| {
                            let mut grouped: FxHashMap<K, Vec<V>> = FxHashMap::default();
                            for (k, v) in pairs {
                                grouped.entry(k).or_default().push(v);
                            }
                            let mut b = b.lock();
                            b.update_all_with(&mut |k, s| {
                                let vals = grouped.remove(k).unwrap_or_default();
                                match f(&vals, Some(s)) {
                                    Some(ns) => Update::Changed(ns),
                                    None => Update::Removed,
                                }
                            })
                            .map_err(|e| state_err(opid, e))?;
                            // Keys without state yet, in a deterministic order.
                            let mut fresh: Vec<(K, Vec<V>)> = grouped.into_iter().collect();
                            fresh.sort_by_cached_key(|(k, _)| {
                                spate_types::codec::encode(k).unwrap_or_default()
                            });
                            for (k, vals) in fresh {
                                if let Some(s) = f(&vals, None) {
                                    b.put(k, s).map_err(|e| state_err(opid, e))?;
                                }
                            }
                            Ok::<(), StreamingError>(())
                        })?;
                    core.snapshot_batch()
                };
                let current = |_t: BatchTime| core.snapshot_batch().map(Some);
                advance_to(core, t, &last, &apply, &current)
            },
        )?;
        let _ = op.core.op.set(stream.id());
        self.ctx.inner.register_state_op(op as Arc<dyn StatefulOp>);
        Ok(stream)
    }

    /// Spark's `mapWithState`: `spec`'s function is called once per record with the key's state,
    /// which it may read, update or remove; what it returns forms the output stream. Keys idle for
    /// the spec's timeout get one final call and are removed. Requires a checkpoint location
    /// (checked at `start`); data checkpoints every 10 batches by default.
    ///
    /// # Errors
    /// [`StreamingError::InvalidArgument`] for 0 partitions, [`StreamingError::AlreadyStarted`].
    pub fn map_with_state<S, M>(
        &self,
        spec: StateSpec<K, V, S, M>,
    ) -> Result<MapWithStateDStream<K, S, M>>
    where
        S: Data + Serialize + DeserializeOwned,
        M: Data + Serialize + DeserializeOwned,
    {
        const KIND: &str = "map_with_state";
        let n = state_partitions(KIND, spec.partitions, self.ctx.config().default_partitions)?;
        let slide = self.slide();
        let initial = spec
            .initial
            .map(|v| v.into_iter().map(|(k, s)| (k, (s, 0u64))).collect());
        let op = Arc::new(MapWithStateOp {
            core: StateCore::<K, Timed<S>>::new(
                KIND,
                slide,
                n,
                DurationMs(slide.0.saturating_mul(10)),
                initial,
            ),
            extra: LastOutput(Mutex::new(None)),
        });
        let parent = Arc::clone(&self.node);
        let func = Arc::clone(&spec.func);
        let timeout = spec.timeout;
        let me = Arc::clone(&op);
        let stream = self.derive(
            KIND,
            vec![self.id()],
            |m| {
                state_meta::<S>(m, n, spec.version);
                m.detail = timeout.map(|d| format!("timeout {d}"));
                m.merge_unsafe = Some(
                    "its mapped output is per record and batch, and idle timeouts count batches",
                );
            },
            move |t| {
                let core = &me.core;
                let apply = |bt: BatchTime| -> Result<Batch<M>> {
                    let (bs, parts) = core.backends_and_input(&parent, bt)?;
                    let opid = core.id();
                    let outs: Result<Vec<Vec<M>>> = bs
                        .par_iter()
                        .zip(parts.into_par_iter())
                        .map(|(b, pairs)| {
                            let mut b = b.lock();
                            let mut out = Vec::new();
                            let mut touched: FxHashSet<K> = FxHashSet::default();
                            for (k, v) in pairs {
                                let old = b.get(&k).map_err(|e| state_err(opid, e))?;
                                let mut st = State::new(old.map(|(s, _)| s), false);
                                if let Some(m) = func(bt, &k, Some(v), &mut st) {
                                    out.push(m);
                                }
                                if st.removed {
                                    b.remove(&k).map_err(|e| state_err(opid, e))?;
                                } else if let Some(s) = st.value {
                                    // A record refreshes the key's idle time (Spark).
                                    b.put(k.clone(), (s, bt.0))
                                        .map_err(|e| state_err(opid, e))?;
                                }
                                touched.insert(k);
                            }
                            if let Some(idle) = timeout {
                                let threshold = bt.0.saturating_sub(idle.0);
                                let mut expired: Vec<(K, S)> = Vec::new();
                                b.update_all_with(&mut |k, (s, last)| {
                                    if last < threshold && !touched.contains(k) {
                                        expired.push((k.clone(), s));
                                        Update::Removed
                                    } else {
                                        Update::Unchanged((s, last))
                                    }
                                })
                                .map_err(|e| state_err(opid, e))?;
                                // Final calls in the canonical key order (deterministic output).
                                sort_canonical(&mut expired);
                                for (k, s) in expired {
                                    let mut st = State::new(Some(s), true);
                                    if let Some(m) = func(bt, &k, None, &mut st) {
                                        out.push(m);
                                    }
                                }
                            }
                            Ok(out)
                        })
                        .collect();
                    Ok(Batch::from_partitions(outs?))
                };
                let current = |_t: BatchTime| Ok(None);
                advance_to(core, t, &me.extra.0, &apply, &current)
            },
        )?;
        let _ = op.core.op.set(stream.id());
        self.ctx
            .inner
            .register_state_op(Arc::clone(&op) as Arc<dyn StatefulOp>);
        Ok(MapWithStateDStream { stream, op })
    }
}
