//! The `spate` binary's main jobs end to end on real input: licence texts and documentation that
//! ship with the system (text nobody here wrote), fed through `--dir` (files moved atomically into
//! a real directory) and `--socket` (a real TCP server on 127.0.0.1 that serves the bytes, then
//! closes), checked against an independent count.

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use spate_tests::spate_bin;

/// Real text files nobody here wrote: the system's licence texts, a Latin-1 (invalid UTF-8) file
/// if present, else documentation shipped with the Rust toolchain.
fn real_inputs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/share/common-licenses") {
        for e in rd.flatten() {
            let p = e.path();
            // Skip the symlinks (GPL -> GPL-3): each text once.
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                files.push(p);
            }
        }
    }
    for extra in ["/usr/share/doc/ed/AUTHORS"] {
        if Path::new(extra).is_file() {
            files.push(extra.into());
        }
    }
    if files.len() < 3 {
        let sysroot = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let doc = Path::new(&sysroot).join("share/doc");
        for sub in ["rust", "cargo", "clippy", "rustfmt"] {
            if let Ok(rd) = std::fs::read_dir(doc.join(sub)) {
                for e in rd.flatten() {
                    if e.path().is_file() {
                        files.push(e.path());
                    }
                }
            }
        }
    }
    files.sort();
    assert!(
        files.len() >= 3,
        "no real input files found on this machine"
    );
    files
}

/// The independent count: the same bytes, `String::from_utf8_lossy` over the whole content (the
/// jobs' default `replace` policy for invalid UTF-8), `split_whitespace`, a plain `HashMap`.
fn independent_count(bytes: &[u8]) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for w in String::from_utf8_lossy(bytes).split_whitespace() {
        *m.entry(w.to_owned()).or_insert(0) += 1;
    }
    m
}

/// Sums every `<name>-<ms>.txt` file of `dir` (`key<TAB>value` lines), checking that each file is
/// sorted by key with unique keys. Returns the sums and the number of batch files.
fn sum_outputs(dir: &Path, name: &str) -> (HashMap<String, u64>, usize) {
    let mut m = HashMap::new();
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let fname = e.file_name().into_string().unwrap();
        let Some(rest) = fname.strip_prefix(&format!("{name}-")) else {
            continue;
        };
        let ms = rest.strip_suffix(".txt").expect("only .txt batch files");
        ms.parse::<u64>().expect("batch time in ms");
        n += 1;
        let text = std::fs::read_to_string(e.path()).unwrap();
        let mut prev: Option<String> = None;
        for line in text.lines() {
            let (k, v) = line.rsplit_once('\t').expect("key<TAB>value");
            if let Some(p) = &prev {
                assert!(
                    p.as_str() < k,
                    "{fname}: not sorted or duplicate key: {p:?} then {k:?}"
                );
            }
            prev = Some(k.to_owned());
            *m.entry(k.to_owned()).or_insert(0) += v.parse::<u64>().unwrap();
        }
    }
    (m, n)
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if t.elapsed() > timeout {
            let _ = child.kill(); // SIGKILL to our own child, by handle
            let out = child.wait_with_output().unwrap();
            panic!(
                "spate did not stop within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `spate ARGS --idle IDLE --duration 60s --output OUT` (stdout to `stdout`, stderr
/// piped).
fn spawn_job(args: &[&str], idle: &str, out: &Path, stdout: Stdio) -> Child {
    Command::new(spate_bin())
        .args(args)
        .args(["--idle", idle, "--duration", "60s", "--output"])
        .arg(out)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// [`spawn_job`], then waits up to `timeout`.
fn run_job(args: &[&str], idle: &str, out: &Path, stdout: Stdio, timeout: Duration) -> Output {
    wait_with_timeout(spawn_job(args, idle, out, stdout), timeout)
}

/// A temporary work area with an empty input directory `in` and output directory `out`.
fn work_dirs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("in");
    let out = work.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    (work, dir, out)
}

fn assert_counts_equal(got: &HashMap<String, u64>, want: &HashMap<String, u64>) {
    let got_total: u64 = got.values().sum();
    let want_total: u64 = want.values().sum();
    assert_eq!(got_total, want_total, "total words");
    assert_eq!(got.len(), want.len(), "distinct words");
    for (k, v) in want {
        assert_eq!(got.get(k), Some(v), "count of {k:?}");
    }
}

#[test]
fn wordcount_dir_on_real_files_matches_independent_count() {
    let inputs = real_inputs();
    let (work, dir, out) = work_dirs();
    let staging = work.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();

    let child = spawn_job(
        &[
            "wordcount",
            "--dir",
            dir.to_str().unwrap(),
            "--batch",
            "500ms",
        ],
        "3s",
        &out,
        Stdio::piped(),
    );
    // Files move atomically into the watched directory (write elsewhere, then rename), a few
    // per batch.
    std::thread::sleep(Duration::from_millis(700));
    let mut all = Vec::new();
    for (i, f) in inputs.iter().enumerate() {
        let bytes = std::fs::read(f).unwrap();
        all.extend_from_slice(&bytes);
        all.push(b'\n'); // files are separate inputs: a last line never joins the next file's first
        let name = format!("{i:03}-{}", f.file_name().unwrap().to_string_lossy());
        std::fs::write(staging.join(&name), &bytes).unwrap();
        std::fs::rename(staging.join(&name), dir.join(&name)).unwrap();
        if i % 4 == 3 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let output = wait_with_timeout(child, Duration::from_secs(90));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "spate failed: {stderr}");
    let (got, batches) = sum_outputs(&out, "wordcount");
    assert!(batches >= 2, "{batches} batch files");
    assert_counts_equal(&got, &independent_count(&all));
    // The Spark-format print of each batch reached stdout.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("-------------------------------------------\nTime: "),
        "{stdout}"
    );
}

/// A server on 127.0.0.1 that serves `bytes` to the first connection in small writes, then closes.
fn serve_once(bytes: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        for chunk in bytes.chunks(64 << 10) {
            s.write_all(chunk).unwrap();
        }
        s.flush().unwrap();
        // Close the connection and the listener: further connects are refused.
    });
    (addr, h)
}

