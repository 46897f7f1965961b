//! The data-checkpoint object format (version 1), specified in `docs/format/state.md`.
//!
//! One object per (operator, partition, checkpoint time): a **snapshot** (every entry) or a
//! **delta** (entries put since the previous checkpoint of that partition, and keys removed),
//! little endian:
//!
//! ```text
//! 0   8  magic "SPATESTA"
//! 8   2  format version (1)
//! 10  1  codec id of key/value bytes (spate_types::format::CODEC_*)
//! 11  1  kind: 1 snapshot, 2 delta
//! 12  4  operator id
//! 16  4  partition
//! 20  8  batch time, ms
//! 28  8  base time, ms (delta: the previous checkpoint's batch time, < batch time; snapshot: 0)
//! 36  8  entry count
//! 44     entries: key_len u32 | key | tag u8 (1 value, 0 removed) | [value_len u32 | value]
//! ```
//!
//! Keys are strictly ascending (bytewise), so every key appears once and the bytes of an object are a
//! function of its contents. Removals (tag 0) appear only in deltas. Key and value lengths are at
//! most [`MAX_ITEM_LEN`] (256 MiB). The decoder is bounded and exact: it never allocates more than
//! the input justifies, consumes the input exactly, and reports every defect as a [`FormatError`].
//! No checksum: the checkpoint store's envelope carries one around the whole object.
//!
//! [`Restore`] applies a snapshot and then deltas in order, validating the chain.

use spate_types::{BatchTime, OperatorId, PartitionId};
use std::collections::BTreeMap;
use std::fmt;

/// Magic of a state checkpoint object.
pub const STATE_MAGIC: [u8; 8] = *b"SPATESTA";
/// Current state object format version.
pub const STATE_FORMAT_VERSION: u16 = 1;
/// Length of the fixed header, bytes.
pub const HEADER_LEN: usize = 44;
/// Largest key or value, bytes (256 MiB).
pub const MAX_ITEM_LEN: usize = 256 << 20;
/// Smallest encoded entry (empty key, removal), bytes: bounds the entry count a header may claim.
const MIN_ENTRY_LEN: usize = 5;

const KIND_SNAPSHOT: u8 = 1;
const KIND_DELTA: u8 = 2;
const TAG_REMOVED: u8 = 0;
const TAG_VALUE: u8 = 1;

/// Snapshot or delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// Every entry of the partition at the batch time.
    Snapshot,
    /// Changes since the checkpoint at `base` (the previous checkpoint of this partition).
    Delta {
        /// Batch time of the previous checkpoint, ms; strictly before the object's batch time.
        base: BatchTime,
    },
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKind::Snapshot => f.write_str("snapshot"),
            ObjectKind::Delta { base } => write!(f, "delta on {} ms", base.0),
        }
    }
}

/// The fixed header of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Snapshot or delta (with its base time).
    pub kind: ObjectKind,
    /// Codec id of the key and value bytes ([`spate_types::format::CODEC_BINCODE2`] for objects
    /// written by [`crate::export_snapshot`] / [`crate::export_delta`]).
    pub codec: u8,
    /// The stateful operator.
    pub operator: OperatorId,
    /// The partition of its state.
    pub partition: PartitionId,
    /// The checkpoint's batch time, ms.
    pub time: BatchTime,
    /// Number of entries.
    pub entries: u64,
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} {} at {} ms ({} entries)",
            self.kind, self.operator, self.partition, self.time.0, self.entries
        )
    }
}

/// One decoded entry: encoded key, and encoded value or `None` (removed; deltas only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Key bytes.
    pub key: Vec<u8>,
    /// Value bytes, or `None` for a removal.
    pub value: Option<Vec<u8>>,
}

/// A decoded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateObject {
    /// The header.
    pub header: Header,
    /// The entries, keys strictly ascending.
    pub entries: Vec<Entry>,
}

