//! # spate-wal
//!
//! A segmented, checksummed write-ahead log with group commit and explicit recovery modes. Receiver
//! blocks and block-tracker events are written through it (DESIGN.md §4 step 1), so its contract is:
//! **a record is durable iff `append` + `sync` returned `Ok`; replay yields exactly the synced
//! prefix** (plus, after a crash, possibly some records that were written but not yet synced, in
//! order, never anything invented).
//!
//! ## A guided tour
//!
//! 1. **Open.** [`Wal::open`] first takes exclusive ownership of the directory (an `flock` on its
//!    `LOCK` file naming the holder, as RocksDB's `LOCK`; a second opener gets
//!    [`WalError::Locked`]), then lists the directory, verifies every segment frame by frame, repairs a
//!    torn tail according to the [`RecoveryMode`] and returns a [`RecoveryReport`] (segments,
//!    [`TornTail`] with segment, offset and dropped bytes, [`SkippedRange`]s, ignored files).
//!    Nothing is created until the first append (as Spark's `FileBasedWriteAheadLog`).
//! 2. **Append.** [`Wal::append`]`(kind, payload) -> Lsn` frames the record (length, a check on the
//!    length, crc32 over kind, LSN, time and payload) into an in-memory buffer; LSNs are dense.
//!    [`Wal::append_with_handle`] also returns a [`RecordHandle`] (segment, offset, length), and
//!    [`Wal::append_at`] takes the record time explicitly (Spark's `write(record, time)`).
//! 3. **Sync (group commit).** [`Wal::sync`] makes everything appended before it durable. The
//!    first caller becomes the *leader*: it takes the whole buffer, issues **one `pwrite` per
//!    segment touched and one `fdatasync`**, while other threads keep appending into a fresh buffer
//!    and followers wait; the next leader takes everything that accumulated. Appends are never
//!    serialized behind an fsync. [`SyncPolicy`] chooses who syncs: every append (default; the
//!    append returns once durable), a background thread every N ms or every N bytes, or manual.
//! 4. **Read.** [`Wal::read_at`] reads one record by handle (Spark's
//!    `FileBasedWriteAheadLogRandomReader`, with the length *and* crc checked);
//!    [`Wal::replay_from`] and [`WalReader`] replay sequentially from an LSN;
//!    `WalReader::next() -> Result<Option<Record>, WalError>`.
//! 5. **Roll and truncate.** Segments roll by size (`segment_bytes`, preallocated and zero-filled)
//!    and by time (`roll_interval_ms`, Spark's `rollingIntervalSecs`). [`Wal::truncate_before`]
//!    removes segments whose records all precede an LSN; [`Wal::clean`] removes segments whose
//!    records are all older than a time (Spark's `clean(threshTime)`), both oldest first with a
//!    directory fsync after each removal.
//!
//! ## Durability contract
//!
//! * `append` under [`SyncPolicy::EveryAppend`]: once it returns `Ok`, the record survives a crash.
//! * `sync`: once it returns `Ok`, every record appended before the call survives a crash.
//! * Segments are created as `.tmp`, synced, renamed and the directory fsynced; a segment is
//!   `fdatasync`ed before the next is created, so only the last segment can have a torn tail.
//! * After any failed write or `fdatasync` the WAL is poisoned ([`WalError::Poisoned`]): Linux may
//!   have dropped the dirty pages, so the only safe continuation is to reopen, which re-reads the
//!   disk and truncates what did not make it.
//! * Dropping a [`Wal`] does not sync (for the contract it is a crash); [`Wal::close`] does.
//!
//! ## Recovery modes
//!
//! The first frame of every group write is flagged as a *sync point* (everything before it in its
//! segment was durable when it was written). Damage in the last segment with no valid sync point
//! after it is a **torn tail** (only the last group can be in flight at a crash, and its pages may
//! land out of order); anything else is **mid-log corruption** ([`WalError::Corrupt`] with the
//! segment path and byte offset).
//! [`RecoveryMode::TolerateTornTail`] (default) truncates a torn tail, reports exactly what was
//! dropped and keeps a copy in `<segment>.torn-<offset>`; [`RecoveryMode::AbsoluteConsistency`]
//! turns any damage into an error (`spate wal verify`); [`RecoveryMode::SkipCorrupt`] salvages by
//! skipping damaged ranges and reporting them. The byte format is specified in
//! `docs/format/wal.md` and pinned by golden files.
//!
//! ## Why not Spark's WAL
//!
//! Spark's `FileBasedWriteAheadLog` frames records as a bare 4-byte length with no checksum, magic
//! or version, `hflush`es instead of `hsync`, and silently ends a file at any `EOFException`; its
//! `BatchedWriteAheadLog` batches only the driver log. Here every record is checksummed, a torn
//! length is never trusted, damage is reported with coordinates, and group commit applies to every
//! writer.
//!
//! ## Testing
//!
//! Everything goes through [`spate_io::FileSystem`], so the same code runs on
//! [`spate_io::SimFs`], which separates written from synced bytes and directory entries, crashes,
//! tears writes and injects EIO/ENOSPC/short writes (see `tests/it/wal.rs`). The conformance
//! suite (`testing`, feature `testing`) checks the durability contract on any file system; the
//! crate's tests run it on `StdFs` and `SimFs`.

mod error;
pub mod format;
mod lock;
mod reader;
#[cfg(feature = "testing")]
pub mod testing;
mod wal;

pub use error::{CorruptReason, WalError};
pub use reader::{
    Record, RecordHandle, RecoveryMode, RecoveryReport, SegmentSummary, SkippedRange, TornTail,
    WalReader,
};
pub use wal::{SyncPolicy, Wal, WalOptions, MAX_RECORD_BYTES};

/// `true` only in the **deliberately broken, test-only** build with the `chaos-broken-skip-sync`
/// feature: group commit then skips `fdatasync` but reports success (acknowledged records are lost
/// on power loss). The chaos harness's oracle self-test uses it; never ship such a build.
pub const CHAOS_BROKEN_SKIP_SYNC: bool = cfg!(feature = "chaos-broken-skip-sync");
