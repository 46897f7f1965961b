//! Flow control with real processes (issue 13): an acknowledged `spate feed --rate 0` flood into a
//! child `spate wordcount --socket --ack`, with a small memory budget so the test is quick in
//! debug builds. Peak RSS is read from `/proc/<pid>/status` (`VmHWM`) while the child runs; totals
//! come from the feed's JSON statistics and the job's summary line.

use spate_tests::feed::{feed_file, finish, write_corpus};
use spate_tests::spate_bin;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `VmHWM` (peak resident set) of a live process, KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Waits for `child`, sampling its peak RSS while it runs; returns (exit success, stderr, peak KiB).
fn wait_sampling(mut child: Child, limit: Duration) -> (bool, String, u64) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut peak = 0;
    let pid = child.id();
    let status = spate_tests::wait_child(&mut child, limit, || {
        if let Some(k) = vm_hwm_kib(pid) {
            peak = peak.max(k);
        }
    })
    .unwrap_or_else(|| panic!("wordcount did not stop within {limit:?}"));
    (status.success(), reader.join().unwrap(), peak)
}

/// The records of the job's summary line (`spate: ... after N batches, M records in ...`).
fn summary_records(stderr: &str) -> u64 {
    stderr
        .lines()
        .rev()
        .find_map(|l| {
            let rest = l.strip_prefix("spate: ")?;
            let (_, after) = rest.split_once(" batches, ")?;
            after.split_once(" records")?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"))
}

fn wordcount(addr: &str, extra: &[&str]) -> Child {
    Command::new(spate_bin())
        .args(["wordcount", "--socket", addr, "--ack", "--batch", "500ms"])
        .arg("--no-status")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A flood of 1 M acknowledged lines into a job with a WAL and checkpoints and a 16 MiB memory
/// budget: every acknowledged line is counted exactly once and the job's peak RSS stays bounded (generous margin for a debug build: without
/// the budget the backlog alone grew to gigabytes, issue 13).
#[test]
fn flood_with_a_small_memory_budget_keeps_peak_rss_bounded_and_totals_exact() {
    const N: u64 = 1_000_000;
    let work = tempfile::tempdir().unwrap();
    let corpus = write_corpus(work.path(), 1000);
    let lines = N.to_string();
    let (feed, addr) = feed_file(
        &corpus,
        &[
            "--ack",
            "--rate",
            "0",
            "--cycle",
            "--lines",
            &lines,
            "--duration",
            "120s",
        ],
    );
    let ck = work.path().join("ck");
    let job = wordcount(
        &addr,
        &[
            "--checkpoint",
            ck.to_str().unwrap(),
            "--memory-budget",
            "16MiB",
            "--max-block-bytes",
            "1MiB",
            "--idle",
            "3s",
        ],
    );
    let (ok, stderr, peak_kib) = wait_sampling(job, Duration::from_secs(300));
    let stats = finish(feed);
    assert!(ok, "wordcount failed:\n{stderr}");
    assert_eq!(stats["acked"], N, "{stats}");
    assert_eq!(summary_records(&stderr), N, "{stderr}");
    assert!(
        peak_kib < 512 * 1024,
        "peak RSS {} MiB with a 16 MiB budget",
        peak_kib / 1024
    );
}

/// Issue 13 item 6: a `--duration` stop under a flood without a checkpoint never drops what it
/// acknowledged silently: either it processed at least every acknowledged line (exit 0), or it
/// exits non-zero and reports the unprocessed blocks.
#[test]
fn a_duration_stop_under_a_flood_without_a_checkpoint_processes_every_acknowledged_line_or_fails() {
    let work = tempfile::tempdir().unwrap();
    let corpus = write_corpus(work.path(), 1000);
    let (feed, addr) = feed_file(
        &corpus,
        &["--ack", "--rate", "0", "--cycle", "--duration", "8s"],
    );
    let job = wordcount(&addr, &["--duration", "3s", "--memory-budget", "16MiB"]);
    let (ok, stderr, _) = wait_sampling(job, Duration::from_secs(120));
    let stats = finish(feed);
    let acked = stats["acked"].as_u64().unwrap();
    assert!(acked > 0, "{stats}");
    if ok {
        let records = summary_records(&stderr);
        assert!(
            records >= acked,
            "processed {records} < acknowledged {acked}:\n{stderr}"
        );
    } else {
        assert!(
            stderr.contains("unprocessed and there is no receiver WAL"),
            "{stderr}"
        );
    }
}
