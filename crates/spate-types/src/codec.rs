//! The codec: the only place spate chooses a serialization library.
//!
//! bincode **2.0.1** (pinned with `=`; bincode 3.0.0 is a `compile_error!` tombstone) through its
//! serde integration, `standard()` configuration: little endian, variable-length integers. Its id in
//! file headers is [`crate::format::CODEC_BINCODE2`].
//!
//! Every decode is **size-limited**: the limit caps the bytes bincode may *claim* for containers, so a
//! corrupt length prefix yields [`CodecError::Decode`] instead of a multi-gigabyte allocation. Every
//! decode also requires the input to be consumed exactly: trailing bytes are an error, not ignored.
//!
//! Callers protect encoded bytes with their own framing (length + crc32) and call the decoder only on
//! verified bytes; the limit is the second line of defence for bugs and hostile input (fuzzing).

use serde::{de::DeserializeOwned, Serialize};

/// Default limit on the bytes a single decode may claim: 256 MiB.
pub const DEFAULT_DECODE_LIMIT: usize = 256 << 20;

/// Errors of the codec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be encoded (for example a map with a non-serializable key).
    #[error("encode failed: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type, claim more than the size limit, or
    /// end early.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The bytes decoded into a value but `extra` bytes were left over.
    #[error("decode left {extra} trailing bytes of {total}")]
    TrailingBytes {
        /// Unconsumed bytes.
        extra: usize,
        /// Input length.
        total: usize,
    },
}

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DEFAULT_DECODE_LIMIT>,
>;

const fn config() -> Config {
    bincode::config::standard().with_limit::<DEFAULT_DECODE_LIMIT>()
}

/// Encodes `value` into a new vector.
///
/// # Errors
/// [`CodecError::Encode`] if serde refuses the value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes `value`, appending to `out` (reuses the caller's buffer on hot paths).
///
/// # Errors
/// [`CodecError::Encode`] if serde refuses the value; `out` keeps its previous contents then.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let bytes = encode(value)?;
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Decodes exactly one `T` from all of `bytes`, with [`DEFAULT_DECODE_LIMIT`].
///
/// # Errors
/// [`CodecError::Decode`] for invalid or over-limit input, [`CodecError::TrailingBytes`] if the value
/// ends before the input does. Never panics on any input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used): (T, usize) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes {
            extra: bytes.len() - used,
            total: bytes.len(),
        });
    }
    Ok(value)
}

/// Decodes one `T` from the front of `bytes`, returning it and the number of bytes consumed (for
/// streams of concatenated values).
///
/// # Errors
/// [`CodecError::Decode`] for invalid, truncated or over-limit input. Never panics on any input.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        a: u64,
        s: String,
        v: Vec<u32>,
    }

    #[test]
    fn round_trip() {
        let r = Rec {
            a: 7,
            s: "héllo".into(),
            v: vec![1, 2, 3],
        };
        let b = encode(&r).unwrap();
        assert_eq!(decode::<Rec>(&b).unwrap(), r);
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut b = encode(&5u32).unwrap();
        b.push(0);
        assert!(matches!(
            decode::<u32>(&b),
            Err(CodecError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // A Vec<u64> claiming u64::MAX/2 elements: varint 0xFD + 8 bytes.
        let mut b = vec![0xFDu8];
        b.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(matches!(decode::<Vec<u64>>(&b), Err(CodecError::Decode(_))));
        assert!(matches!(decode::<String>(&b), Err(CodecError::Decode(_))));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Rec>(&bytes);
            let _ = decode::<Vec<String>>(&bytes);
            let _ = decode_prefix::<(u64, Vec<u8>)>(&bytes);
        }
    }
}
