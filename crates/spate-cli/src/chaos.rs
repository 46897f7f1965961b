//! `spate chaos run`: the crash-testing harness (`spate-chaos`) from the command line.
//!
//! Exit codes: 0 when the oracle found nothing wrong, 1 when it found something (the report says
//! what, and the command that reproduces it), 2 when the harness itself could not run (bad flags,
//! directories, corpus generation).

use clap::{Args, Subcommand};
use spate_chaos::schedule::{Disturbance, ScheduleParams};
use spate_chaos::{ChaosConfig, Program};
use std::path::PathBuf;
use std::process::ExitCode;

/// `spate chaos` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ChaosCommand {
    /// Kill a streaming program many times (SIGKILL at seeded instants, fail points) while it
    /// consumes a seeded input, restart it each time, and check the result is exactly once.
    Run(Box<RunArgs>),
    /// Print the fail points `--failpoints all` arms, one per line.
    Failpoints,
}

/// `spate chaos run` arguments.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// SIGKILL cycles.
    #[arg(long, default_value_t = 30)]
    cycles: u32,
    /// Seed of the schedule (corpus, kill instants, fail point order, disturbances); random if
    /// absent (printed in the report and the reproduce command).
    #[arg(long)]
    seed: Option<u64>,
    /// Fail points to arm, one extra cycle each: `all` or a comma-separated list of names. Needs a
    /// binary built with `--features failpoints`.
    #[arg(long)]
    failpoints: Option<String>,
    /// The fail action armed at each point (the `fail` crate syntax, as understood by the
    /// program's `SPATE_FAILPOINTS`).
    #[arg(long, default_value = "return(abort)")]
    failpoint_action: String,
    /// Checkpoint location of the chaos run (path, `file://`, `s3://bucket/prefix`: a unique
    /// sub-prefix is added). Default: a directory under the work directory.
    #[arg(long)]
    store: Option<String>,
    /// The program's `--wal-dir` (required with an `s3://` store).
    #[arg(long)]
    wal_dir: Option<PathBuf>,
    /// `wordcount` (running totals), `wordcount-per-batch`, `clicks`, or the path of a binary
    /// speaking the contract in docs/chaos.md.
    #[arg(long, default_value = "wordcount")]
    program: String,
    /// Write the JSON report here (`-`: stdout).
    #[arg(long)]
    report: Option<PathBuf>,
    /// Work directory (input, outputs, local checkpoints). Default: a new directory under the
    /// system temp dir, deleted after a passing run.
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the work directory even when the run passes.
    #[arg(long)]
    keep: bool,
    /// Disturbances between runs: `none`, `all`, or a comma-separated list of `manifest`
    /// (flip a byte of the newest manifest), `wal` (garbage after the WAL tail), `state` (delete the
    /// sled state dir), `hook` (run --hook). `all` = manifest, wal, state, and hook when --hook
    /// is given. With --simfs: `none` or `fill-disk` (a seeded ENOSPC window; `all` = fill-disk).
    #[arg(long, default_value = "none")]
    disturb: String,
    /// Shell command for the `hook` disturbance (e.g. stop and restart the S3 server); gets
    /// SPATE_CHAOS_WORK, SPATE_CHAOS_CHECKPOINT, SPATE_CHAOS_CYCLE. A failing hook stops the run.
    #[arg(long)]
    hook: Option<String>,
    /// Probability of a disturbance after a cycle.
    #[arg(long, default_value_t = 0.15)]
    disturb_rate: f64,
    /// Lower bound of the kill instant after the restart line, ms (a run long enough to catch up
    /// keeps the checkpoint moving; see docs/reliability.md).
    #[arg(long, default_value_t = 0)]
    min_kill_ms: u64,
    /// Upper bound of the kill instant after the restart line, ms.
    #[arg(long, default_value_t = 1200)]
    max_kill_ms: u64,
    /// A finding when a restart reschedules more than N batches (bounded catch-up check).
    #[arg(long, value_name = "N")]
    max_backlog: Option<u64>,
    /// Probability that a kill happens during start-up (0–400 ms after spawn).
    #[arg(long, default_value_t = 0.2)]
    early_kill: f64,
    /// A fail point cycle skips the first 0..=N hits of its point (seeded).
    #[arg(long, default_value_t = 2)]
    failpoint_skip: u64,
    /// How long a fail point cycle waits after the restart line for the program to abort before
    /// declaring the point not reached (and killing it), ms.
    #[arg(long, default_value_t = 5000)]
    failpoint_timeout_ms: u64,
    /// Input chunks (default: cycles + fail points + 5).
    #[arg(long)]
    chunks: Option<u32>,
    /// Lines per chunk.
    #[arg(long, default_value_t = 20)]
    lines_per_chunk: u32,
    /// The built-in programs' batch interval, ms.
    #[arg(long, default_value_t = 200)]
    batch_ms: u64,
    /// `--idle` of the final run, ms. `--idle` counts from the start, so it must exceed the time
    /// a restart takes to re-run its rescheduled batches and select the files already waiting in
    /// the input directory (S3 stores: seconds), or the final run ends before reading them.
    #[arg(long, default_value_t = 5000)]
    final_idle_ms: u64,
    /// Alternate the memory and sled state backends at random (built-in programs).
    #[arg(long)]
    mix_backends: bool,
    /// Also make a crash-free reference run and compare (always for a custom binary).
    #[arg(long)]
    reference: bool,
    /// No per-cycle progress lines.
    #[arg(long, short)]
    quiet: bool,
    /// In-process SimFs mode (docs/chaos.md): a stateful word count in this process with its WAL
    /// on a simulated disk that loses (or tears) every unsynced write at each crash, fed by an
    /// acknowledging producer. Uses --cycles, --seed, --disturb (`none` or `fill-disk`),
    /// --disturb-rate, --lines, --max-steps, --report, --work, --keep, -q.
    #[arg(long)]
    simfs: bool,
    /// SimFs mode: corpus lines (default: cycles × 40 + 40).
    #[arg(long)]
    lines: Option<u64>,
    /// SimFs mode: a cycle runs 1..=N steps of 200 ms (manual clock) before its crash (default 24).
    #[arg(long)]
    max_steps: Option<u64>,
    /// SimFs mode: the producer connects only after the restarted context's first batch (by
    /// default it connects as soon as the receiver starts, while recovered blocks are processed).
    #[arg(long)]
    late_producer: bool,
}

