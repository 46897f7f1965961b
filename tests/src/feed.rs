//! `spate feed` as a child process, and the corpus files it serves.

use crate::spate_bin;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

/// Writes `dir/corpus.txt` with the lines `line-0` .. `line-<n-1>`; returns its path.
///
/// # Panics
/// If the file cannot be written (test setup failure).
#[must_use]
pub fn write_corpus(dir: &Path, n: u64) -> PathBuf {
    let p = dir.join("corpus.txt");
    let body: String = (0..n).map(|i| format!("line-{i}\n")).collect();
    std::fs::write(&p, body).unwrap();
    p
}

/// Starts `spate feed --listen 127.0.0.1:0 --progress-secs 0 <args>` and returns the child and the
/// address it printed (`listening on ADDR`). Its stderr is drained in the background so the child
/// never blocks on a full pipe.
///
/// # Panics
/// If the child does not start or does not print its address (test setup failure).
#[must_use]
pub fn start_feed(args: &[&str]) -> (Child, String) {
    let (child, addr, _) = start_feed_logged(args);
    (child, addr)
}

/// [`start_feed`] serving the file `corpus` (`--file CORPUS <args>`).
///
/// # Panics
/// As [`start_feed`].
#[must_use]
pub fn feed_file(corpus: &Path, args: &[&str]) -> (Child, String) {
    let (child, addr, _) = feed_file_logged(corpus, args);
    (child, addr)
}

/// [`feed_file`], also returning everything the child writes to stderr after its first line.
///
/// # Panics
/// As [`start_feed`].
#[must_use]
pub fn feed_file_logged(corpus: &Path, args: &[&str]) -> (Child, String, Arc<Mutex<String>>) {
    let corpus = corpus.to_str().expect("a UTF-8 corpus path");
    let mut all = vec!["--file", corpus];
    all.extend_from_slice(args);
    start_feed_logged(&all)
}

/// [`start_feed`], also returning everything the child writes to stderr after its first line.
///
/// # Panics
/// As [`start_feed`].
#[must_use]
pub fn start_feed_logged(args: &[&str]) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = Command::new(spate_bin())
        .arg("feed")
        .args(["--listen", "127.0.0.1:0", "--progress-secs", "0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("spate feed: {line}"))
        .to_owned();
    let log = Arc::new(Mutex::new(String::new()));
    let acc = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        acc.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_str(&s);
    });
    (child, addr, log)
}

/// Waits for a `spate feed` child and parses the JSON statistics it prints on stdout.
///
/// # Panics
/// If the child cannot be waited for or its stdout is not JSON.
#[must_use]
pub fn finish(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout:?}"))
}
