//! Child process of the WAL SIGKILL test (`tests/it/wal.rs`): appends records from several
//! threads with `SyncPolicy::EveryAppend` into the WAL in `argv[1]` and prints `<lsn> <payload>`
//! on stdout after each append returned (so every printed record was reported durable), until it
//! is killed.

use spate_io::StdFs;
use spate_wal::{SyncPolicy, Wal, WalOptions};
use std::io::Write;
use std::sync::Arc;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: wal-crash-child <dir> <tag>");
    let tag = args.next().unwrap_or_else(|| "0".into());
    let opts = WalOptions {
        segment_bytes: 64 << 10,
        sync_policy: SyncPolicy::EveryAppend,
        ..WalOptions::default()
    };
    let (wal, _report) = Wal::open(Arc::new(StdFs), &dir, opts).expect("open wal");
    let wal = Arc::new(wal);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let wal = Arc::clone(&wal);
            let tag = tag.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let payload = format!("{tag}-{t}-{i}-{}", "x".repeat((i % 97) as usize));
                    let lsn = wal.append(1, payload.as_bytes()).expect("append");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{} {payload}", lsn.0).expect("stdout");
                    out.flush().expect("flush");
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}
