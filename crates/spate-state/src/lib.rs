//! # spate-state
//!
//! Keyed state of stateful operators (`update_state_by_key`, `map_with_state`) and the incremental
//! data-checkpoint format that makes it survive crashes exactly.
//!
//! * [`StateBackend`] — one partition of one operator's keyed state, typed (`K` keys, `S` values),
//!   with change tracking for incremental checkpoints. Two implementations run one conformance
//!   suite (`conformance`, feature `testing`):
//!   * [`MemoryBackend`] — a hash map; the default;
//!   * [`SledBackend`] — a `sled` 0.34.7 tree per partition, handed out by a [`SledStore`] (feature
//!     `sled`, on by default), for state larger than memory.
//! * [`format`](mod@format) — the byte format of data-checkpoint objects: a **snapshot** (every entry) or a
//!   **delta** (entries put and keys removed since the previous checkpoint), one object per
//!   (operator, partition, checkpoint time); [`format::Restore`] validates a snapshot→delta chain
//!   and applies it. Specified in `docs/format/state.md`.
//! * [`export_snapshot`], [`export_delta`], [`import`] — glue between a typed backend and the
//!   format, using [`spate_types::codec`] for keys and values.
//!
//! ## The checkpoint is the source of truth
//!
//! No backend is durable on its own. A backend holds the *working* state between data checkpoints;
//! the objects written through the checkpoint store are authoritative. The sled backend is a local
//! working copy: after a restart the engine opens it empty ([`Start::Empty`]) and reloads it from the
//! checkpoint, and deleting its directory (or [`SledStore::open_fresh`]) is always safe. Nothing in
//! this crate calls `fsync` and nothing needs to.
//!
//! ## Change tracking
//!
//! Every backend records which keys were put or removed since the last
//! [`StateBackend::take_changes`] / [`StateBackend::clear_changes`]. `take_changes` returns them
//! sorted by encoded key bytes (deterministic), each with its current value or `None` (removed),
//! which [`export_delta`] turns into a delta object. [`StateBackend::load`] (restore) is not a change.
//! A key rewritten with a value whose bytes equal the last checkpointed ones is left out, so
//! `update_state_by_key` (which rewrites every key every batch) still writes small deltas: sled
//! compares the stored bytes; the memory backend keeps a fingerprint per entry (the bytes themselves
//! up to 16 bytes — exact — else two 64-bit SipHash-1-3 with random keys, a 2^-128 collision
//! chance per comparison).
//!
//! ## Example: a checkpoint cycle
//!
//! ```
//! use spate_state::{export_delta, export_snapshot, format, import, MemoryBackend, StateBackend};
//! use spate_types::{BatchTime, OperatorId, PartitionId};
//!
//! let (op, part) = (OperatorId(1), PartitionId(0));
//! let mut state: Box<dyn StateBackend<String, u64>> = Box::new(MemoryBackend::new());
//! state.put("a".into(), 1)?;
//! state.put("b".into(), 2)?;
//! // Data checkpoint at 1000 ms: a snapshot; the change set is covered by it.
//! let snap = export_snapshot(&*state, op, part, BatchTime(1000))?;
//! state.clear_changes();
//! // A batch: every key sees it (update_state_by_key); "a" goes away.
//! state.update_all(&mut |k, n| if k == "a" { None } else { Some(n + 10) })?;
//! // Data checkpoint at 2000 ms: a delta on 1000 ms with the changed keys only.
//! let delta = export_delta(&state.take_changes()?, op, part, BatchTime(2000), BatchTime(1000))?;
//! // Restart: rebuild from the chain.
//! let (header, entries) = format::restore_borrowed(op, part, [&snap[..], &delta[..]])?;
//! let mut restored = MemoryBackend::<String, u64>::new();
//! import(&mut restored, header.codec, "checkpoint 2000", &entries)?;
//! assert_eq!(restored.get(&"b".to_string())?, Some(12));
//! assert_eq!(restored.get(&"a".to_string())?, None);
//! assert_eq!(header.time, BatchTime(2000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Errors
//!
//! Every operation is fallible with [`StateError`]; bytes that do not decode (a corrupt sled value,
//! a damaged checkpoint object) are a typed error, never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

