//! `spate checkpoint ls|show|verify|gc|diff|reports <url>`: inspect (and garbage-collect) a
//! checkpoint location.
//!
//! `<url>` is a path, `file:///path`, or `s3://bucket/prefix` (endpoint, region and credentials from
//! `--endpoint`/`--region` or the usual `AWS_*` variables). Read-only except `gc` without
//! `--dry-run`. Exit codes: 0 success, 1 damage found (`verify`), no such checkpoint (`show`),
//! an incompatible build (`diff`) or no restart report (`reports --latest`), 2 the location or an
//! input file cannot be read (bad URL, unreachable store, unreadable `--graph` file, no checkpoint
//! to compare with).

use clap::{Args, Subcommand};
use spate_checkpoint::{
    CheckpointError, CheckpointKey, CheckpointStore, Manifest, Retention, S3Options, StoreOptions,
    VerifyLevel,
};
use spate_streaming::BuildDescription;
use spate_types::BatchTime;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Where the checkpoint location is and how to reach it.
#[derive(Debug, Args)]
pub(crate) struct Location {
    /// Checkpoint location: a path, file:///path or s3://bucket/prefix.
    url: String,
    /// S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS_ENDPOINT).
    #[arg(long)]
    endpoint: Option<String>,
    /// S3 region (default: AWS_REGION or us-east-1).
    #[arg(long)]
    region: Option<String>,
    /// Per-request timeout, ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

/// `spate checkpoint ...`
#[derive(Debug, Subcommand)]
pub(crate) enum CheckpointCommand {
    /// List every checkpoint, newest first: name time, batch time, kind, generation, size and
    /// whether it verifies (or why not).
    Ls {
        #[command(flatten)]
        loc: Location,
        /// Check sizes only (HEAD) instead of reading every object and its crc.
        #[arg(long)]
        quick: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Show the checkpoint recovery would choose (or the newest one for batch time T).
    Show {
        #[command(flatten)]
        loc: Location,
        /// Batch time (ms) to show instead of the latest.
        #[arg(long)]
        batch: Option<u64>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Verify every checkpoint: every referenced object, its size and crc. Exit 0 if all verify,
    /// 1 otherwise.
    Verify {
        #[command(flatten)]
        loc: Location,
    },
    /// Delete checkpoints beyond retention and objects nothing retained references.
    Gc {
        #[command(flatten)]
        loc: Location,
        /// Print the plan, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Valid checkpoints to keep.
        #[arg(long, default_value_t = 3)]
        keep: usize,
        /// Checkpoint names (`<time>-<generation>-<seq>`) to keep regardless.
        #[arg(long)]
        pin: Vec<String>,
    },
    /// Compare the checkpoint recovery would choose with a build's description (written by the
    /// job's `--describe FILE`): one line per difference, or `compatible`. The same comparison
    /// recovery makes, without starting anything. Exit 0 compatible, 1 incompatible, 2 error.
    Diff {
        #[command(flatten)]
        loc: Location,
        /// Build description JSON (from `spate wordcount|clicks ... --describe FILE`).
        #[arg(long, value_name = "FILE")]
        graph: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// List the restart reports recovery wrote (newest first).
    Reports {
        #[command(flatten)]
        loc: Location,
        /// Print the newest report in full instead (exit 1 if there is none).
        #[arg(long)]
        latest: bool,
        /// JSON output (one object per line; with --latest the report itself).
        #[arg(long)]
        json: bool,
    },
}

fn open(loc: &Location) -> Result<CheckpointStore, String> {
    let opts = StoreOptions {
        s3: S3Options {
            endpoint: loc.endpoint.clone(),
            region: loc.region.clone(),
            ..S3Options::default()
        },
        request_timeout: Duration::from_millis(loc.timeout_ms.max(1)),
        connect_timeout: Duration::from_millis(loc.timeout_ms.clamp(1, 5_000)),
        create_local_dir: false,
        ..StoreOptions::default()
    };
    CheckpointStore::open(&loc.url, opts).map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start runtime: {e}"))
}

fn fail(cmd: &str, e: impl std::fmt::Display) -> ExitCode {
    eprintln!("spate checkpoint {cmd}: {e}");
    ExitCode::from(2)
}

pub(crate) fn run(cmd: CheckpointCommand) -> ExitCode {
    let rt = match runtime() {
        Ok(r) => r,
        Err(e) => return fail("", e),
    };
    match cmd {
        CheckpointCommand::Ls { loc, quick, json } => rt.block_on(ls(&loc, quick, json)),
        CheckpointCommand::Show { loc, batch, json } => rt.block_on(show(&loc, batch, json)),
        CheckpointCommand::Verify { loc } => rt.block_on(verify(&loc)),
        CheckpointCommand::Gc {
            loc,
            dry_run,
            keep,
            pin,
        } => rt.block_on(gc(&loc, dry_run, keep, &pin)),
        CheckpointCommand::Diff { loc, graph, json } => rt.block_on(diff(&loc, &graph, json)),
        CheckpointCommand::Reports { loc, latest, json } => {
            rt.block_on(reports(&loc, latest, json))
        }
    }
}

async fn ls(loc: &Location, quick: bool, json: bool) -> ExitCode {
    let store = match open(loc) {
        Ok(s) => s,
        Err(e) => return fail("ls", e),
    };
    let level = if quick {
        VerifyLevel::Size
    } else {
        VerifyLevel::Full
    };
    let all = match store.verify_all(level).await {
        Ok(v) => v,
        Err(e) => return fail("ls", e),
    };
    if !json {
        println!(
            "{:<53} {:>15} {:>9} {:>5} {:>12}  status",
            "checkpoint", "batch_time_ms", "kind", "gen", "bytes"
        );
    }
    for c in &all {
        let status = c
            .problem
            .as_ref()
            .map_or_else(|| "ok".to_owned(), ToString::to_string);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "checkpoint": c.key.to_string(), "manifest": c.manifest,
                    "batch_time_ms": c.batch_time.map(|t| t.0), "kind": c.kind,
                    "generation": c.key.generation.0, "data_bytes": c.data_bytes,
                    "verified": c.problem.is_none(), "problem": status,
                })
            );
        } else {
            println!(
                "{:<53} {:>15} {:>9} {:>5} {:>12}  {status}",
                c.key.to_string(),
                c.batch_time.map_or_else(|| "?".into(), |t| t.0.to_string()),
                c.kind.map_or_else(|| "?".into(), |k| format!("{k:?}")),
                c.key.generation.0,
                c.data_bytes.map_or_else(|| "?".into(), |b| b.to_string()),
            );
        }
    }
    if all.is_empty() && !json {
        println!("(no checkpoints)");
    }
    ExitCode::SUCCESS
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn manifest_json(m: &Manifest) -> serde_json::Value {
    serde_json::json!({
        "checkpoint": m.key.to_string(),
        "kind": m.kind,
        "batch_time_ms": m.batch_time.0,
        "zero_time_ms": m.zero_time.0,
        "batch_interval_ms": m.batch_interval.0,
        "generation": m.generation.0,
        "created_at_ms": m.created_at_ms,
        "graph": { "fingerprint": m.graph.fingerprint, "bytes": m.graph.bytes.len() },
        "pending_batches_ms": m.pending_batches.iter().map(|t| t.0).collect::<Vec<_>>(),
        "source_positions": m.source_positions.iter().map(|(k, v)| (k.clone(), hex(v))).collect::<std::collections::BTreeMap<_, _>>(),
        "wal_position": m.wal_position.map(|l| l.0),
        "conf": m.conf,
        "objects": m.objects.iter().map(|o| serde_json::json!({"path": o.path, "size": o.size, "crc32": format!("{:08x}", o.crc32)})).collect::<Vec<_>>(),
    })
}

async fn show(loc: &Location, batch: Option<u64>, json: bool) -> ExitCode {
    let store = match open(loc) {
        Ok(s) => s,
        Err(e) => return fail("show", e),
    };
    let (manifest, rejected) = match batch {
        None => match store.resolve_latest().await {
            Ok(Some(r)) => (r.manifest, r.resolution.rejected),
            Ok(None) => {
                eprintln!("spate checkpoint show: {}: no checkpoints", loc.url);
                return ExitCode::FAILURE;
            }
            Err(e @ CheckpointError::NoValidCheckpoint { .. }) => {
                eprintln!("spate checkpoint show: {e}");
                if let CheckpointError::NoValidCheckpoint { rejected } = e {
                    for r in rejected {
                        eprintln!("  rejected {}: {}", r.key, r.reason);
                    }
                }
                return ExitCode::FAILURE;
            }
            Err(e) => return fail("show", e),
        },
        Some(t) => {
            let all = match store.verify_all(VerifyLevel::Full).await {
                Ok(v) => v,
                Err(e) => return fail("show", e),
            };
            let Some(c) = all.iter().find(|c| c.batch_time == Some(BatchTime(t))) else {
                eprintln!(
                    "spate checkpoint show: {}: no checkpoint for batch time {t} ms",
                    loc.url
                );
                return ExitCode::FAILURE;
            };
            if let Some(p) = &c.problem {
                eprintln!(
                    "spate checkpoint show: warning: {} does not verify: {p}",
                    c.key
                );
            }
            match store.read_manifest(c.key).await {
                Ok(m) => (m, Vec::new()),
                Err(e) => return fail("show", e),
            }
        }
    };
    if json {
        let mut v = manifest_json(&manifest);
        v["rejected_newer"] = serde_json::json!(rejected
            .iter()
            .map(|r| serde_json::json!({"checkpoint": r.key.to_string(), "reason": r.reason.to_string()}))
            .collect::<Vec<_>>());
        println!("{v:#}");
        return ExitCode::SUCCESS;
    }
    let m = &manifest;
    println!("checkpoint      {}", m.key);
    println!("kind            {:?}", m.kind);
    println!("batch time      {} ms", m.batch_time.0);
    println!("zero time       {} ms", m.zero_time.0);
    println!("batch interval  {} ms", m.batch_interval.0);
    println!("generation      {}", m.generation.0);
    println!("created at      {} ms", m.created_at_ms);
    println!(
        "graph           fingerprint {} ({} bytes)",
        m.graph.fingerprint,
        m.graph.bytes.len()
    );
    println!(
        "pending batches {:?}",
        m.pending_batches.iter().map(|t| t.0).collect::<Vec<_>>()
    );
    for (k, v) in &m.source_positions {
        println!("source position {k} = {}", hex(v));
    }
    println!(
        "wal position    {}",
        m.wal_position
            .map_or_else(|| "-".into(), |l| l.0.to_string())
    );
    for (k, v) in &m.conf {
        println!("conf            {k} = {v}");
    }
    for o in &m.objects {
        println!(
            "object          {} {} bytes crc32 {:08x}",
            o.path, o.size, o.crc32
        );
    }
    for r in &rejected {
        println!("rejected newer  {}: {}", r.key, r.reason);
    }
    ExitCode::SUCCESS
}

async fn verify(loc: &Location) -> ExitCode {
    let store = match open(loc) {
        Ok(s) => s,
        Err(e) => return fail("verify", e),
    };
    let all = match store.verify_all(VerifyLevel::Full).await {
        Ok(v) => v,
        Err(e) => return fail("verify", e),
    };
    let listing = match store.listing().await {
        Ok(l) => l,
        Err(e) => return fail("verify", e),
    };
    let mut bad = 0;
    for c in &all {
        match &c.problem {
            None => println!(
                "ok      {} ({} bytes)",
                c.key,
                c.data_bytes.unwrap_or_default()
            ),
            Some(p) => {
                bad += 1;
                println!("DAMAGED {}: {p}", c.key);
            }
        }
    }
    for u in &listing.unknown {
        println!(
            "unknown object {} ({} bytes): not written by spate, ignored",
            u.path, u.size
        );
    }
    if !listing.wal.is_empty() {
        println!(
            "{} write-ahead log file(s) under wal/ (the engine's; check with `spate wal verify`)",
            listing.wal.len()
        );
    }
    if !listing.restart_reports.is_empty() || !listing.archived.is_empty() {
        println!(
            "{} restart report(s), {} archived object(s) (not checkpoints, not verified)",
            listing.restart_reports.len(),
            listing.archived.len()
        );
    }
    println!(
        "{} checkpoint(s), {} verified, {} damaged",
        all.len(),
        all.len() - bad,
        bad
    );
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn gc(loc: &Location, dry_run: bool, keep: usize, pin: &[String]) -> ExitCode {
    let store = match open(loc) {
        Ok(s) => s,
        Err(e) => return fail("gc", e),
    };
    let mut pinned = std::collections::BTreeSet::new();
    for p in pin {
        match CheckpointKey::parse(p) {
            Some(k) => {
                pinned.insert(k);
            }
            None => {
                return fail(
                    "gc",
                    format!("--pin {p:?}: expected <time:020>-<generation:020>-<seq:010>"),
                )
            }
        }
    }
    let retention = Retention {
        keep: keep.max(1),
        pinned,
    };
    let plan = if dry_run {
        store.plan_gc(&retention).await
    } else {
        store.gc(&retention).await
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return fail("gc", e),
    };
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut n = 0;
    for p in plan.deletions() {
        n += 1;
        println!("{verb} {p}");
    }
    println!(
        "retained {} checkpoint(s) (horizon {}); {verb} {n} object(s)",
        plan.retained.len(),
        plan.horizon.map_or_else(
            || "none: no valid checkpoint, nothing deleted".into(),
            |k| k.to_string()
        )
    );
    ExitCode::SUCCESS
}

/// Reads and parses a `--describe` file; the error is one line naming the file.
fn load_build(path: &std::path::Path) -> Result<BuildDescription, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("--graph {}: cannot read: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "--graph {}: not a build description (write one with `spate wordcount|clicks ... --describe FILE`): {e}",
            path.display()
        )
    })
}

