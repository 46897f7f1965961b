//! The `FileSystem` seam and [`StdFs`], its implementation over real files.
//!
//! Every local durable effect in spate (WAL segments, local state files) goes through
//! [`FileSystem`] and [`FileHandle`], so the same code runs against a real disk ([`StdFs`]) and
//! against [`SimFs`](crate::SimFs), which remembers which bytes were only *written* and which were
//! *synced*, and can crash.
//!
//! # Durability model (what callers may rely on)
//!
//! * A byte written with [`FileHandle::write_at`] is **visible** to readers at once but **durable**
//!   only after [`FileHandle::sync_data`] returned `Ok` for that file.
//! * A directory entry created by [`FileSystem::create`] or [`FileSystem::rename`], or removed by
//!   [`FileSystem::remove`], is durable only after [`FileSystem::sync_dir`] of its parent directory
//!   returned `Ok`. A file whose data was synced but whose entry was not may vanish in a crash.
//! * After a failed `sync_data` nothing is known about which bytes are durable (Linux may drop dirty
//!   pages and clear the error: "fsyncgate"); callers must treat the file as damaged and re-read it
//!   after a restart. spate's WAL poisons itself on the first failed write or sync.
//!
//! Errors are [`std::io::Error`]: this is the OS boundary, and callers (the WAL) wrap them into their
//! own typed errors together with the path.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file, read and written at explicit offsets (`pread`/`pwrite`), shareable between threads.
pub trait FileHandle: Send + Sync + fmt::Debug {
    /// Current length in bytes (including any preallocated, zero-filled tail).
    ///
    /// # Errors
    /// The OS error.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file has length 0.
    ///
    /// # Errors
    /// The OS error.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at or past the end).
    ///
    /// # Errors
    /// The OS error.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes up to `buf.len()` bytes at `offset` (a single `pwrite`) and returns how many were
    /// written, which **may be fewer** (a short write). Use [`write_all_at`](Self::write_all_at) to
    /// write everything.
    ///
    /// # Durability
    /// The bytes are visible at once and durable only after [`sync_data`](Self::sync_data).
    ///
    /// # Errors
    /// The OS error (EIO, ENOSPC, ...). After an error, how much was written is unknown.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<usize>;

    /// Sets the length: shrinking drops bytes, growing appends zero bytes (on a real disk a sparse
    /// hole). Used for truncating a torn tail and for preallocating a segment.
    ///
    /// # Durability
    /// Like a write: durable after [`sync_data`](Self::sync_data).
    ///
    /// # Errors
    /// The OS error.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Makes every byte written so far (and the length) durable: `fdatasync(2)` on [`StdFs`].
    ///
    /// # Durability
    /// Once this returns `Ok`, every write and `set_len` issued on this file before the call survives
    /// a crash or power loss. It says nothing about the file's directory entry (see
    /// [`FileSystem::sync_dir`]).
    ///
    /// # Errors
    /// The OS error. After an error, which bytes are durable is unknown.
    fn sync_data(&self) -> io::Result<()>;

    /// Writes all of `buf` at `offset`, retrying after short writes.
    ///
    /// # Errors
    /// The first OS error, or [`io::ErrorKind::WriteZero`] if a write made no progress.
    fn write_all_at(&self, mut offset: u64, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(offset, buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "write made no progress",
                    ))
                }
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] if the file is shorter, or the OS error.
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(offset, buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than expected",
                    ))
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the whole file.
    ///
    /// # Errors
    /// The OS error.
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "file too large"))?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self.read_at(done as u64, &mut buf[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }
}

/// A shared, open file.
pub type SharedFile = Arc<dyn FileHandle>;

/// An exclusive advisory lock on a file, taken by [`FileSystem::try_lock_exclusive`] and held
/// until this value is dropped (or the process dies: the kernel releases an `flock(2)` then).
pub type FileLock = Box<dyn fmt::Debug + Send + Sync>;

/// The file-system operations spate needs, on paths.
///
/// Implementations: [`StdFs`] (the real disk) and [`SimFs`](crate::SimFs) (in memory, crashable).
pub trait FileSystem: Send + Sync + fmt::Debug {
    /// Creates `dir` and its missing parents.
    ///
    /// # Durability
    /// On [`StdFs`] the new directories' entries are not synced; callers that need that call
    /// [`sync_dir`](Self::sync_dir) on the parent. [`SimFs`](crate::SimFs) models directories as
    /// durable once created (it tracks file entries only).
    ///
    /// # Errors
    /// The OS error.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Creates a new, empty file opened for reading and writing; fails with
    /// [`io::ErrorKind::AlreadyExists`] if `path` exists.
    ///
    /// # Durability
    /// The directory entry is durable only after [`sync_dir`](Self::sync_dir) of the parent.
    ///
    /// # Errors
    /// The OS error.
    fn create(&self, path: &Path) -> io::Result<SharedFile>;