#[test]
fn wordcount_socket_on_real_files_matches_independent_count() {
    let inputs = real_inputs();
    let mut all = Vec::new();
    for f in &inputs {
        all.extend_from_slice(&std::fs::read(f).unwrap());
        all.push(b'\n');
    }
    let (addr, server) = serve_once(all.clone());
    let (_work, _, out) = work_dirs();
    let output = run_job(
        &["wordcount", "--socket", &addr, "--batch", "500ms"],
        "3s",
        &out,
        Stdio::piped(),
        Duration::from_secs(90),
    );
    server.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "spate failed: {stderr}");
    let (got, _) = sum_outputs(&out, "wordcount");
    assert_counts_equal(&got, &independent_count(&all));
}

#[test]
fn wordcount_skip_policy_drops_invalid_lines_in_both_counts() {
    // A Latin-1 line and a valid line, through --dir with --invalid-utf8 skip: the independent
    // count applies the same policy per line.
    let (_work, dir, out) = work_dirs();
    let mut bytes = b"fa\xe7ade caf\xe9 ok\r\nplain words here ok\n".to_vec();
    if let Ok(real) = std::fs::read("/usr/share/doc/ed/AUTHORS") {
        bytes.extend_from_slice(&real);
    }
    std::fs::write(dir.join("input.txt"), &bytes).unwrap();
    let output = run_job(
        &[
            "wordcount",
            "--dir",
            dir.to_str().unwrap(),
            "--existing-files",
            "--invalid-utf8",
            "skip",
            "--batch",
            "500ms",
        ],
        "2s",
        &out,
        Stdio::null(),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut want = HashMap::new();
    for line in bytes.split(|&b| b == b'\n') {
        if let Ok(s) = std::str::from_utf8(line) {
            for w in s.split_whitespace() {
                *want.entry(w.to_owned()).or_insert(0) += 1;
            }
        }
    }
    let (got, _) = sum_outputs(&out, "wordcount");
    assert_counts_equal(&got, &want);
    assert!(
        !got.keys().any(|k| k.contains('\u{fffd}')),
        "a skipped line was counted"
    );
}

#[test]
fn clicks_counts_per_device_type_over_windows_and_reports_malformed() {
    let gen = Command::new(spate_bin())
        .args([
            "gen",
            "clicks",
            "--lines",
            "20000",
            "--seed",
            "5",
            "--malformed",
            "0.05",
        ])
        .output()
        .unwrap();
    assert!(gen.status.success());
    let text = gen.stdout;
    let mut want: HashMap<String, u64> = HashMap::new();
    let mut malformed = 0u64;
    for line in String::from_utf8(text.clone()).unwrap().lines() {
        let f: Vec<&str> = line.split('|').collect();
        let ok = f.len() == 4
            && !f[0].trim().is_empty()
            && !f[1].trim().is_empty()
            && f[2].trim().parse::<u64>().is_ok()
            && f[3].trim().parse::<u64>().is_ok();
        if ok {
            *want.entry(f[1].trim().to_owned()).or_insert(0) += f[3].trim().parse::<u64>().unwrap();
        } else {
            malformed += 1;
        }
    }
    assert!(malformed > 0);
    let (_work, dir, out) = work_dirs();
    std::fs::write(dir.join("clicks.txt"), &text).unwrap();
    // Window = slide = 2 batches: tumbling windows, so the windows' sums add up to the whole input.
    let output = run_job(
        &[
            "clicks",
            "--dir",
            dir.to_str().unwrap(),
            "--existing-files",
            "--batch",
            "500ms",
            "--window",
            "1s",
            "--slide",
            "1s",
        ],
        "3s",
        &out,
        Stdio::piped(),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let (got, _) = sum_outputs(&out, "clicks");
    assert_counts_equal(&got, &want);
    assert!(
        stderr.contains(&format!("malformed lines: {malformed}")),
        "malformed count not reported: {stderr}"
    );
}

#[test]
fn bad_arguments_are_one_line_errors_not_panics() {
    for args in [
        vec!["wordcount"],
        vec!["wordcount", "--socket", "nonsense"],
        vec![
            "wordcount",
            "--dir",
            "/nonexistent/spate/dir",
            "--duration",
            "2s",
        ],
        vec!["wordcount", "--socket", "127.0.0.1:1", "--batch", "0ms"],
        vec![
            "clicks", "--dir", "/tmp", "--window", "750ms", "--batch", "500ms",
        ],
    ] {
        let out = Command::new(spate_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.trim().is_empty(), "{args:?}: no error message");
    }
}
