//! The socket receiver's acknowledged mode (`spate-ack/1`) against a scripted feeder on real TCP
//! (127.0.0.1): the test thread plays the feeder (checks `HELLO`, sends numbered lines, reads
//! `ACK`s) while the receiver runs under the testing [`Harness`] with a [`CollectingSink`].

use spate_sources::lines::{InvalidUtf8Policy, LinePolicy, OverlongPolicy};
use spate_sources::socket::{SocketConfig, SocketTextReceiver};
use spate_sources::testing::{CollectingSink, Harness};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn ack_config() -> SocketConfig {
    SocketConfig {
        ack: true,
        restart_delay: Some(Duration::from_millis(20)),
        poll_interval: Duration::from_millis(20),
        ..SocketConfig::default()
    }
}

fn line(i: u64) -> String {
    format!("line-{i}")
}

fn lines(from: u64, to: u64) -> Vec<String> {
    (from..to).map(line).collect()
}

fn listen() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    l.set_nonblocking(true).unwrap();
    (l, addr)
}

/// One receiver connection, seen from the feeder's side.
struct Peer {
    s: TcpStream,
    r: BufReader<TcpStream>,
}

/// Accepts the receiver's next connection (panics after [`WAIT`]).
fn accept(l: &TcpListener) -> Peer {
    let deadline = Instant::now() + WAIT;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(WAIT)).unwrap();
                let r = BufReader::new(s.try_clone().unwrap());
                return Peer { s, r };
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("no connection from the receiver: {e}"),
        }
    }
}

impl Peer {
    /// Reads one control line (without `\n`); `None` at end of stream.
    fn control(&mut self) -> Option<String> {
        let mut l = String::new();
        match self.r.read_line(&mut l) {
            Ok(0) => None,
            Ok(_) => {
                assert!(l.ends_with('\n'), "cut control line {l:?}");
                Some(l.trim_end_matches('\n').to_owned())
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading control lines: {e}"),
        }
    }

    /// Reads the `HELLO` and returns its resume position.
    fn hello(&mut self) -> u64 {
        let l = self.control().expect("connection closed before HELLO");
        l.strip_prefix("HELLO spate-ack/1 resume=")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad HELLO {l:?}"))
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Sends feed lines `from..to`.
    fn send(&mut self, from: u64, to: u64) {
        let body: String = (from..to).map(|i| format!("{}\n", line(i))).collect();
        self.send_raw(body.as_bytes());
    }

    fn parse_ack(l: &str) -> u64 {
        l.strip_prefix("ACK ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bad ACK {l:?}"))
    }

    /// Reads `ACK`s until one reaches `target`; returns them (checked strictly increasing).
    fn acks_until(&mut self, target: u64) -> Vec<u64> {
        let mut acks: Vec<u64> = Vec::new();
        while acks.last().is_none_or(|&a| a < target) {
            let l = self
                .control()
                .unwrap_or_else(|| panic!("closed before ACK {target}; got {acks:?}"));
            let a = Self::parse_ack(&l);
            assert!(
                acks.last().is_none_or(|&p| a > p),
                "ACK regressed: {acks:?} then {a}"
            );
            acks.push(a);
        }
        assert_eq!(acks.last(), Some(&target), "ACK beyond what was sent");
        acks
    }

    /// Closes the feeder's side gracefully (`FIN`, as the real feeder does) and reads the `ACK`s
    /// until the receiver closes too. (Dropping a socket with unread `ACK`s would send a reset,
    /// which may discard data the receiver has not read yet.)
    fn close(mut self) -> Vec<u64> {
        self.s.shutdown(std::net::Shutdown::Write).unwrap();
        self.acks_until_close()
    }

    /// Reads `ACK`s until the receiver closes the connection.
    fn acks_until_close(&mut self) -> Vec<u64> {
        let mut acks: Vec<u64> = Vec::new();
        while let Some(l) = self.control() {
            let a = Self::parse_ack(&l);
            assert!(
                acks.last().is_none_or(|&p| a > p),
                "ACK regressed: {acks:?} then {a}"
            );
            acks.push(a);
        }
        acks
    }
}

/// A socket receiver for `addr` with `config`, started in a [`Harness`] over `sink` (20 ms
/// blocks), and its stats.
fn start_with_stats(
    addr: &str,
    config: SocketConfig,
    sink: &Arc<CollectingSink<String>>,
) -> (Harness<String>, Arc<spate_sources::SocketStats>) {
    let rx = SocketTextReceiver::with_config(addr, config);
    let stats = rx.stats();
    let h = Harness::start_with_sink(rx, Arc::clone(sink), Duration::from_millis(20));
    (h, stats)
}

fn start(addr: &str, config: SocketConfig, sink: &Arc<CollectingSink<String>>) -> Harness<String> {
    start_with_stats(addr, config, sink).0
}

fn assert_strictly_increasing(p: &[u64]) {
    assert!(p.windows(2).all(|w| w[0] < w[1]), "positions {p:?}");
}

#[test]
fn hello_then_every_line_stored_with_its_position_and_acknowledged() {
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    let (h, stats) = start_with_stats(&addr, ack_config(), &sink);
    let mut p = accept(&l);
    assert_eq!(p.hello(), 0);
    p.send(0, 5000);
    let acks = p.acks_until(5000);
    assert_eq!(sink.items(), lines(0, 5000));
    let positions = sink.positions();
    assert_strictly_increasing(&positions);
    assert_eq!(positions.last(), Some(&5000));
    // Every ACK is a position that was stored (acknowledged only after its store returned Ok).
    assert!(
        acks.iter().all(|a| positions.contains(a)),
        "{acks:?} {positions:?}"
    );
    // The counter is updated just after the ACK is written: give it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut snap = stats.snapshot();
    while snap.acked < 5000 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        snap = stats.snapshot();
    }
    assert_eq!((snap.acked, snap.resume, snap.lines), (5000, 0, 5000));
    drop(h);
    assert!(sink.errors().is_empty(), "{:?}", sink.errors());
}

