//! The writer: [`Wal`], its options, group commit and segment management.

use crate::error::WalError;
use crate::format::{
    decode_frame, encode_frame, encode_header, mark_sync_point, segment_file_name, Decoded,
    FRAME_HEADER_LEN, HEADER_LEN, TEMP_SUFFIX,
};
use crate::reader::{list_dir, Record, RecordHandle, RecoveryMode, RecoveryReport, WalReader};
use parking_lot::{Condvar, Mutex};
use spate_io::{Clock, FileSystem, SharedFile, SystemClock};
use spate_types::Lsn;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// When appended records are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// [`Wal::append`] returns only once its record is durable. Concurrent appenders share one
    /// `fdatasync` (group commit). Default.
    EveryAppend,
    /// A background thread syncs every `n` ms; `append` returns once the record is buffered. A
    /// crash loses at most the records of the last `n` ms (plus the sync in flight).
    IntervalMs(u64),
    /// A background thread syncs whenever at least `n` bytes of frames are buffered (and every
    /// 100 ms if fewer); `append` returns once the record is buffered.
    Bytes(u64),
    /// Only [`Wal::sync`] makes records durable.
    Manual,
}

/// The largest record payload (bytes, 64 MiB) a WAL accepts by default: the writer refuses a larger
/// one with [`WalError::RecordTooLarge`] and every reader (`Wal::open`, [`WalReader`](crate::WalReader),
/// `spate wal verify`) trusts lengths up to it. One constant for both sides, so no writer with
/// default options can produce a record its reader rejects.
pub const MAX_RECORD_BYTES: u32 = 64 << 20;

/// Options of [`Wal::open`].
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Roll to a new segment when the next frame would make the segment larger than this (bytes).
    /// A single larger record still gets its own segment. Default 64 MiB.
    pub segment_bytes: u64,
    /// Roll to a new segment once the current one's first record is this old (ms), as Spark's
    /// `rollingIntervalSecs` (default 60 s there). `None`: roll by size only. Default 60 000.
    pub roll_interval_ms: Option<u64>,
    /// Extend new segments to `segment_bytes` (zero-filled) when they are created. Default true.
    pub preallocate: bool,
    /// Largest payload accepted by `append` and trusted by the reader (bytes). Default 64 MiB.
    pub max_record_bytes: u32,
    /// When records become durable. Default [`SyncPolicy::EveryAppend`].
    pub sync_policy: SyncPolicy,
    /// How [`Wal::open`] treats damage. Default [`RecoveryMode::TolerateTornTail`].
    pub recovery: RecoveryMode,
    /// Time source for record times and time-based rolling.
    pub clock: Arc<dyn Clock>,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: 64 << 20,
            roll_interval_ms: Some(60_000),
            preallocate: true,
            max_record_bytes: MAX_RECORD_BYTES,
            sync_policy: SyncPolicy::EveryAppend,
            recovery: RecoveryMode::TolerateTornTail,
            clock: Arc::new(SystemClock),
        }
    }
}

#[derive(Debug, Clone)]
struct SegMeta {
    path: PathBuf,
    last_lsn: Option<u64>,
    max_time_ms: Option<u64>,
}

#[derive(Debug)]
struct Active {
    first_lsn: u64,
    /// Offset after the last frame assigned (written or pending).
    end: u64,
    first_time_ms: Option<u64>,
}

