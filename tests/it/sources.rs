//! Sources on real sockets (127.0.0.1) and real directories: the socket receiver under disconnects,
//! garbage, CRLF, 10 MB lines and mid-line closes; the file source's selection rules.

use spate_sources::file::{decode_selection, FileSourceConfig, TextFileSource};
use spate_sources::lines::{InvalidUtf8Policy, LinePolicy, OverlongPolicy};
use spate_sources::socket::{SocketConfig, SocketTextReceiver};
use spate_sources::testing::Harness;
use spate_sources::{InputChange, ReplayableSource, SourceError};
use spate_types::{BatchTime, DurationMs};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(20);

fn fast_config() -> SocketConfig {
    SocketConfig {
        restart_delay: Some(Duration::from_millis(20)),
        poll_interval: Duration::from_millis(20),
        ..SocketConfig::default()
    }
}

/// A socket receiver for `addr` with `config`, started in a [`Harness`] (20 ms blocks), and its
/// stats.
fn start_socket(
    addr: &str,
    config: SocketConfig,
) -> (
    Harness<String>,
    std::sync::Arc<spate_sources::socket::SocketStats>,
) {
    let rx = SocketTextReceiver::with_config(addr, config);
    let stats = rx.stats();
    (Harness::start(rx, Duration::from_millis(20)), stats)
}

/// A server on 127.0.0.1 that serves `payloads[i]` to the i-th connection, then closes it.
fn serve(payloads: Vec<Vec<u8>>) -> (String, thread::JoinHandle<usize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = thread::spawn(move || {
        let mut n = 0;
        for p in payloads {
            let (mut s, _) = l.accept().unwrap();
            // The receiver may close early under an Error policy; ignore write errors then.
            let _ = s.write_all(&p);
            let _ = s.flush();
            drop(s);
            n += 1;
        }
        n
    });
    (addr, h)
}

#[test]
fn socket_reconnects_after_each_disconnect_and_keeps_counting() {
    let (addr, server) = serve(vec![
        b"a b\nc\n".to_vec(),
        b"d\r\ne f\r\n".to_vec(),
        b"g\npartial last".to_vec(),
    ]);
    let (h, stats) = start_socket(&addr, fast_config());
    assert!(h.sink().wait_for(WAIT, |s| s.len() >= 6));
    assert_eq!(server.join().unwrap(), 3);
    assert!(h
        .sink()
        .wait_for(WAIT, |_| stats.snapshot().disconnects >= 3));
    let sink = h.stop();
    assert_eq!(
        sink.items(),
        ["a b", "c", "d", "e f", "g", "partial last"].map(String::from)
    );
    let s = stats.snapshot();
    assert_eq!(s.lines, 6);
    assert!(s.connections >= 3, "{s:?}");
    assert!(s.reconnects >= 2, "{s:?}");
    assert!(s.disconnects >= 3, "{s:?}");
    sink.assert_restarted_with("had no more data");
}

#[test]
fn socket_refused_connection_is_retried_until_a_server_appears() {
    // Reserve a port, close it: connects are refused until the server binds it again.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (h, stats) = start_socket(&addr, fast_config());
    assert!(h
        .sink()
        .wait_for(WAIT, |_| stats.snapshot().connect_failures >= 2));
    let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (mut s, _) = l.accept().unwrap();
    s.write_all(b"hello\n").unwrap();
    assert!(h.sink().wait_for(WAIT, |s| s.len() == 1));
    drop(s);
    let sink = h.stop();
    assert_eq!(sink.items(), vec!["hello".to_string()]);
    sink.assert_restarted_with("error connecting to");
}

