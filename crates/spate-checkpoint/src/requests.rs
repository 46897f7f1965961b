//! The request layer: every object-store request of the crate, one [`RetryPolicy`].
//!
//! Each request is one *attempt* ([`CheckpointStore::attempt`]: bounded by
//! [`StoreOptions::request_timeout`](crate::StoreOptions::request_timeout), its error typed with
//! the operation, the object and its [`Determinacy`]) run under [`CheckpointStore::with_retries`]:
//! an attempt whose error [`is_retryable`](CheckpointError::is_retryable) (a timeout, a
//! connection or server error) is repeated after a jittered exponential backoff, at most
//! [`RetryPolicy::attempts`] times in all and not after
//! [`StoreOptions::retry_deadline`](crate::StoreOptions::retry_deadline). Every other error
//! (not found, already exists, permission, precondition) is returned at once.
//!
//! ## One retry layer: ours, the S3 client's is off
//!
//! `object_store`'s S3 client has its own `RetryConfig`. Two layers multiply (4 attempts of ours
//! around 2 of the client's were up to 8 HTTP requests per read) and the client's cannot be used
//! alone: it knows nothing of this crate's request timeout, does not exist for the local and
//! memory stores (nor for the fault-injecting store of the tests), and retries a create-only PUT
//! without knowing that an `AlreadyExists` after a lost response may be our own object. So the S3
//! client is built with `max_retries: 0` ([`crate::store::open_object_store`]) and this module is
//! the only place a request is repeated. [`RetryPolicy::default`] has 6 attempts so that a store
//! that is briefly unreachable (an S3 server restarting) is waited for about as long as the two
//! layers together used to.
//!
//! Requests that are not repeated: the conditional-create probe's two PUTs (the second must
//! answer `AlreadyExists` to the first; see [`CheckpointStore::probe_conditional_create`]).
//! A create-only PUT ([`CheckpointStore::create`]) is repeated, and an `AlreadyExists` after an
//! indeterminate attempt is resolved by reading the object back.

use crate::error::{CheckpointError, Determinacy, Result};
use crate::protocol::ListedObject;
use crate::store::CheckpointStore;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Retry policy for retryable failures (timeouts, connection and server errors) of every
/// object-store request (see the [module](self) docs).
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
            attempts: 6,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The backoff cap before retry number `retry` (0: before the second attempt):
    /// `initial_backoff · 2^retry`, at most `max_backoff`.
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(16);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The sleep before retry number `retry`: uniformly in `[backoff/2, backoff]` ("equal
    /// jitter"), so writers that failed together do not retry together.
    #[must_use]
    pub fn jittered_backoff(&self, retry: u32) -> Duration {
        let cap = self.backoff(retry);
        let half = cap / 2;
        let spread = u64::try_from((cap - half).as_nanos()).unwrap_or(u64::MAX);
        let extra = if spread == 0 {
            0
        } else {
            entropy() % (spread + 1)
        };
        half + Duration::from_nanos(extra)
    }

    /// Whether an attempt that failed retryably after `made` attempts, `elapsed` since the first
    /// began, may be followed by another: fewer than [`attempts`](Self::attempts) made, and the
    /// deadline (if any) not passed.
    #[must_use]
    pub fn may_retry(&self, made: u32, elapsed: Duration, deadline: Option<Duration>) -> bool {
        made < self.attempts && deadline.is_none_or(|d| elapsed < d)
    }
}

/// 64 bits that differ between calls and processes (not a clock reading): std's randomly keyed
/// hasher over a process-wide counter. Used for backoff jitter and writer nonces.
pub(crate) fn entropy() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// `Ok(None)` for a request that found no object, the result otherwise.
pub(crate) fn absent_as_none<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

