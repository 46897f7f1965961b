//! Shared helpers for spate benchmarks (`benches/benches/*.rs`).
