//! Real-process catch-up tests (issue 14 item 4, docs/reliability.md problem 3): after a restart
//! with missed batches, `--idle` counts from the first timer batch (the first that lists the input
//! directory), so a restart never ends "idle" before it reads files already waiting.

use spate_tests::spate_bin;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `spate PROGRAM --dir IN --checkpoint CK --output OUT --batch 500ms --print 0 --no-status
/// EXTRA..` on `root`, run to its end; panics with its stderr unless it exits 0.
fn job(root: &Path, program: &str, extra: &[&str]) -> String {
    let o = std::process::Command::new(spate_bin())
        .arg(program)
        .arg("--dir")
        .arg(root.join("in"))
        .arg("--checkpoint")
        .arg(root.join("ckpt"))
        .arg("--output")
        .arg(root.join("out"))
        .args(["--batch", "500ms", "--print", "0", "--no-status"])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "spate {program} {extra:?}: {}\n{err}",
        o.status
    );
    err
}

/// `spate wordcount --per-batch` ([`job`]).
fn wordcount(root: &Path, extra: &[&str]) -> String {
    let mut a = vec!["--per-batch"];
    a.extend_from_slice(extra);
    job(root, "wordcount", &a)
}

/// Word counts summed over every per-batch output file.
fn totals(out: &Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(out).unwrap() {
        let p = e.unwrap().path();
        if !p.is_file() {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let (k, v) = line.rsplit_once('\t').unwrap();
            *m.entry(k.to_owned()).or_insert(0) += v.parse::<u64>().unwrap();
        }
    }
    m
}

#[test]
fn idle_waits_for_the_first_batch_after_a_restart_catch_up() {
    let root = tempfile::tempdir().unwrap();
    for d in ["in", "staging", "out"] {
        std::fs::create_dir_all(root.path().join(d)).unwrap();
    }
    // A fresh run of two batches, then an outage of about six batch intervals.
    wordcount(root.path(), &["--batches", "2"]);
    std::thread::sleep(Duration::from_secs(3));
    // A file waiting before the restart (moved in atomically, newer than every missed batch).
    let staged = root.path().join("staging/a.txt");
    std::fs::write(&staged, "alpha beta alpha\n").unwrap();
    std::fs::rename(&staged, root.path().join("in/a.txt")).unwrap();
    // `--idle` shorter than a batch: counted from the end of the run's catch-up it would stop
    // before the first timer batch lists the directory.
    let err = wordcount(root.path(), &["--idle", "100ms"]);
    assert!(err.contains("restored through"), "{err}");
    let want: BTreeMap<String, u64> = [("alpha".to_owned(), 2), ("beta".to_owned(), 1)].into();
    assert_eq!(totals(&root.path().join("out")), want, "{err}");
}

/// The output batch times of `out` (`<name>-<ms>.txt`), ascending.
fn batch_times(out: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(out)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().ok()?;
            n.strip_suffix(".txt")?.rsplit_once('-')?.1.parse().ok()
        })
        .collect();
    v.sort_unstable();
    v
}

/// The newest output file's `word → total`.
fn newest_totals(out: &Path) -> BTreeMap<String, u64> {
    let newest = batch_times(out).pop().expect("an output file");
    let p = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(&format!("-{newest}.txt")))
        .unwrap();
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let (k, v) = l.rsplit_once('\t').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

/// Moves `text` into `root/in/name` atomically (written in `root/staging` first).
fn drop_file(root: &Path, name: &str, text: &str) {
    let staged = root.join("staging").join(name);
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, root.join("in").join(name)).unwrap();
}

/// `coalesced F..T` spans of a restart line.
fn spans(err: &str) -> Vec<(u64, u64)> {
    let line = err
        .lines()
        .find(|l| l.starts_with("spate: restart: "))
        .unwrap_or_else(|| panic!("no restart line:\n{err}"));
    line.split("; ")
        .filter_map(|p| p.strip_prefix("coalesced "))
        .flat_map(str::split_whitespace)
        .map(|s| {
            let (f, t) = s.split_once("..").unwrap();
            (f.parse().unwrap(), t.parse().unwrap())
        })
        .collect()
}

