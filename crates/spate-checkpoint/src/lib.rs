//! # spate-checkpoint
//!
//! The checkpoint store: metadata and data checkpoints on local disk (the embedded default) or any
//! S3-compatible object store, through `object_store`, with a commit protocol that is crash-safe on
//! both **without relying on rename**.
//!
//! ## Guarantee
//!
//! A checkpoint exists iff its manifest exists and everything it references verifies (size, envelope,
//! crc32). Nothing else makes a checkpoint visible; a crash at any instant leaves either the previous
//! set of checkpoints or that set plus the new one.
//!
//! ## Protocol (DESIGN.md §4 step 5; names in [`paths`])
//!
//! 1. **Open** ([`CheckpointStore::open_committer`]): probe conditional create (a store that accepts a
//!    second create-only PUT of one key — garage, s3rver — is refused), claim generation `N` (first
//!    `N` above every listed claim for which a create-only `generations/<N>` succeeds), block every
//!    older generation that may still be live (a create-only `fence/<old>/<n>` publish slot marked
//!    blocked), write the *floor* `generations/<N>.floor` (newest manifest visible after the claim,
//!    or the last key a blocked writer may still publish).
//! 2. **Commit** ([`Committer::commit`]): win the next publish slot `fence/<N>/<n>` (create-only;
//!    a blocked slot is `Fenced { published: false }` and nothing is written); write each data
//!    object (`data/<key>/<label>`, immutable, unique, create-only); publish
//!    `manifests/<key>.manifest` with `PutMode::Create`. A fenced writer cannot publish; resolvers
//!    still reject a manifest above a newer floor (second line of defence, see [`protocol`]).
//! 3. **Resolve** ([`CheckpointStore::resolve_latest`]): newest manifest that verifies; every newer
//!    candidate rejected with a typed [`protocol::RejectReason`] (Spark's `CheckpointReader` falls
//!    back silently and only logs).
//! 4. **GC** ([`CheckpointStore::gc`]): classify first, delete only unreferenced objects older than
//!    the oldest retained manifest; manifests before data.
//! 5. **Archive** ([`CheckpointStore::archive`]): copy the location under `archived/<label>/`, check
//!    each copy's size, delete the originals manifests first (recovery's `create_on_error`; Spark
//!    deletes). Restart reports (`restart-reports/`, [`CheckpointStore::put_restart_report`]) and
//!    archives are neither garbage nor ever deleted by GC.
//!
//! ## Why not rename (Spark's temp file + rename)
//!
//! On S3, rename is copy + delete: not atomic, and two writers clobber each other's fixed file name
//! (Spark's `checkpoint-<t>` / `.bk`). A create-only PUT of a unique name is atomic on LocalFS (hard
//! link) and on conforming S3 servers (`If-None-Match: *`), which the open-time probe checks.
//!
//! ## Modules
//!
//! * [`envelope`] — the 28-byte header every object carries; [`manifest`] — the manifest;
//! * [`paths`] — [`CheckpointPaths`]: every name, built and parsed in one place;
//! * [`protocol`] — pure decisions: [`protocol::resolve_latest`], [`protocol::plan_gc`];
//! * [`location`] — [`CheckpointUrl`], the one parser of checkpoint URLs;
//! * [`store`] — the async shell: [`CheckpointStore`], its options and reads; beside it, by
//!   responsibility: [`requests`] (every object-store request under one [`RetryPolicy`]),
//!   `resolve`, `gc`, `archive`, `reports` and `committer` (the commit path);
//! * [`writer`] — async writer with a bounded queue, blocking facade;
//! * `testing` (feature `testing`) — the conformance suite and the seeded fault-injecting store.

mod archive;
mod committer;
pub mod envelope;
mod error;
mod gc;
pub mod location;
pub mod manifest;
pub mod paths;
pub mod protocol;
mod reports;
pub mod requests;
mod resolve;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod writer;

pub use error::{CheckpointError, CorruptReason, Determinacy, Result};
pub use location::{CheckpointUrl, LocationError};
pub use manifest::{CheckpointKind, DataObjectRef, GraphDescriptionBlob, Manifest};
pub use paths::{CheckpointKey, CheckpointPaths};
pub use protocol::{GcPlan, RejectReason, Rejection, Retention};
pub use store::{
    AlreadyPublished, ArchiveReport, CheckpointDraft, CheckpointStatus, CheckpointStore, Committer,
    Resolved, RetryPolicy, S3Options, StoreOptions, VerifyLevel,
};
pub use writer::{BlockingCheckpointStore, CheckpointWriter, CommitTicket, WriterConfig};

/// `true` only in the **deliberately broken, test-only** build with the
/// `chaos-broken-manifest-first` feature: a commit then publishes the manifest before writing its
/// data objects (a crash in between leaves a manifest whose objects are missing). The chaos
/// harness's oracle self-test uses it; never ship such a build.
pub const CHAOS_BROKEN_MANIFEST_FIRST: bool = cfg!(feature = "chaos-broken-manifest-first");
