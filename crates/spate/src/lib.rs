//! # spate
//!
//! Fault-tolerant micro-batch stream processing, modeled on Apache Spark Streaming (DStreams).
//! This facade re-exports the public API users depend on: build a [`StreamingContext`] from a
//! [`StreamingConfig`], create input [`DStream`]s, transform them, register output operations,
//! `start`, `await_termination`.
//!
//! See [`spate_streaming`] for the guided tour (the DStream model, the batch lifecycle).

pub use spate_streaming as streaming;
pub use spate_types as types;

pub use spate_streaming::{
    diff, format_print, output_file_name, testing, write_file_atomically, Batch, BatchInfo,
    BatchTime, BlockHandler, BoxError, BuildDescription, Clock, CompatibilityDiff, ConfigError,
    ContextState, DStream, Data, DurationMs, FileTransactionalSink, GraphChange, GraphDescription,
    GraphDiff, Key, ManualClock, MapWithStateDStream, MemoryBlockHandler, MissedBatches,
    OperatorDescription, OperatorId, OutputOperationInfo, Receiver, ReceiverContext, ReceiverError,
    ReceiverId, ReceiverInfo, RecoveryEstimate, ReplayableSource, RestartOutcome, RestartReport,
    Result, Selection, SourceError, State, StateBackendKind, StateSpec, StoreError,
    StreamingConfig, StreamingContext, StreamingError, StreamingListener, SystemClock,
    TransactionalSink, UpdateStateSpec,
};
