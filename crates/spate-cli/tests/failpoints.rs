//! Every fail point is reachable in the real `spate` binary: for each one, a stateful
//! `spate wordcount --checkpoint` (socket input from a local TCP server, or `--dir` for the file
//! source's selection) runs with `SPATE_FAILPOINTS=<name>=return(abort)` and must die by SIGABRT
//! at that point; a restart without fail points must then recover and stop cleanly (exit 0).
//! Also: `return` surfaces as a one-line error naming the point, an unknown name is refused.
//! `cargo test -p spate-cli --features failpoints --test failpoints`.
#![cfg(feature = "failpoints")]

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Points the socket word count does not pass through in a short run (covered elsewhere).
const NOT_IN_SOCKET_RUN: &[&str] = &[
    // The file source only.
    "engine::selection::before",
    // Segments are deleted only once a whole (60 s / 64 MiB) segment is unreferenced.
    "wal::truncate::before",
];

/// A line server on 127.0.0.1: every connection gets "a b c" lines every 5 ms until it closes.
fn line_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(60) {
                    if s.write_all(b"a b c\nb c\nc\n").is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
    });
    port
}

fn spate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_spate"))
}

/// The binary must have been built with fail points. A concurrent `cargo build` without the
/// feature in the same target directory overwrites it: say so instead of failing obscurely.
fn check_binary() {
    let out = spate().args(["info", "--failpoints"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("(compiled in"),
        "{} was rebuilt without fail points (a concurrent build in the same target directory?); \
         rerun, or use a separate CARGO_TARGET_DIR: {text}",
        env!("CARGO_BIN_EXE_spate")
    );
}

/// Runs `cmd` with a deadline (killing it after `limit`).
fn run(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if flag.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !flag.load(std::sync::atomic::Ordering::Acquire) {
            // The child is ours (spawned above); SIGKILL by pid.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    out
}

fn wordcount(port: Option<u16>, input: Option<&Path>, ckpt: &Path, stop: &[&str]) -> Command {
    let mut c = spate();
    c.arg("wordcount");
    if let Some(p) = port {
        c.args(["--socket", &format!("127.0.0.1:{p}")]);
    }
    if let Some(d) = input {
        c.args(["--dir", d.to_str().unwrap(), "--existing-files"]);
    }
    c.args([
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--batch",
        "100ms",
        "--state-checkpoint",
        "200ms",
        "--print",
        "1",
        "--no-status",
        "--parallelism",
        "1",
        "--restart-delay",
        "100ms",
    ]);
    c.args(stop);
    c.env_remove("SPATE_FAILPOINTS");
    c
}

/// Arms `name=return(abort)`, expects SIGABRT at it, then recovers without fail points.
fn abort_then_recover(name: &str, port: Option<u16>, input: Option<&Path>) -> Result<(), String> {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("ckpt");
    let mut cmd = wordcount(port, input, &ckpt, &["--duration", "20s"]);
    cmd.env("SPATE_FAILPOINTS", format!("{name}=return(abort)"));
    let out = run(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.signal() != Some(6) || !stderr.contains(&format!("fail point {name}: abort")) {
        return Err(format!(
            "{name}: not aborted there ({:?}): {stderr}",
            out.status
        ));
    }
    let out = run(
        wordcount(port, input, &ckpt, &["--batches", "3"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.contains("restart") {
        return Err(format!(
            "{name}: recovery failed ({:?}): {stderr}",
            out.status
        ));
    }
    Ok(())
}

#[test]
fn every_fail_point_aborts_the_binary_and_recovery_follows() {
    check_binary();
    let port = line_server();
    let names: Vec<&str> = spate_types::failpoints::ALL
        .iter()
        .map(|p| p.name)
        .filter(|n| !NOT_IN_SOCKET_RUN.contains(n))
        .collect();
    // Two at a time (2-core machines): each child is single-threaded for the jobs.
    let failures: Vec<String> = names
        .chunks(2)
        .flat_map(|pair| {
            let hs: Vec<_> = pair
                .iter()
                .map(|n| {
                    let n = (*n).to_owned();
                    std::thread::spawn(move || abort_then_recover(&n, Some(port), None))
                })
                .collect();
            hs.into_iter()
                .filter_map(|h| h.join().unwrap().err())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn selection_fail_point_in_the_file_source() {
    check_binary();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("f1.txt"), "x y z\n").unwrap();
    abort_then_recover("engine::selection::before", None, Some(&input)).unwrap();
}

#[test]
fn return_is_a_typed_error_and_unknown_names_are_refused() {
    check_binary();
    let port = line_server();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = wordcount(
        Some(port),
        None,
        &tmp.path().join("c"),
        &["--duration", "20s"],
    );
    cmd.env("SPATE_FAILPOINTS", "wal::sync::before=return");
    let out = run(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("failpoint wal::sync::before"), "{stderr}");

    let mut cmd = spate();
    cmd.arg("info")
        .env("SPATE_FAILPOINTS", "wal::sync::befor=return");
    let out = run(cmd, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fail point"));

    let out = spate().args(["info", "--failpoints"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("compiled in"), "{text}");
    for p in spate_types::failpoints::ALL {
        assert!(text.contains(p.name), "{}", p.name);
    }
}
