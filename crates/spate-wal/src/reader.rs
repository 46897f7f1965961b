//! Sequential replay: [`WalReader`], the recovery modes and the recovery report.

use crate::error::{CorruptReason, WalError};
use crate::format::{
    decode_frame, decode_header, parse_segment_file_name, Decoded, HeaderError, FRAME_HEADER_LEN,
    HEADER_LEN, TEMP_SUFFIX,
};
use spate_io::{FileSystem, SharedFile};
use spate_types::format::WAL_FORMAT_VERSION;
use spate_types::Lsn;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What to do with damaged bytes (as RocksDB's `WALRecoveryMode` and raft-engine's
/// `RecoveryMode`). Damage is *tail* damage when it is in the last segment and no valid sync-point
/// frame (the start of a later group write) follows it; any other damage is *mid-log corruption*.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub enum RecoveryMode {
    /// Default. A torn tail (what a crash during an unsynced write leaves) is truncated, reported
    /// exactly ([`TornTail`]) and a copy of the dropped bytes is kept beside the segment;
    /// mid-log corruption is [`WalError::Corrupt`].
    #[default]
    TolerateTornTail,
    /// Any damage, torn tail included, is [`WalError::Corrupt`] (used by `spate wal verify`).
    AbsoluteConsistency,
    /// Salvage: damaged ranges are skipped and reported ([`SkippedRange`]); replay resumes at the
    /// next valid frame (LSNs may then have gaps). A torn tail is handled as in
    /// [`TolerateTornTail`](Self::TolerateTornTail). Damaged middle ranges are left on disk.
    SkipCorrupt,
}

/// Where a record lives: Spark's `FileBasedWriteAheadLogSegment(path, offset, length)`, plus the
/// LSN. Returned by [`Wal::append_with_handle`](crate::Wal::append_with_handle), read back by
/// [`Wal::read_at`](crate::Wal::read_at).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RecordHandle {
    /// First LSN of the segment (its file name).
    pub segment: Lsn,
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
    /// Length of the frame in bytes (header + payload).
    pub length: u32,
    /// The record's LSN.
    pub lsn: Lsn,
}

/// One replayed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its kind (1..=255), chosen by the writer.
    pub kind: u8,
    /// Its time, ms since the Unix epoch.
    pub time_ms: u64,
    /// The payload bytes.
    pub payload: Vec<u8>,
    /// Where it lives.
    pub handle: RecordHandle,
}

/// A torn tail: what [`RecoveryMode::TolerateTornTail`] dropped (or, for a reader, would drop).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset where valid data ends (the file is truncated here).
    pub offset: u64,
    /// Bytes dropped: from `offset` to the last non-zero byte of the file.
    pub dropped_bytes: u64,
    /// Why the tail is not a valid frame.
    pub reason: String,
    /// Where the dropped bytes were copied (set by [`Wal::open`](crate::Wal::open) when
    /// `dropped_bytes > 0`).
    pub saved_to: Option<PathBuf>,
}

/// A damaged range skipped by [`RecoveryMode::SkipCorrupt`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SkippedRange {
    /// The segment file.
    pub segment: PathBuf,
    /// First damaged byte.
    pub offset: u64,
    /// Bytes skipped.
    pub bytes: u64,
    /// Why.
    pub reason: String,
}

/// What replay found in one segment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SegmentSummary {
    /// The segment file.
    pub path: PathBuf,
    /// First LSN (from the header).
    pub first_lsn: u64,
    /// LSN of the last valid record, if any.
    pub last_lsn: Option<u64>,
    /// Valid records.
    pub records: u64,
    /// Largest record time, ms (None if empty).
    pub max_time_ms: Option<u64>,
    /// Offset just after the last valid frame (where appends continue).
    pub end_offset: u64,
}

/// What recovery (or a full replay) found. Torn tails are a value here, not an error.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecoveryReport {
    /// Segments in LSN order.
    pub segments: Vec<SegmentSummary>,
    /// The torn tail, if any.
    pub torn_tail: Option<TornTail>,
    /// Damaged ranges skipped ([`RecoveryMode::SkipCorrupt`] only).
    pub skipped: Vec<SkippedRange>,
    /// Half-created segments (`*.wal.tmp`) removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Files in the directory that are not segments (left alone).
    pub ignored_files: Vec<String>,
}

