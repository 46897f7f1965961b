//! Input DStreams: `queue_stream`, `receiver_stream`, `replayable_stream`.

use crate::batch::Batch;
use crate::checkpointer::Checkpointer;
use crate::context::{Inner, InputStream, RestoreInput, StreamingContext};
use crate::dstream::DStream;
use crate::error::{Result, StreamingError};
use crate::graph::NodeMeta;
use crate::journal::WalBlockHandler;
use crate::listener::{BatchInfo, StreamingListener};
use crate::rate::{BatchSample, RateController};
use crate::supervisor::{ReceiverFlow, Supervisor, SupervisorConfig};
use crate::tracker::{BlockHandler, MemoryBlockHandler, ReceivedBlockInfo};
use parking_lot::Mutex;
use spate_sources::{Receiver, ReplayableSource, Selection};
use spate_types::{BatchTime, DurationMs, OperatorId, ReceiverId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};

struct QueueInput<T> {
    queue: Mutex<VecDeque<Vec<T>>>,
    one_at_a_time: bool,
    default: Option<Vec<T>>,
    generated: Mutex<BTreeMap<BatchTime, Vec<T>>>,
}

impl<T: Clone + Send + Sync + 'static> InputStream for QueueInput<T> {
    fn checkpointable(&self) -> Option<&'static str> {
        Some("queue_stream holds its data in memory and cannot be checkpointed (as Spark's queueStream); use a replayable_stream")
    }

    fn generate(&self, t: BatchTime, _d: Option<&Checkpointer>) -> Result<u64> {
        let mut q = self.queue.lock();
        let data = if self.one_at_a_time {
            q.pop_front()
        } else if q.is_empty() {
            None
        } else {
            Some(q.drain(..).flatten().collect())
        };
        let data = data.or_else(|| self.default.clone()).unwrap_or_default();
        let n = data.len() as u64;
        self.generated.lock().insert(t, data);
        Ok(n)
    }

    fn clear(&self, t: BatchTime, _blocks: &[ReceivedBlockInfo]) {
        let mut g = self.generated.lock();
        let keep = g.split_off(&t);
        *g = keep;
    }
}

struct ReceiverInput<T> {
    supervisor: Arc<Supervisor<T>>,
    handler: Arc<dyn BlockHandler<T>>,
    receiver: ReceiverId,
    flow: Arc<ReceiverFlow>,
}

/// Flow control of one receiver, on every completed batch: the blocks the batch read leave the
/// memory budget, and with back-pressure on its [`RateController`] is fed (this receiver's
/// records, the batch's delays) and the new limit goes to the supervisor's rate limiter (Spark's
/// `ReceiverRateController` + `ReceiverTracker.sendRateUpdate`).
struct FlowListener<T> {
    controller: Option<Mutex<RateController>>,
    supervisor: Weak<Supervisor<T>>,
    flow: Arc<ReceiverFlow>,
}

impl<T: Send + 'static> StreamingListener for FlowListener<T> {
    fn on_batch_completed(&self, info: &BatchInfo) {
        let (records, blocks) = self.flow.completed(info.batch_time);
        let Some(sup) = self.supervisor.upgrade() else {
            return;
        };
        sup.release_blocks(blocks);
        let (Some(controller), Some(proc_ms), Some(sched_ms), Some(end)) = (
            &self.controller,
            info.processing_delay_ms(),
            info.scheduling_delay_ms(),
            info.processing_end_ms,
        ) else {
            return;
        };
        let limit = controller.lock().on_batch_completed(BatchSample {
            time_ms: end,
            records,
            processing_delay_ms: proc_ms,
            scheduling_delay_ms: sched_ms,
        });
        if sup.limiter.rate() != limit {
            tracing::debug!(?limit, "back-pressure: new rate limit");
            sup.limiter.set_rate(limit);
        }
    }
}

fn receiver_key(r: ReceiverId) -> String {
    format!("receiver-{}", r.0)
}