pub(crate) fn run(cmd: ChaosCommand) -> ExitCode {
    match cmd {
        ChaosCommand::Failpoints => match std::env::current_exe()
            .map_err(|e| e.to_string())
            .and_then(|b| spate_chaos::list_failpoints(&b).map_err(|e| e.to_string()))
        {
            Ok((names, compiled)) => {
                if !compiled {
                    eprintln!("spate chaos failpoints: this build has no fail points (build with --features failpoints)");
                }
                for f in names {
                    println!("{f}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("spate chaos failpoints: {e}");
                ExitCode::from(2)
            }
        },
        ChaosCommand::Run(args) => match run_chaos(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("spate chaos run: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn parse_disturb(s: &str) -> Result<Vec<Disturbance>, String> {
    let all = vec![
        Disturbance::CorruptManifest,
        Disturbance::WalGarbage,
        Disturbance::DeleteStateDir,
    ];
    match s {
        "none" | "" => return Ok(Vec::new()),
        "all" => return Ok(all),
        _ => {}
    }
    s.split(',')
        .map(|x| match x.trim() {
            "manifest" => Ok(Disturbance::CorruptManifest),
            "wal" => Ok(Disturbance::WalGarbage),
            "state" => Ok(Disturbance::DeleteStateDir),
            "hook" => Ok(Disturbance::Hook),
            "fill-disk" => Err("--disturb fill-disk needs --simfs".into()),
            o => Err(format!(
                "--disturb: unknown disturbance {o:?} (manifest, wal, state, hook; fill-disk with --simfs)"
            )),
        })
        .collect()
}

/// The command line that reproduces this run (the seed made explicit).
fn repro_command(seed: u64, has_seed: bool) -> String {
    let mut parts: Vec<String> = std::env::args()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect();
    if !has_seed {
        parts.push(format!("--seed {seed}"));
    }
    parts.join(" ")
}

fn run_chaos(a: Box<RunArgs>) -> Result<bool, String> {
    let seed = a.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (t ^ (u64::from(std::process::id()) << 20)) % 1_000_000_000
    });
    if a.simfs {
        return run_simfs(&a, seed);
    }
    if a.lines.is_some() || a.max_steps.is_some() || a.late_producer {
        return Err("--lines, --max-steps and --late-producer belong to --simfs".into());
    }
    let spate_bin =
        std::env::current_exe().map_err(|e| format!("locating the spate binary: {e}"))?;
    let program = Program::parse(&a.program);
    let mut failpoints: Vec<String> = match a.failpoints.as_deref() {
        None | Some("") | Some("none") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
    };
    if !failpoints.is_empty() && !matches!(program, Program::Custom(_)) {
        // The built-in programs run this binary: it must have the points compiled in.
        let (known, compiled) =
            spate_chaos::list_failpoints(&spate_bin).map_err(|e| e.to_string())?;
        if !compiled {
            return Err("--failpoints: this spate build has no fail points (cargo build -p spate-cli --features failpoints)".into());
        }
        if failpoints == ["all"] {
            failpoints = known;
        } else if let Some(u) = failpoints.iter().find(|f| !known.contains(f)) {
            return Err(format!(
                "--failpoints: unknown fail point {u:?} (spate chaos failpoints lists them)"
            ));
        }
    } else if failpoints == ["all"] {
        return Err(
            "--failpoints all needs a built-in --program (give a list for a custom binary)".into(),
        );
    }
    if a.cycles == 0 && failpoints.is_empty() {
        return Err("--cycles 0 and no --failpoints: nothing to do".into());
    }
    if !(0.0..=1.0).contains(&a.disturb_rate) || !(0.0..=1.0).contains(&a.early_kill) {
        return Err("--disturb-rate and --early-kill are probabilities (0.0–1.0)".into());
    }
    let mut disturbances = parse_disturb(&a.disturb)?;
    if a.disturb == "all" && a.hook.is_some() {
        disturbances.push(Disturbance::Hook);
    }
    if disturbances.contains(&Disturbance::Hook) && a.hook.is_none() {
        return Err("--disturb hook needs --hook CMD".into());
    }
    if let Program::Custom(p) = &program {
        if !p.is_file() {
            return Err(format!(
                "--program {}: not a file (nor wordcount, wordcount-per-batch, clicks)",
                p.display()
            ));
        }
    }
    let (work, temp) = work_dir(&a, seed);
    let total = a.cycles + failpoints.len() as u32;
    // Ctrl-C / SIGTERM: the harness kills its running child and stops (no process left behind).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))
            .map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    let cfg = ChaosConfig {
        spate_bin,
        program,
        seed,
        schedule: ScheduleParams {
            kill_cycles: a.cycles,
            failpoints,
            failpoint_action: a.failpoint_action.clone(),
            max_failpoint_skip: a.failpoint_skip,
            failpoint_timeout_ms: a.failpoint_timeout_ms,
            chunks: a.chunks.unwrap_or(total + 5),
            min_kill_ms: a.min_kill_ms,
            max_kill_ms: a.max_kill_ms.max(a.min_kill_ms),
            early_kill_probability: a.early_kill,
            max_early_ms: 400,
            disturbance_probability: a.disturb_rate,
            disturbances,
            mix_backends: a.mix_backends,
        },
        store: a.store.clone(),
        wal_dir: a.wal_dir.clone(),
        envs: Vec::new(),
        work_dir: work.clone(),
        lines_per_chunk: a.lines_per_chunk,
        batch_ms: a.batch_ms,
        final_idle_ms: a.final_idle_ms,
        reference: a.reference,
        command: repro_command(seed, a.seed.is_some()),
        verbose: !a.quiet,
        stop: Some(stop),
        hook: a.hook.clone(),
        max_backlog: a.max_backlog,
    };
    let report = spate_chaos::run(&cfg).map_err(|e| e.to_string())?;
    finish(&a, &report, &work, temp)
}

/// A new work directory under the system temp dir for `seed` (deleted after a passing run).
fn work_dir(a: &RunArgs, seed: u64) -> (PathBuf, bool) {
    match &a.work {
        Some(w) => (w.clone(), false),
        None => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            (
                std::env::temp_dir().join(format!("spate-chaos-{seed}-{t}-{}", std::process::id())),
                true,
            )
        }
    }
}

/// `--simfs`: the in-process mode (spate_chaos::simfs).
fn run_simfs(a: &RunArgs, seed: u64) -> Result<bool, String> {
    let fill_disk = match a.disturb.as_str() {
        "none" | "" => false,
        "fill-disk" | "all" => true,
        o => {
            return Err(format!(
                "--disturb {o:?}: the --simfs mode knows `none` and `fill-disk` (the others need --program runs)"
            ))
        }
    };
    if a.failpoints.is_some() || a.store.is_some() || a.wal_dir.is_some() || a.hook.is_some() {
        return Err(
            "--simfs runs in process: --failpoints, --store, --wal-dir and --hook do not apply"
                .into(),
        );
    }
    if a.program != "wordcount" {
        return Err("--simfs runs the in-process word count only (no --program)".into());
    }
    if !(0.0..=1.0).contains(&a.disturb_rate) {
        return Err("--disturb-rate is a probability (0.0–1.0)".into());
    }
    let max_steps = a.max_steps.unwrap_or(24);
    if max_steps == 0 {
        return Err("--max-steps must be at least 1".into());
    }
    let (work, temp) = work_dir(a, seed);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(&stop))
            .map_err(|e| format!("installing a signal handler: {e}"))?;
    }
    let mut cfg = spate_chaos::simfs::SimConfig::new(seed, a.cycles, work.clone());
    cfg.lines = a.lines;
    cfg.fill_disk = fill_disk;
    cfg.disturb_rate = a.disturb_rate;
    cfg.max_steps = max_steps;
    cfg.eager_producer = !a.late_producer;
    cfg.command = repro_command(seed, a.seed.is_some());
    cfg.verbose = !a.quiet;
    cfg.stop = Some(stop);
    let report = spate_chaos::simfs::run(&cfg).map_err(|e| e.to_string())?;
    finish(a, &report, &work, temp)
}

/// Writes the report (`--report`), prints the summary and the verdict, removes a passing run's
/// temporary work directory.
fn finish(
    a: &RunArgs,
    report: &spate_chaos::Report,
    work: &std::path::Path,
    temp: bool,
) -> Result<bool, String> {
    let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    match &a.report {
        Some(p) if p.as_os_str() == "-" => println!("{json}"),
        Some(p) => std::fs::write(p, &json).map_err(|e| format!("writing {}: {e}", p.display()))?,
        None => {}
    }
    let to_stdout = a.report.as_ref().is_some_and(|p| p.as_os_str() == "-");
    if to_stdout {
        eprintln!("{}", report.summary());
    } else {
        println!("{}", report.summary());
    }
    let passed = report.passed();
    if passed && temp && !a.keep {
        let _ = std::fs::remove_dir_all(work);
    }
    Ok(passed)
}
