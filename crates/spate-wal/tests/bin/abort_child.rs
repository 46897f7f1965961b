//! Child process of `return_abort_aborts_the_process` (`tests/failpoints.rs`): opens the WAL in
//! `argv[1]`, appends and syncs three records, arms `wal::sync::after=return(abort)`, appends a
//! fourth and syncs: the fail point aborts the process (SIGABRT) after that sync. Exits 3 if it
//! ever gets past the fail point. Built only with `--features failpoints`.

#[path = "../common/opts.rs"]
mod opts;

use opts::opts;
use spate_io::StdFs;
use spate_wal::Wal;
use std::sync::Arc;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: wal-failpoint-abort-child <dir>");
    let (wal, _) = Wal::open(Arc::new(StdFs), &dir, opts()).expect("open wal");
    for i in 0..3 {
        wal.append(1, format!("record-{i:04}").as_bytes())
            .expect("append");
    }
    wal.sync().expect("sync");
    fail::cfg("wal::sync::after", "return(abort)").expect("arming wal::sync::after");
    wal.append(1, b"record-0003").expect("append");
    let r = wal.sync();
    eprintln!("the fail point did not abort the process: sync returned {r:?}");
    std::process::exit(3);
}
