//! The commit path: open a writer (probe conditional create, claim a generation, block older
//! generations, record its floor), then [`Committer::commit`] (win the next publish slot, data
//! objects, create-only manifest). See [`crate::protocol`] for why a fenced writer cannot publish.

use crate::envelope::{self, ObjectKind};
use crate::error::{CheckpointError, Result};
use crate::manifest::{CheckpointKind, DataObjectRef, GraphDescriptionBlob, Manifest};
use crate::paths::{CheckpointKey, CheckpointPaths, GENERATIONS, MANIFESTS};
use crate::protocol::{self, BlockStep, Listing, PublishDecision, SlotEntry, SlotFact};
use crate::requests::entropy;
use crate::store::CheckpointStore;
use bytes::Bytes;
use object_store::{PutMode, PutOptions};
use spate_types::{BatchTime, DurationMs, Generation, Lsn};
use std::collections::{BTreeMap, BTreeSet};

impl CheckpointStore {
    /// Probes conditional-create support: creates a probe object twice with `PutMode::Create`; the
    /// second must fail with `AlreadyExists`. Deletes the probe afterwards. The two PUTs are single
    /// attempts (a retried first PUT could answer `AlreadyExists` to itself).
    ///
    /// # Errors
    /// [`CheckpointError::ConditionalCreateUnsupported`] if the second create succeeded; request
    /// errors otherwise.
    pub async fn probe_conditional_create(&self) -> Result<()> {
        let nonce = format!(
            "{}-{}-{:x}",
            self.now_ms(),
            std::process::id(),
            entropy() & 0xffff_ffff
        );
        let rel = CheckpointPaths::probe(&nonce);
        let path = self.full(&rel);
        let put_once = |body: &'static [u8]| {
            let bytes = envelope::encode(ObjectKind::Probe, body);
            let put = self
                .store
                .put_opts(&path, bytes.into(), PutOptions::from(PutMode::Create));
            self.attempt("put", &rel, true, put)
        };
        put_once(b"first").await?;
        let second = put_once(b"second").await;
        let _ = self.delete(&rel).await;
        match second {
            Err(e) if e.is_already_exists() => Ok(()),
            Ok(_)
            | Err(CheckpointError::Store {
                source:
                    object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. },
                ..
            }) => Err(CheckpointError::ConditionalCreateUnsupported {
                url: self.url.clone(),
                probe: rel,
            }),
            Err(e) => Err(e),
        }
    }

    /// Opens a writer: probes conditional create, claims a new generation (the first `N` above every
    /// listed claim for which a create-only `generations/<N>` succeeds), blocks every older
    /// generation that may still be live ([`protocol::generations_to_block`]: a create-only
    /// [`SlotEntry::Blocked`] publish slot each), then records its floor: the newest of the
    /// manifests visible now and the last key each blocked writer may still publish. From the
    /// blocking on, older writers cannot publish ([`protocol::decide_publish`]).
    ///
    /// # Errors
    /// [`CheckpointError::ConditionalCreateUnsupported`]; request errors.
    pub async fn open_committer(&self) -> Result<Committer> {
        self.probe_conditional_create().await?;
        let listing = Listing::classify(self.list_raw(Some(GENERATIONS)).await?);
        let mut g = listing
            .newest_generation()
            .map_or(Generation(1), Generation::next);
        loop {
            let rel = CheckpointPaths::generation(g);
            // The nonce makes every claim's bytes unique, so "AlreadyExists with identical bytes"
            // (our own earlier attempt whose response was lost) is never confused with a
            // concurrent claimer in the same process and millisecond.
            let claim =
                spate_types::codec::encode(&(g, self.now_ms(), std::process::id(), entropy()))
                    .map_err(|e| CheckpointError::Encode {
                        what: "generation claim",
                        reason: e.to_string(),
                    })?;
            if self
                .create(
                    &rel,
                    Bytes::from(envelope::encode(ObjectKind::GenerationClaim, &claim)),
                )
                .await?
            {
                break;
            }
            g = g.next();
        }
        // Block the older generations (claims listed now: a claimer racing between our listing and
        // our claim took a lower number and is blocked too).
        let claimed = Listing::classify(self.list_raw(Some(GENERATIONS)).await?);
        let mut floor = None;
        for old in protocol::generations_to_block(&claimed.generations, &claimed.floors, g) {
            floor = floor.max(self.block(old, g).await?);
        }
        // Floor: the newest manifest visible after the claim and the blocking.
        let after = self.list_raw(Some(MANIFESTS)).await?;
        let floor = floor.max(Listing::classify(after).manifests.last().copied());
        let payload = spate_types::codec::encode(&floor).map_err(|e| CheckpointError::Encode {
            what: "floor",
            reason: e.to_string(),
        })?;
        self.create(
            &CheckpointPaths::floor(g),
            Bytes::from(envelope::encode(ObjectKind::Floor, &payload)),
        )
        .await?;
        let min_time = floor.map_or(BatchTime(0), |k| k.time);
        Ok(Committer {
            store: self.clone(),
            generation: g,
            last: floor,
            min_time,
            slot: 0,
        })
    }

    /// Blocks generation `old` for `ours` ([`protocol::plan_block`]): creates the slot after its
    /// newest as [`SlotEntry::Blocked`], listing again whenever the old writer won that slot first.
    /// Returns the last key the blocked writer may still publish.
    async fn block(&self, old: Generation, ours: Generation) -> Result<Option<CheckpointKey>> {
        loop {
            let listed = self
                .list_raw(Some(&CheckpointPaths::fence_prefix(old)))
                .await?;
            let newest = Listing::classify(listed)
                .fence_slots
                .iter()
                .filter(|(h, _)| *h == old)
                .map(|(_, n)| *n)
                .max();
            let newest = match newest {
                None => None,
                Some(n) => Some((n, self.read_slot(old, n).await?.and_then(|e| e.ok()))),
            };
            match protocol::plan_block(newest) {
                BlockStep::Done { last } => return Ok(last),
                BlockStep::Create { slot, last } => {
                    let entry = SlotEntry::Blocked { by: ours, last };
                    if self
                        .create(&CheckpointPaths::fence_slot(old, slot), slot_bytes(&entry)?)
                        .await?
                    {
                        return Ok(last);
                    }
                }
            }
        }
    }

    /// Reads publish slot `n` of `g`: `None` if absent, `Some(Err(defect))` if it does not decode.
    pub(crate) async fn read_slot(
        &self,
        g: Generation,
        n: u64,
    ) -> Result<Option<std::result::Result<SlotEntry, String>>> {
        let rel = CheckpointPaths::fence_slot(g, n);
        let Some(bytes) = self.get_opt(&rel).await? else {
            return Ok(None);
        };
        Ok(Some(
            envelope::decode(&rel, ObjectKind::FenceSlot, &bytes)
                .map_err(|e| e.to_string())
                .and_then(|d| {
                    spate_types::codec::decode::<SlotEntry>(d.payload).map_err(|e| e.to_string())
                }),
        ))
    }
}