/// Errors of encoding and decoding state objects. Offsets are bytes from the object's start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The object ends inside the header or an entry.
    #[error("state object truncated at offset {offset}: need {needed} more bytes")]
    Truncated {
        /// Where the missing bytes start.
        offset: u64,
        /// How many more bytes the next field needs.
        needed: u64,
    },
    /// The magic is not `SPATESTA`.
    #[error("not a state object: bad magic {found:02x?}")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },
    /// Written by a newer spate.
    #[error("state object format version {found} is newer than supported {supported}")]
    NewerFormat {
        /// Version in the object.
        found: u16,
        /// Newest version this build reads.
        supported: u16,
    },
    /// Version 0 (never written).
    #[error("state object format version {found} is invalid")]
    BadVersion {
        /// Version in the object.
        found: u16,
    },
    /// The kind byte is neither snapshot (1) nor delta (2).
    #[error("unknown state object kind {found}")]
    UnknownKind {
        /// The kind byte.
        found: u8,
    },
    /// A snapshot with a non-zero base time, or a delta whose base is not before its batch time.
    #[error("invalid base time {base} ms for a {kind} at {time} ms")]
    BadBase {
        /// `"snapshot"` or `"delta"`.
        kind: &'static str,
        /// The object's batch time, ms.
        time: u64,
        /// The base time, ms.
        base: u64,
    },
    /// The header claims more entries than the bytes can hold.
    #[error("header claims {claimed} entries but only {bytes} entry bytes follow")]
    ImpossibleCount {
        /// Entries claimed.
        claimed: u64,
        /// Bytes after the header.
        bytes: u64,
    },
    /// A key or value longer than [`MAX_ITEM_LEN`].
    #[error("entry {entry} at offset {offset}: length {len} exceeds the limit {limit}")]
    TooLarge {
        /// Index of the entry.
        entry: u64,
        /// Offset of the length field.
        offset: u64,
        /// The length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A tag byte other than 0 (removed) or 1 (value).
    #[error("entry {entry} at offset {offset}: unknown tag {tag}")]
    BadTag {
        /// Index of the entry.
        entry: u64,
        /// Offset of the tag.
        offset: u64,
        /// The tag byte.
        tag: u8,
    },
    /// A removal in a snapshot (or handed to a snapshot writer).
    #[error("entry {entry} at offset {offset}: a snapshot cannot contain removals")]
    RemovalInSnapshot {
        /// Index of the entry.
        entry: u64,
        /// Offset of the entry.
        offset: u64,
    },
    /// Keys not strictly ascending (a duplicate or out-of-order key).
    #[error("entry {entry} at offset {offset}: key not strictly after the previous key")]
    KeyOrder {
        /// Index of the entry.
        entry: u64,
        /// Offset of the entry.
        offset: u64,
    },
    /// Bytes after the last entry.
    #[error("{extra} bytes after the last entry at offset {offset}")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: u64,
        /// How many.
        extra: u64,
    },
    /// The key/value codec is not one this build decodes (for [`crate::import`]).
    #[error("state object uses codec {found}, expected {expected}")]
    UnsupportedCodec {
        /// Codec id in the object.
        found: u8,
        /// The codec the reader needs.
        expected: u8,
    },
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Builds one object entry by entry, keys strictly ascending. Bytes are appended as entries come;
/// [`ObjectWriter::finish`] patches the entry count.
#[derive(Debug)]
pub struct ObjectWriter {
    buf: Vec<u8>,
    snapshot: bool,
    count: u64,
    /// Range of the previous key in `buf`.
    last_key: Option<(usize, usize)>,
}

impl ObjectWriter {
    fn new(
        kind: ObjectKind,
        codec: u8,
        op: OperatorId,
        part: PartitionId,
        time: BatchTime,
    ) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(&STATE_MAGIC);
        buf.extend_from_slice(&STATE_FORMAT_VERSION.to_le_bytes());
        buf.push(codec);
        let (k, base) = match kind {
            ObjectKind::Snapshot => (KIND_SNAPSHOT, 0),
            ObjectKind::Delta { base } => (KIND_DELTA, base.0),
        };
        buf.push(k);
        buf.extend_from_slice(&op.0.to_le_bytes());
        buf.extend_from_slice(&part.0.to_le_bytes());
        buf.extend_from_slice(&time.0.to_le_bytes());
        buf.extend_from_slice(&base.to_le_bytes());
        buf.extend_from_slice(&0u64.to_le_bytes());
        Self {
            buf,
            snapshot: kind == ObjectKind::Snapshot,
            count: 0,
            last_key: None,
        }
    }

    /// A snapshot writer.
    pub fn snapshot(
        codec: u8,
        operator: OperatorId,
        partition: PartitionId,
        time: BatchTime,
    ) -> Self {
        Self::new(ObjectKind::Snapshot, codec, operator, partition, time)
    }

    /// A delta writer for the checkpoint at `time` following the one at `base`.
    ///
    /// # Errors
    /// [`FormatError::BadBase`] unless `base < time`.
    pub fn delta(
        codec: u8,
        operator: OperatorId,
        partition: PartitionId,
        time: BatchTime,
        base: BatchTime,
    ) -> Result<Self, FormatError> {
        if base >= time {
            return Err(FormatError::BadBase {
                kind: "delta",
                time: time.0,
                base: base.0,
            });
        }
        Ok(Self::new(
            ObjectKind::Delta { base },
            codec,
            operator,
            partition,
            time,
        ))
    }

    fn check(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), FormatError> {
        let offset = self.buf.len() as u64;
        let entry = self.count;
        for len in [Some(key.len()), value.map(<[u8]>::len)]
            .into_iter()
            .flatten()
        {
            if len > MAX_ITEM_LEN {
                return Err(FormatError::TooLarge {
                    entry,
                    offset,
                    len: len as u64,
                    limit: MAX_ITEM_LEN as u64,
                });
            }
        }
        if value.is_none() && self.snapshot {
            return Err(FormatError::RemovalInSnapshot { entry, offset });
        }
        if let Some((s, e)) = self.last_key {
            if self.buf[s..e] >= *key {
                return Err(FormatError::KeyOrder { entry, offset });
            }
        }
        Ok(())
    }

    fn push(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), FormatError> {
        self.check(key, value)?;
        // Lengths are ≤ MAX_ITEM_LEN < u32::MAX (checked above).
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        let start = self.buf.len();
        self.buf.extend_from_slice(key);
        self.last_key = Some((start, self.buf.len()));
        match value {
            Some(v) => {
                self.buf.push(TAG_VALUE);
                self.buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(v);
            }
            None => self.buf.push(TAG_REMOVED),
        }
        self.count += 1;
        Ok(())
    }

    /// Appends an entry with a value.
    ///
    /// # Errors
    /// [`FormatError::KeyOrder`] unless `key` is strictly after the previous key,
    /// [`FormatError::TooLarge`] for a key or value over [`MAX_ITEM_LEN`]. The writer is unchanged
    /// on error.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        self.push(key, Some(value))
    }

    /// Appends a removal (deltas only).
    ///
    /// # Errors
    /// As [`ObjectWriter::put`], and [`FormatError::RemovalInSnapshot`] for a snapshot writer.
    pub fn remove(&mut self, key: &[u8]) -> Result<(), FormatError> {
        self.push(key, None)
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.count
    }

    /// The object's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[36..44].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Decodes and validates the 44-byte header (does not look at the entries beyond checking the
