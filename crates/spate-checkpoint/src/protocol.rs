//! The commit protocol's decisions as pure functions over facts the async shell gathered.
//!
//! No I/O happens here: [`crate::CheckpointStore`] lists objects, reads manifests and verifies data
//! objects, records what it saw in [`Facts`], and executes the [`Resolution`] / [`GcPlan`] these
//! functions return (Arroyo's `resolve_candidate` → `ResolveDecision` split).
//!
//! # Rules
//!
//! * **Existence.** A checkpoint exists iff its manifest exists, decodes, and every object it
//!   references exists with the recorded size and crc (DESIGN.md §3).
//! * **Order.** Candidates are tried newest name first ([`CheckpointKey`] order); the first that
//!   verifies is chosen, every newer one is rejected with its reason (Spark's `CheckpointReader`
//!   falls back silently; here each fallback is reported).
//! * **Fencing.** Generation `g'` records, right after claiming, the newest manifest it could see
//!   (its *floor*). A manifest of an older generation `g < g'` named above the floor of the first
//!   such `g'` that wrote a floor was published by a fenced (zombie) writer after the newer writer
//!   opened: it is rejected as [`RejectReason::FencedPublish`]. This is the second line of
//!   defence; the first ([`decide_publish`], below) keeps a fenced writer from publishing at all.
//! * **Publish slots (check-and-publish).** A writer of generation `g` publishes its `i`-th
//!   checkpoint only after a create-only PUT of `fence/<g>/<i>` ([`SlotEntry::Publish`]) succeeded,
//!   and tries exactly slot `last + 1`, never skipping one. A newer generation, after claiming and
//!   before writing its floor, *blocks* every older generation that may still be live
//!   ([`generations_to_block`]): it creates slot `newest + 1` of that generation
//!   ([`SlotEntry::Blocked`], [`plan_block`]), retrying while the old writer wins slots. Create-only
//!   makes exactly one of the two win each slot, so the old writer's publishes are exactly the slots
//!   below the blocker: their keys are all at or below the newer generation's floor (which includes
//!   the last one, [`SlotEntry::Blocked::last`], even if its manifest is not written yet), and its
//!   next attempt finds the blocker and fails with [`crate::CheckpointError::Fenced`]
//!   (`published: false`) before writing a data object or a manifest ([`decide_publish`]). No
//!   compare-and-swap is needed: `PutMode::Create` (local disk, S3 conditional writes) suffices.

use crate::manifest::Manifest;
use crate::paths::{CheckpointKey, CheckpointPaths, ParsedName};
use spate_types::Generation;
use std::collections::{BTreeMap, BTreeSet};

/// The content of one publish slot `fence/<generation>/<slot>` (create-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum SlotEntry {
    /// Won by the slot's own writer, which publishes this key next (data objects, then manifest).
    Publish(CheckpointKey),
    /// Taken by a newer generation: the slot's generation can never publish again.
    Blocked {
        /// The generation that blocked it.
        by: Generation,
        /// The key of the slot just below (the last key the blocked writer may still publish);
        /// `None` if it had no slot or that slot was unreadable.
        last: Option<CheckpointKey>,
    },
}

/// What a writer's create-only PUT of its next publish slot found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotFact {
    /// Created by this writer.
    Created,
    /// Already held this entry.
    Taken(SlotEntry),
    /// Already held bytes that do not decode (the message names the defect).
    TakenUnreadable(String),
}

/// What a writer does after trying its next publish slot ([`decide_publish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishDecision {
    /// The slot is ours: write the data objects and the manifest.
    Publish,
    /// The slot holds our own earlier attempt (its response was lost): try the next slot.
    NextSlot,
    /// A newer generation blocked us: stop, write nothing.
    Fenced {
        /// The newer generation.
        by: Generation,
    },
    /// Something this protocol did not write holds the slot (a tampered location): write nothing.
    Foreign,
}

