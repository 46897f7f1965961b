//! Every WAL fail point is reachable and its `return` surfaces as the typed error; `panic`,
//! `sleep` and `return(abort)` act; after each fault a reopen (AbsoluteConsistency) yields every
//! record acknowledged before it, uncorrupted. `cargo test -p spate-wal --features failpoints`.
//! The broken-build test runs with `--features chaos-broken-skip-sync`.
#![cfg(feature = "failpoints")]

use parking_lot::Mutex;
use spate_io::{FileSystem, SimFs, StdFs};
use spate_types::Lsn;
use spate_wal::{Wal, WalError};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Fail points are process-global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[path = "common/opts.rs"]
mod opts;
use opts::opts;

fn open_with(fs: Arc<dyn FileSystem>, dir: &Path) -> Wal {
    Wal::open(fs, dir, opts()).expect("open").0
}

fn open(dir: &Path) -> Wal {
    open_with(Arc::new(StdFs), dir)
}

fn payloads(wal: &Wal) -> Vec<Vec<u8>> {
    let mut r = wal.replay_from(Lsn(0)).expect("replay");
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("replay next") {
        out.push(rec.payload);
    }
    out
}

fn rec(i: usize) -> Vec<u8> {
    format!("record-{i:04}").into_bytes()
}

/// Asserts `e` is the fail point's I/O error (not some other failure).
fn assert_failpoint_io(e: &WalError, name: &str) {
    match e {
        WalError::Io { source, .. } => {
            assert!(
                source.to_string().contains(&format!("failpoint {name}")),
                "{name}: unexpected source {source}"
            );
        }
        other => panic!("{name}: expected WalError::Io, got {other:?}"),
    }
}

/// Three synced records, then `name=return` on the fourth append + sync; the error is typed and
/// the WAL refuses further work — or, for the append point, the same WAL appends, syncs and replays
/// the fourth record afterwards; after a power loss (SimFs, un-synced data dropped) a reopen yields
/// the acknowledged records (the fourth exactly when `durable` says the fault came after its sync,
/// or when it was appended again after the refused append).
fn sync_fault(name: &str, durable: bool) {
    let _g = SERIAL.lock();
    let fs = SimFs::new(11);
    let dir = Path::new("/wal");
    {
        let wal = open_with(Arc::new(fs.clone()), dir);
        for i in 0..3 {
            wal.append(1, &rec(i)).unwrap();
        }
        wal.sync().unwrap();
        fail::cfg(name, "return").unwrap();
        let appended = wal.append(1, &rec(3));
        let r = appended.and_then(|_| wal.sync());
        fail::remove(name);
        let e = r.expect_err("the fail point must make the append or sync fail");
        assert_failpoint_io(&e, name);
        if name == "wal::append::before" {
            // Nothing was written: the same WAL (not a reopened one) takes the record again,
            // syncs it and replays exactly the four records.
            let lsn = wal
                .append(1, &rec(3))
                .expect("append after the refused append");
            assert_eq!(lsn, Lsn(3), "{name}: the refused append consumed an LSN");
            wal.sync().expect("sync after the refused append");
            assert_eq!(wal.synced_lsn(), Lsn(4));
            assert_eq!(payloads(&wal), (0..4).map(rec).collect::<Vec<_>>());
        } else {
            // A failed group commit poisons the WAL: nobody is told a record is durable.
            assert!(
                matches!(wal.sync(), Err(WalError::Poisoned { .. })),
                "{name}: WAL not poisoned"
            );
        }
    }
    fs.crash(spate_io::CrashMode::DropUnsynced);
    let wal = open_with(Arc::new(fs.clone()), dir);
    let got = payloads(&wal);
    let mut want: Vec<Vec<u8>> = (0..3).map(rec).collect();
    if durable || name == "wal::append::before" {
        want.push(rec(3));
    }
    assert_eq!(got, want, "{name}");
    // And the reopened WAL works.
    wal.append(1, b"after").unwrap();
    wal.sync().unwrap();
}

#[test]
fn append_before_returns_io_error_and_wal_stays_usable() {
    sync_fault("wal::append::before", false);
}

#[test]
fn write_before_returns_io_error() {
    sync_fault("wal::write::before", false);
}

#[test]
fn write_after_returns_io_error() {
    sync_fault("wal::write::after", false);
}

#[test]
fn sync_before_returns_io_error() {
    sync_fault("wal::sync::before", false);
}

#[test]
fn sync_after_returns_io_error_but_record_is_durable() {
    sync_fault("wal::sync::after", true);
}

