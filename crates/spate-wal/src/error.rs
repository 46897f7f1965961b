//! [`WalError`]: every way a WAL operation can fail, with coordinates.

use std::io;
use std::path::PathBuf;

/// Why a stretch of a segment is damaged. Carried by [`WalError::Corrupt`] and by the recovery
/// report ([`TornTail`](crate::TornTail), [`SkippedRange`](crate::SkippedRange)).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptReason {
    /// The length word does not match its check word: the length itself is torn or flipped and is
    /// not trusted.
    #[error("length check mismatch (torn or flipped length word)")]
    LengthCheck,
    /// The (checked) length exceeds the configured maximum record size.
    #[error("record length {len} exceeds the maximum {max}")]
    TooLarge {
        /// Payload length in bytes read from the frame.
        len: u32,
        /// Maximum payload length in bytes.
        max: u32,
    },
    /// The crc32 over kind, LSN, time and payload does not match.
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc {
        /// crc32 stored in the frame.
        stored: u32,
        /// crc32 of the bytes read.
        computed: u32,
    },
    /// A frame whose crc matches but which has flag bits this version does not know.
    #[error("unknown frame flags {flags:#04x}")]
    UnknownFlags {
        /// The flags byte.
        flags: u8,
    },
    /// A frame whose crc matches but whose kind is 0 (reserved: never written).
    #[error("record kind 0 is reserved")]
    ZeroKind,
    /// The segment ends inside a frame.
    #[error("segment ends inside a frame ({available} of {needed} bytes present)")]
    Truncated {
        /// Bytes the frame needs.
        needed: u64,
        /// Bytes present.
        available: u64,
    },
    /// Non-zero bytes after the zero end-of-data marker.
    #[error("non-zero bytes after the end-of-data marker")]
    GarbageAfterEnd,
    /// A valid frame carries an LSN other than the next expected one.
    #[error("unexpected lsn {found} (expected {expected})")]
    UnexpectedLsn {
        /// The LSN that should come next.
        expected: u64,
        /// The LSN in the frame.
        found: u64,
    },
    /// The segment header is damaged (crc mismatch, reserved flags set, or shorter than a header).
    #[error("damaged segment header: {detail}")]
    BadHeader {
        /// What is wrong with it.
        detail: &'static str,
    },
    /// The header's first LSN differs from the LSN in the file name.
    #[error("header says first lsn {header}, file name says {name}")]
    NameMismatch {
        /// LSN in the header.
        header: u64,
        /// LSN in the file name.
        name: u64,
    },
    /// Damage at the tail of the last segment (reported as an error only under
    /// [`RecoveryMode::AbsoluteConsistency`](crate::RecoveryMode::AbsoluteConsistency)).
    #[error("torn tail ({0})")]
    TornTail(Box<CorruptReason>),
}

/// Errors of the write-ahead log. Corruption is never [`WalError::Io`]: it is
/// [`WalError::Corrupt`] (or one of the header variants) with the segment and byte offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The operating system failed an operation on `path`.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// File or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Damaged bytes in a segment, at `offset` (bytes from the start of the segment file).
    #[error("corrupt WAL segment {} at offset {offset}: {reason}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset of the first damaged byte (the start of the damaged frame).
        offset: u64,
        /// What is wrong.
        reason: CorruptReason,
    },
    /// A file named like a segment that does not start with the WAL magic: not a spate WAL file.
    #[error("{} is not a spate WAL segment (magic {found:02x?})", segment.display())]
    NotASegment {
        /// The file.
        segment: PathBuf,
        /// The first 8 bytes found.
        found: Vec<u8>,
    },
    /// A segment written by a newer spate (format version above the supported one).
    #[error("{} has WAL format version {found}; this spate reads up to {supported} (written by a newer spate?)", segment.display())]
    UnsupportedVersion {
        /// The segment.
        segment: PathBuf,
        /// Version in the header.
        found: u16,
        /// Highest version this build reads.
        supported: u16,
    },
    /// A segment whose codec id this build does not know.
    #[error("{} uses codec id {found}, which this spate does not know", segment.display())]
    UnsupportedCodec {
        /// The segment.
        segment: PathBuf,
        /// Codec id in the header.
        found: u8,
    },
    /// Records are missing between two segments (a segment was removed or lost from the middle).
    #[error("lsn gap before {}: expected lsn {expected}, segment starts at {found}", segment.display())]
    LsnGap {
        /// The segment after the gap.
        segment: PathBuf,
        /// The LSN that should have come next.
        expected: u64,
        /// The first LSN of `segment`.
        found: u64,
    },
    /// `append` was given a payload larger than [`WalOptions::max_record_bytes`](crate::WalOptions).
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Payload length.
        len: usize,
        /// Maximum payload length.
        max: u32,
    },
    /// `append` was given kind 0, which is reserved as a torn-write canary.
    #[error("record kind 0 is reserved")]
    ReservedKind,
    /// `read_at` was given a handle that does not name a record of this WAL (wrong offset or
    /// length, as Spark's random reader's "Expected message length" check), or its segment was
    /// removed by `truncate_before`/`clean`.
    #[error("invalid record handle {handle:?}: {detail}")]
    InvalidHandle {
        /// The handle.
        handle: crate::RecordHandle,
        /// What does not match.
        detail: String,
    },
    /// An earlier write or sync failed; the WAL refuses further work (its durable state is unknown
    /// until it is reopened, which re-reads and repairs the tail).
    #[error("WAL is failed after an earlier I/O error: {cause}")]
    Poisoned {
        /// The first error.
        cause: String,
    },
    /// The WAL was closed.
    #[error("WAL is closed")]
    Closed,
    /// Another open WAL (another process, or another `Wal` in this one) owns `dir`: its `LOCK` file
    /// is locked. Nothing was read, repaired or written. Stop that process first; a process that
    /// died (even by kill -9) holds no lock.
    #[error("WAL directory {} is in use by another process ({holder}); one process per WAL", dir.display())]
    Locked {
        /// The WAL directory.
        dir: PathBuf,
        /// The holder line read from `<dir>/LOCK`: `pid=… host=… started_unix_ms=… spate=…`.
        holder: String,
    },
}

impl WalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            path: path.into(),
            source,
        }
    }
}
