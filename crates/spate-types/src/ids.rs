//! Identifiers. Each is a `Copy` newtype so ids of different kinds cannot be confused.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A `Copy` id newtype over an integer, displayed as `<label> <n>`; `next` adds `const fn next`.
macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident($int:ty), $label:literal $(, $next:ident)?) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        pub struct $name(pub $int);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, " {}"), self.0)
            }
        }
        $(id_newtype!(@$next $name);)?
    };
    (@next $name:ident) => {
        impl $name {
            #[doc = concat!("The ", stringify!($name), " after this one.")]
            #[must_use]
            pub const fn next(self) -> $name {
                $name(self.0 + 1)
            }
        }
    };
}

id_newtype!(
    /// Log sequence number of a WAL record: dense, starting at 0, one per appended record, never
    /// reused.
    Lsn(u64),
    "lsn",
    next
);

id_newtype!(
    /// Identifies a receiver (input stream with a receiver) within one streaming graph.
    ReceiverId(u32),
    "receiver"
);

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

id_newtype!(
    /// Stable id of an operator (DStream) in the graph: assigned in construction order, so the same
    /// build closure yields the same ids on every start. Checkpointed state is bound to operators
    /// by it.
    OperatorId(u32),
    "operator"
);

id_newtype!(
    /// A hash partition of a keyed dataset, `0..num_partitions`.
    PartitionId(u32),
    "partition"
);

id_newtype!(
    /// Writer generation of a checkpoint location: each writer claims a strictly larger one on
    /// open, and a writer whose generation is older than the newest claimed is fenced (refused)
    /// before publishing.
    Generation(u64),
    "generation",
    next
);
