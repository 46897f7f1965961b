//! Both backends against the conformance suite and the model, plus what only one backend has:
//! garbage bytes in sled, start-empty / delete-the-directory, in-place updates in memory.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::{Deserialize, Serialize};
use spate_state::conformance::{self, Op, K, S};
use spate_state::{
    export_snapshot, Item, MemoryBackend, SledBackend, SledStore, Start, StateBackend, StateError,
};
use spate_types::{BatchTime, OperatorId, PartitionId};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Partition 0 of operator 1 in `store`, opened with `start`.
fn first_partition<V>(store: &SledStore, start: Start) -> SledBackend<K, V>
where
    V: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static,
{
    store.backend(OperatorId(1), PartitionId(0), start).unwrap()
}

/// Fresh sled backends, one new partition each, in one store.
fn sled_factory(store: &SledStore) -> impl FnMut() -> SledBackend<K, S> + '_ {
    let mut next = 0u32;
    move || {
        next += 1;
        store
            .backend(OperatorId(1), PartitionId(next), Start::Empty)
            .unwrap()
    }
}

#[test]
fn memory_backend_conforms() {
    conformance::run_all(MemoryBackend::<K, S>::new);
}

#[test]
fn boxed_dyn_backends_conform() {
    conformance::run_all(|| Box::new(MemoryBackend::<K, S>::new()) as Box<dyn StateBackend<K, S>>);
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut fresh = sled_factory(&store);
    conformance::run_all(|| Box::new(fresh()) as Box<dyn StateBackend<K, S>>);
}

#[test]
fn sled_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("sled")).unwrap();
    conformance::run_all(sled_factory(&store));
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0u8..6;
    // Small domain (equal values recur), or long enough for the hashed fingerprint path.
    let v = prop_oneof![
        3 => proptest::collection::vec(0u8..2, 0..2),
        1 => proptest::collection::vec(0u8..2, 15..19),
    ];
    prop_oneof![
        6 => (k.clone(), v.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        3 => k.clone().prop_map(Op::Remove),
        2 => k.clone().prop_map(Op::Rewrite),
        2 => k.clone().prop_map(Op::Get),
        2 => any::<u8>().prop_map(Op::UpdateAll),
        4 => Just(Op::Checkpoint),
        2 => Just(Op::Snapshot),
        1 => Just(Op::ClearChanges),
        1 => Just(Op::Clear),
        1 => proptest::collection::vec((k, v), 0..4).prop_map(Op::Load),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 0..60)
}

#[test]
fn memory_backend_matches_the_model() {
    let mut runner = TestRunner::new(Config::with_cases(1500));
    runner
        .run(&ops(), |ops| {
            conformance::run_model(MemoryBackend::new(), &ops, MemoryBackend::new);
            Ok(())
        })
        .unwrap();
}

#[test]
fn sled_backend_matches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path().join("sled")).unwrap();
    let mut runner = TestRunner::new(Config::with_cases(200));
    runner
        .run(&ops(), |ops| {
            let b = store
                .backend(OperatorId(2), PartitionId(0), Start::Empty)
                .unwrap();
            conformance::run_model(b, &ops, || {
                store
                    .backend(OperatorId(2), PartitionId(1), Start::Empty)
                    .unwrap()
            });
            Ok(())
        })
        .unwrap();
}

#[test]
fn sled_garbage_value_is_a_typed_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut b: SledBackend<K, S> = first_partition(&store, Start::Empty);
    b.put("good".into(), vec![1, 2]).unwrap();
    b.put("bad".into(), vec![3]).unwrap();
    let kb = spate_types::codec::encode("bad").unwrap();
    // A Vec<u8> claiming 2^62 bytes, then nothing.
    b.tree()
        .insert(&kb, vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0x40])
        .unwrap();
    let is_corrupt_value = |e: StateError| {
        matches!(
            e,
            StateError::Corrupt {
                what: Item::Value,
                ..
            }
        )
    };
    assert!(is_corrupt_value(b.get(&"bad".into()).unwrap_err()));
    assert_eq!(b.get(&"good".into()).unwrap(), Some(vec![1, 2]));
    assert!(is_corrupt_value(b.for_each(&mut |_, _| {}).unwrap_err()));
    assert!(is_corrupt_value(
        export_snapshot(&b, OperatorId(1), PartitionId(0), BatchTime(1)).unwrap_err()
    ));
    assert!(is_corrupt_value(b.take_changes().unwrap_err()));
    assert_eq!(b.pending_changes(), 2, "a failed take forgets nothing");
    assert!(is_corrupt_value(
        b.update_all(&mut |_, v| Some(v)).unwrap_err()
    ));
    // Trailing bytes after a valid value are corruption too.
    b.tree().insert(&kb, vec![1, 3, 0]).unwrap();
    assert!(is_corrupt_value(b.get(&"bad".into()).unwrap_err()));
    // A key that is not a String.
    b.put("bad".into(), vec![3]).unwrap();
    b.tree().insert([0xff, 0xfe], vec![0]).unwrap();
    let e = b.for_each(&mut |_, _| {}).unwrap_err();
    assert!(
        matches!(
            e,
            StateError::Corrupt {
                what: Item::Key,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("fffe"), "{e}");
    // The error message names the tree.
    assert!(
        e.to_string().contains("state/op-0000000001/p-0000000000"),
        "{e}"
    );
    // Clearing recovers.
    b.clear().unwrap();
    b.put("x".into(), vec![1]).unwrap();
    assert_eq!(b.len(), 1);
    let mut n = 0;
    b.for_each(&mut |_, _| n += 1).unwrap();
    assert_eq!(n, 1);
}

#[test]
fn sled_start_empty_drops_contents_and_keep_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let (op, p0, p1) = (OperatorId(3), PartitionId(0), PartitionId(1));
    let mut a: SledBackend<K, u64> = store.backend(op, p0, Start::Empty).unwrap();
    let mut other: SledBackend<K, u64> = store.backend(op, p1, Start::Empty).unwrap();
    for i in 0..100u64 {
        a.put(format!("k{i}"), i).unwrap();
    }
    other.put("only-in-p1".into(), 1).unwrap();
    drop(a);
    let kept: SledBackend<K, u64> = store.backend(op, p0, Start::Keep).unwrap();
    assert_eq!(kept.len(), 100);
    assert_eq!(kept.get(&"k7".into()).unwrap(), Some(7));
    assert_eq!(
        kept.get(&"only-in-p1".into()).unwrap(),
        None,
        "partitions are isolated"
    );
    assert_eq!(
        kept.pending_changes(),
        0,
        "a reopened backend has no changes"
    );
    drop(kept);
    let empty: SledBackend<K, u64> = store.backend(op, p0, Start::Empty).unwrap();
    assert_eq!(empty.len(), 0);
    assert_eq!(empty.get(&"k7".into()).unwrap(), None);
    assert_eq!(other.len(), 1);
    assert!(store.drop_backend(op, p1).unwrap());
}

