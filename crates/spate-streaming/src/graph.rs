//! The DStream graph: operator nodes with stable ids, per-batch memoisation (Spark's
//! `generatedRDDs` + `rememberDuration`), and the canonical [`GraphDescription`] with its
//! fingerprint and structured [`diff`].

use crate::batch::Batch;
use crate::error::Result;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use spate_types::{BatchTime, DurationMs, OperatorId};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Static facts about one operator, shared by its typed node and the graph.
#[derive(Debug)]
pub(crate) struct NodeMeta {
    pub(crate) id: OperatorId,
    pub(crate) kind: &'static str,
    name: Mutex<Option<String>>,
    pub(crate) inputs: Vec<OperatorId>,
    pub(crate) slide: DurationMs,
    pub(crate) window: Option<DurationMs>,
    pub(crate) partitions: Option<u32>,
    pub(crate) element_type: &'static str,
    pub(crate) state_type: Option<&'static str>,
    pub(crate) state_version: Option<u32>,
    pub(crate) detail: Option<String>,
    pub(crate) is_output: bool,
    /// How much further back than its own batch this operator reads its parents (window length,
    /// plus a slide for the inverse-reduce window); drives the parents' remember duration.
    pub(crate) parent_lookback: DurationMs,
    /// Always memoise this node's batches (operators that read their own previous result).
    pub(crate) self_remember: DurationMs,
    /// Why merging consecutive batches of this operator could change its result
    /// (`missed_batches = coalesce`, [`crate::plan::coalesce_veto`]); `None`: it cannot.
    pub(crate) merge_unsafe: Option<&'static str>,
    // Set at start:
    pub(crate) zero_time: AtomicU64,
    pub(crate) remember: AtomicU64,
    pub(crate) cache: AtomicBool,
    pub(crate) consumers: AtomicU32,
}

impl NodeMeta {
    /// An operator with no window, partition count, state or detail yet (the caller sets those).
    pub(crate) fn new(
        id: OperatorId,
        kind: &'static str,
        inputs: Vec<OperatorId>,
        slide: DurationMs,
        element_type: &'static str,
    ) -> Self {
        NodeMeta {
            id,
            kind,
            name: Mutex::new(None),
            inputs,
            slide,
            window: None,
            partitions: None,
            element_type,
            state_type: None,
            state_version: None,
            detail: None,
            is_output: false,
            parent_lookback: DurationMs::ZERO,
            self_remember: DurationMs::ZERO,
            merge_unsafe: None,
            zero_time: AtomicU64::new(u64::MAX),
            remember: AtomicU64::new(0),
            cache: AtomicBool::new(false),
            consumers: AtomicU32::new(0),
        }
    }

    /// Spark's `isTimeValid`: after zero time and on this operator's slide grid.
    pub(crate) fn is_time_valid(&self, t: BatchTime) -> bool {
        let zero = self.zero_time.load(Ordering::Acquire);
        zero != u64::MAX && t.0 > zero && (t.0 - zero).is_multiple_of(self.slide.0)
    }

    /// Names the operator (`DStream::named`); shown in descriptions and job listings.
    pub(crate) fn set_name(&self, name: String) {
        *self.name.lock() = Some(name);
    }

    /// The operator's kind, followed by its name if it has one (`foreach_batch "sink"`).
    pub(crate) fn kind_and_name(&self) -> String {
        match &*self.name.lock() {
            Some(n) => format!("{} {n:?}", self.kind),
            None => self.kind.to_owned(),
        }
    }

    pub(crate) fn describe(&self) -> OperatorDescription {
        OperatorDescription {
            id: self.id,
            kind: self.kind.to_owned(),
            name: self.name.lock().clone(),
            inputs: self.inputs.clone(),
            slide: self.slide,
            window: self.window,
            partitions: self.partitions,
            element_type: self.element_type.to_owned(),
            state_type: self.state_type.map(str::to_owned),
            state_version: self.state_version,
            output: self.is_output,
            detail: self.detail.clone(),
        }
    }
}

