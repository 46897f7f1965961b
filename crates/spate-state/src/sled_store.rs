//! The sled backend: one `sled::Tree` per (operator, partition) in one `sled::Db`.

use crate::error::hex_prefix;
use crate::{
    encode_key, encode_value, Change, Changes, Item, Result, StateBackend, StateError, Update,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use spate_types::{OperatorId, PartitionId};
use std::collections::BTreeSet;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// How [`SledStore::backend`] treats a tree that already has contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Drop the tree's contents: the normal start, followed by a restore from the checkpoint.
    Empty,
    /// Keep the contents (counted once, O(n)). Only correct if the caller knows they equal the state
    /// it wants (for example a backend reopened within one run); the checkpoint stays authoritative.
    Keep,
}

/// One sled database (a directory) holding the state trees of every stateful operator partition of
/// a job.
///
/// The directory is a **local working copy**, never a system of record: nothing is fsynced for
/// durability (background flushing is off), [`Start::Empty`] drops a tree's contents, and deleting
/// the directory while no store is open (or opening with [`SledStore::open_fresh`]) is always safe —
/// state comes back from the checkpoint.
///
/// sled locks the directory: one `SledStore` per directory per process.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    dir: PathBuf,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

impl SledStore {
    /// Opens (creating if needed) the sled database in `dir`, keeping existing trees.
    ///
    /// # Errors
    /// [`StateError::Sled`] if sled cannot open the directory (I/O, a lock held by another open
    /// store, or a damaged database — then use [`SledStore::open_fresh`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&dir)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|source| StateError::Sled {
                op: "open",
                location: dir.display().to_string(),
                source,
            })?;
        Ok(Self { db, dir })
    }

    /// Deletes `dir` and everything in it (if it exists), then opens an empty database there: the
    /// start of a job that restores every partition from the checkpoint.
    ///
    /// # Errors
    /// [`StateError::Io`] if the directory cannot be removed, [`StateError::Sled`] as
    /// [`SledStore::open`].
    pub fn open_fresh(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    op: "remove directory",
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
        Self::open(dir)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Name of the tree of (`operator`, `partition`): `state/op-<operator:010>/p-<partition:010>`.
    pub fn tree_name(operator: OperatorId, partition: PartitionId) -> String {
        format!("state/op-{:010}/p-{:010}", operator.0, partition.0)
    }

    /// The backend of (`operator`, `partition`), typed `K` → `S`, with no recorded changes.
    ///
    /// Two backends of the same (operator, partition) share one tree; don't.
    ///
    /// # Errors
    /// [`StateError::Sled`] if sled fails to open, clear or count the tree.
    pub fn backend<K, S>(
        &self,
        operator: OperatorId,
        partition: PartitionId,
        start: Start,
    ) -> Result<SledBackend<K, S>> {
        let name = Self::tree_name(operator, partition);
        let tree = self
            .db
            .open_tree(name.as_bytes())
            .map_err(|source| StateError::Sled {
                op: "open_tree",
                location: name.clone(),
                source,
            })?;
        let len = match start {
            Start::Empty => {
                tree.clear().map_err(|source| StateError::Sled {
                    op: "clear",
                    location: name.clone(),
                    source,
                })?;
                0
            }
            Start::Keep => {
                let mut n = 0u64;
                for r in tree.iter().keys() {
                    r.map_err(|source| StateError::Sled {
                        op: "iter",
                        location: name.clone(),
                        source,
                    })?;
                    n += 1;
                }
                n
            }
        };
        Ok(SledBackend {
            tree,
            name,
            len,
            changes: BTreeSet::new(),
            _types: PhantomData,
        })
    }

    /// Drops the tree of (`operator`, `partition`) and its contents; returns whether it existed.
    ///
    /// # Errors
    /// [`StateError::Sled`] on sled failure.
    pub fn drop_backend(&self, operator: OperatorId, partition: PartitionId) -> Result<bool> {
        let name = Self::tree_name(operator, partition);
        self.db
            .drop_tree(name.as_bytes())
            .map_err(|source| StateError::Sled {
                op: "drop_tree",
                location: name,
                source,
            })
    }
}

