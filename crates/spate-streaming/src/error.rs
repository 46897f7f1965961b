//! Errors of the engine.

use spate_sources::SourceError;
use spate_types::{BatchTime, BlockId, DurationMs, OperatorId};
use std::path::PathBuf;

/// A boxed error returned by user functions (`try_foreach_batch`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of the streaming engine. Variants are named by outcome and carry coordinates (operator,
/// batch time, path).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamingError {
    /// An operator or output was added after `start` (Spark: "Adding new inputs, transformations,
    /// and output operations after starting a context is not supported").
    #[error("cannot add {kind}: the streaming context has already been started")]
    AlreadyStarted {
        /// The operator kind that was refused.
        kind: &'static str,
    },
    /// `start` was called on a context that has been stopped (Spark: a stopped context cannot be
    /// restarted; create a new one).
    #[error("the streaming context has been stopped and cannot be restarted")]
    AlreadyStopped,
    /// `start` was called on a context that is already running.
    #[error("the streaming context is already active")]
    AlreadyActive,
    /// Another context is active in this process (Spark allows one active context per JVM).
    #[error("another streaming context is already active in this process (app {app_name:?})")]
    AnotherContextActive {
        /// The application name of the active context.
        app_name: String,
    },
    /// `start` was called on a graph without output operations (Spark: "No output operations
    /// registered, so nothing to execute").
    #[error("no output operations registered, so nothing to execute")]
    NoOutputOperations,
    /// A window or slide is not a positive multiple of the parent's slide.
    #[error(
        "{kind} on {parent}: {reason} (window {window}, slide {slide}, parent slide {parent_slide})"
    )]
    InvalidWindow {
        /// The windowed operator kind.
        kind: &'static str,
        /// The parent operator.
        parent: OperatorId,
        /// The requested window length.
        window: DurationMs,
        /// The requested slide.
        slide: DurationMs,
        /// The parent's slide.
        parent_slide: DurationMs,
        /// Which rule was violated.
        reason: &'static str,
    },
    /// Two inputs of a multi-input operator have different slides (Spark: "Slide duration of the
    /// given DStream is not the same").
    #[error("{kind}: {left} has slide {left_slide} but {right} has slide {right_slide}")]
    SlideMismatch {
        /// The operator kind.
        kind: &'static str,
        /// Left input.
        left: OperatorId,
        /// Left input's slide.
        left_slide: DurationMs,
        /// Right input.
        right: OperatorId,
        /// Right input's slide.
        right_slide: DurationMs,
    },
    /// A stream of another context was combined with this one.
    #[error("{kind}: the streams belong to different streaming contexts")]
    DifferentContext {
        /// The operator kind.
        kind: &'static str,
    },
    /// An argument is out of range (zero partitions, ...).
    #[error("{kind}: invalid argument: {reason}")]
    InvalidArgument {
        /// The operator kind or API.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// An output operation (job) failed or panicked for a batch (Spark's job failure, rethrown from
    /// `awaitTermination`).
    #[error("output operation {operator} ({kind}) failed at batch {time}: {message}")]
    JobFailed {
        /// The batch time.
        time: BatchTime,
        /// The output operation's id.
        operator: OperatorId,
        /// The output operation's kind.
        kind: String,
        /// The error or panic message.
        message: String,
    },
    /// A replayable source failed to select or read the input of a batch.
    #[error("input {operator} at batch {time}: {source}")]
    Source {
        /// The input operator.
        operator: OperatorId,
        /// The batch time.
        time: BatchTime,
        /// The source's error.
        #[source]
        source: SourceError,
    },
    /// A block allocated to a batch could not be read from the block store.
    #[error("block {block} of batch {time}: {reason}")]
    BlockUnavailable {
        /// The block.
        block: BlockId,
        /// The batch it was allocated to.
        time: BatchTime,
        /// Why it is unavailable.
        reason: String,
    },
    /// Writing an output file failed.
    #[error("writing output {path}: {source}")]
    OutputIo {
        /// The file being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A failure already returned by an earlier `await_termination` call, repeated.
    #[error("the streaming context failed: {message}")]
    Failed {
        /// The original error's message.
        message: String,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The write-ahead log failed (open, append, sync, replay or cleanup). An append that failed
    /// changed nothing: the block was not acknowledged, the batch not allocated.
    #[error("write-ahead log {dir}: {source}")]
    Wal {
        /// The WAL directory.
        dir: PathBuf,
        /// The WAL's error (`Corrupt` names the segment and offset).
        #[source]
        source: spate_wal::WalError,
    },
    /// A WAL record passed its checksums but this build cannot decode it (a newer or foreign
    /// build's record kind or payload).
    #[error("write-ahead log {dir}: record {lsn} (kind {kind}): {reason}")]
    WalRecord {
        /// The WAL directory.
        dir: PathBuf,
        /// The record's LSN.
        lsn: spate_types::Lsn,
        /// Its kind byte.
        kind: u8,
        /// Why it cannot be decoded.
        reason: String,
    },
    /// The checkpoint store failed (open, resolve, commit, archive). A failed metadata checkpoint
    /// stops the context: recovery would otherwise silently restart from an older point.
    #[error("checkpoint {url}: {source}")]
    Checkpoint {
        /// The checkpoint location.
        url: String,
        /// The store's error.
        #[source]
        source: Box<spate_checkpoint::CheckpointError>,
    },
    /// A newer job (generation `newer`) opened this checkpoint location, so this one was fenced: its
    /// checkpoint writer refused to publish before writing anything (no data object, no manifest,
    /// no GC), and the context stopped. Not retryable: the newer job owns the location now.
    #[error("checkpoint {url}: fenced: {newer} took over this location (this job had {ours}); stopped without writing anything more")]
    Fenced {
        /// The checkpoint location.
        url: String,
        /// This job's generation.
        ours: spate_types::Generation,
        /// The newer generation that blocked it.
        newer: spate_types::Generation,
    },
    /// The checkpoint was written by a build whose graph or computation-defining settings differ
    /// from this one (Spark would silently run the checkpointed code). Nothing was restored or
    /// modified; `diff` lists every difference.
    #[error("checkpoint {checkpoint} at {url} is incompatible with this build ({} difference(s)): {diff}", diff.len())]
    IncompatibleCheckpoint {
        /// The checkpoint location.
        url: String,
        /// The manifest compared (`manifests/<key>.manifest`).
        checkpoint: String,
        /// What differs.
        diff: Box<crate::compat::CompatibilityDiff>,
    },
    /// The location holds checkpoint manifests but none verifies, and `create_on_error` is off.
    /// Nothing was modified.
    #[error("no valid checkpoint at {url}: {}; set create_on_error to archive them and start fresh", rejected.join("; "))]
    NoValidCheckpoint {
        /// The checkpoint location.
        url: String,
        /// Every candidate and why it was rejected.
        rejected: Vec<String>,
    },
    /// A start with no checkpoint to restore found a WAL directory that may hold records no
    /// checkpoint covers (a WAL left from another application or a deleted checkpoint; I-REC-2).
    /// Nothing was modified.
    #[error("write-ahead log {dir} holds {segments} segment(s){} but there is no checkpoint for them; remove or archive the directory, or set create_on_error", records.map_or_else(String::new, |r| format!(" with {r} record(s)")))]
    OrphanWal {
        /// The WAL directory.
        dir: PathBuf,
        /// Segment files found.
        segments: u64,
        /// Valid records found, if the WAL was read (`get_or_create` refuses before opening it).
        records: Option<u64>,
    },
    /// A stateful operator's state backend failed (read, update, export, import, open).
    #[error("state of {operator}: {source}")]
    State {
        /// The stateful operator (`u32::MAX` when opening the shared store, before any operator).
        operator: OperatorId,
        /// The state crate's error.
        #[source]
        source: spate_state::StateError,
    },
    /// A partition's checkpointed state objects do not form a valid chain for the operator.
    #[error("state of {operator} partition {partition}: {source}")]
    StateRestore {
        /// The stateful operator.
        operator: OperatorId,
        /// The partition whose objects were rejected.
        partition: spate_types::PartitionId,
        /// Which chain rule the objects broke.
        #[source]
        source: spate_state::format::RestoreError,
    },
    /// A stateful operator's state is not at the point the engine needs (not opened, already past
    /// the batch, a partition count or batch time that differs from the checkpoint's, no state in
    /// the checkpoint). Nothing was changed.
    #[error("state of {operator}: {reason}")]
    StateMismatch {
        /// The stateful operator.
        operator: OperatorId,
        /// What differs.
        reason: String,
    },
    /// The checkpoint is older than what the WAL still holds: batches it would need to recompute
    /// have had their inputs cleaned up. Nothing was restored.
    #[error("checkpoint {checkpoint} is too old to restore: {reason}")]
    CheckpointTooOld {
        /// The manifest chosen.
        checkpoint: String,
        /// Which inputs are missing.
        reason: String,
    },
    /// The store answered a checkpoint's publication definitively without publishing it (another
    /// manifest already holds its name). The context fails: recovery would otherwise silently
    /// restart from an older point.
    #[error("checkpoint {url}: the checkpoint for batch {time} was not published: {reason:?}")]
    NotPublished {
        /// The checkpoint location.
        url: String,
        /// The checkpoint's batch time.
        time: BatchTime,
        /// The store's answer.
        reason: spate_checkpoint::AlreadyPublished,
    },
    /// Something the engine writes could not be encoded.
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: spate_types::codec::CodecError,
    },
    /// A thread or thread pool could not be created.
    #[error("cannot start {what}: {reason}")]
    Spawn {
        /// What was being started.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

impl StreamingError {
    /// True if retrying the same operation later may succeed (a transient store failure); false
    /// for every outcome that retrying cannot change (invalid use, corruption, incompatibility).
    pub fn is_retryable(&self) -> bool {
        match self {
            StreamingError::Checkpoint { source, .. } => source.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn spawn(what: &'static str, e: impl std::fmt::Display) -> Self {
        StreamingError::Spawn {
            what,
            reason: e.to_string(),
        }
    }
}

/// Result alias of the engine.
pub type Result<T, E = StreamingError> = std::result::Result<T, E>;
