//! The WAL conformance suite (feature `testing`): the durability contract of the crate docs checked
//! on any [`FileSystem`], as `spate_checkpoint::testing` does for checkpoint stores and
//! `spate_state::conformance` for state backends.
//!
//! Each function takes a [`WalFixture`] (a file system, fresh directories and a way to crash) and
//! panics (it is a test) on a violation; [`run_all`] runs every one. The crate's tests run it on
//! [`StdFs`] (a real directory) and on [`SimFs`] (power loss drops every un-synced byte).
//!
//! | function | contract |
//! | --- | --- |
//! | [`append_sync_replay_exact_prefix`] | replay yields exactly the synced prefix, LSNs dense |
//! | [`torn_tail_is_truncated_and_reported`] | a cut last frame is a reported torn tail, appends continue after it |
//! | [`mid_log_corruption_is_a_typed_error`] | a flipped byte before a later sync point is `WalError::Corrupt` at its frame |
//! | [`reopen_after_crash_continues_the_log`] | crash, reopen, append: one dense log from LSN 0 |
//! | [`truncate_before_removes_only_whole_older_segments`] | truncation keeps every record at or after the bound, durably |
//! | [`segments_roll_by_size_and_replay_in_order`] | size rolls give contiguous segments replayed in LSN order |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use crate::format::segment_file_name;
use crate::{CorruptReason, RecoveryMode, RecoveryReport, SyncPolicy, Wal, WalError, WalOptions};
use spate_io::{CrashMode, FileSystem, ManualClock, SimFs, StdFs};
use spate_types::Lsn;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What the suite runs a WAL on.
pub trait WalFixture {
    /// The file system.
    fn fs(&self) -> Arc<dyn FileSystem>;
    /// A directory no other test of this fixture uses (it need not exist).
    fn dir(&self, name: &str) -> PathBuf;
    /// The process holding the WAL died (the WAL is already dropped): on [`SimFs`] a power loss
    /// that drops every un-synced write and directory change; on [`StdFs`] nothing more (the
    /// kernel keeps what was written).
    fn crash(&self);
}

/// [`SimFs`]: `crash` is a power loss ([`CrashMode::DropUnsynced`]).
#[derive(Debug, Clone)]
pub struct SimFsFixture {
    fs: SimFs,
}

impl SimFsFixture {
    /// A fresh [`SimFs`] with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        SimFsFixture {
            fs: SimFs::new(seed),
        }
    }
}

impl WalFixture for SimFsFixture {
    fn fs(&self) -> Arc<dyn FileSystem> {
        Arc::new(self.fs.clone())
    }
    fn dir(&self, name: &str) -> PathBuf {
        Path::new("/conformance").join(name)
    }
    fn crash(&self) {
        self.fs.crash(CrashMode::DropUnsynced);
    }
}

/// [`StdFs`] below `root` (a temporary directory the caller owns); `crash` does nothing more
/// than dropping the WAL did.
#[derive(Debug, Clone)]
pub struct StdFsFixture {
    root: PathBuf,
}

impl StdFsFixture {
    /// Directories below `root`.
    #[must_use]
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StdFsFixture { root: root.into() }
    }
}

impl WalFixture for StdFsFixture {
    fn fs(&self) -> Arc<dyn FileSystem> {
        Arc::new(StdFs)
    }
    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
    fn crash(&self) {}
}

/// Runs every function of the suite on `fx`.
pub fn run_all(fx: &dyn WalFixture) {
    append_sync_replay_exact_prefix(fx);
    torn_tail_is_truncated_and_reported(fx);
    mid_log_corruption_is_a_typed_error(fx);
    reopen_after_crash_continues_the_log(fx);
    truncate_before_removes_only_whole_older_segments(fx);
    segments_roll_by_size_and_replay_in_order(fx);
}

/// Manual sync, no preallocation (a file ends where its data ends), a fixed clock.
fn options(segment_bytes: u64, recovery: RecoveryMode) -> WalOptions {
    WalOptions {
        segment_bytes,
        preallocate: false,
        sync_policy: SyncPolicy::Manual,
        recovery,
        clock: Arc::new(ManualClock::new(1_000)),
        ..WalOptions::default()
    }
}

fn open(
    fx: &dyn WalFixture,
    dir: &Path,
    segment_bytes: u64,
    recovery: RecoveryMode,
) -> Result<(Wal, RecoveryReport), WalError> {
    Wal::open(fx.fs(), dir, options(segment_bytes, recovery))
}

