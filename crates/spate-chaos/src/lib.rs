//! `spate-chaos`: crash testing as a product.
//!
//! [`run`] runs a streaming program as a child process over a deterministic, replayable input (a
//! seeded corpus cut into chunks that are moved atomically into the program's `--dir`), and
//! repeatedly lets it run, ends it — SIGKILL at a seeded instant, or an armed fail point
//! (`SPATE_FAILPOINTS`) — optionally disturbs what it persisted, and restarts it (the program
//! recovers through `get_or_create`), until the input is consumed; then a final clean run ends on
//! idle. An oracle compares the final state and the outputs with an independent computation and
//! with a crash-free reference run: lost input, double-counted state, output batches missing,
//! changed or duplicated, and the restart reports' outcomes. The result is a [`Report`] (JSON and
//! a readable summary). Everything random is drawn from one seed ([`schedule::draw`]); a failing
//! seed re-runs the same schedule.
//!
//! The contract a program must follow is documented in `docs/chaos.md`.

mod harness;
mod oracle;
pub mod process;
pub mod rng;
pub mod schedule;
pub mod simfs;

pub use harness::run;
pub use oracle::{count_clicks, count_words, Finding, FindingKind, Table};
use serde::Serialize;
use std::path::PathBuf;

/// The fail points a `spate` binary defines, from `<bin> info --failpoints` (tab-separated lines
/// after a `#` header): the names, and whether the build compiled them in (`--features
/// failpoints`). What `--failpoints all` arms, one cycle each.
///
/// # Errors
/// [`ChaosError::Config`] when the binary cannot be run or does not list fail points.
pub fn list_failpoints(bin: &std::path::Path) -> Result<(Vec<String>, bool), ChaosError> {
    let o = std::process::Command::new(bin)
        .args(["info", "--failpoints"])
        .env_remove("SPATE_FAILPOINTS")
        .output()
        .map_err(|e| ChaosError::Config(format!("{} info --failpoints: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("");
    if !o.status.success() || !header.starts_with("# fail points") {
        return Err(ChaosError::Config(format!(
            "{} info --failpoints does not list fail points: {}",
            bin.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    let compiled = !header.contains("NOT compiled in");
    let names = lines
        .filter_map(|l| l.split('\t').next())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    Ok((names, compiled))
}

/// The program under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// `spate wordcount --checkpoint` (running totals per word); oracle: the newest output file
    /// equals an independent count of the corpus.
    Wordcount,
    /// `spate wordcount --checkpoint --per-batch`; oracle: the sum of every batch file equals the
    /// independent count, batch files are never changed or missing.
    WordcountPerBatch,
    /// `spate clicks --checkpoint` (per-type running totals and active devices); oracle: the
    /// newest output file equals an independent sum.
    Clicks,
    /// A user binary speaking the contract of `docs/chaos.md`; oracle: its final newest output
    /// equals its own crash-free reference run's.
    Custom(PathBuf),
}

impl Program {
    /// `wordcount`, `wordcount-per-batch`, `clicks` or the binary's path.
    pub fn name(&self) -> String {
        match self {
            Program::Wordcount => "wordcount".into(),
            Program::WordcountPerBatch => "wordcount-per-batch".into(),
            Program::Clicks => "clicks".into(),
            Program::Custom(p) => p.display().to_string(),
        }
    }

    /// Parses `wordcount`, `wordcount-per-batch`, `clicks`, or else a path to a binary.
    pub fn parse(s: &str) -> Program {
        match s {
            "wordcount" => Program::Wordcount,
            "wordcount-per-batch" => Program::WordcountPerBatch,
            "clicks" => Program::Clicks,
            p => Program::Custom(PathBuf::from(p)),
        }
    }

    fn is_builtin(&self) -> bool {
        !matches!(self, Program::Custom(_))
    }

    /// Whether the final result is the sum of every batch file (else the newest file's content).
    fn per_batch(&self) -> bool {
        matches!(self, Program::WordcountPerBatch)
    }

    fn corpus(&self) -> CorpusKind {
        match self {
            Program::Clicks => CorpusKind::Clicks,
            _ => CorpusKind::Words,
        }
    }
}

/// The input generator (`spate gen`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CorpusKind {
    /// `spate gen words`: 10-word lines.
    Words,
    /// `spate gen clicks --devices 300 --malformed 0.02`.
    Clicks,
}

/// A chaos run's settings.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// The `spate` binary: generates the corpus (`spate gen`) and is the program for the built-in
    /// programs.
    pub spate_bin: PathBuf,
    /// The program under test.
    pub program: Program,
    /// The seed every random choice is drawn from.
    pub seed: u64,
    /// The schedule's knobs (cycles, fail points, kill delays, disturbances).
    pub schedule: schedule::ScheduleParams,
    /// Checkpoint location of the chaos run; `None`: `<work>/run/ck`. A URL gets a unique suffix
    /// (`/chaos-<seed>-<ms>`) so runs never share a location. Must be empty.
    pub store: Option<String>,
    /// `--wal-dir` passed to the program (required by spate for `s3://` stores); `None`: the
    /// program's default (`<checkpoint>/wal`).
    pub wal_dir: Option<PathBuf>,
    /// Extra environment for every child (e.g. S3 endpoint and credentials).
    pub envs: Vec<(String, String)>,
    /// Working directory (input, outputs, local checkpoints). Created if missing.
    pub work_dir: PathBuf,
    /// Lines per input chunk.
    pub lines_per_chunk: u32,
    /// The program's `--batch` in ms (built-in programs).
    pub batch_ms: u64,
    /// `--idle` of the final run (and the reference run), ms: it must end on its own once every
    /// chunk is consumed.
    pub final_idle_ms: u64,
    /// Also run the program once without crashes and compare (always done for custom programs).
    pub reference: bool,
    /// The command that reproduces this run (printed on failure).
    pub command: String,
    /// Progress lines on stderr (one per cycle).
    pub verbose: bool,
    /// The `hook` disturbance: a shell command (`sh -c`) run between two runs, with
    /// `SPATE_CHAOS_WORK`, `SPATE_CHAOS_CHECKPOINT` and `SPATE_CHAOS_CYCLE` in its environment
    /// (e.g. restart the S3 server: `kill $(cat s3.pid); s3s-fs ... & echo $! > s3.pid`). Its exit
    /// status is recorded; a failing hook is a harness error.
    pub hook: Option<String>,
    /// Set (e.g. by a SIGINT/SIGTERM handler) to stop: the running child is killed and [`run`]
    /// returns [`ChaosError::Interrupted`] within about 100 ms.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// A finding when a restart reschedules more than this many batches (`--max-backlog`).
    pub max_backlog: Option<u64>,
}

/// Harness errors: the harness itself could not run (not a verdict about the program).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// A file system operation of the harness failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Generating the corpus failed.
    #[error("generating the corpus: {0}")]
    Corpus(String),
    /// The settings are inconsistent.
    #[error("invalid chaos settings: {0}")]
    Config(String),
    /// The `hook` disturbance command failed.
    #[error("hook {command:?}: {message}")]
    Hook {
        /// The command.
        command: String,
        /// Exit status or spawn error, and its stderr.
        message: String,
    },
    /// [`ChaosConfig::stop`] was set; the running child was killed.
    #[error("interrupted (the running program was killed; work directory kept)")]
    Interrupted,
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ChaosError {
    let what = what.into();
    move |source| ChaosError::Io { what, source }
}

/// What happened in one run of the program.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunRecord {
    /// Cycle number (`None` for the final run).
    pub cycle: Option<u32>,
    /// The plan of the cycle (`None` for the final run).
    pub plan: Option<schedule::CyclePlan>,
    /// The outcome word of the restart line (`Fresh`, `Restored`, ...), if printed.
    pub outcome: Option<String>,
    /// The restart line's summary, if printed.
    pub restart: Option<String>,
    /// Spawn → restart line, ms.
    pub restart_ms: Option<u64>,
    /// Spawn → first completed batch (`batch ` status line) after the restart line, ms.
    pub first_batch_ms: Option<u64>,
    /// How the process ended: `killed`, `exit 0`, `signal 6 (SIGABRT)`, ...
    pub ended: String,
    /// For fail point cycles: the program ended by itself (the point was reached).
    pub failpoint_hit: Option<bool>,
    /// Chunks moved in during this run.
    pub moved: Vec<u32>,
    /// The disturbance applied after this run, and what it did.
    pub disturbed: Option<String>,
    /// Lifetime of the process, ms.
    pub ran_ms: u64,
    /// Batches the restart rescheduled (from the restart line), if printed.
    pub rescheduled: Option<u64>,
    /// The restored position (`restored through` of the restart line), ms, if printed.
    pub restored_through: Option<u64>,
}

/// Recovery time figures over the restored runs, ms.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecoveryTimes {
    /// Restored runs measured (restart line seen).
    pub restarts: usize,
    /// Median spawn → restart line.
    pub median_restart_ms: u64,
    /// Maximum spawn → restart line.
    pub max_restart_ms: u64,
    /// Runs in which a batch completed after the restart line.
    pub first_batches: usize,
    /// Median spawn → first completed batch.
    pub median_first_batch_ms: u64,
    /// Maximum spawn → first completed batch.
    pub max_first_batch_ms: u64,
}

/// The result of a chaos run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The command that reproduces the run.
    pub command: String,
    /// The program under test.
    pub program: String,
    /// `process` (a child process ended by SIGKILL or fail points, [`run`]) or `simfs`
    /// (in-process, power loss on a SimFs, [`simfs::run`]).
    pub mode: String,
    /// Crash cycles run (kill + fail point; SimFs crashes in the `simfs` mode).
    pub cycles: u32,
    /// SIGKILL cycles (SimFs crash cycles in the `simfs` mode).
    pub kills: u32,
    /// Fail point cycles.
    pub failpoint_cycles: u32,
    /// Fail points whose cycle ended by the point (the program aborted by itself).
    pub failpoints_hit: Vec<String>,
    /// Fail points armed but never reached (the cycle ended by SIGKILL after its timeout).
    pub failpoints_not_reached: Vec<String>,
    /// Disturbances applied.
    pub disturbances: u32,
    /// Input lines in the corpus.
    pub input_lines: u64,
    /// Lost units (words for word count; clicks and active devices for clicks): expected minus
    /// found, summed over keys where found is smaller.
    pub lost: u64,
    /// Double-counted units: found minus expected, summed over keys where found is larger (also
    /// counts excess seen in any intermediate output file of a running-totals program).
    pub duplicated: u64,
    /// Output batch files at the end.
    pub output_files: usize,
    /// Output batch files rewritten by a re-run batch with identical content.
    pub reemitted_identical: usize,
    /// Recovery times.
    pub recovery: RecoveryTimes,
    /// Every run, in order (the final run last).
    pub runs: Vec<RunRecord>,
    /// The reference run (no crashes), if made.
    pub reference: Option<RunRecord>,
    /// Everything the oracle found wrong.
    pub findings: Vec<Finding>,
    /// `pass` or `fail`.
    pub verdict: String,
    /// Wall time of the whole run, s.
    pub duration_s: f64,
    /// Where the work directory was (kept on failure).
    pub work_dir: String,
}

impl Report {
    /// True when the oracle found nothing wrong.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }

    /// A readable multi-line summary.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "chaos {}: seed {}, {} cycles ({} {}, {} fail point), {} disturbances, {} input lines, {:.1} s",
            self.program,
            self.seed,
            self.cycles,
            self.kills,
            if self.mode == "simfs" { "SimFs crash" } else { "SIGKILL" },
            self.failpoint_cycles,
            self.disturbances,
            self.input_lines,
            self.duration_s
        );
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for r in &self.runs {
            *outcomes
                .entry(
                    r.outcome
                        .clone()
                        .unwrap_or_else(|| "(no restart line)".into()),
                )
                .or_default() += 1;
        }
        let _ = writeln!(
            s,
            "  restart outcomes: {}",
            outcomes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if self.failpoint_cycles > 0 {
            let _ = writeln!(
                s,
                "  fail points hit: {} [{}]; not reached: {} [{}]",
                self.failpoints_hit.len(),
                self.failpoints_hit.join(", "),
                self.failpoints_not_reached.len(),
                self.failpoints_not_reached.join(", ")
            );
        }
        let r = &self.recovery;
        let _ = writeln!(
            s,
            "  recovery: spawn -> restart line median {} ms, max {} ms ({} restarts); spawn -> first batch median {} ms, max {} ms ({} runs)",
            r.median_restart_ms,
            r.max_restart_ms,
            r.restarts,
            r.median_first_batch_ms,
            r.max_first_batch_ms,
            r.first_batches
        );
        let _ = writeln!(s, "{}", crate::harness::backlog_summary(&self.runs));
        let _ = writeln!(
            s,
            "  outputs: {} batch files, {} re-emitted byte-identical; lost {}, duplicated {}",
            self.output_files, self.reemitted_identical, self.lost, self.duplicated
        );
        for f in self.findings.iter().take(20) {
            let _ = writeln!(s, "  FINDING {f}");
        }
        if self.findings.len() > 20 {
            let _ = writeln!(s, "  ... {} more findings", self.findings.len() - 20);
        }
        let _ = write!(s, "verdict: {}", self.verdict);
        if !self.passed() {
            let _ = write!(
                s,
                "\nreproduce: {}\nwork dir kept: {}",
                self.command, self.work_dir
            );
        }
        s
    }
}

fn median(v: &mut [u64]) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

pub(crate) fn recovery_times(runs: &[RunRecord]) -> RecoveryTimes {
    let restored: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.outcome.as_deref() == Some("Restored"))
        .collect();
    let mut rs: Vec<u64> = restored.iter().filter_map(|r| r.restart_ms).collect();
    let mut fb: Vec<u64> = restored.iter().filter_map(|r| r.first_batch_ms).collect();
    RecoveryTimes {
        restarts: rs.len(),
        max_restart_ms: rs.iter().copied().max().unwrap_or(0),
        median_restart_ms: median(&mut rs),
        first_batches: fb.len(),
        max_first_batch_ms: fb.iter().copied().max().unwrap_or(0),
        median_first_batch_ms: median(&mut fb),
    }
}
