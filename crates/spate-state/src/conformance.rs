//! The conformance suite every [`StateBackend`] runs (feature `testing`), with keys `String` and
//! values `Vec<u8>`.
//!
//! Each function takes a fresh, empty backend and panics (it is a test) on a violation. [`run_all`]
//! runs every one with backends from a factory; [`run_model`] checks an arbitrary op sequence
//! against a `BTreeMap` model, including incremental checkpoints restored through
//! [`crate::format::restore`] (the proptest strategy lives in the crate's tests).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::format::{borrowed, restore, ObjectKind};
use crate::{export_delta, export_snapshot, import, StateBackend, Update};
use spate_types::format::CODEC_BINCODE2;
use spate_types::{BatchTime, OperatorId, PartitionId};
use std::collections::{BTreeMap, BTreeSet};

/// Key type of the suite.
pub type K = String;
/// Value type of the suite.
pub type S = Vec<u8>;

const OP: OperatorId = OperatorId(4);
const PART: PartitionId = PartitionId(2);

fn enc(k: &str) -> Vec<u8> {
    spate_types::codec::encode(k).unwrap()
}

fn contents<B: StateBackend<K, S> + ?Sized>(b: &B) -> BTreeMap<K, S> {
    let mut m = BTreeMap::new();
    b.for_each(&mut |k, v| {
        assert!(
            m.insert(k.clone(), v.clone()).is_none(),
            "for_each repeated {k}"
        );
    })
    .unwrap();
    m
}

/// get / put / remove / len / is_empty.
pub fn get_put_remove_len<B: StateBackend<K, S>>(mut b: B) {
    assert_eq!(b.len(), 0);
    assert!(b.is_empty());
    assert_eq!(b.get(&"a".into()).unwrap(), None);
    b.put("a".into(), vec![1]).unwrap();
    b.put("b".into(), vec![2]).unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b.get(&"a".into()).unwrap(), Some(vec![1]));
    b.put("a".into(), vec![3, 3]).unwrap();
    assert_eq!(b.len(), 2, "replacing is not inserting");
    assert_eq!(b.get(&"a".into()).unwrap(), Some(vec![3, 3]));
    assert!(b.remove(&"a".into()).unwrap());
    assert!(
        !b.remove(&"a".into()).unwrap(),
        "second remove finds nothing"
    );
    assert!(!b.remove(&"zz".into()).unwrap());
    assert_eq!(b.get(&"a".into()).unwrap(), None);
    assert_eq!(b.len(), 1);
    b.put(String::new(), Vec::new()).unwrap();
    assert_eq!(b.get(&String::new()).unwrap(), Some(Vec::new()));
    assert_eq!(b.len(), 2);
}

/// for_each visits every entry exactly once.
pub fn for_each_visits_every_entry<B: StateBackend<K, S>>(mut b: B) {
    let mut want = BTreeMap::new();
    for i in 0..500u32 {
        let k = format!("key-{i}");
        let v = i.to_le_bytes().to_vec();
        b.put(k.clone(), v.clone()).unwrap();
        want.insert(k, v);
    }
    for i in (0..500u32).step_by(7) {
        let k = format!("key-{i}");
        b.remove(&k).unwrap();
        want.remove(&k);
    }
    assert_eq!(contents(&b), want);
    assert_eq!(b.len(), want.len() as u64);
}

/// update_all replaces (`Some`) and removes (`None`) every entry it visits, each once; removals are
/// recorded as removed, replacements as changed.
pub fn update_all_replaces_and_removes<B: StateBackend<K, S>>(mut b: B) {
    for i in 0..300u32 {
        b.put(format!("k{i}"), vec![(i % 256) as u8]).unwrap();
    }
    b.clear_changes();
    let mut visits = BTreeSet::new();
    b.update_all(&mut |k, mut v| {
        assert!(visits.insert(k.clone()), "visited {k} twice");
        let i: u32 = k[1..].parse().unwrap();
        if i.is_multiple_of(3) {
            None
        } else {
            v.push(9);
            Some(v)
        }
    })
    .unwrap();
    assert_eq!(visits.len(), 300);
    assert_eq!(b.len(), 200);
    assert_eq!(b.get(&"k3".into()).unwrap(), None);
    assert_eq!(b.get(&"k4".into()).unwrap(), Some(vec![4, 9]));
    let ch = b.take_changes().unwrap();
    assert_eq!(ch.len(), 300, "every key was replaced or removed");
    assert_eq!(ch.removed(), 100);
    for c in &ch.entries {
        assert_eq!(c.value, b.get(&c.key).unwrap());
    }
    // An update that keeps everything (Unchanged) records nothing.
    b.update_all_with(&mut |_, v| Update::Unchanged(v)).unwrap();
    assert_eq!(b.pending_changes(), 0);
    assert!(b.take_changes().unwrap().is_empty());
    assert_eq!(b.len(), 200);
    // Remove everything.
    b.update_all(&mut |_, _| None).unwrap();
    assert_eq!(b.len(), 0);
    assert!(contents(&b).is_empty());
    assert_eq!(b.take_changes().unwrap().removed(), 200);
}

