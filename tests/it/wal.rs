//! spate-wal: model test on SimFs, golden segments, every byte flip and truncation, SIGKILL of a
//! real child process, group commit, garbage in the directory, and the `spate wal` CLI.

use proptest::prelude::*;
use spate_io::{CrashMode, FileHandle, FileSystem, ManualClock, SharedFile, SimFs, StdFs};
use spate_tests::spate_bin;
use spate_types::Lsn;
use spate_wal::format::{encode_header, segment_file_name, HEADER_LEN};
use spate_wal::{
    CorruptReason, RecoveryMode, RecoveryReport, SyncPolicy, Wal, WalError, WalOptions, WalReader,
};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn opts(policy: SyncPolicy, segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        sync_policy: policy,
        roll_interval_ms: None,
        clock: Arc::new(ManualClock::new(1_000)),
        ..WalOptions::default()
    }
}

/// A fresh WAL on a `SimFs` seeded `seed` at `dir`: manual syncs, 1 MiB segments, no
/// preallocation (so a segment's length is what was written).
fn small_manual_wal(seed: u64, dir: &str) -> (SimFs, PathBuf, Wal) {
    let fs = SimFs::new(seed);
    let dir = PathBuf::from(dir);
    let mut o = opts(SyncPolicy::Manual, 1 << 20);
    o.preallocate = false;
    let (wal, _) = Wal::open(Arc::new(fs.clone()), &dir, o).unwrap();
    (fs, dir, wal)
}

/// Records (lsn, payload) and the report, or the error.
type Replayed = Result<(Vec<(u64, Vec<u8>)>, RecoveryReport), WalError>;

fn replay(wal: &Wal, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut r = wal.replay_from(Lsn(from)).expect("replay");
    let mut out = Vec::new();
    while let Some(rec) = r.next().expect("replay next") {
        out.push((rec.lsn.0, rec.payload));
    }
    out
}

fn read_dir(fs: Arc<dyn FileSystem>, dir: &Path, mode: RecoveryMode) -> Replayed {
    let mut r = WalReader::open(fs, dir, mode, Lsn(0), 1 << 20)?;
    let mut out = Vec::new();
    while let Some(rec) = r.next()? {
        out.push((rec.lsn.0, rec.payload));
    }
    Ok((out, r.into_report()))
}

/// Crashes `fs` dropping unsynced data, then reads `dir` back under AbsoluteConsistency.
fn crash_and_read(fs: &SimFs, dir: &Path) -> (Vec<(u64, Vec<u8>)>, RecoveryReport) {
    fs.crash(CrashMode::DropUnsynced);
    read_dir(Arc::new(fs.clone()), dir, RecoveryMode::AbsoluteConsistency).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Model test: random append / sync / crash / tear / reopen / truncate against a Vec.

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    Sync,
    Crash,
    Tear,
    Reopen,
    Truncate(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..120).prop_map(Op::Append),
        2 => Just(Op::Sync),
        1 => Just(Op::Crash),
        1 => Just(Op::Tear),
        1 => Just(Op::Reopen),
        1 => any::<u8>().prop_map(Op::Truncate),
    ]
}

fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (lsn as usize * 31 + i) as u8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    /// After every crash, replay yields exactly the synced records, then possibly a prefix of the
    /// unsynced ones (those that reached the disk in order), and nothing else: no record invented,
    /// none reordered, no synced record lost. Truncation never removes a record ≥ its argument.
    #[test]
    fn wal_matches_model_across_crashes(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..60)) {
        let fs = SimFs::new(seed);
        let dir = PathBuf::from("/wal");
        let open = |fs: &SimFs| Wal::open(Arc::new(fs.clone()), &dir, opts(SyncPolicy::Manual, 400)).map(|(w, _)| w);
        let mut wal = Some(open(&fs).unwrap());
        // model: every record ever acknowledged and not lost; `synced` of them are durable.
        let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut synced = 0usize;
        let mut floor = 0u64; // truncate_before argument (max so far)
        for op in ops {
            let w = wal.as_ref().unwrap();
            match op {
                Op::Append(len) => {
                    let lsn = w.next_lsn().0;
                    let p = payload(lsn, len);
                    prop_assert_eq!(w.append(1 + (lsn % 200) as u8, &p).unwrap().0, lsn);
                    model.push((lsn, p));
                }
                Op::Sync => {
                    w.sync().unwrap();
                    synced = model.len();
                    prop_assert_eq!(w.synced_lsn().0, w.next_lsn().0);
                }
                Op::Truncate(x) => {
                    let target = model.get(x as usize % (model.len() + 1)).map_or(w.next_lsn().0, |r| r.0);
                    w.truncate_before(Lsn(target)).unwrap();
                    // truncate syncs first
                    synced = model.len();
                    floor = floor.max(target);
                }
                Op::Crash | Op::Tear | Op::Reopen => {
                    drop(wal.take());
                    match op {
                        Op::Crash => fs.crash(CrashMode::DropUnsynced),
                        Op::Tear => fs.crash(CrashMode::TearUnsynced),
                        _ => {}
                    }
                    let w = open(&fs).unwrap();
                    let got = replay(&w, floor);
                    let expect: Vec<_> = model.iter().filter(|r| r.0 >= floor).cloned().collect();
                    let must = model[..synced].iter().filter(|r| r.0 >= floor).count();
                    prop_assert!(got.len() >= must, "lost synced records: got {} need {}", got.len(), must);
                    prop_assert!(got.len() <= expect.len(), "invented records");
                    prop_assert_eq!(&got[..], &expect[..got.len()], "replay is not a prefix of the model");
                    let kept = model.len() - (expect.len() - got.len());
                    model.truncate(kept);
                    synced = model.len();
                    prop_assert_eq!(w.next_lsn().0, model.last().map_or(w.next_lsn().0, |r| r.0 + 1));
                    wal = Some(w);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Golden segment: pins the byte format of docs/format/wal.md.

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/wal")
}

fn golden_records() -> Vec<(u8, Vec<u8>, u64)> {
    vec![
        (1, b"hello".to_vec(), 1_700_000_000_000),
        (2, Vec::new(), 1_700_000_000_001),
        (255, (0u8..=255).collect(), 1_700_000_000_002),
    ]
}

fn write_golden_like(dir: &Path) {
    let o = WalOptions {
        preallocate: false,
        roll_interval_ms: None,
        sync_policy: SyncPolicy::Manual,
        clock: Arc::new(ManualClock::new(1_700_000_000_000)),
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(Arc::new(StdFs), dir, o).unwrap();
    for (kind, p, t) in golden_records() {
        wal.append_at(kind, &p, t).unwrap();
    }
    wal.close().unwrap();
}

#[test]
fn golden_segment_decodes() {
    let (got, report) = read_dir(
        Arc::new(StdFs),
        &golden_dir(),
        RecoveryMode::AbsoluteConsistency,
    )
    .unwrap();
    let want: Vec<_> = golden_records()
        .into_iter()
        .enumerate()
        .map(|(i, (_, p, _))| (i as u64, p))
        .collect();
    assert_eq!(got, want);
    assert_eq!(report.segments.len(), 1);
    assert_eq!(report.segments[0].max_time_ms, Some(1_700_000_000_002));
    // Spot-check the documented layout byte by byte.
    let bytes = std::fs::read(golden_dir().join(segment_file_name(0))).unwrap();
    assert_eq!(&bytes[0..8], b"SPATEWAL");
    assert_eq!(&bytes[8..10], &1u16.to_le_bytes());
    assert_eq!(bytes[10], 1);
    assert_eq!(
        &bytes[32..36],
        &5u32.to_le_bytes(),
        "first frame's payload length"
    );
    assert_eq!(
        &bytes[36..40],
        &crc32fast::hash(&5u32.to_le_bytes()).to_le_bytes()
    );
    assert_eq!(
        &bytes[40..44],
        &crc32fast::hash(&bytes[44..32 + 30 + 5]).to_le_bytes()
    );
    assert_eq!(
        bytes[44], 1,
        "flags: the first frame of the group is a sync point"
    );
    assert_eq!(bytes[45], 1, "kind");
    assert_eq!(&bytes[46..54], &0u64.to_le_bytes(), "lsn");
    assert_eq!(&bytes[54..62], &1_700_000_000_000u64.to_le_bytes(), "time");
    assert_eq!(&bytes[62..67], b"hello");
    assert_eq!(
        bytes[67 + 12],
        0,
        "second frame of the same group: no flags"
    );
}

#[test]
fn golden_segment_re_encodes_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    write_golden_like(tmp.path());
    let name = segment_file_name(0);
    let fresh = std::fs::read(tmp.path().join(&name)).unwrap();
    if std::env::var_os("SPATE_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(golden_dir().join(&name), &fresh).unwrap();
    }
    let golden = std::fs::read(golden_dir().join(&name)).unwrap();
    assert_eq!(
        fresh, golden,
        "the WAL byte format changed: bump WAL_FORMAT_VERSION and update docs/format/wal.md"
    );
}

// ---------------------------------------------------------------------------------------------
// Every single-byte flip and every truncation point of a small segment.

/// A 3-record segment (no preallocation) and the frame offsets [start of each frame..., end].
fn small_segment() -> (Vec<u8>, Vec<u64>) {
    let (fs, dir, mut wal) = small_manual_wal(1, "/w");
    let mut offs = Vec::new();
    for (i, len) in [3usize, 0, 17].into_iter().enumerate() {
        let h = wal
            .append_with_handle(1 + i as u8, &payload(i as u64, len))
            .unwrap();
        offs.push(h.offset);
        wal.sync().unwrap(); // one group per record: each frame is a sync point
    }
    wal.close().unwrap();
    let bytes = fs.read_file(&dir.join(segment_file_name(0))).unwrap();
    offs.push(bytes.len() as u64);
    (bytes, offs)
}

fn read_bytes(bytes: &[u8], mode: RecoveryMode) -> Replayed {
    let fs = SimFs::new(2);
    let dir = PathBuf::from("/w");
    fs.create_dir_all(&dir).unwrap();
    fs.put_durable(&dir.join(segment_file_name(0)), bytes);
    read_dir(Arc::new(fs), &dir, mode)
}

fn record_index(offs: &[u64], at: u64) -> usize {
    offs.windows(2)
        .position(|w| w[0] <= at && at < w[1])
        .expect("inside a frame")
}

#[test]
fn every_byte_flip_is_detected_with_the_right_outcome_per_mode() {
    let (bytes, offs) = small_segment();
    let all: Vec<u64> = vec![0, 1, 2];
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0xFF;
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::SkipCorrupt,
        ] {
            let r = read_bytes(&b, mode);
            let ctx = format!("flip at {i}, {mode:?}: {r:?}");
            if i < 8 {
                assert!(matches!(r, Err(WalError::NotASegment { .. })), "{ctx}");
                continue;
            }
            if i < HEADER_LEN {
                match mode {
                    RecoveryMode::SkipCorrupt => {
                        let (recs, rep) = r.expect(&ctx);
                        assert!(recs.is_empty() && rep.skipped.len() == 1, "{ctx}");
                    }
                    _ => assert!(
                        matches!(
                            r,
                            Err(WalError::Corrupt {
                                offset: 0,
                                reason: CorruptReason::BadHeader { .. },
                                ..
                            })
                        ),
                        "{ctx}"
                    ),
                }
                continue;
            }
            let k = record_index(&offs, i as u64);
            let off = offs[k];
            let last = k == 2;
            match (mode, last) {
                (RecoveryMode::AbsoluteConsistency, _) => match r {
                    Err(WalError::Corrupt { offset, reason, .. }) => {
                        assert_eq!(offset, off, "{ctx}");
                        assert_eq!(matches!(reason, CorruptReason::TornTail(_)), last, "{ctx}");
                    }
                    _ => panic!("{ctx}"),
                },
                (_, true) => {
                    let (recs, rep) = r.expect(&ctx);
                    assert_eq!(
                        recs.iter().map(|r| r.0).collect::<Vec<_>>(),
                        vec![0, 1],
                        "{ctx}"
                    );
                    let t = rep.torn_tail.expect(&ctx);
                    assert_eq!((t.offset, t.dropped_bytes), (off, offs[3] - off), "{ctx}");
                }
                (RecoveryMode::TolerateTornTail, false) => {
                    assert!(
                        matches!(r, Err(WalError::Corrupt { offset, .. }) if offset == off),
                        "{ctx}"
                    )
                }
                (_, false) => {
                    let (recs, rep) = r.expect(&ctx);
                    let want: Vec<u64> = all.iter().copied().filter(|&l| l != k as u64).collect();
                    assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), want, "{ctx}");
                    assert_eq!(rep.skipped.len(), 1, "{ctx}");
                    assert_eq!(
                        (rep.skipped[0].offset, rep.skipped[0].bytes),
                        (off, offs[k + 1] - off),
                        "{ctx}"
                    );
                }
            }
        }
    }
}

