//! The async shell: opens a location, gathers facts, executes the protocol's decisions.

use crate::envelope::{self, ObjectKind};
use crate::error::{CheckpointError, CorruptReason, Determinacy, Result};
use crate::manifest::{CheckpointKind, DataObjectRef, GraphDescriptionBlob, Manifest};
use crate::paths::{CheckpointKey, CheckpointPaths, ParsedName, GENERATIONS, RESTART_REPORTS};
use crate::protocol::{
    self, Facts, GcPlan, ListedObject, Listing, ManifestFact, ObjectCheck, Resolution, Retention,
};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use spate_types::{BatchTime, DurationMs, Generation, Lsn};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// S3 connection options; unset fields fall back to the usual `AWS_*` environment variables
/// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...).
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9014` (plain http is allowed when given here).
    pub endpoint: Option<String>,
    /// Region (any value for moto/s3s-fs; default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Use virtual-hosted-style requests (`bucket.host`); default false (path style).
    pub virtual_hosted_style: bool,
}

/// How thoroughly to verify referenced objects when resolving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerifyLevel {
    /// Read every referenced object and check envelope, size and crc (default).
    #[default]
    Full,
    /// Only check existence and size (a `HEAD` per object).
    Size,
}

/// Retry policy for transient failures (timeouts, connection and server errors).
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, including the first (≥ 1).
    pub attempts: u32,
    /// Backoff before the second attempt; doubles each time.
    pub initial_backoff: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Options of [`CheckpointStore::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// S3 options (for `s3://` URLs).
    pub s3: S3Options,
    /// Timeout of every request (a PUT to a dead port fails after this); default 30 s.
    pub request_timeout: Duration,
    /// TCP connect timeout for S3; default 5 s.
    pub connect_timeout: Duration,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Verification used by [`CheckpointStore::resolve_latest`].
    pub verify: VerifyLevel,
    /// Create a local checkpoint directory that does not exist (default true; read-only tools such
    /// as `spate checkpoint ls` set it false so a typo is an error, not a new empty directory).
    pub create_local_dir: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            s3: S3Options::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            verify: VerifyLevel::Full,
            create_local_dir: true,
        }
    }
}

fn writer_nonce() -> u64 {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (n << 48) ^ u64::from(std::process::id()).rotate_left(24)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Opens the `object_store` behind a checkpoint URL: a bare path or `file:///path` (LocalFileSystem
/// with fsync, directory created), `s3://bucket[/prefix]`, or `memory://`. Returns the store and the
/// prefix inside it.
///
/// # Errors
/// [`CheckpointError::InvalidLocation`] for an unknown scheme, a bucketless S3 URL or a directory
/// that cannot be created.
pub fn open_object_store(url: &str, opts: &StoreOptions) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let invalid = |reason: String| CheckpointError::InvalidLocation {
        url: url.to_owned(),
        reason,
    };
    if url == "memory://" || url.starts_with("memory://") {
        return Ok((
            Arc::new(object_store::memory::InMemory::new()),
            Path::default(),
        ));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket in s3:// URL".into()));
        }
        let mut client = object_store::ClientOptions::new()
            .with_timeout(opts.request_timeout)
            .with_connect_timeout(opts.connect_timeout);
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(opts.s3.virtual_hosted_style)
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: 1,
                retry_timeout: opts.request_timeout,
            });
        let endpoint = opts
            .s3
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(e) = &endpoint {
            b = b.with_endpoint(e);
        }
        if endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"))
            || std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true")
        {
            client = client.with_allow_http(true);
        }
        b = b.with_region(
            opts.s3
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .unwrap_or_else(|| "us-east-1".into()),
        );
        if let Some(k) = &opts.s3.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &opts.s3.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let s3 = b
            .with_client_options(client)
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        let prefix = Path::parse(prefix.trim_matches('/')).map_err(|e| invalid(e.to_string()))?;
        return Ok((Arc::new(s3), prefix));
    }
    let dir = if let Some(p) = url.strip_prefix("file://") {
        p.to_owned()
    } else if url.contains("://") {
        return Err(invalid(
            "unsupported scheme (use a path, file://, s3:// or memory://)".into(),
        ));
    } else {
        url.to_owned()
    };
    if dir.is_empty() {
        return Err(invalid("empty path".into()));
    }
    if opts.create_local_dir {
        std::fs::create_dir_all(&dir).map_err(|e| invalid(format!("cannot create {dir}: {e}")))?;
    } else if !std::path::Path::new(&dir).is_dir() {
        return Err(invalid(format!("{dir} is not a directory")));
    }
    let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| invalid(e.to_string()))?
        .with_fsync(true);
    Ok((Arc::new(fs), Path::default()))
}

/// A checkpoint location: reading, resolving, verifying and GC. Writing goes through a
/// [`Committer`] obtained from [`CheckpointStore::open_committer`].
///
/// Cloning is cheap (shares the `object_store`).
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
    opts: StoreOptions,
    /// What GC already verified in this process (shared by clones): see [`GcCache`].
    gc_cache: Arc<std::sync::Mutex<GcCache>>,
}

/// Per-process memory of GC verification, so a GC does not re-read what an earlier one (or this
/// process's own committer) already checked: manifests by key, and data objects by path with the
/// size and crc32 they verified with. Every name is create-only (never overwritten), so a name
/// stands for the same bytes for as long as it exists; an entry is used only while the object is
/// still listed with the same size, and entries whose names left the listing are dropped.
///
/// Without it every GC read every object of the newest `keep` checkpoints again, and since each
/// checkpoint references the whole delta chain of its state, that was `keep` x chain length
/// reads per GC: on an S3 server with 40 ms small-object reads, seconds per GC, longer than the
/// batch interval, so a stateful job fell further behind every batch (found as a final run that
/// never went idle). Not covered (as before, outside the fault model within a running process):
/// an object damaged in the store after this process verified or wrote it; the next process
/// verifies everything once again, and restore ([`CheckpointStore::resolve_latest`]) always reads
/// in full.
#[derive(Debug, Default)]
struct GcCache {
    manifests: BTreeMap<CheckpointKey, Manifest>,
    objects: BTreeMap<String, (u64, u32)>,
}

