//! `socket_text_stream` and `text_file_stream` through the real engine (receiver supervisor, block
//! generator, job generator): a real TCP server on 127.0.0.1 with a disconnect, a real directory
//! with files moved in atomically, word counts checked against an independent count.

use spate_sources::socket::{SocketConfig, SocketTextReceiver};
use spate_streaming::testing::{context_lock, test_config};
use spate_streaming::{BatchInfo, StreamingContext, StreamingListener};
use spate_types::DurationMs;
use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Counts = Arc<Mutex<HashMap<String, u64>>>;

fn word_count_into(lines: &spate_streaming::DStream<String>) -> Counts {
    let counts: Counts = Arc::new(Mutex::new(HashMap::new()));
    let sink = Arc::clone(&counts);
    lines
        .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .unwrap()
        .map(|w| (w, 1u64))
        .unwrap()
        .reduce_by_key(|a, b| a + b)
        .unwrap()
        .foreach_batch(move |_t, batch| {
            let mut m = sink.lock().unwrap();
            for (w, c) in batch.iter() {
                *m.entry(w.clone()).or_insert(0) += c;
            }
        })
        .unwrap();
    counts
}

fn expected(text: &str) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for w in text.split_whitespace() {
        *m.entry(w.to_owned()).or_insert(0) += 1;
    }
    m
}

#[derive(Default)]
struct RecordCounter(AtomicU64);
impl StreamingListener for RecordCounter {
    fn on_batch_completed(&self, info: &BatchInfo) {
        self.0.fetch_add(info.num_records, Ordering::Relaxed);
    }
}

fn wait_until(timeout: Duration, f: impl Fn() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn socket_text_stream_word_count_across_a_reconnect() {
    let _g = context_lock();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let part1 = "to be or not to be\r\nthat is the question\n";
    let part2 = "whether tis nobler in the mind\nto suffer the slings and arrows";
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(part1.as_bytes()).unwrap();
        drop(s); // disconnect: the receiver restarts and reconnects
        let (mut s, _) = l.accept().unwrap();
        s.write_all(part2.as_bytes()).unwrap();
        drop(s);
    });
    let mut cfg = test_config(DurationMs::from_millis(200));
    cfg.block_interval = DurationMs::from_millis(50);
    cfg.receiver_restart_delay = DurationMs::from_millis(50);
    let ctx = StreamingContext::new(cfg).unwrap();
    let rx = SocketTextReceiver::with_config(&addr, SocketConfig::default());
    let stats = rx.stats();
    let lines = ctx.receiver_stream(rx).unwrap();
    let counts = word_count_into(&lines);
    let records = Arc::new(RecordCounter::default());
    ctx.add_listener(Arc::clone(&records) as Arc<dyn StreamingListener>);
    ctx.start().unwrap();
    server.join().unwrap();
    let want = expected(&format!("{part1}\n{part2}"));
    let total: u64 = want.values().sum();
    assert!(wait_until(Duration::from_secs(20), || {
        counts.lock().unwrap().values().sum::<u64>() == total
    }));
    ctx.stop(true).unwrap();
    assert_eq!(*counts.lock().unwrap(), want);
    assert_eq!(records.0.load(Ordering::Relaxed), 4);
    let s = stats.snapshot();
    assert_eq!(s.lines, 4);
    assert!(s.reconnects >= 1, "{s:?}");
}

#[test]
fn socket_text_stream_default_entry_point_receives() {
    let _g = context_lock();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        for i in 0..10_000 {
            writeln!(s, "w{} common", i % 100).unwrap();
        }
    });
    let mut cfg = test_config(DurationMs::from_millis(200));
    cfg.block_interval = DurationMs::from_millis(50);
    cfg.receiver_restart_delay = DurationMs::from_millis(100);
    let ctx = StreamingContext::new(cfg).unwrap();
    let counts = word_count_into(&ctx.socket_text_stream(&addr).unwrap());
    ctx.start().unwrap();
    server.join().unwrap();
    assert!(wait_until(Duration::from_secs(20), || {
        counts.lock().unwrap().get("common") == Some(&10_000)
    }));
    ctx.stop(true).unwrap();
    let m = counts.lock().unwrap();
    assert_eq!(m.len(), 101);
    assert_eq!(m.get("w7"), Some(&100));
}

#[test]
fn text_file_stream_word_count_of_files_moved_in() {
    let _g = context_lock();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("in");
    let staging = work.path().join("staging");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    // Present before the stream starts: ignored (new files only).
    std::fs::write(dir.join("old.txt"), "old old old\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let ctx = StreamingContext::new(test_config(DurationMs::from_millis(200))).unwrap();
    let counts = word_count_into(&ctx.text_file_stream(&dir).unwrap());
    ctx.start().unwrap();
    // File-system timestamps come from the kernel's coarse clock (a tick behind): a file written
    // within a few ms of the source's creation can carry an mtime at or before its "now" and be
    // ignored as pre-existing.
    std::thread::sleep(Duration::from_millis(100));
    let texts = [
        "alpha beta\ngamma alpha\n",
        "beta beta\r\ndelta",
        "epsilon\n\n  alpha  \n",
    ];
    for (i, t) in texts.iter().enumerate() {
        let name = format!("f{i}.txt");
        std::fs::write(staging.join(&name), t).unwrap();
        std::fs::rename(staging.join(&name), dir.join(&name)).unwrap();
        // Hidden and temporary files are never read.
        std::fs::write(dir.join(format!(".hidden{i}")), "hidden\n").unwrap();
        std::fs::write(dir.join(format!("part{i}.tmp")), "tmp\n").unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let want = expected(&texts.join("\n"));
    let total: u64 = want.values().sum();
    assert!(
        wait_until(Duration::from_secs(20), || {
            counts.lock().unwrap().values().sum::<u64>() >= total
        }),
        "{:?}",
        counts.lock().unwrap()
    );
    // A few more batches: nothing is selected twice.
    std::thread::sleep(Duration::from_millis(600));
    ctx.stop(true).unwrap();
    assert_eq!(*counts.lock().unwrap(), want);
}