/// claimed count fits).
///
/// # Errors
/// Every header defect as a [`FormatError`]. Never panics.
pub fn decode_header(bytes: &[u8]) -> Result<Header, FormatError> {
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::Truncated {
            offset: bytes.len() as u64,
            needed: (HEADER_LEN - bytes.len()) as u64,
        });
    }
    let mut magic = [0u8; 8];
    magic.copy_from_slice(&bytes[..8]);
    if magic != STATE_MAGIC {
        return Err(FormatError::BadMagic { found: magic });
    }
    let version = u16_at(bytes, 8);
    if version > STATE_FORMAT_VERSION {
        return Err(FormatError::NewerFormat {
            found: version,
            supported: STATE_FORMAT_VERSION,
        });
    }
    if version == 0 {
        return Err(FormatError::BadVersion { found: version });
    }
    let codec = bytes[10];
    let time = u64_at(bytes, 20);
    let base = u64_at(bytes, 28);
    let kind = match bytes[11] {
        KIND_SNAPSHOT if base == 0 => ObjectKind::Snapshot,
        KIND_SNAPSHOT => {
            return Err(FormatError::BadBase {
                kind: "snapshot",
                time,
                base,
            })
        }
        KIND_DELTA if base < time => ObjectKind::Delta {
            base: BatchTime(base),
        },
        KIND_DELTA => {
            return Err(FormatError::BadBase {
                kind: "delta",
                time,
                base,
            })
        }
        found => return Err(FormatError::UnknownKind { found }),
    };
    let entries = u64_at(bytes, 36);
    let body = (bytes.len() - HEADER_LEN) as u64;
    if entries > body / MIN_ENTRY_LEN as u64 {
        return Err(FormatError::ImpossibleCount {
            claimed: entries,
            bytes: body,
        });
    }
    Ok(Header {
        kind,
        codec,
        operator: OperatorId(u32_at(bytes, 12)),
        partition: PartitionId(u32_at(bytes, 16)),
        time: BatchTime(time),
        entries,
    })
}

/// Iterates over the entries of a validated header's object without copying (borrowed slices).
/// Yields `Err` once at the first defect, then ends; after the last entry it checks that the input
/// is consumed exactly.
#[derive(Debug)]
pub struct EntryIter<'a> {
    bytes: &'a [u8],
    pos: usize,
    index: u64,
    count: u64,
    snapshot: bool,
    last_key: Option<&'a [u8]>,
    done: bool,
}

