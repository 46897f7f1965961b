//! The state fail points are reachable: `return` makes the encoders fail with `StateError::Io`
//! naming the point, and the backend (and its change set) is untouched, so a retry encodes the
//! same bytes. `cargo test -p spate-state --features failpoints`.
#![cfg(feature = "failpoints")]

use spate_state::{export_delta, export_snapshot, MemoryBackend, StateBackend, StateError};
use spate_types::{BatchTime, OperatorId, PartitionId};
use std::sync::Mutex;

/// Fail points are process-global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn assert_failpoint(e: &StateError, name: &str) {
    match e {
        StateError::Io { op, source, .. } => {
            assert_eq!(*op, "failpoint");
            assert!(
                source.to_string().contains(&format!("failpoint {name}")),
                "{e}"
            );
        }
        other => panic!("{name}: expected StateError::Io, got {other:?}"),
    }
}

fn backend() -> MemoryBackend<String, u64> {
    let mut b = MemoryBackend::new();
    for i in 0..20u64 {
        b.put(format!("k{i}"), i).unwrap();
    }
    b
}

#[test]
fn failed_snapshot_encode_is_a_typed_error_and_a_retry_exports_the_same_bytes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let b = backend();
    let (op, part, t) = (OperatorId(1), PartitionId(0), BatchTime(2_000));
    let good = export_snapshot(&b, op, part, t).unwrap();
    fail::cfg("state::snapshot::encode::before", "return").unwrap();
    let r = export_snapshot(&b, op, part, t);
    fail::remove("state::snapshot::encode::before");
    assert_failpoint(&r.unwrap_err(), "state::snapshot::encode::before");
    assert_eq!(export_snapshot(&b, op, part, t).unwrap(), good);
}

#[test]
fn failed_delta_encode_is_a_typed_error_and_a_retry_exports_the_same_bytes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut b = backend();
    let _ = b.take_changes().unwrap();
    b.put("k1".into(), 100).unwrap();
    b.put("new".into(), 7).unwrap();
    let changes = b.take_changes().unwrap();
    let (op, part) = (OperatorId(1), PartitionId(0));
    let good = export_delta(&changes, op, part, BatchTime(3_000), BatchTime(2_000)).unwrap();
    fail::cfg("state::delta::encode::before", "return(x)").unwrap();
    let r = export_delta(&changes, op, part, BatchTime(3_000), BatchTime(2_000));
    fail::remove("state::delta::encode::before");
    assert_failpoint(&r.unwrap_err(), "state::delta::encode::before");
    let again = export_delta(&changes, op, part, BatchTime(3_000), BatchTime(2_000)).unwrap();
    assert_eq!(again, good);
}
