//! # spate
//!
//! Fault-tolerant micro-batch stream processing, modeled on Apache Spark Streaming (DStreams).
//! This facade re-exports the public API users depend on.

pub use spate_streaming as streaming;
pub use spate_types as types;
