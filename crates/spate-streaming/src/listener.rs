//! [`StreamingListener`]: batch, output-operation and receiver events with Spark's vocabulary,
//! delivered asynchronously on a listener-bus thread (Spark's `StreamingListenerBus`).

use crossbeam_channel::{Receiver as ChanRx, Sender};
use parking_lot::RwLock;
use spate_types::{BatchTime, OperatorId, ReceiverId};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What is known about a batch (Spark's `BatchInfo`). Times are clock milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batch time.
    pub batch_time: BatchTime,
    /// Input records of the batch (all inputs; replayable inputs are counted once read).
    pub num_records: u64,
    /// When the batch was submitted to the scheduler.
    pub submission_time_ms: u64,
    /// When its first job started.
    pub processing_start_ms: Option<u64>,
    /// When its last job ended.
    pub processing_end_ms: Option<u64>,
    /// The output operations run for the batch (filled at completion).
    pub output_operations: Vec<OutputOperationInfo>,
    /// True for a batch a restart rescheduled (catch-up); false for the timer's batches.
    pub rescheduled: bool,
    /// At completion, with checkpointing: what a crash now would cost to recover.
    pub recovery: Option<RecoveryEstimate>,
}

/// "A crash now would replay `batches` batches, ≈ `millis` ms" (docs/recovery.md,
/// "Recovery-time estimate"): the batches not yet durably completed plus the state a restore would
/// recompute, times the mean processing time per batch (an exponentially weighted mean, weight
/// 0.2 on the newest batch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryEstimate {
    /// Batches a restart would run or recompute.
    pub batches: u64,
    /// Their estimated processing time, ms (`None` before a batch was measured).
    pub millis: Option<u64>,
}

impl std::fmt::Display for RecoveryEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a crash now would replay {} batches", self.batches)?;
        if let Some(ms) = self.millis {
            // Milliseconds of a realistic estimate are far below 2^52: exact.
            #[allow(clippy::cast_precision_loss)]
            let s = ms as f64 / 1000.0;
            write!(f, ", ≈ {s:.1} s")?;
        }
        Ok(())
    }
}

impl BatchInfo {
    /// Time from submission to processing start, ms (Spark's `schedulingDelay`).
    pub fn scheduling_delay_ms(&self) -> Option<u64> {
        self.processing_start_ms
            .map(|s| s.saturating_sub(self.submission_time_ms))
    }

    /// Time from processing start to end, ms (Spark's `processingDelay`).
    pub fn processing_delay_ms(&self) -> Option<u64> {
        match (self.processing_start_ms, self.processing_end_ms) {
            (Some(s), Some(e)) => Some(e.saturating_sub(s)),
            _ => None,
        }
    }

    /// Scheduling plus processing delay, ms (Spark's `totalDelay`).
    pub fn total_delay_ms(&self) -> Option<u64> {
        self.processing_end_ms
            .map(|e| e.saturating_sub(self.submission_time_ms))
    }

    /// True if every output operation succeeded.
    pub fn succeeded(&self) -> bool {
        self.output_operations.iter().all(|o| o.failure.is_none())
    }
}

/// One output operation's run for one batch (Spark's `OutputOperationInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputOperationInfo {
    /// The batch time.
    pub batch_time: BatchTime,
    /// The output operation's operator id.
    pub operator: OperatorId,
    /// Its kind (`print`, `foreach_batch`, `save_as_text_files`) and name if given.
    pub description: String,
    /// Start, clock ms.
    pub start_ms: u64,
    /// End, clock ms (`None` in the started event).
    pub end_ms: Option<u64>,
    /// The failure message if the job failed or panicked.
    pub failure: Option<String>,
}

/// A receiver's status (Spark's `ReceiverInfo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverInfo {
    /// The receiver.
    pub receiver: ReceiverId,
    /// Its input operator.
    pub operator: OperatorId,
    /// The receiver's `describe()`.
    pub description: String,
    /// True while started.
    pub active: bool,
    /// The last error message, if any.
    pub last_error: Option<String>,
    /// Clock ms of the event.
    pub time_ms: u64,
}

