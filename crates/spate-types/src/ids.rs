//! Identifiers. Each is a `Copy` newtype so ids of different kinds cannot be confused.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Log sequence number of a WAL record: dense, starting at 0, one per appended record, never reused.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The LSN after this one.
    #[must_use]
    pub const fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}

/// Identifies a receiver (input stream with a receiver) within one streaming graph.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ReceiverId(pub u32);

impl fmt::Display for ReceiverId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "receiver {}", self.0)
    }
}

/// A block of received records: the receiver that produced it and its per-receiver sequence number
/// (Spark's `StreamBlockId(streamId, uniqueId)`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct BlockId {
    /// The receiver that produced the block.
    pub receiver: ReceiverId,
    /// Sequence number of the block within its receiver, dense from 0.
    pub seq: u64,
}

impl fmt::Display for BlockId {
    /// `input-<receiver>-<seq>`, as Spark's `StreamBlockId.name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "input-{}-{}", self.receiver.0, self.seq)
    }
}

/// Stable id of an operator (DStream) in the graph: assigned in construction order, so the same
/// build closure yields the same ids on every start. Checkpointed state is bound to operators by it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct OperatorId(pub u32);

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operator {}", self.0)
    }
}

/// A hash partition of a keyed dataset, `0..num_partitions`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {}", self.0)
    }
}

/// Writer generation of a checkpoint location: each writer claims a strictly larger one on open, and
/// a writer whose generation is older than the newest claimed is fenced (refused) before publishing.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Generation(pub u64);

impl Generation {
    /// The generation after this one.
    #[must_use]
    pub const fn next(self) -> Generation {
        Generation(self.0 + 1)
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation {}", self.0)
    }
}
