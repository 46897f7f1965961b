//! The in-memory backend: a hash map with a dirty flag and a value fingerprint per entry.

use crate::{
    decode_entry, encode_key, Change, Changes, Item, Result, StateBackend, StateError, StateKey,
    StateValue, Update,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;

/// Fingerprint of an encoded value: the bytes themselves up to 16 bytes (exact), else two
/// independent 64-bit SipHash-1-3 with random keys. `UNKNOWN` never equals a computed one.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fp {
    /// 0..=16: exact length; `HASHED`; `UNKNOWN`.
    tag: u8,
    bytes: [u8; 16],
}

const HASHED: u8 = 0xFE;
const UNKNOWN: Fp = Fp {
    tag: 0xFF,
    bytes: [0; 16],
};

/// One stored value. `value` is `None` only while `update_all_with` has moved it into the closure.
struct Slot<S> {
    value: Option<S>,
    /// Touched since the last take/clear.
    dirty: bool,
    /// Fingerprint of the value as of the last take/clear/load (the value the checkpoint chain
    /// holds), or `UNKNOWN`.
    fp: Fp,
}

/// The in-memory [`StateBackend`]: a hash map (`rustc-hash`) of the typed entries, plus change
/// tracking (a dirty flag per entry, a set of removed keys, and a fingerprint of each value as last
/// checkpointed so that an entry rewritten with an equal value is not a change).
///
/// `update_all*` runs in place: each value is moved into the closure and the result moved back,
/// without cloning keys or values. Bytes are produced only by `take_changes` / `clear_changes`
/// (changed entries) and snapshots.
pub struct MemoryBackend<K, S> {
    map: FxHashMap<K, Slot<S>>,
    /// Keys removed since the last take/clear and not put again.
    removed: FxHashSet<K>,
    /// Number of slots with `dirty` set.
    dirty: u64,
    h1: RandomState,
    h2: RandomState,
    scratch: Vec<u8>,
}

impl<K, S> fmt::Debug for MemoryBackend<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("len", &self.map.len())
            .field("dirty", &self.dirty)
            .field("removed", &self.removed.len())
            .finish()
    }
}

impl<K, S> Default for MemoryBackend<K, S> {
    fn default() -> Self {
        Self {
            map: FxHashMap::default(),
            removed: FxHashSet::default(),
            dirty: 0,
            h1: RandomState::new(),
            h2: RandomState::new(),
            scratch: Vec::new(),
        }
    }
}

fn fingerprint(h1: &RandomState, h2: &RandomState, b: &[u8]) -> Fp {
    let mut bytes = [0u8; 16];
    if b.len() <= 16 {
        bytes[..b.len()].copy_from_slice(b);
        Fp {
            tag: b.len() as u8,
            bytes,
        }
    } else {
        bytes[..8].copy_from_slice(&h1.hash_one(b).to_le_bytes());
        bytes[8..].copy_from_slice(&h2.hash_one(b).to_le_bytes());
        Fp { tag: HASHED, bytes }
    }
}

impl<K: StateKey, S: StateValue> MemoryBackend<K, S> {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn forget_removed(&mut self, key: &K) {
        if !self.removed.is_empty() {
            self.removed.remove(key);
        }
    }

    /// Inserts a loaded entry: not dirty, with fingerprint `fp`.
    fn load_one(&mut self, k: K, v: S, fp: Fp) {
        self.forget_removed(&k);
        let old = self.map.insert(
            k,
            Slot {
                value: Some(v),
                dirty: false,
                fp,
            },
        );
        if old.is_some_and(|s| s.dirty) {
            self.dirty -= 1;
        }
    }
}

impl<K: StateKey, S: StateValue> StateBackend<K, S> for MemoryBackend<K, S> {
    fn get(&self, key: &K) -> Result<Option<S>> {
        Ok(self.map.get(key).and_then(|s| s.value.clone()))
    }