impl<T: Send + Sync + 'static> InputStream for ReceiverInput<T> {
    fn generate(&self, _t: BatchTime, _d: Option<&Checkpointer>) -> Result<u64> {
        // Blocks are allocated to the batch by the tracker (one allocation for all receivers).
        Ok(0)
    }

    fn checkpoint_state(&self) -> Result<Vec<(String, Vec<u8>)>> {
        Ok(self
            .supervisor
            .position()
            .and_then(|p| spate_types::codec::encode(&p).ok())
            .map(|b| vec![(receiver_key(self.receiver), b)])
            .unwrap_or_default())
    }

    fn restore(&self, r: &RestoreInput<'_>) -> Result<()> {
        let mut pos = r.replayed.positions.get(&self.receiver).copied();
        if let Some(b) = r.positions.get(&receiver_key(self.receiver)) {
            let p: u64 =
                spate_types::codec::decode(b).map_err(|e| StreamingError::InvalidArgument {
                    kind: "receiver_stream",
                    reason: format!("checkpointed position of receiver {}: {e}", self.receiver),
                })?;
            pos = Some(pos.map_or(p, |q| q.max(p)));
        }
        if let Some(p) = pos {
            self.supervisor.restore_position(p);
        }
        // New blocks are numbered after every block of this receiver still in the WAL (all that
        // a restored batch or the tracker can refer to).
        let next = r
            .replayed
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                crate::tracker::TrackerEvent::BlockAdded(i)
                    if i.block.receiver == self.receiver =>
                {
                    Some(i.block.seq.saturating_add(1))
                }
                _ => None,
            })
            .max();
        if let Some(n) = next {
            self.supervisor.restore_next_seq(n);
        }
        Ok(())
    }

    fn start(&self) -> Result<()> {
        self.supervisor
            .start()
            .map_err(|e| StreamingError::spawn("receiver supervisor", e))
    }

    fn stop(&self) {
        self.supervisor.stop();
    }

    fn clear(&self, _t: BatchTime, blocks: &[ReceivedBlockInfo]) {
        let mine: Vec<ReceivedBlockInfo> = blocks
            .iter()
            .filter(|b| b.block.receiver == self.receiver)
            .cloned()
            .collect();
        if !mine.is_empty() {
            self.handler.remove_blocks(&mine);
            self.supervisor
                .release_blocks(mine.iter().map(|b| b.block.seq));
        }
    }

    fn unprocessed(&self) -> (u64, u64) {
        self.flow.unread()
    }
}

struct ReplayableInput<T> {
    source: Mutex<Box<dyn ReplayableSource<T>>>,
    selections: Mutex<BTreeMap<BatchTime, Selection>>,
    operator: OperatorId,
}

/// A replayable input's entry in a manifest's source positions.
#[derive(serde::Serialize, serde::Deserialize)]
struct InputCheckpoint {
    position: Vec<u8>,
    selections: Vec<Selection>,
}

fn input_key(op: OperatorId) -> String {
    format!("input-{}", op.0)
}

impl<T: Send + Sync + 'static> InputStream for ReplayableInput<T> {
    fn checkpoint_state(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let position = self
            .source
            .lock()
            .position()
            .map_err(|source| StreamingError::Source {
                operator: self.operator,
                time: BatchTime(0),
                source,
            })?;
        let selections: Vec<Selection> = self.selections.lock().values().cloned().collect();
        let bytes = spate_types::codec::encode(&InputCheckpoint {
            position,
            selections,
        })
        .map_err(|source| StreamingError::Encode {
            what: "a source position",
            source,
        })?;
        Ok(vec![(input_key(self.operator), bytes)])
    }

    fn restore(&self, r: &RestoreInput<'_>) -> Result<()> {
        let invalid = |reason: String| StreamingError::Source {
            operator: self.operator,
            time: r.checkpoint_time,
            source: spate_sources::SourceError::Invalid {
                what: "checkpointed source position",
                reason,
            },
        };
        let mut sels: BTreeMap<BatchTime, Selection> = BTreeMap::new();
        let mut position = None;
        if let Some(b) = r.positions.get(&input_key(self.operator)) {
            let c: InputCheckpoint =
                spate_types::codec::decode(b).map_err(|e| invalid(e.to_string()))?;
            for s in c.selections {
                sels.insert(s.time, s);
            }
            position = Some(c.position);
        }
        for (_, op, s) in &r.replayed.selections {
            if *op == self.operator {
                sels.insert(s.time, s.clone());
            }
        }
        let replayed: Vec<Selection> = sels.values().cloned().collect();
        if let Some(p) = position {
            self.source
                .lock()
                .restore(&p, &replayed)
                .map_err(|source| StreamingError::Source {
                    operator: self.operator,
                    time: r.checkpoint_time,
                    source,
                })?;
        }
        *self.selections.lock() = sels;
        Ok(())
    }

    fn generate(&self, t: BatchTime, d: Option<&Checkpointer>) -> Result<u64> {
        if self.selections.lock().contains_key(&t) {
            // Recorded before a crash (WAL or checkpoint): the batch re-reads the same input.
            return Ok(0);
        }
        let sel = self
            .source
            .lock()
            .select(t)
            .map_err(|source| StreamingError::Source {
                operator: self.operator,
                time: t,
                source,
            })?;
        tracing::debug!(operator = self.operator.0, time = t.0, selection = %sel.summary, "selected input");
        if let Some(d) = d {
            // DESIGN.md §4 step 2: the selection is durable before the batch runs.
            d.on_selected(t, self.operator, &sel)?;
        }
        self.selections.lock().insert(t, sel);
        Ok(0)
    }

    fn max_batch_span(&self) -> Option<DurationMs> {
        self.source.lock().max_batch_span()
    }

    fn clear(&self, t: BatchTime, _blocks: &[ReceivedBlockInfo]) {
        let mut g = self.selections.lock();
        let keep = g.split_off(&t);
        *g = keep;
    }
}