#[test]
fn resumes_from_the_durable_position_then_after_what_this_process_holds() {
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    sink.set_durable_position(Some(500));
    let h = start(&addr, ack_config(), &sink);
    let mut p = accept(&l);
    assert_eq!(p.hello(), 500, "resume from the recovered position");
    p.send(500, 700);
    p.acks_until(700);
    // One more whole line, then a cut one, then the connection drops without waiting for an ACK.
    p.send_raw(b"line-700\nline-70");
    p.close();
    // Everything received before the drop was stored before the reconnect; the cut line was not.
    let mut p = accept(&l);
    assert_eq!(p.hello(), 701);
    p.send(701, 800);
    p.acks_until(800);
    assert_eq!(sink.items(), lines(500, 800));
    assert_strictly_increasing(&sink.positions());
    drop(h);
}

#[test]
fn a_failed_store_is_not_acknowledged_and_its_lines_come_back_once() {
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    let (h, stats) = start_with_stats(&addr, ack_config(), &sink);
    let mut p = accept(&l);
    assert_eq!(p.hello(), 0);
    p.send(0, 100);
    p.acks_until(100);
    sink.fail_store_at(101);
    p.send(100, 200);
    // The receiver acknowledges nothing more and closes the connection.
    let after = p.acks_until_close();
    assert!(
        after.is_empty(),
        "acknowledged past a failed store: {after:?}"
    );
    assert_eq!(sink.failed_stores(), 1);
    let mut p = accept(&l);
    assert_eq!(p.hello(), 100, "resume at the last stored position");
    p.send(100, 200);
    p.acks_until(200);
    p.close();
    assert_eq!(sink.items(), lines(0, 200), "no duplicate, no gap");
    assert!(stats.snapshot().lost_lines >= 1);
    sink.assert_restarted_with("failed");
    drop(h);
}

#[test]
fn lines_dropped_by_the_policies_still_count_in_the_numbering() {
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    let config = SocketConfig {
        lines: LinePolicy {
            max_line_bytes: 8,
            invalid_utf8: InvalidUtf8Policy::Skip,
            overlong: OverlongPolicy::Skip,
        },
        // Smaller than the overlong line: it is discarded as it arrives.
        read_buffer_bytes: 4,
        ..ack_config()
    };
    let (h, stats) = start_with_stats(&addr, config, &sink);
    let mut p = accept(&l);
    assert_eq!(p.hello(), 0);
    // 0: "a", 1: invalid UTF-8 (skipped), 2: too long (skipped), 3: "b" (CRLF).
    p.send_raw(b"a\n\xff\xfe\nthis-is-far-too-long\nb\r\n");
    p.acks_until(4);
    assert_eq!(sink.items(), vec!["a", "b"]);
    // Only dropped lines: the position still advances and is acknowledged.
    p.send_raw(b"\xff\n0123456789abcdef\n");
    p.acks_until(6);
    p.close();
    let mut p = accept(&l);
    assert_eq!(p.hello(), 6);
    p.send_raw(b"c\n");
    p.acks_until(7);
    assert_eq!(sink.items(), vec!["a", "b", "c"]);
    let snap = stats.snapshot();
    assert_eq!((snap.invalid_utf8, snap.too_long), (2, 2));
    drop(h);
}

