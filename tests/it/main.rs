//! spate integration tests. One module per area; see `tests/README.md`.
mod ack_ingest;
mod chaos;
mod checkpoint;
mod checkpoint_cli;
mod crash;
mod engine;
mod engine_runtime;
mod feed;
mod flow;
mod jobs;
mod recovery;
mod sources;
mod sources_engine;
mod state;
mod state_props;
mod wal;
