//! The error type of state backends.

use spate_types::codec::CodecError;
use std::fmt;
use std::path::PathBuf;

/// Which half of an entry an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// The key.
    Key,
    /// The value.
    Value,
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Item::Key => "key",
            Item::Value => "value",
        })
    }
}

/// Errors of state backends and of the typed checkpoint helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// serde refused to encode a key or value (for example a map with non-string keys in a format
    /// that needs them). Nothing was stored.
    #[error("encoding a state {what} failed: {source}")]
    Encode {
        /// Key or value.
        what: Item,
        /// The codec's error.
        source: CodecError,
    },
    /// Stored or checkpointed bytes do not decode into the expected type.
    #[error("corrupt state {what} in {location} (key bytes {key_prefix}): {source}")]
    Corrupt {
        /// Where the bytes came from: a sled tree name or a checkpoint object description.
        location: String,
        /// Key or value.
        what: Item,
        /// Hex of the first (at most 16) bytes of the encoded key, to locate the entry.
        key_prefix: String,
        /// The codec's error.
        source: CodecError,
    },
    /// A checkpoint object for [`crate::import`] is malformed or uses a codec this build cannot
    /// decode.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// A sled operation failed (I/O, or sled's own corruption detection).
    #[cfg(feature = "sled")]
    #[error("sled {op} failed on {location}: {source}")]
    Sled {
        /// The operation (`open`, `insert`, `get`, ...).
        op: &'static str,
        /// The directory or tree.
        location: String,
        /// sled's error.
        source: sled::Error,
    },
    /// A filesystem operation on the sled directory failed.
    #[error("{op} {path} failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

pub(crate) fn hex_prefix(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(40);
    for b in bytes.iter().take(16) {
        let _ = write!(s, "{b:02x}");
    }
    if bytes.len() > 16 {
        s.push_str("..");
    }
    if s.is_empty() {
        s.push_str("(empty)");
    }
    s
}
