//! The byte format (spec: `docs/format/wal.md`): segment names, the segment header and the record
//! frame, as pure encode/decode functions.
//!
//! ```text
//! segment header (32 bytes, little endian)
//!   0  magic        [u8; 8]  b"SPATEWAL"
//!   8  version      u16      1
//!  10  codec id     u8       1 (bincode 2.0.1)
//!  11  flags        u8       0 (any other value: damaged header)
//!  12  first lsn    u64      must equal the LSN in the file name
//!  20  created ms   u64      ms since the Unix epoch
//!  28  header crc   u32      crc32 of bytes 0..28
//!
//! record frame (30-byte frame header + payload)
//!   0  len          u32      payload length in bytes
//!   4  len check    u32      crc32 of the 4 bytes of `len` (a torn length is never trusted)
//!   8  crc          u32      crc32 of bytes 12..30 and the payload
//!  12  flags        u8       bit 0: sync point (first frame of a group write); others 0
//!  13  kind         u8       1..=255 (0 is reserved)
//!  14  lsn          u64
//!  22  time ms      u64      the record's time (for clean-by-time)
//!  30  payload      [u8; len]
//! ```
//!
//! A **sync point** frame is the first frame of a group write: every byte before it in its segment
//! was durable (`fdatasync`ed) before it was written. Recovery uses this to tell a torn in-flight
//! group (damage with no later sync point) from corruption of synced data (a valid sync point after
//! the damage).
//!
//! Eight zero bytes where a frame would start mean **end of data** (the zero-filled, preallocated
//! tail); since crc32 of a zero length is not zero, a real frame never starts with eight zeros.

use crate::error::CorruptReason;
use spate_types::format::{CODEC_BINCODE2, WAL_FORMAT_VERSION, WAL_MAGIC};

/// Length of the segment header in bytes.
pub const HEADER_LEN: usize = 32;
/// Length of a frame header in bytes (before the payload).
pub const FRAME_HEADER_LEN: usize = 30;
/// Frame flag: the first frame of a group write (everything before it in the segment was durable
/// when it was written).
pub const FLAG_SYNC_POINT: u8 = 1;
/// File-name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = ".wal";
/// File-name suffix of a segment being created (removed on recovery).
pub const TEMP_SUFFIX: &str = ".wal.tmp";

/// The file name of the segment whose first LSN is `first_lsn`: 20 zero-padded digits + `.wal`,
/// so names sort in LSN order.
pub fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}{SEGMENT_SUFFIX}")
}

/// Parses a segment file name back to its first LSN (`None` for any other name).
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Format version.
    pub version: u16,
    /// Codec id of the payloads.
    pub codec: u8,
    /// LSN of the first record in the segment.
    pub first_lsn: u64,
    /// When the segment was created, ms since the Unix epoch.
    pub created_ms: u64,
}

/// Why a header could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Fewer than [`HEADER_LEN`] bytes, or all-zero (a torn creation).
    Torn,
    /// The magic is wrong: not a WAL file.
    BadMagic([u8; 8]),
    /// A newer format version.
    Version(u16),
    /// Unknown codec id.
    Codec(u8),
    /// Checksum or flags wrong.
    Damaged(&'static str),
}

