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

/// Three committed checkpoints; the newest has a bit-flipped data object.
fn populate(store: &CheckpointStore) -> Vec<spate_checkpoint::Manifest> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
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
fn cli_on_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().to_str().unwrap().to_owned();
    let store = CheckpointStore::open(&url, StoreOptions::default()).unwrap();
    let ms = populate(&store);

    let o = spate(&["checkpoint", "ls", &url]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
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
    let o = spate(&["checkpoint", "show", &url, "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
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
fn cli_on_moto() {
    let Some(srv) = spate_tests::s3::moto("cli_on_moto") else {
        return;
    };
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