/// The sled [`StateBackend`]: keys and values stored as [`spate_types::codec`] bytes in one
/// `sled::Tree`, entries in ascending key-byte order; the change set is kept in memory as encoded
/// keys. Obtained from [`SledStore::backend`].
///
/// Every value read is decoded, so a damaged value is [`StateError::Corrupt`], never a panic.
pub struct SledBackend<K, S> {
    tree: sled::Tree,
    name: String,
    len: u64,
    changes: BTreeSet<Vec<u8>>,
    _types: PhantomData<fn() -> (K, S)>,
}

impl<K, S> fmt::Debug for SledBackend<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledBackend")
            .field("tree", &self.name)
            .field("len", &self.len)
            .field("changes", &self.changes.len())
            .finish()
    }
}

impl<K, S> SledBackend<K, S> {
    /// The raw tree, for inspection and tests. Writing through it bypasses change tracking and the
    /// entry count.
    pub fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The tree's name (see [`SledStore::tree_name`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    fn sled_err(&self, op: &'static str) -> impl FnOnce(sled::Error) -> StateError + '_ {
        move |source| StateError::Sled {
            op,
            location: self.name.clone(),
            source,
        }
    }
}

fn sled_err<'a>(name: &'a str, op: &'static str) -> impl FnOnce(sled::Error) -> StateError + 'a {
    move |source| StateError::Sled {
        op,
        location: name.to_string(),
        source,
    }
}

fn decode<T: DeserializeOwned>(name: &str, what: Item, key: &[u8], bytes: &[u8]) -> Result<T> {
    spate_types::codec::decode(bytes).map_err(|source| StateError::Corrupt {
        location: format!("sled tree {name}"),
        what,
        key_prefix: hex_prefix(key),
        source,
    })
}

