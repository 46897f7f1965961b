//! The text-file directory source behind `text_file_stream` (Spark's `FileInputDStream`).
//!
//! # Selection rules (as Spark's `FileInputDStream.findNewFiles`)
//! At each batch time `T` (ms) the directory is listed (polling; not recursive) and a regular file
//! `F` is selected iff all of these hold:
//! 1. its name passes the filter: it does not start with `.` or `_` and does not end with `.tmp`
//!    or `._COPYING_` (hidden and in-progress files; Spark's default filter only rejects `.`, the
//!    rest are the Hadoop conventions for files being written);
//! 2. `mtime > threshold`, where `threshold = max(initial, T - remember)`: `initial` is the time the
//!    source was created if `new_files_only` (files already present are ignored), else 0; and
//!    `remember = batch * ceil(min_remember / batch)` (Spark's `durationToRemember`,
//!    `spark.streaming.fileStream.minRememberDuration`, default 60 s). A file whose mtime is at
//!    or before the threshold is ignored forever (SPARK-4518's `<=`);
//! 3. `mtime <= T` (a late batch does not take files of the future);
//! 4. it was not selected by a batch within the remember window.
//!
//! Files must be **moved atomically** into the directory (write elsewhere, then `rename`): a file
//! is read whole at its selected size; a file that is written to after selection is detected at
//! read time ([`SourceError::Changed`]) instead of being silently re-read differently. Modification
//! times are in ms since the Unix epoch (floor of the file system's time).
//!
//! # What is recorded
//! A [`Selection`] holds, codec-encoded, the directory and each selected file's name, size (bytes)
//! and mtime (ms), sorted by name; [`read`](ReplayableSource::read) checks both before and after
//! reading, so a replay either yields exactly the bytes of the original batch or fails with
//! `Changed`. [`position`](ReplayableSource::position) holds the initial threshold and the files
//! selected per batch within the remember window (Spark checkpoints the same per-batch file lists).

use crate::lines::{split_lines, LineCounts, LinePolicy, SplitError};
use crate::receiver::{InputChange, ReplayableSource, Selection, SourceError};
use serde::{Deserialize, Serialize};
use spate_types::{codec, BatchTime, DurationMs};
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Default minimum remember duration: 60 s (Spark's `minRememberDuration`).
pub const DEFAULT_MIN_REMEMBER: DurationMs = DurationMs::from_secs(60);

/// Version tag inside encoded selections and positions.
const FILE_SOURCE_FORMAT: u8 = 1;

/// Configuration of a [`TextFileSource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSourceConfig {
    /// The engine's batch interval (needed for the remember window).
    pub batch_interval: DurationMs,
    /// Minimum remember duration (default 60 s); rounded up to a multiple of the batch interval.
    pub min_remember: DurationMs,
    /// Ignore files already present when the source is created (Spark's `newFilesOnly`, default
    /// true).
    pub new_files_only: bool,
    /// Line policy applied when reading files.
    pub lines: LinePolicy,
    /// Files larger than this are refused at read time (bytes; default 1 GiB), so a stray huge file
    /// cannot exhaust memory.
    pub max_file_bytes: u64,
}

impl FileSourceConfig {
    /// Defaults for a batch interval.
    pub fn new(batch_interval: DurationMs) -> Self {
        FileSourceConfig {
            batch_interval,
            min_remember: DEFAULT_MIN_REMEMBER,
            new_files_only: true,
            lines: LinePolicy::default(),
            max_file_bytes: 1 << 30,
        }
    }

    /// `batch * ceil(min_remember / batch)` (ms).
    pub fn remember_duration(&self) -> DurationMs {
        let b = self.batch_interval.as_millis().max(1);
        let m = self.min_remember.as_millis();
        DurationMs::from_millis(m.div_ceil(b) * b)
    }
}

