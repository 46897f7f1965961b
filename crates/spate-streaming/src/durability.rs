//! Checkpointing at run time: the WAL ([`Journal`]), the checkpoint store and its async writer, the
//! pending-batch set, and the cleanup that follows a durable completion checkpoint (DESIGN.md §4
//! steps 2, 3, 6, 7).

use crate::compat;
use crate::error::{Result, StreamingError};
use crate::journal::{block_handle, Journal, Replayed};
use crate::recovery::{RestartPlan, RestartReport};
use crate::tracker::{ReceivedBlockInfo, ReceivedBlockTracker};
use parking_lot::{Condvar, Mutex};
use spate_checkpoint::{
    BlockingCheckpointStore, CheckpointDraft, CheckpointKind, CheckpointWriter, CommitTicket,
    GraphDescriptionBlob, Retention, StoreOptions, WriterConfig,
};
use spate_io::Clock;
use spate_types::{BatchTime, DurationMs, Lsn};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The local directory of a checkpoint URL, if it is a local one (a bare path or `file://`).
pub(crate) fn local_dir(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if url.contains("://") {
        return None;
    }
    Some(PathBuf::from(url))
}

/// The WAL directory for a configuration: `wal_dir`, else `<checkpoint path>/wal` for a local
/// checkpoint.
pub(crate) fn wal_dir(url: &str, configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = configured {
        return Ok(d.to_owned());
    }
    local_dir(url).map(|d| d.join("wal")).ok_or_else(|| {
        StreamingError::Config(crate::config::ConfigError::InvalidValue {
            key: "wal_dir".into(),
            value: String::new(),
            reason: format!(
                "checkpoint {url} is not on local disk: set wal_dir to a local directory for the \
                 write-ahead log"
            ),
        })
    })
}

/// A submitted checkpoint whose outcome the waiter thread handles.
pub(crate) struct Submitted {
    pub(crate) kind: CheckpointKind,
    pub(crate) time: BatchTime,
    pub(crate) ticket: CommitTicket,
    /// For `Completed`: clean up batches before this time once the checkpoint is durable.
    pub(crate) cleanup_before: Option<BatchTime>,
}

/// What the engine needs to write checkpoints and to recover.
pub(crate) struct Durability {
    pub(crate) url: String,
    pub(crate) journal: Arc<Journal>,
    pub(crate) store: BlockingCheckpointStore,
    /// What replaying the WAL at open found; consumed by recovery (or checked for orphans).
    pub(crate) replayed: Mutex<Option<Replayed>>,
    pub(crate) writer: Mutex<Option<CheckpointWriter>>,
    pub(crate) submit_tx: Mutex<Option<crossbeam_channel::Sender<Submitted>>>,
    pub(crate) waiter: Mutex<Option<JoinHandle<()>>>,
    /// Submitted checkpoints whose outcome is not known yet.
    pub(crate) outstanding: Mutex<u64>,
    pub(crate) outstanding_cv: Condvar,
    /// Batches generated but not completed (the manifest's pending batches).
    pub(crate) pending: Mutex<BTreeSet<BatchTime>>,
    /// WAL LSN of each retained batch's first record (allocation or selection).
    pub(crate) batch_lsn: Mutex<BTreeMap<BatchTime, Lsn>>,
    /// True once a receiver writes its blocks to the WAL (then allocations are logged too).
    pub(crate) receiver_wal: std::sync::atomic::AtomicBool,
    /// The graph blob and settings written into every manifest (set at start).
    pub(crate) blob: Mutex<GraphDescriptionBlob>,
    pub(crate) settings: Mutex<BTreeMap<String, String>>,
    /// Set by `get_or_create` when restoring.
    pub(crate) plan: Mutex<Option<RestartPlan>>,
    pub(crate) report: Mutex<Option<RestartReport>>,
    /// Checkpoints committed in this run (for tests and the report).
    pub(crate) committed: Mutex<u64>,
    /// Data-checkpoint chains of the stateful operators.
    pub(crate) chains: Mutex<BTreeMap<spate_types::OperatorId, OpChain>>,
}

impl fmt::Debug for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durability")
            .field("url", &self.url)
            .field("wal", &self.journal.dir())
            .finish()
    }
}

