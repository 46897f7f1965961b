//! The stateless word-count pipeline through the engine (job generator, scheduler, worker pool):
//! `flat_map(split_whitespace) → map((w, 1)) → reduce_by_key(+)` over in-memory batches of
//! 10-word lines from `queue_stream`, driven by a `ManualClock` so only processing is measured.
//! Throughput is reported in lines; divide by the worker count for lines/s per core.
//!
//! `count_words` (one thread, no engine): `spate wordcount`'s per-partition word count
//! (`crates/spate-cli/src/jobs/words.rs`, packed `u128` keys for words of <= 15 bytes) against the
//! `FxHashMap<&str, u64>` version it replaced, over 200 000 lines shaped like the comparison corpus
//! (`spate gen words`: 10 words per line from a 10 000-word vocabulary of 3-10 lowercase letters).

// The allocator matters: every word becomes an owned `String`, allocated on one worker and often
// freed on another. mimalloc's thread-local free lists make that cheap; glibc malloc serialises
// on arena locks. Applications choose their global allocator; the figures in
// docs/performance.md give both.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spate_streaming::testing::advance_and_wait;
use spate_streaming::{BatchTime, DurationMs, ManualClock, StreamingConfig, StreamingContext};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../../crates/spate-cli/src/jobs/words.rs"]
mod words;

const LINES_PER_BATCH: usize = 200_000;
const VOCABULARY: u64 = 10_000;

/// Deterministic 10-word lines over a 10 000-word vocabulary (xorshift).
fn lines(n: usize, seed: u64) -> Vec<String> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| spate_benches::xorshift_line(&mut x, "word", VOCABULARY, 80))
        .collect()
}

/// Which formulation of the word count to run.
#[derive(Clone, Copy, Debug)]
enum Variant {
    /// `flat_map(split_whitespace → String) → map((w, 1)) → reduce_by_key(+)`: Spark's example,
    /// one owned `String` per word.
    Naive,
    /// `map_partitions` counting borrowed `&str` words per partition, emitting one `(String, n)`
    /// per distinct word, then `reduce_by_key(+)` (what a performance-aware Spark user writes with
    /// `mapPartitions`).
    PartitionCombined,
}

fn run(batches: u64, input: &[String], threads: usize, variant: Variant) -> Duration {
    let clock = ManualClock::new(0);
    let cfg = StreamingConfig {
        batch_interval: DurationMs(1000),
        parallelism: threads,
        default_partitions: threads,
        app_name: "bench-pipeline".into(),
        ..StreamingConfig::default()
    };
    let ctx = StreamingContext::with_clock(cfg, Arc::new(clock.clone())).expect("context");
    let queue: Vec<Vec<String>> = (0..batches).map(|_| input.to_vec()).collect();
    let words = Arc::new(AtomicU64::new(0));
    let w2 = Arc::clone(&words);
    let lines = ctx.queue_stream(queue, true, None).expect("input");
    let pairs = match variant {
        Variant::Naive => lines
            .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .and_then(|d| d.map(|w| (w, 1u64))),
        Variant::PartitionCombined => lines.map_partitions(|part: Vec<String>| {
            let mut m: rustc_hash::FxHashMap<&str, u64> = rustc_hash::FxHashMap::default();
            for l in &part {
                for w in l.split_whitespace() {
                    *m.entry(w).or_insert(0) += 1;
                }
            }
            m.into_iter()
                .map(|(w, c)| (w.to_owned(), c))
                .collect::<Vec<_>>()
        }),
    };
    pairs
        .and_then(|d| d.reduce_by_key(|a, b| a + b))
        .and_then(|d| {
            d.foreach_batch(move |_, b| {
                w2.fetch_add(b.iter().map(|(_, c)| c).sum::<u64>(), Ordering::Relaxed);
            })
        })
        .expect("graph");
    ctx.start().expect("start");
    let t0 = Instant::now();
    for i in 1..=batches {
        advance_and_wait(&ctx, &clock, BatchTime(i * 1000)).expect("batch");
    }
    let elapsed = t0.elapsed();
    ctx.stop(false).expect("stop");
    assert_eq!(
        words.load(Ordering::Relaxed),
        batches * input.len() as u64 * 10
    );
    elapsed
}

fn word_count(c: &mut Criterion) {
    let input = lines(LINES_PER_BATCH, 0x5eed);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("pipeline_word_count");
    g.throughput(Throughput::Elements(LINES_PER_BATCH as u64));
    g.sample_size(10);
    for variant in [Variant::Naive, Variant::PartitionCombined] {
        for threads in [1, cores] {
            let id = BenchmarkId::new(format!("{variant:?}"), format!("{threads}_threads"));
            g.bench_with_input(id, &threads, |b, &t| {
                b.iter_custom(|iters| run(iters, &input, t, variant));
            });
            if cores == 1 {
                break;
            }
        }
    }
    g.finish();
}

/// Lines like the comparison corpus: 10 words per line drawn from a vocabulary of 10 000 words of
/// 3-10 lowercase letters (xorshift).
fn corpus_like_lines(n: usize, seed: u64) -> Vec<String> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let vocabulary: Vec<String> = (0..10_000)
        .map(|_| {
            let len = 3 + next() % 8;
            (0..len)
                .map(|_| char::from(b'a' + (next() % 26) as u8))
                .collect()
        })
        .collect();
    (0..n)
        .map(|_| {
            let mut l = String::with_capacity(80);
            for i in 0..10 {
                if i > 0 {
                    l.push(' ');
                }
                l.push_str(&vocabulary[(next() % 10_000) as usize]);
            }
            l
        })
        .collect()
}

/// The per-partition count `spate wordcount` used before the packed keys (kept here as the
/// baseline of the `count_words` group).
fn count_words_str_keys(lines: &[String]) -> Vec<(String, u64)> {
    let mut m: rustc_hash::FxHashMap<&str, u64> = rustc_hash::FxHashMap::default();
    for l in lines {
        let b = l.as_bytes();
        let mut start = None;
        for (i, &c) in b.iter().enumerate() {
            let ws = c == b' ' || (b'\t'..=b'\r').contains(&c);
            match (ws, start) {
                (true, Some(s)) => {
                    *m.entry(&l[s..i]).or_insert(0) += 1;
                    start = None;
                }
                (false, None) => start = Some(i),
                _ => {}
            }
        }
        if let Some(s) = start {
            *m.entry(&l[s..]).or_insert(0) += 1;
        }
    }
    m.into_iter().map(|(w, c)| (w.to_owned(), c)).collect()
}

fn count_words(c: &mut Criterion) {
    // A partition of one batch at 2 M lines/s with 2 partitions per 1 s batch would be 1 M lines;
    // 200 000 keeps the sample fast with the same vocabulary behaviour (most words distinct).
    let input = corpus_like_lines(LINES_PER_BATCH, 0x5eed);
    let mut a = words::count_words(&input);
    let mut b = count_words_str_keys(&input);
    a.sort();
    b.sort();
    assert_eq!(a, b, "the two counts differ");
    let mut g = c.benchmark_group("count_words");
    g.throughput(Throughput::Elements(LINES_PER_BATCH as u64));
    g.sample_size(20);
    g.bench_function("str_keys_before", |bch| {
        bch.iter(|| count_words_str_keys(std::hint::black_box(&input)))
    });
    g.bench_function("packed_u128_keys", |bch| {
        bch.iter(|| words::count_words(std::hint::black_box(&input)))
    });
    g.finish();
}

criterion_group!(benches, word_count, count_words);
criterion_main!(benches);