mod error;
mod export;
pub mod format;
mod memory;
#[cfg(feature = "sled")]
mod sled_store;

#[cfg(feature = "testing")]
pub mod conformance;

pub use error::{Item, StateError};
pub use export::{export_delta, export_snapshot, import, IMPORT_CHUNK};
pub use memory::MemoryBackend;
#[cfg(feature = "sled")]
pub use sled_store::{SledBackend, SledStore, Start};

/// Result of state operations.
pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// What an [`StateBackend::update_all_with`] closure did with one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update<S> {
    /// Keep this value; the caller vouches that it equals the value passed in, so the key is **not**
    /// recorded as a change (no write for sled).
    Unchanged(S),
    /// Store this value and record the key as changed. (The sled backend skips the write and the
    /// change if the encoded bytes equal the stored ones.)
    Changed(S),
    /// Remove the entry and record the key as removed.
    Removed,
}

/// One changed key: its codec bytes, the key, and its current value (`None`: removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change<K, S> {
    /// The key encoded with [`spate_types::codec`]; the sort key of [`Changes`].
    pub key_bytes: Vec<u8>,
    /// The key.
    pub key: K,
    /// Current value, or `None` if the key was removed.
    pub value: Option<S>,
}

/// Every key put or removed since the last [`StateBackend::take_changes`] /
/// [`StateBackend::clear_changes`], **sorted by encoded key bytes** (strictly ascending, each key
/// once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes<K, S> {
    /// The changes in ascending `key_bytes` order.
    pub entries: Vec<Change<K, S>>,
}

impl<K, S> Default for Changes<K, S> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<K, S> Changes<K, S> {
    /// Number of changed keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of removed keys among the changes.
    pub fn removed(&self) -> usize {
        self.entries.iter().filter(|c| c.value.is_none()).count()
    }
}

/// One partition of one operator's keyed state.
///
/// Keys and values are typed; where bytes are needed (sled storage, change order, checkpoint
/// objects) they are encoded with [`spate_types::codec`]. A backend is used by one task at a time
/// (`&mut self` for writes) and can move between threads (`Send`).
///
/// # Durability
/// None. A backend is working state; durability comes from data checkpoints ([`export_snapshot`],
/// [`export_delta`] written through the checkpoint store) and restore ([`import`]).
///
/// # Errors
/// Every fallible method returns [`StateError`]: [`StateError::Encode`] when serde refuses a key or
/// value, [`StateError::Corrupt`] when stored bytes do not decode, [`StateError::Sled`] for sled I/O.
/// After an error from a method that visits many entries (`update_all*`, `load`) the contents are
/// unspecified: clear the backend and reload it from the checkpoint. Methods never panic on bad bytes.
/// If a closure passed to `update_all*` or `for_each` panics, the contents are likewise unspecified.
pub trait StateBackend<K, S>: Send {
    /// A clone of the value stored for `key`, if any.
    fn get(&self, key: &K) -> Result<Option<S>>;

    /// Stores `value` for `key` (insert or replace) and records the key as changed (see
    /// [`StateBackend::take_changes`] for a value equal to the checkpointed one).
    fn put(&mut self, key: K, value: S) -> Result<()>;

    /// Removes `key`; returns whether it was present. A removed key is recorded as a change (with
    /// value `None`); removing an absent key changes nothing and records nothing.
    fn remove(&mut self, key: &K) -> Result<bool>;

    /// Number of entries (O(1)).
    fn len(&self) -> u64;

    /// True if there are no entries.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` for every entry, in an unspecified order (the sled backend: ascending key bytes).
    fn for_each(&self, f: &mut dyn FnMut(&K, &S)) -> Result<()>;