/// Decides a publish from the outcome of the slot PUT (pure). `ours` is the writer's generation.
#[must_use]
pub fn decide_publish(ours: Generation, fact: &SlotFact) -> PublishDecision {
    match fact {
        SlotFact::Created => PublishDecision::Publish,
        SlotFact::Taken(SlotEntry::Blocked { by, .. }) if *by > ours => {
            PublishDecision::Fenced { by: *by }
        }
        SlotFact::Taken(SlotEntry::Publish(k)) if k.generation == ours => PublishDecision::NextSlot,
        SlotFact::Taken(_) | SlotFact::TakenUnreadable(_) => PublishDecision::Foreign,
    }
}

/// The older generations a new writer of `ours` must block before writing its floor (pure): every
/// listed claim below `ours`, newest first, down to and including the newest one below `ours` that
/// wrote a floor (that one blocked everything older before writing it). Empty for the first
/// generation.
#[must_use]
pub fn generations_to_block(
    claims: &[Generation],
    floors: &[Generation],
    ours: Generation,
) -> Vec<Generation> {
    let stop = floors.iter().copied().filter(|g| *g < ours).max();
    let mut out: Vec<Generation> = claims
        .iter()
        .chain(stop.iter())
        .copied()
        .filter(|g| *g < ours && stop.is_none_or(|s| *g >= s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    out.reverse();
    out
}

/// The next step of blocking one generation ([`plan_block`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockStep {
    /// Create slot `slot` as [`SlotEntry::Blocked`] with this `last`; on `AlreadyExists`, list again.
    Create {
        /// The slot to create.
        slot: u64,
        /// The key the blocked writer may still publish.
        last: Option<CheckpointKey>,
    },
    /// Already blocked (by us or an earlier new writer); `last` as recorded in the blocker.
    Done {
        /// The last key the blocked writer may still publish.
        last: Option<CheckpointKey>,
    },
}

/// Plans blocking a generation from its newest listed slot and what it holds (pure). `None`: no
/// slot listed; `Some((n, None))`: slot `n` unreadable.
#[must_use]
pub fn plan_block(newest: Option<(u64, Option<SlotEntry>)>) -> BlockStep {
    match newest {
        None => BlockStep::Create {
            slot: 1,
            last: None,
        },
        Some((_, Some(SlotEntry::Blocked { last, .. }))) => BlockStep::Done { last },
        Some((n, Some(SlotEntry::Publish(k)))) => BlockStep::Create {
            slot: n + 1,
            last: Some(k),
        },
        Some((n, None)) => BlockStep::Create {
            slot: n + 1,
            last: None,
        },
    }
}

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedObject {
    /// Name relative to the location root.
    pub path: String,
    /// Size, bytes.
    pub size: u64,
    /// Last-modified time, ms since the Unix epoch (informational only).
    pub last_modified_ms: i64,
}

/// Why a candidate checkpoint was rejected (feeds the restart report).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum RejectReason {
    /// The manifest could not be read or decoded; the message names the object and defect.
    ManifestUnreadable {
        /// The error, rendered.
        error: String,
    },
    /// A referenced object is missing.
    MissingObject {
        /// The object.
        object: String,
    },
    /// A referenced object is damaged (size, envelope or crc).
    CorruptObject {
        /// The object.
        object: String,
        /// The error, rendered.
        error: String,
    },
    /// Published by a fenced writer after a newer generation opened.
    FencedPublish {
        /// The manifest's generation.
        generation: Generation,
        /// The newer generation whose floor excludes it.
        fenced_by: Generation,
        /// That generation's floor.
        floor: Option<CheckpointKey>,
    },
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RejectReason::ManifestUnreadable { error } => write!(f, "manifest unreadable: {error}"),
            RejectReason::MissingObject { object } => write!(f, "missing object {object}"),
            RejectReason::CorruptObject { object, error } => {
                write!(f, "corrupt object {object}: {error}")
            }
            RejectReason::FencedPublish {
                generation,
                fenced_by,
                floor,
            } => write!(
                f,
                "published by fenced generation {} after generation {} opened (floor {})",
                generation.0,
                fenced_by.0,
                floor.map_or_else(|| "none".to_owned(), |k| k.to_string())
            ),
        }
    }
}

