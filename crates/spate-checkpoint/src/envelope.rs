//! The envelope every checkpoint object is wrapped in (spec: `docs/format/checkpoint.md`).
//!
//! ```text
//! offset size field
//!      0    8 magic          b"SPATECKP"
//!      8    2 format version u16 LE   (1)
//!     10    1 codec id       u8       (0 = raw bytes, 1 = bincode 2.0.1 standard)
//!     11    1 object kind    u8       (1 manifest, 2 data, 3 generation claim, 4 floor, 5 probe)
//!     12    8 payload length u64 LE
//!     20    4 payload crc32  u32 LE   (crc32fast / IEEE over the payload)
//!     24    4 header crc32   u32 LE   (over bytes 0..24: a torn length is never trusted)
//!     28    n payload
//! ```
//!
//! Decoding checks, in order: length ≥ 8, magic, version (a newer one is
//! [`CheckpointError::NewerFormat`], named before anything else can fail), length ≥ 28, header crc,
//! codec, kind, exact total length, payload crc. Every failure is a typed error naming the object;
//! no input panics (fuzzed by `fuzz/fuzz_targets/checkpoint_envelope.rs`).

use crate::error::{CheckpointError, CorruptReason, Result};
use spate_types::format::{CHECKPOINT_FORMAT_VERSION, CHECKPOINT_MAGIC, CODEC_BINCODE2, CODEC_RAW};

/// Size of the envelope header, in bytes.
pub const HEADER_LEN: usize = 28;

/// What an envelope holds (byte 11 of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ObjectKind {
    /// A checkpoint manifest (bincode-encoded [`crate::Manifest`]).
    Manifest = 1,
    /// A data object: opaque bytes written by the engine (state snapshot, delta, ...).
    Data = 2,
    /// A generation claim marker.
    GenerationClaim = 3,
    /// The manifest floor a new generation observed after claiming (fencing, see [`crate::protocol`]).
    Floor = 4,
    /// A capability-probe object.
    Probe = 5,
    /// A publish slot (bincode-encoded [`crate::protocol::SlotEntry`]; fencing).
    FenceSlot = 6,
    /// The latest-checkpoint pointer (bincode-encoded [`crate::CheckpointKey`]; a resolve hint).
    LatestPointer = 7,
}

impl ObjectKind {
    fn codec(self) -> u8 {
        match self {
            ObjectKind::Data | ObjectKind::Probe => CODEC_RAW,
            _ => CODEC_BINCODE2,
        }
    }
}

/// Wraps `payload` in an envelope of `kind`.
#[must_use]
pub fn encode(kind: ObjectKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&CHECKPOINT_MAGIC);
    out.extend_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
    out.push(kind.codec());
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let hcrc = crc32fast::hash(&out[..24]);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A verified envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// Format version found.
    pub version: u16,
    /// Codec id found.
    pub codec: u8,
    /// The payload's crc32 (verified).
    pub payload_crc: u32,
    /// The payload.
    pub payload: &'a [u8],
}

fn corrupt(object: &str, reason: CorruptReason) -> CheckpointError {
    CheckpointError::Corrupt {
        object: object.to_owned(),
        reason,
    }
}

/// Verifies and unwraps an envelope of `expected` kind stored as `object` (the name is only used in
/// errors).
///
/// # Errors
/// [`CheckpointError::NewerFormat`] for a newer format version; [`CheckpointError::Corrupt`] naming
/// `object` for every other defect (truncation, magic, header crc, codec, kind, length, payload crc).
/// Never panics.
pub fn decode<'a>(object: &str, expected: ObjectKind, bytes: &'a [u8]) -> Result<Decoded<'a>> {
    let total = bytes.len() as u64;
    if bytes.len() < 10 {
        return Err(corrupt(
            object,
            CorruptReason::Truncated {
                expected: HEADER_LEN as u64,
                actual: total,
            },
        ));
    }
    if bytes[..8] != CHECKPOINT_MAGIC {
        return Err(corrupt(
            object,
            CorruptReason::BadMagic {
                found: bytes[..8].to_vec(),
            },
        ));
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version > CHECKPOINT_FORMAT_VERSION {
        return Err(CheckpointError::NewerFormat {
            object: object.to_owned(),
            found: version,
            supported: CHECKPOINT_FORMAT_VERSION,
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(
            object,
            CorruptReason::Truncated {
                expected: HEADER_LEN as u64,
                actual: total,
            },
        ));
    }
    let stored = u32::from_le_bytes(bytes[24..28].try_into().unwrap_or_default());
    let computed = crc32fast::hash(&bytes[..24]);
    if stored != computed {
        return Err(corrupt(
            object,
            CorruptReason::HeaderCrc { stored, computed },
        ));
    }
    if version == 0 {
        return Err(corrupt(
            object,
            CorruptReason::Invalid("format version 0 was never written".into()),
        ));
    }
    let codec = bytes[10];
    if codec != CODEC_RAW && codec != CODEC_BINCODE2 {
        return Err(corrupt(object, CorruptReason::UnknownCodec(codec)));
    }
    if bytes[11] != expected as u8 {
        return Err(corrupt(
            object,
            CorruptReason::WrongKind {
                found: bytes[11],
                expected: expected as u8,
            },
        ));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let have = total - HEADER_LEN as u64;
    if have < len {
        return Err(corrupt(
            object,
            CorruptReason::Truncated {
                expected: len.saturating_add(HEADER_LEN as u64),
                actual: total,
            },
        ));
    }
    if have > len {
        return Err(corrupt(
            object,
            CorruptReason::TrailingBytes { extra: have - len },
        ));
    }
    let payload = &bytes[HEADER_LEN..];
    let expected_crc = u32::from_le_bytes(bytes[20..24].try_into().unwrap_or_default());
    let computed = crc32fast::hash(payload);
    if computed != expected_crc {
        return Err(corrupt(
            object,
            CorruptReason::PayloadCrc {
                expected: expected_crc,
                computed,
            },
        ));
    }
    Ok(Decoded {
        version,
        codec,
        payload_crc: computed,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_every_single_bit_flip_is_detected() {
        let env = encode(ObjectKind::Data, b"hello checkpoint");
        let d = decode("x", ObjectKind::Data, &env).unwrap();
        assert_eq!(d.payload, b"hello checkpoint");
        for i in 0..env.len() * 8 {
            let mut b = env.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(
                decode("x", ObjectKind::Data, &b).is_err(),
                "bit {i} undetected"
            );
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let env = encode(ObjectKind::Manifest, b"abc");
        for n in 0..env.len() {
            assert!(decode("m", ObjectKind::Manifest, &env[..n]).is_err());
        }
    }

    #[test]
    fn newer_version_names_both_versions() {
        let mut env = encode(ObjectKind::Data, b"x");
        env[8..10].copy_from_slice(&(CHECKPOINT_FORMAT_VERSION + 1).to_le_bytes());
        match decode("obj", ObjectKind::Data, &env) {
            Err(CheckpointError::NewerFormat {
                object,
                found,
                supported,
            }) => {
                assert_eq!(object, "obj");
                assert_eq!(found, CHECKPOINT_FORMAT_VERSION + 1);
                assert_eq!(supported, CHECKPOINT_FORMAT_VERSION);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_kind_is_rejected() {
        let env = encode(ObjectKind::Data, b"x");
        assert!(matches!(
            decode("o", ObjectKind::Manifest, &env),
            Err(CheckpointError::Corrupt {
                reason: CorruptReason::WrongKind { .. },
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode("g", ObjectKind::Manifest, &bytes);
        }
    }
}