fn payload(i: u64) -> Vec<u8> {
    format!("record-{i:05}-{}", "x".repeat((i % 37) as usize)).into_bytes()
}

/// Every record from the start: (LSN, payload).
fn replay(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    let mut r = wal.replay_from(Lsn(0)).unwrap();
    let mut out = Vec::new();
    while let Some(rec) = r.next().unwrap() {
        out.push((rec.lsn.0, rec.payload));
    }
    out
}

/// Records with LSNs `from..=to` as the suite appends them (LSNs start at 0: record `i` has LSN
/// `i`).
fn expected(from_lsn: u64, to_lsn: u64) -> Vec<(u64, Vec<u8>)> {
    (from_lsn..=to_lsn).map(|l| (l, payload(l))).collect()
}

fn append_range(wal: &Wal, from: u64, to: u64) {
    for i in from..to {
        assert_eq!(wal.append(1, &payload(i)).unwrap(), Lsn(i), "record {i}");
    }
}

/// Twenty records synced, five more appended but never synced, then a crash: a reopen replays
/// exactly the twenty (LSNs 0..=19) and the next append is LSN 20.
pub fn append_sync_replay_exact_prefix(fx: &dyn WalFixture) {
    let dir = fx.dir("exact-prefix");
    {
        let (wal, report) = open(fx, &dir, 1 << 20, RecoveryMode::TolerateTornTail).unwrap();
        assert_eq!(report.records(), 0, "a fresh directory has no records");
        append_range(&wal, 0, 20);
        wal.sync().unwrap();
        assert_eq!(wal.synced_lsn(), Lsn(20));
        assert_eq!(
            replay(&wal),
            expected(0, 19),
            "the live WAL replays what it synced"
        );
        append_range(&wal, 20, 25);
    }
    fx.crash();
    let (wal, report) = open(fx, &dir, 1 << 20, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(report.records(), 20, "{report:?}");
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_eq!(replay(&wal), expected(0, 19));
    assert_eq!(wal.append(1, &payload(20)).unwrap(), Lsn(20));
}

/// Ten records, one group each; the last frame is cut seven bytes in. A strict open refuses it as
/// `Corrupt { reason: TornTail }` at that frame; the default open truncates it, reports segment,
/// offset and dropped bytes, replays the nine records before it and appends after them.
pub fn torn_tail_is_truncated_and_reported(fx: &dyn WalFixture) {
    let dir = fx.dir("torn-tail");
    let last = {
        let (wal, _) = open(fx, &dir, 1 << 20, RecoveryMode::TolerateTornTail).unwrap();
        let mut last = None;
        for i in 0..10 {
            last = Some(wal.append_with_handle(1, &payload(i)).unwrap());
            wal.sync().unwrap();
        }
        last.unwrap()
    };
    let seg = dir.join(segment_file_name(last.segment.0));
    fx.fs()
        .open(&seg)
        .unwrap()
        .set_len(last.offset + 7)
        .unwrap();
    let strict = open(fx, &dir, 1 << 20, RecoveryMode::AbsoluteConsistency);
    assert!(
        matches!(
            &strict,
            Err(WalError::Corrupt { segment, offset, reason: CorruptReason::TornTail(_) })
                if *segment == seg && *offset == last.offset
        ),
        "{:?}",
        strict.map(|(_, r)| r)
    );
    let (wal, report) = open(fx, &dir, 1 << 20, RecoveryMode::TolerateTornTail).unwrap();
    let torn = report.torn_tail.clone().expect("a torn tail reported");
    assert_eq!(
        (torn.segment, torn.offset, torn.dropped_bytes),
        (seg, last.offset, 7),
        "{report:?}"
    );
    assert_eq!(replay(&wal), expected(0, 8));
    assert_eq!(wal.append(1, &payload(9)).unwrap(), Lsn(9));
    wal.sync().unwrap();
    assert_eq!(replay(&wal), expected(0, 9));
}

/// Forty records over several segments, synced every five; one payload byte flipped in the first
/// segment (later sync points exist): opening is `WalError::Corrupt` at that frame's segment and
/// offset, in the default mode as in the strict one — never a silent truncation.
pub fn mid_log_corruption_is_a_typed_error(fx: &dyn WalFixture) {
    let dir = fx.dir("mid-log");
    let victim = {
        let (wal, _) = open(fx, &dir, 512, RecoveryMode::TolerateTornTail).unwrap();
        let mut victim = None;
        for i in 0..40 {
            let h = wal.append_with_handle(1, &payload(i)).unwrap();
            if i == 2 {
                victim = Some(h);
            }
            if i % 5 == 4 {
                wal.sync().unwrap();
            }
        }
        victim.unwrap()
    };
    let seg = dir.join(segment_file_name(victim.segment.0));
    let file = fx.fs().open(&seg).unwrap();
    let at = victim.offset + u64::from(victim.length) - 3;
    let mut b = [0u8; 1];
    file.read_exact_at(at, &mut b).unwrap();
    file.write_all_at(at, &[b[0] ^ 0x40]).unwrap();
    file.sync_data().unwrap();
    drop(file);
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let r = open(fx, &dir, 512, mode);
        assert!(
            matches!(
                &r,
                Err(WalError::Corrupt { segment, offset, .. })
                    if *segment == seg && *offset == victim.offset
            ),
            "{mode:?}: {:?}",
            r.map(|(_, rep)| rep)
        );
    }
}