#[derive(Debug)]
struct Chunk {
    segment: u64,
    offset: u64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct State {
    next_lsn: u64,
    synced_lsn: u64,
    pending: Vec<Chunk>,
    pending_bytes: u64,
    active: Option<Active>,
    /// The file of the segment the last flush wrote to.
    current_file: Option<(u64, SharedFile)>,
    segments: BTreeMap<u64, SegMeta>,
    flushing: bool,
    poisoned: Option<String>,
    closed: bool,
}

#[derive(Debug)]
struct Inner {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    opts: WalOptions,
    state: Mutex<State>,
    synced: Condvar,
    wake_bg: Condvar,
    /// Exclusive ownership of `dir` (`LOCK`), released by `close` or drop.
    lock: Mutex<Option<spate_io::FileLock>>,
}

/// A segmented, checksummed write-ahead log with group commit. `Send + Sync`: share it between
/// writer threads with an `Arc`.
///
/// See the [crate docs](crate) for the format, the durability contract and recovery.
#[derive(Debug)]
pub struct Wal {
    inner: Arc<Inner>,
    bg: Option<JoinHandle<()>>,
}

impl Wal {
    /// Opens (or creates) the WAL in `dir`: lists and verifies every segment, repairs a torn tail
    /// according to `opts.recovery`, removes half-created segments, and returns the WAL positioned
    /// after the last valid record together with what recovery found.
    ///
    /// A torn tail is truncated; the dropped bytes are first copied to
    /// `<segment>.torn-<offset>` beside it (synced, file and directory). Appends continue in the
    /// last segment after its last valid record. Nothing is created until the first append,
    /// except `<dir>/LOCK`: before reading anything, `open` takes an exclusive advisory lock on it
    /// (held until [`close`](Self::close) or drop; released by the kernel if the process dies) and
    /// writes the holder line into it.
    ///
    /// # Errors
    /// [`WalError::Locked`] (another open WAL owns `dir`; nothing was read or written),
    /// [`WalError::Corrupt`] (mid-log damage; any damage under
    /// [`RecoveryMode::AbsoluteConsistency`]), [`WalError::NotASegment`],
    /// [`WalError::UnsupportedVersion`], [`WalError::UnsupportedCodec`], [`WalError::LsnGap`],
    /// [`WalError::Io`].
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).map_err(|e| WalError::io(&dir, e))?;
        let lock = crate::lock::acquire(fs.as_ref(), &dir, opts.clock.as_ref())?;
        let listing = list_dir(fs.as_ref(), &dir)?;
        let mut removed = Vec::new();
        for t in &listing.temps {
            fs.remove(t).map_err(|e| WalError::io(t, e))?;
            removed.push(t.clone());
        }
        if !removed.is_empty() {
            fs.sync_dir(&dir).map_err(|e| WalError::io(&dir, e))?;
        }
        let mut reader = WalReader::over(
            Arc::clone(&fs),
            listing.segments.clone(),
            opts.recovery,
            0,
            None,
            opts.max_record_bytes,
        );
        while reader.next()?.is_some() {}
        let mut report = reader.into_report();
        report.removed_temp_files = removed;
        report.ignored_files = listing.ignored;

