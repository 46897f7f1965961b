//! `spate wordcount` refuses insane intervals and a remote checkpoint without a local WAL dir, with
//! one line naming the flag, the value and the bounds (issue 14, item 7).

use spate_tests::spate_bin;
use std::process::Command;

fn refused(args: &[&str]) -> String {
    let out = Command::new(spate_bin())
        .args(args)
        .output()
        .expect("spawn spate");
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn out_of_bounds_and_garbage_intervals_are_refused_naming_flag_value_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let e = refused(&["wordcount", "--dir", d, "--batch", "1000d"]);
    assert!(
        e.contains("--batch = 86400000000 ms is outside its bounds [1 ms, 3600000 ms]"),
        "{e}"
    );
    let e = refused(&["wordcount", "--dir", d, "--batch", "0"]);
    assert!(e.contains("outside its bounds [1 ms"), "{e}");
    let e = refused(&["wordcount", "--dir", d, "--idle", "30d"]);
    assert!(e.contains("outside its bounds [1 ms, 86400000 ms]"), "{e}");
    for garbage in ["soon", "1e9", "99999999999999999999999"] {
        let e = refused(&["wordcount", "--dir", d, "--batch", garbage]);
        assert!(e.contains("--batch"), "{garbage}: {e}");
    }
}

#[test]
fn a_remote_checkpoint_with_a_receiver_needs_a_local_wal_dir() {
    let e = refused(&[
        "wordcount",
        "--socket",
        "127.0.0.1:9",
        "--checkpoint",
        "s3://bucket/prefix",
    ]);
    assert!(
        e.contains("a remote checkpoint needs --wal-dir DIR on local disk when receivers are used"),
        "{e}"
    );
}
