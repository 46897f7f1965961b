//! The async checkpoint writer (as Spark's `CheckpointWriter`, but failures surface) and blocking
//! conveniences for the engine's batch threads.
//!
//! Spark serializes on the event-loop thread and hands the bytes to a single-threaded executor with a
//! bounded queue of 1000; a full queue or three failed attempts are *logged and dropped*. Here:
//! * the queue is bounded ([`WriterConfig::capacity`]); a full queue is
//!   [`CheckpointError::QueueFull`] returned to the submitter;
//! * each request retries retryable failures with jittered exponential backoff under the store's one
//!   [`RetryPolicy`](crate::RetryPolicy) ([`crate::requests`]), and a manifest PUT whose outcome is
//!   unknown is re-read before deciding;
//! * every outcome is delivered to the submitter through its [`CommitTicket`]; after a fencing error
//!   the writer stops and later submissions fail with [`CheckpointError::WriterStopped`].

use crate::error::{CheckpointError, Result};
use crate::manifest::Manifest;
use crate::protocol::Retention;
use crate::store::{
    AlreadyPublished, CheckpointDraft, CheckpointStore, Committer, Resolved, StoreOptions,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Configuration of [`CheckpointWriter`].
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Maximum queued requests (default 16; Spark uses 1000 but drops silently).
    pub capacity: usize,
    /// Retention applied after each `Completed`/`Data` commit; `None` disables automatic GC.
    pub retention: Option<Retention>,
    /// Skip a queued draft without data objects when another such draft is queued right behind it
    /// (it is answered [`AlreadyPublished::Superseded`]): metadata manifests are self-contained, so
    /// only the newest matters, and a slow store (S3) then keeps up with any batch rate. Drafts
    /// with data objects are never skipped, and order is kept. Default false.
    pub coalesce_metadata: bool,
    /// Run retention GC at most this often (GC lists the whole location: costly on S3). Default 0
    /// (after every `Completed`/`Data` commit).
    pub gc_min_interval: std::time::Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            capacity: 16,
            retention: None,
            coalesce_metadata: false,
            gc_min_interval: std::time::Duration::ZERO,
        }
    }
}

type Outcome = Result<Result<Manifest, AlreadyPublished>>;

struct Request {
    draft: CheckpointDraft,
    reply: oneshot::Sender<Outcome>,
}

/// The pending result of one submitted checkpoint.
#[derive(Debug)]
pub struct CommitTicket {
    rx: oneshot::Receiver<Outcome>,
}

impl CommitTicket {
    /// Waits for the commit's outcome.
    ///
    /// # Errors
    /// The commit's error, or [`CheckpointError::WriterStopped`] if the writer died first.
    pub async fn wait(self) -> Outcome {
        self.rx.await.unwrap_or(Err(CheckpointError::WriterStopped))
    }

    /// Blocking variant of [`CommitTicket::wait`] (call from a non-async thread only).
    ///
    /// # Errors
    /// As [`CommitTicket::wait`].
    pub fn wait_blocking(self) -> Outcome {
        self.rx
            .blocking_recv()
            .unwrap_or(Err(CheckpointError::WriterStopped))
    }
}

/// A background task that commits checkpoints in submission order.
#[derive(Debug)]
pub struct CheckpointWriter {
    tx: mpsc::Sender<Request>,
    capacity: usize,
    stopped: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("batch_time", &self.draft.batch_time)
            .finish_non_exhaustive()
    }
}