/// The computation of one operator's batch from its parents.
pub(crate) type ComputeFn<T> = Box<dyn Fn(BatchTime) -> Result<Option<Batch<T>>> + Send + Sync>;

/// One partition of a batch as a push producer: calling it pushes every element into the sink.
/// Chains of element-wise operators compose producers, so map → flat_map → filter → the map side
/// of a shuffle run as one loop per partition without intermediate vectors (Spark's pipelining of
/// narrow dependencies within a stage).
pub(crate) type Producer<T> = Box<dyn FnOnce(&mut dyn FnMut(T)) + Send>;

/// A fused element-wise operator: the producers of its batch at a time.
pub(crate) type NarrowFn<T> =
    Box<dyn Fn(BatchTime) -> Result<Option<Vec<Producer<T>>>> + Send + Sync>;

/// A typed operator: computes and memoises its batches.
pub(crate) struct Node<T> {
    pub(crate) meta: NodeMeta,
    compute: ComputeFn<T>,
    narrow: Option<NarrowFn<T>>,
    generated: Mutex<BTreeMap<BatchTime, Batch<T>>>,
}

/// The producers reading a materialised batch (moving records out of unshared partitions).
pub(crate) fn batch_producers<T: Clone + Send + Sync + 'static>(b: Batch<T>) -> Vec<Producer<T>> {
    b.arcs()
        .iter()
        .cloned()
        .map(|p| {
            Box::new(move |sink: &mut dyn FnMut(T)| {
                for x in crate::batch::take_arc(p) {
                    sink(x);
                }
            }) as Producer<T>
        })
        .collect()
}

/// Runs producers partition-parallel into a batch.
pub(crate) fn materialize<T: Send + Sync>(ps: Vec<Producer<T>>) -> Batch<T> {
    use rayon::prelude::*;
    let run = |p: Producer<T>| {
        let mut v = Vec::new();
        p(&mut |x| v.push(x));
        std::sync::Arc::new(v)
    };
    let parts = if ps.len() == 1 {
        ps.into_iter().map(run).collect()
    } else {
        ps.into_par_iter().map(run).collect()
    };
    Batch::from_arcs(parts)
}

impl<T> fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node").field("meta", &self.meta).finish()
    }
}

impl<T: Send + Sync + 'static> Node<T> {
    pub(crate) fn new(meta: NodeMeta, compute: ComputeFn<T>) -> Self {
        Node {
            meta,
            compute,
            narrow: None,
            generated: Mutex::new(BTreeMap::new()),
        }
    }

    pub(crate) fn new_narrow(meta: NodeMeta, narrow: NarrowFn<T>) -> Self {
        Node {
            meta,
            compute: Box::new(|_| Ok(None)),
            narrow: Some(narrow),
            generated: Mutex::new(BTreeMap::new()),
        }
    }

    /// Spark's `getOrCompute`: `None` for times that are not valid for this operator; otherwise the
    /// memoised batch or a freshly computed one (memoised if a consumer needs it again).
    pub(crate) fn get_or_compute(&self, t: BatchTime) -> Result<Option<Batch<T>>> {
        if !self.meta.is_time_valid(t) {
            return Ok(None);
        }
        if let Some(b) = self.generated.lock().get(&t) {
            return Ok(Some(b.clone()));
        }
        let out = match &self.narrow {
            Some(n) => n(t)?.map(materialize),
            None => (self.compute)(t)?,
        };
        if let Some(b) = &out {
            if self.meta.cache.load(Ordering::Acquire) {
                self.generated.lock().entry(t).or_insert_with(|| b.clone());
            }
        }
        Ok(out)
    }
}

impl<T: Clone + Send + Sync + 'static> Node<T> {
    /// This operator's batch at `t` as producers: fused through element-wise operators unless
    /// the batch is memoised (then read from the memoised batch).
    pub(crate) fn producers(&self, t: BatchTime) -> Result<Option<Vec<Producer<T>>>> {
        if !self.meta.is_time_valid(t) {
            return Ok(None);
        }
        if let Some(n) = &self.narrow {
            if !self.meta.cache.load(Ordering::Acquire) {
                return n(t);
            }
        }
        Ok(self.get_or_compute(t)?.map(batch_producers))
    }
}