/// A resolved checkpoint: its manifest and how it was chosen.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The chosen manifest.
    pub manifest: Manifest,
    /// Every newer candidate that was rejected, and why.
    pub resolution: Resolution,
}

/// Verification result of one checkpoint (the CLI's `ls`/`verify`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckpointStatus {
    /// Manifest object.
    pub manifest: String,
    /// Its key.
    pub key: CheckpointKey,
    /// The decoded manifest summary, if readable.
    pub batch_time: Option<BatchTime>,
    /// Kind, if readable.
    pub kind: Option<CheckpointKind>,
    /// Total referenced bytes, if readable.
    pub data_bytes: Option<u64>,
    /// `None` if it verifies, otherwise why not.
    pub problem: Option<protocol::RejectReason>,
}

impl CheckpointStore {
    /// Opens the location at `url` for reading (no probe, no generation claim).
    ///
    /// # Errors
    /// See [`open_object_store`].
    pub fn open(url: &str, opts: StoreOptions) -> Result<CheckpointStore> {
        let (store, prefix) = open_object_store(url, &opts)?;
        Ok(CheckpointStore::with_store(store, prefix, url, opts))
    }

    /// Wraps an existing `object_store` (tests wrap fault injectors this way).
    #[must_use]
    pub fn with_store(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        url: &str,
        opts: StoreOptions,
    ) -> CheckpointStore {
        CheckpointStore {
            store,
            prefix,
            url: url.to_owned(),
            opts,
            gc_cache: Arc::default(),
        }
    }

    /// The location's URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The underlying `object_store` and the location's prefix in it (for tools and tests that
    /// need raw access; writing through it bypasses every guarantee of this crate).
    #[must_use]
    pub fn raw(&self) -> (&Arc<dyn ObjectStore>, &Path) {
        (&self.store, &self.prefix)
    }