        let mut segments = BTreeMap::new();
        for s in &report.segments {
            segments.insert(
                s.first_lsn,
                SegMeta {
                    path: s.path.clone(),
                    last_lsn: s.last_lsn,
                    max_time_ms: s.max_time_ms,
                },
            );
        }
        let mut active = None;
        let mut current_file = None;
        if let Some(torn) = report.torn_tail.as_mut() {
            let file = fs
                .open(&torn.segment)
                .map_err(|e| WalError::io(&torn.segment, e))?;
            if torn.dropped_bytes > 0 {
                let mut dropped = vec![0u8; torn.dropped_bytes as usize];
                file.read_exact_at(torn.offset, &mut dropped)
                    .map_err(|e| WalError::io(&torn.segment, e))?;
                let name = torn
                    .segment
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("segment");
                let side = dir.join(format!("{name}.torn-{}", torn.offset));
                let _ = fs.remove(&side);
                let f = fs.create(&side).map_err(|e| WalError::io(&side, e))?;
                f.write_all_at(0, &dropped)
                    .map_err(|e| WalError::io(&side, e))?;
                f.sync_data().map_err(|e| WalError::io(&side, e))?;
                fs.sync_dir(&dir).map_err(|e| WalError::io(&dir, e))?;
                torn.saved_to = Some(side);
            }
            if torn.offset < HEADER_LEN as u64 {
                // The segment's creation itself was torn: it holds no record.
                fs.remove(&torn.segment)
                    .map_err(|e| WalError::io(&torn.segment, e))?;
                fs.sync_dir(&dir).map_err(|e| WalError::io(&dir, e))?;
            } else {
                let len = file.len().map_err(|e| WalError::io(&torn.segment, e))?;
                file.set_len(torn.offset)
                    .map_err(|e| WalError::io(&torn.segment, e))?;
                if opts.preallocate {
                    file.set_len(len)
                        .map_err(|e| WalError::io(&torn.segment, e))?;
                }
                file.sync_data()
                    .map_err(|e| WalError::io(&torn.segment, e))?;
            }
        }
        if let Some(last) = report.segments.last() {
            if fs.exists(&last.path) {
                let file = fs
                    .open(&last.path)
                    .map_err(|e| WalError::io(&last.path, e))?;
                active = Some(Active {
                    first_lsn: last.first_lsn,
                    end: last.end_offset,
                    first_time_ms: last.max_time_ms,
                });
                current_file = Some((last.first_lsn, file));
            } else {
                segments.remove(&last.first_lsn);
            }
        }
        let next_lsn = report.next_lsn();
        let inner = Arc::new(Inner {
            fs,
            dir,
            state: Mutex::new(State {
                next_lsn,
                synced_lsn: next_lsn,
                pending: Vec::new(),
                pending_bytes: 0,
                active,
                current_file,
                segments,
                flushing: false,
                poisoned: None,
                closed: false,
            }),
            synced: Condvar::new(),
            wake_bg: Condvar::new(),
            opts,
            lock: Mutex::new(Some(lock)),
        });
        let bg = match inner.opts.sync_policy {
            SyncPolicy::IntervalMs(_) | SyncPolicy::Bytes(_) => {
                let i = Arc::clone(&inner);
                Some(
                    std::thread::Builder::new()
                        .name("spate-wal-sync".into())
                        .spawn(move || background_sync(&i))
                        .map_err(|e| WalError::io("spate-wal-sync thread", e))?,
                )
            }
            _ => None,
        };
        Ok((Wal { inner, bg }, report))
    }

    /// The directory of this WAL.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a record of `kind` (1..=255) with the clock's current time and returns its LSN.
    ///
    /// # Durability
    /// Under [`SyncPolicy::EveryAppend`], once this returns `Ok` the record is durable: it survives
    /// a crash and every replay yields it. Under the other policies it returns once the record is
    /// buffered (readable via [`read_at`](Self::read_at)); it is durable after the next sync
    /// ([`sync`](Self::sync) returning `Ok`, or the background sync).
    ///
    /// # Errors
    /// [`WalError::ReservedKind`], [`WalError::RecordTooLarge`], [`WalError::Poisoned`] after an
    /// earlier I/O failure, [`WalError::Io`] if this call's group write or sync failed,
    /// [`WalError::Closed`].
    pub fn append(&self, kind: u8, payload: &[u8]) -> Result<Lsn, WalError> {
        Ok(self.append_with_handle(kind, payload)?.lsn)
    }

    /// Like [`append`](Self::append) with an explicit record time (ms since the Unix epoch), as
    /// Spark's `write(record, time)`; the time drives [`clean`](Self::clean).
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_at(
        &self,
        kind: u8,
        payload: &[u8],
        time_ms: u64,
    ) -> Result<RecordHandle, WalError> {
        let handle = self.enqueue(kind, payload, time_ms)?;
        if self.inner.opts.sync_policy == SyncPolicy::EveryAppend {
            self.inner.sync_to(handle.lsn.0 + 1)?;
        }
        Ok(handle)
    }

    /// Like [`append`](Self::append) but returns the record's [`RecordHandle`] (segment, offset,
    /// length), for [`read_at`](Self::read_at).
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_with_handle(&self, kind: u8, payload: &[u8]) -> Result<RecordHandle, WalError> {
        let now = self.inner.opts.clock.now_ms();
        self.append_at(kind, payload, now)
    }

    fn enqueue(&self, kind: u8, payload: &[u8], time_ms: u64) -> Result<RecordHandle, WalError> {
        spate_types::spate_fail!("wal::append::before", |a| Err(WalError::io(
            &self.inner.dir,
            spate_types::failpoints::io_error("wal::append::before", &a)
        )));
        if kind == 0 {
            return Err(WalError::ReservedKind);
        }
        let max = self.inner.opts.max_record_bytes;
        if payload.len() > max as usize {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max,
            });
        }
        let opts = &self.inner.opts;
        let frame_len = (FRAME_HEADER_LEN + payload.len()) as u64;
        let now = opts.clock.now_ms();
        let mut st = self.inner.state.lock();
        st.check()?;
        let lsn = st.next_lsn;
        let roll = match &st.active {
            None => true,
            Some(a) => {
                let has_records = a.end > HEADER_LEN as u64;
                let too_big = a.end + frame_len > opts.segment_bytes;
                let too_old = match (opts.roll_interval_ms, a.first_time_ms) {
                    (Some(iv), Some(t0)) => now >= t0.saturating_add(iv),
                    _ => false,
                };
                has_records && (too_big || too_old)
            }
        };
        if roll {
            st.active = Some(Active {
                first_lsn: lsn,
                end: HEADER_LEN as u64,
                first_time_ms: None,
            });
            st.segments.insert(
                lsn,
                SegMeta {
                    path: self.inner.dir.join(segment_file_name(lsn)),
                    last_lsn: None,
                    max_time_ms: None,
                },
            );
        }
        let active = st.active.as_mut().expect("set above");
        let segment = active.first_lsn;
        let offset = active.end;
        active.end += frame_len;
        active.first_time_ms.get_or_insert(time_ms);
        let meta = st
            .segments
            .get_mut(&segment)
            .expect("active segment is listed");
        meta.last_lsn = Some(lsn);
        meta.max_time_ms = Some(meta.max_time_ms.map_or(time_ms, |t| t.max(time_ms)));
        match st.pending.last_mut() {
            Some(c) if c.segment == segment => {
                encode_frame(&mut c.bytes, 0, kind, lsn, time_ms, payload);
            }
            _ => {
                let mut bytes = Vec::with_capacity(frame_len as usize);
                encode_frame(&mut bytes, 0, kind, lsn, time_ms, payload);
                st.pending.push(Chunk {
                    segment,
                    offset,
                    bytes,
                });
            }
        }
        st.next_lsn = lsn + 1;
        st.pending_bytes += frame_len;
        if let SyncPolicy::Bytes(n) = opts.sync_policy {
            if st.pending_bytes >= n {
                self.inner.wake_bg.notify_one();
            }
        }
        Ok(RecordHandle {
            segment: Lsn(segment),
            offset,
            length: frame_len as u32,
            lsn: Lsn(lsn),
        })
    }

    /// Makes every record appended before this call durable. Concurrent callers share one write
    /// and one `fdatasync` (group commit): while one caller (the leader) writes and syncs, others
    /// keep appending into a buffer and the next leader takes all of it at once.
    ///
    /// # Durability
    /// Once this returns `Ok`, every record whose `append` returned before `sync` was called
    /// survives a crash, and replay after a restart yields it (with every record before it).
    ///
    /// # Errors
    /// [`WalError::Io`] if the write or `fdatasync` failed (the WAL is then poisoned: reopen it),
    /// [`WalError::Poisoned`], [`WalError::Closed`].
    pub fn sync(&self) -> Result<(), WalError> {
        let target = self.inner.state.lock().next_lsn;
        self.inner.sync_to(target)
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.inner.state.lock().next_lsn)
    }

    /// Every record with an LSN below this is durable.
    pub fn synced_lsn(&self) -> Lsn {
        Lsn(self.inner.state.lock().synced_lsn)
    }

    /// The first LSN still in the log (the first segment's first LSN), if any segment exists.
    pub fn first_lsn(&self) -> Option<Lsn> {
        self.inner
            .state
            .lock()
            .segments
            .keys()
            .next()
            .map(|&l| Lsn(l))
    }

    /// Reads one record by its handle (random access, as Spark's
    /// `FileBasedWriteAheadLogRandomReader`): the frame is read at the handle's offset and verified
    /// (length, crc, LSN). A record not yet synced is synced first.
    ///
    /// # Errors
    /// [`WalError::InvalidHandle`] if the handle's segment is gone (cleaned) or its offset/length
    /// do not frame the record; [`WalError::Corrupt`] if the bytes fail verification;
    /// [`WalError::Io`].
    pub fn read_at(&self, handle: RecordHandle) -> Result<Record, WalError> {
        let invalid = |detail: String| WalError::InvalidHandle { handle, detail };
        let (path, file) = {
            let st = self.inner.state.lock();
            if handle.lsn.0 >= st.next_lsn {
                return Err(invalid(format!("lsn {} was never appended", handle.lsn.0)));
            }
            let Some(meta) = st.segments.get(&handle.segment.0) else {
                return Err(invalid("segment is not (or no longer) in the log".into()));
            };
            let file = match &st.current_file {
                Some((s, f)) if *s == handle.segment.0 => Some(Arc::clone(f)),
                _ => None,
            };
            (meta.path.clone(), file)
        };
        if handle.lsn.0 >= self.synced_lsn().0 {
            self.inner.sync_to(handle.lsn.0 + 1)?;
        }
        let file = match file {
            Some(f) => f,
            None => self
                .inner
                .fs
                .open(&path)
                .map_err(|e| WalError::io(&path, e))?,
        };
        if (handle.length as usize) < FRAME_HEADER_LEN {
            return Err(invalid("length shorter than a frame header".into()));
        }
        let mut buf = vec![0u8; handle.length as usize];
        file.read_exact_at(handle.offset, &mut buf)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => invalid("past the end of the segment".into()),
                _ => WalError::io(&path, e),
            })?;
        match decode_frame(&buf, self.inner.opts.max_record_bytes) {
            Ok(Decoded::Frame(f)) if f.frame_len == buf.len() && f.lsn == handle.lsn.0 => {
                Ok(Record {
                    lsn: handle.lsn,
                    kind: f.kind,
                    time_ms: f.time_ms,
                    payload: f.payload.to_vec(),
                    handle,
                })
            }
            Ok(Decoded::Frame(f)) => Err(invalid(format!(
                "frame at offset has length {} and lsn {} (expected length {}, lsn {})",
                f.frame_len, f.lsn, handle.length, handle.lsn.0
            ))),
            Ok(Decoded::End) | Ok(Decoded::Incomplete { .. }) => Err(invalid(
                "no complete frame at this offset and length".into(),
            )),
            Err(reason) => Err(WalError::Corrupt {
                segment: path,
                offset: handle.offset,
                reason,
            }),
        }
    }

    /// A reader over the records with LSN ≥ `from`, up to the last record appended before this
    /// call (which is synced first). Concurrent appends are not seen.
    ///
    /// # Errors
    /// As [`sync`](Self::sync); the reader's own errors come from [`WalReader::next`].
    pub fn replay_from(&self, from: Lsn) -> Result<WalReader, WalError> {
        self.sync()?;
        let st = self.inner.state.lock();
        let end = st.synced_lsn.min(st.next_lsn);
        let segs = st
            .segments
            .iter()
            .filter(|(_, m)| self.inner.fs.exists(&m.path))
            .map(|(&l, m)| (l, m.path.clone()))
            .collect();
        Ok(WalReader::over(
            Arc::clone(&self.inner.fs),
            segs,
            // The log was verified (and its tail repaired) by `open`; the configured mode only
            // matters for ranges a `SkipCorrupt` open skipped.
            self.inner.opts.recovery,
            from.0,
            Some(end),
            self.inner.opts.max_record_bytes,
        ))
    }

    /// Removes whole segments all of whose records have LSN < `lsn` (never the segment being
    /// appended to), oldest first, syncing the directory after each removal so the log always
    /// stays a dense suffix. Returns the removed segment files.
    ///
    /// # Durability
    /// Once this returns `Ok`, the removals are durable. Records ≥ `lsn` are never removed; some
    /// records < `lsn` may remain (segment granularity).
    ///
    /// # Errors
    /// [`WalError::Io`], [`WalError::Poisoned`], [`WalError::Closed`].
    pub fn truncate_before(&self, lsn: Lsn) -> Result<Vec<PathBuf>, WalError> {
        self.remove_prefix(|st, first, _meta| {
            // All records of `first` are < the next segment's first LSN.
            st.segments
                .range(first + 1..)
                .next()
                .is_some_and(|(&next_first, _)| next_first <= lsn.0)
        })
    }

    /// Removes the oldest segments whose records are all older than `thresh_time_ms` (ms since
    /// the Unix epoch), as Spark's `FileBasedWriteAheadLog.clean(threshTime)`, but synchronously,
    /// never the segment being appended to, and only a prefix of the log (cleaning stops at the
    /// first segment holding a record at or after the threshold, so LSNs stay dense).
    ///
    /// # Durability
    /// Once this returns `Ok`, the removals are durable.
    ///
    /// # Errors
    /// [`WalError::Io`], [`WalError::Poisoned`], [`WalError::Closed`].
    pub fn clean(&self, thresh_time_ms: u64) -> Result<Vec<PathBuf>, WalError> {
        self.remove_prefix(|_, _, meta| meta.max_time_ms.is_none_or(|t| t < thresh_time_ms))
    }

    fn remove_prefix(
        &self,
        removable: impl Fn(&State, u64, &SegMeta) -> bool,
    ) -> Result<Vec<PathBuf>, WalError> {
        self.sync()?;
        let mut removed = Vec::new();
        loop {
            let victim = {
                let mut st = self.inner.state.lock();
                st.check()?;
                let active = st.active.as_ref().map(|a| a.first_lsn);
                let Some((&first, meta)) = st.segments.iter().next() else {
                    break;
                };
                let synced = meta.last_lsn.is_none_or(|l| l < st.synced_lsn);
                if Some(first) == active || !synced || !removable(&st, first, meta) {
                    break;
                }
                spate_types::spate_fail!("wal::truncate::before", |a| Err(WalError::io(
                    &meta.path,
                    spate_types::failpoints::io_error("wal::truncate::before", &a)
                )));
                let meta = st.segments.remove(&first).expect("listed");
                meta.path
            };
            if self.inner.fs.exists(&victim) {
                self.inner
                    .fs
                    .remove(&victim)
                    .map_err(|e| WalError::io(&victim, e))?;
                self.inner
                    .fs
                    .sync_dir(&self.inner.dir)
                    .map_err(|e| WalError::io(&self.inner.dir, e))?;
            }
            removed.push(victim);
        }
        Ok(removed)
    }

    /// Syncs every appended record, stops the background sync thread, closes the WAL and
    /// releases the directory's `LOCK`. Idempotent (SPARK-20935).
    ///
    /// # Durability
    /// Once this returns `Ok`, every record appended before is durable.
    ///
    /// # Errors
    /// As [`sync`](Self::sync).
    pub fn close(&mut self) -> Result<(), WalError> {
        let r = if self.inner.state.lock().closed {
            Ok(())
        } else {
            self.sync()
        };
        self.stop();
        r
    }

    /// [`close`](Self::close) through a shared reference (a WAL shared by several threads): syncs,
    /// marks it closed (later appends fail with [`WalError::Closed`]), wakes the background sync
    /// thread (which then exits; it is joined on drop) and releases the directory's `LOCK`, so
    /// another process, or another `Wal` in this one, can open the directory. Idempotent.
    ///
    /// # Durability
    /// Once this returns `Ok`, every record appended before is durable.
    ///
    /// # Errors
    /// As [`sync`](Self::sync); the lock is released either way.
    pub fn release(&self) -> Result<(), WalError> {
        let r = if self.inner.state.lock().closed {
            Ok(())
        } else {
            self.sync()
        };
        self.inner.state.lock().closed = true;
        self.inner.wake_bg.notify_all();
        self.inner.synced.notify_all();
        self.inner.lock.lock().take();
        r
    }

    fn stop(&mut self) {
        self.inner.state.lock().closed = true;
        self.inner.wake_bg.notify_all();
        self.inner.synced.notify_all();
        if let Some(h) = self.bg.take() {
            let _ = h.join();
        }
        self.inner.lock.lock().take();
    }
}

