//! # spate-state
//!
//! State backends of stateful operators and the incremental data-checkpoint format (issue 6).