/// The `latest` pointer is rewritten every this many publishes of a writer (and on its first).
pub(crate) const LATEST_POINTER_EVERY: u64 = 16;

/// The stored bytes of a publish slot.
fn slot_bytes(entry: &SlotEntry) -> Result<Bytes> {
    let payload = spate_types::codec::encode(entry).map_err(|e| CheckpointError::Encode {
        what: "publish slot",
        reason: e.to_string(),
    })?;
    Ok(Bytes::from(envelope::encode(
        ObjectKind::FenceSlot,
        &payload,
    )))
}

/// What to commit: everything of a [`Manifest`] except its key, generation and creation time, plus
/// the new data objects to write first.
#[derive(Clone, Debug)]
pub struct CheckpointDraft {
    /// Kind.
    pub kind: CheckpointKind,
    /// Batch time, ms.
    pub batch_time: BatchTime,
    /// Zero time, ms.
    pub zero_time: BatchTime,
    /// Batch interval, ms.
    pub batch_interval: DurationMs,
    /// Graph description.
    pub graph: GraphDescriptionBlob,
    /// Pending batch times.
    pub pending_batches: Vec<BatchTime>,
    /// Source positions.
    pub source_positions: BTreeMap<String, Vec<u8>>,
    /// WAL position.
    pub wal_position: Option<Lsn>,
    /// Configuration.
    pub conf: BTreeMap<String, String>,
    /// New data objects `(label, payload)` written before the manifest.
    pub new_objects: Vec<(String, Bytes)>,
    /// Objects of earlier checkpoints this one still needs (e.g. a metadata checkpoint carrying the
    /// last data checkpoint's state objects).
    pub carried_objects: Vec<DataObjectRef>,
}

impl CheckpointDraft {
    /// A metadata draft with no objects and empty graph/positions (fill the fields you need).
    #[must_use]
    pub fn new(
        kind: CheckpointKind,
        batch_time: BatchTime,
        zero_time: BatchTime,
        batch_interval: DurationMs,
    ) -> Self {
        CheckpointDraft {
            kind,
            batch_time,
            zero_time,
            batch_interval,
            graph: GraphDescriptionBlob::default(),
            pending_batches: Vec::new(),
            source_positions: BTreeMap::new(),
            wal_position: None,
            conf: BTreeMap::new(),
            new_objects: Vec::new(),
            carried_objects: Vec::new(),
        }
    }
}

