//! # spate-io
//!
//! The seams through which spate touches the outside world, so every durable effect and every timer
//! can be tested in-process:
//!
//! * [`Clock`] — wall-clock time in ms, with [`SystemClock`] for production and [`ManualClock`] for
//!   deterministic tests (as Spark's `ManualClock`: time moves only when a test advances it);
//! * [`FileSystem`] / [`FileHandle`] — the files spate makes durable, with [`StdFs`] for real disks
//!   (`sync_data` = `fdatasync(2)`, `sync_dir` = `fsync(2)` of the directory) and [`SimFs`], an
//!   in-memory file system that separates written from synced bytes and directory entries, can
//!   [`crash`](SimFs::crash) (dropping or tearing what was not synced) and injects seeded EIO,
//!   ENOSPC and short writes. A `sync` that does nothing would be a lie; `SimFs` makes lost unsynced
//!   writes visible to tests.

mod clock;
mod fs;
mod sim;

pub use clock::{Clock, ManualClock, SystemClock};
pub use fs::{parent_dir, FileHandle, FileLock, FileSystem, SharedFile, StdFs};
pub use sim::{CrashMode, Faults, SimFs, SimStats};
