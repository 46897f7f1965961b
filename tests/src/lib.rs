//! Shared helpers for spate's integration tests (`tests/it`).
