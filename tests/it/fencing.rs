//! Fencing with two live processes on one checkpoint location (issue 14 item 3; docs/recovery.md
//! "Fencing"): `spate wordcount --dir IN --checkpoint LOC` A runs, then B starts on the same
//! location. A must stop with the typed fenced error (non-zero exit, the message names B's
//! generation), and no object of A's generation may appear after B blocked it: every manifest and
//! data object of A's generation is at or below B's floor, A's newest publish slot is B's blocker,
//! and while B keeps committing no new name of A's generation appears. Local disk, and S3 through
//! s3s-fs when the servers run (`bash scripts/test.sh`; mandatory under `CI=true`).
//!
//! Waits poll the store with a deadline (a failure bound, not a timing assertion).

use spate_checkpoint::envelope::{self, ObjectKind};
use spate_checkpoint::paths::{CheckpointKey, CheckpointPaths, ParsedName};
use spate_checkpoint::protocol::SlotEntry;
use spate_checkpoint::{BlockingCheckpointStore, StoreOptions};
use spate_tests::spate_bin;
use spate_types::Generation;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

struct Location {
    url: String,
    opts: StoreOptions,
    envs: Vec<(String, String)>,
}

/// `spate wordcount --dir IN --checkpoint URL --wal-dir WAL --batch 200ms`, stderr to `log`.
fn job(root: &Path, name: &str, loc: &Location) -> Child {
    let input = root.join("in");
    let out = root.join(format!("out-{name}"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let log = std::fs::File::create(root.join(format!("{name}.err"))).unwrap();
    let mut cmd = Command::new(spate_bin());
    cmd.arg("wordcount")
        .arg("--dir")
        .arg(&input)
        .args(["--checkpoint", &loc.url, "--batch", "200ms", "--print", "0"])
        .args(["--no-status", "--per-batch", "--output"])
        .arg(&out)
        .arg("--wal-dir")
        .arg(root.join(format!("wal-{name}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in &loc.envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawning spate")
}

/// Every name of the location (relative).
fn names(store: &BlockingCheckpointStore) -> Vec<String> {
    store
        .block_on(store.store().list_raw(None))
        .unwrap()
        .into_iter()
        .map(|o| o.path)
        .collect()
}

/// Names carrying generation `g`: manifests and data objects (with their key), publish slots.
fn of_generation(names: &[String], g: Generation) -> BTreeSet<(String, Option<CheckpointKey>)> {
    names
        .iter()
        .filter_map(|p| match CheckpointPaths::parse(p) {
            ParsedName::Manifest(k) | ParsedName::Data { key: k, .. } if k.generation == g => {
                Some((p.clone(), Some(k)))
            }
            ParsedName::FenceSlot { generation, .. } if generation == g => Some((p.clone(), None)),
            _ => None,
        })
        .collect()
}

fn manifests(names: &[String]) -> Vec<CheckpointKey> {
    let mut v: Vec<_> = names
        .iter()
        .filter_map(|p| match CheckpointPaths::parse(p) {
            ParsedName::Manifest(k) => Some(k),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The verified payload of one enveloped object of the location.
fn payload(store: &BlockingCheckpointStore, rel: &str, kind: ObjectKind) -> Vec<u8> {
    let bytes = store.block_on(spate_checkpoint::testing::raw_get(store.store(), rel));
    envelope::decode(rel, kind, &bytes)
        .unwrap()
        .payload
        .to_vec()
}

fn newer_job_fences_the_older(loc: &Location) {
    let root = tempfile::tempdir().unwrap();
    let store = BlockingCheckpointStore::open(&loc.url, loc.opts.clone()).unwrap();
    let mut a = job(root.path(), "a", loc);
    wait_until("A's first checkpoints", || {
        manifests(&names(&store)).len() >= 2
    });
    let ga = manifests(&names(&store))[0].generation;
    let mut b = job(root.path(), "b", loc);
    // A's next checkpoint (every 200 ms) finds the blocker: A stops on its own.
    let Some(status) = spate_tests::wait_child(&mut a, DEADLINE, || {}) else {
        let _ = b.kill();
        panic!("A did not stop after B opened the location");
    };
    let a_err = std::fs::read_to_string(root.path().join("a.err")).unwrap();
    let gb = Generation(ga.0 + 1);
    assert!(!status.success(), "A exited successfully: {a_err}");
    assert!(
        a_err.contains(&format!(
            "fenced: {gb} took over this location (this job had {ga})"
        )),
        "A's error does not name the newer generation: {a_err}"
    );
    // A's generation, as left when A stopped.
    let at_stop = names(&store);
    let floor: Option<CheckpointKey> = spate_types::codec::decode(&payload(
        &store,
        &CheckpointPaths::floor(gb),
        ObjectKind::Floor,
    ))
    .unwrap();
    let mine = of_generation(&at_stop, ga);
    for (p, k) in &mine {
        if let Some(k) = k {
            assert!(
                Some(*k) <= floor,
                "{p} of {ga} above {gb}'s floor {floor:?}"
            );
        }
    }
    let newest_slot = mine
        .iter()
        .filter(|(_, k)| k.is_none())
        .map(|(p, _)| p)
        .max()
        .expect("A's publish slots");
    let slot = payload(&store, newest_slot, ObjectKind::FenceSlot);
    match spate_types::codec::decode::<SlotEntry>(&slot).unwrap() {
        SlotEntry::Blocked { by, .. } => assert_eq!(by, gb),
        other => panic!("A's newest slot {newest_slot} is not B's blocker: {other:?}"),
    }
    // B keeps committing; nothing of A's generation appears (GC may remove A's old objects).
    let b_count = manifests(&at_stop)
        .iter()
        .filter(|k| k.generation == gb)
        .count();
    wait_until("B's next checkpoints", || {
        manifests(&names(&store))
            .iter()
            .filter(|k| k.generation == gb)
            .count()
            >= b_count + 3
    });
    let later = of_generation(&names(&store), ga);
    assert!(
        later.is_subset(&mine),
        "objects of fenced {ga} appeared: {:?}",
        later.difference(&mine).collect::<Vec<_>>()
    );
    let _ = b.kill();
    let _ = b.wait();
    let r = store.resolve_latest().unwrap().expect("a checkpoint");
    assert_eq!(r.manifest.generation, gb);
    assert!(
        r.resolution.rejected.is_empty(),
        "{:?}",
        r.resolution.rejected
    );
}

#[test]
fn a_newer_job_on_a_local_location_fences_the_older_which_writes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    newer_job_fences_the_older(&Location {
        url: dir.path().join("ck").display().to_string(),
        opts: StoreOptions::default(),
        envs: Vec::new(),
    });
}

#[test]
fn a_newer_job_on_s3_fences_the_older_which_writes_nothing_more() {
    let Some(srv) =
        spate_tests::s3::s3sfs("a_newer_job_on_s3_fences_the_older_which_writes_nothing_more")
    else {
        return;
    };
    let envs = srv.process_env();
    newer_job_fences_the_older(&Location {
        url: srv.url(&spate_tests::s3::unique_prefix("fencing")),
        opts: srv.options(),
        envs,
    });
}
