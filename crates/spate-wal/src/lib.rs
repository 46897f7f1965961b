//! Segmented, checksummed write-ahead log with group commit and explicit recovery modes.

mod error;
pub mod format;
mod reader;
mod wal;

pub use error::{CorruptReason, WalError};
pub use reader::{
    Record, RecordHandle, RecoveryMode, RecoveryReport, SegmentSummary, SkippedRange, TornTail,
    WalReader,
};
pub use wal::{SyncPolicy, Wal, WalOptions};