impl<'a> EntryIter<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let rest = self.bytes.len() - self.pos;
        if n > rest {
            return Err(FormatError::Truncated {
                offset: self.pos as u64,
                needed: (n - rest) as u64,
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn len_field(&mut self) -> Result<usize, FormatError> {
        let offset = self.pos as u64;
        let b = self.take(4)?;
        let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len > MAX_ITEM_LEN {
            return Err(FormatError::TooLarge {
                entry: self.index,
                offset,
                len: len as u64,
                limit: MAX_ITEM_LEN as u64,
            });
        }
        Ok(len)
    }

    #[allow(clippy::type_complexity)]
    fn entry(&mut self) -> Result<(&'a [u8], Option<&'a [u8]>), FormatError> {
        let start = self.pos as u64;
        let klen = self.len_field()?;
        let key = self.take(klen)?;
        if let Some(last) = self.last_key {
            if last >= key {
                return Err(FormatError::KeyOrder {
                    entry: self.index,
                    offset: start,
                });
            }
        }
        let tag_off = self.pos as u64;
        let tag = self.take(1)?[0];
        let value = match tag {
            TAG_VALUE => {
                let vlen = self.len_field()?;
                Some(self.take(vlen)?)
            }
            TAG_REMOVED if self.snapshot => {
                return Err(FormatError::RemovalInSnapshot {
                    entry: self.index,
                    offset: start,
                })
            }
            TAG_REMOVED => None,
            tag => {
                return Err(FormatError::BadTag {
                    entry: self.index,
                    offset: tag_off,
                    tag,
                })
            }
        };
        self.last_key = Some(key);
        self.index += 1;
        Ok((key, value))
    }
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = Result<(&'a [u8], Option<&'a [u8]>), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.count {
            self.done = true;
            if self.pos != self.bytes.len() {
                return Some(Err(FormatError::TrailingBytes {
                    offset: self.pos as u64,
                    extra: (self.bytes.len() - self.pos) as u64,
                }));
            }
            return None;
        }
        let r = self.entry();
        if r.is_err() {
            self.done = true;
        }
        Some(r)
    }
}

/// Decodes the header and returns a borrowing iterator over the entries (validated as they are
/// read: order, tags, lengths, exact end).
///
/// # Errors
/// Header defects here; entry defects from the iterator.
pub fn entries(bytes: &[u8]) -> Result<(Header, EntryIter<'_>), FormatError> {
    let header = decode_header(bytes)?;
    Ok((
        header,
        EntryIter {
            bytes,
            pos: HEADER_LEN,
            index: 0,
            count: header.entries,
            snapshot: header.kind == ObjectKind::Snapshot,
            last_key: None,
            done: false,
        },
    ))
}

/// Decodes a whole object into owned entries.
///
/// # Errors
/// Any [`FormatError`]: the object must be exactly one valid object. Never panics, and allocates at
/// most a small multiple of the input's size.
pub fn decode(bytes: &[u8]) -> Result<StateObject, FormatError> {
    let (header, iter) = entries(bytes)?;
    // The count is bounded by the input size; cap the up-front reservation anyway.
    let mut out = Vec::with_capacity(header.entries.min(1 << 16) as usize);
    for e in iter {
        let (k, v) = e?;
        out.push(Entry {
            key: k.to_vec(),
            value: v.map(<[u8]>::to_vec),
        });
    }
    Ok(StateObject {
        header,
        entries: out,
    })
}

/// Errors of [`Restore`]: which link of the chain is broken. `index` is the position of the object
/// in the order applied (0 = the first).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// An object does not decode.
    #[error("state object {index} does not decode: {source}")]
    Decode {
        /// Position in the chain.
        index: usize,
        /// The defect.
        source: FormatError,
    },
    /// The object belongs to another operator or partition.
    #[error("state object {index} ({found}) is not for {operator} {partition}")]
    WrongOwner {
        /// Position in the chain.
        index: usize,
        /// The object's header.
        found: Header,
        /// Expected operator.
        operator: OperatorId,
        /// Expected partition.
        partition: PartitionId,
    },
    /// The first object is a delta.
    #[error("state chain starts with a delta ({found}); the first object must be a snapshot")]
    NoSnapshot {
        /// The first object's header.
        found: Header,
    },
    /// A delta whose base is not the previous object's batch time.
    #[error(
        "state chain broken at object {index} ({found}): base should be {expected} ms, the previous \
         object's time"
    )]
    BrokenChain {
        /// Position in the chain.
        index: usize,
        /// The delta's header.
        found: Header,
        /// The previous object's batch time, ms.
        expected: u64,
    },
    /// A snapshot not after the previous object.
    #[error(
        "state object {index} ({found}) is not after the previous object's time {previous} ms"
    )]
    NotAfter {
        /// Position in the chain.
        index: usize,
        /// The header.
        found: Header,
        /// The previous object's batch time, ms.
        previous: u64,
    },
    /// The objects' codecs differ.
    #[error("state object {index} ({found}) uses codec {}, the chain started with codec {expected}", found.codec)]
    CodecChanged {
        /// Position in the chain.
        index: usize,
        /// The header.
        found: Header,
        /// The codec of the first object.
        expected: u8,
    },
    /// [`Restore::finish`] without any object.
    #[error("no state objects to restore")]
    Empty,
}

/// Applies a snapshot and then deltas of one (operator, partition) in order, validating the chain:
/// the first object must be a snapshot; each delta's base must be the previous object's batch time;
/// a later snapshot (after its predecessor) replaces everything; operator, partition and codec must
/// match throughout. On any error the restore is unusable (start again from a checkpoint).
#[derive(Debug)]
pub struct Restore {
    operator: OperatorId,
    partition: PartitionId,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    last: Option<Header>,
    applied: usize,
}

