//! The receiver and replayable-source contracts shared by sources and the engine.

use spate_types::{BatchTime, DurationMs};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why [`ReceiverContext::store_many`] did not store the records. The records are handed back so
/// the caller can retry or hand them to another path (tokio's `SendError` style): nothing is lost
/// silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError<T> {
    /// The receiver is stopping or stopped; the records were not stored.
    #[error("receiver is stopped; {} records not stored", .0.len())]
    Stopped(Vec<T>),
    /// Storing failed (for example the WAL write or sync failed); the records were not acknowledged.
    #[error("store failed: {reason}; {} records not stored", .items.len())]
    Failed {
        /// The records that were not stored.
        items: Vec<T>,
        /// What went wrong.
        reason: String,
    },
}

/// Errors a receiver reports from [`Receiver::on_start`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// The receiver could not start (bad address, ...). The supervisor restarts it after the
    /// restart delay unless the error is fatal.
    #[error("receiver failed to start: {message}")]
    Start {
        /// What went wrong.
        message: String,
        /// True if retrying cannot help (for example an invalid configuration).
        fatal: bool,
    },
}

/// The engine side of a receiver: implemented by the receiver supervisor in `spate-streaming`.
/// Receivers use it through [`ReceiverContext`].
pub trait ReceiverSink<T>: Send + Sync {
    /// Stores `items` into the current block.
    ///
    /// # Durability
    /// Once this returns `Ok`, the records will be part of some batch: with the receiver WAL on they
    /// are in a WAL block that has been synced (a reliable source may acknowledge them); with it off
    /// they are in memory only and are lost on a crash (Spark's behaviour without the WAL).
    ///
    /// # Errors
    /// [`StoreError`] with the records handed back.
    fn store_many(&self, items: Vec<T>) -> Result<(), StoreError<T>>;

    /// As [`store_many`](ReceiverSink::store_many), recording the source position *after* `items`
    /// (for a sequence-numbered source: one past the sequence number of the last item). The
    /// position is stored with the block that holds the items, so after a crash
    /// [`durable_position`](ReceiverSink::durable_position) tells the source where to resume.
    /// Positions passed by one receiver must not decrease.
    ///
    /// # Durability
    /// Once this returns `Ok` with the receiver WAL on, every item and the position are durable: a
    /// reliable source may acknowledge everything below `position` to its sender.
    ///
    /// # Errors
    /// As [`store_many`](ReceiverSink::store_many).
    fn store_many_at(&self, items: Vec<T>, position: u64) -> Result<(), StoreError<T>> {
        let _ = position;
        self.store_many(items)
    }

    /// The highest position recorded with durable blocks of this receiver in earlier runs
    /// (recovered from the WAL and the checkpoint), or `None` on a fresh start or without the WAL.
    /// A reliable source resumes its sender from here (`HELLO spate-ack/1 resume=<position>`).
    fn durable_position(&self) -> Option<u64> {
        None
    }

    /// Asks the supervisor to stop the receiver (`on_stop`) and start it again after `delay`
    /// (the configured restart delay if `None`), as Spark's `Receiver.restart`.
    fn restart(&self, reason: &str, delay: Option<Duration>);

    /// Reports a non-fatal error to the listeners (`ReceiverError` event) without restarting.
    fn report_error(&self, message: &str);

    /// True once the receiver has been asked to stop; receive loops must exit when it is.
    fn is_stopped(&self) -> bool;
}

/// Handle given to a receiver in [`Receiver::on_start`]; cheap to clone into receive threads.
pub struct ReceiverContext<T> {
    sink: Arc<dyn ReceiverSink<T>>,
}

impl<T> Clone for ReceiverContext<T> {
    fn clone(&self) -> Self {
        ReceiverContext {
            sink: Arc::clone(&self.sink),
        }
    }
}

impl<T> fmt::Debug for ReceiverContext<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverContext")
            .field("stopped", &self.sink.is_stopped())
            .finish()
    }
}

impl<T> ReceiverContext<T> {
    /// Wraps the engine's sink.
    pub fn new(sink: Arc<dyn ReceiverSink<T>>) -> Self {
        ReceiverContext { sink }
    }

    /// Stores one record; see [`ReceiverSink::store_many`] for the durability contract.
    ///
    /// # Errors
    /// [`StoreError`] with the record handed back.
    pub fn store(&self, item: T) -> Result<(), StoreError<T>> {
        self.sink.store_many(vec![item])
    }

    /// Stores many records at once (cheaper than one by one); see [`ReceiverSink::store_many`].
    ///
    /// # Errors
    /// [`StoreError`] with the records handed back.
    pub fn store_many(&self, items: Vec<T>) -> Result<(), StoreError<T>> {
        self.sink.store_many(items)
    }

    /// Stores many records with the source position after them; see
    /// [`ReceiverSink::store_many_at`].
    ///
    /// # Errors
    /// [`StoreError`] with the records handed back.
    pub fn store_many_at(&self, items: Vec<T>, position: u64) -> Result<(), StoreError<T>> {
        self.sink.store_many_at(items, position)
    }

    /// Where a reliable source resumes after a crash; see [`ReceiverSink::durable_position`].
    pub fn durable_position(&self) -> Option<u64> {
        self.sink.durable_position()
    }

    /// Restarts the receiver after `delay` (or the configured restart delay).
    pub fn restart(&self, reason: &str, delay: Option<Duration>) {
        self.sink.restart(reason, delay);
    }

    /// Reports a non-fatal error.
    pub fn report_error(&self, message: &str) {
        self.sink.report_error(message);
    }

    /// True once the receiver should stop.
    pub fn is_stopped(&self) -> bool {
        self.sink.is_stopped()
    }
}