/// The type-erased view of a node the graph needs.
pub(crate) trait GraphNode: Send + Sync {
    fn meta(&self) -> &NodeMeta;
    /// Spark's `clearMetadata(time)`: forget batches at or before `time - remember`.
    fn clear_metadata(&self, time: BatchTime);
    fn generated_times(&self) -> Vec<BatchTime>;
}

impl<T: Send + Sync + 'static> GraphNode for Node<T> {
    fn meta(&self) -> &NodeMeta {
        &self.meta
    }

    fn clear_metadata(&self, time: BatchTime) {
        let remember = self.meta.remember.load(Ordering::Acquire);
        let limit = time.0.saturating_sub(remember);
        let mut g = self.generated.lock();
        // Keep entries with time > limit.
        let keep = g.split_off(&BatchTime(limit.saturating_add(1)));
        *g = keep;
    }

    fn generated_times(&self) -> Vec<BatchTime> {
        self.generated.lock().keys().copied().collect()
    }
}

/// Computes remember durations and memoisation flags (Spark's `DStreamGraph.rememberDuration` /
/// `DStream.remember`): every operator remembers at least its slide; a windowed child makes its
/// parents remember `child's remember + window`.
pub(crate) fn plan_remember(nodes: &[&NodeMeta]) {
    for m in nodes {
        m.remember
            .store(m.slide.0.max(m.self_remember.0), Ordering::Release);
        if m.self_remember.0 > 0 {
            m.cache.store(true, Ordering::Release);
        }
    }
    for m in nodes.iter().rev() {
        let r = m.remember.load(Ordering::Acquire);
        for p in &m.inputs {
            if let Some(pm) = nodes.get(p.0 as usize) {
                let want = r.saturating_add(m.parent_lookback.0);
                pm.remember.fetch_max(want, Ordering::AcqRel);
                if m.parent_lookback.0 > 0 || pm.consumers.load(Ordering::Acquire) > 1 {
                    pm.cache.store(true, Ordering::Release);
                }
            }
        }
    }
}

/// One operator in a [`GraphDescription`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorDescription {
    /// Stable id (construction order).
    pub id: OperatorId,
    /// Operator kind, e.g. `map`, `reduce_by_key_and_window`, `queue_stream`, `foreach_batch`.
    pub kind: String,
    /// User-given name (`.name("counts")`).
    pub name: Option<String>,
    /// Parent operators.
    pub inputs: Vec<OperatorId>,
    /// Slide (for inputs and most operators the batch interval).
    pub slide: DurationMs,
    /// Window length of windowed operators.
    pub window: Option<DurationMs>,
    /// Partition count of shuffled results.
    pub partitions: Option<u32>,
    /// `std::any::type_name` of the element type (stable for one compiler version; a compiler
    /// upgrade may change it, which the compatibility check reports as a type change).
    pub element_type: String,
    /// Type name of keyed state (stateful operators; later issues).
    pub state_type: Option<String>,
    /// User-declared state version (stateful operators; later issues).
    pub state_version: Option<u32>,
    /// True for output operations (jobs).
    pub output: bool,
    /// Informational text (the receiver's or source's `describe()`, `inverse`); part of the
    /// fingerprint.
    pub detail: Option<String>,
}

/// A canonical, serialisable description of a streaming graph: the identity recovery compares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphDescription {
    /// The batch interval.
    pub batch_interval: DurationMs,
    /// Operators (including outputs), in id order.
    pub operators: Vec<OperatorDescription>,
}