/// A rejected candidate.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// The manifest object.
    pub manifest: String,
    /// Its key.
    pub key: CheckpointKey,
    /// Why.
    pub reason: RejectReason,
}

/// What the shell learned about one referenced object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectCheck {
    /// Exists with the recorded size and crc.
    Ok,
    /// Does not exist.
    Missing,
    /// Exists but is damaged (message names the defect).
    Corrupt(String),
}

/// What the shell learned about one manifest.
#[derive(Clone, Debug)]
pub enum ManifestFact {
    /// Decoded; `checks` holds the verification outcome of each referenced object (by path).
    Read {
        /// The manifest.
        manifest: Box<Manifest>,
        /// Outcome per referenced object.
        checks: BTreeMap<String, ObjectCheck>,
    },
    /// Could not be read or decoded.
    Unreadable(String),
}

/// Everything the shell gathered: manifests read so far (newest first, possibly not all).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Per manifest key.
    pub manifests: BTreeMap<CheckpointKey, ManifestFact>,
    /// Floor of each generation that wrote one (`None`: it saw no manifest).
    pub floors: BTreeMap<Generation, Option<CheckpointKey>>,
}

/// The listing, classified by name.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Manifest keys, ascending.
    pub manifests: Vec<CheckpointKey>,
    /// Claimed generations, ascending.
    pub generations: Vec<Generation>,
    /// Generations that wrote a floor object, ascending.
    pub floors: Vec<Generation>,
    /// Data objects by path.
    pub data: BTreeMap<String, ListedObject>,
    /// Publish slots `(generation, slot)`, ascending.
    pub fence_slots: Vec<(Generation, u64)>,
    /// The latest-checkpoint pointer, if listed.
    pub latest_pointer: Option<ListedObject>,
    /// Probe objects.
    pub probes: Vec<ListedObject>,
    /// Restart reports (`restart-reports/...`), ascending by name (= by time, then generation).
    /// Never chosen, never deleted by GC.
    pub restart_reports: Vec<ListedObject>,
    /// Archived copies (`archived/<label>/...`), ascending by name. Never chosen, never deleted by
    /// GC.
    pub archived: Vec<ListedObject>,
    /// Files of the engine's write-ahead log under `wal/` (a local checkpoint's default WAL
    /// directory): neither checkpoints nor garbage; never deleted by GC.
    pub wal: Vec<ListedObject>,
    /// Objects whose names spate did not build (garbage, foreign files): reported, never deleted.
    pub unknown: Vec<ListedObject>,
}

impl Listing {
    /// Classifies a raw listing.
    #[must_use]
    pub fn classify(objects: impl IntoIterator<Item = ListedObject>) -> Listing {
        let mut l = Listing::default();
        for o in objects {
            match CheckpointPaths::parse(&o.path) {
                ParsedName::Manifest(k) => l.manifests.push(k),
                ParsedName::Data { .. } => {
                    l.data.insert(o.path.clone(), o);
                }
                ParsedName::Generation(g) => l.generations.push(g),
                ParsedName::Floor(g) => l.floors.push(g),
                ParsedName::FenceSlot { generation, slot } => {
                    l.fence_slots.push((generation, slot))
                }
                ParsedName::LatestPointer => l.latest_pointer = Some(o),
                ParsedName::Probe => l.probes.push(o),
                ParsedName::RestartReport { .. } => l.restart_reports.push(o),
                ParsedName::Archived { .. } => l.archived.push(o),
                ParsedName::Wal { .. } => l.wal.push(o),
                ParsedName::Unknown => l.unknown.push(o),
            }
        }
        l.restart_reports.sort_by(|a, b| a.path.cmp(&b.path));
        l.archived.sort_by(|a, b| a.path.cmp(&b.path));
        l.manifests.sort();
        l.generations.sort();
        l.floors.sort();
        l.fence_slots.sort();
        l
    }

    /// Newest claimed generation.
    #[must_use]
    pub fn newest_generation(&self) -> Option<Generation> {
        self.generations.last().copied()
    }
}