/// Change tracking: put then remove = removed; remove then put = value; a removal of an absent key
/// is not a change; load is not a change and forgets recorded changes of its keys; take_changes
/// resets; clear_changes forgets.
pub fn change_tracking<B: StateBackend<K, S>>(mut b: B) {
    b.put("x".into(), vec![1]).unwrap();
    b.remove(&"x".into()).unwrap();
    b.remove(&"x".into()).unwrap();
    b.remove(&"never".into()).unwrap();
    b.put("y".into(), vec![1]).unwrap();
    b.remove(&"y".into()).unwrap();
    b.put("y".into(), vec![2]).unwrap();
    b.put("z".into(), vec![3]).unwrap();
    b.put("z".into(), vec![4]).unwrap();
    assert_eq!(b.pending_changes(), 3);
    let ch = b.take_changes().unwrap();
    let got: Vec<_> = ch
        .entries
        .iter()
        .map(|c| (c.key.as_str(), c.value.clone()))
        .collect();
    assert_eq!(
        got,
        vec![("x", None), ("y", Some(vec![2])), ("z", Some(vec![4]))]
    );
    for c in &ch.entries {
        assert_eq!(c.key_bytes, enc(&c.key));
    }
    assert!(b.take_changes().unwrap().is_empty(), "take resets");
    assert_eq!(b.pending_changes(), 0);

    b.load(vec![("l1".into(), vec![1]), ("l2".into(), vec![2])])
        .unwrap();
    assert_eq!(b.len(), 4);
    assert!(b.take_changes().unwrap().is_empty(), "load is not a change");
    b.put("l1".into(), vec![5]).unwrap();
    b.remove(&"l2".into()).unwrap();
    b.load(vec![("l1".into(), vec![6]), ("l2".into(), vec![7])])
        .unwrap();
    assert_eq!(b.len(), 4);
    assert_eq!(b.get(&"l1".into()).unwrap(), Some(vec![6]));
    assert!(
        b.take_changes().unwrap().is_empty(),
        "load forgets changes of loaded keys"
    );
    // A loaded entry equals the checkpoint: rewriting it with an equal value is not a change (as
    // `update_state_by_key` does every batch), a different value is.
    b.update_all(&mut |_k, v| Some(v)).unwrap();
    b.put("l2".into(), vec![8]).unwrap();
    let ch = b.take_changes().unwrap();
    let keys: Vec<&str> = ch.entries.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["l2"],
        "only the entry rewritten with a new value"
    );

    b.put("a".into(), vec![1]).unwrap();
    b.remove(&"z".into()).unwrap();
    b.clear_changes();
    assert_eq!(b.pending_changes(), 0);
    assert!(b.take_changes().unwrap().is_empty());

    b.put("a".into(), vec![2]).unwrap();
    b.clear().unwrap();
    assert_eq!(b.len(), 0);
    assert!(contents(&b).is_empty());
    assert_eq!(b.pending_changes(), 0, "clear drops the change set");
    assert!(b.take_changes().unwrap().is_empty());
    b.put("after".into(), vec![1]).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.take_changes().unwrap().len(), 1);
}

