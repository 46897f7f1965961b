//! The data-checkpoint draft shared by `tests/failpoints.rs` and its child process
//! `tests/bin/abort_child.rs` (both include this file with `#[path]`).

use bytes::Bytes;
use spate_checkpoint::store::CheckpointDraft;
use spate_checkpoint::{CheckpointKind, GraphDescriptionBlob};
use spate_types::{BatchTime, DurationMs};

/// A data checkpoint for batch `t` (previous batch 1 s, interval 1 s, graph fingerprint `fp`)
/// with `objects` new 100-byte state objects `state-<i>`.
pub(crate) fn draft(t: u64, objects: usize) -> CheckpointDraft {
    let mut d = CheckpointDraft::new(
        CheckpointKind::Data,
        BatchTime(t),
        BatchTime(1_000),
        DurationMs(1_000),
    );
    d.graph = GraphDescriptionBlob {
        fingerprint: "fp".into(),
        bytes: b"graph".to_vec(),
    };
    for i in 0..objects {
        d.new_objects.push((
            format!("state-{i}"),
            Bytes::from(vec![(t as u8) ^ (i as u8); 100]),
        ));
    }
    d
}
