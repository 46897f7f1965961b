//! WAL append+sync throughput and latency vs the raw disk (criterion, `harness = false`).
//!
//! * `wal_append_sync/<writers>w/<size>`: `writers` threads each append records of `size` bytes
//!   with `SyncPolicy::EveryAppend` (each append returns only once durable; group commit shares
//!   fsyncs). Throughput is in payload bytes.
//! * `raw_fdatasync/<size>`: one thread, `pwrite` of `size` bytes at the end of a file +
//!   `fdatasync`, no framing: the disk's limit for one durable write at a time.
//! * `raw_fdatasync_batch16/4096`: 16 × 4 KiB in one `pwrite` + one `fdatasync` (what perfect group
//!   commit of 16 writers could do).
//!
//! * `wal_open/<n>x64MiB`: `Wal::open` of a WAL of `n` preallocated 64 MiB segments holding 10
//!   records of 200 B each (recovery reads sealed segments only up to their end-of-data marker,
//!   so this should not grow with `n`).
//!
//! After the criterion groups, a latency pass prints p50/p99 per append+sync (and per raw
//! write+fdatasync) to stderr. Files live under `CARGO_TARGET_TMPDIR` (on the build disk, not a
//! tmpfs). Run: `cargo bench -p spate-benches --bench wal -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spate_io::{ManualClock, StdFs};
use spate_wal::{SyncPolicy, Wal, WalOptions};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const WRITERS: [usize; 3] = [1, 4, 16];
const SIZES: [usize; 3] = [100, 4096, 65536];

fn bench_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("wal-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open_wal(name: &str) -> Arc<Wal> {
    let opts = WalOptions {
        sync_policy: SyncPolicy::EveryAppend,
        ..WalOptions::default()
    };
    Arc::new(Wal::open(Arc::new(StdFs), bench_dir(name), opts).unwrap().0)
}

/// `writers` threads share `total` appends; returns the wall time and each append's latency.
fn run_wal(wal: &Arc<Wal>, writers: usize, size: usize, total: u64) -> (Duration, Vec<Duration>) {
    let per = total.div_ceil(writers as u64);
    let barrier = Arc::new(Barrier::new(writers + 1));
    let hs: Vec<_> = (0..writers)
        .map(|_| {
            let wal = Arc::clone(wal);
            let b = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let payload = vec![7u8; size];
                let mut lat = Vec::with_capacity(per as usize);
                b.wait();
                for _ in 0..per {
                    let t = Instant::now();
                    wal.append(1, &payload).unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    let lat: Vec<Duration> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    (start.elapsed(), lat)
}

struct Raw {
    file: std::fs::File,
    off: u64,
    buf: Vec<u8>,
}

impl Raw {
    fn new(name: &str, size: usize) -> Raw {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(bench_dir(name).join("raw"))
            .unwrap();
        Raw {
            file,
            off: 0,
            buf: vec![7u8; size],
        }
    }
    fn op(&mut self) -> Duration {
        let t = Instant::now();
        self.file.write_all_at(&self.buf, self.off).unwrap();
        self.file.sync_data().unwrap();
        self.off += self.buf.len() as u64;
        if self.off > 512 << 20 {
            self.file.set_len(0).unwrap();
            self.off = 0;
        }
        t.elapsed()
    }
}

fn wal_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_append_sync");
    g.sample_size(10);
    for &size in &SIZES {
        for &writers in &WRITERS {
            let wal = open_wal(&format!("wal-{writers}-{size}"));
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("{writers}w"), size),
                &size,
                |b, &size| {
                    b.iter_custom(|iters| run_wal(&wal, writers, size, iters.max(writers as u64)).0)
                },
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("raw_fdatasync");
    g.sample_size(10);
    for &size in &SIZES {
        let mut raw = Raw::new(&format!("raw-{size}"), size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter_custom(|iters| (0..iters).map(|_| raw.op()).sum())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("raw_fdatasync_batch16");
    g.sample_size(10);
    let mut raw = Raw::new("raw-batch16", 16 * 4096);
    g.throughput(Throughput::Bytes(16 * 4096));
    g.bench_function("4096", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| raw.op()).sum())
    });
    g.finish();
}

fn pct(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn latency_report(_c: &mut Criterion) {
    let n: u64 = std::env::var("SPATE_WAL_LAT_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    eprintln!("\nlatency (ops={n}): config, p50, p99, MB/s");
    for &size in &SIZES {
        let mut raw = Raw::new(&format!("lat-raw-{size}"), size);
        let t = Instant::now();
        let lat: Vec<Duration> = (0..n).map(|_| raw.op()).collect();
        let mbs = (n as f64 * size as f64) / t.elapsed().as_secs_f64() / 1e6;
        eprintln!(
            "raw 1w {size}B, {:?}, {:?}, {mbs:.1}",
            pct(lat.clone(), 0.5),
            pct(lat, 0.99)
        );
        for &writers in &WRITERS {
            let wal = open_wal(&format!("lat-{writers}-{size}"));
            let (el, lat) = run_wal(&wal, writers, size, n);
            let mbs = (lat.len() as f64 * size as f64) / el.as_secs_f64() / 1e6;
            eprintln!(
                "wal {writers}w {size}B, {:?}, {:?}, {mbs:.1}",
                pct(lat.clone(), 0.5),
                pct(lat, 0.99)
            );
        }
    }
}

/// A WAL of `segments` preallocated 64 MiB segments, 10 records of 200 B each (rolled by time).
fn preallocated(name: &str, segments: u64) -> PathBuf {
    let dir = bench_dir(name);
    let clock = Arc::new(ManualClock::new(1_000));
    let opts = WalOptions {
        roll_interval_ms: Some(1_000),
        clock: clock.clone(),
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(Arc::new(StdFs), &dir, opts).unwrap();
    for _ in 0..segments {
        for _ in 0..10 {
            wal.append(1, &[7u8; 200]).unwrap();
        }
        clock.advance(1_000);
    }
    wal.close().unwrap();
    dir
}

fn open_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("wal_open");
    g.sample_size(10);
    for segments in [1u64, 3, 6] {
        let dir = preallocated(&format!("open-{segments}"), segments);
        g.bench_function(format!("{segments}x64MiB"), |b| {
            b.iter(|| {
                let (wal, report) =
                    Wal::open(Arc::new(StdFs), &dir, WalOptions::default()).unwrap();
                assert_eq!(report.records(), segments * 10);
                wal
            })
        });
    }
    g.finish();
}

criterion_group!(benches, wal_benches, open_benches, latency_report);
criterion_main!(benches);
