//! What `spate wordcount` and `spate clicks` share: input and engine flags, the input stream
//! (socket or directory), the live status line, `--output`, and the stop conditions.

use super::output::write_batch;
use clap::{Args, ValueEnum};
use spate_sources::file::{FileSourceConfig, FileSourceStats};
use spate_sources::lines::{InvalidUtf8Policy, LinePolicy, OverlongPolicy};
use spate_sources::socket::{SocketConfig, SocketStats, SocketTextReceiver};
use spate_streaming::{
    write_file_atomically, BatchInfo, DStream, DurationMs, FlowControlStatus, ReceiverInfo,
    StreamingConfig, StreamingContext, StreamingListener,
};
use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Parses a duration flag (`1s`, `500ms`, `2m`, or plain ms).
///
/// # Errors
/// A one-line message naming the value.
pub(crate) fn parse_duration_arg(s: &str) -> Result<DurationMs, String> {
    parse_duration(s)
}

/// Parses a byte count: `1048576`, `512KiB`, `16MiB`, `1GiB`.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("B", 1),
    ]
    .iter()
    .find_map(|(suf, m)| t.strip_suffix(suf).map(|n| (n.trim(), *m)))
    .unwrap_or((t, 1));
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a byte count (e.g. 16MiB, 4096)"))
}

fn parse_duration(s: &str) -> Result<DurationMs, String> {
    let t = s.trim();
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(DurationMs::from_millis(ms));
    }
    humantime::parse_duration(t)
        .map(DurationMs::from)
        .map_err(|e| format!("{s:?} is not a duration (e.g. 1s, 500ms, 2m): {e}"))
}

/// Parses `--batch`: a duration in [`spate_streaming::BATCH_INTERVAL_BOUNDS`] ([1 ms, 1 h]).
fn parse_batch(s: &str) -> Result<DurationMs, String> {
    bounded(s, "--batch", spate_streaming::BATCH_INTERVAL_BOUNDS)
}

/// Parses `--idle` / `--duration`: a duration in [`spate_streaming::STOP_CONDITION_BOUNDS`]
/// ([1 ms, 24 h]).
fn parse_stop_condition(s: &str) -> Result<DurationMs, String> {
    bounded(s, "stop condition", spate_streaming::STOP_CONDITION_BOUNDS)
}

fn bounded(s: &str, key: &str, b: spate_streaming::IntervalBounds) -> Result<DurationMs, String> {
    let d = parse_duration(s)?;
    spate_streaming::check_interval(key, d, b).map_err(|e| e.to_string())?;
    Ok(d)
}

/// Invalid UTF-8 policy flag values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Utf8Flag {
    /// Replace invalid sequences with U+FFFD and keep the line.
    Replace,
    /// Drop the line (counted).
    Skip,
    /// Socket: drop the connection and reconnect; directory: fail the batch.
    Error,
}

/// Overlong-line policy flag values.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum OverlongFlag {
    /// Drop the line (counted).
    Skip,
    /// Socket: drop the connection and reconnect; directory: fail the batch.
    Error,
}