impl<K, S> StateBackend<K, S> for SledBackend<K, S>
where
    K: Serialize + DeserializeOwned,
    S: Serialize + DeserializeOwned,
{
    fn get(&self, key: &K) -> Result<Option<S>> {
        let kb = encode_key(key)?;
        match self.tree.get(&kb).map_err(self.sled_err("get"))? {
            Some(v) => Ok(Some(decode(&self.name, Item::Value, &kb, &v)?)),
            None => Ok(None),
        }
    }

    fn put(&mut self, key: K, value: S) -> Result<()> {
        let kb = encode_key(&key)?;
        let vb = sled::IVec::from(encode_value(&value)?);
        let vb_copy = vb.clone();
        let old = self
            .tree
            .insert(kb.as_slice(), vb)
            .map_err(sled_err(&self.name, "insert"))?;
        match old {
            None => {
                self.len += 1;
                self.changes.insert(kb);
            }
            // Keys outside the change set hold the checkpointed bytes: same bytes, no change.
            Some(old) if old != vb_copy => {
                self.changes.insert(kb);
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<bool> {
        let kb = encode_key(key)?;
        let old = self
            .tree
            .remove(kb.as_slice())
            .map_err(sled_err(&self.name, "remove"))?;
        if old.is_some() {
            self.len = self.len.saturating_sub(1);
            self.changes.insert(kb);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn for_each(&self, f: &mut dyn FnMut(&K, &S)) -> Result<()> {
        for r in self.tree.iter() {
            let (kb, vb) = r.map_err(self.sled_err("iter"))?;
            let k: K = decode(&self.name, Item::Key, &kb, &kb)?;
            let v: S = decode(&self.name, Item::Value, &kb, &vb)?;
            f(&k, &v);
        }
        Ok(())
    }

    fn for_each_encoded(&self, f: &mut dyn FnMut(&[u8], &[u8])) -> Result<()>
    where
        K: Serialize,
        S: Serialize,
    {
        for r in self.tree.iter() {
            let (kb, vb) = r.map_err(self.sled_err("iter"))?;
            // Check the bytes before they become checkpoint truth.
            decode::<K>(&self.name, Item::Key, &kb, &kb)?;
            decode::<S>(&self.name, Item::Value, &kb, &vb)?;
            f(&kb, &vb);
        }
        Ok(())
    }

    fn update_all_with(&mut self, f: &mut dyn FnMut(&K, S) -> Update<S>) -> Result<()> {
        // sled iterators tolerate concurrent writes; each key is visited once.
        for r in self.tree.iter() {
            let (kb, vb) = r.map_err(sled_err(&self.name, "iter"))?;
            let k: K = decode(&self.name, Item::Key, &kb, &kb)?;
            let v: S = decode(&self.name, Item::Value, &kb, &vb)?;
            match f(&k, v) {
                Update::Unchanged(_) => {}
                Update::Changed(v) => {
                    let nb = encode_value(&v)?;
                    if nb.as_slice() != &*vb {
                        self.tree
                            .insert(&kb, nb)
                            .map_err(sled_err(&self.name, "insert"))?;
                        self.changes.insert(kb.to_vec());
                    }
                }
                Update::Removed => {
                    self.tree
                        .remove(&kb)
                        .map_err(sled_err(&self.name, "remove"))?;
                    self.len = self.len.saturating_sub(1);
                    self.changes.insert(kb.to_vec());
                }
            }
        }
        Ok(())
    }

    fn pending_changes(&self) -> u64 {
        self.changes.len() as u64
    }

    fn take_changes(&mut self) -> Result<Changes<K, S>> {
        let mut entries = Vec::with_capacity(self.changes.len());
        for kb in &self.changes {
            let key: K = decode(&self.name, Item::Key, kb, kb)?;
            let value = match self.tree.get(kb).map_err(self.sled_err("get"))? {
                Some(vb) => Some(decode(&self.name, Item::Value, kb, &vb)?),
                None => None,
            };
            entries.push(Change {
                key_bytes: kb.clone(),
                key,
                value,
            });
        }
        self.changes.clear();
        Ok(Changes { entries })
    }

    fn clear_changes(&mut self) {
        self.changes.clear();
    }

    fn clear(&mut self) -> Result<()> {
        self.tree.clear().map_err(self.sled_err("clear"))?;
        self.len = 0;
        self.changes.clear();
        Ok(())
    }

    fn load(&mut self, entries: Vec<(K, S)>) -> Result<()> {
        let mut encoded = Vec::with_capacity(entries.len());
        for (k, v) in &entries {
            encoded.push((encode_key(k)?, encode_value(v)?));
        }
        self.load_bytes(encoded)
    }

    fn load_encoded(&mut self, location: &str, entries: &[(&[u8], &[u8])]) -> Result<()> {
        for (kb, vb) in entries {
            crate::decode_entry::<K, S>(location, kb, vb)?;
        }
        self.load_bytes(
            entries
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        )
    }
}

impl<K, S> SledBackend<K, S> {
    /// Stores encoded entries in one sled batch, without recording changes.
    fn load_bytes(&mut self, entries: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        // Count new keys before applying (a key may repeat within `entries`).
        let mut added = 0u64;
        let mut seen = BTreeSet::new();
        for (kb, _) in &entries {
            if seen.insert(kb.as_slice())
                && !self
                    .tree
                    .contains_key(kb)
                    .map_err(sled_err(&self.name, "contains_key"))?
            {
                added += 1;
            }
        }
        drop(seen);
        let mut batch = sled::Batch::default();
        let mut keys = Vec::new();
        let track = !self.changes.is_empty();
        for (kb, vb) in entries {
            if track {
                keys.push(kb.clone());
            }
            batch.insert(kb, vb);
        }
        self.tree
            .apply_batch(batch)
            .map_err(sled_err(&self.name, "apply_batch"))?;
        self.len += added;
        for kb in &keys {
            self.changes.remove(kb);
        }
        Ok(())
    }
}
