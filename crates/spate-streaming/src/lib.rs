//! # spate-streaming: the DStream engine
//!
//! Spark Streaming's programming model in typed Rust: a [`StreamingContext`] owns a graph of
//! [`DStream`]s; every batch interval the engine turns the graph into jobs over that interval's
//! input, runs them partition-parallel on all cores, and hands the results to output operations.
//!
//! ## The DStream model
//!
//! A *discretized stream* (`DStream<T>`) is a sequence of [`Batch<T>`]es, one per **batch time**.
//! Batch times lie on a grid anchored at **zero time**: `zero + k × batch interval`, `k ≥ 1`
//! (ms since the Unix epoch, [`spate_types::BatchTime`]). A window operator has its own **slide**
//! (a multiple of its parent's slide) and produces a batch only at times on its slide grid; its
//! batch at `t` covers the parent's batches in `(t − window, t]`. Each operator memoises the batches
//! it produced for as long as a window downstream needs them (Spark's `rememberDuration`).
//!
//! ```
//! use spate_streaming::{StreamingConfig, StreamingContext, testing};
//! use spate_io::ManualClock;
//! use spate_types::{BatchTime, DurationMs};
//! use std::sync::{Arc, Mutex};
//!
//! # let _guard = testing::context_lock();
//! let clock = ManualClock::new(0);
//! let ctx = StreamingContext::with_clock(
//!     StreamingConfig::with_batch_interval(DurationMs::from_secs(1)),
//!     Arc::new(clock.clone()),
//! )?;
//! let lines = ctx.queue_stream(vec![vec!["to be or not to be".to_owned()]], true, None)?;
//! let counts = lines
//!     .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())?
//!     .map(|w| (w, 1u64))?
//!     .reduce_by_key(|a, b| a + b)?
//!     .name("counts")?;
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = Arc::clone(&seen);
//! counts.foreach_batch(move |_time, batch| sink.lock().unwrap().extend(batch.to_vec()))?;
//! ctx.start()?;
//! testing::advance_and_wait(&ctx, &clock, BatchTime(1000))?;
//! ctx.stop(true)?;
//! let mut got = seen.lock().unwrap().clone();
//! got.sort();
//! assert_eq!(got[0], ("be".to_owned(), 2));
//! # Ok::<(), spate_streaming::StreamingError>(())
//! ```
//!
//! ## Why micro-batch
//!
//! Cutting the stream into batches makes every batch a finite, deterministic computation over
//! inputs that are *fixed before it runs* (received blocks allocated to it, files or offsets
//! selected for it). That is what makes exactly-once recovery possible: a batch can be recomputed
//! after a crash from the same inputs and yields the same result. It also amortises scheduling over
//! many records, so per-record cost is that of a tight loop.
//!
//! ## The lifecycle of one batch (numbers match DESIGN.md §4)
//!
//! 1. Receivers hand records to their supervisor's **block generator** (`store_many`); every block
//!    interval the buffer is cut into a block, stored by the [`BlockHandler`] and added to the
//!    [`ReceivedBlockTracker`]; `store_many` returns then.
//! 2. At batch time `T` the job generator (a timer on the [`spate_io::Clock`]) allocates all
//!    unallocated blocks to `T`; replayable sources record their selection for `T`; queue inputs
//!    take their element for `T`.
//! 3. With a checkpoint location, the metadata checkpoint "T generated" is submitted.
//! 4. The batch's jobs (one per output operation valid at `T`) run on the job scheduler (one batch
//!    at a time by default); transformations run partition-parallel on the worker pool (rayon),
//!    by-key operators combine map-side and hash-partition deterministically.
//! 5. On a data-checkpoint time, stateful operators' snapshots or deltas and the manifest are
//!    committed ([`crate::plan`] decides which).
//! 6. Listeners receive `batch completed` with scheduling, processing and total delay.
//! 7. Old memoised batches, allocations and blocks are dropped (Spark's `clearMetadata`).
//!
//! ## Rules (as Spark)
//!
//! Operators may only be added before `start`; a stopped context cannot be restarted; one context
//! is active per process; window and slide must be multiples of the parent's slide. Each is a typed
//! [`StreamingError`].

// Pair-stream signatures are nested tuples by nature (`(K, (V, Option<W>))`, as Spark's).
#![allow(clippy::type_complexity)]

mod batch;
mod checkpointer;
pub mod compat;
mod config;
mod context;
mod dstream;
mod error;
mod graph;
mod input;
mod input_sources;
mod journal;
mod listener;
mod output;
mod pair;
mod plan;
pub mod rate;
pub mod recovery;
pub mod shuffle;
mod sink;
mod state;
mod supervisor;
pub mod testing;
mod tracker;

pub use batch::Batch;
pub use compat::{BuildDescription, CompatibilityDiff, SettingChange};
pub use config::{
    check_interval, ConfigError, IntervalBounds, MissedBatches, PidConfig, StateBackendKind,
    StreamingConfig, BATCH_INTERVAL_BOUNDS, BLOCK_INTERVAL_BOUNDS, DEFAULT_GRACEFUL_STOP_CAP_MS,
    GRACEFUL_STOP_TIMEOUT_BOUNDS, RESTART_DELAY_BOUNDS, STOP_CONDITION_BOUNDS, WINDOW_BOUNDS,
};
pub use context::{ContextState, StreamingContext};
pub use dstream::{DStream, Data, Key};
pub use error::{BoxError, Result, StreamingError};
pub use graph::{diff, GraphChange, GraphDescription, GraphDiff, OperatorDescription};
pub use input::FlowControlStatus;
pub use listener::{
    BatchInfo, OutputOperationInfo, ReceiverInfo, RecoveryEstimate, StreamingListener,
};
pub use output::{format_print, output_file_name, write_file_atomically};
pub use recovery::{RestartOutcome, RestartReport};
pub use sink::{FileTransactionalSink, TransactionalSink};
pub use state::{MapWithStateDStream, State, StateSpec, UpdateStateSpec};
pub use tracker::{
    AllocatedBlocks, BlockHandler, BlockStoreError, MemoryBlockHandler, ReceivedBlockInfo,
    ReceivedBlockTracker, TrackerEvent,
};

pub use spate_io::{Clock, ManualClock, SystemClock};
pub use spate_sources::{
    Receiver, ReceiverContext, ReceiverError, ReplayableSource, Selection, SourceError, StoreError,
};
pub use spate_types::{BatchTime, DurationMs, OperatorId, ReceiverId};
