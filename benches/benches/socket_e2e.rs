//! End-to-end throughput through a real socket on 127.0.0.1 (not a timed test; run by hand):
//!
//! ```text
//! cargo bench -p spate-benches --bench socket_e2e -- receiver
//! cargo bench -p spate-benches --bench socket_e2e -- pipeline [--naive] [--steps 2000000:8,5000000:8] [--batch-ms 1000]
//! ```
//!
//! * `receiver`: an unpaced feeder sends the Spark harness's corpus (10-word lines, byte-identical
//!   to `common.generate_lines(500000, 1)`) as fast as the socket takes it; the
//!   `SocketTextReceiver` stores into a counting sink. Prints lines/s and MB/s — the ceiling of the
//!   source alone.
//! * `pipeline`: a paced feeder (10 ms ticks, like the harness's `feeder.py`) and the stateless word
//!   count through the engine (`socket_text_stream → flat_map(split_whitespace) → map((w,1)) →
//!   reduce_by_key(+)` and a full-pass output per batch), batch 1 s. For each rate step it reports
//!   the p90 processing time and the last scheduling delay, and calls the rate **sustained** with the
//!   harness's rule: after 3 s of settling, p90 processing time < batch interval, scheduling delay
//!   of the step's last batch < one interval, and ≥ 95 % of the offered lines received.

#[path = "../../crates/spate-cli/src/jobs/words.rs"]
#[allow(dead_code, unreachable_pub)]
mod words;

use spate_sources::socket::{SocketConfig, SocketTextReceiver};
use spate_sources::{Receiver, ReceiverContext, ReceiverSink, StoreError};
use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Line start offsets of `corpus`, so the paced feeder can send whole lines.
fn line_starts(corpus: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(
        corpus
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1),
    );
    v.pop();
    v
}

struct CountingSink {
    lines: AtomicU64,
    stopped: AtomicBool,
}