#[test]
fn every_truncation_point_is_a_clean_end_or_a_reported_torn_tail() {
    let (bytes, offs) = small_segment();
    for t in 0..=bytes.len() {
        let b = &bytes[..t];
        let boundary = offs.iter().position(|&o| o == t as u64);
        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::SkipCorrupt,
        ] {
            let r = read_bytes(b, mode);
            let ctx = format!("truncated at {t}, {mode:?}: {r:?}");
            let (n_records, torn_at) = match boundary {
                Some(k) => (k, None),
                None if t < HEADER_LEN => (0, Some(0)),
                None => {
                    let k = record_index(&offs, t as u64);
                    // A partial frame that is all zeros so far is indistinguishable from the
                    // preallocated tail: a clean end (the record was never complete).
                    if b[offs[k] as usize..].iter().all(|&x| x == 0) {
                        (k, None)
                    } else {
                        (k, Some(offs[k]))
                    }
                }
            };
            match (mode, torn_at) {
                (_, None) => {
                    let (recs, rep) = r.expect(&ctx);
                    assert_eq!(recs.len(), n_records, "{ctx}");
                    assert!(rep.torn_tail.is_none(), "{ctx}");
                }
                (RecoveryMode::AbsoluteConsistency, Some(at)) => {
                    assert!(
                        matches!(r, Err(WalError::Corrupt { offset, .. }) if offset == at),
                        "{ctx}"
                    )
                }
                (_, Some(at)) => {
                    let (recs, rep) = r.expect(&ctx);
                    assert_eq!(recs.len(), n_records, "{ctx}");
                    let tt = rep.torn_tail.expect(&ctx);
                    // dropped = up to the last non-zero byte (zeros are preallocation)
                    let end = b
                        .iter()
                        .rposition(|&x| x != 0)
                        .map_or(at, |i| i as u64 + 1)
                        .max(at);
                    assert_eq!((tt.offset, tt.dropped_bytes), (at, end - at), "{ctx}");
                }
            }
        }
    }
}