/// Change order and snapshot bytes do not depend on insertion order: changes are sorted by encoded
/// key bytes (bincode strings sort by length first, so this differs from `String` order).
pub fn deterministic_order<B: StateBackend<K, S>>(mut b1: B, mut b2: B) {
    let keys: Vec<String> = (0..200).map(|i| format!("w{}", i * 37 % 1000)).collect();
    for k in &keys {
        b1.put(k.clone(), k.as_bytes().to_vec()).unwrap();
    }
    for k in keys.iter().rev() {
        b2.put(k.clone(), k.as_bytes().to_vec()).unwrap();
    }
    b1.remove(&"w37".into()).unwrap();
    b2.remove(&"w37".into()).unwrap();
    let t = BatchTime(10_000);
    let s1 = export_snapshot(&b1, OP, PART, t).unwrap();
    let s2 = export_snapshot(&b2, OP, PART, t).unwrap();
    assert_eq!(s1, s2, "snapshot bytes depend only on contents");
    let c1 = b1.take_changes().unwrap();
    let c2 = b2.take_changes().unwrap();
    assert_eq!(c1, c2);
    assert!(c1
        .entries
        .windows(2)
        .all(|w| w[0].key_bytes < w[1].key_bytes));
    assert_eq!(c1.len(), 200);
    let d1 = export_delta(&c1, OP, PART, BatchTime(20_000), t).unwrap();
    let d2 = export_delta(&c2, OP, PART, BatchTime(20_000), t).unwrap();
    assert_eq!(d1, d2);
}

/// Values of several MiB survive put/get, update_all and a snapshot → restore → import cycle.
pub fn large_values<B: StateBackend<K, S>>(mut b: B, mut restored: B) {
    let big: Vec<u8> = (0..(6usize << 20)).map(|i| (i % 251) as u8).collect();
    b.put("big".into(), big.clone()).unwrap();
    b.put("small".into(), vec![1]).unwrap();
    assert_eq!(b.get(&"big".into()).unwrap().as_deref(), Some(&big[..]));
    b.update_all(&mut |k, mut v| {
        if k == "big" {
            v[0] = 255;
        }
        Some(v)
    })
    .unwrap();
    let snap = export_snapshot(&b, OP, PART, BatchTime(1)).unwrap();
    assert!(snap.len() > big.len());
    let (h, entries) = restore(OP, PART, [&snap[..]]).unwrap();
    import(&mut restored, h.codec, "test", &borrowed(&entries)).unwrap();
    let got = restored.get(&"big".into()).unwrap().unwrap();
    assert_eq!(got.len(), big.len());
    assert_eq!(got[0], 255);
    assert_eq!(&got[1..], &big[1..]);
    assert_eq!(restored.len(), 2);
}

/// A snapshot followed by deltas restores into an empty backend exactly; the restored backend has
/// no changes.
pub fn checkpoint_round_trip<B: StateBackend<K, S>>(mut b: B, mut restored: B) {
    for i in 0..1000u32 {
        b.put(format!("k{i}"), vec![(i % 7) as u8]).unwrap();
    }
    let mut objects = vec![export_snapshot(&b, OP, PART, BatchTime(1000)).unwrap()];
    b.clear_changes();
    let mut prev = 1000;
    for round in 1..=5u32 {
        b.update_all_with(&mut |k, mut v| {
            let Some(i) = k.strip_prefix('k').and_then(|n| n.parse::<u32>().ok()) else {
                return Update::Unchanged(v);
            };
            if i % 50 == round {
                Update::Removed
            } else if i % 10 == round {
                v.push(round as u8);
                Update::Changed(v)
            } else {
                Update::Unchanged(v)
            }
        })
        .unwrap();
        b.put(format!("new{round}"), vec![round as u8]).unwrap();
        let t = prev + 1000;
        let ch = b.take_changes().unwrap();
        assert!(ch.len() < 200, "a delta carries only changed keys");
        objects.push(export_delta(&ch, OP, PART, BatchTime(t), BatchTime(prev)).unwrap());
        prev = t;
    }
    let (h, entries) = restore(OP, PART, objects.iter().map(Vec::as_slice)).unwrap();
    assert_eq!(h.time, BatchTime(prev));
    assert!(matches!(h.kind, ObjectKind::Delta { .. }));
    import(&mut restored, h.codec, "test", &borrowed(&entries)).unwrap();
    assert_eq!(contents(&restored), contents(&b));
    assert_eq!(restored.len(), b.len());
    assert_eq!(restored.pending_changes(), 0);
    assert!(restored.take_changes().unwrap().is_empty());
}

