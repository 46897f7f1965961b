//! [`SimFs`]: an in-memory [`FileSystem`] that separates written from synced bytes, crashes, tears
//! writes and injects seeded I/O errors.
//!
//! The model is deliberately pessimistic (the weakest guarantees POSIX and Linux give):
//!
//! * per file, the bytes written since the last successful `sync_data` are kept as an ordered list of
//!   operations; [`SimFs::crash`] drops all of them ([`CrashMode::DropUnsynced`]) or keeps a random
//!   *prefix* of them, cutting the last kept write at a random byte ([`CrashMode::TearUnsynced`]);
//! * per directory, entries created, renamed or removed since the last `sync_dir` are undone by a
//!   crash: a file whose data was synced but whose entry was not is **gone** after the crash;
//! * a failed `sync_data` leaves the data unsynced (a later crash loses it);
//! * handles opened before a crash fail with EIO afterwards (the process that held them is dead);
//! * advisory locks ([`FileSystem::try_lock_exclusive`]) are held in memory and a crash releases
//!   them all, as the kernel releases a dead process's `flock`.
//!
//! Every random choice comes from one seed ([`SimFs::new`]), so a failing test can be replayed.
//! Directories themselves are modelled as durable once created; only file entries are tracked.

use crate::fs::{FileHandle, FileLock, FileSystem, SharedFile};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What [`SimFs::crash`] keeps of unsynced writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write and unsynced directory change is lost.
    DropUnsynced,
    /// Per file, a seeded random prefix of the unsynced writes survives, the last kept one torn at a
    /// random byte (disks persist in order up to an arbitrary point); directory changes not synced
    /// are lost.
    TearUnsynced,
}

/// Seeded fault injection rates, each in **per mille** (0 = never, 1000 = always).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// `write_at` and `sync_data` fail with EIO.
    pub eio_per_mille: u32,
    /// `write_at`, `set_len` and `create` fail with ENOSPC.
    pub enospc_per_mille: u32,
    /// `write_at` writes only a random non-empty strict prefix of the buffer (a short write).
    pub short_write_per_mille: u32,
}

/// Counters of what a [`SimFs`] was asked to do (for tests such as "fewer fsyncs than appends").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Successful `sync_data` calls.
    pub data_syncs: u64,
    /// Successful `sync_dir` calls.
    pub dir_syncs: u64,
    /// Successful (possibly short) `write_at` calls.
    pub writes: u64,
    /// Bytes written by those calls.
    pub bytes_written: u64,
    /// Crashes so far.
    pub crashes: u64,
    /// Faults injected so far.
    pub faults_injected: u64,
}

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Inode {
    /// What readers see now.
    data: Vec<u8>,
    /// What survives a crash.
    synced: Vec<u8>,
    /// Operations since the last successful sync, in order.
    unsynced: Vec<Op>,
}

fn apply(data: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, bytes } => {
            let off = *offset as usize;
            let end = off + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[off..end].copy_from_slice(bytes);
        }
        Op::SetLen(len) => data.resize(*len as usize, 0),
    }
}

#[derive(Debug)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    generation: u64,
    rng: u64,
    faults: Faults,
    stats: SimStats,
    /// Held advisory locks: path -> token of the holding [`SimLock`]. A crash clears them (the
    /// holding process is gone, as the kernel releases an `flock`).
    locks: HashMap<PathBuf, u64>,
    next_lock: u64,
}

/// A lock held on a [`SimFs`] path; released on drop unless a crash released it first.
#[derive(Debug)]
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    token: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = self.state.lock();
        if s.locks.get(&self.path) == Some(&self.token) {
            s.locks.remove(&self.path);
        }
    }
}

impl State {
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    fn roll(&mut self, per_mille: u32) -> bool {
        per_mille > 0 && self.below(1000) < u64::from(per_mille)
    }
    fn fault(&mut self, per_mille: u32, errno: i32) -> io::Result<()> {
        if self.roll(per_mille) {
            self.stats.faults_injected += 1;
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }
}

/// In-memory, crashable [`FileSystem`]. Cheap to clone; clones share the same files.
#[derive(Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.lock();
        f.debug_struct("SimFs")
            .field("files", &s.names.len())
            .field("generation", &s.generation)
            .field("stats", &s.stats)
            .finish()
    }
}

impl SimFs {
    /// An empty file system whose random choices (tears, faults) derive from `seed`.
    pub fn new(seed: u64) -> Self {
        SimFs {
            state: Arc::new(Mutex::new(State {
                inodes: HashMap::new(),
                next_ino: 1,
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs: BTreeSet::new(),
                generation: 0,
                rng: seed,
                faults: Faults::default(),
                stats: SimStats::default(),
                locks: HashMap::new(),
                next_lock: 1,
            })),
        }
    }

