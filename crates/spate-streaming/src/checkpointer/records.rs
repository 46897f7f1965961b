//! What the engine's manifests record beside the commit protocol's own fields: the keys of
//! `source_positions` (`state`: the stateful operators' data-checkpoint chains, `progress`: the
//! grid high-water mark of I-REC-6), their encodings, and the chains as the checkpointer keeps them.

use spate_checkpoint::{DataObjectRef, Manifest};
use spate_types::{BatchTime, DurationMs, OperatorId};
use std::collections::BTreeMap;

/// `source_positions["state"]` of a manifest: the key of the [`StateMeta`].
pub(super) const STATE_KEY: &str = "state";

/// `source_positions["progress"]` of a manifest: the grid high-water mark (I-REC-6), a `u64` in
/// ms. Absent in manifests written before it (then recovery uses Spark's restart rule).
pub(super) const PROGRESS_KEY: &str = "progress";

/// `source_positions["coalesced"]` of a manifest: its pending coalesced batches
/// (`missed_batches = coalesce`) as `Vec<(batch ms, first covered grid time ms)>`, the workspace
/// codec. Absent when there are none (and in manifests written before it).
pub(super) const COALESCED_KEY: &str = "coalesced";

/// The pending coalesced batches a manifest records (batch → first grid time covered; empty if
/// absent or undecodable: then the restored position is reported per batch, nothing else changes).
pub(crate) fn spans_of(m: &Manifest) -> BTreeMap<BatchTime, BatchTime> {
    m.source_positions
        .get(COALESCED_KEY)
        .and_then(|b| spate_types::codec::decode::<Vec<(u64, u64)>>(b).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(b, f)| (BatchTime(b), BatchTime(f)))
        .collect()
}

/// The grid high-water mark a manifest records (`None`: written before it was recorded, or
/// undecodable — then Spark's restart rule, which reruns more but loses nothing).
pub(crate) fn hwm_of(m: &Manifest) -> Option<BatchTime> {
    m.source_positions
        .get(PROGRESS_KEY)
        .and_then(|b| spate_types::codec::decode::<u64>(b).ok())
        .map(BatchTime)
}

/// What every manifest records besides the commit state: the grid and the inputs' positions.
#[derive(Clone, Debug)]
pub(crate) struct ManifestInputs {
    /// Zero time.
    pub(crate) zero: BatchTime,
    /// The batch interval.
    pub(crate) batch: DurationMs,
    /// Every input's source positions.
    pub(crate) positions: BTreeMap<String, Vec<u8>>,
}

/// The data-checkpoint chain of one stateful operator: the objects (per partition: a snapshot
/// then deltas, in order) that rebuild its state as of `time`.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpChain {
    pub(crate) time: BatchTime,
    pub(crate) partitions: Vec<Vec<DataObjectRef>>,
    pub(crate) output: Option<DataObjectRef>,
    /// Deltas written since the snapshot.
    pub(super) deltas: u32,
    /// The durable data-checkpoint time before `time` (inputs since it are kept, so a fallback by
    /// one data checkpoint can still recompute).
    pub(super) previous: Option<BatchTime>,
}

impl OpChain {
    /// The planners' view of the chain.
    pub(crate) fn facts(&self) -> crate::plan::ChainFacts {
        crate::plan::ChainFacts {
            time: self.time,
            deltas: self.deltas,
            partitions: self.partitions.len(),
            previous: self.previous,
        }
    }
}

/// `source_positions["state"]` of a manifest: per stateful operator, the state's time and its
/// objects in restore order. A path without `/` is a label of the manifest's own data objects.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct StateMeta {
    pub(super) ops: Vec<OpMeta>,
}

/// One operator in [`StateMeta`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct OpMeta {
    pub(super) op: u32,
    pub(super) time: u64,
    pub(super) deltas: u32,
    pub(super) previous: Option<u64>,
    pub(super) partitions: Vec<Vec<String>>,
    pub(super) output: Option<String>,
}

/// Label of a stateful operator's stored output (map_with_state re-emission).
pub(super) fn output_label(op: OperatorId) -> String {
    format!("output-{:010}.bin", op.0)
}
