//! Segmented, checksummed write-ahead log with group commit and explicit recovery modes.
