//! `spate chaos run --simfs` (docs/chaos.md, "SimFs mode"): the in-process word count with its WAL
//! on a crashable `SimFs` passes on a correct build, survives the `fill-disk` disturbance, repeats
//! its schedule for a seed, and catches the deliberately broken `chaos-broken-skip-sync` build
//! (WAL group commit skips `fdatasync`) with a `lost` finding.
//!
//! Normal build: `cargo test -p spate-cli --test chaos_simfs`.
//! Broken build: `cargo test -p spate-cli --features chaos-broken-skip-sync --test chaos_simfs`
//! (only the detection test runs there; the others need a correct WAL).

use serde_json::Value;
use std::path::Path;
use std::process::Command;

const BROKEN: bool = cfg!(feature = "chaos-broken-skip-sync");

/// Runs `spate chaos run --simfs -q <args>` with its work directory and JSON report in `dir`;
/// returns the exit code and the report.
fn simfs(dir: &Path, args: &[&str]) -> (i32, Value) {
    let report = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["chaos", "run", "--simfs", "-q", "--work"])
        .arg(dir.join("work"))
        .arg("--report")
        .arg(&report)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code().unwrap_or(-1);
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}); exit {code}\n{stdout}\n{stderr}"));
    let v: Value = serde_json::from_str(&text).unwrap();
    // The one-line verdict and the summary are printed as in the process mode.
    assert!(
        stdout.contains("verdict: pass") || stdout.contains("verdict: fail"),
        "{stdout}\n{stderr}"
    );
    (code, v)
}

fn kinds(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn broken_skip_sync_build_is_caught_and_the_correct_build_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (code, v) = simfs(dir.path(), &["--cycles", "10", "--seed", "1"]);
    assert_eq!(v["mode"], "simfs");
    assert_eq!(v["kills"], 10, "{v}");
    if BROKEN {
        assert_eq!(code, 1, "the broken build must fail: {v}");
        assert!(kinds(&v).iter().any(|k| k == "lost"), "{v}");
        assert!(v["lost"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["verdict"], "fail");
    } else {
        assert_eq!(code, 0, "{:#}", v["findings"]);
        assert_eq!(v["verdict"], "pass");
        assert_eq!(v["lost"], 0);
        assert_eq!(v["duplicated"], 0);
        // Every cycle restored from the checkpoint after the first start.
        let outcomes: Vec<&str> = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["outcome"].as_str().unwrap_or("none"))
            .collect();
        assert_eq!(outcomes[0], "Fresh", "{outcomes:?}");
        assert!(
            outcomes[1..].iter().all(|o| *o == "Restored"),
            "{outcomes:?}"
        );
    }
}

#[cfg_attr(
    feature = "chaos-broken-skip-sync",
    ignore = "needs a correct WAL: the broken build runs only the detection test"
)]
#[test]
fn fill_disk_windows_end_in_typed_errors_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (code, v) = simfs(
        dir.path(),
        &[
            "--cycles",
            "10",
            "--seed",
            "1",
            "--disturb",
            "fill-disk",
            "--disturb-rate",
            "0.5",
        ],
    );
    assert_eq!(code, 0, "{:#}", v["findings"]);
    assert!(v["disturbances"].as_u64().unwrap() >= 2, "{v}");
    let runs = v["runs"].as_array().unwrap();
    let disturbed: Vec<&str> = runs
        .iter()
        .filter_map(|r| r["disturbed"].as_str())
        .collect();
    assert!(
        disturbed
            .iter()
            .any(|d| d.starts_with("fill-disk") && !d.contains(": 0 faults injected")),
        "no ENOSPC was injected: {disturbed:?}"
    );
    // The engine answered the full disk with a typed error naming ENOSPC (not a panic).
    assert!(
        runs.iter().any(|r| r["ended"]
            .as_str()
            .unwrap()
            .contains("No space left on device")),
        "{runs:#?}"
    );
}

#[cfg_attr(
    feature = "chaos-broken-skip-sync",
    ignore = "needs a correct WAL: the broken build runs only the detection test"
)]
#[test]
fn a_seed_repeats_its_schedule_and_bad_flags_are_refused() {
    let ended = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ended"].as_str().unwrap().to_owned())
            .collect()
    };
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (ca, va) = simfs(a.path(), &["--cycles", "4", "--seed", "5"]);
    let (cb, vb) = simfs(b.path(), &["--cycles", "4", "--seed", "5"]);
    assert_eq!((ca, cb), (0, 0));
    assert_eq!(ended(&va), ended(&vb));
    assert_eq!(va["input_lines"], vb["input_lines"]);
    assert!(va["command"].as_str().unwrap().contains("--seed 5"));
    // Flags of the process mode that do not apply are refused (exit 2), as is an unknown
    // disturbance.
    for bad in [
        &["--simfs", "--disturb", "wal"][..],
        &["--simfs", "--failpoints", "all"],
        &["--simfs", "--program", "clicks"],
        &["--simfs", "--max-steps", "0"],
        &["--disturb", "fill-disk"],
        &["--max-steps", "3"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_spate"))
            .args(["chaos", "run", "-q"])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("spate chaos run:"),
            "{bad:?}"
        );
    }
}

/// Regression (engine bug found by this mode): block ids restarted at 0 in every process, and a
/// block recovered from the WAL was served the in-memory records of a new block with the same id
/// (one block lost, one counted twice: seeds 2–5 with the producer connecting at once). Both
/// producer timings must pass on these seeds.
#[cfg_attr(
    feature = "chaos-broken-skip-sync",
    ignore = "needs a correct WAL: the broken build runs only the detection test"
)]
#[test]
fn recovered_blocks_are_never_confused_with_new_blocks_of_the_same_receiver() {
    for seed in ["2", "3", "4", "5"] {
        for late in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let mut args = vec!["--cycles", "10", "--seed", seed];
            if late {
                args.push("--late-producer");
            }
            let (code, v) = simfs(dir.path(), &args);
            assert_eq!(code, 0, "seed {seed}, late producer {late}: {v}");
            assert_eq!(v["lost"], 0, "{v}");
            assert_eq!(v["duplicated"], 0, "{v}");
        }
    }
}