/// Input, engine, output and stop flags shared by the jobs.
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// Read lines from a TCP server at HOST:PORT (spate connects as a client, as Spark's
    /// socketTextStream connects to `nc -lk PORT`); reconnects after the restart delay.
    #[arg(
        long,
        value_name = "HOST:PORT",
        required_unless_present = "dir",
        conflicts_with = "dir"
    )]
    pub(crate) socket: Option<String>,
    /// With --socket: acknowledged ingest (protocol spate-ack/1, served by `spate feed --ack`): the
    /// receiver tells the sender where to resume and acknowledges lines once stored; with
    /// --checkpoint (receiver WAL on), a kill -9 loses no acknowledged line. See
    /// docs/format/feed-protocol.md.
    #[arg(long, requires = "socket")]
    pub(crate) ack: bool,
    /// Read new text files moved atomically into this directory (Spark's textFileStream rules;
    /// see docs/sources.md).
    #[arg(long, value_name = "PATH")]
    pub(crate) dir: Option<PathBuf>,
    /// With --dir: also read the files already in the directory at start (Spark's
    /// newFilesOnly = false; files older than the remember window, 60 s, stay ignored).
    #[arg(long, requires = "dir")]
    pub(crate) existing_files: bool,
    /// Batch interval (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_batch)]
    pub(crate) batch: DurationMs,
    /// Block interval of the socket receiver (default: the engine's, 200 ms).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) block_interval: Option<DurationMs>,
    /// Delay before the socket receiver reconnects (default: the engine's, 2 s).
    #[arg(long, value_parser = parse_duration)]
    pub(crate) restart_delay: Option<DurationMs>,
    /// Maximum lines/s of the socket receiver (default: unlimited).
    #[arg(long)]
    pub(crate) max_rate: Option<u64>,
    /// Memory budget of received, unprocessed data (bytes; suffixes KiB, MiB, GiB; 0: unlimited;
    /// default 256MiB). At the budget the receiver stops reading: TCP pushes back on the sender.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) memory_budget: Option<u64>,
    /// Largest block (bytes, suffixes as --memory-budget; default 4MiB): blocks are cut by size as
    /// well as every block interval.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub(crate) max_block_bytes: Option<u64>,
    /// Turn back-pressure (the PID rate controller, on by default) off; the memory budget still
    /// applies.
    #[arg(long)]
    pub(crate) no_backpressure: bool,
    /// What a restart does with batch times missed while the job was down: `coalesce` (the
    /// built-in jobs' default: each run of missed times becomes one batch; refused, with the
    /// reason in the restart report, for graphs where batch boundaries matter, e.g. `clicks`'
    /// `map_with_state`), `generate_all` (Spark's) or `coalesce_empty` (docs/recovery.md).
    #[arg(
        long,
        value_name = "POLICY",
        env = "SPATE_MISSED_BATCHES",
        default_value = "coalesce"
    )]
    pub(crate) missed_batches: spate_streaming::MissedBatches,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub(crate) parallelism: Option<usize>,
    /// Engine configuration file (TOML; SPATE_* environment variables override it, these flags
    /// override both).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Checkpoint location (file:///path, a bare path, s3://bucket/prefix). Set, the job writes
    /// metadata checkpoints and a receiver WAL and recovers through get_or_create after a crash
    /// (a changed build is refused with a diff). See docs/recovery.md.
    #[arg(long, value_name = "URL")]
    pub(crate) checkpoint: Option<String>,
    /// Write-ahead log directory (default: <checkpoint>/wal; required for s3:// checkpoints).
    #[arg(long, value_name = "DIR")]
    pub(crate) wal_dir: Option<PathBuf>,
    /// With --checkpoint: if no checkpoint there is valid, archive what is there (never delete)
    /// and start fresh (Spark's createOnError).
    #[arg(long)]
    pub(crate) create_on_error: bool,
    /// Write each batch's result to DIR/<name>-<batch ms>.txt (key<TAB>value lines, sorted by
    /// key, written atomically).
    #[arg(long, value_name = "DIR")]
    pub(crate) output: Option<PathBuf>,
    /// Name of the output files (default: the job's name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Elements printed per batch in Spark's format (0: print nothing).
    #[arg(long, default_value_t = 10)]
    pub(crate) print: usize,
    /// Stop (gracefully) after at least this many batches completed.
    #[arg(long)]
    pub(crate) batches: Option<u64>,
    /// Stop (gracefully) after this long (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_stop_condition)]
    pub(crate) duration: Option<DurationMs>,
    /// Stop (gracefully) once no input arrived for this long (counted from start or from the last
    /// batch with records).
    #[arg(long, value_parser = parse_stop_condition)]
    pub(crate) idle: Option<DurationMs>,
    /// Invalid UTF-8 in a line.
    #[arg(long, value_enum, default_value = "replace")]
    pub(crate) invalid_utf8: Utf8Flag,
    /// Longest accepted line, bytes.
    #[arg(long, default_value_t = spate_sources::lines::DEFAULT_MAX_LINE_BYTES)]
    pub(crate) max_line_bytes: usize,
    /// Lines longer than --max-line-bytes.
    #[arg(long, value_enum, default_value = "skip")]
    pub(crate) overlong: OverlongFlag,
    /// No live status line on stderr.
    #[arg(long)]
    pub(crate) no_status: bool,
    /// Write this build's description (graph and computation-defining settings, JSON) to FILE
    /// (`-`: stdout) and exit without starting, connecting or reading input. Give the same flags
    /// as the run it describes; compare with a checkpoint by `spate checkpoint diff URL --graph FILE`.
    #[arg(long, value_name = "FILE")]
    pub(crate) describe: Option<PathBuf>,
}