#[test]
fn deleting_the_sled_directory_just_works() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    {
        let store = SledStore::open(&dir).unwrap();
        let mut b: SledBackend<K, u64> = first_partition(&store, Start::Empty);
        b.put("a".into(), 1).unwrap();
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let store = SledStore::open(&dir).unwrap();
    let mut b: SledBackend<K, u64> = first_partition(&store, Start::Keep);
    assert_eq!(b.len(), 0);
    b.put("b".into(), 2).unwrap();
    assert_eq!(b.get(&"b".into()).unwrap(), Some(2));
    drop(b);
    drop(store);

    // A directory full of junk: open_fresh replaces it.
    std::fs::write(dir.join("conf"), b"not a sled config").unwrap();
    std::fs::write(dir.join("db"), vec![0xa5u8; 4096]).unwrap();
    std::fs::create_dir_all(dir.join("snap.junk")).unwrap();
    let store = SledStore::open_fresh(&dir).unwrap();
    let mut b: SledBackend<K, u64> = first_partition(&store, Start::Keep);
    assert_eq!(b.len(), 0);
    b.put("c".into(), 3).unwrap();
    assert_eq!(b.get(&"c".into()).unwrap(), Some(3));
    assert!(!dir.join("snap.junk").exists());
    // open_fresh of a missing directory creates it.
    let store2 = SledStore::open_fresh(parent.path().join("new")).unwrap();
    assert!(store2.dir().exists());
}

static CLONES: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counted(u64);

impl Clone for Counted {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::SeqCst);
        Counted(self.0)
    }
}

#[derive(Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct CountedKey(u64);

impl Clone for CountedKey {
    fn clone(&self) -> Self {
        CLONES.fetch_add(1, Ordering::SeqCst);
        CountedKey(self.0)
    }
}

#[test]
fn memory_update_all_works_in_place_without_clones() {
    let mut b = MemoryBackend::<CountedKey, Counted>::new();
    let n = 200_000u64;
    for i in 0..n {
        b.put(CountedKey(i), Counted(i)).unwrap();
    }
    b.clear_changes();
    let before = CLONES.load(Ordering::SeqCst);
    let start = std::time::Instant::now();
    for _ in 0..5 {
        b.update_all(&mut |_, mut v| {
            v.0 += 1;
            Some(v)
        })
        .unwrap();
    }
    let took = start.elapsed();
    assert_eq!(CLONES.load(Ordering::SeqCst), before, "update_all cloned");
    assert_eq!(b.get(&CountedKey(10)).unwrap(), Some(Counted(15)));
    assert_eq!(b.pending_changes(), n);
    eprintln!(
        "memory update_all: {:.1} ns/entry ({n} entries, debug build)",
        took.as_nanos() as f64 / (5 * n) as f64
    );
}

/// Pinned model sequence: a value back to its last delta's value after a snapshot must be in the
/// next delta (a stale fingerprint would drop it).
#[test]
fn model_regression_value_back_to_last_delta_after_snapshot() {
    let ops = [
        Op::Checkpoint,
        Op::Put(1, vec![1]),
        Op::Checkpoint,
        Op::Put(1, vec![0]),
        Op::Snapshot,
        Op::Put(1, vec![1]),
        Op::Checkpoint,
    ];
    conformance::run_model(MemoryBackend::new(), &ops, MemoryBackend::new);
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut fresh = sled_factory(&store);
    let b = fresh();
    conformance::run_model(b, &ops, fresh);
}