impl RecoveryReport {
    /// Valid records found in all segments.
    pub fn records(&self) -> u64 {
        self.segments.iter().map(|s| s.records).sum()
    }
    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .find_map(|s| s.last_lsn.map(|l| l + 1))
            .or_else(|| self.segments.last().map(|s| s.first_lsn))
            .unwrap_or(0)
            .max(self.segments.last().map_or(0, |s| s.first_lsn))
    }
}

/// Segments, temp files and other files in a WAL directory.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) segments: Vec<(u64, PathBuf)>,
    pub(crate) temps: Vec<PathBuf>,
    pub(crate) ignored: Vec<String>,
}

pub(crate) fn list_dir(fs: &dyn FileSystem, dir: &Path) -> Result<Listing, WalError> {
    let names = fs.list(dir).map_err(|e| WalError::io(dir, e))?;
    let mut l = Listing::default();
    for name in names {
        if name == crate::lock::LOCK_FILE {
            continue;
        }
        if let Some(lsn) = parse_segment_file_name(&name) {
            l.segments.push((lsn, dir.join(&name)));
        } else if name
            .strip_suffix(TEMP_SUFFIX)
            .and_then(|d| parse_segment_file_name(&format!("{d}.wal")))
            .is_some()
        {
            l.temps.push(dir.join(&name));
        } else {
            l.ignored.push(name);
        }
    }
    l.segments.sort();
    Ok(l)
}

/// First read of a segment (bytes); later reads double it. Recovery reads a sealed segment only up
/// to its end-of-data marker, so preallocated zeros are not read.
const INITIAL_READ: usize = 256 << 10;

struct Loaded {
    path: PathBuf,
    file: SharedFile,
    /// File length in bytes.
    file_len: usize,
    /// The prefix `0..bytes.len()` of the file read so far.
    bytes: Vec<u8>,
    pos: usize,
    expected: u64,
    first_lsn: u64,
    summary_idx: usize,
    /// After a skip, the next frame may carry any larger LSN.
    allow_gap: bool,
}

/// Sequential reader over a WAL directory's segments, in LSN order, verifying every frame.
///
/// As Spark's `FileBasedWriteAheadLogReader`, but never silent: a torn tail ends the replay with
/// `Ok(None)` and is recorded in [`report`](Self::report) (or is an error under
/// [`RecoveryMode::AbsoluteConsistency`]); mid-log corruption is [`WalError::Corrupt`].
pub struct WalReader {
    fs: Arc<dyn FileSystem>,
    segments: Vec<(u64, PathBuf)>,
    next_segment: usize,
    cur: Option<Loaded>,
    mode: RecoveryMode,
    max_payload: u32,
    from_lsn: u64,
    end_lsn: Option<u64>,
    expected_next: Option<u64>,
    report: RecoveryReport,
    done: bool,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("segments", &self.segments.len())
            .field("next_segment", &self.next_segment)
            .field("mode", &self.mode)
            .finish()
    }
}