#[test]
fn socket_garbage_bytes_under_each_utf8_policy() {
    let payload = b"good line\n\xff\xfe\x00garbage \xc3\n\x80\x81\nend\n".to_vec();
    // Replace (default)
    let (addr, server) = serve(vec![payload.clone()]);
    let (h, stats) = start_socket(&addr, fast_config());
    assert!(h.sink().wait_for(WAIT, |s| s.len() == 4));
    server.join().unwrap();
    let sink = h.stop();
    let items = sink.items();
    assert_eq!(items[0], "good line");
    assert_eq!(items[1], "\u{fffd}\u{fffd}\u{0}garbage \u{fffd}");
    assert_eq!(items[2], "\u{fffd}\u{fffd}");
    assert_eq!(items[3], "end");
    assert_eq!(stats.snapshot().invalid_utf8, 2);

    // Skip
    let (addr, server) = serve(vec![payload.clone()]);
    let mut c = fast_config();
    c.lines.invalid_utf8 = InvalidUtf8Policy::Skip;
    let (h, stats) = start_socket(&addr, c);
    // The disconnect can be counted before the last block reaches the sink: wait for both.
    assert!(h
        .sink()
        .wait_for(WAIT, |s| stats.snapshot().disconnects >= 1 && s.len() >= 2));
    server.join().unwrap();
    let sink = h.stop();
    assert_eq!(
        sink.items(),
        vec!["good line".to_string(), "end".to_string()]
    );
    assert_eq!(stats.snapshot().invalid_utf8, 2);

    // Error: the connection is dropped at the first bad line, the error reported.
    let (addr, server) = serve(vec![payload, b"after reconnect\n".to_vec()]);
    let mut c = fast_config();
    c.lines.invalid_utf8 = InvalidUtf8Policy::Error;
    let (h, _) = start_socket(&addr, c);
    assert!(h.sink().wait_for(WAIT, |s| s.len() == 2));
    server.join().unwrap();
    let sink = h.stop();
    assert_eq!(
        sink.items(),
        vec!["good line".to_string(), "after reconnect".to_string()]
    );
    sink.assert_error_with("invalid UTF-8 at byte 10");
}

#[test]
fn socket_random_garbage_never_crashes() {
    let mut x = 0xdead_beefu32;
    let data: Vec<u8> = (0..2_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 3) as u8
        })
        .collect();
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let (addr, server) = serve(vec![data]);
    let mut c = fast_config();
    c.lines.max_line_bytes = 100;
    let (h, stats) = start_socket(&addr, c);
    assert!(h
        .sink()
        .wait_for(WAIT, |_| stats.snapshot().disconnects >= 1));
    server.join().unwrap();
    // The store thread may still be handing decoded lines to the sink: wait for it before
    // stopping (a stop fails the stores still queued, counted as lost).
    let total = newlines as u64 + 1;
    assert!(h.sink().wait_for(WAIT, |_| {
        let s = stats.snapshot();
        s.lines + s.too_long >= total
    }));
    let sink = h.stop();
    let s = stats.snapshot();
    assert_eq!(s.bytes, 2_000_000);
    // Every line is either delivered or counted as too long (replace policy keeps invalid ones).
    assert_eq!(s.lines + s.too_long, newlines as u64 + 1, "{s:?}");
    assert_eq!(sink.len() as u64, s.lines);
}

#[test]
fn socket_10mb_line_with_1mib_limit_is_skipped_and_neighbours_survive() {
    let mut payload = b"before\n".to_vec();
    payload.extend(std::iter::repeat_n(b'w', 10 << 20));
    payload.extend_from_slice(b"\nafter\n");
    let (addr, server) = serve(vec![payload]);
    let mut c = fast_config();
    c.lines.max_line_bytes = 1 << 20;
    c.read_buffer_bytes = 64 << 10;
    let (h, stats) = start_socket(&addr, c);
    assert!(h.sink().wait_for(WAIT, |s| s.len() == 2));
    server.join().unwrap();
    let sink = h.stop();
    assert_eq!(
        sink.items(),
        vec!["before".to_string(), "after".to_string()]
    );
    let s = stats.snapshot();
    assert_eq!(s.too_long, 1);
    assert_eq!(s.bytes, (10 << 20) + 14);
}