impl Drop for Wal {
    /// Stops the background thread. Records not yet synced are **not** synced (call
    /// [`Wal::close`]); for the durability contract a drop is a crash.
    fn drop(&mut self) {
        self.stop();
    }
}

impl State {
    fn check(&self) -> Result<(), WalError> {
        if let Some(cause) = &self.poisoned {
            return Err(WalError::Poisoned {
                cause: cause.clone(),
            });
        }
        if self.closed {
            return Err(WalError::Closed);
        }
        Ok(())
    }
}

impl Inner {
    /// Returns once every LSN < `target` is durable, leading a group flush if nobody else is.
    fn sync_to(&self, target: u64) -> Result<(), WalError> {
        let mut st = self.state.lock();
        loop {
            if st.synced_lsn >= target {
                return Ok(());
            }
            if let Some(cause) = &st.poisoned {
                return Err(WalError::Poisoned {
                    cause: cause.clone(),
                });
            }
            if !st.flushing {
                break;
            }
            self.synced.wait(&mut st);
        }
        // Leader: take everything buffered so far.
        st.flushing = true;
        let chunks = std::mem::take(&mut st.pending);
        st.pending_bytes = 0;
        let upto = st.next_lsn;
        let mut current = st.current_file.clone();
        let created_ms = self.opts.clock.now_ms();
        drop(st);
        // A panic while leading (a fail point's `panic`, or a bug) must not leave `flushing` set:
        // every later sync would wait forever. The guard poisons the WAL and wakes the waiters.
        let guard = LeaderGuard { inner: self };
        let result = self.write_group(chunks, &mut current, created_ms);
        std::mem::forget(guard);
        let mut st = self.state.lock();
        st.flushing = false;
        if current.is_some() {
            st.current_file = current;
        }
        let r = match result {
            Ok(()) => {
                st.synced_lsn = st.synced_lsn.max(upto);
                Ok(())
            }
            Err(e) => {
                st.poisoned = Some(e.to_string());
                Err(e)
            }
        };
        self.synced.notify_all();
        r
    }