    /// The full `object_store` path of a relative object name.
    #[must_use]
    pub fn full_path(&self, rel: &str) -> Path {
        self.full(rel)
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    fn full(&self, rel: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix.as_ref()))
        }
    }

    fn rel(&self, p: &Path) -> String {
        let s = p.as_ref();
        if self.prefix.as_ref().is_empty() {
            s.to_owned()
        } else {
            s.strip_prefix(self.prefix.as_ref())
                .map_or(s, |r| r.trim_start_matches('/'))
                .to_owned()
        }
    }

    async fn timed<T, F>(&self, op: &'static str, object: &str, write: bool, fut: F) -> Result<T>
    where
        F: Future<Output = object_store::Result<T>>,
    {
        match tokio::time::timeout(self.opts.request_timeout, fut).await {
            Err(_) => Err(CheckpointError::Timeout {
                op,
                object: object.to_owned(),
                after_ms: u64::try_from(self.opts.request_timeout.as_millis()).unwrap_or(u64::MAX),
                determinacy: if write {
                    Determinacy::Indeterminate
                } else {
                    Determinacy::Determinate
                },
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let determinacy = match &e {
                    object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
                        if write =>
                    {
                        Determinacy::Indeterminate
                    }
                    _ => Determinacy::Determinate,
                };
                Err(CheckpointError::Store {
                    op,
                    object: object.to_owned(),
                    determinacy,
                    source: e,
                })
            }
        }
    }

    async fn backoff(&self, attempt: u32) {
        let p = &self.opts.retry;
        let factor = 1u32 << attempt.min(16);
        let d = p.initial_backoff.saturating_mul(factor).min(p.max_backoff);
        tokio::time::sleep(d).await;
    }

    /// Reads `rel`, retrying transient failures; `Ok(None)` if it does not exist.
    async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>> {
        let path = self.full(rel);
        let mut attempt = 0;
        loop {
            let r = self
                .timed("get", rel, false, async {
                    let g = self.store.get(&path).await?;
                    g.bytes().await
                })
                .await;
            match r {
                Ok(b) => return Ok(Some(b)),
                Err(CheckpointError::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => return Ok(None),
                Err(e) if e.is_transient() && attempt + 1 < self.opts.retry.attempts => {
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates `rel` with `PutMode::Create`. `Ok(true)`: created by this call (or by an earlier
    /// attempt of it whose response was lost, detected by reading back identical bytes);
    /// `Ok(false)`: it already existed with different bytes.
    async fn create(&self, rel: &str, bytes: Bytes) -> Result<bool> {
        let path = self.full(rel);
        let mut attempt = 0;
        let mut maybe_ours = false;
        loop {
            let r = self
                .timed(
                    "put",
                    rel,
                    true,
                    self.store.put_opts(
                        &path,
                        PutPayload::from_bytes(bytes.clone()),
                        PutOptions::from(PutMode::Create),
                    ),
                )
                .await;
            match r {
                Ok(_) => return Ok(true),
                Err(CheckpointError::Store {
                    source: object_store::Error::AlreadyExists { .. },
                    ..
                }) => {
                    // Either another writer's object, or our own earlier attempt that succeeded
                    // but whose response was lost: read and compare.
                    // Identical bytes (which embed a creation time and writer identity for
                    // manifests and claims) mean the object is ours.
                    let existing = match self.get_opt(rel).await {
                        Ok(x) => x,
                        Err(e) if maybe_ours => return Err(e.into_indeterminate()),
                        Err(e) => return Err(e),
                    };
                    return Ok(existing.as_ref() == Some(&bytes));
                }
                Err(e) if e.is_transient() => {
                    if e.determinacy() == Determinacy::Indeterminate {
                        maybe_ours = true;
                    }
                    if attempt + 1 >= self.opts.retry.attempts {
                        // Indeterminate: re-read once before deciding.
                        if maybe_ours {
                            if let Ok(Some(existing)) = self.get_opt(rel).await {
                                if existing == bytes {
                                    return Ok(true);
                                }
                            }
                        }
                        return Err(if maybe_ours {
                            e.into_indeterminate()
                        } else {
                            e
                        });
                    }
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) if maybe_ours => return Err(e.into_indeterminate()),
                Err(e) => return Err(e),
            }
        }
    }

    async fn delete(&self, rel: &str) -> Result<()> {
        let path = self.full(rel);
        match self
            .timed("delete", rel, true, self.store.delete(&path))
            .await
        {
            Ok(()) => Ok(()),
            // LocalFileSystem reports NotFound for a missing key where S3 returns Ok.
            Err(CheckpointError::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Lists every object under the location (relative names).
    ///
    /// # Errors
    /// [`CheckpointError::Store`] / [`CheckpointError::Timeout`] naming the location.
    pub async fn list_raw(&self, under: Option<&str>) -> Result<Vec<ListedObject>> {
        let prefix = match under {
            Some(u) => self.full(u),
            None => self.prefix.clone(),
        };
        let prefix_opt = (!prefix.as_ref().is_empty()).then_some(&prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .timed(
                "list",
                under.unwrap_or(&self.url),
                false,
                self.store.list(prefix_opt).try_collect(),
            )
            .await?;
        let mut out: Vec<ListedObject> = metas
            .into_iter()
            .map(|m| ListedObject {
                path: self.rel(&m.location),
                size: m.size,
                last_modified_ms: m.last_modified.timestamp_millis(),
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Lists and classifies the location.
    ///
    /// # Errors
    /// As [`CheckpointStore::list_raw`].
    pub async fn listing(&self) -> Result<Listing> {
        Ok(Listing::classify(self.list_raw(None).await?))
    }

    /// Reads and decodes the manifest of `key`.
    ///
    /// # Errors
    /// [`CheckpointError::NotFound`], [`CheckpointError::Corrupt`], [`CheckpointError::NewerFormat`]
    /// naming the manifest, or a request error.
    pub async fn read_manifest(&self, key: CheckpointKey) -> Result<Manifest> {
        let rel = CheckpointPaths::manifest(key);
        let bytes = self
            .get_opt(&rel)
            .await?
            .ok_or_else(|| CheckpointError::NotFound {
                object: rel.clone(),
            })?;
        Manifest::from_bytes(&rel, &bytes)
    }

    /// Reads a data object and verifies it against its reference (size, envelope, crc). Returns the
    /// payload.
    ///
    /// # Errors
    /// [`CheckpointError::MissingObject`]-style [`CheckpointError::NotFound`],
    /// [`CheckpointError::Corrupt`] naming the object, or a request error.
    pub async fn read_object(&self, r: &DataObjectRef) -> Result<Bytes> {
        let bytes = self
            .get_opt(&r.path)
            .await?
            .ok_or_else(|| CheckpointError::NotFound {
                object: r.path.clone(),
            })?;
        verify_object_bytes(r, &bytes)?;
        Ok(bytes.slice(envelope::HEADER_LEN..))
    }

    async fn check_object(&self, r: &DataObjectRef, level: VerifyLevel) -> Result<ObjectCheck> {
        match level {
            VerifyLevel::Full => match self.read_object(r).await {
                Ok(_) => Ok(ObjectCheck::Ok),
                Err(CheckpointError::NotFound { .. }) => Ok(ObjectCheck::Missing),
                Err(
                    e @ (CheckpointError::Corrupt { .. } | CheckpointError::NewerFormat { .. }),
                ) => Ok(ObjectCheck::Corrupt(e.to_string())),
                Err(e) => Err(e),
            },
            VerifyLevel::Size => {
                let path = self.full(&r.path);
                match self
                    .timed("head", &r.path, false, self.store.head(&path))
                    .await
                {
                    Ok(m) if m.size == r.size => Ok(ObjectCheck::Ok),
                    Ok(m) => Ok(ObjectCheck::Corrupt(
                        CorruptReason::SizeMismatch {
                            expected: r.size,
                            actual: m.size,
                        }
                        .to_string(),
                    )),
                    Err(CheckpointError::Store {
                        source: object_store::Error::NotFound { .. },
                        ..
                    }) => Ok(ObjectCheck::Missing),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gathers the facts about one manifest (reads it and checks every referenced object).
    async fn gather(&self, key: CheckpointKey, level: VerifyLevel) -> Result<ManifestFact> {
        match self.read_manifest(key).await {
            Ok(m) => {
                let mut checks = BTreeMap::new();
                for r in &m.objects {
                    if !checks.contains_key(&r.path) {
                        let c = self.check_object(r, level).await?;
                        checks.insert(r.path.clone(), c);
                    }
                }
                Ok(ManifestFact::Read {
                    manifest: Box::new(m),
                    checks,
                })
            }
            Err(
                e @ (CheckpointError::NotFound { .. }
                | CheckpointError::Corrupt { .. }
                | CheckpointError::NewerFormat { .. }),
            ) => Ok(ManifestFact::Unreadable(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_floors(
        &self,
        listing: &Listing,
    ) -> Result<BTreeMap<Generation, Option<CheckpointKey>>> {
        let mut floors = BTreeMap::new();
        for g in &listing.floors {
            let rel = CheckpointPaths::floor(*g);
            let Some(bytes) = self.get_opt(&rel).await? else {
                continue;
            };
            // A damaged floor is ignored (conservative for acceptance: it can only hide zombie
            // manifests, and its generation's own manifests are unaffected).
            if let Ok(d) = envelope::decode(&rel, ObjectKind::Floor, &bytes) {
                if let Ok(f) = spate_types::codec::decode::<Option<CheckpointKey>>(d.payload) {
                    floors.insert(*g, f);
                }
            }
        }
        Ok(floors)
    }

    /// Finds the newest checkpoint that verifies, falling back to older ones; the resolution lists
    /// every rejected newer candidate and why (for the restart report). `Ok(None)` if the location
    /// holds no manifest at all.
    ///
    /// # Errors
    /// [`CheckpointError::NoValidCheckpoint`] if manifests exist but none verifies; request errors
    /// (an unreachable store is never mistaken for "no checkpoint").
    pub async fn resolve_latest(&self) -> Result<Option<Resolved>> {
        let listing = self.listing().await?;
        let (resolution, mut facts) = self.resolve_with(&listing, self.opts.verify).await?;
        match resolution.chosen {
            Some(k) => match facts.manifests.remove(&k) {
                Some(ManifestFact::Read { manifest, .. }) => Ok(Some(Resolved {
                    manifest: *manifest,
                    resolution,
                })),
                _ => Err(CheckpointError::NotFound {
                    object: CheckpointPaths::manifest(k),
                }),
            },
            None if listing.manifests.is_empty() => Ok(None),
            None => Err(CheckpointError::NoValidCheckpoint {
                rejected: resolution.rejected,
            }),
        }
    }

    async fn resolve_with(
        &self,
        listing: &Listing,
        level: VerifyLevel,
    ) -> Result<(Resolution, Facts)> {
        let mut facts = Facts {
            floors: self.read_floors(listing).await?,
            ..Facts::default()
        };
        for key in listing.manifests.iter().rev() {
            match protocol::judge(*key, &facts) {
                protocol::Verdict::Accept => break,
                protocol::Verdict::Reject(_) => continue,
                protocol::Verdict::Unknown => {}
            }
            let fact = self.gather(*key, level).await?;
            facts.manifests.insert(*key, fact);
            if protocol::judge(*key, &facts) == protocol::Verdict::Accept {
                break;
            }
        }
        Ok((protocol::resolve_latest(listing, &facts), facts))
    }

    /// Verifies every checkpoint (full read of every referenced object), newest first.
    ///
    /// # Errors
    /// Request errors only; damage is reported per checkpoint.
    pub async fn verify_all(&self, level: VerifyLevel) -> Result<Vec<CheckpointStatus>> {
        let listing = self.listing().await?;
        let mut facts = Facts {
            floors: self.read_floors(&listing).await?,
            ..Facts::default()
        };
        let mut out = Vec::new();
        for key in listing.manifests.iter().rev() {
            let fact = self.gather(*key, level).await?;
            facts.manifests.insert(*key, fact);
            let problem = match protocol::judge(*key, &facts) {
                protocol::Verdict::Reject(r) => Some(r),
                _ => None,
            };
            let m = match facts.manifests.get(key) {
                Some(ManifestFact::Read { manifest, .. }) => Some(manifest),
                _ => None,
            };
            out.push(CheckpointStatus {
                manifest: CheckpointPaths::manifest(*key),
                key: *key,
                batch_time: m.map(|m| m.batch_time),
                kind: m.map(|m| m.kind),
                data_bytes: m.map(|m| m.data_bytes()),
                problem,
            });
        }
        Ok(out)
    }

    /// Plans GC: classifies every object as referenced/unreferenced under `retention` (a dry run:
    /// deletes nothing).
    ///
    /// "Valid" is decided with a **full** verification (every referenced object read and its crc
    /// checked), newest first, until `retention.keep` valid checkpoints are found: a size-only check
    /// would count a bit-flipped checkpoint as valid and let GC delete the last good one. Older
    /// manifests are only read if pinned (for their references).
    ///
    /// # Errors
    /// Request errors.
    pub async fn plan_gc(&self, retention: &Retention) -> Result<GcPlan> {
        let listing = self.listing().await?;
        let mut facts = Facts {
            floors: self.read_floors(&listing).await?,
            ..Facts::default()
        };
        let keep = retention.keep.max(1);
        let mut valid = BTreeSet::new();
        let mut refs = BTreeMap::new();
        for key in listing.manifests.iter().rev() {
            if valid.len() >= keep {
                if retention.pinned.contains(key) {
                    if let Ok(m) = self.read_manifest(*key).await {
                        refs.insert(*key, m.objects.iter().map(|o| o.path.clone()).collect());
                    }
                }
                continue;
            }
            let fact = self.gather_for_gc(*key, &listing).await?;
            if let ManifestFact::Read { manifest, .. } = &fact {
                refs.insert(
                    *key,
                    manifest.objects.iter().map(|o| o.path.clone()).collect(),
                );
            }
            facts.manifests.insert(*key, fact);
            if protocol::judge(*key, &facts) == protocol::Verdict::Accept {
                valid.insert(*key);
            }
        }
        self.prune_gc_cache(&listing);
        Ok(protocol::plan_gc(&listing, &valid, &refs, retention))
    }

    /// As [`gather`](Self::gather) with [`VerifyLevel::Full`], but through the [`GcCache`]: a
    /// manifest read before is not read again, and an object verified before (same path, size and
    /// crc, still listed with that size) is not read again. New results are remembered.
    async fn gather_for_gc(&self, key: CheckpointKey, listing: &Listing) -> Result<ManifestFact> {
        let cached = self.gc_lock().manifests.get(&key).cloned();
        let m = match cached {
            Some(m) => m,
            None => match self.read_manifest(key).await {
                Ok(m) => {
                    self.gc_lock().manifests.insert(key, m.clone());
                    m
                }
                Err(
                    e @ (CheckpointError::NotFound { .. }
                    | CheckpointError::Corrupt { .. }
                    | CheckpointError::NewerFormat { .. }),
                ) => return Ok(ManifestFact::Unreadable(e.to_string())),
                Err(e) => return Err(e),
            },
        };
        let mut checks = BTreeMap::new();
        for r in &m.objects {
            if checks.contains_key(&r.path) {
                continue;
            }
            let known = self.gc_lock().objects.get(&r.path) == Some(&(r.size, r.crc32))
                && listing.data.get(&r.path).is_some_and(|o| o.size == r.size);
            let c = if known {
                ObjectCheck::Ok
            } else {
                let c = self.check_object(r, VerifyLevel::Full).await?;
                if c == ObjectCheck::Ok {
                    self.remember_object(&r.path, r.size, r.crc32);
                }
                c
            };
            checks.insert(r.path.clone(), c);
        }
        Ok(ManifestFact::Read {
            manifest: Box::new(m),
            checks,
        })
    }

    fn gc_lock(&self) -> std::sync::MutexGuard<'_, GcCache> {
        // The cache holds plain data; a panic elsewhere cannot leave it inconsistent.
        self.gc_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an object this process verified or wrote itself (`size`: envelope bytes).
    fn remember_object(&self, rel: &str, size: u64, crc32: u32) {
        self.gc_lock().objects.insert(rel.to_owned(), (size, crc32));
    }

    /// Drops cache entries whose names are no longer listed (deleted by GC or by someone else).
    fn prune_gc_cache(&self, listing: &Listing) {
        let listed: BTreeSet<&CheckpointKey> = listing.manifests.iter().collect();
        let mut c = self.gc_lock();
        c.manifests.retain(|k, _| listed.contains(k));
        c.objects.retain(|p, _| listing.data.contains_key(p));
    }

    /// Plans and executes GC: deletes only the plan's `Delete` objects, manifests first and then
    /// data objects, so a checkpoint never loses an object while its manifest is still visible.
    /// Re-running after a failure is safe.
    ///
    /// # Errors
    /// Request errors (the plan is partially executed; rerunning is safe).
    pub async fn gc(&self, retention: &Retention) -> Result<GcPlan> {
        let plan = self.plan_gc(retention).await?;
        let (manifests, data): (Vec<&str>, Vec<&str>) =
            plan.deletions().partition(|p| p.starts_with("manifests/"));
        for p in manifests.into_iter().chain(data) {
            spate_types::spate_fail!("checkpoint::gc::delete::before", |a| Err(
                CheckpointError::failpoint("checkpoint::gc::delete::before", p, &a, false)
            ));
            self.delete(p).await?;
        }
        Ok(plan)
    }

    /// Writes `rel` unconditionally (overwrite), retrying transient failures (a repeated PUT of the
    /// same bytes is idempotent).
    async fn put_overwrite(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let path = self.full(rel);
        let mut attempt = 0;
        loop {
            let r = self
                .timed(
                    "put",
                    rel,
                    true,
                    self.store.put(&path, PutPayload::from_bytes(bytes.clone())),
                )
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.is_transient() && attempt + 1 < self.opts.retry.attempts => {
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores a restart report as `restart-reports/<time_ms:020>-<generation:020>.json`
    /// ([`CheckpointPaths::restart_report`]) and returns that object name. The engine writes one per
    /// recovery attempt (`get_or_create`); `spate checkpoint reports` lists them.
    ///
    /// `time_ms` is the wall-clock time of the attempt (ms since the Unix epoch), `generation` the
    /// generation the caller records in the name (recovery passes the restored checkpoint's, 0 for
    /// none); names sort by time, then generation. The bytes are stored as given
    /// (plain JSON, no envelope, so `cat` works); a second report with the same name overwrites the
    /// first. Restart reports are never chosen by resolve, never deleted by GC and kept in place by
    /// [`CheckpointStore::archive`].
    ///
    /// # Durability
    /// On `Ok`, the report is durable (fsynced file and directory on local disk; an acknowledged PUT
    /// on S3).
    ///
    /// # Errors
    /// [`CheckpointError::InvalidArgument`] if `json` is not valid JSON; request errors.
    pub async fn put_restart_report(
        &self,
        time_ms: u64,
        generation: Generation,
        json: Bytes,
    ) -> Result<String> {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&json) {
            return Err(CheckpointError::InvalidArgument(format!(
                "restart report is not valid JSON: {e}"
            )));
        }
        let rel = CheckpointPaths::restart_report(time_ms, generation);
        self.put_overwrite(&rel, json).await?;
        Ok(rel)
    }

    /// Names of every restart report (`restart-reports/...`), **oldest first** (ascending name =
    /// ascending `(time, generation)`). Names under `restart-reports/` that do not parse are not
    /// included (they are "unknown" objects).
    ///
    /// # Errors
    /// Request errors.
    pub async fn list_restart_reports(&self) -> Result<Vec<String>> {
        let listed = self.list_raw(Some(RESTART_REPORTS)).await?;
        Ok(listed
            .into_iter()
            .filter(|o| {
                matches!(
                    CheckpointPaths::parse(&o.path),
                    ParsedName::RestartReport { .. }
                )
            })
            .map(|o| o.path)
            .collect())
    }

    /// Reads one restart report (a name from [`CheckpointStore::list_restart_reports`]) and returns
    /// its bytes as stored.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidArgument`] if `name` is not a restart-report name,
    /// [`CheckpointError::NotFound`] if it does not exist, request errors.
    pub async fn read_restart_report(&self, name: &str) -> Result<Bytes> {
        if !matches!(
            CheckpointPaths::parse(name),
            ParsedName::RestartReport { .. }
        ) {
            return Err(CheckpointError::InvalidArgument(format!(
                "{name:?} is not a restart report name (restart-reports/<time:020>-<generation:020>.json)"
            )));
        }
        self.get_opt(name)
            .await?
            .ok_or_else(|| CheckpointError::NotFound {
                object: name.to_owned(),
            })
    }

    /// Copies `from` to `to` (server-side), retrying transient failures. `Ok(false)` if `from` no
    /// longer exists.
    async fn copy_object(&self, from: &str, to: &str) -> Result<bool> {
        let (src, dst) = (self.full(from), self.full(to));
        let mut attempt = 0;
        loop {
            match self
                .timed("copy", from, true, self.store.copy(&src, &dst))
                .await
            {
                Ok(()) => return Ok(true),
                Err(CheckpointError::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => return Ok(false),
                Err(e) if e.is_transient() && attempt + 1 < self.opts.retry.attempts => {
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Size of `rel` (a `HEAD`), `Ok(None)` if it does not exist.
    async fn size_of(&self, rel: &str) -> Result<Option<u64>> {
        let path = self.full(rel);
        let mut attempt = 0;
        loop {
            match self.timed("head", rel, false, self.store.head(&path)).await {
                Ok(m) => return Ok(Some(m.size)),
                Err(CheckpointError::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => return Ok(None),
                Err(e) if e.is_transient() && attempt + 1 < self.opts.retry.attempts => {
                    self.backoff(attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sets the location's contents aside instead of deleting them (the `create_on_error` path of
    /// recovery; Spark's `getOrCreate(createOnError = true)` deletes the checkpoint).
    ///
    /// 1. Lists the location and copies every object except existing archives (manifests, data,
    ///    generation markers, restart reports, probes and unknown/garbage objects alike) to
    ///    `archived/<label>/<original name>` ([`CheckpointPaths::archived`]) with the store's
    ///    server-side copy (a hard link on local disk, `CopyObject` on S3).
    /// 2. Checks every copy's size (`HEAD`) against the listed size.
    /// 3. Deletes the originals: **every manifest first** (oldest first), then data objects, probes
    ///    and unknown objects. Generation claims and floors stay in place (so the next writer still
    ///    claims a generation above every earlier one and older writers stay fenced), and so do
    ///    restart reports (the location's history); both are also in the archive.
    ///
    /// Afterwards [`CheckpointStore::resolve_latest`] returns `Ok(None)`. A crash at any point
    /// leaves either the original checkpoints (with all their objects: data is deleted only after
    /// every manifest) plus a partial archive, or no manifest at all: never a resolvable half. An
    /// interrupted archive is redone with a **new** label (the originals that remain are copied
    /// again); the partial copy under the old label stays for inspection.
    ///
    /// Call it only when no other writer is publishing to the location (recovery calls it after
    /// claiming its generation, which fences older writers: a fenced writer's later publish is
    /// rejected by resolve). Objects that vanish between the listing and their copy are skipped
    /// and counted in [`ArchiveReport::vanished`].
    ///
    /// # Durability
    /// On `Ok`, every copy is durable (local disk: the copy is a hard link of an fsynced file,
    /// published by a rename whose directory is fsynced) and the originals are deleted.
    ///
    /// # Errors
    /// * [`CheckpointError::InvalidArgument`] if `label` is not a valid label
    ///   ([`CheckpointPaths::valid_label`]: 1..=128 bytes of `[A-Za-z0-9._-]`, not starting with
    ///   `.`) or `archived/<label>/` already holds objects (nothing is copied or deleted then);
    /// * [`CheckpointError::Corrupt`] with [`CorruptReason::SizeMismatch`] naming the copy if a
    ///   copy's size differs from the original's (nothing has been deleted then);
    /// * request errors (copy, `HEAD`, delete); rerunning with a new label is safe.
    pub async fn archive(&self, label: &str) -> Result<ArchiveReport> {
        if !CheckpointPaths::valid_label(label) {
            return Err(CheckpointError::InvalidArgument(format!(
                "archive label {label:?} is invalid (allowed: [A-Za-z0-9._-], 1..=128 bytes, not starting with '.')"
            )));
        }
        let prefix = CheckpointPaths::archive_prefix(label);
        let listed = self.list_raw(None).await?;
        if listed.iter().any(|o| o.path.starts_with(&prefix)) {
            return Err(CheckpointError::InvalidArgument(format!(
                "archive label {label:?} is already used ({prefix} holds objects); choose a new label"
            )));
        }
        let mut report = ArchiveReport {
            label: label.to_owned(),
            prefix,
            objects: 0,
            bytes: 0,
            manifests: 0,
            deleted: 0,
            kept_in_place: 0,
            vanished: 0,
        };
        let mut manifests = Vec::new();
        let mut others = Vec::new();
        for o in listed {
            let parsed = CheckpointPaths::parse(&o.path);
            if matches!(parsed, ParsedName::Archived { .. }) {
                continue;
            }
            let to = CheckpointPaths::archived(label, &o.path);
            if !self.copy_object(&o.path, &to).await? {
                report.vanished += 1;
                continue;
            }
            match self.size_of(&to).await? {
                Some(n) if n == o.size => {}
                actual => {
                    return Err(CheckpointError::Corrupt {
                        object: to,
                        reason: CorruptReason::SizeMismatch {
                            expected: o.size,
                            actual: actual.unwrap_or(0),
                        },
                    })
                }
            }
            report.objects += 1;
            report.bytes += o.size;
            match parsed {
                ParsedName::Manifest(k) => manifests.push((k, o.path)),
                ParsedName::Generation(_)
                | ParsedName::Floor(_)
                | ParsedName::RestartReport { .. } => report.kept_in_place += 1,
                _ => others.push(o.path),
            }
        }
        manifests.sort();
        report.manifests = manifests.len();
        for p in manifests.into_iter().map(|(_, p)| p).chain(others) {
            self.delete(&p).await?;
            report.deleted += 1;
        }
        tracing::info!(
            url = %self.url,
            prefix = %report.prefix,
            objects = report.objects,
            bytes = report.bytes,
            manifests = report.manifests,
            "checkpoint location archived"
        );
        Ok(report)
    }

    /// Probes conditional-create support: creates a probe object twice with `PutMode::Create`; the
    /// second must fail with `AlreadyExists`. Deletes the probe afterwards.
    ///
    /// # Errors
    /// [`CheckpointError::ConditionalCreateUnsupported`] if the second create succeeded; request
    /// errors otherwise.
    pub async fn probe_conditional_create(&self) -> Result<()> {
        let nonce = format!(
            "{}-{}-{:x}",
            now_ms(),
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        let rel = CheckpointPaths::probe(&nonce);
        let path = self.full(&rel);
        let a = Bytes::from(envelope::encode(ObjectKind::Probe, b"first"));
        let b = Bytes::from(envelope::encode(ObjectKind::Probe, b"second"));
        self.timed(
            "put",
            &rel,
            true,
            self.store
                .put_opts(&path, a.into(), PutOptions::from(PutMode::Create)),
        )
        .await?;
        let second = self
            .timed(
                "put",
                &rel,
                true,
                self.store
                    .put_opts(&path, b.into(), PutOptions::from(PutMode::Create)),
            )
            .await;
        let _ = self.delete(&rel).await;
        match second {
            Err(CheckpointError::Store {
                source: object_store::Error::AlreadyExists { .. },
                ..
            }) => Ok(()),
            Ok(_) => Err(CheckpointError::ConditionalCreateUnsupported {
                url: self.url.clone(),
                probe: rel,
            }),
            Err(CheckpointError::Store {
                source:
                    object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. },
                ..
            }) => Err(CheckpointError::ConditionalCreateUnsupported {
                url: self.url.clone(),
                probe: rel,
            }),
            Err(e) => Err(e),
        }
    }

    /// Opens a writer: probes conditional create, claims a new generation (the first `N` above every
    /// listed claim for which a create-only `generations/<N>` succeeds), then records its floor (the
    /// newest manifest visible now). From here on, older writers are fenced.
    ///
    /// # Errors
    /// [`CheckpointError::ConditionalCreateUnsupported`]; request errors.
    pub async fn open_committer(&self) -> Result<Committer> {
        self.probe_conditional_create().await?;
        let listing = self.listing().await?;
        let mut g = listing
            .newest_generation()
            .map_or(Generation(1), Generation::next);
        loop {
            let rel = CheckpointPaths::generation(g);
            // The nonce makes every claim's bytes unique, so "AlreadyExists with identical bytes"
            // (our own earlier attempt whose response was lost) is never confused with a
            // concurrent claimer in the same process and millisecond.
            let claim =
                spate_types::codec::encode(&(g, now_ms(), std::process::id(), writer_nonce()))
                    .map_err(|e| CheckpointError::Encode {
                        what: "generation claim",
                        reason: e.to_string(),
                    })?;
            if self
                .create(
                    &rel,
                    Bytes::from(envelope::encode(ObjectKind::GenerationClaim, &claim)),
                )
                .await?
            {
                break;
            }
            g = g.next();
        }
        // Floor: the newest manifest visible after the claim.
        let after = self.list_raw(Some("manifests")).await?;
        let floor = Listing::classify(after).manifests.last().copied();
        let payload = spate_types::codec::encode(&floor).map_err(|e| CheckpointError::Encode {
            what: "floor",
            reason: e.to_string(),
        })?;
        self.create(
            &CheckpointPaths::floor(g),
            Bytes::from(envelope::encode(ObjectKind::Floor, &payload)),
        )
        .await?;
        let min_time = floor.map_or(BatchTime(0), |k| k.time);
        Ok(Committer {
            store: self.clone(),
            generation: g,
            last: floor,
            min_time,
        })
    }

    /// Fails with [`CheckpointError::Fenced`] if a generation newer than `ours` has been claimed.
    async fn check_fence(&self, ours: Generation, published: bool) -> Result<()> {
        spate_types::spate_fail!("checkpoint::fence::check", |a| Err(
            CheckpointError::failpoint("checkpoint::fence::check", GENERATIONS, &a, false)
        ));
        let offset = self.full(&CheckpointPaths::floor(ours));
        let prefix = self.full(GENERATIONS);
        let newer: Vec<object_store::ObjectMeta> = self
            .timed(
                "list",
                GENERATIONS,
                false,
                self.store
                    .list_with_offset(Some(&prefix), &offset)
                    .try_collect(),
            )
            .await?;
        let newest = newer
            .iter()
            .filter_map(|m| match CheckpointPaths::parse(&self.rel(&m.location)) {
                ParsedName::Generation(g) | ParsedName::Floor(g) if g > ours => Some(g),
                _ => None,
            })
            .max();
        match newest {
            Some(newer) => Err(CheckpointError::Fenced {
                ours,
                newer,
                published,
            }),
            None => Ok(()),
        }
    }
}

/// What [`CheckpointStore::archive`] did.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchiveReport {
    /// The archive's label.
    pub label: String,
    /// Where the copies are: `archived/<label>/` (relative to the location root; each copy keeps
    /// its original name after the prefix).
    pub prefix: String,
    /// Objects copied (and size-checked).
    pub objects: usize,
    /// Bytes copied (sum of the originals' sizes).
    pub bytes: u64,
    /// Manifests among them (all deleted, before anything else).
    pub manifests: usize,
    /// Originals deleted (manifests, data objects, probes, unknown objects).
    pub deleted: usize,
    /// Originals copied but left in place: generation claims, floors and restart reports.
    pub kept_in_place: usize,
    /// Objects listed but gone before they could be copied (not in the archive).
    pub vanished: usize,
}

/// Verifies stored bytes against a reference.
///
/// # Errors
/// [`CheckpointError::Corrupt`] (size, envelope, crc) or [`CheckpointError::NewerFormat`].
pub fn verify_object_bytes(r: &DataObjectRef, bytes: &[u8]) -> Result<()> {
    if bytes.len() as u64 != r.size {
        return Err(CheckpointError::Corrupt {
            object: r.path.clone(),
            reason: CorruptReason::SizeMismatch {
                expected: r.size,
                actual: bytes.len() as u64,
            },
        });
    }
    let d = envelope::decode(&r.path, ObjectKind::Data, bytes)?;
    if d.payload_crc != r.crc32 {
        return Err(CheckpointError::Corrupt {
            object: r.path.clone(),
            reason: CorruptReason::PayloadCrc {
                expected: r.crc32,
                computed: d.payload_crc,
            },
        });
    }
    Ok(())
}

/// What to commit: everything of a [`Manifest`] except its key, generation and creation time, plus
/// the new data objects to write first.
#[derive(Clone, Debug)]
pub struct CheckpointDraft {
    /// Kind.
    pub kind: CheckpointKind,
    /// Batch time, ms.
    pub batch_time: BatchTime,
    /// Zero time, ms.
    pub zero_time: BatchTime,
    /// Batch interval, ms.
    pub batch_interval: DurationMs,
    /// Graph description.
    pub graph: GraphDescriptionBlob,
    /// Pending batch times.
    pub pending_batches: Vec<BatchTime>,
    /// Source positions.
    pub source_positions: BTreeMap<String, Vec<u8>>,
    /// WAL position.
    pub wal_position: Option<Lsn>,
    /// Configuration.
    pub conf: BTreeMap<String, String>,
    /// New data objects `(label, payload)` written before the manifest.
    pub new_objects: Vec<(String, Bytes)>,
    /// Objects of earlier checkpoints this one still needs (e.g. a metadata checkpoint carrying the
    /// last data checkpoint's state objects).
    pub carried_objects: Vec<DataObjectRef>,
}

impl CheckpointDraft {
    /// A metadata draft with no objects and empty graph/positions (fill the fields you need).
    #[must_use]
    pub fn new(
        kind: CheckpointKind,
        batch_time: BatchTime,
        zero_time: BatchTime,
        batch_interval: DurationMs,
    ) -> Self {
        CheckpointDraft {
            kind,
            batch_time,
            zero_time,
            batch_interval,
            graph: GraphDescriptionBlob::default(),
            pending_batches: Vec::new(),
            source_positions: BTreeMap::new(),
            wal_position: None,
            conf: BTreeMap::new(),
            new_objects: Vec::new(),
            carried_objects: Vec::new(),
        }
    }
}

/// Outcome of a publish that the store answered definitively (the two-level result of
/// [`Committer::commit`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlreadyPublished {
    /// A different manifest already exists under the name (another writer of the same generation,
    /// which fencing makes impossible unless the location was tampered with).
    Different {
        /// The manifest object.
        manifest: String,
    },
    /// Not written: a later metadata-only draft was already queued behind it and supersedes it
    /// ([`crate::WriterConfig::coalesce_metadata`]). Nothing was published for this draft.
    Superseded,
}

/// The single writer of a location for one generation. Obtain with
/// [`CheckpointStore::open_committer`].
#[derive(Debug)]
pub struct Committer {
    store: CheckpointStore,
    generation: Generation,
    last: Option<CheckpointKey>,
    min_time: BatchTime,
}

impl Committer {
    /// This writer's generation.
    #[must_use]
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// The key the next commit for `batch_time` will use: name time `max(batch_time, newest name
    /// time seen)`, this generation, next sequence number. Never at or below a published key.
    fn next_key(&mut self, batch_time: BatchTime) -> CheckpointKey {
        let time = batch_time.max(self.min_time);
        let seq = match self.last {
            Some(l) if l.time == time && l.generation == self.generation => l.seq + 1,
            _ => 0,
        };
        CheckpointKey {
            time,
            generation: self.generation,
            seq,
        }
    }

    /// Writes the draft's new data objects (immutable, unique names, `PutMode::Create`), then
    /// publishes the manifest with `PutMode::Create` after checking no newer generation exists, then
    /// checks the fence again.
    ///
    /// Returns `Ok(Ok(manifest))` when committed, `Ok(Err(AlreadyPublished))` if a different
    /// manifest already holds the name.
    ///
    /// # Durability
    /// Once this returns `Ok(Ok(_))`, the checkpoint exists: every object and the manifest are
    /// durable on the store (fsynced, file and directory, on local disk), and
    /// [`CheckpointStore::resolve_latest`] returns it or a newer one unless its objects are later
    /// damaged.
    ///
    /// # Errors
    /// * [`CheckpointError::Fenced`] (`published: false`) if a newer writer claimed the location
    ///   before publishing; `published: true` if it claimed it during the publish — the manifest may
    ///   be ignored by resolvers, so the caller must stop and not act on it.
    /// * a request error whose [`CheckpointError::determinacy`] is `Indeterminate` if the manifest PUT
    ///   failed in a way that may have taken effect even after re-reading: the caller must
    ///   re-resolve before relying on either outcome.
    /// * [`CheckpointError::InvalidArgument`] for a bad label or duplicate labels.
    ///
    /// # Cancel safety
    /// Not cancel safe: dropping the future may leave unreferenced data objects (GC removes them)
    /// or a published manifest (which is then a valid checkpoint).
    pub async fn commit(
        &mut self,
        draft: CheckpointDraft,
    ) -> Result<Result<Manifest, AlreadyPublished>> {
        let mut labels = BTreeSet::new();
        for (label, _) in &draft.new_objects {
            if !CheckpointPaths::valid_label(label) || !labels.insert(label.as_str()) {
                return Err(CheckpointError::InvalidArgument(format!(
                    "data object label {label:?} is invalid or repeated (allowed: [A-Za-z0-9._-], 1..=128 bytes)"
                )));
            }
        }
        self.store.check_fence(self.generation, false).await?;
        let key = self.next_key(draft.batch_time);
        let mut objects = draft.carried_objects;
        // Test-only broken build: data objects are written after the manifest (below).
        #[cfg(feature = "chaos-broken-manifest-first")]
        let mut deferred: Vec<(String, Bytes)> = Vec::new();
        for (label, payload) in draft.new_objects {
            let rel = CheckpointPaths::data(key, &label);
            let crc32 = crc32fast::hash(&payload);
            let env = Bytes::from(envelope::encode(ObjectKind::Data, &payload));
            let size = env.len() as u64;
            #[cfg(feature = "chaos-broken-manifest-first")]
            deferred.push((rel.clone(), env));
            #[cfg(not(feature = "chaos-broken-manifest-first"))]
            {
                self.put_data_object(&rel, env).await?;
                self.store.remember_object(&rel, size, crc32);
            }
            objects.push(DataObjectRef {
                path: rel,
                size,
                crc32,
            });
        }
        let manifest = Manifest {
            key,
            kind: draft.kind,
            batch_time: draft.batch_time,
            zero_time: draft.zero_time,
            batch_interval: draft.batch_interval,
            generation: self.generation,
            created_at_ms: now_ms(),
            graph: draft.graph,
            pending_batches: draft.pending_batches,
            source_positions: draft.source_positions,
            wal_position: draft.wal_position,
            conf: draft.conf,
            objects,
        };
        let bytes = Bytes::from(manifest.to_bytes()?);
        let rel = CheckpointPaths::manifest(key);
        self.store.check_fence(self.generation, false).await?;
        // The key is consumed whatever happens next: a retry uses a fresh name.
        self.last = Some(key);
        self.min_time = key.time;
        spate_types::spate_fail!("checkpoint::manifest::put::before", |a| Err(
            CheckpointError::failpoint("checkpoint::manifest::put::before", &rel, &a, false)
        ));
        let created = self.store.create(&rel, bytes).await?;
        if !created {
            return Ok(Err(AlreadyPublished::Different { manifest: rel }));
        }
        self.store.gc_lock().manifests.insert(key, manifest.clone());
        spate_types::spate_fail!("checkpoint::manifest::put::after", |a| Err(
            CheckpointError::failpoint("checkpoint::manifest::put::after", &rel, &a, true)
        ));
        #[cfg(feature = "chaos-broken-manifest-first")]
        for (rel, env) in deferred {
            self.put_data_object(&rel, env).await?;
        }
        // The manifest is published: a failure to check the fence now cannot say "not committed".
        self.store
            .check_fence(self.generation, true)
            .await
            .map_err(CheckpointError::into_indeterminate)?;
        Ok(Ok(manifest))
    }

    /// Writes one new data object of a commit (conditional create; the name must be new).
    async fn put_data_object(&self, rel: &str, env: Bytes) -> Result<()> {
        spate_types::spate_fail!("checkpoint::data::put::before", |a| Err(
            CheckpointError::failpoint("checkpoint::data::put::before", rel, &a, false)
        ));
        if !self.store.create(rel, env).await? {
            return Err(CheckpointError::InvalidArgument(format!(
                "data object {rel} already exists with other contents"
            )));
        }
        spate_types::spate_fail!("checkpoint::data::put::after", |a| Err(
            CheckpointError::failpoint("checkpoint::data::put::after", rel, &a, false)
        ));
        Ok(())
    }
}