/// Encodes a header for a segment starting at `first_lsn`.
pub fn encode_header(first_lsn: u64, created_ms: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&WAL_MAGIC);
    h[8..10].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
    h[10] = CODEC_BINCODE2;
    h[11] = 0;
    h[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    h[20..28].copy_from_slice(&created_ms.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Decodes a segment header from the start of `bytes`.
///
/// # Errors
/// [`HeaderError`]: magic and version are checked before the checksum so a foreign or newer file
/// is named as such rather than as "damaged".
pub fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let present = &bytes[..bytes.len().min(HEADER_LEN)];
    if present.len() >= 8 && present[0..8] != WAL_MAGIC && present[0..8] != [0u8; 8] {
        let mut m = [0u8; 8];
        m.copy_from_slice(&present[0..8]);
        return Err(HeaderError::BadMagic(m));
    }
    if present.len() < HEADER_LEN || present.iter().all(|&b| b == 0) {
        return Err(HeaderError::Torn);
    }
    if present[0..8] != WAL_MAGIC {
        return Err(HeaderError::Damaged("zero magic"));
    }
    let stored = u32_at(present, 28);
    let crc_ok = crc32fast::hash(&present[0..28]) == stored;
    let version = u16_at(present, 8);
    if crc_ok && version > WAL_FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    if !crc_ok {
        return Err(HeaderError::Damaged("header crc mismatch"));
    }
    if version == 0 {
        return Err(HeaderError::Damaged("version 0"));
    }
    if present[10] != CODEC_BINCODE2 {
        return Err(HeaderError::Codec(present[10]));
    }
    if present[11] != 0 {
        return Err(HeaderError::Damaged("reserved flags set"));
    }
    Ok(SegmentHeader {
        version,
        codec: present[10],
        first_lsn: u64_at(present, 12),
        created_ms: u64_at(present, 20),
    })
}

/// Appends the frame for one record to `out`; returns the frame length in bytes.
pub fn encode_frame(
    out: &mut Vec<u8>,
    flags: u8,
    kind: u8,
    lsn: u64,
    time_ms: u64,
    payload: &[u8],
) -> usize {
    let len = u32::try_from(payload.len()).expect("caller checks max_record_bytes");
    let start = out.len();
    let len_bytes = len.to_le_bytes();
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc32fast::hash(&len_bytes).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.push(flags);
    out.push(kind);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Sets the sync-point flag on the frame at the start of `frame` (a complete frame produced by
/// [`encode_frame`]) and recomputes its crc.
pub fn mark_sync_point(frame: &mut [u8]) {
    let len = u32_at(frame, 0) as usize;
    let end = FRAME_HEADER_LEN + len;
    frame[12] |= FLAG_SYNC_POINT;
    let crc = crc32fast::hash(&frame[12..end]);
    frame[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// A frame decoded in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Whether this frame is a sync point ([`FLAG_SYNC_POINT`]).
    pub sync_point: bool,
    /// Record kind (1..=255).
    pub kind: u8,
    /// LSN.
    pub lsn: u64,
    /// Record time, ms since the Unix epoch.
    pub time_ms: u64,
    /// The payload.
    pub payload: &'a [u8],
    /// Length of the whole frame (header + payload) in bytes.
    pub frame_len: usize,
}

/// What [`decode_frame`] found at the start of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete, verified frame.
    Frame(FrameRef<'a>),
    /// End of data: the buffer is empty or starts with eight zero bytes (preallocated tail).
    End,
    /// A frame starts here but the buffer ends inside it; `needed` is the frame's full length
    /// (known only once the length word is present and checked, else [`FRAME_HEADER_LEN`]).
    Incomplete {
        /// Bytes the frame needs.
        needed: usize,
    },
}

/// Decodes the frame at the start of `buf`. Never panics and never allocates: a corrupt length is
/// rejected by its check word (or `max_payload`) before it is used.
///
/// # Errors
/// [`CorruptReason::LengthCheck`], [`CorruptReason::TooLarge`], [`CorruptReason::Crc`],
/// [`CorruptReason::ZeroKind`].
pub fn decode_frame(buf: &[u8], max_payload: u32) -> Result<Decoded<'_>, CorruptReason> {
    let head = &buf[..buf.len().min(8)];
    if head.iter().all(|&b| b == 0) {
        // Fewer than 8 bytes, all zero, at the end of the file: also end of data.
        return Ok(Decoded::End);
    }
    if buf.len() < 8 {
        return Ok(Decoded::Incomplete {
            needed: FRAME_HEADER_LEN,
        });
    }
    let len = u32_at(buf, 0);
    if crc32fast::hash(&buf[0..4]) != u32_at(buf, 4) {
        return Err(CorruptReason::LengthCheck);
    }
    if len > max_payload {
        return Err(CorruptReason::TooLarge {
            len,
            max: max_payload,
        });
    }
    let needed = FRAME_HEADER_LEN + len as usize;
    if buf.len() < needed {
        return Ok(Decoded::Incomplete { needed });
    }
    let stored = u32_at(buf, 8);
    let computed = crc32fast::hash(&buf[12..needed]);
    if stored != computed {
        return Err(CorruptReason::Crc { stored, computed });
    }
    let flags = buf[12];
    if flags & !FLAG_SYNC_POINT != 0 {
        return Err(CorruptReason::UnknownFlags { flags });
    }
    let kind = buf[13];
    if kind == 0 {
        return Err(CorruptReason::ZeroKind);
    }
    Ok(Decoded::Frame(FrameRef {
        sync_point: flags & FLAG_SYNC_POINT != 0,
        kind,
        lsn: u64_at(buf, 14),
        time_ms: u64_at(buf, 22),
        payload: &buf[FRAME_HEADER_LEN..needed],
        frame_len: needed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        for lsn in [0u64, 1, 42, u64::MAX] {
            assert_eq!(parse_segment_file_name(&segment_file_name(lsn)), Some(lsn));
        }
        assert!(segment_file_name(9) < segment_file_name(10));
        for bad in [
            "1.wal",
            "0000000000000000000a.wal",
            "00000000000000000001.wal.tmp",
            "x",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn frame_round_trip_and_zero_is_end() {
        let mut b = Vec::new();
        let n = encode_frame(&mut b, 0, 7, 3, 1000, b"abc");
        assert_eq!(n, FRAME_HEADER_LEN + 3);
        let Decoded::Frame(f) = decode_frame(&b, 100).unwrap() else {
            panic!()
        };
        assert_eq!(
            (f.kind, f.lsn, f.time_ms, f.payload, f.sync_point),
            (7, 3, 1000, &b"abc"[..], false)
        );
        mark_sync_point(&mut b);
        let Decoded::Frame(f) = decode_frame(&b, 100).unwrap() else {
            panic!()
        };
        assert!(f.sync_point);
        b[12] |= 2;
        assert!(matches!(
            decode_frame(&b, 100),
            Err(CorruptReason::Crc { .. })
        ));
        assert_eq!(decode_frame(&[0u8; 40], 100).unwrap(), Decoded::End);
        assert_eq!(decode_frame(&[], 100).unwrap(), Decoded::End);
        assert!(matches!(
            decode_frame(&b[..10], 100).unwrap(),
            Decoded::Incomplete { needed: 33 }
        ));
        // An empty payload is a valid frame, and never looks like end of data.
        let mut e = Vec::new();
        encode_frame(&mut e, 0, 1, 0, 0, b"");
        assert!(matches!(decode_frame(&e, 0).unwrap(), Decoded::Frame(_)));
    }

    #[test]
    fn header_round_trip() {
        let h = encode_header(77, 5);
        let d = decode_header(&h).unwrap();
        assert_eq!(
            (d.first_lsn, d.created_ms, d.version),
            (77, 5, WAL_FORMAT_VERSION)
        );
        assert_eq!(decode_header(&h[..10]), Err(HeaderError::Torn));
        assert_eq!(decode_header(&[0u8; 32]), Err(HeaderError::Torn));
        assert!(matches!(
            decode_header(b"NOTAWALFILE_____________________"),
            Err(HeaderError::BadMagic(_))
        ));
    }
}