impl GraphDescription {
    /// The canonical encoding (the `spate_types::codec` encoding of this value).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Encoding plain structs of strings and integers cannot fail; an empty vector would only
        // make every graph's fingerprint equal, never a panic.
        spate_types::codec::encode(self).unwrap_or_default()
    }

    /// A stable fingerprint: CRC-32 (crc32fast) of the canonical encoding, as 8 hex digits.
    pub fn fingerprint(&self) -> String {
        format!("{:08x}", crc32fast::hash(&self.canonical_bytes()))
    }

    /// The operator with `id`.
    pub fn operator(&self, id: OperatorId) -> Option<&OperatorDescription> {
        self.operators.iter().find(|o| o.id == id)
    }
}

impl fmt::Display for GraphDescription {
    /// One line per operator:
    /// `#3 reduce_by_key "counts" <- #2 | slide 1 s | partitions 2 | (alloc::string::String, u64)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "graph fingerprint {} batch interval {}",
            self.fingerprint(),
            self.batch_interval
        )?;
        for o in &self.operators {
            write!(f, "#{} {}", o.id.0, o.kind)?;
            if let Some(n) = &o.name {
                write!(f, " {n:?}")?;
            }
            if !o.inputs.is_empty() {
                let ins: Vec<String> = o.inputs.iter().map(|i| format!("#{}", i.0)).collect();
                write!(f, " <- {}", ins.join(", "))?;
            }
            write!(f, " | slide {}", o.slide)?;
            if let Some(w) = o.window {
                write!(f, " | window {w}")?;
            }
            if let Some(p) = o.partitions {
                write!(f, " | partitions {p}")?;
            }
            write!(f, " | {}", o.element_type)?;
            if let Some(s) = &o.state_type {
                write!(f, " | state {s}")?;
            }
            if let Some(v) = o.state_version {
                write!(f, " v{v}")?;
            }
            if let Some(d) = &o.detail {
                write!(f, " | {d}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

/// One difference between two graph descriptions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum GraphChange {
    /// The batch interval changed.
    BatchInterval {
        /// Old value.
        old: DurationMs,
        /// New value.
        new: DurationMs,
    },
    /// An operator exists only in the new graph.
    Added {
        /// Its id.
        id: OperatorId,
        /// Its kind.
        kind: String,
    },
    /// An operator exists only in the old graph.
    Removed {
        /// Its id.
        id: OperatorId,
        /// Its kind.
        kind: String,
    },
    /// A property of an operator present in both changed.
    Changed {
        /// Its id.
        id: OperatorId,
        /// Its kind in the new graph.
        kind: String,
        /// The property (`kind`, `name`, `inputs`, `slide`, `window`, `partitions`, `element type`,
        /// `state type`, `state version`, `output`, `detail`).
        field: String,
        /// Old value, rendered.
        old: String,
        /// New value, rendered.
        new: String,
    },
}

impl fmt::Display for GraphChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphChange::BatchInterval { old, new } => write!(f, "batch interval {old} → {new}"),
            GraphChange::Added { id, kind } => write!(f, "{id} added: {kind}"),
            GraphChange::Removed { id, kind } => write!(f, "{id} removed: {kind}"),
            GraphChange::Changed {
                id,
                kind,
                field,
                old,
                new,
            } => write!(f, "{id} {kind}: {field} {old} → {new}"),
        }
    }
}

/// The structured differences between two graphs; empty means compatible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphDiff {
    /// The changes, batch interval first, then by operator id.
    pub changes: Vec<GraphChange>,
}

impl GraphDiff {
    /// True if the graphs are identical in everything the description records.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for GraphDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changes.is_empty() {
            return write!(f, "no differences");
        }
        for (i, c) in self.changes.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "none".to_owned(), ToString::to_string)
}

