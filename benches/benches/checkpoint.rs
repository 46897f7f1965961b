//! Checkpoint store write+commit and resolve+read vs the raw fsync'd disk (criterion,
//! `harness = false`).
//!
//! For each checkpoint size (1 MiB, 64 MiB; 1 GiB only with `SPATE_BENCH_1GIB=1`) and each target:
//!
//! * `checkpoint_write_commit/<target>/<size>`: `Committer::commit` of a draft holding one data
//!   object of `size` payload bytes — envelope + crc, create-only PUT of the data object, fence
//!   checks, create-only PUT of the manifest (the store's real commit path; on local disk every
//!   object is fsynced, file and directory). The committer (probe + generation claim) is opened once,
//!   outside the timing; after each timed commit its objects are deleted, untimed, so the location
//!   stays at one checkpoint.
//! * `checkpoint_resolve_read/<target>/<size>`: `resolve_latest` (listing, floors, manifest,
//!   `VerifyLevel::Size`: one HEAD per object) on a location holding one checkpoint, then
//!   `read_object` of every referenced object (which verifies size, envelope and crc32). Each byte
//!   is read and checked once. (With the default `VerifyLevel::Full`, `resolve_latest` already reads
//!   every object, so resolve + read would read the data twice.)
//!
//! Targets: `local` — a `LocalFileSystem` with fsync under `CARGO_TARGET_TMPDIR` (the build disk,
//! not a tmpfs); `s3sfs` — s3s-fs over loopback. s3s-fs is taken from `SPATE_TEST_S3_S3SFS`,
//! `SPATE_TEST_S3_BUCKET`, `SPATE_TEST_S3_ACCESS_KEY`, `SPATE_TEST_S3_SECRET_KEY` (as exported by
//! `scripts/s3-servers.sh`) or, if those are absent, spawned by this benchmark from
//! `SPATE_TEST_S3SFS_BIN`, `s3s-fs` on `PATH` or `~/.cargo/bin/s3s-fs` on a free port and killed by
//! PID at the end. If no binary is found the s3s-fs benchmarks are skipped with a loud message.
//!
//! The disk's limit, measured the same way (same payload bytes, same directory):
//!
//! * `raw_fsync_write/<size>`: create a new file, write `size` bytes, `fdatasync`, fsync the
//!   directory (what a durable create of one object costs at minimum);
//! * `raw_read_crc/<size>`: read that file back and crc32 it (page cache warm, as for the store).
//!
//! `checkpoint_resolve_only/<target>/1MiB`: `resolve_latest` alone (`VerifyLevel::Size`, no data
//! read), the fixed cost of a resolve.
//!
//! Run: `cargo bench -p spate-benches --bench checkpoint -- --warm-up-time 1 --measurement-time 3`.

use bytes::Bytes;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use object_store::ObjectStoreExt;
use spate_checkpoint::{
    BlockingCheckpointStore, CheckpointDraft, CheckpointKind, CheckpointPaths, Committer,
    S3Options, StoreOptions, VerifyLevel,
};
use spate_types::{BatchTime, DurationMs};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn sizes() -> Vec<usize> {
    let mut v = vec![MIB, 64 * MIB];
    if std::env::var("SPATE_BENCH_1GIB").is_ok_and(|s| s == "1") {
        v.push(1024 * MIB);
    }
    v
}

fn size_label(size: usize) -> String {
    if size >= 1024 * MIB {
        format!("{}GiB", size / (1024 * MIB))
    } else {
        format!("{}MiB", size / MIB)
    }
}

fn bench_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("checkpoint-bench")
}

fn fresh_dir(name: &str) -> PathBuf {
    let d = bench_root().join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Incompressible payload (xorshift), so no layer can cheat on repeated bytes.
fn payload(size: usize) -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    Bytes::from(v)
}

/// An s3s-fs this benchmark started; killed by PID (via `Child`) and its root removed on drop.
struct SpawnedS3sFs {
    child: Child,
    root: PathBuf,
}

impl Drop for SpawnedS3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

struct S3Target {
    endpoint: String,
    bucket: String,
    key: String,
    secret: String,
    _spawned: Option<SpawnedS3sFs>,
}

