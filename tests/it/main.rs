//! spate integration tests. One module per area; see `tests/README.md`.
mod feed;
mod sources;
mod wal;
