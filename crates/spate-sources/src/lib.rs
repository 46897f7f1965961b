//! # spate-sources
//!
//! Where a streaming program's records come from. Two kinds of input, as in Spark Streaming:
//!
//! * **Receivers** ([`Receiver`]) push records as they arrive (a TCP socket, a custom protocol). The
//!   engine's receiver supervisor gives each receiver a [`ReceiverContext`]; records handed to
//!   [`ReceiverContext::store_many`] are cut into blocks every block interval and, with the receiver
//!   WAL on, are durable when `store_many` returns (DESIGN.md §4 step 1).
//! * **Replayable sources** ([`ReplayableSource`]) are pulled: at each batch time the engine asks the
//!   source to [`select`](ReplayableSource::select) what the batch consumes (recorded before the batch
//!   runs, DESIGN.md §4 step 2), then to [`read`](ReplayableSource::read) it — and can read the same
//!   selection again after a crash, so a file is processed in exactly one batch.
//!
//! Implementations: [`socket::SocketTextReceiver`] (Spark's `socketTextStream`),
//! [`file::TextFileSource`] (Spark's `textFileStream`); line decoding rules in [`lines`]; a receiver
//! test harness in [`testing`].
//!
//! This crate knows nothing about DStreams; `spate-streaming` wraps both kinds into input streams.

pub mod file;
pub mod lines;
mod receiver;
pub mod socket;
pub mod testing;

pub use file::{
    FileSourceConfig, FileSourceStats, FileSourceStatsSnapshot, SelectedFile, TextFileSource,
};
pub use lines::{InvalidUtf8Policy, LineCounts, LinePolicy, OverlongPolicy};
pub use receiver::{
    InputChange, Receiver, ReceiverContext, ReceiverError, ReceiverSink, ReplayableSource,
    Selection, SourceError, StoreError,
};
pub use socket::{SocketConfig, SocketStats, SocketStatsSnapshot, SocketTextReceiver};