impl JobArgs {
    fn line_policy(&self) -> LinePolicy {
        LinePolicy {
            max_line_bytes: self.max_line_bytes,
            invalid_utf8: match self.invalid_utf8 {
                Utf8Flag::Replace => InvalidUtf8Policy::Replace,
                Utf8Flag::Skip => InvalidUtf8Policy::Skip,
                Utf8Flag::Error => InvalidUtf8Policy::Error,
            },
            overlong: match self.overlong {
                OverlongFlag::Skip => OverlongPolicy::Skip,
                OverlongFlag::Error => OverlongPolicy::Error,
            },
        }
    }

    /// Validates the flags that the engine would only reject later. With `--describe`, the checks
    /// that touch the filesystem (`--dir` exists, `--output` created) are skipped: describing a
    /// build needs neither.
    fn check(&self) -> Result<(), String> {
        if let Some(addr) = &self.socket {
            let ok = addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("--socket {addr:?}: expected HOST:PORT"));
            }
        }
        if self.describe.is_some() {
            return if self.max_line_bytes == 0 {
                Err("--max-line-bytes must be at least 1".into())
            } else {
                Ok(())
            };
        }
        if let Some(d) = &self.dir {
            if !d.is_dir() {
                return Err(format!("--dir {}: not a directory", d.display()));
            }
        }
        if let Some(o) = &self.output {
            std::fs::create_dir_all(o).map_err(|e| format!("--output {}: {e}", o.display()))?;
        }
        if self.max_line_bytes == 0 {
            return Err("--max-line-bytes must be at least 1".into());
        }
        Ok(())
    }
}

/// Live counters of the job's input.
#[derive(Debug, Clone)]
pub(crate) enum InputStats {
    /// Socket receiver counters.
    Socket(Arc<SocketStats>),
    /// Directory source counters.
    Files(Arc<FileSourceStats>),
}

impl InputStats {
    fn status(&self) -> String {
        match self {
            InputStats::Socket(s) => {
                let s = s.snapshot();
                format!(
                    "socket: {} lines, {} bytes, {} reconnects, {} invalid utf-8, {} too long",
                    s.lines, s.bytes, s.reconnects, s.invalid_utf8, s.too_long
                )
            }
            InputStats::Files(s) => {
                let s = s.snapshot();
                format!(
                    "files: {} selected, {} bytes, {} lines, {} invalid utf-8, {} too long",
                    s.files_selected, s.bytes_selected, s.lines, s.invalid_utf8, s.too_long
                )
            }
        }
    }
}