/// Importing bytes of another type, or another codec, is a typed error.
pub fn import_rejects_foreign_bytes<B: StateBackend<K, S>>(mut b: B) {
    let entries = vec![(enc("k"), vec![0xff, 0xff, 0xff, 0xff, 0xff])];
    assert!(matches!(
        import(&mut b, CODEC_BINCODE2, "test", &borrowed(&entries)),
        Err(crate::StateError::Corrupt { .. })
    ));
    assert!(matches!(
        import(&mut b, 0, "test", &borrowed(&entries)),
        Err(crate::StateError::Format(_))
    ));
    // A u64 value is not a `Vec<u8>` in this codec when it claims too many bytes.
    let entries = vec![(
        vec![0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        vec![0],
    )];
    let r = import(&mut b, CODEC_BINCODE2, "test", &borrowed(&entries));
    assert!(matches!(r, Err(crate::StateError::Corrupt { .. })), "{r:?}");
}

/// One step of [`run_model`]. Keys are `k<n>` for `n` in `0..=255` (varying lengths, so encoded
/// order differs from string order).
#[derive(Clone, Debug)]
pub enum Op {
    /// `put(k<n>, value)`.
    Put(u8, Vec<u8>),
    /// `remove(k<n>)`.
    Remove(u8),
    /// `get(k<n>)` compared with the model.
    Get(u8),
    /// `update_all_with`: by `(key len + value len) % 3`: 0 remove, 1 append `salt` (changed), 2
    /// the same value, as `Unchanged` if `salt` is even, else as `Changed`.
    UpdateAll(u8),
    /// `put(k<n>, its current value)` if present.
    Rewrite(u8),
    /// `take_changes` compared with the model's change set; the result is written as a delta (or a
    /// snapshot when the chain needs one) and the chain restored and compared.
    Checkpoint,
    /// A full snapshot checkpoint, then `clear_changes`.
    Snapshot,
    /// `clear_changes` (the next checkpoint must be a snapshot).
    ClearChanges,
    /// `clear` (the next checkpoint must be a snapshot).
    Clear,
    /// `load` of entries (not changes; the next checkpoint must be a snapshot).
    Load(Vec<(u8, Vec<u8>)>),
}

fn key(n: u8) -> String {
    format!("k{n}")
}

/// Runs `ops` against `b` and a `BTreeMap` model, checking get/len/for_each after every op and the
/// exact change set at every checkpoint; every checkpoint chain is restored into `fresh()` and
/// compared with the model.
pub fn run_model<B: StateBackend<K, S>>(mut b: B, ops: &[Op], mut fresh: impl FnMut() -> B) {
    let mut model: BTreeMap<K, S> = BTreeMap::new();
    // Keys put, removed or changed since the last take/clear/load.
    let mut changed: BTreeSet<K> = BTreeSet::new();
    // The state the backend's change tracking is relative to (as of the last take/clear/load).
    let mut base: BTreeMap<K, S> = BTreeMap::new();
    let mut chain: Vec<Vec<u8>> = Vec::new();
    let mut need_snapshot = true;
    let mut time = 0u64;
    for (i, op) in ops.iter().enumerate() {
        match op {
            Op::Put(n, v) => {
                b.put(key(*n), v.clone()).unwrap();
                model.insert(key(*n), v.clone());
                changed.insert(key(*n));
            }
            Op::Remove(n) => {
                let was = b.remove(&key(*n)).unwrap();
                assert_eq!(was, model.remove(&key(*n)).is_some(), "op {i}: {op:?}");
                if was {
                    changed.insert(key(*n));
                }
            }
            Op::Rewrite(n) => {
                if let Some(v) = model.get(&key(*n)) {
                    b.put(key(*n), v.clone()).unwrap();
                    changed.insert(key(*n));
                }
            }
            Op::Get(n) => {
                assert_eq!(
                    b.get(&key(*n)).unwrap().as_ref(),
                    model.get(&key(*n)),
                    "op {i}"
                );
            }
            Op::UpdateAll(salt) => {
                b.update_all_with(&mut |k, mut v| match (k.len() + v.len()) % 3 {
                    0 => Update::Removed,
                    1 => {
                        v.push(*salt);
                        Update::Changed(v)
                    }
                    _ if salt % 2 == 0 => Update::Unchanged(v),
                    _ => Update::Changed(v),
                })
                .unwrap();
                let keys: Vec<K> = model.keys().cloned().collect();
                for k in keys {
                    let v = model.get_mut(&k).unwrap();
                    match (k.len() + v.len()) % 3 {
                        0 => {
                            model.remove(&k);
                            changed.insert(k);
                        }
                        1 => {
                            v.push(*salt);
                            changed.insert(k);
                        }
                        _ if salt % 2 == 0 => {}
                        _ => {
                            changed.insert(k);
                        }
                    }
                }
            }
            Op::Checkpoint | Op::Snapshot => {
                time += 1000;
                let t = BatchTime(time);
                if matches!(op, Op::Snapshot) || need_snapshot {
                    chain = vec![export_snapshot(&b, OP, PART, t).unwrap()];
                    b.clear_changes();
                    need_snapshot = false;
                } else {
                    let pending = b.pending_changes();
                    let ch = b.take_changes().unwrap();
                    check_changes(&ch, &changed, &model, &base, pending, i);
                    let prev = BatchTime(time - 1000);
                    chain.push(export_delta(&ch, OP, PART, t, prev).unwrap());
                }
                changed.clear();
                base = model.clone();
                let (h, entries) = restore(OP, PART, chain.iter().map(Vec::as_slice)).unwrap();
                assert_eq!(h.time, t);
                let mut r = fresh();
                import(&mut r, h.codec, "model", &borrowed(&entries)).unwrap();
                assert_eq!(contents(&r), model, "op {i}: restored chain");
            }
            Op::ClearChanges => {
                b.clear_changes();
                changed.clear();
                base = model.clone();
                need_snapshot = true;
            }
            Op::Clear => {
                b.clear().unwrap();
                model.clear();
                changed.clear();
                base.clear();
                need_snapshot = true;
            }
            Op::Load(entries) => {
                let typed: Vec<(K, S)> =
                    entries.iter().map(|(n, v)| (key(*n), v.clone())).collect();
                b.load(typed.clone()).unwrap();
                for (k, v) in typed {
                    changed.remove(&k);
                    base.insert(k.clone(), v.clone());
                    model.insert(k, v);
                }
                need_snapshot = true;
            }
        }
        assert_eq!(b.len(), model.len() as u64, "op {i}: {op:?}");
    }
    assert_eq!(contents(&b), model);
}

/// The change-set contract of [`StateBackend::take_changes`]: sorted, unique, current values; every
/// key whose value differs from `base` is there; nothing outside `touched` is there.
fn check_changes(
    ch: &crate::Changes<K, S>,
    touched: &BTreeSet<K>,
    model: &BTreeMap<K, S>,
    base: &BTreeMap<K, S>,
    pending: u64,
    i: usize,
) {
    assert!(
        ch.entries
            .windows(2)
            .all(|w| w[0].key_bytes < w[1].key_bytes),
        "op {i}: changes not strictly sorted by key bytes"
    );
    let mut emitted = BTreeSet::new();
    for c in &ch.entries {
        assert_eq!(c.key_bytes, enc(&c.key), "op {i}");
        assert_eq!(
            c.value.as_ref(),
            model.get(&c.key),
            "op {i}: value of {}",
            c.key
        );
        assert!(
            touched.contains(&c.key),
            "op {i}: untouched key {} reported",
            c.key
        );
        emitted.insert(c.key.clone());
    }
    for k in touched {
        if model.get(k) != base.get(k) {
            assert!(emitted.contains(k), "op {i}: changed key {k} missing");
        }
    }
    assert!(
        (ch.len() as u64) <= pending && pending <= touched.len() as u64,
        "op {i}: pending_changes {pending} vs {} emitted, {} touched",
        ch.len(),
        touched.len()
    );
}

/// Rewriting a key with an equal value (put, update_all, after a delta, a snapshot or a restore)
/// is not a change; a different value is.
pub fn equal_rewrites_are_not_changes<B: StateBackend<K, S>>(mut b: B, mut restored: B) {
    let big = vec![7u8; 100];
    b.put("a".into(), vec![1]).unwrap();
    b.put("big".into(), big.clone()).unwrap();
    assert_eq!(b.take_changes().unwrap().len(), 2);
    b.update_all(&mut |_, v| Some(v)).unwrap();
    b.put("a".into(), vec![1]).unwrap();
    b.put("big".into(), big.clone()).unwrap();
    assert!(b.take_changes().unwrap().is_empty(), "after a delta");

    b.put("c".into(), vec![3]).unwrap();
    let snap = export_snapshot(&b, OP, PART, BatchTime(1000)).unwrap();
    b.clear_changes();
    b.update_all(&mut |_, v| Some(v)).unwrap();
    assert!(b.take_changes().unwrap().is_empty(), "after a snapshot");

    let mut big2 = big.clone();
    big2[99] = 8;
    b.put("big".into(), big2.clone()).unwrap();
    let ch = b.take_changes().unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch.entries[0].value.as_deref(), Some(&big2[..]));

    let (h, entries) = restore(OP, PART, [&snap[..]]).unwrap();
    import(&mut restored, h.codec, "test", &borrowed(&entries)).unwrap();
    restored.update_all(&mut |_, v| Some(v)).unwrap();
    assert!(
        restored.take_changes().unwrap().is_empty(),
        "after a restore"
    );
    restored
        .update_all(&mut |k, mut v| {
            if k == "a" {
                v.push(0);
            }
            Some(v)
        })
        .unwrap();
    let ch = restored.take_changes().unwrap();
    assert_eq!(ch.len(), 1);
    assert_eq!(ch.entries[0].key, "a");
}

