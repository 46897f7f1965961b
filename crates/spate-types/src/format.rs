//! Format identity of every persisted file: magic bytes, format versions and the codec id.
//!
//! Every file spate persists starts with a magic (8 bytes), a format version (`u16` little endian)
//! and a codec id (`u8`). Readers refuse a newer format version with a typed error naming both
//! versions ("written by a newer spate"), never by failing to decode. Bump a version whenever the
//! bytes a writer produces change; the golden files under `tests/golden/` make a forgotten bump fail.

/// Codec id of [`crate::codec`]: bincode 2.0.1, `standard()` configuration (little endian, varint
/// integers), serde data model.
pub const CODEC_BINCODE2: u8 = 1;

/// Codec id of uninterpreted bytes: the payload is opaque to the container (for example a checkpoint
/// data object whose bytes the engine encoded itself).
pub const CODEC_RAW: u8 = 0;

/// Magic of a WAL segment file.
pub const WAL_MAGIC: [u8; 8] = *b"SPATEWAL";
/// Current WAL segment format version.
pub const WAL_FORMAT_VERSION: u16 = 1;

/// Magic of a checkpoint object (manifest or data object envelope).
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"SPATECKP";
/// Current checkpoint envelope/manifest format version.
pub const CHECKPOINT_FORMAT_VERSION: u16 = 1;