/// The engine configuration from defaults, `--config`, `SPATE_*` and the flags.
fn config(args: &JobArgs, app: &str) -> Result<StreamingConfig, String> {
    args.check()?;
    let mut cfg = StreamingConfig::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    cfg.app_name = app.to_owned();
    cfg.batch_interval = args.batch;
    if let Some(b) = args.block_interval {
        cfg.block_interval = b;
    }
    if let Some(d) = args.restart_delay {
        cfg.receiver_restart_delay = d;
    }
    if let Some(r) = args.max_rate {
        cfg.max_rate_per_receiver = Some(r);
    }
    if let Some(b) = args.memory_budget {
        cfg.receiver_memory_budget = b;
    }
    if let Some(b) = args.max_block_bytes {
        cfg.max_block_bytes = b;
    }
    cfg.missed_batches = args.missed_batches;
    if args.no_backpressure {
        cfg.backpressure = false;
    }
    if let Some(p) = args.parallelism {
        cfg.parallelism = p;
        cfg.default_partitions = p;
    }
    if args.checkpoint.is_some() {
        cfg.checkpoint.clone_from(&args.checkpoint);
    }
    if let Some(w) = &args.wal_dir {
        cfg.wal_dir = Some(w.clone());
    }
    if args.create_on_error {
        cfg.create_on_error = true;
    }
    if let Some(url) = &cfg.checkpoint {
        let remote = url.starts_with("s3://") || url.starts_with("memory://");
        if remote && cfg.wal_dir.is_none() && args.socket.is_some() {
            return Err(format!(
                "--checkpoint {url}: a remote checkpoint needs --wal-dir DIR on local disk when \
                 receivers are used (the receiver WAL needs a local file with fdatasync)"
            ));
        }
    }
    cfg.stop_gracefully_on_signal = true;
    cfg.validate().map_err(|e| e.to_string())?;
    Ok(cfg)
}

/// Builds the job's context: with a checkpoint (`--checkpoint` or the config's), through
/// `StreamingContext::get_or_create` (recovering, or refusing an incompatible checkpoint with its
/// diff); otherwise a fresh context. `build` registers the job's graph and returns its input
/// counters. With `--describe`, the checkpoint is not touched.
pub(crate) fn context<F>(
    args: &JobArgs,
    app: &str,
    build: F,
) -> Result<(StreamingContext, InputStats), String>
where
    F: FnOnce(&StreamingContext) -> Result<InputStats, String>,
{
    let mut cfg = config(args, app)?;
    let mut stats = None;
    let mut failure = None;
    let mut build = Some(build);
    let mut build_in = |ctx: &StreamingContext| -> spate_streaming::Result<()> {
        let Some(build) = build.take() else {
            return Err(spate_streaming::StreamingError::Failed {
                message: "the job graph was built twice".into(),
            });
        };
        match build(ctx) {
            Ok(s) => {
                stats = Some(s);
                Ok(())
            }
            Err(e) => {
                failure = Some(e.clone());
                Err(spate_streaming::StreamingError::Failed { message: e })
            }
        }
    };
    let url = cfg.checkpoint.clone().filter(|_| args.describe.is_none());
    let ctx = match url {
        Some(url) => {
            let r = StreamingContext::get_or_create(&url, cfg, &mut build_in);
            match r {
                Ok(ctx) => ctx,
                Err(e) => {
                    return Err(failure.unwrap_or_else(|| match &e {
                        spate_streaming::StreamingError::IncompatibleCheckpoint {
                            diff, ..
                        } => {
                            format!(
                                "{e}\n  {}\n(run `spate checkpoint diff {url} --graph FILE` with \
                                 FILE from --describe to check a build before starting it)",
                                diff.lines().join("\n  ")
                            )
                        }
                        _ => e.to_string(),
                    }))
                }
            }
        }
        None => {
            cfg.checkpoint = None;
            let ctx = StreamingContext::new(cfg).map_err(|e| e.to_string())?;
            if let Err(e) = build_in(&ctx) {
                return Err(failure.unwrap_or_else(|| e.to_string()));
            }
            ctx
        }
    };
    let stats = stats.ok_or("the job registered no input")?;
    Ok((ctx, stats))
}

