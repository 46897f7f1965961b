//! `spate feed` as a real child process over real TCP on 127.0.0.1: plain delivery, rate accounting,
//! and the `spate-ack/1` protocol across a receiver disconnect (resume where the receiver says,
//! detect a receiver that lost acknowledged data).

use spate_tests::feed::{feed_file, finish, write_corpus};
use spate_tests::spate_bin;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

fn connect(addr: &str) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

/// Connects as an acknowledging receiver: sends `HELLO spate-ack/1 resume=<resume>`.
fn hello(addr: &str, resume: u64) -> (TcpStream, BufReader<TcpStream>) {
    let mut s = connect(addr);
    s.write_all(format!("HELLO spate-ack/1 resume={resume}\n").as_bytes())
        .unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

/// Reads `n` lines (without their line ends).
fn read_lines(r: &mut BufReader<TcpStream>, n: u64) -> Vec<String> {
    (0..n)
        .map(|_| {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            l.trim_end().to_owned()
        })
        .collect()
}

/// Sends `ACK <seq>` and lets the feeder read it before the connection is dropped.
fn ack_and_drop(mut s: TcpStream, r: BufReader<TcpStream>, seq: u64) {
    s.write_all(format!("ACK {seq}\n").as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(r);
    drop(s);
}

/// Writes an `n`-line corpus into a fresh directory and starts `spate feed` on it with `args`;
/// the directory lives as long as the returned guard.
fn feed_corpus(n: u64, args: &[&str]) -> (tempfile::TempDir, Child, String) {
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path(), n);
    let (child, addr) = feed_file(&corpus, args);
    (dir, child, addr)
}

/// Connects as a plain receiver and reads every line until the feeder closes the connection.
fn read_to_close(addr: &str) -> Vec<String> {
    BufReader::new(connect(addr))
        .lines()
        .map(Result::unwrap)
        .collect()
}

/// Runs `spate feed --listen 127.0.0.1:0 --file FILE EXTRA..` to completion.
fn run_feed(file: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(spate_bin())
        .args(["feed", "--listen", "127.0.0.1:0", "--file"])
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn plain_feed_sends_every_line_once_in_order() {
    let (_dir, child, addr) = feed_corpus(5000, &[]);
    let lines = read_to_close(&addr);
    assert_eq!(lines.len(), 5000);
    assert!(lines
        .iter()
        .enumerate()
        .all(|(i, l)| *l == format!("line-{i}")));
    let stats = finish(child);
    assert_eq!(stats["sent"], 5000);
    assert_eq!(stats["transmissions"], 5000);
    assert_eq!(stats["complete"], true);
}

#[test]
fn fixed_rate_is_respected_and_reported() {
    // 2000 lines/s for 1 s, cycling a 100-line corpus.
    let (_dir, child, addr) = feed_corpus(100, &["--cycle", "--steps", "2000:1"]);
    let lines = read_to_close(&addr);
    let stats = finish(child);
    // Never more than offered (plus one tick of slack), and line seq wraps the corpus.
    assert!(
        lines.len() <= 2100,
        "{} lines sent at 2000/s for 1 s",
        lines.len()
    );
    assert!(
        lines.len() >= 1000,
        "feeder far below the offered rate: {}",
        lines.len()
    );
    assert_eq!(lines[150], "line-50");
    assert_eq!(stats["sent"].as_u64().unwrap(), lines.len() as u64);
    assert_eq!(stats["steps"][0]["offered_rate"], 2000);
}

#[test]
fn ack_mode_resumes_where_the_receiver_says_and_completes_on_full_ack() {
    let (_dir, child, addr) = feed_corpus(3000, &["--ack"]);

    // Connection 1: take 1000 lines, acknowledge 700 as durable, then "crash".
    let (s, mut r) = hello(&addr, 0);
    for (i, l) in read_lines(&mut r, 1000).iter().enumerate() {
        assert_eq!(*l, format!("line-{i}"));
    }
    ack_and_drop(s, r, 700);

    // Connection 2: the receiver's WAL held 800 lines (100 more than acknowledged): resume at 800.
    let (mut s, mut r) = hello(&addr, 800);
    let got = read_lines(&mut r, 3000 - 800);
    assert_eq!(got.first().map(String::as_str), Some("line-800"));
    assert_eq!(got.last().map(String::as_str), Some("line-2999"));
    s.write_all(b"ACK 3000\n").unwrap();
    let stats = finish(child);
    assert_eq!(stats["complete"], true);
    assert_eq!(stats["acked"], 3000);
    assert_eq!(stats["sent"], 3000);
    assert_eq!(stats["connections"], 2);
    assert_eq!(stats["resume_below_ack"], 0);
    // Exact accounting: every transmission beyond the 3000 distinct lines is a re-send, and the
    // re-sends are exactly the lines from the resume point to what connection 1 had pushed.
    let tx = stats["transmissions"].as_u64().unwrap();
    assert_eq!(stats["resent"].as_u64().unwrap(), tx - 3000, "{stats}");
    assert!(tx >= 3000 + (1000 - 800), "{stats}");
}

/// A restarted feeder against a receiver with recovered state: the receiver holds 300 lines an
/// earlier feeder delivered; the new feeder starts at line 300, never at its own line 0.
#[test]
fn a_fresh_feeder_resumes_beyond_its_own_lines_where_the_receiver_says() {
    let (_dir, child, addr) = feed_corpus(1000, &["--ack"]);
    let (mut s, mut r) = hello(&addr, 300);
    let got = read_lines(&mut r, 700);
    assert_eq!(got.first().map(String::as_str), Some("line-300"));
    assert_eq!(got.last().map(String::as_str), Some("line-999"));
    s.write_all(b"ACK 1000\n").unwrap();
    let stats = finish(child);
    assert_eq!(stats["complete"], true, "{stats}");
    assert_eq!(stats["transmissions"], 700, "{stats}");
    assert_eq!(stats["resume_below_ack"], 0);
}

#[test]
fn ack_mode_reports_a_receiver_that_lost_acknowledged_lines() {
    let (_dir, child, addr) = feed_corpus(200, &["--ack"]);
    let (s, mut r) = hello(&addr, 0);
    read_lines(&mut r, 200);
    ack_and_drop(s, r, 150);
    // Lost 50 acknowledged lines: resumes at 100 < 150.
    let (mut s, mut r) = hello(&addr, 100);
    read_lines(&mut r, 100);
    s.write_all(b"ACK 200\n").unwrap();
    let stats = finish(child);
    assert_eq!(stats["resume_below_ack"], 1, "{stats}");
    assert_eq!(stats["complete"], true);
}

#[test]
fn ack_mode_rejects_a_garbage_hello_and_keeps_serving() {
    let (_dir, child, addr) = feed_corpus(10, &["--ack"]);
    let mut bad = connect(&addr);
    bad.write_all(b"\xff\xfe garbage\n").unwrap();
    let mut buf = [0u8; 16];
    // The feeder closes the bad connection without sending data.
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(bad.read(&mut buf).unwrap_or(0), 0);
    let (mut s, mut r) = hello(&addr, 0);
    read_lines(&mut r, 10);
    s.write_all(b"ACK 10\n").unwrap();
    let stats = finish(child);
    assert_eq!(stats["complete"], true);
    assert_eq!(stats["connections"], 2);
}

#[test]
fn feed_rejects_bad_arguments_with_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.txt");
    let out = run_feed(&missing, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read corpus"), "{err}");
    let corpus = write_corpus(dir.path(), 3);
    let out = run_feed(&corpus, &["--steps", "100:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --steps"));
}