#[test]
fn open_truncates_a_torn_tail_keeps_a_copy_and_appends_after_it() {
    let (bytes, offs) = small_segment();
    let fs = SimFs::new(3);
    let dir = PathBuf::from("/w");
    fs.create_dir_all(&dir).unwrap();
    let seg = dir.join(segment_file_name(0));
    let cut = offs[2] as usize + 10;
    fs.put_durable(&seg, &bytes[..cut]);
    let (wal, report) = Wal::open(
        Arc::new(fs.clone()),
        &dir,
        opts(SyncPolicy::EveryAppend, 1 << 20),
    )
    .unwrap();
    let t = report.torn_tail.clone().unwrap();
    assert_eq!(
        (t.segment.clone(), t.offset, t.dropped_bytes),
        (seg.clone(), offs[2], 10)
    );
    let side = t.saved_to.unwrap();
    assert_eq!(fs.read_file(&side).unwrap(), &bytes[offs[2] as usize..cut]);
    assert_eq!(wal.append(9, b"after").unwrap(), Lsn(2));
    drop(wal);
    let (recs, rep) = crash_and_read(&fs, &dir);
    assert_eq!(recs.last().unwrap(), &(2, b"after".to_vec()));
    assert_eq!(
        rep.segments.len(),
        1,
        "appends continue in the repaired segment"
    );
}