    /// Calls `f` for every entry with the key and value **encoded** ([`spate_types::codec`]), in an
    /// unspecified order. Used by [`export_snapshot`]; the sled backend passes its stored bytes after
    /// checking that they decode.
    fn for_each_encoded(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>
    where
        K: Serialize,
        S: Serialize,
    {
        let mut err = None;
        let mut kb = Vec::new();
        let mut vb = Vec::new();
        self.for_each(&mut |k, s| {
            if err.is_some() {
                return;
            }
            kb.clear();
            vb.clear();
            let r = spate_types::codec::encode_into(k, &mut kb)
                .map_err(|source| StateError::Encode {
                    what: Item::Key,
                    source,
                })
                .and_then(|()| {
                    spate_types::codec::encode_into(s, &mut vb).map_err(|source| {
                        StateError::Encode {
                            what: Item::Value,
                            source,
                        }
                    })
                });
            match r {
                Ok(()) => f(&kb, &vb),
                Err(e) => err = Some(e),
            }
        })?;
        err.map_or(Ok(()), Err)
    }

    /// Visits every entry once, moving its value into `f`: `Some(v)` stores `v` and records the key
    /// as changed, `None` removes the entry (recorded as removed). This is what
    /// `update_state_by_key` needs (every key sees every batch). The memory backend works in place
    /// without cloning.
    ///
    /// A `Some` with an unchanged value costs nothing in the next delta (see
    /// [`StateBackend::take_changes`]); [`StateBackend::update_all_with`] with [`Update::Unchanged`]
    /// also saves the bookkeeping when the caller knows.
    fn update_all(&mut self, f: &mut dyn FnMut(&K, S) -> Option<S>) -> Result<()> {
        self.update_all_with(&mut |k, s| match f(k, s) {
            Some(v) => Update::Changed(v),
            None => Update::Removed,
        })
    }

    /// As [`StateBackend::update_all`], with the closure saying whether the value changed.
    fn update_all_with(&mut self, f: &mut dyn FnMut(&K, S) -> Update<S>) -> Result<()>;

    /// Number of keys currently recorded as touched: an upper bound of what the next `take_changes`
    /// returns, for choosing between a delta and a snapshot.
    fn pending_changes(&self) -> u64;

    /// Every key put or removed since the last `take_changes` / `clear_changes`, each with its
    /// current value or `None`, sorted by encoded key bytes; then forgets them. On error nothing is
    /// forgotten.
    ///
    /// A key whose encoded value is the same as at the last `take_changes` / `clear_changes` /
    /// `load` may be left out (both backends detect it: sled compares stored bytes, the memory
    /// backend fingerprints — exact bytes up to 16 bytes, else two 64-bit SipHash-1-3 with random
    /// keys). A removal of a key that did not exist then may be included. Either way, applying the
    /// result as a delta to the previous checkpoint's state yields exactly the current state.
    ///
    /// If the object written from the result is lost (the checkpoint failed), the next checkpoint of
    /// this partition must be a snapshot.
    fn take_changes(&mut self) -> Result<Changes<K, S>>;

    /// Forgets the recorded changes: call it once a snapshot of the current contents is written
    /// (it covers them). The memory backend records the fingerprints of the values the snapshot
    /// covers here (one encode per changed entry).
    fn clear_changes(&mut self);

    /// Drops every entry and every recorded change.
    fn clear(&mut self) -> Result<()>;

    /// Bulk insert for restore: stores each entry (replacing an existing one) **without** recording
    /// it as a change (and forgets any recorded change of those keys: they now equal the checkpoint).
    fn load(&mut self, entries: Vec<(K, S)>) -> Result<()>;

    /// As [`StateBackend::load`], with keys and values given as [`spate_types::codec`] bytes (what a
    /// checkpoint restores, see [`import`]). Every key and value is decoded first; one that does not
    /// decode is [`StateError::Corrupt`] naming `location`, and nothing of this call is loaded.
    /// Backends keep the given bytes where that saves work: sled stores them as they are, the memory
    /// backend fingerprints them for change detection.
    fn load_encoded(&mut self, location: &str, entries: &[(&[u8], &[u8])]) -> Result<()>
    where
        K: DeserializeOwned,
        S: DeserializeOwned,
    {
        let mut typed = Vec::with_capacity(entries.len());
        for (kb, vb) in entries {
            typed.push(decode_entry(location, kb, vb)?);
        }
        self.load(typed)
    }
}

/// Decodes one encoded entry, naming `location` on failure.
pub(crate) fn decode_entry<K: DeserializeOwned, S: DeserializeOwned>(
    location: &str,
    kb: &[u8],
    vb: &[u8],
) -> Result<(K, S)> {
    let corrupt = |what, source| StateError::Corrupt {
        location: location.to_string(),
        what,
        key_prefix: error::hex_prefix(kb),
        source,
    };
    let k = spate_types::codec::decode(kb).map_err(|e| corrupt(Item::Key, e))?;
    let v = spate_types::codec::decode(vb).map_err(|e| corrupt(Item::Value, e))?;
    Ok((k, v))
}

/// A boxed backend (`Box<dyn StateBackend<K, S>>`, how the engine holds either implementation) is a
/// backend: every method forwards.
impl<K, S, B: StateBackend<K, S> + ?Sized> StateBackend<K, S> for Box<B> {
    fn get(&self, key: &K) -> Result<Option<S>> {
        (**self).get(key)
    }
    fn put(&mut self, key: K, value: S) -> Result<()> {
        (**self).put(key, value)
    }
    fn remove(&mut self, key: &K) -> Result<bool> {
        (**self).remove(key)
    }
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn for_each(&self, f: &mut dyn FnMut(&K, &S)) -> Result<()> {
        (**self).for_each(f)
    }
    fn for_each_encoded(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>
    where
        K: Serialize,
        S: Serialize,
    {
        (**self).for_each_encoded(f)
    }
    fn update_all(&mut self, f: &mut dyn FnMut(&K, S) -> Option<S>) -> Result<()> {
        (**self).update_all(f)
    }
    fn update_all_with(&mut self, f: &mut dyn FnMut(&K, S) -> Update<S>) -> Result<()> {
        (**self).update_all_with(f)
    }
    fn pending_changes(&self) -> u64 {
        (**self).pending_changes()
    }
    fn take_changes(&mut self) -> Result<Changes<K, S>> {
        (**self).take_changes()
    }
    fn clear_changes(&mut self) {
        (**self).clear_changes()
    }
    fn clear(&mut self) -> Result<()> {
        (**self).clear()
    }
    fn load(&mut self, entries: Vec<(K, S)>) -> Result<()> {
        (**self).load(entries)
    }
    fn load_encoded(&mut self, location: &str, entries: &[(&[u8], &[u8])]) -> Result<()>
    where
        K: DeserializeOwned,
        S: DeserializeOwned,
    {
        (**self).load_encoded(location, entries)
    }
}

/// Bounds a key type needs for every backend.
pub trait StateKey: std::hash::Hash + Eq + Clone + Serialize + DeserializeOwned + Send {}
impl<T: std::hash::Hash + Eq + Clone + Serialize + DeserializeOwned + Send> StateKey for T {}

/// Bounds a value type needs for every backend.
pub trait StateValue: Clone + Serialize + DeserializeOwned + Send {}
impl<T: Clone + Serialize + DeserializeOwned + Send> StateValue for T {}

pub(crate) fn encode_key<K: Serialize>(k: &K) -> Result<Vec<u8>> {
    spate_types::codec::encode(k).map_err(|source| StateError::Encode {
        what: Item::Key,
        source,
    })
}

pub(crate) fn encode_value<S: Serialize>(s: &S) -> Result<Vec<u8>> {
    spate_types::codec::encode(s).map_err(|source| StateError::Encode {
        what: Item::Value,
        source,
    })
}