    /// [`SimFs::new`] with the directory `dir` already created: the usual start of a test.
    ///
    /// # Panics
    /// Never for an absolute `dir` (creating a directory in an empty `SimFs` cannot fail).
    pub fn with_dir(seed: u64, dir: &str) -> (SimFs, PathBuf) {
        let fs = SimFs::new(seed);
        let dir = PathBuf::from(dir);
        fs.create_dir_all(&dir)
            .expect("creating a directory in a new SimFs");
        (fs, dir)
    }

    /// Sets the fault injection rates (from now on).
    pub fn set_faults(&self, faults: Faults) {
        self.state.lock().faults = faults;
    }

    /// Counters so far.
    pub fn stats(&self) -> SimStats {
        self.state.lock().stats
    }

    /// Simulates a crash (power loss): unsynced data and unsynced directory changes are lost (or
    /// torn, per `mode`), and every handle opened before is dead (its operations fail with EIO).
    pub fn crash(&self, mode: CrashMode) {
        let mut s = self.state.lock();
        s.names = s.durable_names.clone();
        let live: BTreeSet<u64> = s.names.values().copied().collect();
        s.inodes.retain(|ino, _| live.contains(ino));
        let mut inos: Vec<u64> = s.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let ops = std::mem::take(&mut s.inodes.get_mut(&ino).expect("listed").unsynced);
            let mut data = s.inodes[&ino].synced.clone();
            if mode == CrashMode::TearUnsynced && !ops.is_empty() {
                let weights: Vec<u64> = ops
                    .iter()
                    .map(|op| match op {
                        Op::Write { bytes, .. } => bytes.len() as u64,
                        Op::SetLen(_) => 1,
                    })
                    .collect();
                let total: u64 = weights.iter().sum();
                let mut cut = s.below(total + 1);
                for (op, w) in ops.iter().zip(weights) {
                    if cut == 0 {
                        break;
                    }
                    if cut >= w {
                        apply(&mut data, op);
                        cut -= w;
                    } else {
                        if let Op::Write { offset, bytes } = op {
                            apply(
                                &mut data,
                                &Op::Write {
                                    offset: *offset,
                                    bytes: bytes[..cut as usize].to_vec(),
                                },
                            );
                        }
                        break;
                    }
                }
            }
            let inode = s.inodes.get_mut(&ino).expect("listed");
            inode.synced = data.clone();
            inode.data = data;
        }
        s.generation += 1;
        s.stats.crashes += 1;
        s.locks.clear();
    }

    /// The current (visible) contents of `path`, if it exists.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let s = self.state.lock();
        s.names.get(path).map(|ino| s.inodes[ino].data.clone())
    }

    /// Writes `bytes` as the whole durable contents of `path`, entry included (a test helper for
    /// planting files: as if written, synced and the directory synced).
    pub fn put_durable(&self, path: &Path, bytes: &[u8]) {
        let mut s = self.state.lock();
        let ino = s.next_ino;
        s.next_ino += 1;
        s.inodes.insert(
            ino,
            Inode {
                data: bytes.to_vec(),
                synced: bytes.to_vec(),
                unsynced: Vec::new(),
            },
        );
        s.names.insert(path.to_path_buf(), ino);
        s.durable_names.insert(path.to_path_buf(), ino);
    }

    /// Bytes of `path` that a crash right now could lose: the number of unsynced operations' bytes.
    pub fn unsynced_bytes(&self, path: &Path) -> u64 {
        let s = self.state.lock();
        s.names.get(path).map_or(0, |ino| {
            s.inodes[ino]
                .unsynced
                .iter()
                .map(|op| match op {
                    Op::Write { bytes, .. } => bytes.len() as u64,
                    Op::SetLen(_) => 0,
                })
                .sum()
        })
    }

    fn handle(&self, ino: u64, path: &Path, generation: u64) -> SharedFile {
        Arc::new(SimFile {
            state: Arc::clone(&self.state),
            ino,
            generation,
            path: path.to_path_buf(),
        })
    }
}

