//! # spate-types
//!
//! The vocabulary every other spate crate shares:
//!
//! * **ids and times** ([`BatchTime`], [`DurationMs`], [`Lsn`], [`BlockId`], [`ReceiverId`],
//!   [`OperatorId`], [`PartitionId`], [`Generation`]) — plain `Copy` newtypes whose units are part
//!   of their names: every time is milliseconds since the Unix epoch, every duration milliseconds;
//! * **format identity** ([`format`]) — the magic bytes, format versions and codec id written at the
//!   start of every persisted file, so a reader can refuse what it does not understand with a typed
//!   error instead of a decode failure;
//! * **the codec** ([`codec`]) — the only place in spate where a serialization library is chosen
//!   (bincode 2.0.1, pinned: 3.0.0 is a `compile_error!` tombstone). Every decode is size-limited so a
//!   corrupt length prefix can never make spate allocate gigabytes.
//!
//! * **fail points** ([`failpoints`]) — the list of every named fail point and the
//!   [`spate_fail!`] site macro (a no-op unless the calling crate's `failpoints` feature is on).
//!
//! Nothing in this crate performs I/O.

pub mod codec;
pub mod failpoints;
pub mod format;
mod ids;
mod time;

pub use ids::{BlockId, Generation, Lsn, OperatorId, PartitionId, ReceiverId};
pub use time::{BatchTime, DurationMs, TimeError};
