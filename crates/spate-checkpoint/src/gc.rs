//! GC: classify every object first ([`protocol::plan_gc`]), then delete only what the plan says,
//! manifests before data ([`CheckpointStore::gc`]).

use crate::error::{CheckpointError, Result};
use crate::manifest::Manifest;
use crate::paths::CheckpointKey;
use crate::protocol::{self, Facts, GcPlan, Listing, ManifestFact, ObjectCheck, Retention};
use crate::store::{CheckpointStore, VerifyLevel};
use std::collections::{BTreeMap, BTreeSet};

/// Per-process memory of GC verification, so a GC does not re-read what an earlier one (or this
/// process's own committer) already checked: manifests by key, and data objects by path with the
/// size and crc32 they verified with. Every name is create-only (never overwritten), so a name
/// stands for the same bytes for as long as it exists; an entry is used only while the object is
/// still listed with the same size, and entries whose names left the listing are dropped.
///
/// Without it every GC read every object of the newest `keep` checkpoints again, and since each
/// checkpoint references the whole delta chain of its state, that was `keep` x chain length
/// reads per GC: on an S3 server with 40 ms small-object reads, seconds per GC, longer than the
/// batch interval, so a stateful job fell further behind every batch (found as a final run that
/// never went idle). Not covered (as before, outside the fault model within a running process):
/// an object damaged in the store after this process verified or wrote it; the next process
/// verifies everything once again, and restore ([`CheckpointStore::resolve_latest`]) always reads
/// in full.
#[derive(Debug, Default)]
pub(crate) struct GcCache {
    manifests: BTreeMap<CheckpointKey, Manifest>,
    objects: BTreeMap<String, (u64, u32)>,
}

impl CheckpointStore {
    /// deletes nothing).
    ///
    /// "Valid" is decided with a **full** verification (every referenced object read and its crc
    /// checked), newest first, until `retention.keep` valid checkpoints are found: a size-only check
    /// would count a bit-flipped checkpoint as valid and let GC delete the last good one. Older
    /// manifests are only read if pinned (for their references).
    ///
    /// # Errors
    /// Request errors.
    pub async fn plan_gc(&self, retention: &Retention) -> Result<GcPlan> {
        let listing = self.listing().await?;
        let mut facts = Facts {
            floors: self.read_floors(&listing).await?,
            ..Facts::default()
        };
        let keep = retention.keep.max(1);
        let mut valid = BTreeSet::new();
        let mut refs = BTreeMap::new();
        for key in listing.manifests.iter().rev() {
            if valid.len() >= keep {
                if retention.pinned.contains(key) {
                    if let Ok(m) = self.read_manifest(*key).await {
                        refs.insert(*key, m.objects.iter().map(|o| o.path.clone()).collect());
                    }
                }
                continue;
            }
            let fact = self.gather_for_gc(*key, &listing).await?;
            if let ManifestFact::Read { manifest, .. } = &fact {
                refs.insert(
                    *key,
                    manifest.objects.iter().map(|o| o.path.clone()).collect(),
                );
            }
            facts.manifests.insert(*key, fact);
            if protocol::judge(*key, &facts) == protocol::Verdict::Accept {
                valid.insert(*key);
            }
        }
        self.prune_gc_cache(&listing);
        Ok(protocol::plan_gc(&listing, &valid, &refs, retention))
    }

    /// As [`gather`](Self::gather) with [`VerifyLevel::Full`], but through the [`GcCache`]: a
    /// manifest read before is not read again, and an object verified before (same path, size and
    /// crc, still listed with that size) is not read again. New results are remembered.
    async fn gather_for_gc(&self, key: CheckpointKey, listing: &Listing) -> Result<ManifestFact> {
        let cached = self.gc_lock().manifests.get(&key).cloned();
        let m = match cached {
            Some(m) => m,
            None => match self.read_manifest(key).await {
                Ok(m) => {
                    self.gc_lock().manifests.insert(key, m.clone());
                    m
                }
                Err(
                    e @ (CheckpointError::NotFound { .. }
                    | CheckpointError::Corrupt { .. }
                    | CheckpointError::NewerFormat { .. }),
                ) => return Ok(ManifestFact::Unreadable(e.to_string())),
                Err(e) => return Err(e),
            },
        };
        let mut checks = BTreeMap::new();
        for r in &m.objects {
            if checks.contains_key(&r.path) {
                continue;
            }
            let known = self.gc_lock().objects.get(&r.path) == Some(&(r.size, r.crc32))
                && listing.data.get(&r.path).is_some_and(|o| o.size == r.size);
            let c = if known {
                ObjectCheck::Ok
            } else {
                let c = self.check_object(r, VerifyLevel::Full).await?;
                if c == ObjectCheck::Ok {
                    self.remember_object(&r.path, r.size, r.crc32);
                }
                c
            };
            checks.insert(r.path.clone(), c);
        }
        Ok(ManifestFact::Read {
            manifest: Box::new(m),
            checks,
        })
    }

    fn gc_lock(&self) -> std::sync::MutexGuard<'_, GcCache> {
        // The cache holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.gc_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an object this process verified or wrote itself (`size`: envelope bytes).
    pub(crate) fn remember_object(&self, rel: &str, size: u64, crc32: u32) {
        self.gc_lock().objects.insert(rel.to_owned(), (size, crc32));
    }

    /// Records a manifest this process published itself.
    pub(crate) fn remember_manifest(&self, key: CheckpointKey, manifest: &Manifest) {
        self.gc_lock().manifests.insert(key, manifest.clone());
    }

    /// Drops cache entries whose names are no longer listed (deleted by GC or by someone else).
    fn prune_gc_cache(&self, listing: &Listing) {
        let listed: BTreeSet<&CheckpointKey> = listing.manifests.iter().collect();
        let mut c = self.gc_lock();
        c.manifests.retain(|k, _| listed.contains(k));
        c.objects.retain(|p, _| listing.data.contains_key(p));
    }

    /// Plans and executes GC: deletes only the plan's `Delete` objects, manifests first and then
    /// data objects, so a checkpoint never loses an object while its manifest is still visible.
    /// Re-running after a failure is safe.
    ///
    /// # Errors
    /// Request errors (the plan is partially executed; rerunning is safe).
    pub async fn gc(&self, retention: &Retention) -> Result<GcPlan> {
        let plan = self.plan_gc(retention).await?;
        let (manifests, data): (Vec<&str>, Vec<&str>) =
            plan.deletions().partition(|p| p.starts_with("manifests/"));
        for p in manifests.into_iter().chain(data) {
            spate_types::spate_fail!("checkpoint::gc::delete::before", |a| Err(
                CheckpointError::failpoint("checkpoint::gc::delete::before", p, &a, false)
            ));
            self.delete(p).await?;
        }
        Ok(plan)
    }
}
