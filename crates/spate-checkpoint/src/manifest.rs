//! The manifest: the one object whose existence commits a checkpoint.

use crate::envelope::{self, ObjectKind};
use crate::error::{CheckpointError, CorruptReason, Result};
use crate::paths::{CheckpointKey, CheckpointPaths, ParsedName};
use serde::{Deserialize, Serialize};
use spate_types::{BatchTime, DurationMs, Generation, Lsn};
use std::collections::BTreeMap;

/// Which of the checkpoints of a batch this is (DESIGN.md §4 steps 3, 5, 6).
///
/// Spark writes two metadata checkpoints per batch (`DoCheckpoint` after generating T and after T
/// completes). Here they are small: a metadata manifest carries the pending batch times, source
/// positions and WAL position and only *references* the data objects of the latest data checkpoint
/// (names, sizes and crcs, a few dozen bytes each) instead of rewriting them. A data checkpoint
/// additionally references freshly written state objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckpointKind {
    /// Metadata checkpoint "batch T generated" (pending batches include T).
    Generated,
    /// Metadata checkpoint "batch T completed".
    Completed,
    /// Data checkpoint: state objects for T written, then this manifest.
    Data,
}

/// The streaming graph's description as the engine defines it: opaque to the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphDescriptionBlob {
    /// Fingerprint of the description (compared on restore to detect incompatible graphs).
    pub fingerprint: String,
    /// The encoded description.
    pub bytes: Vec<u8>,
}

/// One data object a manifest references.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataObjectRef {
    /// Object name relative to the location root (`data/<key>/<label>`).
    pub path: String,
    /// Size of the whole stored object (envelope included), bytes.
    pub size: u64,
    /// crc32 of the payload (as in the object's envelope).
    pub crc32: u32,
}

impl DataObjectRef {
    /// The label (last path segment).
    #[must_use]
    pub fn label(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }
}

/// A checkpoint manifest (format: `docs/format/checkpoint.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its own key (must equal the key in its object name).
    pub key: CheckpointKey,
    /// Kind of checkpoint.
    pub kind: CheckpointKind,
    /// Batch time this checkpoint is for, ms since the Unix epoch.
    pub batch_time: BatchTime,
    /// Zero time of the batch grid, ms since the Unix epoch.
    pub zero_time: BatchTime,
    /// Batch interval, ms.
    pub batch_interval: DurationMs,
    /// Generation of the writer (equals `key.generation`).
    pub generation: Generation,
    /// Wall-clock creation time, ms since the Unix epoch (informational; never used for ordering).
    pub created_at_ms: u64,
    /// The graph description and fingerprint.
    pub graph: GraphDescriptionBlob,
    /// Batch times generated but not completed.
    pub pending_batches: Vec<BatchTime>,
    /// Per source id, its opaque position (offsets, selected files, ...).
    pub source_positions: BTreeMap<String, Vec<u8>>,
    /// WAL position this checkpoint covers (records below it are no longer needed once retained).
    pub wal_position: Option<Lsn>,
    /// Configuration the job ran with.
    pub conf: BTreeMap<String, String>,
    /// Data objects (state snapshots/deltas), possibly written by an earlier checkpoint.
    pub objects: Vec<DataObjectRef>,
}

impl Manifest {
    /// Encodes the manifest into its enveloped bytes.
    ///
    /// # Errors
    /// [`CheckpointError::Encode`] if the codec refuses it.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let payload = spate_types::codec::encode(self).map_err(|e| CheckpointError::Encode {
            what: "manifest",
            reason: e.to_string(),
        })?;
        Ok(envelope::encode(ObjectKind::Manifest, &payload))
    }

    /// Decodes and validates the manifest stored as `object` (its relative name).
    ///
    /// # Errors
    /// [`CheckpointError::NewerFormat`], or [`CheckpointError::Corrupt`] naming `object` for a damaged
    /// envelope, an undecodable payload, a key that differs from the object name, a generation that
    /// differs from the key's, or a reference outside `data/`. Never panics.
    pub fn from_bytes(object: &str, bytes: &[u8]) -> Result<Manifest> {
        let d = envelope::decode(object, ObjectKind::Manifest, bytes)?;
        let corrupt = |reason| CheckpointError::Corrupt {
            object: object.to_owned(),
            reason,
        };
        let m: Manifest = spate_types::codec::decode(d.payload)
            .map_err(|e| corrupt(CorruptReason::Decode(e.to_string())))?;
        let stored = CheckpointPaths::manifest(m.key);
        if stored != object {
            return Err(corrupt(CorruptReason::NameMismatch {
                embedded: stored,
                stored: object.to_owned(),
            }));
        }
        if m.generation != m.key.generation {
            return Err(corrupt(CorruptReason::Invalid(format!(
                "generation {} differs from the name's {}",
                m.generation.0, m.key.generation.0
            ))));
        }
        for r in &m.objects {
            match CheckpointPaths::parse(&r.path) {
                ParsedName::Data { key, .. } if key <= m.key => {}
                _ => {
                    return Err(corrupt(CorruptReason::Invalid(format!(
                        "reference {} is not a data object at or before the manifest",
                        r.path
                    ))))
                }
            }
        }
        Ok(m)
    }

    /// Total bytes of the referenced data objects.
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}
