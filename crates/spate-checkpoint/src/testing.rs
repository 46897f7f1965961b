//! Test support (feature `testing`): the seeded fault-injecting [`FlakyObjectStore`] (which can
//! also ignore conditional create, modelling garage/s3rver: [`FaultConfig::overwrite_on_create`]),
//! and the conformance [`suite`] every backend runs (memory, local disk, moto, s3s-fs).

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Probabilities (0.0..=1.0) of each fault per request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultConfig {
    /// Fail before reaching the inner store (determinate).
    pub fail_before: f64,
    /// Apply the request, then report an error as if the response was lost (indeterminate).
    pub succeed_then_timeout: f64,
    /// Delay the request by up to `max_latency`.
    pub latency: f64,
    /// Maximum injected latency.
    pub max_latency: Duration,
    /// Turn `PutMode::Create` into an overwrite, as garage 2.5.0 and s3rver 3.7.1 do (the
    /// capability probe must refuse such a store). Applies even while faults are disabled.
    pub overwrite_on_create: bool,
}

/// What happened to one request (the schedule, printed with the seed on failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passed through.
    None,
    /// Failed before reaching the store.
    FailBefore,
    /// Applied, then reported as failed.
    SucceedThenTimeout,
    /// Delayed, then passed through.
    Latency(Duration),
}

/// A seeded fault-injecting `ObjectStore` decorator (as Materialize persist's `UnreliableHandle`):
/// for writes (`put_opts`, `delete`) it can fail before, succeed, succeed then "time out", or add
/// latency; reads and listings can fail before or be delayed. Deterministic for a given seed and
/// request order.
pub struct FlakyObjectStore {
    inner: Arc<dyn ObjectStore>,
    config: parking_free::Mutex<FaultConfig>,
    rng: AtomicU64,
    seed: u64,
    enabled: AtomicBool,
    log: parking_free::Mutex<Vec<(String, Fault)>>,
    gets: AtomicU64,
}

mod parking_free {
    /// A std mutex that ignores poisoning (tests must not cascade panics).
    #[derive(Debug, Default)]
    pub(crate) struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub(crate) fn new(v: T) -> Self {
            Mutex(std::sync::Mutex::new(v))
        }
        pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

impl fmt::Debug for FlakyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlakyObjectStore")
            .field("seed", &self.seed)
            .field("config", &*self.config.lock())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FlakyObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky(seed={}, {})", self.seed, self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "flaky",
        source: what.to_owned().into(),
    }
}

impl FlakyObjectStore {
    /// Wraps `inner`; faults start enabled.
    #[must_use]
    pub fn new(inner: Arc<dyn ObjectStore>, seed: u64, config: FaultConfig) -> Self {
        FlakyObjectStore {
            inner,
            config: parking_free::Mutex::new(config),
            rng: AtomicU64::new(seed ^ 0x9E37_79B9_7F4A_7C15),
            seed,
            enabled: AtomicBool::new(true),
            log: parking_free::Mutex::new(Vec::new()),
            gets: AtomicU64::new(0),
        }
    }

    /// A fresh in-memory store and this decorator over it: `(inner, flaky)`; the inner one lets a
    /// test look behind the faults.
    #[must_use]
    pub fn in_memory(seed: u64, config: FaultConfig) -> (Arc<dyn ObjectStore>, Arc<Self>) {
        let inner: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let flaky = Arc::new(FlakyObjectStore::new(Arc::clone(&inner), seed, config));
        (inner, flaky)
    }

    /// The seed.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Turns faults on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::SeqCst);
    }

    /// Replaces the fault probabilities (`FaultConfig { fail_before: 1.0, .. }` = totally unavailable).
    pub fn set_config(&self, c: FaultConfig) {
        *self.config.lock() = c;
    }

    /// `get_opts` requests so far (reads of objects), faulted or not.
    #[must_use]
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::SeqCst)
    }

    /// The faults injected so far, per request (`op path`).
    #[must_use]
    pub fn schedule(&self) -> Vec<(String, Fault)> {
        self.log.lock().clone()
    }

    fn next_f64(&self) -> f64 {
        // splitmix64
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick(&self, op: &str, path: &Path, write: bool) -> Fault {
        if !self.enabled.load(Ordering::SeqCst) {
            return Fault::None;
        }
        let c = *self.config.lock();
        let r = self.next_f64();
        let f = if r < c.fail_before {
            Fault::FailBefore
        } else if write && r < c.fail_before + c.succeed_then_timeout {
            Fault::SucceedThenTimeout
        } else if r < c.fail_before + c.succeed_then_timeout + c.latency {
            let ms = (self.next_f64() * c.max_latency.as_millis() as f64) as u64;
            Fault::Latency(Duration::from_millis(ms))
        } else {
            Fault::None
        };
        if f != Fault::None {
            self.log.lock().push((format!("{op} {path}"), f));
        }
        f
    }
}

