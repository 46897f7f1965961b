//! Checkpoint store: the conformance suite on memory, local disk (fsync on), moto and s3s-fs; the
//! s3s-fs kill/restart test; the fault-injection property test of the commit protocol; probes,
//! timeouts and unreachable endpoints; golden files.

use proptest::prelude::*;
use spate_checkpoint::testing::{suite, FaultConfig, FlakyObjectStore};
use spate_checkpoint::{
    envelope, CheckpointError, CheckpointKey, CheckpointKind, CheckpointPaths, CheckpointStore,
    DataObjectRef, Determinacy, GraphDescriptionBlob, Manifest, RetryPolicy, StoreOptions,
};
use spate_tests::s3;
use spate_types::{BatchTime, DurationMs, Generation, Lsn};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn memory() -> CheckpointStore {
    CheckpointStore::open("memory://", StoreOptions::default()).expect("memory store")
}

#[test]
fn in_memory_store_passes_the_checkpoint_conformance_suite() {
    rt().block_on(suite::run_all(|| async { memory() }));
    rt().block_on(suite::concurrent_claims_get_distinct_generations(memory()));
}

#[test]
fn local_disk_store_passes_the_checkpoint_conformance_suite() {
    let root = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicU32::new(0);
    let fresh = || {
        let dir = root.path().join(format!(
            "loc{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        async move { CheckpointStore::open(dir.to_str().unwrap(), StoreOptions::default()).unwrap() }
    };
    rt().block_on(suite::run_all(fresh));
    // file:// form, and LocalFS's create is a hard link: atomic, so races are tested here.
    let url = format!("file://{}", root.path().join("race").display());
    rt().block_on(suite::concurrent_claims_get_distinct_generations(
        CheckpointStore::open(&url, StoreOptions::default()).unwrap(),
    ));
}

#[test]
fn moto_store_passes_the_checkpoint_conformance_suite() {
    let srv = spate_tests::s3_or_return!(moto);
    rt().block_on(suite::run_all(|| std::future::ready(srv.fresh("conf"))));
    // moto's If-None-Match is check-then-store under the GIL: one winner in practice (infra.md).
    rt().block_on(suite::concurrent_claims_get_distinct_generations(
        srv.fresh("race"),
    ));
}

#[test]
fn s3sfs_store_passes_the_checkpoint_conformance_suite() {
    let srv = spate_tests::s3_or_return!(s3sfs);
    // No concurrent-claim race here: s3s-fs checks `exists()` then renames a temp file, so two
    // concurrent create-only PUTs can both succeed (docs/testing.md).
    rt().block_on(suite::run_all(|| std::future::ready(srv.fresh("conf"))));
}

#[test]
fn probe_refuses_a_store_that_overwrites_on_create() {
    let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let s = CheckpointStore::with_store(
        Arc::new(FlakyObjectStore::new(
            inner,
            1,
            FaultConfig {
                overwrite_on_create: true,
                ..FaultConfig::default()
            },
        )),
        object_store::path::Path::default(),
        "garage-like://",
        StoreOptions::default(),
    );
    match rt().block_on(s.open_committer()) {
        Err(CheckpointError::ConditionalCreateUnsupported { url, probe }) => {
            assert_eq!(url, "garage-like://");
            assert!(probe.starts_with("_probe/"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_urls_are_typed_errors() {
    for url in ["", "ftp://x/y", "s3://", "s3:///prefix"] {
        assert!(
            matches!(
                CheckpointStore::open(url, StoreOptions::default()),
                Err(CheckpointError::InvalidLocation { .. })
            ),
            "{url}"
        );
    }
}

fn dead_endpoint_options(endpoint: String) -> StoreOptions {
    StoreOptions {
        s3: spate_checkpoint::S3Options {
            endpoint: Some(endpoint),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        },
        request_timeout: Duration::from_millis(1500),
        connect_timeout: Duration::from_millis(500),
        retry: RetryPolicy {
            attempts: 2,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        },
        ..StoreOptions::default()
    }
}

#[test]
fn unreachable_endpoint_is_a_typed_error_not_a_hang_or_empty() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: connection refused
    let s = CheckpointStore::open(
        "s3://bucket/x",
        dead_endpoint_options(format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let t = Instant::now();
    let r = rt().block_on(s.resolve_latest());
    assert!(
        matches!(
            r,
            Err(CheckpointError::Store { .. } | CheckpointError::Timeout { .. })
        ),
        "{r:?}"
    );
    let w = rt().block_on(s.open_committer());
    assert!(
        matches!(
            w,
            Err(CheckpointError::Store { .. } | CheckpointError::Timeout { .. })
        ),
        "{w:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn put_to_a_black_hole_times_out_indeterminate() {
    // Accepts connections and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let s = CheckpointStore::open(
        "s3://bucket/x",
        dead_endpoint_options(format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let t = Instant::now();
    let e = rt().block_on(s.open_committer()).unwrap_err();
    assert_eq!(e.determinacy(), Determinacy::Indeterminate, "{e}");
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    drop(l);
}

/// Kill s3s-fs with SIGKILL while a checkpoint's data objects are being written, restart it on the
/// same root and port: the partial checkpoint is never visible, the previous one still resolves,
/// and a new writer commits.
#[test]
fn s3sfs_killed_mid_checkpoint_recovers() {
    // A private server: killing the shared one failed the S3 tests running beside this one.
    let private = spate_tests::s3_or_return!(private_s3sfs);
    let (srv, ctl) = (&private.server, &private.control);
    let rt = rt();
    let prefix = s3::unique_prefix("restart");
    let url = srv.url(&prefix);
    let mut opts = srv.options();
    opts.retry = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    let store = CheckpointStore::open(&url, opts.clone()).unwrap();
    let mut w = rt.block_on(store.open_committer()).unwrap();
    let good = rt
        .block_on(w.commit(suite::data_draft(1_000, 1, 1024)))
        .unwrap()
        .unwrap();
    // A big checkpoint: 16 objects of 4 MiB.
    let big = suite::data_draft(2_000, 16, 4 << 20);
    let handle = rt.spawn(async move { w.commit(big).await });
    let data_dir = ctl.root.join(&srv.bucket).join(&prefix).join("data");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = std::fs::read_dir(&data_dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_dir(e.path()).ok())
                .map(Iterator::count)
                .sum::<usize>()
        });
        if n >= 3 || handle.is_finished() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        !handle.is_finished(),
        "commit finished before the kill; make it bigger"
    );
    ctl.kill9();
    let outcome = rt.block_on(handle).unwrap();
    assert!(
        matches!(
            outcome,
            Err(CheckpointError::Store { .. } | CheckpointError::Timeout { .. })
        ),
        "commit did not fail with a store error with the server dead: {outcome:?}"
    );
    // While down: a store error, never "no checkpoint".
    let down = rt.block_on(store.resolve_latest());
    assert!(
        matches!(
            down,
            Err(CheckpointError::Store { .. } | CheckpointError::Timeout { .. })
        ),
        "{down:?}"
    );
    ctl.restart();
    let r = rt.block_on(store.resolve_latest()).unwrap().unwrap();
    assert_eq!(r.manifest, good, "partial checkpoint visible after restart");
    assert!(r.resolution.rejected.is_empty());
    // A new writer (new generation) commits on top.
    let mut w2 = rt.block_on(store.open_committer()).unwrap();
    let next = rt
        .block_on(w2.commit(suite::data_draft(3_000, 2, 1024)))
        .unwrap()
        .unwrap();
    assert_eq!(
        rt.block_on(store.resolve_latest())
            .unwrap()
            .unwrap()
            .manifest
            .key,
        next.key
    );
    // GC removes the orphaned objects of the interrupted commit.
    let plan = rt
        .block_on(store.gc(&spate_checkpoint::Retention {
            keep: 1,
            pinned: BTreeSet::new(),
        }))
        .unwrap();
    assert!(plan.deletions().any(|p| p.starts_with("data/")), "{plan:?}");
    assert!(rt
        .block_on(store.verify_all(spate_checkpoint::VerifyLevel::Full))
        .unwrap()
        .iter()
        .all(|v| v.problem.is_none()));
}

/// What a commit returned under faults.
#[derive(Debug)]
enum Outcome {
    Committed(CheckpointKey),
    Failed(Determinacy),
}

fn fault_run(seed: u64, fail: f64, timeout: f64, commits: usize) -> Result<(), TestCaseError> {
    let rt = spate_tests::current_thread_rt();
    rt.block_on(async {
        let (inner, flaky) = FlakyObjectStore::in_memory(
            seed,
            FaultConfig {
                fail_before: fail,
                succeed_then_timeout: timeout,
                latency: 0.1,
                max_latency: Duration::from_millis(2),
                ..FaultConfig::default()
            },
        );
        let opts = StoreOptions {
            retry: RetryPolicy {
                attempts: 3,
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
            },
            ..StoreOptions::default()
        };
        let root = object_store::path::Path::default();
        let faulty = CheckpointStore::with_store(flaky.clone(), root.clone(), "flaky://", opts.clone());
        let clean = CheckpointStore::with_store(inner, root, "clean://", opts);
        flaky.set_enabled(false);
        let mut w = faulty.open_committer().await.unwrap();
        flaky.set_enabled(true);
        let mut outcomes = Vec::new();
        for i in 0..commits {
            let mut d = suite::data_draft(1_000 * (i as u64 + 1), 2, 32);
            if i % 2 == 1 {
                d.kind = CheckpointKind::Completed;
            }
            match w.commit(d).await {
                Ok(Ok(m)) => outcomes.push(Outcome::Committed(m.key)),
                Ok(Err(e)) => prop_assert!(false, "AlreadyPublished without a second writer: {e:?}"),
                Err(e) => outcomes.push(Outcome::Failed(e.determinacy())),
            }
        }
        let schedule = flaky.schedule();
        let committed: BTreeSet<CheckpointKey> = outcomes
            .iter()
            .filter_map(|o| match o {
                Outcome::Committed(k) => Some(*k),
                Outcome::Failed(_) => None,
            })
            .collect();
        let indeterminate = outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Failed(Determinacy::Indeterminate)));
        let r = clean.resolve_latest().await;
        let listing = clean.listing().await.unwrap();
        match r {
            Ok(Some(res)) => {
                let k = res.manifest.key;
                // Never a checkpoint whose commit failed determinately.
                prop_assert!(
                    committed.contains(&k) || indeterminate,
                    "resolved {k} that was never committed; outcomes {outcomes:?}; schedule {schedule:?}"
                );
                // Never older than the newest committed one.
                if let Some(max) = committed.iter().max() {
                    prop_assert!(k >= *max, "resolved {k} older than committed {max}; {schedule:?}");
                }
                // Fully verified.
                for o in &res.manifest.objects {
                    clean.read_object(o).await.unwrap();
                }
                prop_assert!(res.resolution.rejected.is_empty() || indeterminate);
            }
            Ok(None) => prop_assert!(committed.is_empty(), "committed {committed:?} but nothing resolves; {schedule:?}"),
            Err(e) => prop_assert!(false, "resolve failed on a clean store: {e}; {schedule:?}"),
        }
        // Every committed checkpoint's manifest exists and verifies.
        for k in &committed {
            prop_assert!(listing.manifests.contains(k));
            let m = clean.read_manifest(*k).await.unwrap();
            for o in &m.objects {
                clean.read_object(o).await.unwrap();
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]
    /// After any seeded schedule of faults (fail before, succeed then time out, latency),
    /// `resolve_latest` returns a checkpoint that was fully committed and never one that was not.
    #[test]
    fn commit_protocol_under_faults(seed in any::<u64>(), fail in 0.0f64..0.3, timeout in 0.0f64..0.3) {
        fault_run(seed, fail, timeout, 6)?;
    }
}

fn golden_manifest() -> Manifest {
    let key = CheckpointKey {
        time: BatchTime(1_700_000_002_000),
        generation: Generation(3),
        seq: 1,
    };
    Manifest {
        key,
        kind: CheckpointKind::Data,
        batch_time: BatchTime(1_700_000_001_000),
        zero_time: BatchTime(1_700_000_000_000),
        batch_interval: DurationMs(1_000),
        generation: Generation(3),
        created_at_ms: 1_700_000_002_345,
        graph: GraphDescriptionBlob {
            fingerprint: "8f3a9c".into(),
            bytes: b"graph-description".to_vec(),
        },
        pending_batches: vec![BatchTime(1_700_000_001_000), BatchTime(1_700_000_002_000)],
        source_positions: [("socket-0".to_owned(), vec![1, 2, 3])]
            .into_iter()
            .collect(),
        wal_position: Some(Lsn(42)),
        conf: [("spate.batch.interval".to_owned(), "1s".to_owned())]
            .into_iter()
            .collect(),
        objects: vec![DataObjectRef {
            path: CheckpointPaths::data(key, "state-op1"),
            size: 28 + 5,
            crc32: crc32fast::hash(b"state"),
        }],
    }
}

fn golden(name: &str, bytes: &[u8]) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/checkpoint")
        .join(name);
    if std::env::var("SPATE_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
    }
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run with SPATE_BLESS=1 once)", p.display()))
}

#[test]
fn golden_envelope_and_manifest() {
    let env = envelope::encode(envelope::ObjectKind::Data, b"state");
    assert_eq!(
        golden("data-object-v1.bin", &env),
        env,
        "envelope bytes changed: bump CHECKPOINT_FORMAT_VERSION"
    );
    let m = golden_manifest();
    let bytes = m.to_bytes().unwrap();
    let g = golden("manifest-v1.bin", &bytes);
    assert_eq!(
        g, bytes,
        "manifest bytes changed: bump CHECKPOINT_FORMAT_VERSION"
    );
    let rel = CheckpointPaths::manifest(m.key);
    assert_eq!(Manifest::from_bytes(&rel, &g).unwrap(), m);
    // Stored under another name: rejected, not silently accepted.
    let r = Manifest::from_bytes("manifests/x.manifest", &g);
    assert!(matches!(r, Err(CheckpointError::Corrupt { .. })), "{r:?}");
    let g = golden("data-object-v1.bin", &env);
    let d = envelope::decode("d", envelope::ObjectKind::Data, &g).unwrap();
    assert_eq!(d.payload, b"state");
}

#[test]
fn async_writer_queue_surfaces_results_and_fencing() {
    let store = spate_checkpoint::BlockingCheckpointStore::open(
        tempfile::tempdir().unwrap().keep().to_str().unwrap(),
        StoreOptions::default(),
    )
    .unwrap();
    let w = store
        .open_writer(spate_checkpoint::WriterConfig {
            capacity: 4,
            retention: Some(spate_checkpoint::Retention::default()),
            ..spate_checkpoint::WriterConfig::default()
        })
        .unwrap();
    let mut tickets = Vec::new();
    for t in 1..=3u64 {
        tickets.push(w.submit(suite::data_draft(t * 1_000, 1, 16)).unwrap());
    }
    let keys: Vec<_> = tickets
        .into_iter()
        .map(|t| t.wait_blocking().unwrap().unwrap().key)
        .collect();
    assert!(keys.windows(2).all(|k| k[0] < k[1]));
    // A bounded queue: flooding it yields QueueFull, not unbounded memory.
    let mut full = false;
    let mut pending = Vec::new();
    for t in 10..200u64 {
        match w.submit(suite::data_draft(t * 1_000, 1, 16)) {
            Ok(tk) => pending.push(tk),
            Err(CheckpointError::QueueFull { capacity }) => {
                assert_eq!(capacity, 4);
                full = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full);
    for tk in pending {
        tk.wait_blocking().unwrap().unwrap();
    }
    // A second writer fences the first: its error surfaces and it stops.
    let _w2 = store.block_on(store.store().open_committer()).unwrap();
    let e = w
        .submit(suite::data_draft(999_000, 1, 16))
        .unwrap()
        .wait_blocking()
        .unwrap_err();
    assert!(
        matches!(
            e,
            CheckpointError::Fenced {
                published: false,
                ..
            }
        ),
        "{e}"
    );
    assert!(matches!(
        w.submit(suite::data_draft(1_000_000, 1, 16)),
        Err(CheckpointError::WriterStopped)
    ));
    // Retention ran: at most 3 valid checkpoints plus nothing older.
    let l = store.block_on(store.store().listing()).unwrap();
    assert!(l.manifests.len() <= 4, "{:?}", l.manifests);
}

/// GC verifies each manifest and each data object once per process, not once per checkpoint per
/// GC: checkpoints carry their state's whole delta chain, so re-reading everything made every GC
/// cost `keep` x chain reads (seconds on s3s-fs), and a stateful job on S3 fell behind for good.
/// What the committer wrote itself is never read back; a fresh process (empty cache) reads each
/// manifest and each distinct object once, and its next GC reads none of them; a damaged object
/// is still found by the first GC of a process.
#[test]
fn gc_reads_each_manifest_and_object_once_per_process() {
    use object_store::ObjectStoreExt;
    rt().block_on(async {
        let inner: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let flaky = Arc::new(FlakyObjectStore::new(
            inner.clone(),
            1,
            FaultConfig::default(),
        ));
        flaky.set_enabled(false);
        let root = object_store::path::Path::default();
        let opts = StoreOptions::default();
        let store =
            CheckpointStore::with_store(flaky.clone(), root.clone(), "counted://", opts.clone());
        let mut w = store.open_committer().await.unwrap();
        // One data checkpoint with 3 objects, then 14 metadata checkpoints carrying them.
        let first = w
            .commit(suite::data_draft(1_000, 3, 64))
            .await
            .unwrap()
            .unwrap();
        for i in 2..=15u64 {
            let mut d = suite::data_draft(i * 1_000, 0, 0);
            d.kind = CheckpointKind::Completed;
            d.carried_objects = first.objects.clone();
            w.commit(d).await.unwrap().unwrap();
        }
        let retention = spate_checkpoint::Retention {
            keep: 10,
            pinned: BTreeSet::new(),
        };
        let floors = |l: &spate_checkpoint::protocol::Listing| l.floors.len() as u64;

        // The writer's own process: nothing it wrote is read back.
        let before = flaky.gets();
        let plan = store.gc(&retention).await.unwrap();
        assert_eq!(plan.retained.len(), 10, "{plan:?}");
        let listing = store.listing().await.unwrap();
        assert_eq!(
            flaky.gets() - before,
            floors(&listing),
            "only floor objects are read"
        );
        // A fresh process: each retained manifest and each distinct object once, then nothing.
        let fresh =
            CheckpointStore::with_store(flaky.clone(), root.clone(), "counted://", opts.clone());
        let before = flaky.gets();
        fresh.gc(&retention).await.unwrap();
        assert_eq!(flaky.gets() - before, floors(&listing) + 10 + 3);
        let before = flaky.gets();
        fresh.gc(&retention).await.unwrap();
        assert_eq!(flaky.gets() - before, floors(&listing));
        // A damaged object is still found by a new process's first GC: no checkpoint verifies, so
        // GC keeps everything (it never deletes the last valid checkpoint for an invalid one).
        let victim = first.objects[1].path.clone();
        let full = store.full_path(&victim);
        let mut bytes = inner
            .get(&full)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        inner.put(&full, bytes.into()).await.unwrap();
        let damaged = CheckpointStore::with_store(flaky.clone(), root, "counted://", opts);
        let plan = damaged.gc(&retention).await.unwrap();
        assert!(plan.retained.is_empty(), "{plan:?}");
        assert_eq!(plan.deletions().count(), 0, "{plan:?}");
        let r = damaged.resolve_latest().await;
        assert!(
            matches!(r, Err(CheckpointError::NoValidCheckpoint { .. })),
            "every checkpoint references the damaged object: {r:?}"
        );
    });
}