#[test]
fn socket_10mb_line_under_error_policy_drops_the_connection() {
    let mut payload = b"before\n".to_vec();
    payload.extend(std::iter::repeat_n(b'w', 10 << 20));
    payload.extend_from_slice(b"\nlost\n");
    let (addr, server) = serve(vec![payload, b"next\n".to_vec()]);
    let mut c = fast_config();
    c.lines = LinePolicy {
        max_line_bytes: 1 << 20,
        overlong: OverlongPolicy::Error,
        ..LinePolicy::default()
    };
    let (h, _) = start_socket(&addr, c);
    assert!(h.sink().wait_for(WAIT, |s| s.len() == 2));
    server.join().unwrap();
    let sink = h.stop();
    assert_eq!(sink.items(), vec!["before".to_string(), "next".to_string()]);
    sink.assert_error_with("longer than 1048576 bytes");
}

#[test]
fn socket_server_closing_mid_line_delivers_the_partial_line_once() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx_done) = mpsc::channel();
    let server = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"one\ntw").unwrap();
        thread::sleep(Duration::from_millis(100));
        s.write_all(b"o and a ha").unwrap();
        drop(s);
        // Keep the listener open so a reconnect succeeds and sees nothing new.
        let (s2, _) = l.accept().unwrap();
        rx_done.recv_timeout(WAIT).ok();
        drop(s2);
    });
    let (h, stats) = start_socket(&addr, fast_config());
    assert!(h
        .sink()
        .wait_for(WAIT, |_| stats.snapshot().connections >= 2));
    let sink = h.stop();
    tx.send(()).unwrap();
    server.join().unwrap();
    assert_eq!(
        sink.items(),
        vec!["one".to_string(), "two and a ha".to_string()]
    );
}

#[test]
fn socket_stores_in_batches_not_per_line() {
    let mut payload = Vec::new();
    for i in 0..200_000 {
        writeln!(payload, "line {i} with some words").unwrap();
    }
    let (addr, server) = serve(vec![payload]);
    let (h, _) = start_socket(&addr, fast_config());
    assert!(h.sink().wait_for(WAIT, |s| s.len() == 200_000));
    server.join().unwrap();
    let sink = h.stop();
    assert!(
        sink.store_calls() < 1000,
        "{} store calls",
        sink.store_calls()
    );
    assert_eq!(sink.items()[199_999], "line 199999 with some words");
}

#[test]
fn socket_bad_address_is_a_fatal_start_error() {
    let rx = SocketTextReceiver::new("no-port-here");
    let h = Harness::start(rx, Duration::from_millis(20));
    assert!(h.sink().wait_for(WAIT, |s| !s.errors().is_empty()));
    let sink = h.stop();
    assert!(sink.errors()[0].contains("not host:port"));
    // Also: a peer that resets the connection is survived (covered by the restart tests).
    let _ = TcpStream::connect("127.0.0.1:1");
}

// ---------------------------------------------------------------- file source

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Writes `name` atomically (temp file + rename) with mtime `mtime_ms`.
fn put(dir: &Path, name: &str, content: &[u8], mtime_ms: u64) {
    let tmp = dir.join(format!(".{name}.writing"));
    std::fs::write(&tmp, content).unwrap();
    set_mtime(&tmp, mtime_ms);
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn set_mtime(p: &Path, mtime_ms: u64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_millis(mtime_ms))
        .unwrap();
}

fn names(src_sel: &spate_sources::Selection) -> Vec<String> {
    decode_selection(src_sel)
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect()
}

fn cfg() -> FileSourceConfig {
    FileSourceConfig::new(DurationMs::from_secs(1))
}