#[async_trait]
impl ObjectStore for FlakyObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.config.lock().overwrite_on_create && matches!(opts.mode, PutMode::Create) {
            opts.mode = PutMode::Overwrite;
        }
        match self.pick("put", location, true) {
            Fault::FailBefore => Err(injected("injected failure before put")),
            Fault::SucceedThenTimeout => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected("injected timeout after a successful put"))
            }
            Fault::Latency(d) => {
                tokio::time::sleep(d).await;
                self.inner.put_opts(location, payload, opts).await
            }
            Fault::None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        match self.pick("put_multipart", location, false) {
            Fault::FailBefore => Err(injected("injected failure before multipart")),
            _ => self.inner.put_multipart_opts(location, opts).await,
        }
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        match self.pick("get", location, false) {
            Fault::FailBefore => Err(injected("injected failure before get")),
            Fault::Latency(d) => {
                tokio::time::sleep(d).await;
                self.inner.get_opts(location, options).await
            }
            _ => self.inner.get_opts(location, options).await,
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let fail = matches!(
            self.pick("delete", &Path::from("*"), true),
            Fault::FailBefore
        );
        if fail {
            return futures::stream::once(async {
                Err(injected("injected failure before delete"))
            })
            .boxed();
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let p = prefix.cloned().unwrap_or_default();
        if matches!(self.pick("list", &p, false), Fault::FailBefore) {
            return futures::stream::once(async { Err(injected("injected failure before list")) })
                .boxed();
        }
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let p = prefix.cloned().unwrap_or_default();
        if matches!(self.pick("list", &p, false), Fault::FailBefore) {
            return futures::stream::once(async { Err(injected("injected failure before list")) })
                .boxed();
        }
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Writes raw bytes at a relative name, bypassing the protocol (to plant damage in tests).
///
/// # Panics
/// If the store refuses the write (test helper).
pub async fn plant(store: &crate::CheckpointStore, rel: &str, bytes: Vec<u8>) {
    use object_store::ObjectStoreExt;
    let (s, _) = store.raw();
    s.put(&store.full_path(rel), Bytes::from(bytes).into())
        .await
        .unwrap_or_else(|e| panic!("planting {rel}: {e}"));
}

/// Reads raw bytes at a relative name.
///
/// # Panics
/// If the read fails (test helper).
pub async fn raw_get(store: &crate::CheckpointStore, rel: &str) -> Vec<u8> {
    use object_store::ObjectStoreExt;
    let (s, _) = store.raw();
    s.get(&store.full_path(rel))
        .await
        .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("reading {rel}: {e}"))
        .to_vec()
}

/// Deletes a relative name (missing is fine).
pub async fn raw_delete(store: &crate::CheckpointStore, rel: &str) {
    use object_store::ObjectStoreExt;
    let (s, _) = store.raw();
    let _ = s.delete(&store.full_path(rel)).await;
}

pub mod suite {
    //! The conformance suite: each function takes a fresh, empty [`CheckpointStore`] and panics
    //! with a message naming the backend on a violation. Run every function against every backend
    //! (`tests/it/checkpoint.rs`); [`concurrent_claims_get_distinct_generations`] only where the
    //! server's conditional create is atomic (LocalFS, memory, moto — not s3s-fs, whose
    //! `If-None-Match` is check-then-write).

    use super::{plant, raw_delete, raw_get};
    use crate::protocol::{GcClass, RejectReason, Retention};
    use crate::store::{CheckpointDraft, CheckpointStore, VerifyLevel};
    use crate::{
        CheckpointError, CheckpointKind, CheckpointPaths, DataObjectRef, GraphDescriptionBlob,
        Manifest,
    };
    use bytes::Bytes;
    use spate_types::{BatchTime, DurationMs, Lsn};

    /// An empty draft of `kind` for batch `t` (zero time 1000, interval 1000).
    #[must_use]
    pub fn draft_at(kind: CheckpointKind, t: u64) -> CheckpointDraft {
        CheckpointDraft::new(kind, BatchTime(t), BatchTime(1_000), DurationMs(1_000))
    }

    /// A data draft for batch `t` with `n` objects of `size` bytes.
    #[must_use]
    pub fn data_draft(t: u64, n: usize, size: usize) -> CheckpointDraft {
        let mut d = draft_at(CheckpointKind::Data, t);
        d.graph = GraphDescriptionBlob {
            fingerprint: "fp-1".into(),
            bytes: b"graph".to_vec(),
        };
        d.pending_batches = vec![BatchTime(t)];
        d.source_positions
            .insert("socket-0".into(), t.to_le_bytes().to_vec());
        d.wal_position = Some(Lsn(t / 10));
        d.conf.insert("spate.batch.interval".into(), "1000".into());
        for i in 0..n {
            let payload: Vec<u8> = (0..size).map(|j| (j as u64 ^ t ^ i as u64) as u8).collect();
            d.new_objects
                .push((format!("state-op{i}"), Bytes::from(payload)));
        }
        d
    }

    async fn commit(c: &mut crate::Committer, d: CheckpointDraft) -> Manifest {
        c.commit(d)
            .await
            .unwrap_or_else(|e| panic!("{}: commit failed: {e}", c.store().url()))
            .unwrap_or_else(|e| panic!("{}: already published: {e:?}", c.store().url()))
    }

    async fn latest(s: &CheckpointStore) -> crate::Resolved {
        s.resolve_latest()
            .await
            .unwrap_or_else(|e| panic!("{}: resolve failed: {e}", s.url()))
            .unwrap_or_else(|| panic!("{}: no checkpoint", s.url()))
    }

    /// Every checkpoint of `s` verifies in full.
    async fn assert_every_checkpoint_verifies(s: &CheckpointStore) {
        let statuses = s.verify_all(VerifyLevel::Full).await.unwrap();
        let bad: Vec<_> = statuses.iter().filter(|v| v.problem.is_some()).collect();
        assert!(bad.is_empty(), "{}: {bad:?}", s.url());
    }

    /// GC keeping only the newest valid checkpoint.
    async fn gc_keeping_newest(s: &CheckpointStore) {
        s.gc(&Retention {
            keep: 1,
            pinned: Default::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("{}: gc failed: {e}", s.url()));
    }

    /// put/get/list: a data checkpoint's objects read back byte-exact, names are the protocol's.
    pub async fn put_get_list(s: CheckpointStore) {
        assert!(
            s.resolve_latest().await.unwrap().is_none(),
            "{}: empty store resolves",
            s.url()
        );
        let mut c = s.open_committer().await.unwrap();
        let d = data_draft(5_000, 2, 1000);
        let expect: Vec<Bytes> = d.new_objects.iter().map(|(_, b)| b.clone()).collect();
        let m = commit(&mut c, d).await;
        assert_eq!(m.objects.len(), 2);
        for (r, want) in m.objects.iter().zip(&expect) {
            assert_eq!(&s.read_object(r).await.unwrap(), want, "{}", s.url());
        }
        let l = s.listing().await.unwrap();
        assert_eq!(l.manifests, vec![m.key], "{}", s.url());
        assert_eq!(l.data.len(), 2);
        assert!(l.unknown.is_empty(), "{}: {:?}", s.url(), l.unknown);
        assert!(l.probes.is_empty(), "{}: probe left behind", s.url());
        assert_eq!(l.generations, vec![c.generation()]);
    }

    /// commit then resolve: newest wins, every field round-trips, names never go backwards.
    pub async fn commit_and_resolve(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let a = commit(&mut c, data_draft(2_000, 1, 10)).await;
        let mut meta = draft_at(CheckpointKind::Generated, 3_000);
        meta.carried_objects = a.objects.clone();
        meta.pending_batches = vec![BatchTime(3_000)];
        let b = commit(&mut c, meta).await;
        // An older batch's completion after a newer generation checkpoint (SPARK-11267): the name
        // still moves forward.
        let mut done = draft_at(CheckpointKind::Completed, 2_000);
        done.carried_objects = a.objects.clone();
        let c3 = commit(&mut c, done).await;
        assert!(
            a.key < b.key && b.key < c3.key,
            "{}: names went backwards",
            s.url()
        );
        assert_eq!(c3.batch_time, BatchTime(2_000));
        let r = latest(&s).await;
        assert_eq!(r.manifest, c3, "{}", s.url());
        assert!(r.resolution.rejected.is_empty());
        assert_eq!(
            s.read_object(&r.manifest.objects[0]).await.unwrap().len(),
            10
        );
    }

    /// Fallback: each kind of damage to the newest checkpoint makes resolve fall back to the previous
    /// one and name the damaged object in a typed reason.
    pub async fn fallback_on_damage(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let good = commit(&mut c, data_draft(1_000, 1, 64)).await;
        type Damage = fn(Vec<u8>) -> Vec<u8>;
        let cases: [(&str, Damage); 3] = [
            ("bitflip", |mut b| {
                let i = b.len() - 3;
                b[i] ^= 0x10;
                b
            }),
            ("truncate", |mut b| {
                b.truncate(b.len() / 2);
                b
            }),
            ("newer-version", |mut b| {
                b[8] = 0xFF;
                b
            }),
        ];
        for (name, damage) in cases {
            let bad = commit(&mut c, data_draft(9_000, 1, 64)).await;
            let obj = &bad.objects[0].path;
            let bytes = raw_get(&s, obj).await;
            plant(&s, obj, damage(bytes)).await;
            let r = latest(&s).await;
            assert_eq!(r.manifest.key, good.key, "{}: {name}", s.url());
            let rej = &r.resolution.rejected[0];
            assert_eq!(rej.key, bad.key);
            assert!(
                matches!(&rej.reason, RejectReason::CorruptObject { object, .. } if object == obj),
                "{}: {name}: {:?}",
                s.url(),
                rej.reason
            );
            raw_delete(&s, &CheckpointPaths::manifest(bad.key)).await;
        }
        // Missing object.
        let bad = commit(&mut c, data_draft(9_000, 1, 64)).await;
        raw_delete(&s, &bad.objects[0].path).await;
        let r = latest(&s).await;
        assert_eq!(r.manifest.key, good.key);
        assert!(
            matches!(&r.resolution.rejected[0].reason, RejectReason::MissingObject { object } if *object == bad.objects[0].path)
        );
        raw_delete(&s, &CheckpointPaths::manifest(bad.key)).await;
        // Damaged manifest.
        let bad = commit(&mut c, data_draft(9_000, 1, 64)).await;
        let rel = CheckpointPaths::manifest(bad.key);
        let mut bytes = raw_get(&s, &rel).await;
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        plant(&s, &rel, bytes).await;
        let r = latest(&s).await;
        assert_eq!(r.manifest.key, good.key);
        assert!(
            matches!(&r.resolution.rejected[0].reason, RejectReason::ManifestUnreadable { error } if error.contains(&rel))
        );
        // Everything damaged: a typed error listing every candidate, never a silently wrong one.
        let g = raw_get(&s, &good.objects[0].path).await;
        plant(&s, &good.objects[0].path, g[..10].to_vec()).await;
        match s.resolve_latest().await {
            Err(CheckpointError::NoValidCheckpoint { rejected }) => assert_eq!(rejected.len(), 2),
            other => panic!("{}: {other:?}", s.url()),
        }
        // verify reports both problems.
        let v = s.verify_all(VerifyLevel::Full).await.unwrap();
        assert!(v.iter().all(|c| c.problem.is_some()), "{}", s.url());
    }

    /// Garbage in the location (foreign files, junk under `manifests/` and `data/`) is reported,
    /// never chosen, never deleted.
    pub async fn garbage_is_ignored(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let good = commit(&mut c, data_draft(1_000, 1, 8)).await;
        plant(&s, "README.txt", b"hello".to_vec()).await;
        plant(&s, "manifests/junk.manifest", b"junk".to_vec()).await;
        plant(&s, "data/xyz/state", b"junk".to_vec()).await;
        let r = latest(&s).await;
        assert_eq!(r.manifest.key, good.key);
        let l = s.listing().await.unwrap();
        assert_eq!(l.unknown.len(), 3, "{}: {:?}", s.url(), l.unknown);
        let plan = s.gc(&Retention::default()).await.unwrap();
        assert!(plan
            .objects
            .iter()
            .filter(|(p, _)| p.contains("junk") || p.contains("README") || p.contains("xyz"))
            .all(|(_, c)| *c == GcClass::Kept));
        assert_eq!(s.listing().await.unwrap().unknown.len(), 3);
    }

    /// Retention/GC: keep the newest N valid plus pinned; unreferenced older objects are deleted,
    /// carried (still referenced) ones are not; dry run deletes nothing.
    pub async fn gc_retention(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let first = commit(&mut c, data_draft(1_000, 1, 8)).await;
        let mut keys = vec![first.key];
        for t in 2..=6u64 {
            let mut d = data_draft(t * 1_000, 1, 8);
            if t == 6 {
                // A metadata checkpoint carrying the first checkpoint's object.
                d = draft_at(CheckpointKind::Completed, 6_000);
                d.carried_objects = first.objects.clone();
            }
            keys.push(commit(&mut c, d).await.key);
        }
        let pinned_key = keys[1];
        let retention = Retention {
            keep: 3,
            pinned: [pinned_key].into_iter().collect(),
        };
        let before = s.list_raw(None).await.unwrap().len();
        let plan = s.plan_gc(&retention).await.unwrap();
        assert_eq!(
            s.list_raw(None).await.unwrap().len(),
            before,
            "{}: dry run deleted",
            s.url()
        );
        let dels: Vec<&str> = plan.deletions().collect();
        assert!(
            dels.contains(&CheckpointPaths::manifest(keys[0]).as_str()),
            "{}: {dels:?}",
            s.url()
        );
        assert!(dels.contains(&CheckpointPaths::manifest(keys[2]).as_str()));
        assert!(
            !dels.contains(&first.objects[0].path.as_str()),
            "{}: carried object deleted",
            s.url()
        );
        assert!(
            !dels.iter().any(|p| p.contains(&pinned_key.to_string())),
            "{}: pinned deleted",
            s.url()
        );
        s.gc(&retention).await.unwrap();
        let l = s.listing().await.unwrap();
        assert_eq!(
            l.manifests,
            vec![keys[1], keys[3], keys[4], keys[5]],
            "{}",
            s.url()
        );
        let r = latest(&s).await;
        assert_eq!(r.manifest.key, keys[5]);
        s.read_object(&r.manifest.objects[0]).await.unwrap();
        assert_every_checkpoint_verifies(&s).await;
    }

    /// Fencing: a second writer fences the first before it publishes; a zombie manifest published
    /// after the newer writer's floor is rejected by resolve.
    pub async fn fencing(s: CheckpointStore) {
        let mut a = s.open_committer().await.unwrap();
        let a1 = commit(&mut a, data_draft(1_000, 1, 8)).await;
        let mut b = s.open_committer().await.unwrap();
        assert!(b.generation() > a.generation());
        match a.commit(data_draft(2_000, 1, 8)).await {
            Err(CheckpointError::Fenced {
                ours,
                newer,
                published: false,
            }) => {
                assert_eq!((ours, newer), (a.generation(), b.generation()));
            }
            other => panic!("{}: old writer not fenced: {other:?}", s.url()),
        }
        // Zombie: a manifest of the old generation that sorts above the new writer's floor.
        let zombie_key = crate::CheckpointKey {
            time: BatchTime(9_000),
            generation: a.generation(),
            seq: 0,
        };
        let zombie = Manifest {
            key: zombie_key,
            generation: a.generation(),
            ..a1.clone()
        };
        plant(
            &s,
            &CheckpointPaths::manifest(zombie_key),
            zombie.to_bytes().unwrap(),
        )
        .await;
        let r = latest(&s).await;
        assert_eq!(
            r.manifest.key,
            a1.key,
            "{}: zombie manifest chosen",
            s.url()
        );
        assert!(matches!(
            r.resolution.rejected[0].reason,
            RejectReason::FencedPublish { .. }
        ));
        let b1 = commit(&mut b, data_draft(3_000, 1, 8)).await;
        // The zombie's manifest may sort above the new writer's (it was never visible to it); it
        // stays rejected forever, so the new writer's checkpoint is chosen.
        let r = latest(&s).await;
        assert_eq!(r.manifest.key, b1.key, "{}", s.url());
        if b1.key < zombie_key {
            assert!(matches!(
                r.resolution.rejected[0].reason,
                RejectReason::FencedPublish { .. }
            ));
        }
    }

    /// Bad input to the manifest decoder: a manifest referencing something outside `data/` is
    /// corrupt, not followed.
    pub async fn manifest_with_foreign_reference_is_rejected(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let good = commit(&mut c, data_draft(1_000, 1, 8)).await;
        let key = crate::CheckpointKey {
            time: BatchTime(5_000),
            generation: c.generation(),
            seq: 0,
        };
        let mut m = Manifest {
            key,
            ..good.clone()
        };
        m.objects.push(DataObjectRef {
            path: "generations/00000000000000000001".into(),
            size: 1,
            crc32: 0,
        });
        plant(&s, &CheckpointPaths::manifest(key), m.to_bytes().unwrap()).await;
        let r = latest(&s).await;
        assert_eq!(r.manifest.key, good.key);
        assert!(matches!(
            &r.resolution.rejected[0].reason,
            RejectReason::ManifestUnreadable { .. }
        ));
    }

    /// Concurrent openers each get a distinct generation (needs atomic conditional create).
    pub async fn concurrent_claims_get_distinct_generations(s: CheckpointStore) {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.open_committer().await.map(|c| c.generation())
            }));
        }
        let mut gens = Vec::new();
        for t in tasks {
            gens.push(t.await.unwrap().unwrap());
        }
        let n = gens.len();
        gens.sort();
        gens.dedup();
        assert_eq!(
            gens.len(),
            n,
            "{}: two writers claimed one generation",
            s.url()
        );
    }

    /// Restart reports: stored as given under `restart-reports/`, listed oldest first, never
    /// garbage, never deleted by GC; bad input is a typed error.
    pub async fn restart_reports(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        commit(&mut c, data_draft(1_000, 1, 8)).await;
        let g = c.generation();
        let newer = s
            .put_restart_report(2_000, g, Bytes::from_static(br#"{"outcome":"restored"}"#))
            .await
            .unwrap_or_else(|e| panic!("{}: put report: {e}", s.url()));
        let older = s
            .put_restart_report(1_000, g, Bytes::from_static(br#"{"outcome":"fresh"}"#))
            .await
            .unwrap();
        assert_eq!(older, CheckpointPaths::restart_report(1_000, g));
        assert_eq!(
            s.list_restart_reports().await.unwrap(),
            vec![older.clone(), newer.clone()],
            "{}",
            s.url()
        );
        assert_eq!(
            &s.read_restart_report(&newer).await.unwrap()[..],
            br#"{"outcome":"restored"}"#
        );
        assert!(matches!(
            s.put_restart_report(3_000, g, Bytes::from_static(b"{not json"))
                .await,
            Err(CheckpointError::InvalidArgument(_))
        ));
        assert!(matches!(
            s.read_restart_report("README.txt").await,
            Err(CheckpointError::InvalidArgument(_))
        ));
        assert!(matches!(
            s.read_restart_report(&CheckpointPaths::restart_report(9, g))
                .await,
            Err(CheckpointError::NotFound { .. })
        ));
        let l = s.listing().await.unwrap();
        assert!(l.unknown.is_empty(), "{}: {:?}", s.url(), l.unknown);
        assert_eq!(l.restart_reports.len(), 2);
        for t in 2..=4u64 {
            commit(&mut c, data_draft(t * 1_000, 1, 8)).await;
        }
        gc_keeping_newest(&s).await;
        assert_eq!(
            s.list_restart_reports().await.unwrap().len(),
            2,
            "{}: GC deleted a report",
            s.url()
        );
        assert_every_checkpoint_verifies(&s).await;
    }

    /// Archive: every object (garbage included) is copied byte-identical under
    /// `archived/<label>/`, the originals are gone (generation markers and restart reports stay),
    /// nothing resolves afterwards, the next writer gets a newer generation, GC never touches the
    /// archive, and a used or invalid label is refused.
    pub async fn archive_sets_everything_aside(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let a = commit(&mut c, data_draft(1_000, 2, 100)).await;
        let mut meta = draft_at(CheckpointKind::Completed, 2_000);
        meta.carried_objects = a.objects.clone();
        commit(&mut c, meta).await;
        plant(&s, "README.txt", b"foreign".to_vec()).await;
        plant(&s, "manifests/junk.manifest", b"junk".to_vec()).await;
        s.put_restart_report(5, c.generation(), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let before = s.list_raw(None).await.unwrap();
        let mut originals = Vec::new();
        for o in &before {
            originals.push((o.path.clone(), raw_get(&s, &o.path).await));
        }
        let r = s
            .archive("incompatible-1")
            .await
            .unwrap_or_else(|e| panic!("{}: archive: {e}", s.url()));
        assert_eq!(r.prefix, "archived/incompatible-1/");
        assert_eq!(r.objects, before.len(), "{}: {r:?}", s.url());
        assert_eq!(r.bytes, before.iter().map(|o| o.size).sum::<u64>());
        assert_eq!(r.manifests, 2, "{}: {r:?}", s.url());
        assert_eq!(r.vanished, 0);
        assert!(
            s.resolve_latest().await.unwrap().is_none(),
            "{}: a checkpoint still resolves after archive",
            s.url()
        );
        for (path, bytes) in &originals {
            let copy = raw_get(&s, &CheckpointPaths::archived("incompatible-1", path)).await;
            assert_eq!(&copy, bytes, "{}: archived {path} differs", s.url());
        }
        let l = s.listing().await.unwrap();
        assert!(l.manifests.is_empty() && l.data.is_empty(), "{}", s.url());
        assert!(
            l.unknown.is_empty(),
            "{}: garbage not archived: {:?}",
            s.url(),
            l.unknown
        );
        assert_eq!(l.archived.len(), before.len());
        assert_eq!(
            l.restart_reports.len(),
            1,
            "{}: report not kept in place",
            s.url()
        );
        assert_eq!(l.newest_generation(), Some(c.generation()), "{}", s.url());
        assert_eq!(
            r.kept_in_place,
            1 + l.generations.len() + l.floors.len() + l.fence_slots.len()
        );
        assert_eq!(r.deleted + r.kept_in_place, r.objects);
        // The label is used now; invalid labels are refused; nothing changed.
        for bad in ["incompatible-1", "", ".x", "a/b", "sp ace"] {
            assert!(
                matches!(
                    s.archive(bad).await,
                    Err(CheckpointError::InvalidArgument(_))
                ),
                "{}: label {bad:?} accepted",
                s.url()
            );
        }
        assert_eq!(s.listing().await.unwrap().archived.len(), before.len());
        // A new writer fences the old one and starts over; GC leaves the archive alone.
        let mut d = s.open_committer().await.unwrap();
        assert!(d.generation() > c.generation());
        assert!(matches!(
            c.commit(data_draft(3_000, 1, 8)).await,
            Err(CheckpointError::Fenced { .. })
        ));
        let fresh = commit(&mut d, data_draft(3_000, 1, 8)).await;
        assert_eq!(latest(&s).await.manifest.key, fresh.key);
        gc_keeping_newest(&s).await;
        assert_eq!(s.listing().await.unwrap().archived.len(), before.len());
        // A second archive copies the live objects only, not the first archive.
        let live = s
            .list_raw(None)
            .await
            .unwrap()
            .iter()
            .filter(|o| !o.path.starts_with("archived/"))
            .count();
        let r2 = s.archive("second").await.unwrap();
        assert_eq!(r2.objects, live, "{}: {r2:?}", s.url());
        assert!(s.resolve_latest().await.unwrap().is_none());
    }

    /// Create-only outcomes are typed: a data object whose (new, unique) name is already taken by
    /// other bytes fails the commit with [`CheckpointError::ObjectExists`] naming it, determinate,
    /// and nothing is published; a later batch's commit (new names) succeeds.
    pub async fn taken_data_name_is_object_exists(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let key = crate::CheckpointKey {
            time: BatchTime(5_000),
            generation: c.generation(),
            seq: 0,
        };
        let taken = CheckpointPaths::data(key, "state-op0");
        plant(&s, &taken, b"someone else's bytes".to_vec()).await;
        match c.commit(data_draft(5_000, 1, 16)).await {
            Err(CheckpointError::ObjectExists { object }) => assert_eq!(object, taken),
            other => panic!("{}: expected ObjectExists, got {other:?}", s.url()),
        }
        assert!(
            s.listing().await.unwrap().manifests.is_empty(),
            "{}",
            s.url()
        );
        let m = commit(&mut c, data_draft(6_000, 1, 16)).await;
        assert_eq!(latest(&s).await.manifest.key, m.key);
    }

    /// Runs every backend-independent function on fresh stores from `fresh`.
    pub async fn run_all<F, Fut>(mut fresh: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = CheckpointStore>,
    {
        put_get_list(fresh().await).await;
        commit_and_resolve(fresh().await).await;
        fallback_on_damage(fresh().await).await;
        garbage_is_ignored(fresh().await).await;
        gc_retention(fresh().await).await;
        fencing(fresh().await).await;
        manifest_with_foreign_reference_is_rejected(fresh().await).await;
        restart_reports(fresh().await).await;
        archive_sets_everything_aside(fresh().await).await;
        taken_data_name_is_object_exists(fresh().await).await;
        fenced_writer_writes_nothing(fresh().await).await;
        racing_publishes_stay_below_the_floor(fresh().await).await;
        latest_pointer_is_only_a_hint(fresh().await).await;
    }

    /// The names of `s` that carry generation `g` (manifests, data objects, publish slots).
    async fn objects_of(s: &CheckpointStore, g: spate_types::Generation) -> Vec<String> {
        use crate::paths::ParsedName;
        s.list_raw(None)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .filter(|p| match CheckpointPaths::parse(p) {
                ParsedName::Manifest(k) | ParsedName::Data { key: k, .. } => k.generation == g,
                ParsedName::FenceSlot { generation, .. } => generation == g,
                _ => false,
            })
            .collect()
    }

    /// Fencing prevents: once a newer writer opened, the older one's next commit fails with
    /// `Fenced { published: false }` naming the newer generation, and it wrote nothing (no data
    /// object, no manifest, no slot); its newest slot is the newer writer's blocker.
    pub async fn fenced_writer_writes_nothing(s: CheckpointStore) {
        let mut a = s.open_committer().await.unwrap();
        commit(&mut a, data_draft(1_000, 2, 8)).await;
        let before = objects_of(&s, a.generation()).await;
        let b = s.open_committer().await.unwrap();
        let after_open = objects_of(&s, a.generation()).await;
        for t in [2_000, 3_000] {
            match a.commit(data_draft(t, 2, 8)).await {
                Err(CheckpointError::Fenced {
                    ours,
                    newer,
                    published: false,
                }) => assert_eq!(
                    (ours, newer),
                    (a.generation(), b.generation()),
                    "{}",
                    s.url()
                ),
                other => panic!("{}: fenced writer not refused: {other:?}", s.url()),
            }
        }
        assert_eq!(
            objects_of(&s, a.generation()).await,
            after_open,
            "{}: the fenced writer wrote something",
            s.url()
        );
        // What the newer writer added to the old generation: exactly one blocker slot.
        let added: Vec<_> = after_open.iter().filter(|p| !before.contains(p)).collect();
        assert_eq!(added.len(), 1, "{}: {added:?}", s.url());
        match s.read_slot(a.generation(), 2).await.unwrap() {
            Some(Ok(crate::protocol::SlotEntry::Blocked { by, last })) => {
                assert_eq!(by, b.generation());
                assert_eq!(last.map(|k| k.time), Some(BatchTime(1_000)));
            }
            other => panic!("{}: no blocker: {other:?}", s.url()),
        }
    }

    /// A writer committing while a newer one opens: every publish either completes before the
    /// block (its key at or below the newer floor, accepted) or is refused with nothing written;
    /// resolve never rejects a fenced publish.
    pub async fn racing_publishes_stay_below_the_floor(s: CheckpointStore) {
        let mut a = s.open_committer().await.unwrap();
        commit(&mut a, data_draft(1_000, 1, 8)).await;
        let writer = async {
            let mut fenced = None;
            for t in 2..60u64 {
                match a.commit(data_draft(t * 1_000, 1, 8)).await {
                    Ok(Ok(_)) => {}
                    Err(CheckpointError::Fenced { newer, .. }) => {
                        fenced = Some(newer);
                        break;
                    }
                    other => panic!("{}: {other:?}", s.url()),
                }
            }
            fenced
        };
        let opener = async {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            s.open_committer().await.unwrap()
        };
        let (fenced, b) = futures::join!(writer, opener);
        let floor = s
            .read_floor(b.generation())
            .await
            .unwrap()
            .expect("a floor");
        for p in objects_of(&s, a.generation()).await {
            if let crate::paths::ParsedName::Manifest(k) = CheckpointPaths::parse(&p) {
                assert!(
                    Some(k) <= floor,
                    "{}: {k} above the floor {floor:?}",
                    s.url()
                );
            }
        }
        if fenced.is_some() {
            assert_eq!(fenced, Some(b.generation()), "{}", s.url());
        }
        let r = latest(&s).await;
        assert!(
            r.resolution.rejected.is_empty(),
            "{}: {:?}",
            s.url(),
            r.resolution.rejected
        );
        assert_every_checkpoint_verifies(&s).await;
    }

    /// The `latest` pointer only narrows the listing: missing, damaged, stale (older) or naming a
    /// checkpoint that does not exist, resolve still returns the newest valid checkpoint.
    pub async fn latest_pointer_is_only_a_hint(s: CheckpointStore) {
        let mut c = s.open_committer().await.unwrap();
        let ms: Vec<Manifest> = {
            let mut v = Vec::new();
            for t in 1..=4u64 {
                v.push(commit(&mut c, data_draft(t * 1_000, 1, 8)).await);
            }
            v
        };
        let newest = ms[3].key;
        assert_eq!(latest(&s).await.manifest.key, newest, "{}", s.url());
        let pointer = CheckpointPaths::latest();
        let encoded = |k: crate::CheckpointKey| {
            crate::envelope::encode(
                crate::envelope::ObjectKind::LatestPointer,
                &spate_types::codec::encode(&k).unwrap(),
            )
        };
        let phantom = crate::CheckpointKey {
            time: BatchTime(99_000),
            ..newest
        };
        for (what, bytes) in [
            ("stale", Some(encoded(ms[0].key))),
            ("phantom", Some(encoded(phantom))),
            ("damaged", Some(b"not an envelope".to_vec())),
            ("missing", None),
        ] {
            match bytes {
                Some(b) => plant(&s, &pointer, b).await,
                None => raw_delete(&s, &pointer).await,
            }
            let r = latest(&s).await;
            assert_eq!(r.manifest.key, newest, "{}: {what} pointer", s.url());
            assert!(r.resolution.rejected.is_empty(), "{}: {what}", s.url());
        }
        // The newest damaged: the pointer names it; resolve falls back to the one before, with
        // the same rejection the full walk reports.
        plant(&s, &pointer, encoded(newest)).await;
        raw_delete(&s, &ms[3].objects[0].path).await;
        let r = latest(&s).await;
        assert_eq!(r.manifest.key, ms[2].key, "{}", s.url());
        assert!(matches!(
            r.resolution.rejected[..],
            [crate::protocol::Rejection {
                reason: RejectReason::MissingObject { .. },
                ..
            }]
        ));
    }
}
