//! # spate-io
//!
//! The seams through which spate touches the outside world, so every durable effect and every timer
//! can be tested in-process:
//!
//! * [`Clock`] — wall-clock time in ms, with [`SystemClock`] for production and [`ManualClock`] for
//!   deterministic tests (as Spark's `ManualClock`: time moves only when a test advances it).

mod clock;

pub use clock::{Clock, ManualClock, SystemClock};