impl Restore {
    /// An empty restore for (`operator`, `partition`).
    pub fn new(operator: OperatorId, partition: PartitionId) -> Self {
        Self {
            operator,
            partition,
            state: BTreeMap::new(),
            last: None,
            applied: 0,
        }
    }

    /// Decodes `object` and applies it.
    ///
    /// # Errors
    /// [`RestoreError::Decode`] or a chain error naming the object; the state is then unspecified.
    pub fn apply(&mut self, object: &[u8]) -> Result<(), RestoreError> {
        let index = self.applied;
        let decode_err = |source| RestoreError::Decode { index, source };
        let (header, iter) = entries(object).map_err(decode_err)?;
        self.check(&header)?;
        if header.kind == ObjectKind::Snapshot {
            self.state.clear();
        }
        for e in iter {
            let (k, v) = e.map_err(decode_err)?;
            match v {
                Some(v) => {
                    self.state.insert(k.to_vec(), v.to_vec());
                }
                None => {
                    self.state.remove(k);
                }
            }
        }
        self.last = Some(header);
        self.applied += 1;
        Ok(())
    }

    fn check(&self, h: &Header) -> Result<(), RestoreError> {
        let index = self.applied;
        if h.operator != self.operator || h.partition != self.partition {
            return Err(RestoreError::WrongOwner {
                index,
                found: *h,
                operator: self.operator,
                partition: self.partition,
            });
        }
        match (self.last, h.kind) {
            (None, ObjectKind::Snapshot) => Ok(()),
            (None, ObjectKind::Delta { .. }) => Err(RestoreError::NoSnapshot { found: *h }),
            (Some(prev), _) if prev.codec != h.codec => Err(RestoreError::CodecChanged {
                index,
                found: *h,
                expected: prev.codec,
            }),
            (Some(prev), ObjectKind::Snapshot) if h.time <= prev.time => {
                Err(RestoreError::NotAfter {
                    index,
                    found: *h,
                    previous: prev.time.0,
                })
            }
            (Some(_), ObjectKind::Snapshot) => Ok(()),
            (Some(prev), ObjectKind::Delta { base }) if base != prev.time => {
                Err(RestoreError::BrokenChain {
                    index,
                    found: *h,
                    expected: prev.time.0,
                })
            }
            (Some(_), ObjectKind::Delta { .. }) => Ok(()),
        }
    }

    /// Batch time of the last applied object (the restored state's time).
    pub fn time(&self) -> Option<BatchTime> {
        self.last.map(|h| h.time)
    }

    /// Codec of the chain's key/value bytes.
    pub fn codec(&self) -> Option<u8> {
        self.last.map(|h| h.codec)
    }

    /// Entries so far.
    pub fn len(&self) -> usize {
        self.state.len()
    }

    /// True if no entries so far.
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }

    /// The restored entries (encoded key, encoded value), ascending by key, with the chain's last
    /// header.
    ///
    /// # Errors
    /// [`RestoreError::Empty`] if nothing was applied.
    #[allow(clippy::type_complexity)]
    pub fn finish(self) -> Result<(Header, Vec<(Vec<u8>, Vec<u8>)>), RestoreError> {
        let header = self.last.ok_or(RestoreError::Empty)?;
        Ok((header, self.state.into_iter().collect()))
    }
}

/// Restores (`operator`, `partition`) from `objects` (a snapshot, then deltas, in order): the
/// entries, ascending by key, and the last object's header. (Owned copies of
/// [`restore_borrowed`]'s result.)
///
/// # Errors
/// As [`restore_borrowed`].
#[allow(clippy::type_complexity)]
pub fn restore<'a>(
    operator: OperatorId,
    partition: PartitionId,
    objects: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(Header, Vec<(Vec<u8>, Vec<u8>)>), RestoreError> {
    let (h, entries) = restore_borrowed(operator, partition, objects)?;
    Ok((
        h,
        entries
            .into_iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect(),
    ))
}