#[test]
fn file_source_selection_rules() {
    let d = tempfile::tempdir().unwrap();
    let t0 = (now_ms() / 1000) * 1000;
    put(d.path(), "old.txt", b"old\n", t0 - 5_000);
    let mut src = TextFileSource::with_start_time(d.path(), cfg(), t0);
    put(d.path(), "a.txt", b"a1\na2\n", t0 + 500);
    put(d.path(), ".hidden", b"h\n", t0 + 500);
    put(d.path(), "_SUCCESS", b"", t0 + 500);
    put(d.path(), "part.tmp", b"t\n", t0 + 500);
    put(d.path(), "x._COPYING_", b"c\n", t0 + 500);
    put(d.path(), "future.txt", b"f\n", t0 + 1_500);
    std::fs::create_dir(d.path().join("subdir")).unwrap();

    let s1 = src.select(BatchTime::from_millis(t0 + 1_000)).unwrap();
    assert_eq!(names(&s1), vec!["a.txt"]);
    assert_eq!(s1.summary, "1 files, 6 bytes");
    assert_eq!(src.read(&s1).unwrap(), vec!["a1", "a2"]);

    // The future file is taken by the batch whose time reaches its mtime; a.txt is not re-selected.
    let s2 = src.select(BatchTime::from_millis(t0 + 2_000)).unwrap();
    assert_eq!(names(&s2), vec!["future.txt"]);
    let s3 = src.select(BatchTime::from_millis(t0 + 3_000)).unwrap();
    assert!(names(&s3).is_empty());

    // A file moved in late with an mtime older than the remember window is ignored forever.
    put(d.path(), "late.txt", b"late\n", t0 + 2_500);
    put(d.path(), "stale.txt", b"stale\n", t0 + 100);
    let far = t0 + 60_000 + 1_000;
    let s4 = src.select(BatchTime::from_millis(t0 + 4_000)).unwrap();
    assert_eq!(names(&s4), vec!["late.txt", "stale.txt"]);
    put(d.path(), "too-old.txt", b"x\n", t0 + 500);
    let s5 = src.select(BatchTime::from_millis(far + 1_000)).unwrap();
    assert!(names(&s5).is_empty(), "{:?}", names(&s5));
}

#[test]
fn file_source_new_files_only_false_takes_existing_files() {
    let d = tempfile::tempdir().unwrap();
    let t0 = (now_ms() / 1000) * 1000;
    put(d.path(), "existing.txt", b"e\n", t0 - 5_000);
    let mut c = cfg();
    c.new_files_only = false;
    let mut src = TextFileSource::with_start_time(d.path(), c, t0);
    let s = src.select(BatchTime::from_millis(t0 + 1_000)).unwrap();
    assert_eq!(names(&s), vec!["existing.txt"]);
}

#[test]
fn file_source_each_file_selected_exactly_once_across_many_batches() {
    let d = tempfile::tempdir().unwrap();
    let t0 = (now_ms() / 1000) * 1000;
    let mut src = TextFileSource::with_start_time(d.path(), cfg(), t0);
    let mut seen = std::collections::HashMap::new();
    for b in 1..=100u64 {
        // Each batch, two new files with mtimes inside this batch's interval.
        for k in 0..2 {
            let name = format!("f-{b}-{k}.txt");
            put(
                d.path(),
                &name,
                format!("{b} {k}\n").as_bytes(),
                t0 + (b - 1) * 1000 + 1 + k * 400,
            );
        }
        let s = src.select(BatchTime::from_millis(t0 + b * 1000)).unwrap();
        for n in names(&s) {
            assert!(seen.insert(n.clone(), b).is_none(), "{n} selected twice");
        }
    }
    assert_eq!(seen.len(), 200);
    for (n, b) in seen {
        assert!(n.starts_with(&format!("f-{b}-")), "{n} in batch {b}");
    }
}