fn add_records(inner: &Weak<Inner>, t: BatchTime, n: u64) {
    if let Some(i) = inner.upgrade() {
        i.add_batch_records(t, n);
    }
}

/// Flow-control counters of a context ([`StreamingContext::flow_control`]), over all receivers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FlowControlStatus {
    /// Bytes of received blocks held against the memory budget (stored, batch not cleaned up).
    pub held_bytes: u64,
    /// The memory budget, bytes (`receiver_memory_budget`; 0: unlimited).
    pub budget_bytes: u64,
    /// Total time receivers waited for the budget (throttled), ms of real time.
    pub throttled_ms: u64,
    /// Blocks stored in this run that no batch has read yet, and their records. After
    /// [`stop`](StreamingContext::stop): what the stop could not process (with a receiver WAL it
    /// stays in the WAL and a restart processes it; without one it is lost).
    pub unprocessed_blocks: u64,
    /// Records of `unprocessed_blocks`.
    pub unprocessed_records: u64,
}

impl StreamingContext {
    /// The flow-control counters: memory budget use, time throttled, and received blocks not yet
    /// read by a batch (see `docs/flow-control.md`).
    pub fn flow_control(&self) -> FlowControlStatus {
        let b = &self.inner.budget;
        let (mut blocks, mut records) = (0, 0);
        for i in self.inner.inputs() {
            let (bl, r) = i.unprocessed();
            blocks += bl;
            records += r;
        }
        FlowControlStatus {
            held_bytes: b.held(),
            budget_bytes: b.budget(),
            throttled_ms: b.throttled_ms(),
            unprocessed_blocks: blocks,
            unprocessed_records: records,
        }
    }

