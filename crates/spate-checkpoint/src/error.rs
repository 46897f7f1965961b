//! The crate's error type. Variants are named by outcome and carry the object they concern.

use spate_types::Generation;

/// Whether a failed request may nevertheless have taken effect.
///
/// As Materialize persist's `ExternalError::{Determinate, Indeterminate}`: a request that timed out or
/// lost its connection after being sent may have been applied by the server. A caller that sees
/// [`Determinacy::Indeterminate`] on a publish must re-read (re-resolve) before deciding whether the
/// checkpoint exists; it must not assume either outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Determinacy {
    /// The request certainly had no effect.
    Determinate,
    /// The request may or may not have taken effect.
    Indeterminate,
}

/// Why an object's bytes were rejected. Part of [`CheckpointError::Corrupt`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CorruptReason {
    /// Fewer bytes than the envelope header or than the header's payload length.
    #[error("truncated: {actual} bytes, expected {expected}")]
    Truncated {
        /// Bytes required.
        expected: u64,
        /// Bytes present.
        actual: u64,
    },
    /// More bytes than the header's payload length.
    #[error("{extra} trailing bytes after the payload")]
    TrailingBytes {
        /// Unexpected bytes.
        extra: u64,
    },
    /// The first 8 bytes are not `SPATECKP`.
    #[error("bad magic {found:02x?}")]
    BadMagic {
        /// The bytes found.
        found: Vec<u8>,
    },
    /// The header's own crc32 does not match (torn or bit-flipped header: its length is not trusted).
    #[error("header crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    HeaderCrc {
        /// Stored crc.
        stored: u32,
        /// Computed crc.
        computed: u32,
    },
    /// The payload's crc32 does not match the header (or the manifest's record of it).
    #[error("payload crc mismatch: expected {expected:#010x}, computed {computed:#010x}")]
    PayloadCrc {
        /// Expected crc.
        expected: u32,
        /// Computed crc.
        computed: u32,
    },
    /// The object's size differs from what the manifest recorded.
    #[error("size {actual} bytes, manifest recorded {expected}")]
    SizeMismatch {
        /// Recorded size.
        expected: u64,
        /// Actual size.
        actual: u64,
    },
    /// The codec id is not one this build understands.
    #[error("unknown codec id {0}")]
    UnknownCodec(u8),
    /// The envelope holds a different kind of object than expected.
    #[error("object kind {found}, expected {expected}")]
    WrongKind {
        /// Kind found.
        found: u8,
        /// Kind expected.
        expected: u8,
    },
    /// The payload passed its crc but does not decode (a writer bug or a crc collision).
    #[error("payload does not decode: {0}")]
    Decode(String),
    /// A manifest's embedded name differs from the name it is stored under (copied or renamed).
    #[error("manifest says it is {embedded}, stored as {stored}")]
    NameMismatch {
        /// Name inside the manifest.
        embedded: String,
        /// Name of the object.
        stored: String,
    },
    /// A manifest field is inconsistent (for example a reference outside `data/`).
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