/// One selected file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SelectedFile {
    /// File name within the directory.
    pub name: String,
    /// Size in bytes when selected.
    pub size: u64,
    /// Modification time when selected, ms since the Unix epoch.
    pub mtime_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct EncodedSelection {
    format: u8,
    dir: String,
    files: Vec<SelectedFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EncodedPosition {
    format: u8,
    initial_threshold_ms: u64,
    batches: Vec<(u64, Vec<SelectedFile>)>,
}

/// Decodes the files of a selection made by a [`TextFileSource`] (for logs and inspection tools).
///
/// # Errors
/// [`SourceError::Invalid`] if the bytes are not a file-source selection of this format.
pub fn decode_selection(selection: &Selection) -> Result<Vec<SelectedFile>, SourceError> {
    Ok(decode_sel(&selection.data)?.files)
}

fn decode_sel(data: &[u8]) -> Result<EncodedSelection, SourceError> {
    let s: EncodedSelection = codec::decode(data).map_err(|e| SourceError::Invalid {
        what: "file selection",
        reason: e.to_string(),
    })?;
    if s.format != FILE_SOURCE_FORMAT {
        return Err(SourceError::Invalid {
            what: "file selection",
            reason: format!("format {} (expected {FILE_SOURCE_FORMAT})", s.format),
        });
    }
    Ok(s)
}

/// True if a file name is ignored by the filter (hidden or in progress).
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('_')
        || name.ends_with(".tmp")
        || name.ends_with("._COPYING_")
}

