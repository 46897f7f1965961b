//! Resolve: the newest checkpoint that verifies ([`CheckpointStore::resolve_latest`]) and the
//! verification of every checkpoint ([`CheckpointStore::verify_all`]). The I/O gathers facts;
//! [`protocol::judge`] and [`protocol::resolve_latest`] decide.

use crate::envelope::{self, ObjectKind};
use crate::error::{CheckpointError, CorruptReason, Result};
use crate::manifest::{CheckpointKind, DataObjectRef, Manifest};
use crate::paths::{CheckpointKey, CheckpointPaths, GENERATIONS, MANIFESTS};
use crate::protocol::{self, Facts, ListedObject, Listing, ManifestFact, ObjectCheck, Resolution};
use crate::store::{CheckpointStore, VerifyLevel};
use spate_types::{BatchTime, Generation};
use std::collections::{BTreeMap, BTreeSet};

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
            if let Some(f) = self.read_floor(*g).await? {
                floors.insert(*g, f);
            }
        }
        Ok(floors)
    }

    /// Reads the floor of `g`: `None` if it is absent or damaged (a damaged floor is ignored:
    /// conservative for acceptance, it can only hide zombie manifests, and its generation's own
    /// manifests are unaffected).
    pub(crate) async fn read_floor(&self, g: Generation) -> Result<Option<Option<CheckpointKey>>> {
        let rel = CheckpointPaths::floor(g);
        let Some(bytes) = self.get_opt(&rel).await? else {
            return Ok(None);
        };
        Ok(envelope::decode(&rel, ObjectKind::Floor, &bytes)
            .ok()
            .and_then(|d| spate_types::codec::decode::<Option<CheckpointKey>>(d.payload).ok()))
    }

    /// Reads, lazily, the one floor [`protocol::judge`] consults for `key`: the first readable
    /// floor of a generation above `key`'s (ascending; `tried` remembers unreadable ones). At most
    /// one GET per candidate on a healthy location, however many generations exist.
    async fn floor_for(
        &self,
        key: CheckpointKey,
        listing: &Listing,
        facts: &mut Facts,
        tried: &mut BTreeSet<Generation>,
    ) -> Result<()> {
        for g in listing.floors.iter().filter(|g| **g > key.generation) {
            if facts.floors.contains_key(g) {
                return Ok(());
            }
            if !tried.insert(*g) {
                continue;
            }
            if let Some(f) = self.read_floor(*g).await? {
                facts.floors.insert(*g, f);
                return Ok(());
            }
        }
        Ok(())
    }

    /// The pointer's key (`None` if absent or damaged: the full walk follows).
    async fn read_latest_pointer(&self) -> Result<Option<CheckpointKey>> {
        let rel = CheckpointPaths::latest();
        let Some(bytes) = self.get_opt(&rel).await? else {
            return Ok(None);
        };
        Ok(envelope::decode(&rel, ObjectKind::LatestPointer, &bytes)
            .ok()
            .and_then(|d| spate_types::codec::decode::<CheckpointKey>(d.payload).ok()))
    }

    /// Overwrites the pointer with `key` (after a publish). Best effort: a stale or missing
    /// pointer only makes resolve list more.
    pub(crate) async fn write_latest_pointer(&self, key: CheckpointKey) {
        let written = match spate_types::codec::encode(&key) {
            Ok(payload) => {
                let bytes = envelope::encode(ObjectKind::LatestPointer, &payload);
                self.put_overwrite(&CheckpointPaths::latest(), bytes.into())
                    .await
            }
            Err(e) => Err(CheckpointError::Encode {
                what: "latest pointer",
                reason: e.to_string(),
            }),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, key = %key, "latest-checkpoint pointer not written");
        }
    }

    /// The listing resolve needs: `manifests` (listed) and the generations from the oldest
    /// candidate's on (a listing from that offset; older claims and floors never matter to
    /// [`protocol::judge`] for these candidates).
    async fn resolve_listing(&self, manifests: Vec<ListedObject>) -> Result<Listing> {
        let mut listing = Listing::classify(manifests);
        let Some(oldest) = listing.manifests.iter().map(|k| k.generation).min() else {
            return Ok(listing);
        };
        let from = self.full(&CheckpointPaths::generation(oldest));
        let gens = Listing::classify(
            self.list_under(GENERATIONS, &self.full(GENERATIONS), Some(&from))
                .await?,
        );
        listing.generations = gens.generations;
        listing.floors = gens.floors;
        Ok(listing)
    }

    /// Finds the newest checkpoint that verifies, falling back to older ones; the resolution lists
    /// every rejected newer candidate and why (for the restart report). `Ok(None)` if the location
    /// holds no manifest at all.
    ///
    /// # Cost (requests)
    /// With the `latest` pointer present and its checkpoint (or a newer one) valid: 1 GET of the
    /// pointer, 1 LIST of `manifests/` from the pointer's key on, 1 LIST of `generations/` from the
    /// oldest candidate's generation on, then per examined candidate 1 GET of the manifest, its
    /// object checks and at most 1 floor GET: bounded by the manifests published since the pointer
    /// was written (fewer than 16: the pointer is rewritten every 16 publishes) and the generations
    /// opened since, not by how many manifests,
    /// data objects or restart reports the location holds. Otherwise (no pointer, or every
    /// candidate from it on rejected) the full walk over `manifests/` follows, as before. Both
    /// choose the same checkpoint: the candidates from the pointer on are the newest-first prefix
    /// of the full walk's. With the pointer, [`Resolution::not_examined`] counts only the listed
    /// candidates.
    ///
    /// # Errors
    /// [`CheckpointError::NoValidCheckpoint`] if manifests exist but none verifies; request errors
    /// (an unreachable store is never mistaken for "no checkpoint").
    pub async fn resolve_latest(&self) -> Result<Option<Resolved>> {
        if let Some(hint) = self.read_latest_pointer().await? {
            // `manifests/<key>` sorts just before `manifests/<key>.manifest`: the listing includes
            // the pointer's own manifest if it exists.
            let from = self.full(&format!("{MANIFESTS}/{hint}"));
            let listed = self
                .list_under(MANIFESTS, &self.full(MANIFESTS), Some(&from))
                .await?;
            let listing = self.resolve_listing(listed).await?;
            let (resolution, facts) = self.resolve_with(&listing, self.opts.verify).await?;
            if let Some(k) = resolution.chosen {
                return Self::resolved(k, resolution, facts).map(Some);
            }
        }
        let listing = self
            .resolve_listing(self.list_raw(Some(MANIFESTS)).await?)
            .await?;
        let (resolution, facts) = self.resolve_with(&listing, self.opts.verify).await?;
        match resolution.chosen {
            Some(k) => Self::resolved(k, resolution, facts).map(Some),
            None if listing.manifests.is_empty() => Ok(None),
            None => Err(CheckpointError::NoValidCheckpoint {
                rejected: resolution.rejected,
            }),
        }
    }

    fn resolved(k: CheckpointKey, resolution: Resolution, mut facts: Facts) -> Result<Resolved> {
        match facts.manifests.remove(&k) {
            Some(ManifestFact::Read { manifest, .. }) => Ok(Resolved {
                manifest: *manifest,
                resolution,
            }),
            _ => Err(CheckpointError::NotFound {
                object: CheckpointPaths::manifest(k),
            }),
        }
    }

    async fn resolve_with(
        &self,
        listing: &Listing,
        level: VerifyLevel,
    ) -> Result<(Resolution, Facts)> {
        let mut facts = Facts::default();
        let mut tried = BTreeSet::new();
        for key in listing.manifests.iter().rev() {
            self.floor_for(*key, listing, &mut facts, &mut tried)
                .await?;
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