#[test]
fn roll_before_fails_segment_creation() {
    let _g = SERIAL.lock();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = open(&dir);
        fail::cfg("wal::roll::before", "return(disk gone)").unwrap();
        let r = wal.append(1, &rec(0)).and_then(|_| wal.sync());
        fail::remove("wal::roll::before");
        let e = r.unwrap_err();
        assert_failpoint_io(&e, "wal::roll::before");
        assert!(e.to_string().contains("disk gone") || format!("{e:?}").contains("disk gone"));
    }
    let wal = open(&dir);
    assert!(payloads(&wal).is_empty());
    // Rolling later (small segments) also passes through the point.
    for i in 0..200 {
        wal.append(1, &rec(i)).unwrap();
    }
    fail::cfg("wal::roll::before", "return").unwrap();
    let r = wal.sync();
    fail::remove("wal::roll::before");
    assert_failpoint_io(&r.unwrap_err(), "wal::roll::before");
}

#[test]
fn truncate_before_keeps_segments_on_failure() {
    let _g = SERIAL.lock();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let n = 300;
    {
        let wal = open(&dir);
        for i in 0..n {
            wal.append(1, &rec(i)).unwrap();
            if i % 50 == 49 {
                wal.sync().unwrap();
            }
        }
        wal.sync().unwrap();
        fail::cfg("wal::truncate::before", "return").unwrap();
        let r = wal.truncate_before(Lsn(n as u64));
        fail::remove("wal::truncate::before");
        assert_failpoint_io(&r.unwrap_err(), "wal::truncate::before");
    }
    let wal = open(&dir);
    assert_eq!(payloads(&wal), (0..n).map(rec).collect::<Vec<_>>());
    // Without the fault, truncation proceeds.
    assert!(!wal.truncate_before(Lsn(n as u64)).unwrap().is_empty());
}

#[test]
fn panic_and_sleep_act_at_the_site() {
    let _g = SERIAL.lock();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let wal = open(&dir);
        wal.append(1, &rec(0)).unwrap();
        wal.sync().unwrap();
        fail::cfg("wal::sync::before", "sleep(300)").unwrap();
        wal.append(1, &rec(1)).unwrap();
        let t0 = Instant::now();
        let r = wal.sync();
        fail::remove("wal::sync::before");
        r.unwrap();
        assert!(
            t0.elapsed() >= Duration::from_millis(300),
            "sleep not applied"
        );

        fail::cfg("wal::write::before", "panic(boom)").unwrap();
        wal.append(1, &rec(2)).unwrap();
        let p = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wal.sync()));
        fail::remove("wal::write::before");
        assert!(p.is_err(), "panic not raised");
        // The panicking leader poisoned the WAL instead of leaving later syncs waiting forever.
        assert!(matches!(wal.sync(), Err(WalError::Poisoned { .. })));
        assert!(matches!(
            wal.append(1, &rec(3)),
            Err(WalError::Poisoned { .. })
        ));
        // The WAL is dropped like a crashed process's.
    }
    let wal = open(&dir);
    assert_eq!(payloads(&wal), vec![rec(0), rec(1)]);
}

#[test]
fn return_abort_aborts_the_process() {
    use std::os::unix::process::ExitStatusExt;
    let _g = SERIAL.lock();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    // A real child binary (tests/bin/abort_child.rs): three synced records, then a fourth whose
    // sync aborts the process at `wal::sync::after`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wal-failpoint-abort-child"))
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(SIGABRT),
        "child was not aborted: {:?}\n{stderr}",
        out.status
    );
    assert_eq!(out.status.code(), None, "{stderr}");
    assert!(
        stderr.contains("fail point wal::sync::after: abort"),
        "{stderr}"
    );
    // Synced before the abort (after the sync for the fourth record): all four survive.
    let wal = open(&dir);
    assert_eq!(payloads(&wal), (0..4).map(rec).collect::<Vec<_>>());
}

/// SIGABRT on Linux and macOS.
const SIGABRT: i32 = 6;

/// Under SimFs, a crash drops un-synced data: with the correct build every acknowledged record
/// survives; with the deliberately broken `chaos-broken-skip-sync` build they are lost. This is
/// the property the chaos oracle's self-test relies on.
#[test]
fn power_loss_after_acknowledged_sync() {
    let _g = SERIAL.lock();
    let fs = SimFs::new(7);
    let dir = Path::new("/wal");
    {
        let wal = open_with(Arc::new(fs.clone()), dir);
        for i in 0..10 {
            wal.append(1, &rec(i)).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
    }
    fs.crash(spate_io::CrashMode::DropUnsynced);
    let got = Wal::open(Arc::new(fs.clone()), dir, opts()).map(|(w, _)| payloads(&w));
    if spate_wal::CHAOS_BROKEN_SKIP_SYNC {
        let ok = got.as_ref().is_ok_and(|g| g.len() == 10);
        assert!(!ok, "broken build: acknowledged records must be lost");
    } else {
        assert_eq!(got.unwrap(), (0..10).map(rec).collect::<Vec<_>>());
    }
}