/// As [`restore`], but the entries borrow the objects' bytes: no allocation per entry. Objects
/// hold their entries strictly ascending by key (the decoder rejects anything else), so the chain
/// is a merge: the snapshot's entries, then each delta merged in one pass (a delta's value
/// replaces, its removal drops). Same result as applying the objects to a [`Restore`], which
/// keeps an owned `BTreeMap` (two allocations and a tree insert per entry: most of a restore's
/// CPU at 10^6 keys, docs/performance.md).
///
/// # Errors
/// As [`Restore::apply`] (the first damaged or out-of-chain object, by index) and
/// [`Restore::finish`] ([`RestoreError::Empty`] for no objects).
#[allow(clippy::type_complexity)]
pub fn restore_borrowed<'a>(
    operator: OperatorId,
    partition: PartitionId,
    objects: impl IntoIterator<Item = &'a [u8]>,
) -> Result<(Header, Vec<(&'a [u8], &'a [u8])>), RestoreError> {
    // The chain rules (owner, snapshot first, links, codec) are `Restore`'s; its map stays empty.
    let mut chain = Restore::new(operator, partition);
    let mut state: Vec<(&'a [u8], &'a [u8])> = Vec::new();
    let mut merged: Vec<(&'a [u8], &'a [u8])> = Vec::new();
    for object in objects {
        let index = chain.applied;
        let decode_err = |source| RestoreError::Decode { index, source };
        let (header, iter) = entries(object).map_err(decode_err)?;
        chain.check(&header)?;
        // The claimed count was checked against the object's length by the header decoder.
        let claimed = usize::try_from(header.entries).unwrap_or(0);
        if header.kind == ObjectKind::Snapshot {
            state.clear();
            state.reserve(claimed);
            for e in iter {
                if let (k, Some(v)) = e.map_err(decode_err)? {
                    state.push((k, v));
                }
            }
        } else {
            merged.clear();
            merged.reserve(state.len() + claimed);
            let mut i = 0;
            for e in iter {
                let (k, v) = e.map_err(decode_err)?;
                while i < state.len() && state[i].0 < k {
                    merged.push(state[i]);
                    i += 1;
                }
                if i < state.len() && state[i].0 == k {
                    i += 1;
                }
                if let Some(v) = v {
                    merged.push((k, v));
                }
            }
            merged.extend_from_slice(&state[i..]);
            std::mem::swap(&mut state, &mut merged);
        }
        chain.last = Some(header);
        chain.applied += 1;
    }
    let header = chain.last.ok_or(RestoreError::Empty)?;
    Ok((header, state))
}

/// Borrowed views of owned entries (for [`crate::import`] of what [`restore`] returned).
pub fn borrowed(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    entries.iter().map(|(k, v)| (&k[..], &v[..])).collect()
}

/// Label of a state object inside a checkpoint's data directory:
/// `state-<operator:010>-<partition:010>.snap` or `.delta` (matches the checkpoint store's
/// `[A-Za-z0-9._-]{1,128}`).
pub fn object_label(operator: OperatorId, partition: PartitionId, snapshot: bool) -> String {
    format!(
        "state-{:010}-{:010}.{}",
        operator.0,
        partition.0,
        if snapshot { "snap" } else { "delta" }
    )
}

