//! Exclusive ownership of a WAL directory: the `LOCK` file (as RocksDB's `LOCK` and sled's).
//!
//! [`Wal::open`](crate::Wal::open) takes an exclusive advisory lock on `<dir>/LOCK` through
//! [`FileSystem::try_lock_exclusive`] before it reads, repairs or writes anything, and holds it
//! until the [`Wal`](crate::Wal) is dropped. The file's content names the holder, one line:
//! `pid=<pid> host=<hostname> started_unix_ms=<ms> spate=<version>`. A second opener (another
//! process, or a second `Wal` in the same process: `flock(2)` is per open file) gets
//! [`WalError::Locked`] with that line. The kernel releases an `flock` when its holder dies, kill -9
//! included, so a `LOCK` file left behind is never "stale" in the sense of blocking: the next opener
//! takes the lock and overwrites the content. The content is informative only and not synced.

use crate::error::WalError;
use spate_io::{Clock, FileLock, FileSystem};
use std::io;
use std::path::Path;

/// Name of the lock file inside a WAL directory. Not a segment: the reader skips it.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Takes the lock on `dir` (which must exist) and writes the holder line into it.
///
/// # Errors
/// [`WalError::Locked`] naming the current holder if another open file holds it;
/// [`WalError::Io`] otherwise.
pub(crate) fn acquire(
    fs: &dyn FileSystem,
    dir: &Path,
    clock: &dyn Clock,
) -> Result<FileLock, WalError> {
    let path = dir.join(LOCK_FILE);
    let lock = match fs.try_lock_exclusive(&path) {
        Ok(lock) => lock,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            return Err(WalError::Locked {
                dir: dir.to_path_buf(),
                holder: read_holder(fs, &path),
            })
        }
        Err(e) => return Err(WalError::io(&path, e)),
    };
    let file = match fs.open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs.create(&path),
        r => r,
    }
    .map_err(|e| WalError::io(&path, e))?;
    let line = holder_line(std::process::id(), &hostname(), clock.now_ms());
    file.set_len(0).map_err(|e| WalError::io(&path, e))?;
    file.write_all_at(0, line.as_bytes())
        .map_err(|e| WalError::io(&path, e))?;
    Ok(lock)
}

/// The holder line written into `LOCK`.
fn holder_line(pid: u32, host: &str, started_unix_ms: u64) -> String {
    format!(
        "pid={pid} host={host} started_unix_ms={started_unix_ms} spate={}\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The holder named in a locked `LOCK` file, or why it cannot be named (the holder may still be
/// writing it, or the file is not readable).
fn read_holder(fs: &dyn FileSystem, path: &Path) -> String {
    match fs.open(path).and_then(|f| f.read_all()) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let line = text.lines().next().unwrap_or("").trim();
            if line.is_empty() {
                "unknown holder (LOCK is empty: the holder is still starting)".to_owned()
            } else {
                line.to_owned()
            }
        }
        Err(e) => format!("unknown holder (reading {}: {e})", path.display()),
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `unknown`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
        .replace(char::is_whitespace, "_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_io::{CrashMode, ManualClock, SimFs};
    use std::path::PathBuf;

    fn sim() -> (SimFs, PathBuf) {
        SimFs::with_dir(1, "/w")
    }

    #[test]
    fn holder_line_names_pid_host_start_and_version() {
        let line = holder_line(42, "box", 1_700_000_000_000);
        assert_eq!(
            line,
            format!(
                "pid=42 host=box started_unix_ms=1700000000000 spate={}\n",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn a_second_acquire_is_locked_and_names_the_holder() {
        let (fs, dir) = sim();
        let clock = ManualClock::new(5_000);
        let _held = acquire(&fs, &dir, &clock).expect("first");
        match acquire(&fs, &dir, &clock) {
            Err(WalError::Locked { dir: d, holder }) => {
                assert_eq!(d, dir);
                let pid = format!("pid={} ", std::process::id());
                assert!(holder.starts_with(&pid), "{holder}");
                assert!(holder.contains("started_unix_ms=5000 "), "{holder}");
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn a_crash_releases_the_lock_and_the_next_holder_overwrites_the_line() {
        let (fs, dir) = sim();
        let _dead = acquire(&fs, &dir, &ManualClock::new(1)).expect("first");
        fs.crash(CrashMode::DropUnsynced);
        let _held = acquire(&fs, &dir, &ManualClock::new(2)).expect("after the crash");
        let text = String::from_utf8(fs.read_file(&dir.join(LOCK_FILE)).unwrap()).unwrap();
        assert!(text.contains("started_unix_ms=2 "), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn an_empty_lock_file_names_an_unknown_holder() {
        let (fs, dir) = sim();
        let _held = fs.try_lock_exclusive(&dir.join(LOCK_FILE)).unwrap();
        match acquire(&fs, &dir, &ManualClock::new(1)) {
            Err(WalError::Locked { holder, .. }) => {
                assert!(holder.starts_with("unknown holder"), "{holder}")
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }
}