/// Issue 14 item 2 (docs/recovery.md "Bounded catch-up"): a restart after an outage with input
/// arriving during it runs the missed grid times as one batch, which reads every file of the
/// outage exactly once; the times it covers write no output of their own, and the running totals
/// equal a crash-free run's. `--missed-batches generate_all` (Spark's rule) on the same outage
/// writes one file per missed time with the same final totals.
#[test]
fn a_restart_coalesces_the_missed_batches_of_an_outage_and_reads_every_file_once() {
    let run = |policy: &str| {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["in", "staging", "out"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let args = |extra: &[&str]| {
            let mut v = vec!["--missed-batches", policy];
            v.extend_from_slice(extra);
            v.into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        let job = |extra: &[&str]| {
            let a = args(extra);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            job(r, "wordcount", &a)
        };
        // (a file present before the first start is not new: `new_files_only`.)
        job(&["--batches", "3"]);
        let before = batch_times(&r.join("out"));
        // An outage of ~3 s (6 grid times) with a file arriving in three different grid times.
        for (i, text) in ["alpha gamma\n", "beta beta\n", "gamma alpha alpha\n"]
            .iter()
            .enumerate()
        {
            std::thread::sleep(Duration::from_millis(900));
            drop_file(r, &format!("o{i}.txt"), text);
        }
        std::thread::sleep(Duration::from_millis(600));
        let err = job(&["--idle", "1s"]);
        (root, before, err)
    };

    let (root, before, err) = run("coalesce");
    let out = root.path().join("out");
    let got = spans(&err);
    assert_eq!(got.len(), 1, "one run of missed times, one span: {err}");
    let (from, batch) = got[0];
    assert!(
        (batch - from) / 500 + 1 >= 5,
        "the outage covers at least 5 grid times: {from}..{batch}\n{err}"
    );
    let after = batch_times(&out);
    assert!(
        after.contains(&batch),
        "the span's batch wrote its file: {after:?}\n{err}"
    );
    for t in &after {
        assert!(
            !(from <= *t && *t < batch),
            "time {t} inside the span {from}..{batch} wrote a file: {after:?}"
        );
    }
    assert!(after.len() > before.len());
    let want: BTreeMap<String, u64> = [
        ("alpha".to_owned(), 3),
        ("beta".to_owned(), 2),
        ("gamma".to_owned(), 2),
    ]
    .into();
    assert_eq!(newest_totals(&out), want, "{err}");
    let report = restart_report(&root.path().join("ckpt"));
    assert_eq!(report["batches_coalesced"][0]["from"], from);
    assert_eq!(report["batches_coalesced"][0]["batch"], batch);
    assert!(report["coalesce_refused"].is_null(), "{report}");

    let (root, _, err) = run("generate_all");
    assert!(spans(&err).is_empty(), "{err}");
    let out = root.path().join("out");
    let times = batch_times(&out);
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 500),
        "generate_all: a file per grid time: {times:?}"
    );
    assert_eq!(newest_totals(&out), want, "{err}");
}

/// The newest restart report of a checkpoint directory, as JSON.
fn restart_report(ckpt: &Path) -> serde_json::Value {
    let dir = ckpt.join("restart-reports");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    serde_json::from_slice(&std::fs::read(names.last().unwrap()).unwrap()).unwrap()
}

/// A graph where batch boundaries matter (`clicks`: `map_with_state` with a timeout) refuses
/// `coalesce`: the restart says why and generates every missed batch.
#[test]
fn coalesce_is_refused_for_map_with_state_and_the_report_says_why() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["in", "staging", "out"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    let clicks = |extra: &[&str]| job(r, "clicks", extra);
    drop_file(r, "a.txt", "d1|phone|1|2\nd2|tablet|1|1\n");
    clicks(&["--batches", "2"]);
    std::thread::sleep(Duration::from_secs(2));
    let err = clicks(&["--batches", "1"]);
    assert!(spans(&err).is_empty(), "{err}");
    let report = restart_report(&r.join("ckpt"));
    let why = report["coalesce_refused"]
        .as_str()
        .unwrap_or_else(|| panic!("{report}"));
    assert!(why.contains("map_with_state"), "{why}");
    assert!(
        report["batches_rescheduled"].as_array().unwrap().len() >= 3,
        "every missed batch generated: {report}"
    );
}