/// Ten records synced, crash, reopen, ten more synced, crash, reopen: twenty records with dense
/// LSNs 0..=19, the second run's first append LSN 10.
pub fn reopen_after_crash_continues_the_log(fx: &dyn WalFixture) {
    let dir = fx.dir("reopen");
    for run in 0..2u64 {
        {
            let (wal, report) = open(fx, &dir, 1 << 20, RecoveryMode::TolerateTornTail).unwrap();
            assert_eq!(report.records(), run * 10, "run {run}: {report:?}");
            assert_eq!(wal.next_lsn(), Lsn(run * 10), "run {run}");
            append_range(&wal, run * 10, run * 10 + 10);
            wal.sync().unwrap();
        }
        fx.crash();
    }
    let (wal, _) = open(fx, &dir, 1 << 20, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(replay(&wal), expected(0, 19));
}

/// Sixty synced records in small segments; `truncate_before(30)` removes only segments whose
/// records all precede LSN 30 (at least one), keeps every record from 30 on, and the removal
/// survives a crash.
pub fn truncate_before_removes_only_whole_older_segments(fx: &dyn WalFixture) {
    let dir = fx.dir("truncate");
    let first = {
        let (wal, _) = open(fx, &dir, 512, RecoveryMode::TolerateTornTail).unwrap();
        append_range(&wal, 0, 60);
        wal.sync().unwrap();
        let removed = wal.truncate_before(Lsn(30)).unwrap();
        assert!(!removed.is_empty(), "no segment removed");
        let first = wal.first_lsn().expect("records remain").0;
        assert!((1..=30).contains(&first), "first LSN {first}");
        let mut r = wal.replay_from(Lsn(first)).unwrap();
        let mut got = Vec::new();
        while let Some(rec) = r.next().unwrap() {
            got.push((rec.lsn.0, rec.payload));
        }
        assert_eq!(got, expected(first, 59));
        first
    };
    fx.crash();
    let (wal, report) = open(fx, &dir, 512, RecoveryMode::AbsoluteConsistency).unwrap();
    assert_eq!(report.segments[0].first_lsn, first, "{report:?}");
    assert_eq!(wal.first_lsn(), Some(Lsn(first)));
    assert_eq!(wal.next_lsn(), Lsn(60));
}

/// Fifty records in 512-byte segments, synced every ten: several segments, each starting at the
/// LSN after the previous one's last, together holding all fifty, replayed in LSN order.
pub fn segments_roll_by_size_and_replay_in_order(fx: &dyn WalFixture) {
    let dir = fx.dir("roll");
    {
        let (wal, _) = open(fx, &dir, 512, RecoveryMode::TolerateTornTail).unwrap();
        for i in 0..50 {
            wal.append(1, &payload(i)).unwrap();
            if i % 10 == 9 {
                wal.sync().unwrap();
            }
        }
    }
    fx.crash();
    let (wal, report) = open(fx, &dir, 512, RecoveryMode::AbsoluteConsistency).unwrap();
    assert!(report.segments.len() > 2, "{report:?}");
    let mut next = 0;
    for s in &report.segments {
        assert_eq!(s.first_lsn, next, "{report:?}");
        next = s.last_lsn.expect("no empty segment") + 1;
    }
    assert_eq!(next, 50);
    assert_eq!(report.records(), 50);
    assert_eq!(replay(&wal), expected(0, 49));
}