/// A value that returns to what an older checkpoint held, but differs from the latest one, is a
/// change — after a delta and after a snapshot, for short and long values.
pub fn returning_to_an_older_value_is_a_change<B: StateBackend<K, S>>(mut b: B, mut restored: B) {
    for v1 in [vec![1u8], vec![1u8; 40]] {
        let mut v2 = v1.clone();
        v2[0] = 2;
        b.clear().unwrap();
        b.put("k".into(), v1.clone()).unwrap();
        let mut chain = vec![export_snapshot(&b, OP, PART, BatchTime(1000)).unwrap()];
        b.clear_changes();
        b.put("k".into(), v2.clone()).unwrap();
        let ch = b.take_changes().unwrap();
        assert_eq!(ch.len(), 1);
        chain.push(export_delta(&ch, OP, PART, BatchTime(2000), BatchTime(1000)).unwrap());
        b.put("k".into(), v1.clone()).unwrap();
        let ch = b.take_changes().unwrap();
        assert_eq!(ch.len(), 1, "back to the snapshot's value after a delta");
        chain.push(export_delta(&ch, OP, PART, BatchTime(3000), BatchTime(2000)).unwrap());
        // Snapshot with v2, then back to v1 (the value of the last delta).
        b.put("k".into(), v2.clone()).unwrap();
        let snap = export_snapshot(&b, OP, PART, BatchTime(4000)).unwrap();
        b.clear_changes();
        b.update_all(&mut |_, _| Some(v1.clone())).unwrap();
        let ch = b.take_changes().unwrap();
        assert_eq!(
            ch.len(),
            1,
            "back to the last delta's value after a snapshot"
        );
        let delta = export_delta(&ch, OP, PART, BatchTime(5000), BatchTime(4000)).unwrap();
        let (h, entries) = restore(OP, PART, [&snap[..], &delta[..]]).unwrap();
        restored.clear().unwrap();
        import(&mut restored, h.codec, "test", &borrowed(&entries)).unwrap();
        assert_eq!(restored.get(&"k".into()).unwrap(), Some(v1.clone()));
        let (_, entries) = restore(OP, PART, chain.iter().map(Vec::as_slice)).unwrap();
        assert_eq!(
            entries,
            vec![(enc("k"), spate_types::codec::encode(&v1).unwrap())]
        );
    }
}

/// Runs every conformance function (not [`run_model`]) with backends from `fresh`.
pub fn run_all<B: StateBackend<K, S>>(mut fresh: impl FnMut() -> B) {
    get_put_remove_len(fresh());
    for_each_visits_every_entry(fresh());
    update_all_replaces_and_removes(fresh());
    change_tracking(fresh());
    deterministic_order(fresh(), fresh());
    large_values(fresh(), fresh());
    checkpoint_round_trip(fresh(), fresh());
    equal_rewrites_are_not_changes(fresh(), fresh());
    returning_to_an_older_value_is_a_change(fresh(), fresh());
    import_rejects_foreign_bytes(fresh());
    run_model(
        fresh(),
        &[
            Op::Put(1, vec![1]),
            Op::Put(10, vec![2, 2]),
            Op::Checkpoint,
            Op::Put(100, vec![]),
            Op::Remove(1),
            Op::UpdateAll(7),
            Op::Checkpoint,
            Op::Get(10),
            Op::Load(vec![(5, vec![5])]),
            Op::Checkpoint,
            Op::Remove(5),
            Op::Checkpoint,
        ],
        &mut fresh,
    );
}
