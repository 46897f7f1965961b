//! Real-process catch-up tests (issue 14 item 4, docs/reliability.md problem 3): after a restart
//! with missed batches, `--idle` counts from the first timer batch (the first that lists the input
//! directory), so a restart never ends "idle" before it reads files already waiting.

use spate_tests::spate_bin;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// `spate wordcount --dir IN --checkpoint CK --batch 500ms --per-batch --output OUT EXTRA..`,
/// run to its end; panics with its stderr unless it exits 0.
fn wordcount(root: &Path, extra: &[&str]) -> String {
    let o = std::process::Command::new(spate_bin())
        .arg("wordcount")
        .arg("--dir")
        .arg(root.join("in"))
        .arg("--checkpoint")
        .arg(root.join("ckpt"))
        .arg("--output")
        .arg(root.join("out"))
        .args([
            "--batch",
            "500ms",
            "--per-batch",
            "--print",
            "0",
            "--no-status",
        ])
        .args(extra)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "spate wordcount {extra:?}: {}\n{err}",
        o.status
    );
    err
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
