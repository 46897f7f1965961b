//! Resolve: the newest checkpoint that verifies ([`CheckpointStore::resolve_latest`]) and the
//! verification of every checkpoint ([`CheckpointStore::verify_all`]). The I/O gathers facts;
//! [`protocol::judge`] and [`protocol::resolve_latest`] decide.

use crate::envelope::{self, ObjectKind};
use crate::error::{CheckpointError, CorruptReason, Result};
use crate::manifest::{CheckpointKind, DataObjectRef, Manifest};
use crate::paths::{CheckpointKey, CheckpointPaths};
use crate::protocol::{self, Facts, Listing, ManifestFact, ObjectCheck, Resolution};
use crate::store::{CheckpointStore, VerifyLevel};
use spate_types::{BatchTime, Generation};
use std::collections::BTreeMap;

/// A resolved checkpoint: its manifest and how it was chosen.
/// A resolved checkpoint: its manifest and how it was chosen.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The chosen manifest.
    pub manifest: Manifest,
    /// Every newer candidate that was rejected, and why.
    pub resolution: Resolution,
}

/// Verification result of one checkpoint (the CLI's `ls`/`verify`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckpointStatus {
    /// Manifest object.
    pub manifest: String,
    /// Its key.
    pub key: CheckpointKey,
    /// The decoded manifest summary, if readable.
    pub batch_time: Option<BatchTime>,
    /// Kind, if readable.
    pub kind: Option<CheckpointKind>,
    /// Total referenced bytes, if readable.
    pub data_bytes: Option<u64>,
    /// `None` if it verifies, otherwise why not.
    pub problem: Option<protocol::RejectReason>,
}

impl CheckpointStore {
    /// Checks one referenced object at `level`: read and verified in full, or only its size.
    pub(crate) async fn check_object(
        &self,
        r: &DataObjectRef,
        level: VerifyLevel,
    ) -> Result<ObjectCheck> {
        match level {
            VerifyLevel::Full => match self.read_object(r).await {
                Ok(_) => Ok(ObjectCheck::Ok),
                Err(CheckpointError::NotFound { .. }) => Ok(ObjectCheck::Missing),
                Err(
                    e @ (CheckpointError::Corrupt { .. } | CheckpointError::NewerFormat { .. }),
                ) => Ok(ObjectCheck::Corrupt(e.to_string())),
                Err(e) => Err(e),
            },
            VerifyLevel::Size => Ok(match self.size_of(&r.path).await? {
                None => ObjectCheck::Missing,
                Some(size) if size == r.size => ObjectCheck::Ok,
                Some(actual) => ObjectCheck::Corrupt(
                    CorruptReason::SizeMismatch {
                        expected: r.size,
                        actual,
                    }
                    .to_string(),
                ),
            }),
        }
    }

    /// Gathers the facts about one manifest (reads it and checks every referenced object).
    async fn gather(&self, key: CheckpointKey, level: VerifyLevel) -> Result<ManifestFact> {
        match self.read_manifest(key).await {
            Ok(m) => {
                let mut checks = BTreeMap::new();
                for r in &m.objects {
                    if !checks.contains_key(&r.path) {
                        let c = self.check_object(r, level).await?;
                        checks.insert(r.path.clone(), c);
                    }
                }
                Ok(ManifestFact::Read {
                    manifest: Box::new(m),
                    checks,
                })
            }
            Err(
                e @ (CheckpointError::NotFound { .. }
                | CheckpointError::Corrupt { .. }
                | CheckpointError::NewerFormat { .. }),
            ) => Ok(ManifestFact::Unreadable(e.to_string())),
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn read_floors(
        &self,
        listing: &Listing,
    ) -> Result<BTreeMap<Generation, Option<CheckpointKey>>> {
        let mut floors = BTreeMap::new();
        for g in &listing.floors {
            let rel = CheckpointPaths::floor(*g);
            let Some(bytes) = self.get_opt(&rel).await? else {
                continue;
            };
            // A damaged floor is ignored (conservative for acceptance: it can only hide zombie
            // manifests, and its generation's own manifests are unaffected).
            if let Ok(d) = envelope::decode(&rel, ObjectKind::Floor, &bytes) {
                if let Ok(f) = spate_types::codec::decode::<Option<CheckpointKey>>(d.payload) {
                    floors.insert(*g, f);
                }
            }
        }
        Ok(floors)
    }

    /// Finds the newest checkpoint that verifies, falling back to older ones; the resolution lists
    /// every rejected newer candidate and why (for the restart report). `Ok(None)` if the location
    /// holds no manifest at all.
    ///
    /// # Errors
    /// [`CheckpointError::NoValidCheckpoint`] if manifests exist but none verifies; request errors
    /// (an unreachable store is never mistaken for "no checkpoint").
    pub async fn resolve_latest(&self) -> Result<Option<Resolved>> {
        let listing = self.listing().await?;
        let (resolution, mut facts) = self.resolve_with(&listing, self.opts.verify).await?;
        match resolution.chosen {
            Some(k) => match facts.manifests.remove(&k) {
                Some(ManifestFact::Read { manifest, .. }) => Ok(Some(Resolved {
                    manifest: *manifest,
                    resolution,
                })),
                _ => Err(CheckpointError::NotFound {
                    object: CheckpointPaths::manifest(k),
                }),
            },
            None if listing.manifests.is_empty() => Ok(None),
            None => Err(CheckpointError::NoValidCheckpoint {
                rejected: resolution.rejected,
            }),
        }
    }

    async fn resolve_with(
        &self,
        listing: &Listing,
        level: VerifyLevel,
    ) -> Result<(Resolution, Facts)> {
        let mut facts = Facts {
            floors: self.read_floors(listing).await?,
            ..Facts::default()
        };
        for key in listing.manifests.iter().rev() {
            match protocol::judge(*key, &facts) {
                protocol::Verdict::Accept => break,
                protocol::Verdict::Reject(_) => continue,
                protocol::Verdict::Unknown => {}
            }
            let fact = self.gather(*key, level).await?;
            facts.manifests.insert(*key, fact);
            if protocol::judge(*key, &facts) == protocol::Verdict::Accept {
                break;
            }
        }
        Ok((protocol::resolve_latest(listing, &facts), facts))
    }

    /// Verifies every checkpoint (full read of every referenced object), newest first.
    ///
    /// # Errors
    /// Request errors only; damage is reported per checkpoint.
    pub async fn verify_all(&self, level: VerifyLevel) -> Result<Vec<CheckpointStatus>> {
        let listing = self.listing().await?;
        let mut facts = Facts {
            floors: self.read_floors(&listing).await?,
            ..Facts::default()
        };
        let mut out = Vec::new();
        for key in listing.manifests.iter().rev() {
            let fact = self.gather(*key, level).await?;
            facts.manifests.insert(*key, fact);
            let problem = match protocol::judge(*key, &facts) {
                protocol::Verdict::Reject(r) => Some(r),
                _ => None,
            };
            let m = match facts.manifests.get(key) {
                Some(ManifestFact::Read { manifest, .. }) => Some(manifest),
                _ => None,
            };
            out.push(CheckpointStatus {
                manifest: CheckpointPaths::manifest(*key),
                key: *key,
                batch_time: m.map(|m| m.batch_time),
                kind: m.map(|m| m.kind),
                data_bytes: m.map(|m| m.data_bytes()),
                problem,
            });
        }
        Ok(out)
    }
}