async fn diff(loc: &Location, graph: &std::path::Path, json: bool) -> ExitCode {
    let build = match load_build(graph) {
        Ok(b) => b,
        Err(e) => return fail("diff", e),
    };
    let store = match open(loc) {
        Ok(s) => s,
        Err(e) => return fail("diff", e),
    };
    let resolved = match store.resolve_latest().await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return fail(
                "diff",
                format!("{}: no checkpoint to compare with", loc.url),
            )
        }
        Err(e @ CheckpointError::NoValidCheckpoint { .. }) => {
            return fail(
                "diff",
                format!("{}: {e} (see `spate checkpoint verify`)", loc.url),
            )
        }
        Err(e) => return fail("diff", e),
    };
    let m = &resolved.manifest;
    for r in &resolved.resolution.rejected {
        eprintln!(
            "spate checkpoint diff: warning: newer checkpoint {} rejected ({}); comparing with {}",
            r.key, r.reason, m.key
        );
    }
    let d = build.compare_with_checkpoint(&m.graph.bytes, &m.conf);
    let lines = d.lines();
    if json {
        println!(
            "{:#}",
            serde_json::json!({
                "checkpoint": m.key.to_string(),
                "batch_time_ms": m.batch_time.0,
                "fingerprint": m.graph.fingerprint,
                "compatible": d.is_compatible(),
                "differences": lines,
                "diff": d,
            })
        );
    } else if d.is_compatible() {
        println!("compatible");
    } else {
        for l in &lines {
            println!("{l}");
        }
    }
    if d.is_compatible() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn reports(loc: &Location, latest: bool, json: bool) -> ExitCode {
    let store = match open(loc) {
        Ok(s) => s,
        Err(e) => return fail("reports", e),
    };
    let mut names = match store.list_restart_reports().await {
        Ok(n) => n,
        Err(e) => return fail("reports", e),
    };
    names.reverse(); // newest first
    if latest {
        let Some(newest) = names.first() else {
            eprintln!("spate checkpoint reports: {}: no restart reports", loc.url);
            return ExitCode::FAILURE;
        };
        let bytes = match store.read_restart_report(newest).await {
            Ok(b) => b,
            Err(e) => return fail("reports", e),
        };
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(v) if json => println!("{v}"),
            Ok(v) => {
                println!("report {newest}");
                println!("{v:#}");
            }
            Err(e) => {
                return fail(
                    "reports",
                    format!("{newest}: not valid JSON ({e}); raw {} bytes", bytes.len()),
                )
            }
        }
        return ExitCode::SUCCESS;
    }
    for n in &names {
        let (time_ms, generation) = match spate_checkpoint::paths::CheckpointPaths::parse(n) {
            spate_checkpoint::paths::ParsedName::RestartReport {
                time_ms,
                generation,
            } => (time_ms, generation.0),
            _ => continue,
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"report": n, "time_ms": time_ms, "generation": generation})
            );
        } else {
            println!("{n}  time {time_ms} ms  generation {generation}");
        }
    }
    if names.is_empty() && !json {
        println!("(no restart reports)");
    }
    ExitCode::SUCCESS
}
