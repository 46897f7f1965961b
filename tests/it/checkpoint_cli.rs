//! `spate checkpoint ls|show|verify|gc` against a real local checkpoint directory (and moto when
//! available), including a damaged checkpoint and bad input.

use spate_checkpoint::testing::{plant, raw_get, suite};
use spate_checkpoint::{CheckpointStore, StoreOptions};
use std::process::{Command, Output};

fn spate(args: &[&str]) -> Output {
    Command::new(spate_tests::spate_bin())
        .args(args)
        .output()
        .expect("running spate")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `spate ARGS`, asserts it succeeded (showing its stderr otherwise) and returns its stdout.
fn spate_ok(args: &[&str]) -> String {
    let o = spate(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?}: {err}");
    out
}

/// Three committed checkpoints; the newest has a bit-flipped data object.
fn populate(store: &CheckpointStore) -> Vec<spate_checkpoint::Manifest> {
    spate_tests::current_thread_rt().block_on(async {
        let mut w = store.open_committer().await.unwrap();
        let mut ms = Vec::new();
        for t in 1..=3u64 {
            ms.push(
                w.commit(suite::data_draft(t * 1_000, 1, 100))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let obj = &ms[2].objects[0].path;
        let mut b = raw_get(store, obj).await;
        let n = b.len();
        b[n - 1] ^= 0x40;
        plant(store, obj, b).await;
        ms
    })
}

#[test]
fn checkpoint_ls_show_verify_on_a_local_directory_skip_and_flag_the_damaged_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let store = CheckpointStore::open(&url, StoreOptions::default()).unwrap();
    let ms = populate(&store);

    let out = spate_ok(&["checkpoint", "ls", &url]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].starts_with(&ms[2].key.to_string()) && lines[1].contains("corrupt object"),
        "{out}"
    );
    assert!(
        lines[2].ends_with("ok") && lines[3].ends_with("ok"),
        "{out}"
    );

    let o = spate(&["checkpoint", "ls", &url, "--json"]);
    let (out, _) = text(&o);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["verified"], false);

    // show: the latest *valid* checkpoint, naming the rejected newer one.
    let out = spate_ok(&["checkpoint", "show", &url, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["checkpoint"], ms[1].key.to_string());
    assert_eq!(v["batch_time_ms"], 2_000);
    assert_eq!(v["rejected_newer"][0]["checkpoint"], ms[2].key.to_string());
    let o = spate(&["checkpoint", "show", &url, "--batch", "1000"]);
    assert!(o.status.success());
    assert!(text(&o).0.contains(&ms[0].key.to_string()));
    let o = spate(&["checkpoint", "show", &url, "--batch", "7777"]);
    assert_eq!(o.status.code(), Some(1));

    // verify: exit 1, the damaged checkpoint and object named.
    let o = spate(&["checkpoint", "verify", &url]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("DAMAGED") && out.contains(&ms[2].objects[0].path),
        "{out}"
    );
    assert!(
        out.contains("3 checkpoint(s), 2 verified, 1 damaged"),
        "{out}"
    );

    // gc --dry-run deletes nothing; gc --keep 1 deletes the oldest.
    let before = std::fs::read_dir(dir.path().join("manifests"))
        .unwrap()
        .count();
    let o = spate(&["checkpoint", "gc", &url, "--dry-run", "--keep", "1"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("would delete manifests/"), "{out}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("manifests"))
            .unwrap()
            .count(),
        before
    );
    let o = spate(&["checkpoint", "gc", &url, "--keep", "1"]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(!dir
        .path()
        .join(spate_checkpoint::CheckpointPaths::manifest(ms[0].key))
        .exists());
    assert!(dir
        .path()
        .join(spate_checkpoint::CheckpointPaths::manifest(ms[1].key))
        .exists());
}

#[test]
fn cli_bad_input_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for args in [
        vec!["checkpoint", "ls", missing.to_str().unwrap()],
        vec!["checkpoint", "verify", "ftp://nowhere"],
        vec!["checkpoint", "show", "s3://", "--json"],
        vec![
            "checkpoint",
            "gc",
            dir.path().to_str().unwrap(),
            "--pin",
            "bogus",
        ],
    ] {
        let o = spate(&args);
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("spate checkpoint"), "{err}");
    }
    assert!(!missing.exists(), "ls must not create the directory");
    // An empty location: ls works, show says so.
    let o = spate(&["checkpoint", "ls", dir.path().to_str().unwrap()]);
    assert!(o.status.success());
    assert!(text(&o).0.contains("(no checkpoints)"));
    let o = spate(&["checkpoint", "show", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn checkpoint_verify_on_moto_exits_1_naming_the_damaged_object() {
    let srv = spate_tests::s3_or_return!(moto);
    let prefix = spate_tests::s3::unique_prefix("cli");
    let url = srv.url(&prefix);
    let store = CheckpointStore::open(&url, srv.options()).unwrap();
    let ms = populate(&store);
    let o = Command::new(spate_tests::spate_bin())
        .args(["checkpoint", "verify", &url, "--endpoint", &srv.endpoint])
        .env("AWS_ACCESS_KEY_ID", &srv.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &srv.secret_key)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains(&ms[2].objects[0].path), "{out}");
}

/// Commits a checkpoint for batch `t` whose manifest carries `graph` and `conf` the way the engine
/// records them (`encode_description`, `fingerprint`, `computation_settings`).
fn commit_described(
    store: &CheckpointStore,
    t: u64,
    graph: &spate_streaming::GraphDescription,
    conf: std::collections::BTreeMap<String, String>,
) -> spate_checkpoint::Manifest {
    spate_tests::current_thread_rt().block_on(async {
        let mut w = store.open_committer().await.unwrap();
        let mut d = spate_checkpoint::CheckpointDraft::new(
            spate_checkpoint::CheckpointKind::Completed,
            spate_types::BatchTime(t),
            spate_types::BatchTime(0),
            graph.batch_interval,
        );
        d.graph = spate_checkpoint::GraphDescriptionBlob {
            fingerprint: graph.fingerprint(),
            bytes: spate_streaming::compat::encode_description(graph),
        };
        d.conf = conf;
        w.commit(d).await.unwrap().unwrap()
    })
}

/// The arguments of `spate checkpoint diff LOCATION --graph FILE`.
fn diff_args<'a>(location: &'a str, graph: &'a std::path::Path) -> Vec<&'a str> {
    vec![
        "checkpoint",
        "diff",
        location,
        "--graph",
        graph.to_str().unwrap(),
    ]
}

/// Runs `spate checkpoint diff LOCATION --graph FILE` with `extra` arguments after them.
fn diff(location: &str, graph: &std::path::Path, extra: &[&str]) -> Output {
    let mut args = diff_args(location, graph);
    args.extend_from_slice(extra);
    spate(&args)
}

fn describe(job: &[&str], file: &std::path::Path) -> spate_streaming::BuildDescription {
    let mut args = job.to_vec();
    args.extend(["--describe", file.to_str().unwrap()]);
    let o = spate(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?}: {out}{err}");
    assert!(out.is_empty(), "--describe FILE printed to stdout: {out}");
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

#[test]
fn describe_then_diff_against_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("ckpt").to_str().unwrap().to_owned();
    let store = CheckpointStore::open(&url, StoreOptions::default()).unwrap();

    // A checkpoint of a different build: socket → flat_map → print, written in-process.
    let cfg = spate_streaming::StreamingConfig::default();
    let ctx = spate_streaming::StreamingContext::new(cfg.clone()).unwrap();
    let words = ctx
        .socket_text_stream("127.0.0.1:9")
        .unwrap()
        .flat_map(|l: String| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .unwrap();
    words.print(10).unwrap();
    let other = ctx.describe_build().graph;
    commit_described(
        &store,
        1_000,
        &other,
        spate_streaming::compat::computation_settings(&cfg),
    );

    // `spate wordcount --describe` never connects (port 1 has no server) and writes the build.
    let wc_file = dir.path().join("wc.json");
    let wc = describe(&["wordcount", "--socket", "127.0.0.1:1"], &wc_file);
    assert!(
        wc.graph.operators.iter().any(|o| o.kind == "reduce_by_key"),
        "{wc:?}"
    );
    // `-` writes the same description to stdout.
    let o = spate(&["wordcount", "--socket", "127.0.0.1:1", "--describe", "-"]);
    assert!(o.status.success());
    let from_stdout: spate_streaming::BuildDescription = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(from_stdout, wc);

    // Incompatible: exit 1, one line per difference, the same lines as the library's diff.
    let o = diff(&url, &wc_file, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    let want = wc.compare_with_checkpoint(
        &spate_streaming::compat::encode_description(&other),
        &spate_streaming::compat::computation_settings(&cfg),
    );
    assert!(!want.is_compatible());
    assert_eq!(out.lines().collect::<Vec<_>>(), want.lines(), "{out}");
    assert!(!out.contains("compatible"), "{out}");
    let o = diff(&url, &wc_file, &["--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["compatible"], false);
    assert_eq!(v["differences"].as_array().unwrap().len(), want.len());

    // A checkpoint written from the wordcount build itself: compatible, exit 0.
    let m = commit_described(&store, 2_000, &wc.graph, wc.settings.clone());
    let o = diff(&url, &wc_file, &[]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert_eq!(out, "compatible\n");
    let o = diff(&url, &wc_file, &["--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["compatible"].as_bool(), v["checkpoint"].as_str()),
        (Some(true), Some(m.key.to_string().as_str()))
    );

    // The same job with another batch interval, and another job: incompatible, named.
    let slow_file = dir.path().join("slow.json");
    describe(
        &["wordcount", "--socket", "127.0.0.1:1", "--batch", "2s"],
        &slow_file,
    );
    let o = diff(&url, &slow_file, &[]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.to_lowercase().contains("interval"), "{out}");
    let clicks_file = dir.path().join("clicks.json");
    describe(
        &[
            "clicks",
            "--dir",
            "/nonexistent-spate-input",
            "--window",
            "20s",
        ],
        &clicks_file,
    );
    assert!(!std::path::Path::new("/nonexistent-spate-input").exists());
    let o = diff(&url, &clicks_file, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o).0);
    assert!(text(&o).0.lines().count() >= 2, "{}", text(&o).0);

    // Bad --graph files and a location without a checkpoint: exit 2, one line naming the problem.
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, b"\x00\xffnot json").unwrap();
    let wrong_shape = dir.path().join("shape.json");
    std::fs::write(&wrong_shape, br#"{"graph": 1}"#).unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let nowhere = std::path::PathBuf::from("/nonexistent/f.json");
    for (location, graph, needle) in [
        (url.as_str(), &garbage, "not a build description"),
        (url.as_str(), &wrong_shape, "not a build description"),
        (url.as_str(), &nowhere, "cannot read"),
        (empty.to_str().unwrap(), &wc_file, "no checkpoint"),
    ] {
        let args = diff_args(location, graph);
        let o = spate(&args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("spate checkpoint diff") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn reports_are_listed_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    // No reports yet.
    let o = spate(&["checkpoint", "reports", &url]);
    assert!(o.status.success());
    assert_eq!(text(&o).0, "(no restart reports)\n");
    let o = spate(&["checkpoint", "reports", &url, "--latest"]);
    assert_eq!(o.status.code(), Some(1));

    let store = CheckpointStore::open(&url, StoreOptions::default()).unwrap();
    let g = spate_types::Generation(3);
    let (old, new) = spate_tests::current_thread_rt().block_on(async {
        let old = store
            .put_restart_report(1_000, g, br#"{"outcome":"fresh start"}"#.to_vec().into())
            .await
            .unwrap();
        let new = store
            .put_restart_report(
                2_000,
                g,
                br#"{"outcome":"restored","checkpoint":"x"}"#.to_vec().into(),
            )
            .await
            .unwrap();
        (old, new)
    });
    let out = spate_ok(&["checkpoint", "reports", &url]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&new) && lines[0].contains("time 2000 ms"),
        "{out}"
    );
    assert!(lines[1].starts_with(&old), "{out}");
    let o = spate(&["checkpoint", "reports", &url, "--json"]);
    let first: serde_json::Value =
        serde_json::from_str(text(&o).0.lines().next().unwrap()).unwrap();
    assert_eq!(
        (first["time_ms"].as_u64(), first["generation"].as_u64()),
        (Some(2_000), Some(3))
    );
    let o = spate(&["checkpoint", "reports", &url, "--latest"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.starts_with(&format!("report {new}\n")), "{out}");
    assert!(out.contains(r#""outcome": "restored""#), "{out}");
    let o = spate(&["checkpoint", "reports", &url, "--latest", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["outcome"], "restored");
    // Reports are neither checkpoints nor garbage for ls/verify.
    let o = spate(&["checkpoint", "verify", &url]);
    let (out, _) = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("unknown object"), "{out}");
    assert!(out.contains("2 restart report(s)"), "{out}");
}