#[test]
fn damage_in_the_last_group_is_a_torn_tail_damage_before_a_later_sync_point_is_corruption() {
    let (fs, dir, mut wal) = small_manual_wal(11, "/s");
    let mut offs = Vec::new();
    for i in 0..6u64 {
        offs.push(wal.append_with_handle(1, &payload(i, 20)).unwrap().offset);
        if i < 3 {
            wal.sync().unwrap(); // records 0, 1, 2: one group each
        }
    }
    wal.close().unwrap(); // records 3, 4, 5: one group (only 3 is a sync point)
    let bytes = fs.read_file(&dir.join(segment_file_name(0))).unwrap();
    let end = bytes.len() as u64;
    // Damage in record 3 or 4 with valid frames after it but no later sync point: what a crash
    // during the last group write leaves if the disk persisted its pages out of order.
    for k in [3usize, 4] {
        let mut b = bytes.clone();
        b[offs[k] as usize + 20] ^= 0x40;
        let (recs, rep) = read_bytes(&b, RecoveryMode::TolerateTornTail).unwrap();
        assert_eq!(recs.len(), k, "record {k}");
        let t = rep.torn_tail.unwrap();
        assert_eq!((t.offset, t.dropped_bytes), (offs[k], end - offs[k]));
        assert!(matches!(
            read_bytes(&b, RecoveryMode::AbsoluteConsistency),
            Err(WalError::Corrupt { reason: CorruptReason::TornTail(_), offset, .. }) if offset == offs[k]
        ));
        let (recs, rep) = read_bytes(&b, RecoveryMode::SkipCorrupt).unwrap();
        assert_eq!(
            recs.len(),
            5,
            "salvage keeps the valid frames after the damage"
        );
        assert_eq!(rep.skipped[0].offset, offs[k]);
    }
    // Damage in an earlier group, followed by a sync point: corruption of synced data.
    for k in [0usize, 1, 2] {
        let mut b = bytes.clone();
        b[offs[k] as usize + 20] ^= 0x40;
        assert!(
            matches!(
                read_bytes(&b, RecoveryMode::TolerateTornTail),
                Err(WalError::Corrupt { offset, .. }) if offset == offs[k]
            ),
            "record {k}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Real process killed with SIGKILL.

#[test]
fn sigkilled_child_loses_no_record_it_reported_synced() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("wal");
    let mut reported: Vec<(u64, String)> = Vec::new();
    let mut rng = 0x5eed_u64;
    for round in 0..5 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay_ms = 50 + (rng >> 33) % 250;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_wal-crash-child"))
            .arg(&dir)
            .arg(round.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            io::Read::read_to_string(&mut io::BufReader::new(stdout), &mut s).unwrap();
            s
        });
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let out = reader.join().unwrap();
        let before = reported.len();
        for line in out.lines() {
            // a line cut by the kill is not a complete report
            if let Some((l, p)) = line.split_once(' ') {
                if let Ok(l) = l.parse::<u64>() {
                    if !out.ends_with(line) || out.ends_with('\n') {
                        reported.push((l, p.to_string()));
                    }
                }
            }
        }
        assert!(
            reported.len() > before,
            "round {round}: child reported nothing in {delay_ms} ms"
        );
        let (wal, _report) = Wal::open(Arc::new(StdFs), &dir, WalOptions::default()).unwrap();
        let got: std::collections::HashMap<u64, Vec<u8>> = replay(&wal, 0).into_iter().collect();
        for (lsn, p) in &reported {
            assert_eq!(
                got.get(lsn).map(|v| v.as_slice()),
                Some(p.as_bytes()),
                "round {round}: lsn {lsn} reported synced but lost"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Group commit.

/// SimFs with a slow `sync_data` (1 ms), so concurrent appenders pile up behind a sync.
#[derive(Debug)]
struct SlowSync(SimFs);
#[derive(Debug)]
struct SlowFile(SharedFile);
impl FileHandle for SlowFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(o, b)
    }
    fn write_at(&self, o: u64, b: &[u8]) -> io::Result<usize> {
        self.0.write_at(o, b)
    }
    fn set_len(&self, l: u64) -> io::Result<()> {
        self.0.set_len(l)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(std::time::Duration::from_millis(1));
        self.0.sync_data()
    }
}
impl FileSystem for SlowSync {
    fn create_dir_all(&self, d: &Path) -> io::Result<()> {
        self.0.create_dir_all(d)
    }
    fn create(&self, p: &Path) -> io::Result<SharedFile> {
        Ok(Arc::new(SlowFile(self.0.create(p)?)))
    }
    fn open(&self, p: &Path) -> io::Result<SharedFile> {
        Ok(Arc::new(SlowFile(self.0.open(p)?)))
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        self.0.rename(a, b)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        self.0.remove(p)
    }
    fn list(&self, d: &Path) -> io::Result<Vec<String>> {
        self.0.list(d)
    }
    fn exists(&self, p: &Path) -> bool {
        self.0.exists(p)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        self.0.sync_dir(d)
    }
}

#[test]
fn group_commit_shares_fsyncs_and_loses_nothing() {
    let sim = SimFs::new(4);
    let dir = PathBuf::from("/g");
    let (wal, _) = Wal::open(
        Arc::new(SlowSync(sim.clone())),
        &dir,
        opts(SyncPolicy::EveryAppend, 16 << 10),
    )
    .unwrap();
    let wal = Arc::new(wal);
    let (threads, per) = (8u64, 150u64);
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                (0..per)
                    .map(|i| {
                        (
                            wal.append(1, format!("{t}:{i}").as_bytes()).unwrap().0,
                            format!("{t}:{i}"),
                        )
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut acked: Vec<(u64, String)> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    acked.sort();
    // Every acknowledged append is durable: crash without any further sync.
    drop(wal);
    let (got, _) = crash_and_read(&sim, &dir);
    let got: Vec<(u64, String)> = got
        .into_iter()
        .map(|(l, p)| (l, String::from_utf8(p).unwrap()))
        .collect();
    assert_eq!(got, acked);
    assert_eq!(got.len() as u64, threads * per);
    let syncs = sim.stats().data_syncs;
    assert!(
        syncs < threads * per / 2,
        "{syncs} fsyncs for {} appends: no group commit",
        threads * per
    );
}

#[test]
fn injected_io_errors_poison_the_wal_and_reopen_recovers_the_synced_prefix() {
    for seed in 0..20 {
        let sim = SimFs::new(seed);
        let dir = PathBuf::from("/f");
        let (wal, _) = Wal::open(
            Arc::new(sim.clone()),
            &dir,
            opts(SyncPolicy::EveryAppend, 2048),
        )
        .unwrap();
        sim.set_faults(spate_io::Faults {
            eio_per_mille: 30,
            enospc_per_mille: 20,
            short_write_per_mille: 200,
        });
        let mut acked = Vec::new();
        let mut failed = false;
        for i in 0..200u64 {
            match wal.append(1, &payload(i, 40)) {
                Ok(l) => {
                    assert!(!failed, "seed {seed}: append succeeded after a failure");
                    acked.push(l.0)
                }
                Err(WalError::Io { .. } | WalError::Poisoned { .. }) => failed = true,
                Err(e) => panic!("seed {seed}: {e}"),
            }
        }
        drop(wal);
        sim.set_faults(spate_io::Faults::default());
        sim.crash(CrashMode::TearUnsynced);
        let (wal, _) = Wal::open(
            Arc::new(sim.clone()),
            &dir,
            opts(SyncPolicy::EveryAppend, 2048),
        )
        .unwrap();
        let got: Vec<u64> = replay(&wal, 0).into_iter().map(|r| r.0).collect();
        assert!(
            got.len() >= acked.len() && got[..acked.len()] == acked[..],
            "seed {seed}: {got:?} vs {acked:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Garbage in the directory.

fn sim_with(files: &[(&str, Vec<u8>)]) -> (SimFs, PathBuf) {
    let fs = SimFs::new(5);
    let dir = PathBuf::from("/x");
    fs.create_dir_all(&dir).unwrap();
    for (n, b) in files {
        fs.put_durable(&dir.join(n), b);
    }
    (fs, dir)
}

#[test]
fn garbage_files_give_typed_errors() {
    let open = |fs: &SimFs, dir: &Path| {
        Wal::open(Arc::new(fs.clone()), dir, opts(SyncPolicy::Manual, 4096))
    };
    // Random files that are not named like segments are ignored and reported.
    let (fs, dir) = sim_with(&[
        ("README", b"hi".to_vec()),
        ("00000000000000000001.wal.torn-77", vec![1, 2]),
    ]);
    let (_, rep) = open(&fs, &dir).unwrap();
    assert_eq!(rep.ignored_files.len(), 2);
    // A non-WAL file named like a segment.
    let (fs, dir) = sim_with(&[(
        &segment_file_name(0),
        b"this is not a wal segment at all, no".to_vec(),
    )]);
    assert!(matches!(open(&fs, &dir), Err(WalError::NotASegment { .. })));
    // Wrong magic.
    let mut h = encode_header(0, 0).to_vec();
    h[0] = b'X';
    let (fs, dir) = sim_with(&[(&segment_file_name(0), h)]);
    assert!(matches!(open(&fs, &dir), Err(WalError::NotASegment { .. })));
    // Newer version (valid crc).
    let mut h = encode_header(0, 0).to_vec();
    h[8..10].copy_from_slice(&9u16.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    let (fs, dir) = sim_with(&[(&segment_file_name(0), h.clone())]);
    assert!(matches!(
        open(&fs, &dir),
        Err(WalError::UnsupportedVersion { found: 9, .. })
    ));
    // Unknown codec.
    let mut h = encode_header(0, 0).to_vec();
    h[10] = 77;
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    let (fs, dir) = sim_with(&[(&segment_file_name(0), h)]);
    assert!(matches!(
        open(&fs, &dir),
        Err(WalError::UnsupportedCodec { found: 77, .. })
    ));
    // Header LSN differs from the file name.
    let (fs, dir) = sim_with(&[(&segment_file_name(5), encode_header(4, 0).to_vec())]);
    assert!(matches!(
        open(&fs, &dir),
        Err(WalError::Corrupt {
            reason: CorruptReason::NameMismatch { .. },
            ..
        })
    ));
    // A segment missing from the middle.
    let (fs, dir) = sim_with(&[]);
    let (wal, _) = open(&fs, &dir).unwrap();
    for i in 0..100 {
        wal.append(1, &payload(i, 100)).unwrap();
    }
    wal.sync().unwrap();
    drop(wal);
    let names = fs.list(&dir).unwrap();
    assert!(names.len() >= 3, "{names:?}");
    fs.remove(&dir.join(&names[1])).unwrap();
    assert!(matches!(open(&fs, &dir), Err(WalError::LsnGap { .. })));
    // Random bytes as a whole directory of segments: never a panic, always a typed error or Ok.
    let mut x = 12345u64;
    for n in 0..200 {
        let len = n * 3;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut with_header = encode_header(0, 0).to_vec();
        with_header.extend_from_slice(&bytes);
        for b in [bytes, with_header] {
            let (fs, dir) = sim_with(&[(&segment_file_name(0), b)]);
            for mode in [
                RecoveryMode::TolerateTornTail,
                RecoveryMode::AbsoluteConsistency,
                RecoveryMode::SkipCorrupt,
            ] {
                let _ = read_dir(Arc::new(fs.clone()), &dir, mode);
            }
        }
    }
}

#[test]
fn append_rejects_reserved_kind_and_oversized_records() {
    let fs = SimFs::new(6);
    let mut o = opts(SyncPolicy::Manual, 4096);
    o.max_record_bytes = 10;
    let (wal, _) = Wal::open(Arc::new(fs), "/r", o).unwrap();
    assert!(matches!(wal.append(0, b"x"), Err(WalError::ReservedKind)));
    assert!(matches!(
        wal.append(1, &[0; 11]),
        Err(WalError::RecordTooLarge { len: 11, max: 10 })
    ));
}

// ---------------------------------------------------------------------------------------------
// read_at, rolling, truncate_before, clean.

#[test]
fn read_at_rolling_truncate_and_clean() {
    let fs = SimFs::new(8);
    let clock = ManualClock::new(10_000);
    let o = WalOptions {
        segment_bytes: 1024,
        roll_interval_ms: Some(1_000),
        sync_policy: SyncPolicy::Manual,
        clock: Arc::new(clock.clone()),
        ..WalOptions::default()
    };
    let (wal, _) = Wal::open(Arc::new(fs.clone()), "/t", o).unwrap();
    let mut handles = Vec::new();
    for i in 0..60u64 {
        handles.push(wal.append_with_handle(3, &payload(i, 50)).unwrap());
        if i % 20 == 19 {
            clock.advance(1_500); // time-based roll
        }
    }
    // read_at of an unsynced record syncs it first
    for (i, h) in handles.iter().enumerate() {
        let r = wal.read_at(*h).unwrap();
        assert_eq!((r.lsn.0, r.payload), (i as u64, payload(i as u64, 50)));
    }
    let mut bad = handles[5];
    bad.length += 1;
    assert!(matches!(
        wal.read_at(bad),
        Err(WalError::InvalidHandle { .. })
    ));
    let segs = fs.list(Path::new("/t")).unwrap();
    assert!(segs.len() >= 4, "rolled by size and time: {segs:?}");
    // clean by time: records of the first 20 appends are at t=10_000
    let removed = wal.clean(10_001).unwrap();
    assert!(!removed.is_empty());
    assert!(wal.first_lsn().unwrap().0 <= 20);
    let got = replay(&wal, 0);
    assert!(got.iter().any(|r| r.0 == 20) && got.last().unwrap().0 == 59);
    // truncate_before keeps every record ≥ the argument
    wal.truncate_before(Lsn(45)).unwrap();
    let first = wal.first_lsn().unwrap().0;
    assert!(first <= 45 && first > 20, "{first}");
    assert_eq!(
        replay(&wal, 45).iter().map(|r| r.0).collect::<Vec<_>>(),
        (45..60).collect::<Vec<_>>()
    );
    assert!(matches!(
        wal.read_at(handles[0]),
        Err(WalError::InvalidHandle { .. })
    ));
    // And the directory agrees after a crash.
    drop(wal);
    let (got, _) = crash_and_read(&fs, Path::new("/t"));
    assert_eq!(got.first().unwrap().0, first);
    assert_eq!(got.last().unwrap().0, 59);
}

#[test]
fn interval_and_bytes_policies_sync_in_the_background() {
    for policy in [SyncPolicy::IntervalMs(5), SyncPolicy::Bytes(200)] {
        let fs = SimFs::new(9);
        let (wal, _) = Wal::open(Arc::new(fs), "/b", opts(policy, 1 << 20)).unwrap();
        for i in 0..10 {
            wal.append(1, &payload(i, 50)).unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while wal.synced_lsn() < Lsn(10) {
            assert!(
                std::time::Instant::now() < deadline,
                "{policy:?} never synced"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The `spate wal` CLI.

#[test]
fn cli_dump_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let o = WalOptions {
        segment_bytes: 4096,
        ..opts(SyncPolicy::Manual, 4096)
    };
    let (mut wal, _) = Wal::open(Arc::new(StdFs), &dir, o).unwrap();
    for i in 0..100u64 {
        wal.append(2, &payload(i, 30)).unwrap();
    }
    wal.close().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(spate_bin())
            .args(args)
            .output()
            .unwrap()
    };
    let d = dir.to_str().unwrap();

    let out = run(&["wal", "verify", d]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("100 records"));

    let out = run(&["wal", "dump", d, "--json"]);
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(lines[7]["lsn"], 7);
    assert_eq!(lines[7]["kind"], 2);
    assert_eq!(lines[7]["length"], 30);
    assert!(lines[7]["segment"].as_str().unwrap().ends_with(".wal"));
    let out = run(&["wal", "dump", d]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).lines().count() == 101);

    // Damage the middle of the first segment: verify fails and locates it.
    let seg = dir.join(segment_file_name(0));
    let mut b = std::fs::read(&seg).unwrap();
    b[HEADER_LEN + 40] ^= 0x55;
    std::fs::write(&seg, &b).unwrap();
    let out = run(&["wal", "verify", d]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&segment_file_name(0)) && err.contains("offset 32"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"));

    for bad in [
        vec!["wal", "verify", "/nonexistent/spate/wal"],
        vec!["wal", "dump", "/nonexistent/spate/wal"],
    ] {
        let out = run(&bad);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.trim().lines().count() == 1 && !err.contains("panicked"),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fast open: sealed segments are read only up to their end-of-data marker.

/// StdFs that counts the bytes read through it.
#[derive(Debug, Default)]
struct CountingFs(Arc<std::sync::atomic::AtomicU64>);
#[derive(Debug)]
struct CountingFile(SharedFile, Arc<std::sync::atomic::AtomicU64>);
impl FileHandle for CountingFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, o: u64, b: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read_at(o, b)?;
        self.1
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn write_at(&self, o: u64, b: &[u8]) -> io::Result<usize> {
        self.0.write_at(o, b)
    }
    fn set_len(&self, l: u64) -> io::Result<()> {
        self.0.set_len(l)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}
impl FileSystem for CountingFs {
    fn create_dir_all(&self, d: &Path) -> io::Result<()> {
        StdFs.create_dir_all(d)
    }
    fn create(&self, p: &Path) -> io::Result<SharedFile> {
        Ok(Arc::new(CountingFile(
            StdFs.create(p)?,
            Arc::clone(&self.0),
        )))
    }
    fn open(&self, p: &Path) -> io::Result<SharedFile> {
        Ok(Arc::new(CountingFile(StdFs.open(p)?, Arc::clone(&self.0))))
    }
    fn rename(&self, a: &Path, b: &Path) -> io::Result<()> {
        StdFs.rename(a, b)
    }
    fn remove(&self, p: &Path) -> io::Result<()> {
        StdFs.remove(p)
    }
    fn list(&self, d: &Path) -> io::Result<Vec<String>> {
        StdFs.list(d)
    }
    fn exists(&self, p: &Path) -> bool {
        StdFs.exists(p)
    }
    fn sync_dir(&self, d: &Path) -> io::Result<()> {
        StdFs.sync_dir(d)
    }
}

const SEG: u64 = 64 << 20;

/// A real directory with `segments` preallocated 64 MiB segments of 10 small records each (rolled
/// by time with a manual clock). Returns the records.
fn preallocated_wal(dir: &Path, segments: u64) -> Vec<(u64, Vec<u8>)> {
    let clock = Arc::new(ManualClock::new(1_000));
    let o = WalOptions {
        segment_bytes: SEG,
        roll_interval_ms: Some(1_000),
        clock: clock.clone(),
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(Arc::new(StdFs), dir, o).unwrap();
    let mut records = Vec::new();
    for s in 0..segments {
        for i in 0..10u64 {
            let p = payload(s * 10 + i, 200);
            records.push((wal.append(1, &p).unwrap().0, p));
        }
        clock.advance(1_000);
    }
    wal.close().unwrap();
    records
}

#[test]
fn open_reads_sealed_segments_only_up_to_their_end_of_data_marker() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("wal");
    let records = preallocated_wal(&dir, 3);
    assert_eq!(list_segments(&dir).len(), 3);
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fs = Arc::new(CountingFs(Arc::clone(&count)));
    let (wal, report) = Wal::open(fs, &dir, WalOptions::default()).unwrap();
    let read = count.load(std::sync::atomic::Ordering::Relaxed);
    assert!(report.torn_tail.is_none());
    assert_eq!(report.records(), 30);
    // The last segment is read in full (its end-of-data marker needs the look-ahead for a later
    // sync point); the two sealed ones only up to their marker (one 256 KiB read each). Before,
    // open read all 3 × 64 MiB.
    assert!(
        read <= SEG + 2 * (256 << 10),
        "open read {read} bytes of 3 preallocated 64 MiB segments"
    );
    assert_eq!(replay(&wal, 0), records);
}

fn list_segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn damage_hidden_behind_a_zeroed_range_of_a_sealed_segment_is_still_detected() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let frame = (30 + 200) as u64;
    let first = HEADER_LEN as u64;
    let zero = |dir: &Path, from: u64, len: u64| {
        let f = StdFs.open(&list_segments(dir)[0]).unwrap();
        f.write_all_at(from, &vec![0u8; len as usize]).unwrap();
        f.sync_data().unwrap();
    };
    // 1. A record in the middle of a sealed segment zeroed (later records of the same segment
    // follow the false end marker): the reader looks past the marker and reports corruption.
    let dir = tmp.path().join("middle");
    preallocated_wal(&dir, 3);
    zero(&dir, first + 3 * frame, frame);
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        match read_dir(Arc::new(StdFs), &dir, mode) {
            Err(WalError::Corrupt { offset, .. }) => assert_eq!(offset, first + 3 * frame),
            other => panic!("{mode:?}: {other:?}"),
        }
    }
    // 2. The last records of a sealed segment zeroed (nothing non-zero after the marker): the
    // records are missing from the dense LSN range, so the next segment is an LsnGap.
    let dir = tmp.path().join("tail");
    preallocated_wal(&dir, 3);
    zero(&dir, first + 7 * frame, 3 * frame);
    match Wal::open(Arc::new(StdFs), &dir, WalOptions::default()) {
        Err(WalError::LsnGap {
            expected, found, ..
        }) => assert_eq!((expected, found), (7, 10)),
        other => panic!("{other:?}"),
    }
    let o = WalOptions {
        recovery: RecoveryMode::SkipCorrupt,
        ..WalOptions::default()
    };
    let (_wal, report) = Wal::open(Arc::new(StdFs), &dir, o).unwrap();
    assert_eq!(report.records(), 27);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
}

/// Regression (found by the recovery benchmark): a frame ending exactly where the reader's first
/// read of a sealed segment ends (256 KiB) made the empty remainder look like the end-of-data
/// marker, so the records after it in that segment were skipped and open failed with `LsnGap`.
#[test]
fn a_frame_ending_exactly_at_the_first_read_boundary_does_not_end_a_sealed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = Arc::new(StdFs);
    let first = (256 << 10) - HEADER_LEN - spate_wal::format::FRAME_HEADER_LEN;
    {
        let (wal, _) = Wal::open(
            Arc::clone(&fs),
            dir.path(),
            opts(SyncPolicy::EveryAppend, 300 << 10),
        )
        .unwrap();
        wal.append(1, &vec![7u8; first]).unwrap();
        wal.append(1, b"second").unwrap();
        wal.append(1, b"third").unwrap();
        // Rolls: the first segment is sealed.
        wal.append(1, &vec![9u8; 100 << 10]).unwrap();
        wal.append(1, b"fifth").unwrap();
    }
    let (wal, report) = Wal::open(
        Arc::clone(&fs),
        dir.path(),
        opts(SyncPolicy::EveryAppend, 300 << 10),
    )
    .unwrap();
    assert!(report.segments.len() >= 2, "{report:?}");
    let got = replay(&wal, 0);
    assert_eq!(
        got.len(),
        5,
        "{:?}",
        got.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(got[1].1, b"second");
    assert_eq!(got[4].1, b"fifth");
}
