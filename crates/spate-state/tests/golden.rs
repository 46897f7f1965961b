//! Golden state objects (docs/format/state.md): a failing test here means the bytes a writer produces
//! changed, which needs a format version bump. Regenerate only deliberately with `SPATE_BLESS=1`.

use spate_state::format::{self, ObjectKind, HEADER_LEN, STATE_MAGIC};
use spate_state::{export_delta, export_snapshot, import, MemoryBackend, StateBackend};
use spate_types::{BatchTime, OperatorId, PartitionId};
use std::path::PathBuf;

const OP: OperatorId = OperatorId(3);
const PART: PartitionId = PartitionId(1);

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The golden contents: word counts; then "pear" added, "apple" changed, "kiwi" removed.
fn objects() -> (Vec<u8>, Vec<u8>) {
    let mut b = MemoryBackend::<String, u64>::new();
    for (k, v) in [("apple", 3u64), ("kiwi", 1), ("banana", 300)] {
        b.put(k.into(), v).unwrap();
    }
    let snap = export_snapshot(&b, OP, PART, BatchTime(10_000)).unwrap();
    b.clear_changes();
    b.put("pear".into(), 7).unwrap();
    b.put("apple".into(), 4).unwrap();
    b.remove(&"kiwi".into()).unwrap();
    let delta = export_delta(
        &b.take_changes().unwrap(),
        OP,
        PART,
        BatchTime(20_000),
        BatchTime(10_000),
    )
    .unwrap();
    (snap, delta)
}

#[test]
fn golden_objects_decode_and_re_encode_byte_for_byte() {
    let (snap, delta) = objects();
    if std::env::var_os("SPATE_BLESS").is_some() {
        std::fs::create_dir_all(golden("")).unwrap();
        std::fs::write(golden("snapshot-v1.bin"), &snap).unwrap();
        std::fs::write(golden("delta-v1.bin"), &delta).unwrap();
    }
    let g_snap = std::fs::read(golden("snapshot-v1.bin")).unwrap();
    let g_delta = std::fs::read(golden("delta-v1.bin")).unwrap();
    assert_eq!(
        snap, g_snap,
        "snapshot bytes changed: bump STATE_FORMAT_VERSION"
    );
    assert_eq!(
        delta, g_delta,
        "delta bytes changed: bump STATE_FORMAT_VERSION"
    );

    // The documented header layout, field by field.
    assert_eq!(&g_snap[..8], &STATE_MAGIC);
    assert_eq!(&g_snap[8..10], &[1, 0]);
    assert_eq!(g_snap[10], 1, "codec bincode 2");
    assert_eq!(g_snap[11], 1, "snapshot");
    assert_eq!(&g_snap[12..16], &3u32.to_le_bytes());
    assert_eq!(&g_snap[16..20], &1u32.to_le_bytes());
    assert_eq!(&g_snap[20..28], &10_000u64.to_le_bytes());
    assert_eq!(&g_snap[28..36], &0u64.to_le_bytes());
    assert_eq!(&g_snap[36..44], &3u64.to_le_bytes());
    // First entry: bincode strings sort by length first: "kiwi" (len 4) < "apple" < "banana".
    assert_eq!(&g_snap[HEADER_LEN..HEADER_LEN + 4], &5u32.to_le_bytes());
    assert_eq!(&g_snap[HEADER_LEN + 4..HEADER_LEN + 9], b"\x04kiwi");
    assert_eq!(g_snap[HEADER_LEN + 9], 1, "tag: value");
    assert_eq!(g_delta[11], 2, "delta");
    assert_eq!(&g_delta[28..36], &10_000u64.to_le_bytes());

    let d = format::decode(&g_delta).unwrap();
    assert_eq!(
        d.header.kind,
        ObjectKind::Delta {
            base: BatchTime(10_000)
        }
    );
    assert_eq!(d.entries.len(), 3);
    assert_eq!(d.entries[0].key, b"\x04kiwi");
    assert_eq!(d.entries[0].value, None);

    let (h, entries) = format::restore(OP, PART, [&g_snap[..], &g_delta]).unwrap();
    let mut b = MemoryBackend::<String, u64>::new();
    import(&mut b, h.codec, "golden", &format::borrowed(&entries)).unwrap();
    let mut got = Vec::new();
    b.for_each(&mut |k, v| got.push((k.clone(), *v))).unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("apple".to_string(), 4),
            ("banana".to_string(), 300),
            ("pear".to_string(), 7)
        ]
    );
}