/// An error of `kind` reading `<path>: <what>`.
fn path_error(kind: io::ErrorKind, path: &Path, what: &str) -> io::Error {
    io::Error::new(kind, format!("{}: {what}", path.display()))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl State {
    /// `NotFound` naming the parent directory of `path` unless it exists.
    fn require_parent(&self, path: &Path) -> io::Result<()> {
        let parent = parent_of(path);
        if self.dirs.contains(&parent) {
            Ok(())
        } else {
            Err(not_found(&parent))
        }
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() {
                break;
            }
            s.dirs.insert(p.to_path_buf());
            d = p.parent();
        }
        Ok(())
    }

    fn create(&self, path: &Path) -> io::Result<SharedFile> {
        let mut s = self.state.lock();
        s.require_parent(path)?;
        if s.names.contains_key(path) {
            return Err(path_error(io::ErrorKind::AlreadyExists, path, "exists"));
        }
        let p = s.faults.enospc_per_mille;
        s.fault(p, libc::ENOSPC)?;
        let ino = s.next_ino;
        s.next_ino += 1;
        s.inodes.insert(ino, Inode::default());
        s.names.insert(path.to_path_buf(), ino);
        let generation = s.generation;
        drop(s);
        Ok(self.handle(ino, path, generation))
    }

    fn open(&self, path: &Path) -> io::Result<SharedFile> {
        let s = self.state.lock();
        let ino = *s.names.get(path).ok_or_else(|| not_found(path))?;
        let generation = s.generation;
        drop(s);
        Ok(self.handle(ino, path, generation))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        let ino = s.names.remove(from).ok_or_else(|| not_found(from))?;
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        s.names.remove(path).ok_or_else(|| not_found(path))?;
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(s.names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state.lock();
        s.names.contains_key(path) || s.dirs.contains(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state.lock();
        if !s.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let in_dir = |p: &PathBuf| p.parent() == Some(dir);
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| !in_dir(p));
        s.durable_names.extend(current);
        s.stats.dir_syncs += 1;
        Ok(())
    }

    fn try_lock_exclusive(&self, path: &Path) -> io::Result<FileLock> {
        let mut s = self.state.lock();
        s.require_parent(path)?;
        if s.locks.contains_key(path) {
            return Err(path_error(
                io::ErrorKind::WouldBlock,
                path,
                "locked by another open file",
            ));
        }
        if !s.names.contains_key(path) {
            let ino = s.next_ino;
            s.next_ino += 1;
            s.inodes.insert(ino, Inode::default());
            s.names.insert(path.to_path_buf(), ino);
        }
        let token = s.next_lock;
        s.next_lock += 1;
        s.locks.insert(path.to_path_buf(), token);
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            token,
        }))
    }
}

struct SimFile {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
    path: PathBuf,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .finish()
    }
}

impl SimFile {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> io::Result<R>) -> io::Result<R> {
        let mut s = self.state.lock();
        if s.generation != self.generation || !s.inodes.contains_key(&self.ino) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        f(&mut s)
    }
}