#[test]
fn an_error_policy_stops_at_the_faulty_line_and_resumes_there() {
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    let config = SocketConfig {
        lines: LinePolicy {
            invalid_utf8: InvalidUtf8Policy::Error,
            ..LinePolicy::default()
        },
        ..ack_config()
    };
    let h = start(&addr, config, &sink);
    let mut p = accept(&l);
    assert_eq!(p.hello(), 0);
    p.send_raw(b"a\nb\n\xffc\nd\n");
    // Lines before the faulty one are stored and acknowledged, then the receiver drops the
    // connection; the faulty line is not counted.
    assert_eq!(p.acks_until_close().last(), Some(&2));
    let mut p = accept(&l);
    assert_eq!(p.hello(), 2);
    // The same faulty line again: the same error, the same resume point (no silent skip).
    p.send_raw(b"\xffc\nd\n");
    assert_eq!(p.acks_until_close(), Vec::<u64>::new());
    let mut p = accept(&l);
    assert_eq!(p.hello(), 2);
    p.send_raw(b"c\nd\n");
    p.acks_until(4);
    assert_eq!(sink.items(), vec!["a", "b", "c", "d"]);
    assert!(sink.errors().len() >= 2, "{:?}", sink.errors());
    drop(h);
}

#[test]
fn a_crash_after_a_durable_store_resumes_past_the_unacknowledged_lines() {
    let (l, addr) = listen();
    // "Process" 1 dies right after the store reaching position 300 became durable, before its ACK.
    let sink1 = Arc::new(CollectingSink::default());
    sink1.crash_after_store_at(300);
    let h1 = start(&addr, ack_config(), &sink1);
    let mut p = accept(&l);
    assert_eq!(p.hello(), 0);
    p.send(0, 100);
    p.acks_until(100);
    p.send(100, 400);
    let acks = p.acks_until_close();
    let durable = sink1.last_position().unwrap();
    assert!(durable >= 300, "{durable}");
    assert!(
        acks.iter().all(|&a| a < durable),
        "the crash store was acknowledged: {acks:?}, durable {durable}"
    );
    drop(h1);
    // "Process" 2 recovers `durable` from its WAL: nothing durable is sent again.
    let sink2 = Arc::new(CollectingSink::default());
    sink2.set_durable_position(Some(durable));
    let h2 = start(&addr, ack_config(), &sink2);
    let mut p = accept(&l);
    assert_eq!(p.hello(), durable);
    p.send(durable, 600);
    p.acks_until(600);
    p.close();
    let mut all = sink1.items();
    all.extend(sink2.items());
    assert_eq!(
        all,
        lines(0, 600),
        "every line exactly once across the crash"
    );
    drop(h2);
}

#[test]
fn random_cuts_and_reconnects_never_duplicate_or_skip() {
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    let config = SocketConfig {
        read_buffer_bytes: 64,
        ..ack_config()
    };
    let h = start(&addr, config, &sink);
    let mut x = 0x2545_f491u32;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        u64::from(x)
    };
    let total = 3000u64;
    let mut whole = 0u64; // whole lines the receiver got, over all connections
    for round in 0..40 {
        let mut p = accept(&l);
        assert_eq!(p.hello(), whole, "round {round}");
        if whole == total {
            break;
        }
        let n = (next() % 200).min(total - whole);
        p.send(whole, whole + n);
        whole += n;
        if whole < total && next() % 2 == 0 {
            // Cut the next line anywhere.
            let l = format!("{}\n", line(whole));
            let cut = (next() as usize) % l.len();
            p.send_raw(&l.as_bytes()[..cut]);
        }
        if next() % 3 == 0 && whole > 0 {
            p.acks_until(whole);
        }
        p.close();
    }
    assert_eq!(whole, total, "did not finish in 40 connections");
    assert_eq!(sink.items(), lines(0, total));
    assert_strictly_increasing(&sink.positions());
    drop(h);
}

#[test]
fn a_peer_that_does_not_speak_the_protocol_still_gets_its_lines_stored() {
    // An `nc -lk`-like server: writes lines and closes, never reads what the receiver sends.
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    let h = start(&addr, ack_config(), &sink);
    let mut p = accept(&l);
    p.send_raw(b"x y\nz\nno newline");
    p.s.shutdown(std::net::Shutdown::Write).unwrap();
    // What such a peer sees (`nc` prints it): the HELLO, then ACKs.
    let mut seen = String::new();
    p.r.read_to_string(&mut seen).unwrap();
    assert!(seen.starts_with("HELLO spate-ack/1 resume=0\n"), "{seen:?}");
    assert!(seen.ends_with("ACK 2\n"), "{seen:?}");
    let mut p = accept(&l);
    assert_eq!(p.hello(), 2);
    p.close();
    drop(h);
    // In ack mode an unterminated tail is never a record.
    assert_eq!(sink.items(), vec!["x y", "z"]);
}

#[test]
fn plain_mode_writes_nothing_to_the_peer() {
    let (l, addr) = listen();
    let sink = Arc::new(CollectingSink::default());
    let config = SocketConfig {
        ack: false,
        ..ack_config()
    };
    let h = start(&addr, config, &sink);
    let mut p = accept(&l);
    p.send_raw(b"a\nb\n");
    assert!(sink.wait_for(WAIT, |s| s.len() >= 2));
    p.s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    match p.r.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "plain mode wrote {:?}", &buf[..n]),
        Err(e) => assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        ),
    }
    assert!(sink.positions().is_empty(), "plain mode uses store_many");
    drop(h);
}