    fn write_group(
        &self,
        chunks: Vec<Chunk>,
        current: &mut Option<(u64, SharedFile)>,
        created_ms: u64,
    ) -> Result<(), WalError> {
        let mut dirty = false;
        for mut chunk in chunks {
            // Everything before this chunk in its segment is durable: mark a sync point.
            mark_sync_point(&mut chunk.bytes);
            if current.as_ref().is_none_or(|(s, _)| *s != chunk.segment) {
                if let Some((s, f)) = current.take() {
                    if dirty && !SKIP_SYNC {
                        // Seal the old segment: a non-last segment is always fully durable.
                        f.sync_data()
                            .map_err(|e| WalError::io(self.seg_path(s), e))?;
                    }
                }
                let f = self.create_segment(chunk.segment, created_ms)?;
                *current = Some((chunk.segment, f));
            }
            let (s, f) = current.as_ref().expect("set");
            spate_types::spate_fail!("wal::write::before", |a| Err(WalError::io(
                self.seg_path(*s),
                spate_types::failpoints::io_error("wal::write::before", &a)
            )));
            f.write_all_at(chunk.offset, &chunk.bytes)
                .map_err(|e| WalError::io(self.seg_path(*s), e))?;
            spate_types::spate_fail!("wal::write::after", |a| Err(WalError::io(
                self.seg_path(*s),
                spate_types::failpoints::io_error("wal::write::after", &a)
            )));
            dirty = true;
        }
        if dirty {
            let (s, f) = current.as_ref().expect("written");
            spate_types::spate_fail!("wal::sync::before", |a| Err(WalError::io(
                self.seg_path(*s),
                spate_types::failpoints::io_error("wal::sync::before", &a)
            )));
            if !SKIP_SYNC {
                f.sync_data()
                    .map_err(|e| WalError::io(self.seg_path(*s), e))?;
            }
            spate_types::spate_fail!("wal::sync::after", |a| Err(WalError::io(
                self.seg_path(*s),
                spate_types::failpoints::io_error("wal::sync::after", &a)
            )));
        }
        Ok(())
    }