impl CheckpointWriter {
    /// Spawns the writer on `handle`.
    #[must_use]
    pub fn spawn(
        mut committer: Committer,
        config: WriterConfig,
        handle: &tokio::runtime::Handle,
    ) -> Self {
        let capacity = config.capacity.max(1);
        let (tx, mut rx) = mpsc::channel::<Request>(capacity);
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = stopped.clone();
        let task = handle.spawn(async move {
            let mut held: Option<Request> = None;
            let mut last_gc: Option<std::time::Instant> = None;
            loop {
                let mut req = match held.take() {
                    Some(r) => r,
                    None => match rx.recv().await {
                        Some(r) => r,
                        None => break,
                    },
                };
                if flag.load(Ordering::Acquire) {
                    let _ = req.reply.send(Err(CheckpointError::WriterStopped));
                    continue;
                }
                if config.coalesce_metadata {
                    while req.draft.new_objects.is_empty() {
                        match rx.try_recv() {
                            Ok(next) if next.draft.new_objects.is_empty() => {
                                let _ = req.reply.send(Ok(Err(AlreadyPublished::Superseded)));
                                req = next;
                            }
                            Ok(next) => {
                                held = Some(next);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                let kind = req.draft.kind;
                let outcome = committer.commit(req.draft).await;
                let mut gc_after = None;
                match &outcome {
                    Err(e @ CheckpointError::Fenced { .. }) => {
                        tracing::error!(error = %e, "checkpoint writer fenced; stopping");
                        flag.store(true, Ordering::Release);
                    }
                    Err(e) => tracing::warn!(error = %e, "checkpoint commit failed"),
                    Ok(Ok(m)) => {
                        let due = last_gc.is_none_or(|t| t.elapsed() >= config.gc_min_interval);
                        if let (Some(r), true, true) = (
                            &config.retention,
                            kind != crate::manifest::CheckpointKind::Generated,
                            due,
                        ) {
                            gc_after = Some((r, m.key));
                        }
                    }
                    Ok(Err(_)) => {}
                }
                // The outcome is final once the commit returned: answer before GC (housekeeping
                // that lists and may read the location), so a submitter waiting for a data
                // checkpoint does not wait for it too.
                let _ = req.reply.send(outcome);
                if let Some((r, key)) = gc_after {
                    last_gc = Some(std::time::Instant::now());
                    if let Err(e) = committer.store().gc(r).await {
                        tracing::warn!(error = %e, key = %key, "checkpoint GC failed");
                    }
                }
            }
        });
        CheckpointWriter {
            tx,
            capacity,
            stopped,
            task,
        }
    }

    /// Queues a checkpoint; returns at once.
    ///
    /// # Errors
    /// [`CheckpointError::QueueFull`] if `capacity` requests are pending;
    /// [`CheckpointError::WriterStopped`] after a fencing error or shutdown.
    pub fn submit(&self, draft: CheckpointDraft) -> Result<CommitTicket> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(CheckpointError::WriterStopped);
        }
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Request { draft, reply }) {
            Ok(()) => Ok(CommitTicket { rx }),
            Err(mpsc::error::TrySendError::Full(_)) => Err(CheckpointError::QueueFull {
                capacity: self.capacity,
            }),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(CheckpointError::WriterStopped),
        }
    }

    /// As [`submit`](Self::submit), but waits while the queue is full (back-pressure instead of
    /// [`CheckpointError::QueueFull`]), at most `timeout`. Call from a non-async thread only.
    ///
    /// # Errors
    /// [`CheckpointError::QueueFull`] if the queue stayed full for `timeout`;
    /// [`CheckpointError::WriterStopped`] after a fencing error or shutdown.
    pub fn submit_blocking(
        &self,
        draft: CheckpointDraft,
        timeout: std::time::Duration,
    ) -> Result<CommitTicket> {
        let deadline = std::time::Instant::now() + timeout;
        let mut req = {
            let (reply, rx) = oneshot::channel();
            (Request { draft, reply }, rx)
        };
        loop {
            if self.stopped.load(Ordering::Acquire) {
                return Err(CheckpointError::WriterStopped);
            }
            match self.tx.try_send(req.0) {
                Ok(()) => return Ok(CommitTicket { rx: req.1 }),
                Err(mpsc::error::TrySendError::Full(r)) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(CheckpointError::QueueFull {
                            capacity: self.capacity,
                        });
                    }
                    req.0 = r;
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(CheckpointError::WriterStopped)
                }
            }
        }
    }

    /// Stops accepting requests, waits for queued ones to finish.
    pub async fn shutdown(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// A blocking facade over [`CheckpointStore`] owning a small tokio runtime, for threads that are not
/// async (the engine's batch threads, the CLI).
#[derive(Debug)]
pub struct BlockingCheckpointStore {
    rt: tokio::runtime::Runtime,
    store: CheckpointStore,
}

impl BlockingCheckpointStore {
    /// Opens `url` (see [`CheckpointStore::open`]) with a dedicated 1-worker runtime.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidLocation`] for a bad URL or if the runtime cannot start.
    pub fn open(url: &str, opts: StoreOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("spate-checkpoint")
            .build()
            .map_err(|e| CheckpointError::InvalidLocation {
                url: url.to_owned(),
                reason: format!("cannot start runtime: {e}"),
            })?;
        let store = CheckpointStore::open(url, opts)?;
        Ok(BlockingCheckpointStore { rt, store })
    }

    /// The async store (for use with [`BlockingCheckpointStore::runtime`]).
    #[must_use]
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// The runtime handle (to spawn a [`CheckpointWriter`] on).
    #[must_use]
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        self.rt.handle()
    }

    /// Runs any future of the store to completion on the owned runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Blocking [`CheckpointStore::resolve_latest`].
    ///
    /// # Errors
    /// As the async method.
    pub fn resolve_latest(&self) -> Result<Option<Resolved>> {
        self.rt.block_on(self.store.resolve_latest())
    }

    /// Blocking [`CheckpointStore::open_committer`], then spawns a [`CheckpointWriter`] on the owned
    /// runtime.
    ///
    /// # Errors
    /// As [`CheckpointStore::open_committer`].
    pub fn open_writer(&self, config: WriterConfig) -> Result<CheckpointWriter> {
        let c = self.rt.block_on(self.store.open_committer())?;
        Ok(CheckpointWriter::spawn(c, config, self.rt.handle()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::CheckpointKind;
    use spate_types::{BatchTime, DurationMs};

    #[test]
    fn coalescing_skips_superseded_metadata_but_never_data_and_keeps_order() {
        let store = BlockingCheckpointStore::open("memory://", StoreOptions::default()).unwrap();
        let w = store
            .open_writer(WriterConfig {
                capacity: 64,
                retention: None,
                coalesce_metadata: true,
                gc_min_interval: std::time::Duration::ZERO,
            })
            .unwrap();
        let draft = |t: u64, data: bool| {
            let mut d = CheckpointDraft::new(
                CheckpointKind::Completed,
                BatchTime(t),
                BatchTime(0),
                DurationMs(1000),
            );
            if data {
                d.kind = CheckpointKind::Data;
                d.new_objects = vec![("state".into(), bytes::Bytes::from_static(b"x"))];
            }
            d
        };
        // Queue many at once: the writer sees them back to back.
        let tickets: Vec<_> = (1..=20u64)
            .map(|t| w.submit(draft(t * 1000, t == 10)).unwrap())
            .collect();
        let outcomes: Vec<_> = tickets
            .into_iter()
            .map(|t| t.wait_blocking().unwrap())
            .collect();
        // The data draft and the last draft are always written.
        assert!(outcomes[9].is_ok(), "{:?}", outcomes[9]);
        assert!(outcomes[19].is_ok(), "{:?}", outcomes[19]);
        let written: Vec<u64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok().map(|m| m.batch_time.0))
            .collect();
        assert!(written.windows(2).all(|p| p[0] < p[1]), "{written:?}");
        for o in &outcomes {
            assert!(
                matches!(o, Ok(_) | Err(AlreadyPublished::Superseded)),
                "{o:?}"
            );
        }
        let r = store.resolve_latest().unwrap().unwrap();
        assert_eq!(r.manifest.batch_time, BatchTime(20_000));
    }
}