fn mtime_ms(meta: &std::fs::Metadata) -> Option<u64> {
    let t = meta.modified().ok()?;
    Some(t.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// Live counters of a [`TextFileSource`] (selections and successful reads; a replayed read counts
/// again).
#[derive(Debug, Default)]
pub struct FileSourceStats {
    files_selected: AtomicU64,
    bytes_selected: AtomicU64,
    lines: AtomicU64,
    invalid_utf8: AtomicU64,
    too_long: AtomicU64,
}

/// A point-in-time copy of [`FileSourceStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSourceStatsSnapshot {
    /// Files selected by batches.
    pub files_selected: u64,
    /// Bytes of the selected files.
    pub bytes_selected: u64,
    /// Lines delivered by reads.
    pub lines: u64,
    /// Lines that were not valid UTF-8 (replaced or skipped).
    pub invalid_utf8: u64,
    /// Lines dropped as longer than the limit.
    pub too_long: u64,
}

impl FileSourceStats {
    /// The counters now.
    pub fn snapshot(&self) -> FileSourceStatsSnapshot {
        FileSourceStatsSnapshot {
            files_selected: self.files_selected.load(Ordering::Relaxed),
            bytes_selected: self.bytes_selected.load(Ordering::Relaxed),
            lines: self.lines.load(Ordering::Relaxed),
            invalid_utf8: self.invalid_utf8.load(Ordering::Relaxed),
            too_long: self.too_long.load(Ordering::Relaxed),
        }
    }
}

/// A directory of text files as a replayable source; see the [module docs](self).
#[derive(Debug)]
pub struct TextFileSource {
    dir: PathBuf,
    config: FileSourceConfig,
    initial_threshold_ms: u64,
    /// Files selected per batch time within the remember window.
    batches: BTreeMap<u64, Vec<SelectedFile>>,
    stats: Arc<FileSourceStats>,
}

impl TextFileSource {
    /// A source over `dir`; with `new_files_only` the initial threshold is the system time now.
    pub fn new(dir: impl Into<PathBuf>, config: FileSourceConfig) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Self::with_start_time(dir, config, now)
    }

    /// A source over `dir` whose "now" at creation is `now_ms` (the engine's clock; Spark uses
    /// `clock.getTimeMillis()` at construction).
    pub fn with_start_time(dir: impl Into<PathBuf>, config: FileSourceConfig, now_ms: u64) -> Self {
        let initial_threshold_ms = if config.new_files_only { now_ms } else { 0 };
        TextFileSource {
            dir: dir.into(),
            config,
            initial_threshold_ms,
            batches: BTreeMap::new(),
            stats: Arc::new(FileSourceStats::default()),
        }
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<FileSourceStats> {
        Arc::clone(&self.stats)
    }

    /// The configuration.
    pub fn config(&self) -> &FileSourceConfig {
        &self.config
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files selected by the batches still remembered, by batch time (ms).
    pub fn remembered(&self) -> &BTreeMap<u64, Vec<SelectedFile>> {
        &self.batches
    }

    /// Reads a selection and also returns its line counts (lines, bytes, invalid UTF-8, too long).
    ///
    /// # Errors
    /// As [`ReplayableSource::read`].
    pub fn read_with_counts(
        &self,
        selection: &Selection,
    ) -> Result<(Vec<String>, LineCounts), SourceError> {
        let sel = decode_sel(&selection.data)?;
        let dir = PathBuf::from(&sel.dir);
        let mut out = Vec::new();
        let mut counts = LineCounts::default();
        for f in &sel.files {
            let path = dir.join(&f.name);
            let p = path.display().to_string();
            let data = self.read_file(&path, f)?;
            split_lines(&data, &self.config.lines, &mut out, &mut counts).map_err(|e| match e {
                SplitError::InvalidUtf8 { offset, line } => SourceError::InvalidData {
                    path: p.clone(),
                    offset,
                    reason: format!("invalid UTF-8 on line {line}"),
                },
                SplitError::TooLong { offset, line, len } => SourceError::InvalidData {
                    path: p.clone(),
                    offset,
                    reason: format!(
                        "line {line} is {len} bytes, longer than the limit of {}",
                        self.config.lines.max_line_bytes
                    ),
                },
            })?;
        }
        let st = &self.stats;
        st.lines.fetch_add(counts.lines, Ordering::Relaxed);
        st.invalid_utf8
            .fetch_add(counts.invalid_utf8, Ordering::Relaxed);
        st.too_long.fetch_add(counts.too_long, Ordering::Relaxed);
        Ok((out, counts))
    }

    fn read_file(&self, path: &Path, f: &SelectedFile) -> Result<Vec<u8>, SourceError> {
        let p = path.display().to_string();
        let changed = |change: InputChange| SourceError::Changed {
            path: p.clone(),
            change,
        };
        let check = |meta: &std::fs::Metadata| -> Result<(), SourceError> {
            if meta.len() != f.size {
                return Err(changed(InputChange::Size {
                    selected: f.size,
                    now: meta.len(),
                }));
            }
            let m = mtime_ms(meta).unwrap_or(0);
            if m != f.mtime_ms {
                return Err(changed(InputChange::Mtime {
                    selected_ms: f.mtime_ms,
                    now_ms: m,
                }));
            }
            Ok(())
        };
        if f.size > self.config.max_file_bytes {
            return Err(SourceError::InvalidData {
                path: p.clone(),
                offset: 0,
                reason: format!(
                    "file is {} bytes, larger than the limit of {}",
                    f.size, self.config.max_file_bytes
                ),
            });
        }
        let mut file = std::fs::File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                changed(InputChange::Deleted)
            } else {
                SourceError::Io {
                    op: "open",
                    path: p.clone(),
                    source: e,
                }
            }
        })?;
        let io = |op, e| SourceError::Io {
            op,
            path: p.clone(),
            source: e,
        };
        check(&file.metadata().map_err(|e| io("stat", e))?)?;
        let mut data = Vec::with_capacity(f.size as usize);
        // Read one byte more than expected so a grown file is noticed even if its mtime did not move.
        (&mut file)
            .take(f.size + 1)
            .read_to_end(&mut data)
            .map_err(|e| io("read", e))?;
        if data.len() as u64 != f.size {
            return Err(changed(InputChange::ReadLength {
                selected: f.size,
                read: data.len() as u64,
            }));
        }
        check(&file.metadata().map_err(|e| io("stat", e))?)?;
        Ok(data)
    }

    fn forget_before(&mut self, threshold_ms: u64) {
        // Batches at or before T - remember can no longer be re-selected (their files' mtimes are
        // at or below the threshold), as Spark's clearMetadata.
        self.batches = self.batches.split_off(&(threshold_ms + 1));
    }
}