    fn seg_path(&self, first_lsn: u64) -> PathBuf {
        self.dir.join(segment_file_name(first_lsn))
    }

    /// Creates a segment atomically: header (+ preallocation) into `<name>.tmp`, `fdatasync`,
    /// rename, `fsync` of the directory. A segment file name therefore always has a full header.
    fn create_segment(&self, first_lsn: u64, created_ms: u64) -> Result<SharedFile, WalError> {
        let path = self.seg_path(first_lsn);
        spate_types::spate_fail!("wal::roll::before", |a| Err(WalError::io(
            &path,
            spate_types::failpoints::io_error("wal::roll::before", &a)
        )));
        let tmp = self.dir.join(format!("{first_lsn:020}{TEMP_SUFFIX}"));
        let fs = &self.fs;
        let _ = fs.remove(&tmp);
        let f = fs.create(&tmp).map_err(|e| WalError::io(&tmp, e))?;
        f.write_all_at(0, &encode_header(first_lsn, created_ms))
            .map_err(|e| WalError::io(&tmp, e))?;
        if self.opts.preallocate && self.opts.segment_bytes > HEADER_LEN as u64 {
            f.set_len(self.opts.segment_bytes)
                .map_err(|e| WalError::io(&tmp, e))?;
        }
        f.sync_data().map_err(|e| WalError::io(&tmp, e))?;
        fs.rename(&tmp, &path).map_err(|e| WalError::io(&path, e))?;
        fs.sync_dir(&self.dir)
            .map_err(|e| WalError::io(&self.dir, e))?;
        Ok(f)
    }
}

