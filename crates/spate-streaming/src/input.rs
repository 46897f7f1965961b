//! Input DStreams: `queue_stream`, `receiver_stream`, `replayable_stream`.

use crate::batch::Batch;
use crate::context::{Inner, InputStream, StreamingContext};
use crate::dstream::DStream;
use crate::error::{Result, StreamingError};
use crate::graph::NodeMeta;
use crate::supervisor::{Supervisor, SupervisorConfig};
use crate::tracker::{BlockHandler, MemoryBlockHandler, ReceivedBlockInfo, ReceivedBlockTracker};
use parking_lot::Mutex;
use spate_sources::{Receiver, ReplayableSource, Selection};
use spate_types::{BatchTime, OperatorId, ReceiverId};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};

struct QueueInput<T> {
    queue: Mutex<VecDeque<Vec<T>>>,
    one_at_a_time: bool,
    default: Option<Vec<T>>,
    generated: Mutex<BTreeMap<BatchTime, Vec<T>>>,
}

impl<T: Clone + Send + Sync + 'static> InputStream for QueueInput<T> {
    fn generate(&self, t: BatchTime) -> Result<u64> {
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
        let keep = g.split_off(&BatchTime(t.0.saturating_add(1)));
        *g = keep;
    }
}

struct ReceiverInput<T> {
    supervisor: Arc<Supervisor<T>>,
    handler: Arc<dyn BlockHandler<T>>,
    receiver: ReceiverId,
}

impl<T: Send + Sync + 'static> InputStream for ReceiverInput<T> {
    fn generate(&self, _t: BatchTime) -> Result<u64> {
        // Blocks are allocated to the batch by the tracker (one allocation for all receivers).
        Ok(0)
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
        }
    }
}

struct ReplayableInput<T> {
    source: Mutex<Box<dyn ReplayableSource<T>>>,
    selections: Mutex<BTreeMap<BatchTime, Selection>>,
    operator: OperatorId,
}

impl<T: Send + Sync + 'static> InputStream for ReplayableInput<T> {
    fn generate(&self, t: BatchTime) -> Result<u64> {
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
        self.selections.lock().insert(t, sel);
        Ok(0)
    }

    fn clear(&self, t: BatchTime, _blocks: &[ReceivedBlockInfo]) {
        let mut g = self.selections.lock();
        let keep = g.split_off(&BatchTime(t.0.saturating_add(1)));
        *g = keep;
    }
}

fn add_records(inner: &Weak<Inner>, t: BatchTime, n: u64) {
    if let Some(i) = inner.upgrade() {
        *i.batch_records.lock().entry(t).or_insert(0) += n;
    }
}

impl StreamingContext {
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
            None,
            None,
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
    /// with a block generator, rate limit and restarts; blocks are kept in memory
    /// ([`MemoryBlockHandler`]). Each batch has one partition per block.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn receiver_stream<T, R>(&self, receiver: R) -> Result<DStream<T>>
    where
        T: Clone + Send + Sync + 'static,
        R: Receiver<T>,
    {
        self.receiver_stream_with_handler(receiver, Arc::new(MemoryBlockHandler::<T>::default()))
    }

    /// As [`receiver_stream`](Self::receiver_stream) with an explicit block handler (the WAL-backed
    /// handler of the recovery issue plugs in here).
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
        let tracker: Arc<Mutex<ReceivedBlockTracker>> = Arc::clone(&self.inner.tracker);
        let h = Arc::clone(&handler);
        let node = self.register("receiver_stream", |id| {
            let read_tracker = Arc::clone(&tracker);
            (
                self.input_meta::<T>(id, "receiver_stream", Some(detail)),
                Box::new(move |t| {
                    let alloc = read_tracker.lock().blocks_of_batch(t);
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
            },
            Arc::clone(&handler),
            tracker,
            Arc::clone(&self.inner.bus),
        );
        self.register_input(Arc::new(ReceiverInput {
            supervisor,
            handler,
            receiver: rid,
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