/// A push-based input, as Spark's `Receiver[T]`. The supervisor calls `on_start` (which must return
/// promptly, starting its own threads), later `on_stop`; after a `restart` request it calls
/// `on_stop` then `on_start` again.
pub trait Receiver<T>: Send + 'static {
    /// Starts receiving. Must not block: spawn threads that call `ctx.store_many` and exit when
    /// `ctx.is_stopped()`.
    ///
    /// # Errors
    /// [`ReceiverError::Start`]; the supervisor retries after the restart delay unless `fatal`.
    fn on_start(&mut self, ctx: ReceiverContext<T>) -> Result<(), ReceiverError>;

    /// Stops receiving and releases resources; called once per successful `on_start`. Must make the
    /// receive threads exit (they also see `ctx.is_stopped()`).
    fn on_stop(&mut self);

    /// A short description for the graph description and logs, e.g. `socket 127.0.0.1:9999`. It is
    /// part of the operator's identity only through the operator's kind and name, not this text.
    fn describe(&self) -> String;
}

/// What a replayable source selected for one batch: an opaque, codec-encoded payload (file list,
/// offset range) plus a human summary. The engine records it before the batch runs and passes it
/// back to [`ReplayableSource::read`], possibly in a later process after a crash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// The batch time this selection belongs to.
    pub time: BatchTime,
    /// Source-specific encoded selection (e.g. the files chosen, with sizes).
    pub data: Vec<u8>,
    /// Human-readable summary for logs and the restart report, e.g. `3 files, 12345 bytes`.
    pub summary: String,
}

/// Errors of replayable sources.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// An I/O error on a named path.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (list, stat, read).
        op: &'static str,
        /// The path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A selection or position could not be decoded (corrupt or from another build).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was being decoded.
        what: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A selected input is no longer readable as it was when selected (deleted or changed file):
    /// replaying it would not reproduce the batch.
    #[error("input changed since it was selected: {path}: {change}")]
    Changed {
        /// The input that changed.
        path: String,
        /// How it changed.
        change: InputChange,
    },
    /// The input's bytes violate the source's configured policy (invalid UTF-8 or an overlong line
    /// under an `Error` policy, a file larger than the limit).
    #[error("invalid data in {path} at byte {offset}: {reason}")]
    InvalidData {
        /// The input (file path).
        path: String,
        /// Byte offset within the input.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// How a selected input differs, on replay, from what was selected ([`SourceError::Changed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputChange {
    /// The input was deleted after it was selected.
    Deleted,
    /// The input's size differs from the selected size.
    Size {
        /// The size recorded in the selection (bytes).
        selected: u64,
        /// The size found now (bytes).
        now: u64,
    },
    /// The input's modification time differs from the selected one.
    Mtime {
        /// The modification time recorded in the selection (ms since the epoch).
        selected_ms: u64,
        /// The modification time found now (ms since the epoch).
        now_ms: u64,
    },
    /// Reading the input returned another number of bytes than the selected size.
    ReadLength {
        /// The size recorded in the selection (bytes).
        selected: u64,
        /// The bytes read.
        read: u64,
    },
}

impl fmt::Display for InputChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputChange::Deleted => f.write_str("file was deleted after it was selected"),
            InputChange::Size { selected, now } => {
                write!(f, "size is {now} bytes, was {selected} when selected")
            }
            InputChange::Mtime {
                selected_ms,
                now_ms,
            } => write!(
                f,
                "mtime is {now_ms} ms, was {selected_ms} ms when selected"
            ),
            InputChange::ReadLength { selected, read } => {
                write!(f, "read {read} bytes, {selected} when selected")
            }
        }
    }
}

/// A pull-based, replayable input (Spark's `InputDStream.compute` for file streams; Kafka-style
/// offset ranges). Batches are selected in increasing time order.
pub trait ReplayableSource<T>: Send + 'static {
    /// Decides what batch `time` consumes (for files: new files by modification time within the
    /// remembered window). Called exactly once per batch time, in order; the result is recorded
    /// before the batch runs (DESIGN.md §4 step 2).
    ///
    /// # Errors
    /// [`SourceError`] if the input cannot be listed; the batch is not generated then.
    fn select(&mut self, time: BatchTime) -> Result<Selection, SourceError>;

    /// Reads the records of a selection. Deterministic: the same selection yields the same records
    /// (in the same order) every time, in any process.
    ///
    /// # Errors
    /// [`SourceError::Changed`] if the input no longer matches the selection.
    fn read(&self, selection: &Selection) -> Result<Vec<T>, SourceError>;

    /// The source's position to checkpoint (for files: the remembered files and their times), as an
    /// opaque encoded value.
    ///
    /// # Errors
    /// [`SourceError::Invalid`] if it cannot be encoded.
    fn position(&self) -> Result<Vec<u8>, SourceError>;

    /// Restores a position produced by [`position`](ReplayableSource::position) (after a restart),
    /// plus the selections of the batches being replayed, so they are not selected again.
    ///
    /// # Errors
    /// [`SourceError::Invalid`] for a position this source cannot decode.
    fn restore(&mut self, position: &[u8], replayed: &[Selection]) -> Result<(), SourceError>;

    /// A short description for the graph description and logs, e.g. `files /data/in`.
    fn describe(&self) -> String;

    /// The longest time span (ms) one selection may cover and still select every record of it:
    /// a batch at `T` that merges the grid times since `T − span` (`missed_batches = coalesce`)
    /// must not miss input. For files: the remember window (a file older than `T − remember`
    /// is never selected). Default: unbounded.
    fn max_batch_span(&self) -> Option<DurationMs> {
        None
    }
}