/// Outcome of a publish that the store answered definitively (the two-level result of
/// [`Committer::commit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlreadyPublished {
    /// A different manifest already exists under the name (another writer of the same generation,
    /// which fencing makes impossible unless the location was tampered with).
    Different {
        /// The manifest object.
        manifest: String,
    },
    /// Not written: a later metadata-only draft was already queued behind it and supersedes it
    /// ([`crate::WriterConfig::coalesce_metadata`]). Nothing was published for this draft.
    Superseded,
}

impl AlreadyPublished {
    /// The outcome as an error, for a caller that must fail on it:
    /// [`CheckpointError::AlreadyPublished`] for [`AlreadyPublished::Different`], `None` for
    /// [`AlreadyPublished::Superseded`] (not a failure: a newer draft stands in for it).
    #[must_use]
    pub fn into_error(self) -> Option<CheckpointError> {
        match self {
            AlreadyPublished::Different { manifest } => {
                Some(CheckpointError::AlreadyPublished { manifest })
            }
            AlreadyPublished::Superseded => None,
        }
    }
}

/// The single writer of a location for one generation. Obtain with
/// [`CheckpointStore::open_committer`].
#[derive(Debug)]
pub struct Committer {
    store: CheckpointStore,
    generation: Generation,
    last: Option<CheckpointKey>,
    min_time: BatchTime,
    /// The newest publish slot this writer won (0: none yet).
    slot: u64,
}

impl Committer {
    /// This writer's generation.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// The key the next commit for `batch_time` will use: name time `max(batch_time, newest name
    /// time seen)`, this generation, next sequence number. Never at or below a published key.
    fn next_key(&mut self, batch_time: BatchTime) -> CheckpointKey {
        let time = batch_time.max(self.min_time);
        let seq = match self.last {
            Some(l) if l.time == time && l.generation == self.generation => l.seq + 1,
            _ => 0,
        };
        CheckpointKey {
            time,
            generation: self.generation,
            seq,
        }
    }

    /// Wins this generation's next publish slot (a create-only `fence/<generation>/<n>`, see
    /// [`crate::protocol`]), then writes the draft's new data objects (immutable, unique names,
    /// `PutMode::Create`), then publishes the manifest with `PutMode::Create`. A writer whose
    /// generation was blocked by a newer one fails at the slot and writes nothing.
    ///
    /// Returns `Ok(Ok(manifest))` when committed, `Ok(Err(AlreadyPublished))` if a different
    /// manifest already holds the name.
    ///
    /// # Durability
    /// Once this returns `Ok(Ok(_))`, the checkpoint exists: every object and the manifest are
    /// durable on the store (fsynced, file and directory, on local disk), and
    /// [`CheckpointStore::resolve_latest`] returns it or a newer one unless its objects are later
    /// damaged.
    ///
    /// # Errors
    /// * [`CheckpointError::Fenced`] (`published: false`) if a newer writer blocked this generation:
    ///   nothing was written (no data object, no manifest); the caller must stop. A slot won before
    ///   the block is published normally (its key is at or below the newer writer's floor).
    /// * [`CheckpointError::ObjectExists`] naming the slot if it holds something this protocol did
    ///   not write.
    /// * a request error whose [`CheckpointError::determinacy`] is `Indeterminate` if the manifest PUT
    ///   failed in a way that may have taken effect even after re-reading: the caller must
    ///   re-resolve before relying on either outcome.
    /// * [`CheckpointError::InvalidArgument`] for a bad label or duplicate labels.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future may leave unreferenced data objects (GC removes them)
    /// or a published manifest (which is then a valid checkpoint).
    pub async fn commit(
        &mut self,
        draft: CheckpointDraft,
    ) -> Result<Result<Manifest, AlreadyPublished>> {
        let mut labels = BTreeSet::new();
        for (label, _) in &draft.new_objects {
            if !CheckpointPaths::valid_label(label) || !labels.insert(label.as_str()) {
                return Err(CheckpointError::InvalidArgument(format!(
                    "data object label {label:?} is invalid or repeated (allowed: [A-Za-z0-9._-], 1..=128 bytes)"
                )));
            }
        }
        let key = self.next_key(draft.batch_time);
        self.win_slot(key).await?;
        // The key is consumed whatever happens next: a retry uses a fresh name.
        self.last = Some(key);
        self.min_time = key.time;
        let mut objects = draft.carried_objects;
        // Test-only broken build: data objects are written after the manifest (below).
        #[cfg(feature = "chaos-broken-manifest-first")]
        let mut deferred: Vec<(String, Bytes)> = Vec::new();
        for (label, payload) in draft.new_objects {
            let rel = CheckpointPaths::data(key, &label);
            let crc32 = crc32fast::hash(&payload);
            let env = Bytes::from(envelope::encode(ObjectKind::Data, &payload));
            let size = env.len() as u64;
            #[cfg(feature = "chaos-broken-manifest-first")]
            deferred.push((rel.clone(), env));
            #[cfg(not(feature = "chaos-broken-manifest-first"))]
            {
                self.put_data_object(&rel, env).await?;
                self.store.remember_object(&rel, size, crc32);
            }
            objects.push(DataObjectRef {
                path: rel,
                size,
                crc32,
            });
        }
        let manifest = Manifest {
            key,
            kind: draft.kind,
            batch_time: draft.batch_time,
            zero_time: draft.zero_time,
            batch_interval: draft.batch_interval,
            generation: self.generation,
            created_at_ms: self.store.now_ms(),
            graph: draft.graph,
            pending_batches: draft.pending_batches,
            source_positions: draft.source_positions,
            wal_position: draft.wal_position,
            conf: draft.conf,
            objects,
        };
        let bytes = Bytes::from(manifest.to_bytes()?);
        let rel = CheckpointPaths::manifest(key);
        spate_types::spate_fail!("checkpoint::manifest::put::before", |a| Err(
            CheckpointError::failpoint("checkpoint::manifest::put::before", &rel, &a, false)
        ));
        let created = self.store.create(&rel, bytes).await?;
        if !created {
            return Ok(Err(AlreadyPublished::Different { manifest: rel }));
        }
        self.store.remember_manifest(key, &manifest);
        // The pointer is a hint: written on a writer's first publish and every
        // `LATEST_POINTER_EVERY`-th after, so resolve lists at most that many newer manifests (one
        // LIST page) while a commit pays the extra fsync'd PUT only once in that many.
        if self.slot % LATEST_POINTER_EVERY == 1 {
            self.store.write_latest_pointer(key).await;
        }
        spate_types::spate_fail!("checkpoint::manifest::put::after", |a| Err(
            CheckpointError::failpoint("checkpoint::manifest::put::after", &rel, &a, true)
        ));
        #[cfg(feature = "chaos-broken-manifest-first")]
        for (rel, env) in deferred {
            self.put_data_object(&rel, env).await?;
        }
        Ok(Ok(manifest))
    }