    fn put(&mut self, key: K, value: S) -> Result<()> {
        self.forget_removed(&key);
        match self.map.get_mut(&key) {
            Some(slot) => {
                slot.value = Some(value);
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty += 1;
                }
            }
            None => {
                self.map.insert(
                    key,
                    Slot {
                        value: Some(value),
                        dirty: true,
                        fp: UNKNOWN,
                    },
                );
                self.dirty += 1;
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<bool> {
        match self.map.remove(key) {
            Some(slot) => {
                if slot.dirty {
                    self.dirty -= 1;
                }
                self.removed.insert(key.clone());
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn for_each(&self, f: &mut dyn FnMut(&K, &S)) -> Result<()> {
        for (k, slot) in &self.map {
            if let Some(v) = &slot.value {
                f(k, v);
            }
        }
        Ok(())
    }

    fn update_all_with(&mut self, f: &mut dyn FnMut(&K, S) -> Update<S>) -> Result<()> {
        let removed = &mut self.removed;
        let dirty = &mut self.dirty;
        self.map.retain(|k, slot| {
            let Some(v) = slot.value.take() else {
                return false;
            };
            match f(k, v) {
                Update::Unchanged(v) => {
                    slot.value = Some(v);
                    true
                }
                Update::Changed(v) => {
                    slot.value = Some(v);
                    if !slot.dirty {
                        slot.dirty = true;
                        *dirty += 1;
                    }
                    true
                }
                Update::Removed => {
                    if slot.dirty {
                        *dirty -= 1;
                    }
                    removed.insert(k.clone());
                    false
                }
            }
        });
        Ok(())
    }

    fn pending_changes(&self) -> u64 {
        self.dirty + self.removed.len() as u64
    }

    fn take_changes(&mut self) -> Result<Changes<K, S>> {
        let mut entries = Vec::with_capacity(self.pending_changes() as usize);
        let mut fps = Vec::new();
        let vb = &mut self.scratch;
        if self.dirty > 0 {
            for (k, slot) in &self.map {
                if !slot.dirty {
                    continue;
                }
                let Some(v) = &slot.value else { continue };
                vb.clear();
                spate_types::codec::encode_into(v, vb).map_err(|source| StateError::Encode {
                    what: Item::Value,
                    source,
                })?;
                let fp = fingerprint(&self.h1, &self.h2, vb);
                if fp == slot.fp {
                    continue; // same bytes as in the checkpoint chain
                }
                entries.push(Change {
                    key_bytes: encode_key(k)?,
                    key: k.clone(),
                    value: Some(v.clone()),
                });
                fps.push(fp);
            }
        }
        for k in &self.removed {
            entries.push(Change {
                key_bytes: encode_key(k)?,
                key: k.clone(),
                value: None,
            });
        }
        // Every encode succeeded: record the new fingerprints, then forget the changes.
        for (c, fp) in entries.iter().zip(fps) {
            if let Some(slot) = self.map.get_mut(&c.key) {
                slot.fp = fp;
            }
        }
        if self.dirty > 0 {
            for slot in self.map.values_mut() {
                slot.dirty = false;
            }
        }
        self.dirty = 0;
        self.removed.clear();
        entries.sort_unstable_by(|a, b| a.key_bytes.cmp(&b.key_bytes));
        Ok(Changes { entries })
    }

    fn clear_changes(&mut self) {
        if self.dirty > 0 {
            let vb = &mut self.scratch;
            for slot in self.map.values_mut() {
                if !slot.dirty {
                    continue;
                }
                slot.dirty = false;
                slot.fp = UNKNOWN;
                if let Some(v) = &slot.value {
                    vb.clear();
                    if spate_types::codec::encode_into(v, vb).is_ok() {
                        slot.fp = fingerprint(&self.h1, &self.h2, vb);
                    }
                }
            }
        }
        self.dirty = 0;
        self.removed.clear();
    }

    fn clear(&mut self) -> Result<()> {
        self.map.clear();
        self.removed.clear();
        self.dirty = 0;
        Ok(())
    }

    fn load(&mut self, entries: Vec<(K, S)>) -> Result<()> {
        self.map.reserve(entries.len());
        for (k, v) in entries {
            // Fingerprinted as `load_encoded` does: a loaded entry equals the checkpoint, so
            // rewriting it with an equal value is not a change. (Left `UNKNOWN`, every loaded key
            // that `update_state_by_key` rewrote unchanged went into the next delta: a full copy
            // of an `initial_state` after its snapshot, and twice the bytes to restore.)
            self.scratch.clear();
            let fp = match spate_types::codec::encode_into(&v, &mut self.scratch) {
                Ok(()) => fingerprint(&self.h1, &self.h2, &self.scratch),
                Err(_) => UNKNOWN,
            };
            self.load_one(k, v, fp);
        }
        Ok(())
    }

    fn load_encoded(&mut self, location: &str, entries: &[(&[u8], &[u8])]) -> Result<()> {
        let mut typed = Vec::with_capacity(entries.len());
        for (kb, vb) in entries {
            let (k, v): (K, S) = decode_entry(location, kb, vb)?;
            typed.push((k, v, fingerprint(&self.h1, &self.h2, vb)));
        }
        self.map.reserve(typed.len());
        for (k, v, fp) in typed {
            self.load_one(k, v, fp);
        }
        Ok(())
    }
}