/// With a checkpoint, prints the restart line (`spate: restart: ...`) and where the restart report
/// was written. Called after `start()`, which makes the first checkpoint durable (it records the
/// file source's new-files threshold): a file moved in after the line is counted even if the
/// process is killed right after it, since the next run restores that threshold instead of taking
/// a new one. (Printed before `start()`, a kill in between lost such files: the next run started
/// fresh with a later threshold.)
fn print_restart_line(ctx: &StreamingContext) {
    let Some(rep) = ctx.restart_report() else {
        return;
    };
    // The file source ignores files modified at or before its creation time, in whole ms (Spark's
    // newFilesOnly, SPARK-4518's `<=`), and file systems stamp mtimes from the kernel's coarse
    // clock, up to a tick (<= 10 ms) behind: print the line only once that much has passed, so a
    // file written after the line is always new.
    wait_past_mtime_granularity();
    eprintln!("spate: restart: {}", rep.summary());
    if let (Some(w), Some(url)) = (&rep.written_to, &ctx.config().checkpoint) {
        eprintln!("spate: restart report: {url}/{w}");
    }
}

fn wall_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Returns once the wall clock is 20 ms past what it read on entry: more than the lag of the
/// kernel's coarse clock that stamps file mtimes (one tick, 10 ms at HZ=100).
fn wait_past_mtime_granularity() {
    let t = wall_ms();
    while wall_ms() <= t + 20 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The input lines of the job.
pub(crate) fn input(
    ctx: &StreamingContext,
    args: &JobArgs,
) -> Result<(DStream<String>, InputStats), String> {
    let lines = args.line_policy();
    if let Some(addr) = &args.socket {
        let rx = SocketTextReceiver::with_config(
            addr.clone(),
            SocketConfig {
                lines,
                ack: args.ack,
                ..SocketConfig::default()
            },
        );
        let stats = rx.stats();
        let s = ctx.receiver_stream(rx).map_err(|e| e.to_string())?;
        Ok((s, InputStats::Socket(stats)))
    } else if let Some(dir) = &args.dir {
        let mut fc = FileSourceConfig::new(args.batch);
        fc.lines = lines;
        fc.new_files_only = !args.existing_files;
        let src = ctx.text_file_source(dir.clone(), fc);
        let stats = src.stats();
        let s = ctx.replayable_stream(src).map_err(|e| e.to_string())?;
        Ok((s, InputStats::Files(stats)))
    } else {
        Err("one of --socket or --dir is required".into())
    }
}

/// Registers `--print` (Spark's format, `(key,value)`) and `--output` on a keyed result.
pub(crate) fn outputs<K, V>(
    stream: &DStream<(K, V)>,
    args: &JobArgs,
    default_name: &str,
) -> Result<(), String>
where
    K: Ord + Display + Clone + Send + Sync + 'static,
    V: Display + Clone + Send + Sync + 'static,
{
    if args.print > 0 {
        stream
            .print_with(args.print, |(k, v)| format!("({k},{v})"))
            .map_err(|e| e.to_string())?;
    }
    if let Some(dir) = args.output.clone() {
        let name = args.name.clone().unwrap_or_else(|| default_name.to_owned());
        stream
            .try_foreach_batch(move |t, batch| {
                let mut items = batch.to_vec();
                write_batch(&dir, &name, t.as_millis(), &mut items)?;
                Ok(())
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `--describe FILE`: writes `ctx.describe_build()` as pretty JSON to FILE (atomically) or stdout
/// (`-`). The context is never started.
pub(crate) fn describe(ctx: &StreamingContext, file: &Path) -> Result<(), String> {
    let mut json = serde_json::to_string_pretty(&ctx.describe_build())
        .map_err(|e| format!("--describe: cannot encode the build description: {e}"))?;
    json.push('\n');
    if file == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(json.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("--describe -: {e}"))
    } else {
        write_file_atomically(file, json.as_bytes())
            .map_err(|e| format!("--describe {}: {e}", file.display()))
    }
}

/// Prints the status line and tracks what the stop conditions need.
struct Status {
    start: Instant,
    batches: AtomicU64,
    records: AtomicU64,
    last_input: Mutex<Instant>,
    /// Batches submitted but not completed: a backlog (e.g. the batches a restart re-runs) is not
    /// idleness.
    outstanding: AtomicU64,
    /// True once a timer batch (not one a restart rescheduled) completed: it listed the input
    /// directory, so `--idle` counts from then (a restart's catch-up is never idleness).
    listed: std::sync::atomic::AtomicBool,
    input: InputStats,
    extra: Box<dyn Fn() -> String + Send + Sync>,
    /// The context's flow-control counters (memory budget, time throttled).
    flow: Box<dyn Fn() -> FlowControlStatus + Send + Sync>,
    enabled: bool,
    tty: bool,
}

/// ` | budget 12.0/256.0 MiB, throttled 1.2 s` for the status and summary lines.
fn flow_status(f: &FlowControlStatus) -> String {
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let budget = if f.budget_bytes == 0 {
        "unlimited".to_owned()
    } else {
        format!("{:.1}", mib(f.budget_bytes))
    };
    format!(
        " | budget {:.1}/{budget} MiB, throttled {:.1} s",
        mib(f.held_bytes),
        f.throttled_ms as f64 / 1000.0
    )
}

impl std::fmt::Debug for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Status")
            .field("batches", &self.batches)
            .finish()
    }
}

impl StreamingListener for Status {
    fn on_batch_submitted(&self, _info: &BatchInfo) {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    fn on_batch_completed(&self, info: &BatchInfo) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(info.num_records, Ordering::Relaxed);
        let first_listing = !info.rescheduled && !self.listed.swap(true, Ordering::Relaxed);
        if info.num_records > 0 || info.rescheduled || first_listing {
            if let Ok(mut g) = self.last_input.lock() {
                *g = Instant::now();
            }
        }
        if !self.enabled {
            return;
        }
        let line = format!(
            "batch {} ms: {} records, processing {} ms, scheduling delay {} ms, total delay {} ms{} | {}{}{}",
            info.batch_time.as_millis(),
            info.num_records,
            info.processing_delay_ms().unwrap_or(0),
            info.scheduling_delay_ms().unwrap_or(0),
            info.total_delay_ms().unwrap_or(0),
            info.recovery.map_or_else(String::new, |r| format!(" | {r}")),
            self.input.status(),
            (self.extra)(),
            flow_status(&(self.flow)()),
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    fn on_stop_signal(&self, signal: i32, graceful_timeout_ms: u64) {
        let name = match signal {
            2 => "SIGINT".to_owned(),
            15 => "SIGTERM".to_owned(),
            n => format!("signal {n}"),
        };
        let lead = if self.tty { "\n" } else { "" };
        eprintln!(
            "{lead}spate: {name}: stopping gracefully (at most {:.1} s); {name} again stops at once \
             (exit {})",
            graceful_timeout_ms as f64 / 1000.0,
            128 + signal
        );
    }

    fn on_receiver_error(&self, info: &ReceiverInfo) {
        if let Some(e) = &info.last_error {
            let mut err = std::io::stderr().lock();
            let nl = if self.tty { "\n" } else { "" };
            let _ = writeln!(err, "{nl}receiver {}: {e}", info.description);
        }
    }
}

/// Starts the context and runs until a stop condition, SIGTERM/SIGINT (graceful, by the engine)
/// or a failed batch. Prints a summary to stderr; `summary_extra` adds job-specific lines.
pub(crate) fn run(
    ctx: &StreamingContext,
    args: &JobArgs,
    input: InputStats,
    extra: Box<dyn Fn() -> String + Send + Sync>,
    summary_extra: &dyn Fn() -> String,
) -> Result<(), String> {
    let now = Instant::now();
    let status = Arc::new(Status {
        start: now,
        batches: AtomicU64::new(0),
        records: AtomicU64::new(0),
        last_input: Mutex::new(now),
        outstanding: AtomicU64::new(0),
        listed: std::sync::atomic::AtomicBool::new(false),
        input,
        extra,
        flow: {
            let ctx = ctx.clone();
            Box::new(move || ctx.flow_control())
        },
        enabled: !args.no_status,
        tty: std::io::stderr().is_terminal(),
    });
    ctx.add_listener(Arc::clone(&status) as Arc<dyn StreamingListener>);
    ctx.start().map_err(|e| e.to_string())?;
    print_restart_line(ctx);
    let mut reason = "stopped by signal";
    let result = loop {
        match ctx.await_termination_timeout(Duration::from_millis(100)) {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e.to_string()),
        }
        let done = status.batches.load(Ordering::Relaxed);
        if args.batches.is_some_and(|n| done >= n) {
            reason = "batch limit reached";
        } else if args
            .duration
            .is_some_and(|d| status.start.elapsed() >= d.to_std())
        {
            reason = "duration reached";
        } else if args.idle.is_some_and(|d| {
            if status.outstanding.load(Ordering::Relaxed) > 1
                || !status.listed.load(Ordering::Relaxed)
            {
                // Batches queued behind the running one (a restart's backlog): not idle; restart
                // the idle clock. (One outstanding batch is just the timer's current batch.)
                if let Ok(mut g) = status.last_input.lock() {
                    *g = Instant::now();
                }
                return false;
            }
            status
                .last_input
                .lock()
                .map(|t| t.elapsed() >= d.to_std())
                .unwrap_or(false)
        }) {
            reason = "input idle";
        } else {
            continue;
        }
        break ctx.stop(true).map_err(|e| e.to_string());
    };
    // A batch may have failed during the graceful stop.
    let result = result.and_then(|()| ctx.await_termination().map_err(|e| e.to_string()));
    let _ = ctx.stop(false);
    // Issue 13: a stop never drops received data silently. What it could not process is in the
    // receiver WAL (a restart processes it) with a checkpoint, lost without one: exit non-zero.
    let flow = ctx.flow_control();
    let unprocessed = if flow.unprocessed_blocks == 0 {
        Ok(())
    } else if ctx.config().checkpoint.is_some() && ctx.config().receiver_wal {
        let _ = writeln!(
            std::io::stderr(),
            "spate: stop left {} received blocks ({} records) unprocessed; they are in the receiver \
             WAL and the next run processes them",
            flow.unprocessed_blocks,
            flow.unprocessed_records
        );
        Ok(())
    } else {
        Err(format!(
            "stop left {} received blocks ({} records) unprocessed and there is no receiver WAL: \
             they are lost (raise graceful_stop_timeout, lower --memory-budget, or use --checkpoint)",
            flow.unprocessed_blocks, flow.unprocessed_records
        ))
    };
    let mut err = std::io::stderr().lock();
    if status.tty && status.enabled {
        let _ = writeln!(err);
    }
    let _ = writeln!(
        err,
        "spate: {} after {} batches, {} records in {:.1} s | {}{}{}",
        if result.is_ok() { reason } else { "failed" },
        status.batches.load(Ordering::Relaxed),
        status.records.load(Ordering::Relaxed),
        status.start.elapsed().as_secs_f64(),
        status.input.status(),
        summary_extra(),
        flow_status(&flow),
    );
    result.and(unprocessed)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_counts_parse_and_garbage_is_refused_by_name() {
        for (s, want) in [
            ("4096", 4096),
            ("16MiB", 16 << 20),
            (" 512 KiB ", 512 << 10),
            ("1GiB", 1 << 30),
            ("7B", 7),
            ("0", 0),
        ] {
            assert_eq!(parse_bytes(s), Ok(want), "{s:?}");
        }
        for s in [
            "",
            "MiB",
            "-1MiB",
            "1.5MiB",
            "16 mb",
            "99999999999GiB",
            "\u{0}",
            "１MiB",
        ] {
            let e = parse_bytes(s).expect_err(s);
            assert!(e.contains("is not a byte count"), "{s:?}: {e}");
        }
    }
}
