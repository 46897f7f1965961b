//! Typed glue between a [`StateBackend`] and the [`crate::format`] objects.

use crate::format::{FormatError, ObjectWriter};
use crate::{encode_value, Changes, Result, StateBackend};
use serde::de::DeserializeOwned;
use serde::Serialize;
use spate_types::format::CODEC_BINCODE2;
use spate_types::{BatchTime, OperatorId, PartitionId};

/// Entries [`import`] decodes before handing them to [`StateBackend::load`] (bounds the transient
/// memory of a restore to one chunk of typed entries).
pub const IMPORT_CHUNK: usize = 65_536;

/// Encodes every entry of `backend` as a **snapshot** object for (`operator`, `partition`) at
/// `time`, keys ascending (the bytes depend only on the contents). Does not touch the change set:
/// call [`StateBackend::clear_changes`] once the snapshot is safely written.
///
/// # Errors
/// [`crate::StateError::Encode`] / [`crate::StateError::Corrupt`] / [`crate::StateError::Sled`] from the backend,
/// [`crate::StateError::Format`] for a key or value over [`crate::format::MAX_ITEM_LEN`].
pub fn export_snapshot<K, S, B>(
    backend: &B,
    operator: OperatorId,
    partition: PartitionId,
    time: BatchTime,
) -> Result<Vec<u8>>
where
    K: Serialize,
    S: Serialize,
    B: StateBackend<K, S> + ?Sized,
{
    spate_types::spate_fail!("state::snapshot::encode::before", |a| Err(
        crate::StateError::Io {
            op: "failpoint",
            path: std::path::PathBuf::from("state::snapshot::encode::before"),
            source: spate_types::failpoints::io_error("state::snapshot::encode::before", &a),
        }
    ));
    // Collect (key, value) bytes in one buffer, sort by key, write.
    let mut buf: Vec<u8> = Vec::new();
    let mut idx: Vec<(usize, usize, usize)> = Vec::with_capacity(backend.len() as usize);
    backend.for_each_encoded(&mut |k, v| {
        let start = buf.len();
        buf.extend_from_slice(k);
        buf.extend_from_slice(v);
        idx.push((start, k.len(), v.len()));
    })?;
    idx.sort_unstable_by(|a, b| buf[a.0..a.0 + a.1].cmp(&buf[b.0..b.0 + b.1]));
    let mut w = ObjectWriter::snapshot(CODEC_BINCODE2, operator, partition, time);
    for (s, kl, vl) in idx {
        w.put(&buf[s..s + kl], &buf[s + kl..s + kl + vl])?;
    }
    Ok(w.finish())
}

/// Encodes `changes` (from [`StateBackend::take_changes`]) as a **delta** object for (`operator`,
/// `partition`) at `time`, following the checkpoint at `base`.
///
/// # Errors
/// [`crate::StateError::Format`]: `base >= time` ([`FormatError::BadBase`]), changes not strictly ascending
/// by key bytes, or an item over the size limit; [`crate::StateError::Encode`] for a value serde refuses.
pub fn export_delta<K, S: Serialize>(
    changes: &Changes<K, S>,
    operator: OperatorId,
    partition: PartitionId,
    time: BatchTime,
    base: BatchTime,
) -> Result<Vec<u8>> {
    spate_types::spate_fail!("state::delta::encode::before", |a| Err(
        crate::StateError::Io {
            op: "failpoint",
            path: std::path::PathBuf::from("state::delta::encode::before"),
            source: spate_types::failpoints::io_error("state::delta::encode::before", &a),
        }
    ));
    let mut w = ObjectWriter::delta(CODEC_BINCODE2, operator, partition, time, base)?;
    for c in &changes.entries {
        match &c.value {
            Some(v) => w.put(&c.key_bytes, &encode_value(v)?)?,
            None => w.remove(&c.key_bytes)?,
        }
    }
    Ok(w.finish())
}

/// Loads restored entries (from [`crate::format::restore_borrowed`], or [`crate::format::borrowed`]
/// of [`crate::format::Restore::finish`]'s; codec [`CODEC_BINCODE2`]) into
/// `backend` with [`StateBackend::load_encoded`], in chunks of [`IMPORT_CHUNK`]. Loaded entries are not changes. The backend is not cleared first.
///
/// `codec` is the chain's codec ([`crate::format::Header::codec`]); `location` names the checkpoint
/// for error messages.
///
/// # Errors
/// [`FormatError::UnsupportedCodec`] unless `codec` is [`CODEC_BINCODE2`]; [`crate::StateError::Corrupt`]
/// (with `location`) for bytes that do not decode into `K` / `S` — for example state written by a
/// different state type; backend errors from `load`.
pub fn import<K, S, B>(
    backend: &mut B,
    codec: u8,
    location: &str,
    entries: &[(&[u8], &[u8])],
) -> Result<()>
where
    K: DeserializeOwned,
    S: DeserializeOwned,
    B: StateBackend<K, S> + ?Sized,
{
    if codec != CODEC_BINCODE2 {
        return Err(FormatError::UnsupportedCodec {
            found: codec,
            expected: CODEC_BINCODE2,
        }
        .into());
    }
    for chunk in entries.chunks(IMPORT_CHUNK) {
        backend.load_encoded(location, chunk)?;
    }
    Ok(())
}