    /// Wins the next publish slot for `key` ([`protocol::decide_publish`]), or fails with
    /// [`CheckpointError::Fenced`] (`published: false`) when a newer generation blocked it.
    async fn win_slot(&mut self, key: CheckpointKey) -> Result<()> {
        let entry = slot_bytes(&SlotEntry::Publish(key))?;
        loop {
            spate_types::spate_fail!("checkpoint::fence::check", |a| Err(
                CheckpointError::failpoint("checkpoint::fence::check", GENERATIONS, &a, false)
            ));
            let n = self.slot + 1;
            let fact = if self
                .store
                .create(
                    &CheckpointPaths::fence_slot(self.generation, n),
                    entry.clone(),
                )
                .await?
            {
                SlotFact::Created
            } else {
                match self.store.read_slot(self.generation, n).await? {
                    Some(Ok(e)) => SlotFact::Taken(e),
                    Some(Err(defect)) => SlotFact::TakenUnreadable(defect),
                    // Deleted between the PUT and the read: only GC of a superseded slot deletes
                    // one, so a newer slot exists; the next round finds it.
                    None => SlotFact::Taken(SlotEntry::Publish(key)),
                }
            };
            match protocol::decide_publish(self.generation, &fact) {
                PublishDecision::Publish => {
                    self.slot = n;
                    return Ok(());
                }
                PublishDecision::NextSlot => self.slot = n,
                PublishDecision::Fenced { by } => {
                    return Err(CheckpointError::Fenced {
                        ours: self.generation,
                        newer: by,
                        published: false,
                    })
                }
                PublishDecision::Foreign => {
                    return Err(CheckpointError::ObjectExists {
                        object: CheckpointPaths::fence_slot(self.generation, n),
                    })
                }
            }
        }
    }

    /// Writes one new data object of a commit (conditional create; the name must be new).
    async fn put_data_object(&self, rel: &str, env: Bytes) -> Result<()> {
        spate_types::spate_fail!("checkpoint::data::put::before", |a| Err(
            CheckpointError::failpoint("checkpoint::data::put::before", rel, &a, false)
        ));
        if !self.store.create(rel, env).await? {
            return Err(CheckpointError::ObjectExists {
                object: rel.to_owned(),
            });
        }
        spate_types::spate_fail!("checkpoint::data::put::after", |a| Err(
            CheckpointError::failpoint("checkpoint::data::put::after", rel, &a, false)
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn already_published_different_is_the_typed_error_and_superseded_is_none() {
        let e = AlreadyPublished::Different {
            manifest: "manifests/x.manifest".into(),
        }
        .into_error();
        assert!(
            matches!(&e, Some(CheckpointError::AlreadyPublished { manifest }) if manifest == "manifests/x.manifest"),
            "{e:?}"
        );
        assert!(AlreadyPublished::Superseded.into_error().is_none());
    }
}