/// Compares two descriptions operator by operator (matched by id).
pub fn diff(old: &GraphDescription, new: &GraphDescription) -> GraphDiff {
    let mut changes = Vec::new();
    if old.batch_interval != new.batch_interval {
        changes.push(GraphChange::BatchInterval {
            old: old.batch_interval,
            new: new.batch_interval,
        });
    }
    let olds: BTreeMap<OperatorId, &OperatorDescription> =
        old.operators.iter().map(|o| (o.id, o)).collect();
    let news: BTreeMap<OperatorId, &OperatorDescription> =
        new.operators.iter().map(|o| (o.id, o)).collect();
    let ids: std::collections::BTreeSet<OperatorId> =
        olds.keys().chain(news.keys()).copied().collect();
    for id in ids {
        match (olds.get(&id), news.get(&id)) {
            (None, Some(n)) => changes.push(GraphChange::Added {
                id,
                kind: n.kind.clone(),
            }),
            (Some(o), None) => changes.push(GraphChange::Removed {
                id,
                kind: o.kind.clone(),
            }),
            (Some(o), Some(n)) => {
                let mut field = |name: &str, a: String, b: String| {
                    if a != b {
                        changes.push(GraphChange::Changed {
                            id,
                            kind: n.kind.clone(),
                            field: name.to_owned(),
                            old: a,
                            new: b,
                        });
                    }
                };
                field("kind", o.kind.clone(), n.kind.clone());
                field(
                    "name",
                    o.name.clone().unwrap_or_else(|| "none".into()),
                    n.name.clone().unwrap_or_else(|| "none".into()),
                );
                let ins = |v: &[OperatorId]| {
                    let s: Vec<String> = v.iter().map(|i| i.0.to_string()).collect();
                    format!("[{}]", s.join(", "))
                };
                field("inputs", ins(&o.inputs), ins(&n.inputs));
                field("slide", o.slide.to_string(), n.slide.to_string());
                field("window", opt(&o.window), opt(&n.window));
                field("partitions", opt(&o.partitions), opt(&n.partitions));
                field(
                    "element type",
                    o.element_type.clone(),
                    n.element_type.clone(),
                );
                field("state type", opt(&o.state_type), opt(&n.state_type));
                field(
                    "state version",
                    opt(&o.state_version),
                    opt(&n.state_version),
                );
                field("output", o.output.to_string(), n.output.to_string());
                field("detail", opt(&o.detail), opt(&n.detail));
            }
            (None, None) => {}
        }
    }
    GraphDiff { changes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u32, kind: &str, window: Option<u64>) -> OperatorDescription {
        OperatorDescription {
            id: OperatorId(id),
            kind: kind.into(),
            name: None,
            inputs: if id == 0 {
                vec![]
            } else {
                vec![OperatorId(id - 1)]
            },
            slide: DurationMs(10_000),
            window: window.map(DurationMs),
            partitions: None,
            element_type: "u64".into(),
            state_type: None,
            state_version: None,
            output: false,
            detail: None,
        }
    }

    #[test]
    fn diff_reports_window_change_and_added_operator() {
        let old = GraphDescription {
            batch_interval: DurationMs(1000),
            operators: vec![
                op(0, "queue_stream", None),
                op(1, "reduce_by_key_and_window", Some(30_000)),
            ],
        };
        let mut new = old.clone();
        new.operators[1].window = Some(DurationMs(60_000));
        new.operators.push(op(2, "filter", None));
        let d = diff(&old, &new);
        assert_eq!(
            d.to_string(),
            "operator 1 reduce_by_key_and_window: window 30 s → 1 min; operator 2 added: filter"
        );
        assert!(diff(&old, &old).is_empty());
        assert_ne!(old.fingerprint(), new.fingerprint());
        assert_eq!(old.fingerprint(), old.clone().fingerprint());
        let back: GraphDescription = spate_types::codec::decode(&old.canonical_bytes()).unwrap();
        assert_eq!(back, old);
    }

    #[test]
    fn diff_reports_removed_and_batch_interval() {
        let old = GraphDescription {
            batch_interval: DurationMs(1000),
            operators: vec![op(0, "queue_stream", None), op(1, "map", None)],
        };
        let new = GraphDescription {
            batch_interval: DurationMs(2000),
            operators: vec![op(0, "queue_stream", None)],
        };
        let d = diff(&old, &new);
        assert_eq!(d.changes.len(), 2);
        assert_eq!(
            d.to_string(),
            "batch interval 1 s → 2 s; operator 1 removed: map"
        );
    }
}