impl WalReader {
    /// A reader over every segment in `dir` (read-only: nothing is truncated or removed), yielding
    /// records with LSN ≥ `from_lsn`. `max_record_bytes` bounds a trusted length (use the writer's
    /// [`WalOptions::max_record_bytes`](crate::WalOptions::max_record_bytes)).
    ///
    /// # Errors
    /// [`WalError::Io`] if the directory cannot be listed.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        mode: RecoveryMode,
        from_lsn: Lsn,
        max_record_bytes: u32,
    ) -> Result<Self, WalError> {
        let listing = list_dir(fs.as_ref(), dir)?;
        let mut r = Self::over(
            fs,
            listing.segments,
            mode,
            from_lsn.0,
            None,
            max_record_bytes,
        );
        r.report.ignored_files = listing.ignored;
        Ok(r)
    }

    pub(crate) fn over(
        fs: Arc<dyn FileSystem>,
        segments: Vec<(u64, PathBuf)>,
        mode: RecoveryMode,
        from_lsn: u64,
        end_lsn: Option<u64>,
        max_payload: u32,
    ) -> Self {
        WalReader {
            fs,
            segments,
            next_segment: 0,
            cur: None,
            mode,
            max_payload,
            from_lsn,
            end_lsn,
            expected_next: None,
            report: RecoveryReport::default(),
            done: false,
        }
    }

    /// What was found so far (complete once [`next`](Self::next) returned `Ok(None)`).
    pub fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Consumes the reader, returning its report.
    pub fn into_report(self) -> RecoveryReport {
        self.report
    }

    fn is_last(&self) -> bool {
        self.next_segment == self.segments.len()
    }

    fn load(&mut self) -> Result<bool, WalError> {
        loop {
            if self.next_segment == self.segments.len() {
                return Ok(false);
            }
            let (name_lsn, path) = self.segments[self.next_segment].clone();
            self.next_segment += 1;
            let file = self.fs.open(&path).map_err(|e| WalError::io(&path, e))?;
            let file_len = file.len().map_err(|e| WalError::io(&path, e))?;
            let file_len = usize::try_from(file_len).unwrap_or(usize::MAX);
            let mut bytes = Vec::new();
            fill(&file, &path, file_len, &mut bytes, INITIAL_READ)?;
            let header = match decode_header(&bytes) {
                Ok(h) => h,
                Err(HeaderError::BadMagic(m)) => {
                    return Err(WalError::NotASegment {
                        segment: path,
                        found: m.to_vec(),
                    })
                }
                Err(HeaderError::Version(v)) => {
                    return Err(WalError::UnsupportedVersion {
                        segment: path,
                        found: v,
                        supported: WAL_FORMAT_VERSION,
                    })
                }
                Err(HeaderError::Codec(c)) => {
                    return Err(WalError::UnsupportedCodec {
                        segment: path,
                        found: c,
                    })
                }
                Err(e) => {
                    fill(&file, &path, file_len, &mut bytes, usize::MAX)?;
                    let reason = match e {
                        HeaderError::Damaged(d) => CorruptReason::BadHeader { detail: d },
                        _ => CorruptReason::BadHeader {
                            detail: "torn or missing header",
                        },
                    };
                    let torn = matches!(e, HeaderError::Torn) && self.is_last();
                    if torn && self.mode != RecoveryMode::AbsoluteConsistency {
                        self.report.torn_tail = Some(TornTail {
                            dropped_bytes: data_end(&bytes, 0) as u64,
                            segment: path,
                            offset: 0,
                            reason: reason.to_string(),
                            saved_to: None,
                        });
                        return Ok(false);
                    }
                    if self.mode == RecoveryMode::SkipCorrupt {
                        self.report.skipped.push(SkippedRange {
                            segment: path,
                            offset: 0,
                            bytes: bytes.len() as u64,
                            reason: reason.to_string(),
                        });
                        self.expected_next = None;
                        continue;
                    }
                    let reason = if torn {
                        CorruptReason::TornTail(Box::new(reason))
                    } else {
                        reason
                    };
                    return Err(WalError::Corrupt {
                        segment: path,
                        offset: 0,
                        reason,
                    });
                }
            };
            if header.first_lsn != name_lsn {
                return Err(WalError::Corrupt {
                    segment: path,
                    offset: 12,
                    reason: CorruptReason::NameMismatch {
                        header: header.first_lsn,
                        name: name_lsn,
                    },
                });
            }
            if let Some(expected) = self.expected_next {
                if header.first_lsn != expected {
                    if self.mode == RecoveryMode::SkipCorrupt && header.first_lsn > expected {
                        self.report.skipped.push(SkippedRange {
                            segment: path.clone(),
                            offset: 0,
                            bytes: 0,
                            reason: format!(
                                "lsn gap: expected {expected}, segment starts at {}",
                                header.first_lsn
                            ),
                        });
                    } else {
                        return Err(WalError::LsnGap {
                            segment: path,
                            expected,
                            found: header.first_lsn,
                        });
                    }
                }
            }
            self.report.segments.push(SegmentSummary {
                path: path.clone(),
                first_lsn: header.first_lsn,
                last_lsn: None,
                records: 0,
                max_time_ms: None,
                end_offset: HEADER_LEN as u64,
            });
            self.cur = Some(Loaded {
                path,
                file,
                file_len,
                bytes,
                pos: HEADER_LEN,
                expected: header.first_lsn,
                first_lsn: header.first_lsn,
                summary_idx: self.report.segments.len() - 1,
                allow_gap: false,
            });
            return Ok(true);
        }
    }

    /// The next record, `Ok(None)` at the end of the log (clean end or a torn tail).
    ///
    /// # Errors
    /// [`WalError::Corrupt`] for mid-log damage (any damage under
    /// [`RecoveryMode::AbsoluteConsistency`]), [`WalError::NotASegment`],
    /// [`WalError::UnsupportedVersion`], [`WalError::UnsupportedCodec`], [`WalError::LsnGap`],
    /// [`WalError::Io`]. After an error the reader is finished.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Record>, WalError> {
        let r = self.next_inner();
        if r.is_err() {
            self.done = true;
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<Record>, WalError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.cur.is_none() && !self.load()? {
                self.done = true;
                return Ok(None);
            }
            let cur = self.cur.as_mut().expect("loaded");
            if self.end_lsn.is_some_and(|end| cur.expected >= end) {
                self.done = true;
                return Ok(None);
            }
            let pos = cur.pos;
            let is_last = self.next_segment == self.segments.len();
            if cur.bytes.len() - pos < 8 && cur.bytes.len() < cur.file_len {
                // Fewer bytes than a frame's length word are loaded: what follows is unknown, not
                // an end-of-data marker (a frame may end exactly where the last read ended).
                let want = (pos + FRAME_HEADER_LEN).max(cur.bytes.len().saturating_mul(2));
                fill(&cur.file, &cur.path, cur.file_len, &mut cur.bytes, want)?;
                continue;
            }
            let decoded = decode_frame(&cur.bytes[pos..], self.max_payload);
            if let Ok(Decoded::Incomplete { needed }) = decoded {
                if cur.bytes.len() < cur.file_len {
                    // Not a short frame: only the part read so far ends here. Read more.
                    let want = (pos + needed).max(cur.bytes.len().saturating_mul(2));
                    fill(&cur.file, &cur.path, cur.file_len, &mut cur.bytes, want)?;
                    continue;
                }
            }
            if let Ok(Decoded::End) = decoded {
                let rest_zero = cur.bytes[pos..].iter().all(|&b| b == 0);
                if rest_zero && !is_last && cur.bytes.len() < cur.file_len {
                    // A sealed segment (fully synced before the next one was created) ends at its
                    // end-of-data marker; the preallocated zeros after it are not read. Records
                    // lost after a marker in a sealed segment cannot go unnoticed: the next
                    // segment's first LSN would not be the expected one (`LsnGap`).
                    self.expected_next = Some(cur.expected);
                    self.cur = None;
                    continue;
                }
            }
            // From here on (end marker of the last segment, damage) the whole file is needed:
            // the last segment's look-ahead for a later sync point, `dropped_bytes`, skipping.
            if cur.bytes.len() < cur.file_len && !matches!(decoded, Ok(Decoded::Frame(_))) {
                fill(
                    &cur.file,
                    &cur.path,
                    cur.file_len,
                    &mut cur.bytes,
                    usize::MAX,
                )?;
                continue;
            }
            let damage = match decode_frame(&cur.bytes[pos..], self.max_payload) {
                Ok(Decoded::Frame(f)) => {
                    if f.lsn == cur.expected || (cur.allow_gap && f.lsn > cur.expected) {
                        cur.pos += f.frame_len;
                        cur.expected = f.lsn + 1;
                        cur.allow_gap = false;
                        let s = &mut self.report.segments[cur.summary_idx];
                        s.last_lsn = Some(f.lsn);
                        s.records += 1;
                        s.max_time_ms = Some(s.max_time_ms.map_or(f.time_ms, |t| t.max(f.time_ms)));
                        s.end_offset = cur.pos as u64;
                        if f.lsn < self.from_lsn {
                            continue;
                        }
                        return Ok(Some(Record {
                            lsn: Lsn(f.lsn),
                            kind: f.kind,
                            time_ms: f.time_ms,
                            payload: f.payload.to_vec(),
                            handle: RecordHandle {
                                segment: Lsn(cur.first_lsn),
                                offset: pos as u64,
                                length: f.frame_len as u32,
                                lsn: Lsn(f.lsn),
                            },
                        }));
                    }
                    CorruptReason::UnexpectedLsn {
                        expected: cur.expected,
                        found: f.lsn,
                    }
                }
                Ok(Decoded::End) => {
                    if cur.bytes[pos..].iter().all(|&b| b == 0) {
                        self.expected_next = Some(cur.expected);
                        self.cur = None;
                        continue;
                    }
                    CorruptReason::GarbageAfterEnd
                }
                Ok(Decoded::Incomplete { needed }) => CorruptReason::Truncated {
                    needed: needed as u64,
                    available: (cur.bytes.len() - pos) as u64,
                },
                Err(reason) => reason,
            };
            // Damage at `pos`. In the last segment it is a torn tail unless a valid *sync point*
            // follows (a later group write, issued only after this one was fdatasynced: then the
            // damaged bytes had been durable and this is corruption). In a sealed segment (fully
            // synced before the next was created) any damage is corruption.
            let later =
                find_valid_frame(&cur.bytes, pos + 1, cur.expected, self.max_payload, false);
            let torn = is_last
                && find_valid_frame(&cur.bytes, pos + 1, cur.expected, self.max_payload, true)
                    .is_none();
            let path = cur.path.clone();
            match self.mode {
                RecoveryMode::SkipCorrupt if later.is_some() => {
                    let q = later.expect("checked");
                    self.report.skipped.push(SkippedRange {
                        segment: path,
                        offset: pos as u64,
                        bytes: (q - pos) as u64,
                        reason: damage.to_string(),
                    });
                    cur.pos = q;
                    cur.allow_gap = true;
                }
                RecoveryMode::SkipCorrupt | RecoveryMode::TolerateTornTail if torn => {
                    self.report.torn_tail = Some(TornTail {
                        segment: path,
                        offset: pos as u64,
                        dropped_bytes: (data_end(&cur.bytes, pos) - pos) as u64,
                        reason: damage.to_string(),
                        saved_to: None,
                    });
                    self.done = true;
                    return Ok(None);
                }
                RecoveryMode::SkipCorrupt => {
                    self.report.skipped.push(SkippedRange {
                        segment: path,
                        offset: pos as u64,
                        bytes: (data_end(&cur.bytes, pos) - pos) as u64,
                        reason: damage.to_string(),
                    });
                    self.expected_next = None;
                    self.cur = None;
                }
                _ => {
                    let reason = if torn {
                        CorruptReason::TornTail(Box::new(damage))
                    } else {
                        damage
                    };
                    return Err(WalError::Corrupt {
                        segment: path,
                        offset: pos as u64,
                        reason,
                    });
                }
            }
        }
    }
}