    fn input_meta<T: 'static>(
        &self,
        id: OperatorId,
        kind: &'static str,
        detail: Option<String>,
    ) -> NodeMeta {
        let mut m = NodeMeta::new(
            id,
            kind,
            Vec::new(),
            self.inner.config.batch_interval,
            std::any::type_name::<T>(),
        );
        m.detail = detail;
        m
    }

    /// An input of pre-built batches (Spark's `queueStream`): with `one_at_a_time`, batch `k`
    /// receives `batches[k]` (then `default`, or nothing, once the queue is empty); otherwise the
    /// first batch receives everything. Each batch is split into `default_partitions` partitions,
    /// preserving order. For tests and demos: not checkpointable (recovery rejects it).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn queue_stream<T: Clone + Send + Sync + 'static>(
        &self,
        batches: Vec<Vec<T>>,
        one_at_a_time: bool,
        default: Option<Vec<T>>,
    ) -> Result<DStream<T>> {
        let input = Arc::new(QueueInput {
            queue: Mutex::new(batches.into()),
            one_at_a_time,
            default,
            generated: Mutex::new(BTreeMap::new()),
        });
        let parts = self.inner.config.default_partitions;
        let src = Arc::clone(&input);
        let node = self.register("queue_stream", |id| {
            (
                self.input_meta::<T>(id, "queue_stream", None),
                Box::new(move |t| {
                    let data = src.generated.lock().remove(&t).unwrap_or_default();
                    Ok(Some(Batch::split(data, parts)))
                }),
            )
        })?;
        self.register_input(input);
        Ok(DStream::from_node(self.clone(), node))
    }

    /// An input fed by a push-based [`Receiver`] (Spark's `receiverStream`), run by a supervisor
    /// with a block generator, rate limit and restarts. Each batch has one partition per block.
    ///
    /// With a checkpoint configured and `receiver_wal` on (the default), every block is written
    /// and synced to the WAL before `store` returns (Spark's `WriteAheadLogBasedBlockHandler`), so
    /// a crash loses nothing a receiver was told is stored; otherwise blocks are kept in memory
    /// ([`MemoryBlockHandler`]) and lost on a crash.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn receiver_stream<T, R>(&self, receiver: R) -> Result<DStream<T>>
    where
        T: Clone + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static,
        R: Receiver<T>,
    {
        if let Some(d) = &self.inner.checkpointer {
            if self.inner.config.receiver_wal {
                let h: Arc<dyn BlockHandler<T>> =
                    Arc::new(WalBlockHandler::<T>::new(d.on_receiver_wal()));
                return self.receiver_stream_with_handler(receiver, h);
            }
        }
        self.receiver_stream_with_handler(receiver, Arc::new(MemoryBlockHandler::<T>::default()))
    }

    /// As [`receiver_stream`](Self::receiver_stream) with an explicit block handler (the WAL-backed
    /// WAL-backed handler plugs in here).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn receiver_stream_with_handler<T, R>(
        &self,
        receiver: R,
        handler: Arc<dyn BlockHandler<T>>,
    ) -> Result<DStream<T>>
    where
        T: Clone + Send + Sync + 'static,
        R: Receiver<T>,
    {
        let rid = self.next_receiver_id();
        let detail = format!("{} ({rid})", receiver.describe());
        let tracker = self.inner.shared_tracker();
        let h = Arc::clone(&handler);
        let flow = Arc::new(ReceiverFlow::new(Arc::clone(&self.inner.budget)));
        let read_flow = Arc::clone(&flow);
        let node = self.register("receiver_stream", |id| {
            let read_tracker = tracker.clone();
            (
                self.input_meta::<T>(id, "receiver_stream", Some(detail)),
                Box::new(move |t| {
                    let alloc = read_tracker.blocks_of_batch(t);
                    let mut parts = Vec::new();
                    if let Some(blocks) = alloc.blocks.get(&rid) {
                        for b in blocks {
                            let recs =
                                h.take_block(b)
                                    .map_err(|e| StreamingError::BlockUnavailable {
                                        block: b.block,
                                        time: t,
                                        reason: e.to_string(),
                                    })?;
                            read_flow.read(t, b.block.seq, recs.len() as u64);
                            parts.push(recs);
                        }
                    }
                    Ok(Some(Batch::from_partitions(parts)))
                }),
            )
        })?;
        let cfg = &self.inner.config;
        let supervisor = Supervisor::new(
            rid,
            node.meta.id,
            Box::new(receiver),
            Arc::clone(&self.inner.clock),
            SupervisorConfig {
                block_interval: cfg.block_interval,
                restart_delay: cfg.receiver_restart_delay,
                max_rate: cfg.max_rate_per_receiver,
                max_block_bytes: cfg.max_block_bytes,
            },
            Arc::clone(&handler),
            tracker,
            Arc::clone(&self.inner.bus),
            Arc::clone(&flow),
        );
        let controller = if cfg.backpressure {
            let c = RateController::new(
                cfg.batch_interval.0,
                cfg.backpressure_pid.gains(),
                cfg.max_rate_per_receiver,
                cfg.backpressure_initial_rate,
            )
            .map_err(|e| StreamingError::InvalidArgument {
                kind: "receiver_stream",
                reason: e.to_string(),
            })?;
            supervisor.limiter.set_rate(c.limit());
            Some(Mutex::new(c))
        } else {
            None
        };
        self.inner.bus.add(Arc::new(FlowListener {
            controller,
            supervisor: Arc::downgrade(&supervisor),
            flow: Arc::clone(&flow),
        }));
        self.register_input(Arc::new(ReceiverInput {
            supervisor,
            handler,
            receiver: rid,
            flow,
        }));
        Ok(DStream::from_node(self.clone(), node))
    }

    /// An input pulled from a [`ReplayableSource`] (files, offset ranges): at each batch time the
    /// source's selection is recorded before the batch runs (DESIGN.md §4 step 2) and read when the
    /// batch is computed, split into `default_partitions` partitions.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn replayable_stream<T, S>(&self, source: S) -> Result<DStream<T>>
    where
        T: Clone + Send + Sync + 'static,
        S: ReplayableSource<T>,
    {
        let detail = source.describe();
        let parts = self.inner.config.default_partitions;
        let weak = Arc::downgrade(&self.inner);
        let slot: Arc<Mutex<Option<Arc<ReplayableInput<T>>>>> = Arc::new(Mutex::new(None));
        let slot2 = Arc::clone(&slot);
        let node = self.register("replayable_stream", |id| {
            (
                self.input_meta::<T>(id, "replayable_stream", Some(detail)),
                Box::new(move |t| {
                    let Some(input) = slot2.lock().clone() else {
                        return Ok(Some(Batch::empty()));
                    };
                    let sel = input.selections.lock().get(&t).cloned();
                    let Some(sel) = sel else {
                        return Ok(Some(Batch::empty()));
                    };
                    let records = input.source.lock().read(&sel).map_err(|source| {
                        StreamingError::Source {
                            operator: input.operator,
                            time: t,
                            source,
                        }
                    })?;
                    add_records(&weak, t, records.len() as u64);
                    Ok(Some(Batch::split(records, parts)))
                }),
            )
        })?;
        let input = Arc::new(ReplayableInput {
            source: Mutex::new(Box::new(source) as Box<dyn ReplayableSource<T>>),
            selections: Mutex::new(BTreeMap::new()),
            operator: node.meta.id,
        });
        *slot.lock() = Some(Arc::clone(&input));
        self.register_input(input);
        Ok(DStream::from_node(self.clone(), node))
    }
}