    /// Opens an existing file for reading and writing.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] or another OS error.
    fn open(&self, path: &Path) -> io::Result<SharedFile>;

    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    ///
    /// # Durability
    /// Durable only after [`sync_dir`](Self::sync_dir) of the parent directory (or directories).
    ///
    /// # Errors
    /// The OS error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    ///
    /// # Durability
    /// The removal is durable only after [`sync_dir`](Self::sync_dir) of the parent.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] or another OS error.
    fn remove(&self, path: &Path) -> io::Result<()>;

    /// Names (not paths) of the regular files directly inside `dir`, sorted.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`] if `dir` does not exist, or another OS error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &Path) -> bool;

    /// Makes the directory's entries (creations, renames, removals) durable: `fsync(2)` of the
    /// directory on [`StdFs`].
    ///
    /// # Durability
    /// Once this returns `Ok`, every entry change in `dir` issued before the call survives a crash.
    ///
    /// # Errors
    /// The OS error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Takes an exclusive advisory lock on `path` without blocking, creating the (empty) file if
    /// it does not exist; the lock is held until the returned [`FileLock`] is dropped. On
    /// [`StdFs`] it is `flock(2)` (`LOCK_EX | LOCK_NB`, through `File::try_lock`): per open file,
    /// so it also excludes a second opener in the same process, and the kernel releases it when
    /// the holder dies (kill -9 included). [`SimFs`](crate::SimFs) models it in memory and drops
    /// every lock at a crash. The default implementation (test wrappers) grants every request
    /// without locking and without creating the file.
    ///
    /// # Errors
    /// [`io::ErrorKind::WouldBlock`] if another holder has the lock; another OS error.
    fn try_lock_exclusive(&self, path: &Path) -> io::Result<FileLock> {
        let _ = path;
        Ok(Box::new(()))
    }
}

/// [`FileSystem`] over the real disk (`std::fs`); `sync_data` is `fdatasync(2)`, `sync_dir` is
/// `fsync(2)` of the directory.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

#[derive(Debug)]
struct StdFile {
    file: File,
}

impl FileHandle for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        self.file.write_at(buf, offset)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<SharedFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(StdFile { file }))
    }
    fn open(&self, path: &Path) -> io::Result<SharedFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(StdFile { file }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        names.sort();
        Ok(names)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn try_lock_exclusive(&self, path: &Path) -> io::Result<FileLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Box::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{}: locked by another open file", path.display()),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// The parent directory of `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The lock contract every [`FileSystem`] meets, checked on `fs` at `p` (whose directory exists):
/// the first lock creates the file, a second is refused with `WouldBlock` while the first is held,
/// and dropping the first releases it. Returns the lock taken after the release.
#[cfg(test)]
pub(crate) fn assert_lock_is_exclusive_until_dropped(fs: &dyn FileSystem, p: &Path) -> FileLock {
    let held = fs.try_lock_exclusive(p).expect("first lock");
    assert!(fs.exists(p), "the lock file is created");
    let e = fs.try_lock_exclusive(p).expect_err("second lock");
    assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
    drop(held);
    fs.try_lock_exclusive(p).expect("lock after release")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new directory under the system temp dir, unique to this process and `tag`.
    fn fresh_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("spate-io-{tag}-{}", std::process::id()));
        StdFs.create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn std_fs_round_trip() {
        let (fs, dir) = (StdFs, fresh_dir("stdfs"));
        let p = dir.join("a");
        let _ = fs.remove(&p);
        let f = fs.create(&p).unwrap();
        let e = fs
            .create(&p)
            .expect_err("create must refuse an existing file");
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}");
        f.write_all_at(0, b"hello").unwrap();
        f.write_all_at(5, b" world").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        assert_eq!(f.read_all().unwrap(), b"hello world");
        f.set_len(20).unwrap();
        assert_eq!(f.len().unwrap(), 20);
        let mut b = [1u8; 9];
        f.read_exact_at(11, &mut b).unwrap();
        assert_eq!(b, [0u8; 9]);
        fs.rename(&p, &dir.join("b")).unwrap();
        assert_eq!(fs.list(&dir).unwrap(), vec!["b".to_string()]);
        fs.remove(&dir.join("b")).unwrap();
        let e = fs.open(&dir.join("b")).expect_err("removed");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn std_fs_lock_is_exclusive_per_open_and_released_on_drop() {
        let (fs, dir) = (StdFs, fresh_dir("lock"));
        let p = dir.join("LOCK");
        drop(assert_lock_is_exclusive_until_dropped(&fs, &p));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