/// Extends `bytes` (a prefix of `file`) to `min(upto, file_len)` bytes.
fn fill(
    file: &SharedFile,
    path: &Path,
    file_len: usize,
    bytes: &mut Vec<u8>,
    upto: usize,
) -> Result<(), WalError> {
    let upto = upto.min(file_len);
    let have = bytes.len();
    if upto <= have {
        return Ok(());
    }
    bytes.resize(upto, 0);
    file.read_exact_at(have as u64, &mut bytes[have..])
        .map_err(|e| WalError::io(path, e))
}

/// One past the last non-zero byte at or after `from` (or `from` if the rest is zero).
fn data_end(bytes: &[u8], from: usize) -> usize {
    bytes[from.min(bytes.len())..]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(from, |i| from + i + 1)
}

/// The offset of the first valid frame at or after `from` whose LSN is ≥ `min_lsn` (and which is a
/// sync point, if `sync_point`).
fn find_valid_frame(
    bytes: &[u8],
    from: usize,
    min_lsn: u64,
    max_payload: u32,
    sync_point: bool,
) -> Option<usize> {
    let mut q = from;
    while q + FRAME_HEADER_LEN <= bytes.len() {
        let b = &bytes[q..];
        if b[..8] != [0u8; 8]
            && crc32fast::hash(&b[0..4]) == u32::from_le_bytes([b[4], b[5], b[6], b[7]])
        {
            if let Ok(Decoded::Frame(f)) = decode_frame(b, max_payload) {
                if f.lsn >= min_lsn && (f.sync_point || !sync_point) {
                    return Some(q);
                }
            }
        }
        q += 1;
    }
    None
}
