//! Archive: set a location's contents aside under `archived/<label>/` instead of deleting them
//! (recovery's `create_on_error`).

use crate::error::{CheckpointError, CorruptReason, Result};
use crate::paths::{CheckpointPaths, ParsedName};
use crate::store::CheckpointStore;

impl CheckpointStore {
    /// Sets the location's contents aside instead of deleting them (the `create_on_error` path of
    /// recovery; Spark's `getOrCreate(createOnError = true)` deletes the checkpoint).
    ///
    /// 1. Lists the location and copies every object except existing archives (manifests, data,
    ///    generation markers, restart reports, probes and unknown/garbage objects alike) to
    ///    `archived/<label>/<original name>` ([`CheckpointPaths::archived`]) with the store's
    ///    server-side copy (a hard link on local disk, `CopyObject` on S3).
    /// 2. Checks every copy's size (`HEAD`) against the listed size.
    /// 3. Deletes the originals: **every manifest first** (oldest first), then data objects, probes
    ///    and unknown objects. Generation claims and floors stay in place (so the next writer still
    ///    claims a generation above every earlier one and older writers stay fenced), and so do
    ///    restart reports (the location's history); both are also in the archive.
    ///
    /// Afterwards [`CheckpointStore::resolve_latest`] returns `Ok(None)`. A crash at any point
    /// leaves either the original checkpoints (with all their objects: data is deleted only after
    /// every manifest) plus a partial archive, or no manifest at all: never a resolvable half. An
    /// interrupted archive is redone with a **new** label (the originals that remain are copied
    /// again); the partial copy under the old label stays for inspection.
    ///
    /// Call it only when no other writer is publishing to the location (recovery calls it after
    /// claiming its generation, which fences older writers: a fenced writer's later publish is
    /// rejected by resolve). Objects that vanish between the listing and their copy are skipped
    /// and counted in [`ArchiveReport::vanished`].
    ///
    /// # Durability
    /// On `Ok`, every copy is durable (local disk: the copy is a hard link of an fsynced file,
    /// published by a rename whose directory is fsynced) and the originals are deleted.
    ///
    /// # Errors
    /// * [`CheckpointError::InvalidArgument`] if `label` is not a valid label
    ///   ([`CheckpointPaths::valid_label`]: 1..=128 bytes of `[A-Za-z0-9._-]`, not starting with
    ///   `.`) or `archived/<label>/` already holds objects (nothing is copied or deleted then);
    /// * [`CheckpointError::Corrupt`] with [`CorruptReason::SizeMismatch`] naming the copy if a
    ///   copy's size differs from the original's (nothing has been deleted then);
    /// * request errors (copy, `HEAD`, delete); rerunning with a new label is safe.
    pub async fn archive(&self, label: &str) -> Result<ArchiveReport> {
        if !CheckpointPaths::valid_label(label) {
            return Err(CheckpointError::InvalidArgument(format!(
                "archive label {label:?} is invalid (allowed: [A-Za-z0-9._-], 1..=128 bytes, not starting with '.')"
            )));
        }
        let prefix = CheckpointPaths::archive_prefix(label);
        let listed = self.list_raw(None).await?;
        if listed.iter().any(|o| o.path.starts_with(&prefix)) {
            return Err(CheckpointError::InvalidArgument(format!(
                "archive label {label:?} is already used ({prefix} holds objects); choose a new label"
            )));
        }
        let mut report = ArchiveReport {
            label: label.to_owned(),
            prefix,
            objects: 0,
            bytes: 0,
            manifests: 0,
            deleted: 0,
            kept_in_place: 0,
            vanished: 0,
        };
        let mut manifests = Vec::new();
        let mut others = Vec::new();
        for o in listed {
            let parsed = CheckpointPaths::parse(&o.path);
            if matches!(parsed, ParsedName::Archived { .. }) {
                continue;
            }
            let to = CheckpointPaths::archived(label, &o.path);
            if !self.copy_object(&o.path, &to).await? {
                report.vanished += 1;
                continue;
            }
            match self.size_of(&to).await? {
                Some(n) if n == o.size => {}
                actual => {
                    return Err(CheckpointError::Corrupt {
                        object: to,
                        reason: CorruptReason::SizeMismatch {
                            expected: o.size,
                            actual: actual.unwrap_or(0),
                        },
                    })
                }
            }
            report.objects += 1;
            report.bytes += o.size;
            match parsed {
                ParsedName::Manifest(k) => manifests.push((k, o.path)),
                ParsedName::Generation(_)
                | ParsedName::Floor(_)
                | ParsedName::FenceSlot { .. }
                | ParsedName::RestartReport { .. } => report.kept_in_place += 1,
                _ => others.push(o.path),
            }
        }
        manifests.sort();
        report.manifests = manifests.len();
        for p in manifests.into_iter().map(|(_, p)| p).chain(others) {
            self.delete(&p).await?;
            report.deleted += 1;
        }
        tracing::info!(
            url = %self.url,
            prefix = %report.prefix,
            objects = report.objects,
            bytes = report.bytes,
            manifests = report.manifests,
            "checkpoint location archived"
        );
        Ok(report)
    }
}

/// What [`CheckpointStore::archive`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveReport {
    /// The archive's label.
    pub label: String,
    /// Where the copies are: `archived/<label>/` (relative to the location root; each copy keeps
    /// its original name after the prefix).
    pub prefix: String,
    /// Objects copied (and size-checked).
    pub objects: usize,
    /// Bytes copied (sum of the originals' sizes).
    pub bytes: u64,
    /// Manifests among them (all deleted, before anything else).
    pub manifests: usize,
    /// Originals deleted (manifests, data objects, probes, unknown objects).
    pub deleted: usize,
    /// Originals copied but left in place: generation claims, floors and restart reports.
    pub kept_in_place: usize,
    /// Objects listed but gone before they could be copied (not in the archive).
    pub vanished: usize,
}
