//! The WAL options shared by `tests/failpoints.rs` and its child process `tests/bin/abort_child.rs`
//! (both include this file with `#[path]`).

use spate_io::ManualClock;
use spate_wal::{RecoveryMode, SyncPolicy, WalOptions};
use std::sync::Arc;

/// 4 KiB segments, no preallocation, manual sync, AbsoluteConsistency recovery, a ManualClock at
/// 1 s.
pub(crate) fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 4096,
        preallocate: false,
        sync_policy: SyncPolicy::Manual,
        recovery: RecoveryMode::AbsoluteConsistency,
        clock: Arc::new(ManualClock::new(1_000)),
        ..WalOptions::default()
    }
}