/// Receives engine events. All methods default to doing nothing. Called on the listener-bus thread,
/// in event order; a slow listener delays later events, not batches.
#[allow(unused_variables)]
pub trait StreamingListener: Send + Sync {
    /// The context started; `start_time_ms` is the first batch time.
    fn on_streaming_started(&self, start_time_ms: u64) {}
    /// A batch was submitted to the scheduler.
    fn on_batch_submitted(&self, info: &BatchInfo) {}
    /// A batch's first job started.
    fn on_batch_started(&self, info: &BatchInfo) {}
    /// All of a batch's jobs finished (including failed ones, as Spark).
    fn on_batch_completed(&self, info: &BatchInfo) {}
    /// An output operation started for a batch.
    fn on_output_operation_started(&self, info: &OutputOperationInfo) {}
    /// An output operation finished for a batch.
    fn on_output_operation_completed(&self, info: &OutputOperationInfo) {}
    /// A receiver started (also after a restart).
    fn on_receiver_started(&self, info: &ReceiverInfo) {}
    /// A receiver reported an error (or is restarting because of one).
    fn on_receiver_error(&self, info: &ReceiverInfo) {}
    /// A receiver stopped.
    fn on_receiver_stopped(&self, info: &ReceiverInfo) {}
    /// SIGINT or SIGTERM arrived (with `stop_gracefully_on_signal`): a graceful stop of at most
    /// `graceful_timeout_ms` (the graceful-stop timeout) begins; the same signal again ends the
    /// process at once with exit code `128 + signal` (130 for SIGINT, 143 for SIGTERM), without
    /// running the rest of the stop.
    fn on_stop_signal(&self, signal: i32, graceful_timeout_ms: u64) {}
}

#[derive(Debug)]
pub(crate) enum Event {
    StreamingStarted(u64),
    BatchSubmitted(BatchInfo),
    BatchStarted(BatchInfo),
    BatchCompleted(BatchInfo),
    OutputStarted(OutputOperationInfo),
    OutputCompleted(OutputOperationInfo),
    ReceiverStarted(ReceiverInfo),
    ReceiverError(ReceiverInfo),
    ReceiverStopped(ReceiverInfo),
    StopSignal {
        signal: i32,
        graceful_timeout_ms: u64,
    },
}

type Listeners = Arc<RwLock<Vec<Arc<dyn StreamingListener>>>>;

/// The listener bus: an unbounded queue drained by one thread.
pub(crate) struct ListenerBus {
    listeners: Listeners,
    tx: parking_lot::Mutex<Option<Sender<Event>>>,
    thread: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ListenerBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerBus")
            .field("listeners", &self.listeners.read().len())
            .finish()
    }
}

impl ListenerBus {
    pub(crate) fn new() -> Self {
        ListenerBus {
            listeners: Arc::new(RwLock::new(Vec::new())),
            tx: parking_lot::Mutex::new(None),
            thread: parking_lot::Mutex::new(None),
        }
    }

    pub(crate) fn add(&self, l: Arc<dyn StreamingListener>) {
        self.listeners.write().push(l);
    }

    pub(crate) fn start(&self) -> std::io::Result<()> {
        let (tx, rx) = crossbeam_channel::unbounded::<Event>();
        let listeners = Arc::clone(&self.listeners);
        let h = std::thread::Builder::new()
            .name("spate-listener-bus".into())
            .spawn(move || run_bus(&rx, &listeners))?;
        *self.tx.lock() = Some(tx);
        *self.thread.lock() = Some(h);
        Ok(())
    }

    pub(crate) fn post(&self, e: Event) {
        if let Some(tx) = &*self.tx.lock() {
            // The bus thread only exits after the sender is dropped, so this cannot fail.
            let _ = tx.send(e);
        }
    }

    /// Delivers every queued event, then stops the bus thread.
    pub(crate) fn stop(&self) {
        drop(self.tx.lock().take());
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

fn run_bus(rx: &ChanRx<Event>, listeners: &Listeners) {
    for e in rx {
        let ls = listeners.read().clone();
        for l in ls {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &e {
                Event::StreamingStarted(t) => l.on_streaming_started(*t),
                Event::BatchSubmitted(i) => l.on_batch_submitted(i),
                Event::BatchStarted(i) => l.on_batch_started(i),
                Event::BatchCompleted(i) => l.on_batch_completed(i),
                Event::OutputStarted(i) => l.on_output_operation_started(i),
                Event::OutputCompleted(i) => l.on_output_operation_completed(i),
                Event::ReceiverStarted(i) => l.on_receiver_started(i),
                Event::ReceiverError(i) => l.on_receiver_error(i),
                Event::ReceiverStopped(i) => l.on_receiver_stopped(i),
                Event::StopSignal {
                    signal,
                    graceful_timeout_ms,
                } => l.on_stop_signal(*signal, *graceful_timeout_ms),
            }));
            if res.is_err() {
                tracing::error!("a streaming listener panicked handling {e:?}; continuing");
            }
        }
    }
}