impl ReceiverSink<String> for CountingSink {
    fn store_many(&self, items: Vec<String>) -> Result<(), StoreError<String>> {
        self.lines.fetch_add(items.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn restart(&self, _reason: &str, _delay: Option<Duration>) {}
    fn report_error(&self, message: &str) {
        eprintln!("receiver error: {message}");
    }
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

fn bench_receiver() {
    let data = spate_benches::corpus_bytes(500_000, 1);
    let lines_per_pass = 500_000u64;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let secs = 5.0;
    let feeder = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let t = Instant::now();
        let mut passes = 0u64;
        while t.elapsed().as_secs_f64() < secs {
            if s.write_all(&data).is_err() {
                break;
            }
            passes += 1;
        }
        passes
    });
    let sink = Arc::new(CountingSink {
        lines: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
    });
    let mut rx = SocketTextReceiver::with_config(&addr, SocketConfig::default());
    let stats = rx.stats();
    let t = Instant::now();
    rx.on_start(ReceiverContext::new(
        Arc::clone(&sink) as Arc<dyn ReceiverSink<String>>
    ))
    .unwrap();
    let passes = feeder.join().unwrap();
    let expect = passes * lines_per_pass;
    while sink.lines.load(Ordering::Relaxed) < expect && t.elapsed().as_secs_f64() < secs + 30.0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let el = t.elapsed().as_secs_f64();
    sink.stopped.store(true, Ordering::Relaxed);
    rx.on_stop();
    let s = stats.snapshot();
    println!(
        "receiver: {} lines, {:.1} MB in {:.2} s = {:.2} M lines/s, {:.0} MB/s (1 receiver thread)",
        s.lines,
        s.bytes as f64 / 1e6,
        el,
        s.lines as f64 / el / 1e6,
        s.bytes as f64 / el / 1e6
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args
        .iter()
        .find(|a| matches!(a.as_str(), "receiver" | "pipeline"))
        .map_or("receiver", String::as_str);
    match mode {
        "pipeline" => pipeline::run(&args, &spate_benches::corpus_bytes(500_000, 1)),
        _ => bench_receiver(),
    }
}

mod pipeline {
    use super::*;
    use spate_streaming::{
        BatchInfo, DurationMs, StreamingConfig, StreamingContext, StreamingListener,
    };
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    #[derive(Default)]
    struct Batches(Mutex<Vec<(u64, u64, u64, u64)>>); // (time, records, processing, scheduling)
    impl StreamingListener for Batches {
        fn on_batch_completed(&self, i: &BatchInfo) {
            self.0.lock().unwrap().push((
                i.batch_time.as_millis(),
                i.num_records,
                i.processing_delay_ms().unwrap_or(0),
                i.scheduling_delay_ms().unwrap_or(0),
            ));
        }
    }

    fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(String::as_str)
    }

    pub(super) fn run(args: &[String], corpus: &[u8]) {
        let steps: Vec<(u64, u64)> = arg(args, "--steps")
            .unwrap_or("2000000:8,5000000:8,8000000:8,11000000:8")
            .split(',')
            .map(|s| {
                let (r, d) = s.split_once(':').expect("RATE:SECONDS");
                (r.parse().unwrap(), d.parse().unwrap())
            })
            .collect();
        let batch_ms: u64 = arg(args, "--batch-ms").map_or(1000, |v| v.parse().unwrap());
        let starts = Arc::new(line_starts(corpus));
        let corpus = Arc::new(corpus.to_vec());

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut cfg = StreamingConfig::with_batch_interval(DurationMs::from_millis(batch_ms));
        cfg.app_name = "socket_e2e".into();
        let ctx = StreamingContext::new(cfg).unwrap();
        let folded = Arc::new(Mutex::new((0u64, 0u64)));
        let f2 = Arc::clone(&folded);
        let lines = ctx.socket_text_stream(&addr).unwrap();
        let naive = args.iter().any(|a| a == "--naive");
        let pairs = if naive {
            // The Spark harness's shape: flatMap(split) -> map((w, 1)) -> reduceByKey(+).
            lines
                .flat_map(|l: String| {
                    l.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<String>>()
                })
                .unwrap()
                .map(|w| (w, 1u64))
                .unwrap()
        } else {
            // `spate wordcount`'s shape: per-partition combine on borrowed words, then reduce.
            lines
                .map_partitions(|part: Vec<String>| words::count_words(&part))
                .unwrap()
        };
        pairs
            .reduce_by_key(|a, b| a + b)
            .unwrap()
            // A full pass over every batch, as the Spark harness's output: (#keys, sum of counts).
            .foreach_batch(move |_t, b| {
                let (keys, sum) = b.iter().fold((0u64, 0u64), |(k, s), (_, c)| (k + 1, s + c));
                let mut g = f2.lock().unwrap();
                g.0 += keys;
                g.1 += sum;
            })
            .unwrap();
        let batches = Arc::new(Batches::default());
        ctx.add_listener(Arc::clone(&batches) as Arc<dyn StreamingListener>);
        ctx.start().unwrap();

        // Paced feeder (10 ms ticks): whole lines from the cyclic corpus.
        let (s2, st2, steps2) = (Arc::clone(&corpus), Arc::clone(&starts), steps.clone());
        let feeder = std::thread::spawn(move || {
            let (mut sock, _) = l.accept().unwrap();
            let n = st2.len() as u64;
            let mut pos = 0u64; // next line number (cyclic)
            let mut windows = Vec::new();
            for (rate, secs) in steps2 {
                let t0 = Instant::now();
                let start_ms = now_ms();
                let mut sent = 0u64;
                while t0.elapsed() < Duration::from_secs(secs) {
                    let due = (rate as f64 * t0.elapsed().as_secs_f64()) as u64;
                    let mut todo = due.saturating_sub(sent);
                    while todo > 0 {
                        let i = (pos % n) as usize;
                        let k = todo.min(n - i as u64) as usize;
                        let from = st2[i];
                        let to = if i + k < st2.len() {
                            st2[i + k]
                        } else {
                            s2.len()
                        };
                        if sock.write_all(&s2[from..to]).is_err() {
                            return windows;
                        }
                        pos += k as u64;
                        sent += k as u64;
                        todo -= k as u64;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                windows.push((rate, secs, start_ms, now_ms(), sent));
            }
            windows
        });
        let windows = feeder.join().unwrap();
        std::thread::sleep(Duration::from_millis(2 * batch_ms));
        ctx.stop(false).unwrap();
        let b = batches.0.lock().unwrap().clone();
        println!(
            "pipeline ({}): stateless word count, socket 127.0.0.1, batch {batch_ms} ms, {} cores",
            if naive {
                "naive flat_map/map/reduce_by_key"
            } else {
                "map_partitions combine + reduce_by_key"
            },
            std::thread::available_parallelism().map_or(1, |n| n.get())
        );
        println!(
            "rate(lines/s)  sent/s     recv/s     p90 proc(ms)  max proc  last sched(ms)  verdict"
        );
        let mut best = 0;
        for (rate, _secs, s_ms, e_ms, sent) in windows {
            let settle = s_ms + 3000;
            let inb: Vec<_> = b.iter().filter(|x| x.0 > settle && x.0 <= e_ms).collect();
            if inb.is_empty() {
                println!("{rate:>12}  (no batches)");
                continue;
            }
            let span_s = (inb.last().unwrap().0 - inb[0].0 + batch_ms) as f64 / 1000.0;
            let recv: u64 = inb.iter().map(|x| x.1).sum();
            let mut proc: Vec<u64> = inb.iter().map(|x| x.2).collect();
            proc.sort_unstable();
            let p90 = proc[((proc.len() - 1) as f64 * 0.9).round() as usize];
            let last_sched = inb.last().unwrap().3;
            let recv_rate = recv as f64 / span_s;
            let sent_rate = sent as f64 / ((e_ms - s_ms) as f64 / 1000.0);
            let ok = p90 < batch_ms && last_sched < batch_ms && recv_rate >= 0.95 * rate as f64;
            if ok {
                best = best.max(rate);
            }
            println!(
                "{rate:>12}  {:>9.0}  {:>9.0}  {p90:>12}  {:>8}  {last_sched:>14}  {}",
                sent_rate,
                recv_rate,
                proc.last().unwrap(),
                if ok { "sustained" } else { "NOT sustained" }
            );
        }
        let f = folded.lock().unwrap();
        println!(
            "max sustained: {best} lines/s (words counted: {}, keys emitted: {})",
            f.1, f.0
        );
    }
}
