//! Every checkpoint-store fail point is reachable on a real local store; `return` surfaces as a
//! typed `CheckpointError::Store` (op `failpoint`) with the documented determinacy; afterwards the
//! store resolves to a checkpoint that verifies, and nothing a correct build wrote is rejected.
//! `cargo test -p spate-checkpoint --features failpoints`; with
//! `--features failpoints,chaos-broken-manifest-first` the broken build's signature (a published
//! manifest whose data objects are missing) shows instead.
#![cfg(feature = "failpoints")]

use spate_checkpoint::store::{CheckpointStore, StoreOptions, VerifyLevel};
use spate_checkpoint::{CheckpointError, Determinacy, RejectReason, Retention};
use spate_types::BatchTime;
use std::sync::Mutex;

/// Fail points are process-global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[path = "common/draft.rs"]
mod draft;
use draft::draft;

fn store(dir: &std::path::Path) -> CheckpointStore {
    CheckpointStore::open(dir.to_str().unwrap(), StoreOptions::default()).unwrap()
}

fn assert_failpoint(e: &CheckpointError, name: &str, determinacy: Determinacy) {
    match e {
        CheckpointError::Store { op, .. } => {
            assert_eq!(*op, "failpoint", "{name}: {e}");
            assert!(
                e.to_string().contains(&format!("failpoint {name}")),
                "{name}: {e}"
            );
            assert_eq!(e.determinacy(), determinacy, "{name}");
        }
        other => panic!("{name}: expected CheckpointError::Store, got {other:?}"),
    }
}

/// Commits t=2000, then arms `name=return` for the commit of t=3000 and checks the error; then the
/// store resolves to `expect_time` with every checkpoint verifying (no rejection).
fn commit_fault(name: &str, determinacy: Determinacy, expect_time: u64) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    rt.block_on(async {
        let s = store(tmp.path());
        let mut c = s.open_committer().await.unwrap();
        c.commit(draft(2_000, 2)).await.unwrap().unwrap();
        fail::cfg(name, "return").unwrap();
        let r = c.commit(draft(3_000, 2)).await;
        fail::remove(name);
        assert_failpoint(&r.expect_err("commit must fail"), name, determinacy);

        let fresh = store(tmp.path());
        let resolved = fresh.resolve_latest().await.unwrap().expect("a checkpoint");
        assert_eq!(
            resolved.manifest.batch_time,
            BatchTime(expect_time),
            "{name}"
        );
        assert!(
            resolved.resolution.rejected.is_empty(),
            "{name}: a correct build never leaves a rejected manifest: {:?}",
            resolved.resolution.rejected
        );
        for st in fresh.verify_all(VerifyLevel::Full).await.unwrap() {
            assert!(st.problem.is_none(), "{name}: {st:?}");
        }
        // The store stays usable: a new writer commits.
        let mut c2 = fresh.open_committer().await.unwrap();
        c2.commit(draft(4_000, 1)).await.unwrap().unwrap();
    });
}

#[test]
fn failed_data_put_before_leaves_the_previous_checkpoint_and_a_usable_store() {
    commit_fault(
        "checkpoint::data::put::before",
        Determinacy::Determinate,
        2_000,
    );
}

#[test]
fn failed_data_put_after_leaves_the_previous_checkpoint_and_a_usable_store() {
    commit_fault(
        "checkpoint::data::put::after",
        Determinacy::Determinate,
        2_000,
    );
}

#[test]
fn failed_manifest_put_before_leaves_the_previous_checkpoint_and_a_usable_store() {
    commit_fault(
        "checkpoint::manifest::put::before",
        Determinacy::Determinate,
        2_000,
    );
}

#[test]
fn manifest_put_after_leaves_a_valid_checkpoint() {
    commit_fault(
        "checkpoint::manifest::put::after",
        Determinacy::Indeterminate,
        3_000,
    );
}

#[test]
fn failed_fence_check_leaves_the_previous_checkpoint_and_a_usable_store() {
    commit_fault("checkpoint::fence::check", Determinacy::Determinate, 2_000);
}

#[test]
fn gc_failing_mid_delete_keeps_valid_checkpoints_and_a_rerun_completes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let s = store(tmp.path());
        let mut c = s.open_committer().await.unwrap();
        for t in 1..=5 {
            c.commit(draft(t * 1_000, 1)).await.unwrap().unwrap();
        }
        let keep = Retention {
            keep: 2,
            ..Retention::default()
        };
        fail::cfg("checkpoint::gc::delete::before", "1*off->return").unwrap();
        let r = s.gc(&keep).await;
        fail::remove("checkpoint::gc::delete::before");
        assert_failpoint(
            &r.expect_err("gc must fail"),
            "checkpoint::gc::delete::before",
            Determinacy::Determinate,
        );
        // Partially executed: still resolves to the newest, every remaining checkpoint verifies.
        let resolved = s.resolve_latest().await.unwrap().unwrap();
        assert_eq!(resolved.manifest.batch_time, BatchTime(5_000));
        for st in s.verify_all(VerifyLevel::Full).await.unwrap() {
            assert!(st.problem.is_none(), "{st:?}");
        }
        // Rerunning completes it.
        let plan = s.gc(&keep).await.unwrap();
        assert!(plan.deletions().count() > 0);
        assert_eq!(s.verify_all(VerifyLevel::Full).await.unwrap().len(), 2);
    });
}

#[test]
fn panic_at_manifest_put_publishes_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // `panic` panics at the site (inside the async commit).
    let tmp = tempfile::tempdir().unwrap();
    let rt = rt();
    let s = store(tmp.path());
    let mut c = rt.block_on(s.open_committer()).unwrap();
    fail::cfg("checkpoint::manifest::put::before", "panic(boom)").unwrap();
    let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(c.commit(draft(2_000, 1)))
    }));
    fail::remove("checkpoint::manifest::put::before");
    assert!(p.is_err());
    assert!(rt.block_on(s.resolve_latest()).unwrap().is_none());
}

/// A real process abort at `checkpoint::data::put::before`: with the correct build the store then
/// resolves to the previous checkpoint without any rejection; with `chaos-broken-manifest-first`
/// the newest manifest names missing objects (rejected: `MissingObject`) — the signature the chaos
/// oracle flags as a protocol violation.
#[test]
fn return_abort_between_manifest_and_data() {
    use std::os::unix::process::ExitStatusExt;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // A real child binary (tests/bin/abort_child.rs): one commit, then a second one aborted at
    // its first data object.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_checkpoint-failpoint-abort-child"))
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(6),
        "not aborted (SIGABRT): {out:?}\n{stderr}"
    );
    assert_eq!(out.status.code(), None, "{stderr}");
    assert!(
        stderr.contains("fail point checkpoint::data::put::before: abort"),
        "{stderr}"
    );
    let resolved = rt()
        .block_on(store(tmp.path()).resolve_latest())
        .unwrap()
        .expect("the first checkpoint");
    assert_eq!(resolved.manifest.batch_time, BatchTime(2_000));
    let rejected = &resolved.resolution.rejected;
    if spate_checkpoint::CHAOS_BROKEN_MANIFEST_FIRST {
        assert!(
            rejected
                .iter()
                .any(|r| matches!(r.reason, RejectReason::MissingObject { .. })),
            "broken build: the manifest must have been published before its data: {rejected:?}"
        );
    } else {
        assert!(rejected.is_empty(), "{rejected:?}");
    }
}