/// The verdict on one candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It verifies.
    Accept,
    /// It does not.
    Reject(RejectReason),
    /// Not enough facts gathered yet.
    Unknown,
}

/// Judges one candidate from the facts (pure).
#[must_use]
pub fn judge(key: CheckpointKey, facts: &Facts) -> Verdict {
    if let Some(reason) = fenced(key, facts) {
        return Verdict::Reject(reason);
    }
    match facts.manifests.get(&key) {
        None => Verdict::Unknown,
        Some(ManifestFact::Unreadable(e)) => {
            Verdict::Reject(RejectReason::ManifestUnreadable { error: e.clone() })
        }
        Some(ManifestFact::Read { manifest, checks }) => {
            for r in &manifest.objects {
                match checks.get(&r.path) {
                    Some(ObjectCheck::Ok) => {}
                    Some(ObjectCheck::Missing) => {
                        return Verdict::Reject(RejectReason::MissingObject {
                            object: r.path.clone(),
                        })
                    }
                    Some(ObjectCheck::Corrupt(e)) => {
                        return Verdict::Reject(RejectReason::CorruptObject {
                            object: r.path.clone(),
                            error: e.clone(),
                        })
                    }
                    None => return Verdict::Unknown,
                }
            }
            Verdict::Accept
        }
    }
}

fn fenced(key: CheckpointKey, facts: &Facts) -> Option<RejectReason> {
    let (g, floor) = facts
        .floors
        .range(key.generation.next()..)
        .next()
        .map(|(g, f)| (*g, *f))?;
    let excluded = match floor {
        None => true,
        Some(f) => key > f,
    };
    excluded.then_some(RejectReason::FencedPublish {
        generation: key.generation,
        fenced_by: g,
        floor,
    })
}

/// The outcome of [`resolve_latest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// The chosen checkpoint, if any verifies.
    pub chosen: Option<CheckpointKey>,
    /// Every newer candidate that was rejected, newest first, with its reason.
    pub rejected: Vec<Rejection>,
    /// Older candidates that were not examined (the chosen one made them unnecessary).
    pub not_examined: usize,
}

/// Picks the newest checkpoint that verifies (pure): candidates newest first; a candidate whose facts
/// are missing stops the walk (the shell gathers facts newest first until this accepts one).
#[must_use]
pub fn resolve_latest(listing: &Listing, facts: &Facts) -> Resolution {
    let mut rejected = Vec::new();
    for (i, key) in listing.manifests.iter().rev().enumerate() {
        match judge(*key, facts) {
            Verdict::Accept => {
                return Resolution {
                    chosen: Some(*key),
                    rejected,
                    not_examined: listing.manifests.len() - i - 1,
                }
            }
            Verdict::Reject(reason) => rejected.push(Rejection {
                manifest: CheckpointPaths::manifest(*key),
                key: *key,
                reason,
            }),
            Verdict::Unknown => {
                return Resolution {
                    chosen: None,
                    rejected,
                    not_examined: listing.manifests.len() - i,
                }
            }
        }
    }
    Resolution {
        chosen: None,
        rejected,
        not_examined: 0,
    }
}

/// Retention policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest this many *valid* checkpoints (default 3, at least 1).
    pub keep: usize,
    /// Keep these checkpoints regardless.
    pub pinned: BTreeSet<CheckpointKey>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep: 3,
            pinned: BTreeSet::new(),
        }
    }
}

/// How GC classified one object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum GcClass {
    /// A retained manifest.
    RetainedManifest,
    /// Referenced by a retained manifest.
    Referenced,
    /// Unreferenced but not older than the oldest retained manifest (may belong to a commit in
    /// flight): kept.
    UnreferencedRecent,
    /// Unreferenced and older than the oldest retained manifest: deleted.
    Delete,
    /// Generation claims, floors, the newest publish slot of each generation, the latest pointer,
    /// probes, restart
    /// reports, archived copies and unknown names: never deleted by GC.
    Kept,
}