/// Errors of the checkpoint store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint URL (or an option) cannot be used.
    #[error("invalid checkpoint location {url}: {reason}")]
    InvalidLocation {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The store answered a request with an error (unreachable endpoint, permission, server error).
    #[error("{op} {object} failed ({determinacy:?}): {source}")]
    Store {
        /// The operation (`put`, `get`, `list`, ...).
        op: &'static str,
        /// The object or prefix.
        object: String,
        /// Whether the request may have taken effect.
        determinacy: Determinacy,
        /// The object store's error.
        #[source]
        source: object_store::Error,
    },
    /// The request did not complete within the configured request timeout.
    #[error("{op} {object} timed out after {after_ms} ms ({determinacy:?})")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The object or prefix.
        object: String,
        /// The timeout, in ms.
        after_ms: u64,
        /// Whether the request may have taken effect (always indeterminate for writes).
        determinacy: Determinacy,
    },
    /// The store accepted a create-only PUT of an existing object: it cannot fence or commit safely.
    #[error(
        "store {url} does not honour conditional create (If-None-Match): probe object {probe} was \
         overwritten; refusing to use it for checkpoints (garage and s3rver behave like this)"
    )]
    ConditionalCreateUnsupported {
        /// The store.
        url: String,
        /// The probe object.
        probe: String,
    },
    /// An object's bytes are damaged.
    #[error("corrupt checkpoint object {object}: {reason}")]
    Corrupt {
        /// The object.
        object: String,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// An object was written by a newer spate.
    #[error(
        "checkpoint object {object} has format version {found}, this build reads up to {supported}"
    )]
    NewerFormat {
        /// The object.
        object: String,
        /// Version found.
        found: u16,
        /// Newest version this build understands.
        supported: u16,
    },
    /// A manifest references an object that does not exist.
    #[error("manifest {manifest} references missing object {object}")]
    MissingObject {
        /// The manifest.
        manifest: String,
        /// The missing object.
        object: String,
    },
    /// The requested object does not exist.
    #[error("checkpoint object {object} not found")]
    NotFound {
        /// The object.
        object: String,
    },
    /// A newer writer claimed the location and blocked this writer's next publish slot: this
    /// writer must stop. Nothing of the refused commit was written (the slot comes first).
    #[error(
        "fenced: this writer has {ours}, {newer} was claimed by another writer{}",
        if *.published { " (the manifest was published before the fence was seen; do not act on it)" } else { "" }
    )]
    Fenced {
        /// This writer's generation.
        ours: Generation,
        /// The newer generation found.
        newer: Generation,
        /// Whether this writer's manifest had been published when the fence was detected. Always
        /// false since publish slots (the fence is found before anything is written); kept for
        /// callers matching on it.
        published: bool,
    },
    /// A manifest name would sort before one already published by this writer.
    #[error("checkpoint name would go backwards: {requested} after {last}")]
    NameWentBackwards {
        /// Last published name.
        last: String,
        /// Requested name.
        requested: String,
    },
    /// A caller-supplied argument is invalid (bad data-object label, empty input, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// No checkpoint verifies; `rejected` lists every candidate and why.
    #[error("no valid checkpoint among {} candidate(s)", rejected.len())]
    NoValidCheckpoint {
        /// Every candidate and why it was rejected.
        rejected: Vec<crate::protocol::Rejection>,
    },
    /// The async writer's queue is full (as Spark's bounded queue, but the caller is told).
    #[error("checkpoint writer queue is full ({capacity} pending)")]
    QueueFull {
        /// Queue capacity.
        capacity: usize,
    },
    /// The async writer has stopped (after a fatal error or on shutdown).
    #[error("checkpoint writer has stopped")]
    WriterStopped,
    /// A create-only PUT of a manifest found a different manifest under its name: the checkpoint
    /// was not published by this writer (the `Err` of [`Committer::commit`]'s two-level result,
    /// [`AlreadyPublished::Different`], as an error for callers that must fail on it).
    ///
    /// [`Committer::commit`]: crate::Committer::commit
    /// [`AlreadyPublished::Different`]: crate::AlreadyPublished::Different
    #[error("manifest {manifest} already published with other contents; this checkpoint was not")]
    AlreadyPublished {
        /// The manifest object.
        manifest: String,
    },
    /// A create-only PUT of a new data object found another object under its (unique) name.
    #[error("data object {object} already exists with other contents")]
    ObjectExists {
        /// The object.
        object: String,
    },
    /// The payload could not be encoded.
    #[error("encoding {what} failed: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

impl CheckpointError {
    /// Whether the failed operation may have taken effect (see [`Determinacy`]). Errors that are not
    /// about a request (corruption, fencing, ...) are determinate.
    #[must_use]
    pub fn determinacy(&self) -> Determinacy {
        match self {
            CheckpointError::Store { determinacy, .. }
            | CheckpointError::Timeout { determinacy, .. } => *determinacy,
            _ => Determinacy::Determinate,
        }
    }

    /// Marks a request error as indeterminate (used once an earlier attempt of the same write may
    /// have taken effect, so a later read failure cannot prove it did not).
    #[must_use]
    pub fn into_indeterminate(self) -> Self {
        match self {
            CheckpointError::Store {
                op, object, source, ..
            } => CheckpointError::Store {
                op,
                object,
                source,
                determinacy: Determinacy::Indeterminate,
            },
            CheckpointError::Timeout {
                op,
                object,
                after_ms,
                ..
            } => CheckpointError::Timeout {
                op,
                object,
                after_ms,
                determinacy: Determinacy::Indeterminate,
            },
            other => other,
        }
    }

    /// The error a fail point site returns for `return(arg)` (`docs/failpoints.md`): a
    /// [`CheckpointError::Store`] with op `"failpoint"` whose source (`object_store::Error::Generic`,
    /// store `"failpoint"`) names the fail point; `indeterminate` when the step before it may have
    /// taken effect.
    #[cfg(feature = "failpoints")]
    #[must_use]
    pub fn failpoint(name: &str, object: &str, arg: &str, indeterminate: bool) -> Self {
        CheckpointError::Store {
            op: "failpoint",
            object: object.to_owned(),
            determinacy: if indeterminate {
                Determinacy::Indeterminate
            } else {
                Determinacy::Determinate
            },
            source: object_store::Error::Generic {
                store: "failpoint",
                source: Box::new(spate_types::failpoints::io_error(name, arg)),
            },
        }
    }

    /// Whether retrying the same request may succeed (timeouts and generic server/connection
    /// errors): the one classification [`crate::requests`] retries by.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            CheckpointError::Timeout { .. } => true,
            CheckpointError::Store { source, .. } => matches!(
                source,
                object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
            ),
            _ => false,
        }
    }
}

impl CheckpointError {
    /// Whether the store answered that the object does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(
            self,
            CheckpointError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// Whether the store refused a create-only PUT because the object exists.
    pub(crate) fn is_already_exists(&self) -> bool {
        matches!(
            self,
            CheckpointError::Store {
                source: object_store::Error::AlreadyExists { .. },
                ..
            }
        )
    }
}

/// Result alias of this crate.
pub type Result<T, E = CheckpointError> = std::result::Result<T, E>;