fn s3sfs_binary() -> Option<PathBuf> {
    if let Ok(b) = std::env::var("SPATE_TEST_S3SFS_BIN") {
        return Some(PathBuf::from(b));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(h) = std::env::var_os("HOME") {
        candidates.push(Path::new(&h).join(".cargo/bin/s3s-fs"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn s3sfs_target() -> Option<S3Target> {
    if let Ok(endpoint) = std::env::var("SPATE_TEST_S3_S3SFS") {
        let var = |n: &str| {
            std::env::var(n).unwrap_or_else(|_| panic!("{n} must be set with SPATE_TEST_S3_S3SFS"))
        };
        eprintln!("checkpoint bench: using s3s-fs at {endpoint} (SPATE_TEST_S3_S3SFS)");
        return Some(S3Target {
            endpoint,
            bucket: var("SPATE_TEST_S3_BUCKET"),
            key: var("SPATE_TEST_S3_ACCESS_KEY"),
            secret: var("SPATE_TEST_S3_SECRET_KEY"),
            _spawned: None,
        });
    }
    let Some(bin) = s3sfs_binary() else {
        eprintln!(
            "\n*** checkpoint bench: SKIPPING the s3s-fs benchmarks: SPATE_TEST_S3_S3SFS is not set \
             and no s3s-fs binary was found (SPATE_TEST_S3SFS_BIN, PATH, ~/.cargo/bin). Install it \
             with scripts/install-tools.sh or `source scripts/s3-servers.sh; s3_servers_start`. ***\n"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let root = fresh_dir("s3sfs-root");
    let bucket = "spate-bench".to_owned();
    std::fs::create_dir_all(root.join(&bucket)).unwrap();
    let (key, secret) = ("benchkey".to_owned(), "benchsecret".to_owned());
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", &key, "--secret-key", &secret])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let mut spawned = SpawnedS3sFs { child, root };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(st)) = spawned.child.try_wait() {
            panic!("s3s-fs ({}) exited before listening: {st}", bin.display());
        }
        assert!(
            Instant::now() < deadline,
            "s3s-fs did not listen on port {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "checkpoint bench: started s3s-fs {} on 127.0.0.1:{port} (pid {}, root {})",
        bin.display(),
        spawned.child.id(),
        spawned.root.display()
    );
    Some(S3Target {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket,
        key,
        secret,
        _spawned: Some(spawned),
    })
}

/// A checkpoint location: `(target name, url, options)` for one purpose (`write` or `read`).
fn location(
    target: &str,
    s3: Option<&S3Target>,
    purpose: &str,
    size: usize,
    verify: VerifyLevel,
) -> BlockingCheckpointStore {
    let name = format!("{target}-{purpose}-{}", size_label(size));
    let mut opts = StoreOptions {
        verify,
        request_timeout: Duration::from_secs(120),
        ..StoreOptions::default()
    };
    let url = match s3 {
        None => fresh_dir(&name).display().to_string(),
        Some(s3) => {
            opts.s3 = S3Options {
                endpoint: Some(s3.endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some(s3.key.clone()),
                secret_access_key: Some(s3.secret.clone()),
                virtual_hosted_style: false,
            };
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            format!(
                "s3://{}/bench-{}-{nonce}/{name}",
                s3.bucket,
                std::process::id()
            )
        }
    };
    BlockingCheckpointStore::open(&url, opts).unwrap()
}

fn draft(t: u64, data: &Bytes) -> CheckpointDraft {
    let mut d = CheckpointDraft::new(
        CheckpointKind::Data,
        BatchTime::from_millis(t),
        BatchTime::from_millis(0),
        DurationMs::from_millis(1_000),
    );
    d.pending_batches = vec![BatchTime::from_millis(t + 1_000)];
    d.new_objects = vec![("state-0".to_owned(), data.clone())];
    d
}

/// One timed commit; its objects are deleted afterwards (untimed).
fn commit_once(bs: &BlockingCheckpointStore, c: &mut Committer, t: u64, data: &Bytes) -> Duration {
    let d = draft(t, data);
    let start = Instant::now();
    let m = bs.block_on(c.commit(d)).unwrap().unwrap();
    let el = start.elapsed();
    let (store, _) = bs.store().raw();
    let mut paths: Vec<String> = m.objects.iter().map(|o| o.path.clone()).collect();
    paths.push(CheckpointPaths::manifest(m.key));
    for p in paths {
        bs.block_on(store.delete(&bs.store().full_path(&p)))
            .unwrap();
    }
    el
}

fn resolve_read_once(bs: &BlockingCheckpointStore, size: usize) -> Duration {
    let start = Instant::now();
    let r = bs.resolve_latest().unwrap().expect("one checkpoint");
    let mut total = 0usize;
    for o in &r.manifest.objects {
        total += bs.block_on(bs.store().read_object(o)).unwrap().len();
    }
    let el = start.elapsed();
    assert_eq!(total, size);
    el
}

fn raw_write_once(dir: &Path, i: u64, data: &[u8]) -> Duration {
    let path = dir.join(format!("obj-{i}"));
    let start = Instant::now();
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(data).unwrap();
    f.sync_data().unwrap();
    std::fs::File::open(dir).unwrap().sync_all().unwrap();
    let el = start.elapsed();
    drop(f);
    std::fs::remove_file(&path).unwrap();
    el
}

fn raw_read_once(path: &Path, size: usize) -> Duration {
    let start = Instant::now();
    let bytes = std::fs::read(path).unwrap();
    let crc = crc32fast::hash(&bytes);
    let el = start.elapsed();
    assert_eq!(bytes.len(), size);
    std::hint::black_box(crc);
    el
}

fn checkpoint_benches(c: &mut Criterion) {
    let s3 = s3sfs_target();
    let sizes = sizes();
    let payloads: Vec<(usize, Bytes)> = sizes.iter().map(|&s| (s, payload(s))).collect();

    let mut g = c.benchmark_group("raw_fsync_write");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (size, data) in &payloads {
        let dir = fresh_dir(&format!("raw-{}", size_label(*size)));
        let mut i = 0u64;
        g.throughput(Throughput::Bytes(*size as u64));
        g.bench_function(BenchmarkId::from_parameter(size_label(*size)), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        i += 1;
                        raw_write_once(&dir, i, data)
                    })
                    .sum()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("raw_read_crc");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (size, data) in &payloads {
        let dir = fresh_dir(&format!("rawread-{}", size_label(*size)));
        let path = dir.join("obj");
        std::fs::write(&path, data).unwrap();
        g.throughput(Throughput::Bytes(*size as u64));
        g.bench_function(BenchmarkId::from_parameter(size_label(*size)), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| raw_read_once(&path, *size)).sum())
        });
    }
    g.finish();

    let mut targets: Vec<(&str, Option<&S3Target>)> = vec![("local", None)];
    if let Some(s3) = &s3 {
        targets.push(("s3sfs", Some(s3)));
    }

    let mut g = c.benchmark_group("checkpoint_write_commit");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for &(target, s3t) in &targets {
        for (size, data) in &payloads {
            let bs = location(target, s3t, "write", *size, VerifyLevel::Full);
            let mut committer = bs.block_on(bs.store().open_committer()).unwrap();
            let mut t = 0u64;
            g.throughput(Throughput::Bytes(*size as u64));
            g.bench_function(BenchmarkId::new(target, size_label(*size)), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            t += 1_000;
                            commit_once(&bs, &mut committer, t, data)
                        })
                        .sum()
                })
            });
        }
    }
    g.finish();

    let mut g = c.benchmark_group("checkpoint_resolve_read");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for &(target, s3t) in &targets {
        for (size, data) in &payloads {
            let bs = location(target, s3t, "read", *size, VerifyLevel::Size);
            let mut committer = bs.block_on(bs.store().open_committer()).unwrap();
            bs.block_on(committer.commit(draft(1_000, data)))
                .unwrap()
                .unwrap();
            g.throughput(Throughput::Bytes(*size as u64));
            g.bench_function(BenchmarkId::new(target, size_label(*size)), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| resolve_read_once(&bs, *size)).sum())
            });
        }
    }
    g.finish();

    // The fixed cost of resolve alone (listing, floors, manifest, HEAD; no data read), 1 MiB only.
    let mut g = c.benchmark_group("checkpoint_resolve_only");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    for &(target, s3t) in &targets {
        let data = &payloads[0].1;
        let bs = location(target, s3t, "resolve", data.len(), VerifyLevel::Size);
        let mut committer = bs.block_on(bs.store().open_committer()).unwrap();
        bs.block_on(committer.commit(draft(1_000, data)))
            .unwrap()
            .unwrap();
        g.bench_function(BenchmarkId::new(target, size_label(data.len())), |b| {
            b.iter(|| bs.resolve_latest().unwrap().expect("one checkpoint"))
        });
    }
    g.finish();

    drop(s3);
    let _ = std::fs::remove_dir_all(bench_root());
}

criterion_group!(benches, checkpoint_benches);
criterion_main!(benches);