impl ReplayableSource<String> for TextFileSource {
    fn select(&mut self, time: BatchTime) -> Result<Selection, SourceError> {
        let t = time.as_millis();
        let remember = self.config.remember_duration().as_millis();
        let threshold = self.initial_threshold_ms.max(t.saturating_sub(remember));
        self.forget_before(t.saturating_sub(remember));
        let recent: HashSet<&str> = self
            .batches
            .values()
            .flatten()
            .map(|f| f.name.as_str())
            .collect();
        let p = self.dir.display().to_string();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| SourceError::Io {
            op: "list",
            path: p.clone(),
            source: e,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SourceError::Io {
                op: "list",
                path: p.clone(),
                source: e,
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // non-UTF-8 names cannot be recorded portably; ignored
            };
            if is_ignored_name(&name) || recent.contains(name.as_str()) {
                continue;
            }
            // A file that vanished between listing and stat is simply not selected.
            let Ok(meta) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let Some(m) = mtime_ms(&meta) else { continue };
            if m <= threshold || m > t {
                continue;
            }
            files.push(SelectedFile {
                name,
                size: meta.len(),
                mtime_ms: m,
            });
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        let summary = format!("{} files, {bytes} bytes", files.len());
        let enc = EncodedSelection {
            format: FILE_SOURCE_FORMAT,
            dir: p,
            files,
        };
        let data = codec::encode(&enc).map_err(|e| SourceError::Invalid {
            what: "file selection",
            reason: e.to_string(),
        })?;
        self.stats
            .files_selected
            .fetch_add(enc.files.len() as u64, Ordering::Relaxed);
        self.stats
            .bytes_selected
            .fetch_add(bytes, Ordering::Relaxed);
        self.batches.insert(t, enc.files);
        Ok(Selection {
            time,
            data,
            summary,
        })
    }

    fn read(&self, selection: &Selection) -> Result<Vec<String>, SourceError> {
        self.read_with_counts(selection).map(|(lines, _)| lines)
    }

    fn position(&self) -> Result<Vec<u8>, SourceError> {
        codec::encode(&EncodedPosition {
            format: FILE_SOURCE_FORMAT,
            initial_threshold_ms: self.initial_threshold_ms,
            batches: self.batches.iter().map(|(t, f)| (*t, f.clone())).collect(),
        })
        .map_err(|e| SourceError::Invalid {
            what: "file source position",
            reason: e.to_string(),
        })
    }

    fn restore(&mut self, position: &[u8], replayed: &[Selection]) -> Result<(), SourceError> {
        let pos: EncodedPosition = codec::decode(position).map_err(|e| SourceError::Invalid {
            what: "file source position",
            reason: e.to_string(),
        })?;
        if pos.format != FILE_SOURCE_FORMAT {
            return Err(SourceError::Invalid {
                what: "file source position",
                reason: format!("format {} (expected {FILE_SOURCE_FORMAT})", pos.format),
            });
        }
        let mut batches: BTreeMap<u64, Vec<SelectedFile>> = pos.batches.into_iter().collect();
        for s in replayed {
            let sel = decode_sel(&s.data)?;
            batches.insert(s.time.as_millis(), sel.files);
        }
        self.initial_threshold_ms = pos.initial_threshold_ms;
        self.batches = batches;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("files {}", self.dir.display())
    }

    fn max_batch_span(&self) -> Option<DurationMs> {
        Some(self.config.remember_duration())
    }
}
