//! Reliable socket ingest end to end: the real `spate feed --ack` child process feeding spate's
//! socket receiver in ack mode (`spate-ack/1`) over 127.0.0.1, with the receiver side "crashing"
//! and restarting in-process. Each receiver "process" is a fresh receiver + [`CollectingSink`]
//! under the testing [`Harness`]; the next one starts with the durable position the engine would
//! recover (the last position stored by the previous one). The feeder's own accounting must show a
//! complete feed with no lost acknowledged line, and the sinks must hold every corpus line exactly
//! once, in order.

use spate_sources::socket::{SocketConfig, SocketTextReceiver};
use spate_sources::testing::{CollectingSink, Harness};
use spate_sources::ReceiverSink;
use spate_tests::feed::{feed_file, finish, write_corpus};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// One receiver "process": a fresh ack-mode receiver storing into `sink`.
fn receiver(addr: &str, sink: &Arc<CollectingSink<String>>) -> Harness<String> {
    let config = SocketConfig {
        ack: true,
        restart_delay: Some(Duration::from_millis(20)),
        poll_interval: Duration::from_millis(20),
        // Small reads: many store calls, so the scripted faults land mid-feed.
        read_buffer_bytes: 4096,
        ..SocketConfig::default()
    };
    let rx = SocketTextReceiver::with_config(addr, config);
    Harness::start_with_sink(rx, Arc::clone(sink), Duration::from_millis(20))
}

/// A sink for the next "process", recovering `previous`'s durable position.
fn recovered(previous: &CollectingSink<String>) -> Arc<CollectingSink<String>> {
    let sink = Arc::new(CollectingSink::default());
    sink.set_durable_position(previous.last_position());
    sink
}

#[test]
fn feed_ack_through_a_failed_store_a_crash_and_a_stop_delivers_every_line_exactly_once() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path(), N);
    // 20 000 lines/s: the whole feed takes about a second, so the faults below land mid-feed. The
    // duration bounds the test if the receiver never completes the feed (complete = false then).
    let (child, addr) = feed_file(&corpus, &["--ack", "--rate", "20000", "--duration", "60s"]);

    // Process 1: one failed store at line 3000 (the connection restarts, the feeder re-sends),
    // then a kill -9 right after the store reaching line 8000 became durable (its ACK is lost).
    let sink1 = Arc::new(CollectingSink::default());
    sink1.fail_store_at(3_000);
    sink1.crash_after_store_at(8_000);
    let h1 = receiver(&addr, &sink1);
    assert!(
        sink1.wait_for(WAIT, |s| s.is_stopped()),
        "process 1 never reached line 8000"
    );
    assert_eq!(sink1.failed_stores(), 1);
    drop(h1);
    let durable1 = sink1.last_position().unwrap();
    assert!(durable1 >= 8_000, "{durable1}");

    // Process 2: recovers durable1, then is stopped while the feed is still running (in-flight
    // stores are refused and not acknowledged).
    let sink2 = recovered(&sink1);
    let h2 = receiver(&addr, &sink2);
    assert!(
        sink2.wait_for(WAIT, |s| s.len() >= 2_000),
        "process 2 stored nothing"
    );
    drop(h2);
    let durable2 = sink2.last_position().unwrap();
    assert!(durable2 > durable1);

    // Process 3: recovers durable2 and completes the feed.
    let sink3 = recovered(&sink2);
    let h3 = receiver(&addr, &sink3);
    let stats = finish(child);
    drop(h3);

    assert_eq!(stats["complete"], true, "{stats}");
    assert_eq!(stats["acked"], N, "{stats}");
    assert_eq!(stats["sent"], N, "{stats}");
    assert_eq!(stats["resume_below_ack"], 0, "{stats}");
    assert_eq!(stats["ack_regressions"], 0, "{stats}");
    // The first connection, the one after the failed store, one per later process.
    assert!(stats["connections"].as_u64().unwrap() >= 4, "{stats}");
    // The lines of the failed store were sent again.
    assert!(stats["resent"].as_u64().unwrap() >= 1, "{stats}");

    // Exactly once, in order, across the three processes: nothing durable was sent again (it would
    // have been stored twice) and nothing acknowledged was lost.
    let mut all = sink1.items();
    all.extend(sink2.items());
    all.extend(sink3.items());
    assert_eq!(all.len() as u64, N);
    for (i, l) in all.iter().enumerate() {
        assert_eq!(*l, format!("line-{i}"));
    }
    for s in [&sink1, &sink2, &sink3] {
        let p = s.positions();
        assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
    }
    assert_eq!(sink3.last_position(), Some(N));
}

#[test]
fn feed_ack_to_a_fresh_receiver_completes_with_the_receiver_counters_matching() {
    const N: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let corpus = write_corpus(dir.path(), N);
    let (child, addr) = feed_file(&corpus, &["--ack", "--duration", "30s"]);
    let sink = Arc::new(CollectingSink::default());
    let rx = SocketTextReceiver::with_config(
        &addr,
        SocketConfig {
            ack: true,
            restart_delay: Some(Duration::from_millis(20)),
            ..SocketConfig::default()
        },
    );
    let counters = rx.stats();
    let h = Harness::start_with_sink(rx, Arc::clone(&sink), Duration::from_millis(20));
    let stats = finish(child);
    drop(h);
    assert_eq!(stats["complete"], true, "{stats}");
    assert_eq!(stats["acked"], N, "{stats}");
    assert_eq!(stats["resent"], 0, "{stats}");
    assert_eq!(stats["connections"], 1, "{stats}");
    let c = counters.snapshot();
    assert_eq!((c.acked, c.resume, c.lines), (N, 0, N), "{c:?}");
    assert_eq!(sink.len() as u64, N);
}