impl CheckpointStore {
    /// One attempt of a request: `fut` bounded by the request timeout, its error typed with `op`,
    /// `object` and whether it may have taken effect (`write`: a write that timed out or lost its
    /// connection is [`Determinacy::Indeterminate`]).
    pub(crate) async fn attempt<T, F>(
        &self,
        op: &'static str,
        object: &str,
        write: bool,
        fut: F,
    ) -> Result<T>
    where
        F: Future<Output = object_store::Result<T>>,
    {
        let timeout = self.opts.request_timeout;
        match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(CheckpointError::Timeout {
                op,
                object: object.to_owned(),
                after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
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

    /// Runs `attempt` under the store's [`RetryPolicy`] (see the [module](self) docs) and returns
    /// the first success, the first error that is not retryable, or the last error.
    pub(crate) async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let policy = &self.opts.retry;
        let started = Instant::now();
        let mut made = 0;
        loop {
            let r = attempt().await;
            made += 1;
            match r {
                Err(e)
                    if e.is_retryable()
                        && policy.may_retry(made, started.elapsed(), self.opts.retry_deadline) =>
                {
                    tokio::time::sleep(policy.jittered_backoff(made - 1)).await;
                }
                r => return r,
            }
        }
    }

    /// Reads `rel`; `Ok(None)` if it does not exist.
    pub(crate) async fn get_opt(&self, rel: &str) -> Result<Option<Bytes>> {
        let path = self.full(rel);
        absent_as_none(
            self.with_retries(|| {
                self.attempt("get", rel, false, async {
                    self.store.get(&path).await?.bytes().await
                })
            })
            .await,
        )
    }

    /// Size of `rel` (a `HEAD`), `Ok(None)` if it does not exist.
    pub(crate) async fn size_of(&self, rel: &str) -> Result<Option<u64>> {
        let path = self.full(rel);
        let head = self
            .with_retries(|| self.attempt("head", rel, false, self.store.head(&path)))
            .await;
        Ok(absent_as_none(head)?.map(|m| m.size))
    }

    /// Lists the objects whose full path starts with `prefix` (relative names, sorted), or with
    /// `offset` given, only those after it. `what` names the request in errors.
    pub(crate) async fn list_under(
        &self,
        what: &str,
        prefix: &object_store::path::Path,
        offset: Option<&object_store::path::Path>,
    ) -> Result<Vec<ListedObject>> {
        let prefix_opt = (!prefix.as_ref().is_empty()).then_some(prefix);
        let metas: Vec<object_store::ObjectMeta> = self
            .with_retries(|| {
                let listed = match offset {
                    Some(o) => self.store.list_with_offset(prefix_opt, o),
                    None => self.store.list(prefix_opt),
                };
                self.attempt("list", what, false, listed.try_collect())
            })
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

    /// Creates `rel` with `PutMode::Create`. `Ok(true)`: created by this call (or by an earlier
    /// attempt of it whose response was lost, detected by reading back identical bytes);
    /// `Ok(false)`: it already existed with different bytes.
    pub(crate) async fn create(&self, rel: &str, bytes: Bytes) -> Result<bool> {
        let path = self.full(rel);
        // Set once an attempt may have taken effect: from then on a failure cannot say "not
        // created", and an `AlreadyExists` may be our own object.
        let maybe_ours = AtomicBool::new(false);
        let r = self
            .with_retries(|| async {
                let put = self.store.put_opts(
                    &path,
                    PutPayload::from_bytes(bytes.clone()),
                    PutOptions::from(PutMode::Create),
                );
                let r = self.attempt("put", rel, true, put).await;
                if r.as_ref()
                    .is_err_and(|e| e.determinacy() == Determinacy::Indeterminate)
                {
                    maybe_ours.store(true, Ordering::Relaxed);
                }
                r
            })
            .await;
        let maybe_ours = maybe_ours.into_inner();
        let mark = |e: CheckpointError| {
            if maybe_ours {
                e.into_indeterminate()
            } else {
                e
            }
        };
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.is_already_exists() => {
                // Either another writer's object, or our own earlier attempt that succeeded but
                // whose response was lost: read and compare. Identical bytes (which embed a
                // creation time and writer identity for manifests and claims) mean it is ours.
                let existing = self.get_opt(rel).await.map_err(mark)?;
                Ok(existing.as_ref() == Some(&bytes))
            }
            Err(e) => {
                // Retries exhausted after an attempt that may have taken effect: re-read once
                // before deciding.
                if maybe_ours && e.is_retryable() {
                    if let Ok(Some(existing)) = self.get_opt(rel).await {
                        if existing == bytes {
                            return Ok(true);
                        }
                    }
                }
                Err(mark(e))
            }
        }
    }

    /// Writes `rel` unconditionally (overwrite; a repeated PUT of the same bytes is idempotent).
    pub(crate) async fn put_overwrite(&self, rel: &str, bytes: Bytes) -> Result<()> {
        let path = self.full(rel);
        self.with_retries(|| {
            let put = self.store.put(&path, PutPayload::from_bytes(bytes.clone()));
            self.attempt("put", rel, true, put)
        })
        .await
        .map(|_| ())
    }

    /// Deletes `rel`; a missing object is not an error (LocalFileSystem reports `NotFound` where
    /// S3 answers success).
    pub(crate) async fn delete(&self, rel: &str) -> Result<()> {
        let path = self.full(rel);
        let r = self
            .with_retries(|| self.attempt("delete", rel, true, self.store.delete(&path)))
            .await;
        absent_as_none(r).map(|_| ())
    }

    /// Copies `from` to `to` (server-side). `Ok(false)` if `from` no longer exists.
    pub(crate) async fn copy_object(&self, from: &str, to: &str) -> Result<bool> {
        let (src, dst) = (self.full(from), self.full(to));
        let r = self
            .with_retries(|| self.attempt("copy", from, true, self.store.copy(&src, &dst)))
            .await;
        Ok(absent_as_none(r)?.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = policy(10);
        let ms: Vec<u128> = (0..6).map(|r| p.backoff(r).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 500, 500, 500]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn jittered_backoff_stays_between_half_and_the_cap() {
        let p = policy(10);
        for retry in 0..6 {
            for _ in 0..50 {
                let d = p.jittered_backoff(retry);
                assert!(d >= p.backoff(retry) / 2 && d <= p.backoff(retry), "{d:?}");
            }
        }
        let zero = RetryPolicy {
            initial_backoff: Duration::ZERO,
            ..policy(3)
        };
        assert_eq!(zero.jittered_backoff(2), Duration::ZERO);
    }

    #[test]
    fn may_retry_table_bounds_attempts_and_deadline() {
        let s = Duration::from_secs;
        // (attempts, made, elapsed, deadline, expected)
        let cases = [
            (1, 1, s(0), None, false),
            (3, 1, s(0), None, true),
            (3, 2, s(100), None, true),
            (3, 3, s(0), None, false),
            (3, 1, s(4), Some(s(5)), true),
            (3, 1, s(5), Some(s(5)), false),
            (3, 2, s(9), Some(s(5)), false),
        ];
        for (attempts, made, elapsed, deadline, want) in cases {
            assert_eq!(
                policy(attempts).may_retry(made, elapsed, deadline),
                want,
                "attempts {attempts}, made {made}, elapsed {elapsed:?}, deadline {deadline:?}"
            );
        }
    }

    #[test]
    fn entropy_differs_between_calls() {
        let a: std::collections::BTreeSet<u64> = (0..100).map(|_| entropy()).collect();
        assert_eq!(a.len(), 100);
    }
}