/// Parses an [`object_label`]: (operator, partition, is snapshot), or `None` for any other name.
pub fn parse_object_label(label: &str) -> Option<(OperatorId, PartitionId, bool)> {
    let rest = label.strip_prefix("state-")?;
    let (ids, ext) = rest.split_once('.')?;
    let snapshot = match ext {
        "snap" => true,
        "delta" => false,
        _ => return None,
    };
    let (op, part) = ids.split_once('-')?;
    let digits = |s: &str| s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(op) || !digits(part) {
        return None;
    }
    Some((
        OperatorId(op.parse().ok()?),
        PartitionId(part.parse().ok()?),
        snapshot,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use spate_types::format::CODEC_BINCODE2;

    const OP: OperatorId = OperatorId(3);
    const P: PartitionId = PartitionId(1);

    fn snap(time: u64, entries: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut w = ObjectWriter::snapshot(CODEC_BINCODE2, OP, P, BatchTime(time));
        for (k, v) in entries {
            w.put(k, v).unwrap();
        }
        w.finish()
    }

    fn delta(time: u64, base: u64, entries: &[(&[u8], Option<&[u8]>)]) -> Vec<u8> {
        let mut w =
            ObjectWriter::delta(CODEC_BINCODE2, OP, P, BatchTime(time), BatchTime(base)).unwrap();
        for (k, v) in entries {
            match v {
                Some(v) => w.put(k, v).unwrap(),
                None => w.remove(k).unwrap(),
            }
        }
        w.finish()
    }

    fn reencode(o: &StateObject) -> Vec<u8> {
        let h = o.header;
        let mut w = match h.kind {
            ObjectKind::Snapshot => {
                ObjectWriter::snapshot(h.codec, h.operator, h.partition, h.time)
            }
            ObjectKind::Delta { base } => {
                ObjectWriter::delta(h.codec, h.operator, h.partition, h.time, base).unwrap()
            }
        };
        for e in &o.entries {
            match &e.value {
                Some(v) => w.put(&e.key, v).unwrap(),
                None => w.remove(&e.key).unwrap(),
            }
        }
        w.finish()
    }

    #[test]
    fn snapshot_round_trips_with_exact_header_bytes() {
        let b = snap(1000, &[(b"a", b"1"), (b"b", b"")]);
        assert_eq!(&b[..8], b"SPATESTA");
        assert_eq!(b.len(), HEADER_LEN + (4 + 1 + 1 + 4 + 1) + (4 + 1 + 1 + 4));
        let o = decode(&b).unwrap();
        assert_eq!(o.header.kind, ObjectKind::Snapshot);
        assert_eq!(o.header.time, BatchTime(1000));
        assert_eq!(o.header.entries, 2);
        assert_eq!(o.entries[1].value.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn writer_refuses_out_of_order_and_removals_in_snapshots() {
        let mut w = ObjectWriter::snapshot(1, OP, P, BatchTime(5));
        w.put(b"b", b"x").unwrap();
        assert!(matches!(
            w.put(b"a", b"x"),
            Err(FormatError::KeyOrder { entry: 1, .. })
        ));
        assert!(matches!(
            w.put(b"b", b"x"),
            Err(FormatError::KeyOrder { .. })
        ));
        assert!(matches!(
            w.remove(b"c"),
            Err(FormatError::RemovalInSnapshot { .. })
        ));
        assert_eq!(w.entries(), 1);
        assert!(decode(&w.finish()).is_ok());
        assert!(matches!(
            ObjectWriter::delta(1, OP, P, BatchTime(5), BatchTime(5)),
            Err(FormatError::BadBase { .. })
        ));
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let b = delta(2000, 1000, &[(b"a", Some(b"xyz")), (b"b", None)]);
        assert!(decode(&b).is_ok());
        for n in 0..b.len() {
            let r = decode(&b[..n]);
            assert!(
                matches!(
                    r,
                    Err(FormatError::Truncated { .. } | FormatError::ImpossibleCount { .. })
                ),
                "prefix {n}: {r:?}"
            );
        }
        let mut t = b.clone();
        t.push(0);
        assert!(matches!(
            decode(&t),
            Err(FormatError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn header_defects_are_named() {
        let b = snap(1000, &[(b"a", b"1")]);
        let mut x = b.clone();
        x[0] = b'X';
        assert!(matches!(decode(&x), Err(FormatError::BadMagic { .. })));
        let mut x = b.clone();
        x[8] = 2;
        assert!(matches!(
            decode(&x),
            Err(FormatError::NewerFormat {
                found: 2,
                supported: 1
            })
        ));
        let mut x = b.clone();
        x[11] = 9;
        assert!(matches!(
            decode(&x),
            Err(FormatError::UnknownKind { found: 9 })
        ));
        let mut x = b.clone();
        x[28] = 1;
        assert!(matches!(decode(&x), Err(FormatError::BadBase { .. })));
        let mut x = b.clone();
        x[36..44].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode(&x),
            Err(FormatError::ImpossibleCount { .. })
        ));
        let mut x = b.clone();
        x[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&x), Err(FormatError::TooLarge { .. })));
        let mut x = b.clone();
        x[HEADER_LEN + 5] = 7;
        assert!(matches!(
            decode(&x),
            Err(FormatError::BadTag { tag: 7, .. })
        ));
        let mut x = b;
        x[HEADER_LEN + 5] = 0; // removal in a snapshot
        assert!(matches!(
            decode(&x),
            Err(FormatError::RemovalInSnapshot { .. })
        ));
    }

    #[test]
    fn restore_applies_a_chain_and_names_broken_links() {
        let s = snap(1000, &[(b"a", b"1"), (b"b", b"2")]);
        let d1 = delta(2000, 1000, &[(b"a", None), (b"c", Some(b"3"))]);
        let d2 = delta(3000, 2000, &[(b"b", Some(b"22"))]);
        let (h, e) = restore(OP, P, [&s[..], &d1, &d2]).unwrap();
        assert_eq!(h.time, BatchTime(3000));
        assert_eq!(
            e,
            vec![
                (b"b".to_vec(), b"22".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ]
        );
        // Skipped delta.
        assert!(matches!(
            restore(OP, P, [&s[..], &d2]),
            Err(RestoreError::BrokenChain {
                index: 1,
                expected: 1000,
                ..
            })
        ));
        // No snapshot first.
        assert!(matches!(
            restore(OP, P, [&d1[..]]),
            Err(RestoreError::NoSnapshot { .. })
        ));
        // Wrong partition.
        assert!(matches!(
            restore(OP, PartitionId(2), [&s[..]]),
            Err(RestoreError::WrongOwner { index: 0, .. })
        ));
        assert!(matches!(
            restore(OperatorId(9), P, [&s[..]]),
            Err(RestoreError::WrongOwner { .. })
        ));
        // A snapshot must move forward; a later one replaces everything.
        assert!(matches!(
            restore(OP, P, [&s[..], &d1, &s]),
            Err(RestoreError::NotAfter { index: 2, .. })
        ));
        let s4 = snap(4000, &[(b"z", b"9")]);
        let (_, e) = restore(OP, P, [&s[..], &d1, &s4]).unwrap();
        assert_eq!(e, vec![(b"z".to_vec(), b"9".to_vec())]);
        // Damaged link.
        let mut bad = d1.clone();
        bad.truncate(bad.len() - 1);
        assert!(matches!(
            restore(OP, P, [&s[..], &bad]),
            Err(RestoreError::Decode { index: 1, .. })
        ));
        // Codec change.
        let mut other = d1.clone();
        other[10] = 0;
        assert!(matches!(
            restore(OP, P, [&s[..], &other]),
            Err(RestoreError::CodecChanged { index: 1, .. })
        ));
        assert!(matches!(
            restore(OP, P, std::iter::empty()),
            Err(RestoreError::Empty)
        ));
    }

    #[test]
    fn labels_round_trip_and_reject_near_misses() {
        let l = object_label(OperatorId(7), PartitionId(12), false);
        assert_eq!(l, "state-0000000007-0000000012.delta");
        assert_eq!(
            parse_object_label(&l),
            Some((OperatorId(7), PartitionId(12), false))
        );
        for bad in [
            "state-7-12.delta",
            "state-0000000007-0000000012.snapx",
            "state-000000000a-0000000012.snap",
            "x",
        ] {
            assert_eq!(parse_object_label(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(o) = decode(&bytes) {
                prop_assert_eq!(reencode(&o), bytes.clone(), "accepted bytes are canonical");
            }
            // Valid header + garbage body.
            let mut b = delta(2, 1, &[]);
            let count = bytes.first().map_or(0, |c| u64::from(c % 4));
            b[36..44].copy_from_slice(&count.to_le_bytes());
            b.extend_from_slice(bytes.get(1..).unwrap_or_default());
            if let Ok(o) = decode(&b) {
                prop_assert_eq!(reencode(&o), b, "accepted bytes are canonical");
            }
        }

        #[test]
        fn round_trip_any_sorted_entries(
            m in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..8),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                0..20),
            time in 1u64..u64::MAX,
        ) {
            let mut w = ObjectWriter::delta(CODEC_BINCODE2, OP, P, BatchTime(time), BatchTime(time - 1)).unwrap();
            for (k, v) in &m {
                match v { Some(v) => w.put(k, v).unwrap(), None => w.remove(k).unwrap() }
            }
            let b = w.finish();
            let o = decode(&b).unwrap();
            prop_assert_eq!(o.header.kind, ObjectKind::Delta { base: BatchTime(time - 1) });
            let got: Vec<_> = o.entries.into_iter().map(|e| (e.key, e.value)).collect();
            let want: Vec<_> = m.into_iter().collect();
            prop_assert_eq!(got, want);
        }

        /// The borrowed merge restore equals the `Restore` model (an owned `BTreeMap` with each
        /// object applied in turn) on random chains: a snapshot, then deltas that overwrite,
        /// add and remove keys from a small key space (so they collide), sometimes a later
        /// snapshot.
        #[test]
        fn borrowed_merge_restore_equals_the_map_model(
            first in proptest::collection::btree_map(
                proptest::collection::vec(0u8..6, 0..3), proptest::collection::vec(any::<u8>(), 0..4), 0..12),
            deltas in proptest::collection::vec(
                (any::<bool>(), proptest::collection::btree_map(
                    proptest::collection::vec(0u8..6, 0..3),
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)), 0..12)),
                0..6),
        ) {
            let mut objects = vec![snap_owned(1000, &first)];
            let mut prev = 1000u64;
            for (i, (as_snapshot, m)) in deltas.iter().enumerate() {
                let t = 2000 + 1000 * i as u64;
                if *as_snapshot && i % 3 == 2 {
                    let live: BTreeMap<Vec<u8>, Vec<u8>> = m
                        .iter()
                        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                        .collect();
                    objects.push(snap_owned(t, &live));
                } else {
                    let mut w = ObjectWriter::delta(CODEC_BINCODE2, OP, P, BatchTime(t), BatchTime(prev)).unwrap();
                    for (k, v) in m {
                        match v { Some(v) => w.put(k, v).unwrap(), None => w.remove(k).unwrap() }
                    }
                    objects.push(w.finish());
                }
                prev = t;
            }
            let mut model = Restore::new(OP, P);
            for o in &objects {
                model.apply(o).unwrap();
            }
            let (mh, want) = model.finish().unwrap();
            let (h, got) = restore_borrowed(OP, P, objects.iter().map(Vec::as_slice)).unwrap();
            prop_assert_eq!(h, mh);
            let got: Vec<(Vec<u8>, Vec<u8>)> =
                got.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            prop_assert_eq!(got, want);
        }
    }

    fn snap_owned(time: u64, entries: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<u8> {
        let mut w = ObjectWriter::snapshot(CODEC_BINCODE2, OP, P, BatchTime(time));
        for (k, v) in entries {
            w.put(k, v).unwrap();
        }
        w.finish()
    }
}
