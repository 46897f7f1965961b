//! The checkpoint store: a location ([`CheckpointStore`]) over an `object_store`, its options, and
//! the reads every other part builds on (listing, manifests, verified data objects).
//!
//! The rest of the async shell is split by responsibility, each executing the pure decisions of
//! [`crate::protocol`]: [`crate::location`] (the URL), [`crate::requests`] (every request, one
//! retry policy), [`crate::resolve`], [`crate::gc`], [`crate::archive`], [`crate::reports`] and
//! [`crate::committer`] (the commit path). Their public types are re-exported here, so
//! `spate_checkpoint::store::X` paths keep working.

pub use crate::archive::ArchiveReport;
pub use crate::committer::{AlreadyPublished, CheckpointDraft, Committer};
pub use crate::requests::RetryPolicy;
pub use crate::resolve::{CheckpointStatus, Resolved};

use crate::envelope::{self, ObjectKind};
use crate::error::{CheckpointError, CorruptReason, Result};
use crate::gc::GcCache;
use crate::location::CheckpointUrl;
use crate::manifest::{DataObjectRef, Manifest};
use crate::paths::{CheckpointKey, CheckpointPaths};
use crate::protocol::{ListedObject, Listing};
use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectStore;
use spate_io::{Clock, SystemClock};
use std::sync::Arc;
use std::time::Duration;

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

/// Options of [`CheckpointStore::open`].
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// S3 options (for `s3://` URLs).
    pub s3: S3Options,
    /// Timeout of every request (a PUT to a dead port fails after this); default 30 s.
    pub request_timeout: Duration,
    /// TCP connect timeout for S3; default 5 s.
    pub connect_timeout: Duration,
    /// Retries of retryable failures, for every request ([`crate::requests`]).
    pub retry: RetryPolicy,
    /// No retry starts later than this after a request's first attempt began; `None` (default):
    /// only [`RetryPolicy::attempts`] bounds a request (each attempt is bounded by
    /// `request_timeout`).
    pub retry_deadline: Option<Duration>,
    /// Verification used by [`CheckpointStore::resolve_latest`].
    pub verify: VerifyLevel,
    /// Create a local checkpoint directory that does not exist (default true; read-only tools such
    /// as `spate checkpoint ls` set it false so a typo is an error, not a new empty directory).
    pub create_local_dir: bool,
    /// The wall clock of every timestamp the store writes (a manifest's `created_at_ms`, a
    /// generation claim's time, probe names); default [`SystemClock`].
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            s3: S3Options::default(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            retry_deadline: None,
            verify: VerifyLevel::Full,
            create_local_dir: true,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Opens the `object_store` behind a checkpoint URL ([`CheckpointUrl`]): a bare path or
/// `file:///path` (LocalFileSystem with fsync, directory created unless
/// [`StoreOptions::create_local_dir`] is false), `s3://bucket[/prefix]` (the S3 client's own
/// retries off: [`crate::requests`] retries), or `memory://`. Returns the store and the prefix
/// inside it.
///
/// # Errors
/// [`CheckpointError::InvalidLocation`] for a URL that does not parse, an S3 client that cannot be
/// built or a directory that cannot be created (or, with `create_local_dir` false, is missing).
pub fn open_object_store(url: &str, opts: &StoreOptions) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let invalid = |reason: String| CheckpointError::InvalidLocation {
        url: url.to_owned(),
        reason,
    };
    let location = CheckpointUrl::parse(url).map_err(|e| invalid(e.to_string()))?;
    open_location(&location, opts).map_err(invalid)
}

fn open_location(
    location: &CheckpointUrl,
    opts: &StoreOptions,
) -> std::result::Result<(Arc<dyn ObjectStore>, Path), String> {
    if location.is_memory() {
        return Ok((
            Arc::new(object_store::memory::InMemory::new()),
            Path::default(),
        ));
    }
    if let Some((bucket, prefix)) = location.s3() {
        let mut client = object_store::ClientOptions::new()
            .with_timeout(opts.request_timeout)
            .with_connect_timeout(opts.connect_timeout);
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_virtual_hosted_style_request(opts.s3.virtual_hosted_style)
            // One retry layer: ours (crate::requests).
            .with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig::default(),
                max_retries: 0,
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
            .map_err(|e| e.to_string())?;
        let prefix = Path::parse(prefix).map_err(|e| e.to_string())?;
        return Ok((Arc::new(s3), prefix));
    }
    let dir = location
        .local_path()
        .ok_or_else(|| format!("unsupported location {location}"))?;
    if opts.create_local_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    } else if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| e.to_string())?
        .with_fsync(true);
    Ok((Arc::new(fs), Path::default()))
}

/// A checkpoint location: reading, resolving, verifying and GC. Writing goes through a
/// [`Committer`] obtained from [`CheckpointStore::open_committer`].
///
/// Cloning is cheap (shares the `object_store`).
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) prefix: Path,
    pub(crate) url: String,
    pub(crate) opts: StoreOptions,
    /// What GC already verified in this process (shared by clones): see [`GcCache`].
    pub(crate) gc_cache: Arc<std::sync::Mutex<GcCache>>,
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

    pub(crate) fn full(&self, rel: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.prefix.as_ref()))
        }
    }

    pub(crate) fn rel(&self, p: &Path) -> String {
        let s = p.as_ref();
        if self.prefix.as_ref().is_empty() {
            s.to_owned()
        } else {
            s.strip_prefix(self.prefix.as_ref())
                .map_or(s, |r| r.trim_start_matches('/'))
                .to_owned()
        }
    }

    /// The store's wall clock, in ms since the Unix epoch ([`StoreOptions::clock`]).
    pub(crate) fn now_ms(&self) -> u64 {
        self.opts.clock.now_ms()
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
        self.list_under(under.unwrap_or(&self.url), &prefix, None)
            .await
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