/// A GC plan: every object with its class (dry run prints it; execution deletes `Delete` only).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GcPlan {
    /// Retained checkpoints, ascending.
    pub retained: Vec<CheckpointKey>,
    /// The oldest retained checkpoint (nothing at or after it is deleted).
    pub horizon: Option<CheckpointKey>,
    /// Every listed object and its class.
    pub objects: Vec<(String, GcClass)>,
}

impl GcPlan {
    /// Objects the plan deletes.
    pub fn deletions(&self) -> impl Iterator<Item = &str> {
        self.objects
            .iter()
            .filter(|(_, c)| *c == GcClass::Delete)
            .map(|(p, _)| p.as_str())
    }
}

/// Plans GC (pure). `valid` are the checkpoints known to verify (ascending or not); `refs` the
/// references of each retained candidate. Retains the newest `keep` valid checkpoints, every pinned
/// one, and every manifest newer than the oldest retained (damaged or in-flight ones are kept for
/// diagnosis). Deletes only objects that no retained manifest references **and** whose key is older
/// than the oldest retained manifest. With no valid checkpoint, deletes nothing.
#[must_use]
pub fn plan_gc(
    listing: &Listing,
    valid: &BTreeSet<CheckpointKey>,
    refs: &BTreeMap<CheckpointKey, Vec<String>>,
    retention: &Retention,
) -> GcPlan {
    let keep = retention.keep.max(1);
    let mut retained: BTreeSet<CheckpointKey> = valid.iter().rev().take(keep).copied().collect();
    let Some(horizon) = retained.iter().next().copied() else {
        let mut objects = Vec::new();
        for k in &listing.manifests {
            objects.push((CheckpointPaths::manifest(*k), GcClass::UnreferencedRecent));
        }
        for p in listing.data.keys() {
            objects.push((p.clone(), GcClass::UnreferencedRecent));
        }
        return GcPlan {
            retained: Vec::new(),
            horizon: None,
            objects,
        };
    };
    for k in &listing.manifests {
        if *k >= horizon || retention.pinned.contains(k) {
            retained.insert(*k);
        }
    }
    let referenced: BTreeSet<&str> = retained
        .iter()
        .filter_map(|k| refs.get(k))
        .flatten()
        .map(String::as_str)
        .collect();
    let mut objects = Vec::new();
    for k in &listing.manifests {
        let class = if retained.contains(k) {
            GcClass::RetainedManifest
        } else {
            GcClass::Delete
        };
        objects.push((CheckpointPaths::manifest(*k), class));
    }
    for p in listing.data.keys() {
        let class = if referenced.contains(p.as_str()) {
            GcClass::Referenced
        } else {
            match CheckpointPaths::parse(p) {
                ParsedName::Data { key, .. }
                    if key < horizon && !retention.pinned.contains(&key) =>
                {
                    GcClass::Delete
                }
                _ => GcClass::UnreferencedRecent,
            }
        };
        objects.push((p.clone(), class));
    }
    for g in &listing.generations {
        objects.push((CheckpointPaths::generation(*g), GcClass::Kept));
    }
    for g in &listing.floors {
        objects.push((CheckpointPaths::floor(*g), GcClass::Kept));
    }
    // A writer only ever tries the slot after its newest, and a blocker is always the newest of
    // its generation: slots below the newest of their generation are never needed again.
    for (i, (g, n)) in listing.fence_slots.iter().enumerate() {
        let superseded = listing.fence_slots.get(i + 1).is_some_and(|(h, _)| h == g);
        let class = if superseded {
            GcClass::Delete
        } else {
            GcClass::Kept
        };
        objects.push((CheckpointPaths::fence_slot(*g, *n), class));
    }
    for o in listing
        .latest_pointer
        .iter()
        .chain(&listing.probes)
        .chain(&listing.restart_reports)
        .chain(&listing.archived)
        .chain(&listing.wal)
        .chain(&listing.unknown)
    {
        objects.push((o.path.clone(), GcClass::Kept));
    }
    GcPlan {
        retained: retained.into_iter().collect(),
        horizon: Some(horizon),
        objects,
    }
}

#[cfg(test)]
mod tests;