impl FileHandle for SimFile {
    fn len(&self) -> io::Result<u64> {
        let ino = self.ino;
        self.with(|s| Ok(s.inodes[&ino].data.len() as u64))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let ino = self.ino;
        self.with(|s| {
            let data = &s.inodes[&ino].data;
            let off = usize::try_from(offset).unwrap_or(usize::MAX);
            if off >= data.len() {
                return Ok(0);
            }
            let n = buf.len().min(data.len() - off);
            buf[..n].copy_from_slice(&data[off..off + n]);
            Ok(n)
        })
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        let ino = self.ino;
        self.with(|s| {
            let f = s.faults;
            s.fault(f.eio_per_mille, libc::EIO)?;
            s.fault(f.enospc_per_mille, libc::ENOSPC)?;
            let mut n = buf.len();
            if n > 1 && s.roll(f.short_write_per_mille) {
                s.stats.faults_injected += 1;
                n = 1 + s.below(n as u64 - 1) as usize;
            }
            let op = Op::Write {
                offset,
                bytes: buf[..n].to_vec(),
            };
            let inode = s.inodes.get_mut(&ino).expect("checked");
            apply(&mut inode.data, &op);
            inode.unsynced.push(op);
            s.stats.writes += 1;
            s.stats.bytes_written += n as u64;
            Ok(n)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let ino = self.ino;
        self.with(|s| {
            let p = s.faults.enospc_per_mille;
            s.fault(p, libc::ENOSPC)?;
            let op = Op::SetLen(len);
            let inode = s.inodes.get_mut(&ino).expect("checked");
            apply(&mut inode.data, &op);
            inode.unsynced.push(op);
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let ino = self.ino;
        self.with(|s| {
            let p = s.faults.eio_per_mille;
            s.fault(p, libc::EIO)?;
            let inode = s.inodes.get_mut(&ino).expect("checked");
            inode.synced = inode.data.clone();
            inode.unsynced.clear();
            s.stats.data_syncs += 1;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates `p` in `dir` with `bytes`, all durable (data and directory entry synced).
    fn durable_file(fs: &SimFs, dir: &Path, p: &Path, bytes: &[u8]) -> SharedFile {
        let f = fs.create(p).unwrap();
        fs.sync_dir(dir).unwrap();
        f.write_all_at(0, bytes).unwrap();
        f.sync_data().unwrap();
        f
    }

    fn setup() -> (SimFs, PathBuf) {
        SimFs::with_dir(7, "/d")
    }

    #[test]
    fn unsynced_writes_are_lost_in_a_crash() {
        let (fs, dir) = setup();
        let p = dir.join("f");
        let f = durable_file(&fs, &dir, &p, b"durable");
        f.write_all_at(7, b"-lost").unwrap();
        assert_eq!(fs.read_file(&p).unwrap(), b"durable-lost");
        assert_eq!(fs.unsynced_bytes(&p), 5);
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(fs.read_file(&p).unwrap(), b"durable");
        let e = f.len().expect_err("handles from before the crash are dead");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    }

    #[test]
    fn unsynced_directory_entries_are_lost_in_a_crash() {
        let (fs, dir) = setup();
        let p = dir.join("f");
        let f = fs.create(&p).unwrap();
        f.write_all_at(0, b"x").unwrap();
        f.sync_data().unwrap();
        fs.crash(CrashMode::DropUnsynced);
        assert!(fs.read_file(&p).is_none(), "entry was never synced");

        let f = fs.create(&p).unwrap();
        f.write_all_at(0, b"y").unwrap();
        f.sync_data().unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.remove(&p).unwrap();
        fs.crash(CrashMode::DropUnsynced);
        assert_eq!(
            fs.read_file(&p).unwrap(),
            b"y",
            "unsynced removal is undone"
        );
        fs.rename(&p, &dir.join("g")).unwrap();
        fs.sync_dir(&dir).unwrap();
        fs.crash(CrashMode::DropUnsynced);
        assert!(fs.read_file(&p).is_none());
        assert_eq!(fs.list(&dir).unwrap(), vec!["g".to_string()]);
    }

    #[test]
    fn tear_keeps_a_prefix_of_the_unsynced_writes() {
        let mut seen_partial = false;
        for seed in 0..64 {
            let fs = SimFs::new(seed);
            let dir = PathBuf::from("/d");
            fs.create_dir_all(&dir).unwrap();
            let p = dir.join("f");
            let f = durable_file(&fs, &dir, &p, b"AAAA");
            f.write_all_at(4, b"BBBB").unwrap();
            f.write_all_at(8, b"CCCC").unwrap();
            fs.crash(CrashMode::TearUnsynced);
            let got = fs.read_file(&p).unwrap();
            let full = b"AAAABBBBCCCC";
            assert!(got.len() >= 4 && full.starts_with(&got), "{got:?}");
            seen_partial |= got.len() > 4 && got.len() < 12 && got.len() != 8;
        }
        assert!(seen_partial, "some seed must tear inside a write");
    }

    #[test]
    fn seeded_faults_are_injected_and_counted() {
        let (fs, dir) = setup();
        let f = fs.create(&dir.join("f")).unwrap();
        fs.set_faults(Faults {
            eio_per_mille: 300,
            enospc_per_mille: 300,
            short_write_per_mille: 300,
        });
        let (mut eio, mut enospc, mut short) = (0, 0, 0);
        for _ in 0..200 {
            match f.write_at(0, &[1u8; 64]) {
                Ok(n) if n < 64 => short += 1,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EIO) => eio += 1,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => enospc += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(eio > 0 && enospc > 0 && short > 0, "{eio} {enospc} {short}");
        assert_eq!(fs.stats().faults_injected, eio + enospc + short);
    }

    #[test]
    fn locks_are_exclusive_released_on_drop_and_by_a_crash() {
        let (fs, dir) = setup();
        let p = dir.join("LOCK");
        let stale = crate::fs::assert_lock_is_exclusive_until_dropped(&fs, &p);
        fs.crash(CrashMode::DropUnsynced);
        let after = fs
            .try_lock_exclusive(&p)
            .expect("a crash releases the lock");
        drop(stale);
        let e = fs
            .try_lock_exclusive(&p)
            .expect_err("the dead holder's drop releases nothing");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}");
        drop(after);
    }
}