#[test]
fn file_source_restore_from_position_does_not_reselect() {
    let d = tempfile::tempdir().unwrap();
    let t0 = (now_ms() / 1000) * 1000;
    let mut src = TextFileSource::with_start_time(d.path(), cfg(), t0);
    put(d.path(), "a.txt", b"a\n", t0 + 100);
    let s1 = src.select(BatchTime::from_millis(t0 + 1_000)).unwrap();
    let pos = src.position().unwrap();
    put(d.path(), "b.txt", b"b\n", t0 + 1_100);
    let s2 = src.select(BatchTime::from_millis(t0 + 2_000)).unwrap();
    assert_eq!(names(&s2), vec!["b.txt"]);

    // A new process: restore the position taken after batch 1 and the replayed batch 2.
    let mut fresh = TextFileSource::with_start_time(d.path(), cfg(), t0 + 50_000);
    fresh.restore(&pos, std::slice::from_ref(&s2)).unwrap();
    assert_eq!(fresh.read(&s1).unwrap(), vec!["a"]);
    put(d.path(), "c.txt", b"c\n", t0 + 2_100);
    let s3 = fresh.select(BatchTime::from_millis(t0 + 3_000)).unwrap();
    assert_eq!(names(&s3), vec!["c.txt"]);

    // Without the replayed selection, b.txt would be selected again by the next batch.
    let mut other = TextFileSource::with_start_time(d.path(), cfg(), 0);
    other.restore(&pos, &[]).unwrap();
    let s = other.select(BatchTime::from_millis(t0 + 3_000)).unwrap();
    assert_eq!(names(&s), vec!["b.txt", "c.txt"]);

    // Garbage positions and selections are typed errors.
    assert!(matches!(
        other.restore(b"\xff\xff\xff garbage", &[]),
        Err(SourceError::Invalid { .. })
    ));
    let mut bad = s3.clone();
    bad.data = vec![7, 7, 7];
    assert!(matches!(other.read(&bad), Err(SourceError::Invalid { .. })));
}

#[test]
fn file_source_detects_changed_and_deleted_files() {
    let d = tempfile::tempdir().unwrap();
    let t0 = (now_ms() / 1000) * 1000;
    let mut src = TextFileSource::with_start_time(d.path(), cfg(), t0);
    put(d.path(), "a.txt", b"a\n", t0 + 100);
    put(d.path(), "b.txt", b"b\n", t0 + 100);
    put(d.path(), "c.txt", b"c\n", t0 + 100);
    let s = src.select(BatchTime::from_millis(t0 + 1_000)).unwrap();
    assert_eq!(src.read(&s).unwrap(), vec!["a", "b", "c"]);

    // Appended (size changes).
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path().join("b.txt"))
        .unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    match src.read(&s) {
        Err(SourceError::Changed { path, change }) => {
            assert!(path.ends_with("b.txt"), "{path}");
            assert!(
                matches!(change, InputChange::Size { selected: 2, .. }),
                "{change:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Same size, rewritten (mtime changes).
    put(d.path(), "b.txt", b"x\n", t0 + 200);
    assert!(matches!(src.read(&s), Err(SourceError::Changed { .. })));
    put(d.path(), "b.txt", b"b\n", t0 + 100);
    assert!(src.read(&s).is_ok());
    std::fs::remove_file(d.path().join("c.txt")).unwrap();
    match src.read(&s) {
        Err(SourceError::Changed { change, .. }) => assert_eq!(change, InputChange::Deleted),
        other => panic!("{other:?}"),
    }
}

#[test]
fn file_source_missing_directory_is_an_io_error_with_the_path() {
    let d = tempfile::tempdir().unwrap();
    let gone = d.path().join("nope");
    let mut src = TextFileSource::with_start_time(&gone, cfg(), 0);
    match src.select(BatchTime::from_millis(1_000)) {
        Err(SourceError::Io { op, path, .. }) => {
            assert_eq!(op, "list");
            assert!(path.ends_with("nope"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn file_source_invalid_utf8_policies() {
    let d = tempfile::tempdir().unwrap();
    let t0 = (now_ms() / 1000) * 1000;
    put(d.path(), "g.txt", b"ok\nbad\xff\n", t0 + 100);
    let mut c = cfg();
    c.lines.invalid_utf8 = InvalidUtf8Policy::Error;
    let mut src = TextFileSource::with_start_time(d.path(), c, t0);
    let s = src.select(BatchTime::from_millis(t0 + 1_000)).unwrap();
    match src.read(&s) {
        Err(SourceError::InvalidData { offset, .. }) => assert_eq!(offset, 6),
        other => panic!("{other:?}"),
    }
    let mut src = TextFileSource::with_start_time(d.path(), cfg(), t0);
    let s = src.select(BatchTime::from_millis(t0 + 1_000)).unwrap();
    let (lines, counts) = src.read_with_counts(&s).unwrap();
    assert_eq!(lines, vec!["ok", "bad\u{fffd}"]);
    assert_eq!(counts.invalid_utf8, 1);
}
