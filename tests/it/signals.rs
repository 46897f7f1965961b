//! Real processes and real signals (issue 14, items 6 and 7): one process per WAL (the `LOCK` file
//! of `docs/format/wal.md`), a second SIGTERM that ends a graceful stop at once, and `spate feed`
//! writing `--stats` when a signal stops it.
//!
//! Waits have deadlines that bound a failure, not timing assertions.

use spate_tests::{spate_bin, wait_child};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);

/// `spate wordcount --dir IN --checkpoint LOC` (local; the WAL is `LOC/wal`), stderr to `err`.
fn wordcount(root: &Path, err: &str, extra: &[&str]) -> Child {
    let input = root.join("in");
    let out = root.join("out");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    Command::new(spate_bin())
        .arg("wordcount")
        .arg("--dir")
        .arg(&input)
        .arg("--checkpoint")
        .arg(root.join("ck"))
        .arg("--output")
        .arg(&out)
        .args(["--print", "0", "--no-status"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join(err)).unwrap())
        .spawn()
        .expect("spawning spate")
}

fn sigterm(child: &Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill -TERM {}", child.id());
}

fn read(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join(name)).unwrap_or_default()
}

/// Waits until `name` in `root` contains `needle`; `false` if the child ended or the deadline
/// passed first.
fn wait_for_text(child: &mut Child, root: &Path, name: &str, needle: &str) -> bool {
    let start = Instant::now();
    loop {
        if read(root, name).contains(needle) {
            return true;
        }
        if child.try_wait().unwrap().is_some() || start.elapsed() > DEADLINE {
            return read(root, name).contains(needle);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_process_on_one_wal_fails_fast_naming_the_holder_at_every_start_delay() {
    for delay_ms in [0u64, 200, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut a = wordcount(root, "a.err", &["--batch", "200ms"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let mut b = wordcount(root, "b.err", &["--batch", "200ms"]);
        // Exactly one ends at once with the lock error naming the other; the other runs on.
        let (a_pid, b_pid) = (a.id(), b.id());
        let (loser, survivor, loser_err, survivor_pid) = loop {
            if let Some(st) = b.try_wait().unwrap() {
                break (st, &mut a, "b.err", a_pid);
            }
            if let Some(st) = a.try_wait().unwrap() {
                break (st, &mut b, "a.err", b_pid);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = read(root, loser_err);
        assert!(
            !loser.success(),
            "delay {delay_ms} ms: the second opener succeeded\n{err}"
        );
        assert!(
            err.contains("is in use by another process")
                && err.contains(&format!("pid={survivor_pid} ")),
            "delay {delay_ms} ms: the refusal does not name the holder pid {survivor_pid}:\n{err}"
        );
        std::thread::sleep(Duration::from_millis(600));
        assert!(
            survivor.try_wait().unwrap().is_none(),
            "delay {delay_ms} ms: the holder stopped:\n{}",
            read(
                root,
                if loser_err == "a.err" {
                    "b.err"
                } else {
                    "a.err"
                }
            )
        );
        // kill -9 the holder: the kernel drops its lock; the WAL verifies and the location
        // restarts (the stale LOCK content is overwritten).
        survivor.kill().unwrap();
        survivor.wait().unwrap();
        let v = Command::new(spate_bin())
            .args(["wal", "verify"])
            .arg(root.join("ck/wal"))
            .output()
            .unwrap();
        assert!(
            v.status.success(),
            "delay {delay_ms} ms: wal verify: {}",
            String::from_utf8_lossy(&v.stderr)
        );
        let mut c = wordcount(root, "c.err", &["--batch", "200ms", "--idle", "1s"]);
        let st = wait_child(&mut c, DEADLINE, || {}).expect("the restart ends when idle");
        assert!(
            st.success(),
            "delay {delay_ms} ms: restart:\n{}",
            read(root, "c.err")
        );
    }
}

#[test]
fn a_second_sigterm_ends_a_graceful_stop_at_once_with_exit_143() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // 2 s batches: the graceful stop waits for the last batch time, so it is still running when the
    // second signal arrives.
    let mut job = wordcount(root, "job.err", &["--batch", "2s"]);
    assert!(
        wait_for_text(&mut job, root, "job.err", "spate: restart"),
        "no restart line:\n{}",
        read(root, "job.err")
    );
    sigterm(&job);
    assert!(
        wait_for_text(&mut job, root, "job.err", "stopping gracefully"),
        "no message after the first SIGTERM:\n{}",
        read(root, "job.err")
    );
    sigterm(&job);
    let st: ExitStatus = wait_child(&mut job, DEADLINE, || {}).expect("ended");
    let err = read(root, "job.err");
    assert_eq!(st.code(), Some(143), "{err}");
    assert!(
        err.contains("SIGTERM again stops at once (exit 143)"),
        "{err}"
    );
}

#[test]
fn feed_stopped_by_sigterm_still_writes_its_stats_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let corpus = root.join("corpus.txt");
    std::fs::write(&corpus, "a b\nc d\n").unwrap();
    let stats = root.join("stats.json");
    let mut feed = Command::new(spate_bin())
        .args(["feed", "--listen", "127.0.0.1:0", "--cycle", "--file"])
        .arg(&corpus)
        .arg("--stats")
        .arg(&stats)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("feed.err")).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_for_text(&mut feed, root, "feed.err", "listening on"),
        "{}",
        read(root, "feed.err")
    );
    sigterm(&feed);
    let st = wait_child(&mut feed, DEADLINE, || {}).expect("the feed ends on SIGTERM");
    assert_eq!(st.code(), Some(143), "{}", read(root, "feed.err"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats written")).unwrap();
    assert_eq!(json["stopped_by_signal"], 15, "{json}");
    assert_eq!(json["complete"], false, "{json}");
}