/// **Test-only broken build** (`chaos-broken-skip-sync`): group commit skips its `fdatasync` calls
/// but reports success, so acknowledged records are lost when un-synced data is dropped (power
/// loss, `SimFs::crash`). Exists only so the chaos harness can prove its oracle catches it.
const SKIP_SYNC: bool = crate::CHAOS_BROKEN_SKIP_SYNC;

/// Poisons the WAL if the group commit leader unwinds (see [`Inner::sync_to`]).
struct LeaderGuard<'a> {
    inner: &'a Inner,
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.state.lock();
        st.flushing = false;
        st.poisoned
            .get_or_insert_with(|| "the group commit leader panicked".to_owned());
        drop(st);
        self.inner.synced.notify_all();
    }
}

fn background_sync(inner: &Inner) {
    let (interval, bytes) = match inner.opts.sync_policy {
        SyncPolicy::IntervalMs(ms) => (Duration::from_millis(ms.max(1)), None),
        SyncPolicy::Bytes(n) => (Duration::from_millis(100), Some(n)),
        _ => return,
    };
    loop {
        let target = {
            let mut st = inner.state.lock();
            if st.closed {
                return;
            }
            let ready = bytes.is_some_and(|n| st.pending_bytes >= n);
            if !ready {
                inner.wake_bg.wait_for(&mut st, interval);
            }
            if st.closed {
                return;
            }
            if st.poisoned.is_some() {
                return;
            }
            st.next_lsn
        };
        // An error poisons the WAL; callers see it on their next call.
        let _ = inner.sync_to(target);
    }
}