impl Durability {
    /// Opens the store and the WAL (replaying it).
    pub(crate) fn open(
        url: &str,
        wal: &Path,
        clock: Arc<dyn Clock>,
        store: Option<BlockingCheckpointStore>,
        segment_bytes: u64,
        fs: Arc<dyn spate_io::FileSystem>,
    ) -> Result<Durability> {
        let store =
            match store {
                Some(s) => s,
                None => BlockingCheckpointStore::open(url, StoreOptions::default()).map_err(
                    |source| StreamingError::Checkpoint {
                        url: url.to_owned(),
                        source: Box::new(source),
                    },
                )?,
            };
        let (journal, replayed) = Journal::open(fs, wal, clock, segment_bytes)?;
        Ok(Durability {
            url: url.to_owned(),
            journal: Arc::new(journal),
            store,
            replayed: Mutex::new(Some(replayed)),
            writer: Mutex::new(None),
            submit_tx: Mutex::new(None),
            waiter: Mutex::new(None),
            outstanding: Mutex::new(0),
            outstanding_cv: Condvar::new(),
            pending: Mutex::new(BTreeSet::new()),
            batch_lsn: Mutex::new(BTreeMap::new()),
            receiver_wal: std::sync::atomic::AtomicBool::new(false),
            blob: Mutex::new(GraphDescriptionBlob::default()),
            settings: Mutex::new(BTreeMap::new()),
            plan: Mutex::new(None),
            report: Mutex::new(None),
            committed: Mutex::new(0),
            chains: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn ckpt_err(&self, source: spate_checkpoint::CheckpointError) -> StreamingError {
        StreamingError::Checkpoint {
            url: self.url.clone(),
            source: Box::new(source),
        }
    }

    pub(crate) fn logs_allocations(&self) -> bool {
        self.receiver_wal.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Opens the writer (claims a new generation, fencing older writers).
    pub(crate) fn open_writer(&self, retain: usize) -> Result<()> {
        let w = self
            .store
            .open_writer(WriterConfig {
                capacity: 64,
                retention: Some(Retention {
                    keep: retain.max(1),
                    pinned: BTreeSet::new(),
                }),
                // Metadata manifests are self-contained: a slow store skips superseded ones
                // instead of falling behind the batches.
                coalesce_metadata: true,
                gc_min_interval: Duration::from_secs(2),
            })
            .map_err(|e| self.ckpt_err(e))?;
        *self.writer.lock() = Some(w);
        Ok(())
    }

    /// A draft with the fields common to every metadata checkpoint.
    pub(crate) fn draft(
        &self,
        kind: CheckpointKind,
        time: BatchTime,
        zero: BatchTime,
        batch: DurationMs,
        source_positions: BTreeMap<String, Vec<u8>>,
    ) -> CheckpointDraft {
        let mut d = CheckpointDraft::new(kind, time, zero, batch);
        d.graph = self.blob.lock().clone();
        d.conf = self.settings.lock().clone();
        d.pending_batches = self.pending.lock().iter().copied().collect();
        d.source_positions = source_positions;
        d.wal_position = Some(self.journal.next_lsn());
        if !self.chains.lock().is_empty() {
            let (meta, carried) = self.state_part(&BTreeMap::new());
            if let Ok(b) = spate_types::codec::encode(&meta) {
                d.source_positions.insert(STATE_KEY.to_owned(), b);
            }
            d.carried_objects = carried;
        }
        d
    }

    /// The error of an engine checkpoint fail point site (`docs/failpoints.md`).
    #[cfg(feature = "failpoints")]
    pub(crate) fn failpoint(&self, name: &str, arg: &str, indeterminate: bool) -> StreamingError {
        self.ckpt_err(spate_checkpoint::CheckpointError::failpoint(
            name,
            "",
            arg,
            indeterminate,
        ))
    }

    /// Submits a draft to the async writer; the waiter thread handles the outcome.
    pub(crate) fn submit(
        &self,
        draft: CheckpointDraft,
        cleanup_before: Option<BatchTime>,
    ) -> Result<()> {
        let (kind, time) = (draft.kind, draft.batch_time);
        let ticket = {
            let w = self.writer.lock();
            let Some(w) = w.as_ref() else {
                return Err(self.ckpt_err(spate_checkpoint::CheckpointError::WriterStopped));
            };
            w.submit_blocking(draft, SUBMIT_TIMEOUT)
                .map_err(|e| self.ckpt_err(e))?
        };
        *self.outstanding.lock() += 1;
        let tx = self.submit_tx.lock().clone();
        match tx {
            Some(tx) => {
                let _ = tx.send(Submitted {
                    kind,
                    time,
                    ticket,
                    cleanup_before,
                });
            }
            None => {
                // No waiter (initial checkpoint): wait here.
                let r = ticket.wait_blocking();
                self.resolved();
                match r {
                    Ok(Ok(_)) => *self.committed.lock() += 1,
                    Ok(Err(a)) => {
                        return Err(self.ckpt_err(
                            spate_checkpoint::CheckpointError::InvalidArgument(format!("{a:?}")),
                        ))
                    }
                    Err(e) => return Err(self.ckpt_err(e)),
                }
            }
        }
        Ok(())
    }

    pub(crate) fn resolved(&self) {
        let mut o = self.outstanding.lock();
        *o = o.saturating_sub(1);
        self.outstanding_cv.notify_all();
    }

    /// Waits until every submitted checkpoint has an outcome, at most until `deadline`.
    pub(crate) fn drain(&self, deadline: Instant) -> bool {
        let mut o = self.outstanding.lock();
        while *o > 0 {
            if self.outstanding_cv.wait_until(&mut o, deadline).timed_out() {
                return *o == 0;
            }
        }
        true
    }

    /// Step 7 after a durable completion checkpoint: log `BatchCleanup` for batches before
    /// `before`, drop them from the tracker, and delete WAL segments nothing references any more.
    /// Returns the cleaned-up blocks (to drop from the block handlers).
    pub(crate) fn cleanup(
        &self,
        tracker: &Mutex<ReceivedBlockTracker>,
        before: BatchTime,
    ) -> Result<Vec<ReceivedBlockInfo>> {
        spate_types::spate_fail!("engine::cleanup::before", |a| Err(self
            .journal
            .failpoint("engine::cleanup::before", &a)));
        let mut removed = Vec::new();
        let bound = {
            let mut tr = tracker.lock();
            if let Some((ev, blocks)) = tr.plan_cleanup(before) {
                if self.logs_allocations() {
                    self.journal.append_event(&ev)?;
                }
                tr.apply(&ev);
                removed = blocks;
            }
            let mut lsns = self.batch_lsn.lock();
            let keep = lsns.split_off(&before);
            *lsns = keep;
            let mut bound = self.journal.next_lsn();
            if let Some(l) = lsns.values().min() {
                bound = bound.min(*l);
            }
            for b in tr.referenced_blocks() {
                if let Some(h) = block_handle(b) {
                    bound = bound.min(h.lsn);
                }
            }
            bound
        };
        self.journal.truncate_before(bound)?;
        Ok(removed)
    }

    pub(crate) fn note_batch_lsn(&self, t: BatchTime, lsn: Lsn) {
        self.batch_lsn.lock().entry(t).or_insert(lsn);
    }

    /// Sets the description written into manifests.
    pub(crate) fn set_build(&self, build: &compat::BuildDescription) {
        *self.blob.lock() = GraphDescriptionBlob {
            fingerprint: build.graph.fingerprint(),
            bytes: compat::encode_description(&build.graph),
        };
        *self.settings.lock() = build.settings.clone();
    }

    /// Stops the writer (after the last outcome, or now).
    pub(crate) fn shutdown(&self) {
        drop(self.submit_tx.lock().take());
        if let Some(h) = self.waiter.lock().take() {
            let _ = h.join();
        }
        if let Some(w) = self.writer.lock().take() {
            self.store.block_on(w.shutdown());
        }
    }
}

/// How long a submission waits for room in the writer's queue (back-pressure on the job generator,
/// e.g. when a restart generates many missed batches at once) before failing.
pub(crate) const SUBMIT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a graceful stop waits for the last checkpoints beyond its own timeout.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The data-checkpoint chain of one stateful operator: the objects (per partition: a snapshot
/// then deltas, in order) that rebuild its state as of `time`.
#[derive(Clone, Debug, Default)]
pub(crate) struct OpChain {
    pub(crate) time: BatchTime,
    pub(crate) partitions: Vec<Vec<spate_checkpoint::DataObjectRef>>,
    pub(crate) output: Option<spate_checkpoint::DataObjectRef>,
    /// Deltas written since the snapshot.
    pub(crate) deltas: u32,
    /// The durable data-checkpoint time before `time` (inputs since it are kept, so a fallback by
    /// one data checkpoint can still recompute).
    pub(crate) previous: Option<BatchTime>,
}

/// `source_positions["state"]` of a manifest: per stateful operator, the state's time and its
/// objects in restore order. A path without `/` is a label of the manifest's own data objects.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct StateMeta {
    pub(crate) ops: Vec<OpMeta>,
}

/// One operator in [`StateMeta`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct OpMeta {
    pub(crate) op: u32,
    pub(crate) time: u64,
    pub(crate) deltas: u32,
    pub(crate) previous: Option<u64>,
    pub(crate) partitions: Vec<Vec<String>>,
    pub(crate) output: Option<String>,
}

pub(crate) const STATE_KEY: &str = "state";

/// Label of a stateful operator's stored output (map_with_state re-emission).
pub(crate) fn output_label(op: spate_types::OperatorId) -> String {
    format!("output-{:010}.bin", op.0)
}

impl Durability {
    /// The state meta and carried objects for a draft: every chain as it stands, except the
    /// operators in `replaced` (whose new objects the caller adds).
    pub(crate) fn state_part(
        &self,
        replaced: &BTreeMap<spate_types::OperatorId, OpMeta>,
    ) -> (StateMeta, Vec<spate_checkpoint::DataObjectRef>) {
        let chains = self.chains.lock();
        let mut meta = StateMeta::default();
        let mut carried = Vec::new();
        let mut seen = BTreeSet::new();
        for (op, c) in chains.iter() {
            if let Some(m) = replaced.get(op) {
                // A delta keeps the chain before it.
                if m.deltas > 0 {
                    for objs in &c.partitions {
                        for o in objs {
                            if seen.insert(o.path.clone()) {
                                carried.push(o.clone());
                            }
                        }
                    }
                }
                continue;
            }
            for objs in &c.partitions {
                for o in objs {
                    if seen.insert(o.path.clone()) {
                        carried.push(o.clone());
                    }
                }
            }
            if let Some(o) = &c.output {
                if seen.insert(o.path.clone()) {
                    carried.push(o.clone());
                }
            }
            meta.ops.push(OpMeta {
                op: op.0,
                time: c.time.0,
                deltas: c.deltas,
                previous: c.previous.map(|t| t.0),
                partitions: c
                    .partitions
                    .iter()
                    .map(|v| v.iter().map(|o| o.path.clone()).collect())
                    .collect(),
                output: c.output.as_ref().map(|o| o.path.clone()),
            });
        }
        meta.ops.extend(replaced.values().cloned());
        meta.ops.sort_by_key(|m| m.op);
        (meta, carried)
    }

    /// Rebuilds the chains from a committed (or restored) manifest's state meta.
    pub(crate) fn set_chains_from(&self, m: &spate_checkpoint::Manifest) -> Result<()> {
        let Some(bytes) = m.source_positions.get(STATE_KEY) else {
            return Ok(());
        };
        let meta: StateMeta = spate_types::codec::decode(bytes).map_err(|e| {
            self.ckpt_err(spate_checkpoint::CheckpointError::Corrupt {
                object: spate_checkpoint::CheckpointPaths::manifest(m.key),
                reason: spate_checkpoint::CorruptReason::Decode(format!("state meta: {e}")),
            })
        })?;
        let own = |p: &str| -> String {
            if p.contains('/') {
                p.to_owned()
            } else {
                spate_checkpoint::CheckpointPaths::data(m.key, p)
            }
        };
        let find = |p: &str| -> Result<spate_checkpoint::DataObjectRef> {
            let path = own(p);
            m.objects
                .iter()
                .find(|o| o.path == path)
                .cloned()
                .ok_or_else(|| {
                    self.ckpt_err(spate_checkpoint::CheckpointError::Corrupt {
                        object: spate_checkpoint::CheckpointPaths::manifest(m.key),
                        reason: spate_checkpoint::CorruptReason::Invalid(format!(
                            "state object {path} is not among the manifest's objects"
                        )),
                    })
                })
        };
        let mut chains = BTreeMap::new();
        for o in &meta.ops {
            let partitions = o
                .partitions
                .iter()
                .map(|v| v.iter().map(|p| find(p)).collect::<Result<Vec<_>>>())
                .collect::<Result<Vec<_>>>()?;
            let output = o.output.as_deref().map(find).transpose()?;
            chains.insert(
                spate_types::OperatorId(o.op),
                OpChain {
                    time: BatchTime(o.time),
                    partitions,
                    output,
                    deltas: o.deltas,
                    previous: o.previous.map(BatchTime),
                },
            );
        }
        *self.chains.lock() = chains;
        Ok(())
    }

    /// Commits a draft and waits for it (data checkpoints: the state must not move on before its
    /// objects are encoded, and the chain must know their references).
    pub(crate) fn commit_now(&self, draft: CheckpointDraft) -> Result<spate_checkpoint::Manifest> {
        let ticket = {
            let w = self.writer.lock();
            let Some(w) = w.as_ref() else {
                return Err(self.ckpt_err(spate_checkpoint::CheckpointError::WriterStopped));
            };
            w.submit_blocking(draft, SUBMIT_TIMEOUT)
                .map_err(|e| self.ckpt_err(e))?
        };
        *self.outstanding.lock() += 1;
        let r = ticket.wait_blocking();
        self.resolved();
        match r {
            Ok(Ok(m)) => {
                *self.committed.lock() += 1;
                Ok(m)
            }
            Ok(Err(a)) => Err(
                self.ckpt_err(spate_checkpoint::CheckpointError::InvalidArgument(format!(
                    "{a:?}"
                ))),
            ),
            Err(e) => Err(self.ckpt_err(e)),
        }
    }

    /// The oldest batch whose inputs stateful operators may still need (so a restore from the
    /// newest or the previous data checkpoint can recompute): `None` without stateful operators.
    pub(crate) fn state_floor(&self, slide: DurationMs) -> Option<BatchTime> {
        self.chains
            .lock()
            .values()
            .map(|c| BatchTime(c.previous.unwrap_or(c.time).0 + slide.0))
            .min()
    }
}
