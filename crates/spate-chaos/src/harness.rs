//! The crash loop.

use crate::oracle::{self, Finding, FindingKind, Outputs, Table};
use crate::process::{describe_status, Event, Proc};
use crate::schedule::{self, Crash, CyclePlan, Disturbance};
use crate::{io_err, ChaosConfig, ChaosError, CorpusKind, Program, Report, RunRecord};
use spate_checkpoint::CheckpointUrl;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a start may take before the restart line is declared missing.
const RESTART_LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the final run may take to consume the rest and end on idle.
const FINAL_RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Directories of one job (chaos run or reference run).
#[derive(Debug)]
struct Job {
    input: PathBuf,
    staging: PathBuf,
    out: PathBuf,
    checkpoint: String,
    local_checkpoint: Option<PathBuf>,
    wal_dir: Option<PathBuf>,
}

impl Job {
    fn new(
        root: &Path,
        store: Option<String>,
        wal_dir: Option<PathBuf>,
    ) -> Result<Job, ChaosError> {
        let (checkpoint, local_checkpoint) = match store {
            Some(url) => {
                let local = CheckpointUrl::parse(&url)
                    .ok()
                    .and_then(|u| u.local_path().map(PathBuf::from));
                (url, local)
            }
            None => {
                let p = root.join("ck");
                (p.display().to_string(), Some(p))
            }
        };
        let j = Job {
            input: root.join("in"),
            staging: root.join("staging"),
            out: root.join("out"),
            checkpoint,
            local_checkpoint,
            wal_dir,
        };
        for d in [&j.input, &j.staging, &j.out] {
            std::fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        Ok(j)
    }

    /// The WAL directory as a local path (`--wal-dir`, else `<checkpoint>/wal` when local).
    fn wal(&self) -> Option<PathBuf> {
        self.wal_dir
            .clone()
            .or_else(|| self.local_checkpoint.as_ref().map(|c| c.join("wal")))
    }

    fn move_in(&self, i: u32, text: &str) -> Result<(), ChaosError> {
        let name = format!("chunk-{i:06}.txt");
        let s = self.staging.join(&name);
        std::fs::write(&s, text).map_err(io_err(format!("writing {}", s.display())))?;
        std::fs::rename(&s, self.input.join(&name))
            .map_err(io_err(format!("moving {} in", s.display())))
    }
}

/// The program's command line for a run.
fn program_args(cfg: &ChaosConfig, job: &Job, last: bool) -> (PathBuf, Vec<String>) {
    let mut a: Vec<String> = Vec::new();
    let bin = match &cfg.program {
        Program::Custom(p) => p.clone(),
        _ => cfg.spate_bin.clone(),
    };
    match &cfg.program {
        Program::Wordcount | Program::WordcountPerBatch => a.push("wordcount".into()),
        Program::Clicks => a.push("clicks".into()),
        Program::Custom(_) => {}
    }
    a.extend([
        "--dir".into(),
        job.input.display().to_string(),
        "--checkpoint".into(),
        job.checkpoint.clone(),
        "--output".into(),
        job.out.display().to_string(),
    ]);
    if let Some(w) = &job.wal_dir {
        a.extend(["--wal-dir".into(), w.display().to_string()]);
    }
    if cfg.program.is_builtin() {
        a.extend([
            "--batch".into(),
            format!("{}ms", cfg.batch_ms),
            "--print".into(),
            "0".into(),
        ]);
    }
    match &cfg.program {
        Program::Wordcount => a.extend([
            "--state-checkpoint".into(),
            format!("{}ms", cfg.batch_ms * 5),
        ]),
        Program::WordcountPerBatch => a.push("--per-batch".into()),
        Program::Clicks => a.extend(["--device-timeout".into(), "3600s".into()]),
        Program::Custom(_) => {}
    }
    if last {
        a.extend(["--idle".into(), format!("{}ms", cfg.final_idle_ms)]);
    }
    (bin, a)
}

fn gen_corpus(cfg: &ChaosConfig, work: &Path, lines: u64) -> Result<String, ChaosError> {
    let out = work.join("corpus.txt");
    let seed = (cfg.seed % 1_000_000_007).to_string();
    let lines_s = lines.to_string();
    let out_s = out.display().to_string();
    let mut args: Vec<&str> = vec!["gen"];
    match cfg.program.corpus() {
        CorpusKind::Words => args.extend(["words", "--lines", &lines_s, "--seed", &seed]),
        CorpusKind::Clicks => args.extend([
            "clicks",
            "--lines",
            &lines_s,
            "--seed",
            &seed,
            "--devices",
            "300",
            "--malformed",
            "0.02",
        ]),
    }
    args.extend(["--out", &out_s]);
    let o = std::process::Command::new(&cfg.spate_bin)
        .args(&args)
        .output()
        .map_err(|e| ChaosError::Corpus(format!("{}: {e}", cfg.spate_bin.display())))?;
    if !o.status.success() {
        return Err(ChaosError::Corpus(
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ));
    }
    std::fs::read_to_string(&out).map_err(io_err(format!("reading {}", out.display())))
}

/// State of the run in progress.
struct Ctx<'a> {
    cfg: &'a ChaosConfig,
    job: Job,
    chunks: Vec<String>,
    /// Chunks due but not moved yet (the process ended first), moved first in the next run.
    carried: VecDeque<u32>,
    outputs: Outputs,
    findings: Vec<Finding>,
    /// A run has printed `Restored` (from then on every start must restore).
    restored_once: bool,
    /// The newest manifest was corrupted on purpose since the last start (a rejection is
    /// expected).
    manifest_damaged: bool,
    /// The newest restored position seen (I-REC-6: never moves back).
    restored_through: Option<u64>,
}

/// `(batches rescheduled, restored through)` from a restart line's summary
/// (`RestartReport::summary`: `…; N batches rescheduled, M skipped; restored through T`).
pub(crate) fn backlog_of(summary: &str) -> (Option<u64>, Option<u64>) {
    let mut rescheduled = None;
    let mut through = None;
    for part in summary.split("; ") {
        if let Some((n, _)) = part.split_once(" batches rescheduled") {
            rescheduled = n.trim().parse().ok();
        }
        if let Some(t) = part.strip_prefix("restored through ") {
            through = t.trim().parse().ok();
        }
    }
    (rescheduled, through)
}

/// The coalesced spans `(from, batch)` of a restart line's summary (`…; coalesced F..T F..T`).
pub(crate) fn coalesced_of(summary: &str) -> Vec<(u64, u64)> {
    summary
        .split("; ")
        .filter_map(|p| p.strip_prefix("coalesced "))
        .flat_map(str::split_whitespace)
        .filter_map(|s| {
            let (f, t) = s.split_once("..")?;
            Some((f.parse().ok()?, t.parse().ok()?))
        })
        .collect()
}

/// The summary's backlog line: batches rescheduled per restart (mean of the first and last
/// quarter of restarts, max, and the sequence when short) and how often the restored position
/// moved back.
pub(crate) fn backlog_summary(runs: &[RunRecord]) -> String {
    let v: Vec<u64> = runs.iter().filter_map(|r| r.rescheduled).collect();
    if v.is_empty() {
        return "  backlog: no restart reported rescheduled batches".into();
    }
    let q = v.len().div_ceil(4);
    let mean = |s: &[u64]| {
        #[allow(clippy::cast_precision_loss)]
        let m = s.iter().sum::<u64>() as f64 / s.len().max(1) as f64;
        m
    };
    let mut back = 0;
    let mut last: Option<u64> = None;
    for t in runs.iter().filter_map(|r| r.restored_through) {
        if last.is_some_and(|l| t < l) {
            back += 1;
        }
        last = Some(last.map_or(t, |l| l.max(t)));
    }
    let seq = if v.len() <= 120 {
        format!(
            "; per restart [{}]",
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
        )
    } else {
        String::new()
    };
    format!(
        "  backlog: rescheduled batches per restart: first quarter mean {:.1} max {}, last quarter mean {:.1} max {}, max {} ({} restarts); restored position moved back {back} times{seq}",
        mean(&v[..q]),
        v[..q].iter().max().copied().unwrap_or(0),
        mean(&v[v.len() - q..]),
        v[v.len() - q..].iter().max().copied().unwrap_or(0),
        v.iter().max().copied().unwrap_or(0),
        v.len(),
    )
}

impl Ctx<'_> {
    fn stopped(&self) -> bool {
        self.cfg
            .stop
            .as_ref()
            .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn finding(&mut self, kind: FindingKind, cycle: Option<u32>, detail: String) {
        self.findings.push(Finding {
            kind,
            cycle,
            detail,
        });
    }

    /// One run: spawn, wait for the restart line, move chunks, end per `plan` (or, for the final
    /// run, wait for exit 0 on idle).
    fn run_once(&mut self, plan: Option<&CyclePlan>) -> Result<RunRecord, ChaosError> {
        let cycle = plan.map(|p| p.cycle);
        let mut rec = RunRecord {
            cycle,
            plan: plan.cloned(),
            ..RunRecord::default()
        };
        let (bin, args) = program_args(self.cfg, &self.job, plan.is_none());
        let mut envs = self.cfg.envs.clone();
        if self.cfg.program.is_builtin() {
            let backend = plan.map_or("memory", |p| p.backend);
            envs.push(("SPATE_STATE_BACKEND".into(), backend.into()));
        }
        if let Some(Crash::FailPoint { spec, .. }) = plan.map(|p| &p.crash) {
            envs.push(("SPATE_FAILPOINTS".into(), spec.clone()));
        }
        let mut p = Proc::spawn(&bin, &args, &envs)
            .map_err(io_err(format!("spawning {}", bin.display())))?;
        let spawned = p.spawned;

        // Moves of this run: carried chunks at once, then the plan's at their offsets.
        let mut moves: VecDeque<(u32, u64)> = self.carried.drain(..).map(|c| (c, 0)).collect();
        if let Some(pl) = plan {
            moves.extend(pl.moves.iter().copied());
        }
        let early_kill = match plan.map(|p| &p.crash) {
            Some(Crash::Kill {
                delay_ms,
                early: true,
            }) => Some(spawned + Duration::from_millis(*delay_ms)),
            _ => None,
        };
        let mut restart_at: Option<Instant> = None;
        let mut deadline = early_kill.unwrap_or(spawned + RESTART_LINE_TIMEOUT);
        let mut ended_by_itself = false;
        loop {
            // The next thing due: a move (after the restart line) or the deadline.
            let next_move =
                restart_at.and_then(|r| moves.front().map(|m| r + Duration::from_millis(m.1)));
            let wake = next_move.map_or(deadline, |m| m.min(deadline));
            let wake = wake.min(Instant::now() + Duration::from_millis(100));
            if self.stopped() {
                p.kill9();
                return Err(ChaosError::Interrupted);
            }
            match p.next_event(wake) {
                Event::Line(l, t) => {
                    if restart_at.is_none() {
                        if let Some(summary) = l.strip_prefix("spate: restart: ") {
                            restart_at = Some(t);
                            rec.restart_ms = Some(ms(t - spawned));
                            rec.restart = Some(summary.to_owned());
                            (rec.rescheduled, rec.restored_through) = backlog_of(summary);
                            self.outputs.add_spans(&coalesced_of(summary));
                            rec.outcome = summary.split(':').next().map(|s| s.trim().to_owned());
                            if early_kill.is_none() {
                                deadline = match plan.map(|p| &p.crash) {
                                    Some(Crash::Kill { delay_ms, .. }) => {
                                        t + Duration::from_millis(*delay_ms)
                                    }
                                    Some(Crash::FailPoint { timeout_ms, .. }) => {
                                        t + Duration::from_millis(*timeout_ms)
                                    }
                                    None => t + FINAL_RUN_TIMEOUT,
                                };
                            }
                        }
                    } else if rec.first_batch_ms.is_none() && l.starts_with("batch ") {
                        rec.first_batch_ms = Some(ms(t - spawned));
                    }
                }
                Event::Closed => {
                    ended_by_itself = true;
                    break;
                }
                Event::Timeout => {}
            }
            let now = Instant::now();
            if let Some(r) = restart_at {
                while let Some(&(c, off)) = moves.front() {
                    if r + Duration::from_millis(off) > now {
                        break;
                    }
                    moves.pop_front();
                    self.job.move_in(c, &self.chunks[c as usize])?;
                    rec.moved.push(c);
                }
            }
            if now >= deadline {
                break;
            }
        }
        // Moves not done: carried to the next run, in order.
        self.carried.extend(moves.into_iter().map(|m| m.0));

        match plan.map(|p| &p.crash) {
            None => {
                // Final run: ends by itself on idle.
                let st = p.wait_exit(if ended_by_itself {
                    FINAL_RUN_TIMEOUT
                } else {
                    Duration::ZERO
                });
                match st {
                    Some(st) => {
                        rec.ended = describe_status(st);
                        if !st.success() {
                            let d = format!(
                                "final run: {}; stderr:\n{}",
                                rec.ended,
                                p.stderr_tail(1500)
                            );
                            self.finding(FindingKind::ProgramFailed, None, d);
                        }
                    }
                    None => {
                        let d = if restart_at.is_none() {
                            format!("final run: no restart line within {RESTART_LINE_TIMEOUT:?}")
                        } else {
                            format!("final run: did not end within {FINAL_RUN_TIMEOUT:?} of its restart line")
                        };
                        let d = format!("{d}; stderr:\n{}", p.stderr_tail(1500));
                        p.kill9();
                        rec.ended = "killed (timeout)".into();
                        self.finding(FindingKind::ProgramFailed, None, d);
                    }
                }
            }
            Some(Crash::FailPoint { name, .. }) => {
                let st = if ended_by_itself {
                    p.wait_exit(Duration::from_secs(10))
                } else {
                    None
                };
                match st {
                    Some(st) => {
                        rec.ended = describe_status(st);
                        rec.failpoint_hit = Some(true);
                    }
                    None => {
                        if restart_at.is_none() {
                            let d = format!(
                                "fail point {name} armed: no restart line within {RESTART_LINE_TIMEOUT:?}; stderr:\n{}",
                                p.stderr_tail(1500)
                            );
                            self.finding(FindingKind::ProgramFailed, cycle, d);
                        }
                        p.kill9();
                        rec.ended = "killed (fail point not reached)".into();
                        rec.failpoint_hit = Some(false);
                    }
                }
            }
            Some(Crash::Kill { early, .. }) => {
                if ended_by_itself {
                    let st = p.wait_exit(Duration::from_secs(10));
                    rec.ended = st.map_or_else(|| "closed stderr".into(), describe_status);
                    let d = format!(
                        "ended by itself ({}) before its kill; stderr:\n{}",
                        rec.ended,
                        p.stderr_tail(1500)
                    );
                    self.finding(FindingKind::ProgramFailed, cycle, d);
                    p.kill9();
                } else if restart_at.is_none() && !early {
                    let d = format!(
                        "no restart line within {RESTART_LINE_TIMEOUT:?}; stderr:\n{}",
                        p.stderr_tail(1500)
                    );
                    self.finding(FindingKind::ProgramFailed, cycle, d);
                    p.kill9();
                    rec.ended = "killed (no restart line)".into();
                } else {
                    p.kill9();
                    rec.ended = "killed".into();
                }
            }
        }
        rec.ran_ms = ms(spawned.elapsed());
        self.check_outcome(&rec);
        self.outputs.check(&self.job.out, cycle, &mut self.findings);
        Ok(rec)
    }

    /// `Fresh` until the first `Restored`, then `Restored` every time; no checkpoint rejected
    /// unless one was damaged on purpose (a correct commit protocol never leaves a manifest that
    /// fails verification, whatever the crash instant).
    fn check_outcome(&mut self, rec: &RunRecord) {
        let Some(o) = rec.outcome.as_deref() else {
            return;
        };
        let rejected = rec
            .restart
            .as_deref()
            .and_then(|s| s.split("; ").find_map(|p| p.strip_suffix(" rejected")))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if rejected > 0 && !self.manifest_damaged {
            let d = format!(
                "{rejected} checkpoint(s) rejected although none was damaged on purpose (a crash left a published manifest that does not verify): {}",
                rec.restart.as_deref().unwrap_or("")
            );
            self.finding(FindingKind::RestartOutcome, rec.cycle, d);
        }
        // A damaged manifest stays the newest (and rejected) until a newer checkpoint exists.
        if rejected == 0 {
            self.manifest_damaged = false;
        }
        if let Some(t) = rec.restored_through.filter(|_| o == "Restored") {
            // A fallback past a manifest damaged on purpose restores an older one: expected.
            if rejected > 0 {
                self.restored_through = Some(t);
            } else if let Some(prev) = self.restored_through.filter(|p| t < *p) {
                let d = format!(
                    "restored position moved back from {prev} to {t} ms: {}",
                    rec.restart.as_deref().unwrap_or("")
                );
                self.finding(FindingKind::RestoredBackwards, rec.cycle, d);
            }
            self.restored_through = Some(self.restored_through.map_or(t, |p| p.max(t)));
        }
        if let (Some(max), Some(n)) = (self.cfg.max_backlog, rec.rescheduled) {
            if n > max {
                let d = format!("{n} batches rescheduled, more than --max-backlog {max}");
                self.finding(FindingKind::Backlog, rec.cycle, d);
            }
        }
        match o {
            "Restored" => self.restored_once = true,
            "Fresh" if !self.restored_once => {}
            _ => {
                let d = format!(
                    "restart outcome {o} (after {} restore): {}",
                    if self.restored_once { "a" } else { "no" },
                    rec.restart.as_deref().unwrap_or("")
                );
                self.finding(FindingKind::RestartOutcome, rec.cycle, d);
            }
        }
    }

    fn disturb(&mut self, d: Disturbance, seed: u64, cycle: u32) -> Result<String, ChaosError> {
        Ok(match d {
            Disturbance::Hook => {
                let Some(cmd) = &self.cfg.hook else {
                    return Ok("hook: none configured".into());
                };
                let o = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .env("SPATE_CHAOS_WORK", &self.cfg.work_dir)
                    .env("SPATE_CHAOS_CHECKPOINT", &self.job.checkpoint)
                    .env("SPATE_CHAOS_CYCLE", cycle.to_string())
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .output()
                    .map_err(|e| ChaosError::Hook {
                        command: cmd.clone(),
                        message: e.to_string(),
                    })?;
                if !o.status.success() {
                    return Err(ChaosError::Hook {
                        command: cmd.clone(),
                        message: format!(
                            "{}: {}",
                            describe_status(o.status),
                            String::from_utf8_lossy(&o.stderr).trim()
                        ),
                    });
                }
                format!("hook ran: {cmd}")
            }
            Disturbance::CorruptManifest => {
                let Some(ck) = &self.job.local_checkpoint else {
                    return Ok("corrupt manifest: skipped (not a local store)".into());
                };
                let mut m: Vec<PathBuf> = std::fs::read_dir(ck.join("manifests"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "manifest"))
                    .collect();
                if m.len() < 2 {
                    return Ok(format!(
                        "corrupt manifest: skipped ({} manifest(s))",
                        m.len()
                    ));
                }
                m.sort();
                let newest = m[m.len() - 1].clone();
                match std::fs::read(&newest) {
                    Ok(mut b) if !b.is_empty() => {
                        let at = (seed % b.len() as u64) as usize;
                        b[at] ^= 0x5A;
                        match std::fs::write(&newest, &b) {
                            Ok(()) => {
                                self.manifest_damaged = true;
                                format!("flipped byte {at} of {}", newest.display())
                            }
                            Err(e) => format!("corrupt manifest: {e}"),
                        }
                    }
                    Ok(_) => "corrupt manifest: empty manifest".into(),
                    Err(e) => format!("corrupt manifest: {e}"),
                }
            }
            Disturbance::WalGarbage => {
                let Some(wal) = self.job.wal() else {
                    return Ok("WAL garbage: skipped (no local WAL)".into());
                };
                let mut segs: Vec<PathBuf> = std::fs::read_dir(&wal)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "wal"))
                    .collect();
                segs.sort();
                let Some(last) = segs.last() else {
                    return Ok("WAL garbage: skipped (no segment)".into());
                };
                let garbage: Vec<u8> = (0..97u8).map(|i| 0xA5 ^ i).collect();
                let r = std::fs::OpenOptions::new()
                    .append(true)
                    .open(last)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &garbage));
                match r {
                    Ok(()) => format!("appended 97 bytes to {}", last.display()),
                    Err(e) => format!("WAL garbage: {e}"),
                }
            }
            Disturbance::DeleteStateDir => {
                let Some(ck) = &self.job.local_checkpoint else {
                    return Ok("delete state dir: skipped (not a local store)".into());
                };
                let st = ck.join("state");
                if !st.exists() {
                    return Ok("delete state dir: none".into());
                }
                match std::fs::remove_dir_all(&st) {
                    Ok(()) => format!("deleted {}", st.display()),
                    Err(e) => format!("delete state dir: {e}"),
                }
            }
        })
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Splits whole lines into `n` chunks of `per` lines.
fn split_chunks(corpus: &str, per: usize) -> Vec<String> {
    let lines: Vec<&str> = corpus.lines().collect();
    lines
        .chunks(per.max(1))
        .map(|c| {
            let mut s = c.join("\n");
            s.push('\n');
            s
        })
        .collect()
}

/// Runs a chaos run: the crash cycles, the final run, the reference run, the oracle. `Err` only
/// when the harness itself cannot work (directories, corpus); a misbehaving program is a failed
/// [`Report`].
///
/// # Errors
/// [`ChaosError`] for harness failures.
pub fn run(cfg: &ChaosConfig) -> Result<Report, ChaosError> {
    let started = Instant::now();
    if cfg.schedule.chunks == 0 || cfg.lines_per_chunk == 0 {
        return Err(ChaosError::Config(
            "chunks and lines per chunk must be > 0".into(),
        ));
    }
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(io_err(format!("creating {}", cfg.work_dir.display())))?;
    let lines = u64::from(cfg.schedule.chunks) * u64::from(cfg.lines_per_chunk);
    let corpus = gen_corpus(cfg, &cfg.work_dir, lines)?;
    let chunks = split_chunks(&corpus, cfg.lines_per_chunk as usize);
    let mut params = cfg.schedule.clone();
    params.chunks = chunks.len() as u32;
    let plans = schedule::draw(cfg.seed, &params);

    // A remote store (S3, memory) is shared between runs: each run gets a unique prefix in it.
    let store = cfg.store.as_ref().map(|u| match CheckpointUrl::parse(u) {
        Ok(loc) if loc.local_path().is_none() => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            loc.join(&format!("chaos-{}-{t}", cfg.seed)).to_string()
        }
        _ => u.clone(),
    });
    let job = Job::new(&cfg.work_dir.join("run"), store, cfg.wal_dir.clone())?;
    let mut ctx = Ctx {
        cfg,
        job,
        chunks,
        carried: VecDeque::new(),
        outputs: Outputs::default(),
        findings: Vec::new(),
        restored_once: false,
        manifest_damaged: false,
        restored_through: None,
    };
    let mut runs = Vec::new();
    let mut disturbances = 0;
    let mut drng = crate::rng::Rng::new(cfg.seed ^ 0xD157_0000);
    for plan in &plans {
        let mut rec = ctx.run_once(Some(plan))?;
        if let Some(d) = plan.disturbance {
            disturbances += 1;
            rec.disturbed = Some(ctx.disturb(d, drng.next_u64(), plan.cycle)?);
        }
        if cfg.verbose {
            eprintln!(
                "chaos: cycle {} {}: {} after {} ms ({}){}",
                plan.cycle,
                match &plan.crash {
                    Crash::Kill { delay_ms, early } => format!(
                        "kill +{delay_ms} ms{}",
                        if *early { " from spawn" } else { "" }
                    ),
                    Crash::FailPoint { name, .. } => format!("fail point {name}"),
                },
                rec.ended,
                rec.ran_ms,
                rec.outcome.as_deref().unwrap_or("no restart line"),
                rec.disturbed
                    .as_deref()
                    .map(|d| format!("; {d}"))
                    .unwrap_or_default()
            );
        }
        runs.push(rec);
    }
    let fin = ctx.run_once(None)?;
    runs.push(fin);

    // Expected result.
    let independent: Option<Table> = match cfg.program {
        Program::Wordcount | Program::WordcountPerBatch => Some(oracle::count_words(&corpus)),
        Program::Clicks => Some(oracle::count_clicks(&corpus)),
        Program::Custom(_) => None,
    };
    let (reference, ref_table) = if cfg.reference || independent.is_none() {
        let (r, t) = reference_run(cfg, &ctx.chunks)?;
        if let Err(e) = &t {
            ctx.finding(
                FindingKind::ProgramFailed,
                None,
                format!("reference run: {e}"),
            );
        }
        (Some(r), t.ok())
    } else {
        (None, None)
    };
    let per_batch = cfg.program.per_batch();
    let (mut lost, mut duplicated) = (0, 0);
    match ctx.outputs.result(per_batch) {
        Err(e) => ctx.finding(
            FindingKind::ProgramFailed,
            None,
            format!("final result: {e}"),
        ),
        Ok(got) => {
            if let Some(want) = independent.as_ref().or(ref_table.as_ref()) {
                let (l, d, lines) = oracle::compare(&got, want);
                lost = l;
                duplicated = d;
                if l > 0 {
                    ctx.finding(
                        FindingKind::Lost,
                        None,
                        format!("{l} lost: {}", lines.join("; ")),
                    );
                }
                if d > 0 {
                    ctx.finding(
                        FindingKind::Duplicated,
                        None,
                        format!("{d} double-counted: {}", lines.join("; ")),
                    );
                }
                if l == 0 && d == 0 && !lines.is_empty() {
                    ctx.finding(FindingKind::Mismatch, None, lines.join("; "));
                }
                if cfg.program == Program::Wordcount {
                    let (excess, lines) = ctx.outputs.excess_over(want);
                    if excess > 0 {
                        duplicated = duplicated.max(excess);
                        ctx.finding(
                            FindingKind::Duplicated,
                            None,
                            format!(
                                "intermediate totals above the final count by {excess}: {}",
                                lines.join("; ")
                            ),
                        );
                    }
                }
            }
            if let (Some(rt), Some(_)) = (&ref_table, &independent) {
                let (l, d, lines) = oracle::compare(rt, independent.as_ref().unwrap_or(rt));
                if l + d > 0 {
                    ctx.finding(
                        FindingKind::ReferenceMismatch,
                        None,
                        format!(
                            "the crash-free reference run itself is wrong: {}",
                            lines.join("; ")
                        ),
                    );
                }
            } else if let Some(rt) = &ref_table {
                let (l, d, lines) = oracle::compare(&got, rt);
                if l + d > 0 {
                    ctx.finding(FindingKind::ReferenceMismatch, None, lines.join("; "));
                }
            }
        }
    }
    if cfg.program.is_builtin() {
        let missing = ctx.outputs.missing_batches(cfg.batch_ms);
        if !missing.is_empty() {
            ctx.finding(
                FindingKind::OutputMissing,
                None,
                format!(
                    "{} batch time(s) without an output file: {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ),
            );
        }
    }

    let kills = plans
        .iter()
        .filter(|p| matches!(p.crash, Crash::Kill { .. }))
        .count() as u32;
    let mut hit = Vec::new();
    let mut not_reached = Vec::new();
    for r in &runs {
        if let (Some(pl), Some(h)) = (&r.plan, r.failpoint_hit) {
            if let Crash::FailPoint { name, .. } = &pl.crash {
                if h {
                    hit.push(name.clone());
                } else {
                    not_reached.push(name.clone());
                }
            }
        }
    }
    let passed = ctx.findings.is_empty();
    let report = Report {
        seed: cfg.seed,
        command: cfg.command.clone(),
        program: cfg.program.name(),
        mode: "process".into(),
        cycles: plans.len() as u32,
        kills,
        failpoint_cycles: plans.len() as u32 - kills,
        failpoints_hit: hit,
        failpoints_not_reached: not_reached,
        disturbances,
        input_lines: lines,
        lost,
        duplicated,
        output_files: ctx.outputs.files(),
        reemitted_identical: ctx.outputs.reemitted,
        recovery: crate::recovery_times(&runs),
        runs,
        reference,
        findings: ctx.findings,
        verdict: if passed { "pass".into() } else { "fail".into() },
        duration_s: started.elapsed().as_secs_f64(),
        work_dir: cfg.work_dir.display().to_string(),
    };
    Ok(report)
}

/// One crash-free run over the same chunks (a fresh local checkpoint): its final result.
fn reference_run(
    cfg: &ChaosConfig,
    chunks: &[String],
) -> Result<(RunRecord, Result<Table, String>), ChaosError> {
    let root = cfg.work_dir.join("reference");
    let job = Job::new(&root, None, None)?;
    let mut ctx = Ctx {
        cfg,
        job,
        chunks: chunks.to_vec(),
        carried: (0..chunks.len() as u32).collect(),
        outputs: Outputs::default(),
        findings: Vec::new(),
        restored_once: false,
        manifest_damaged: false,
        restored_through: None,
    };
    let rec = ctx.run_once(None)?;
    let t = if let Some(f) = ctx.findings.first() {
        Err(f.to_string())
    } else {
        ctx.outputs.result(cfg.program.per_batch())
    };
    Ok((rec, t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_is_read_from_the_restart_line() {
        let line = "Restored: checkpoint manifests/x (Completed @ 9000); 0 rejected; 0 difference(s); \
                    WAL 3 records, 0 bytes truncated; 0 blocks (0 records) recovered, 0 unallocated; \
                    7 batches rescheduled, 0 skipped; restored through 8000";
        assert_eq!(backlog_of(line), (Some(7), Some(8000)));
        // A restart line of an older build: no position.
        assert_eq!(
            backlog_of("Fresh: checkpoint none; 2 batches rescheduled, 0 skipped"),
            (Some(2), None)
        );
    }

    #[test]
    fn coalesced_spans_are_read_from_the_restart_line() {
        let line = "Restored: checkpoint m (Completed @ 9000); 0 rejected; 0 difference(s); \
                    WAL 3 records, 0 bytes truncated; 0 blocks (0 records) recovered, 0 unallocated; \
                    2 batches rescheduled, 0 skipped; restored through 8000; coalesced 9500..12000 12500..14000";
        assert_eq!(backlog_of(line), (Some(2), Some(8000)));
        assert_eq!(coalesced_of(line), vec![(9500, 12_000), (12_500, 14_000)]);
        assert!(
            coalesced_of("Fresh: checkpoint none; 2 batches rescheduled, 0 skipped").is_empty()
        );
        assert!(
            coalesced_of("x; coalesced 1..x 5 ..3").is_empty(),
            "garbage is ignored"
        );
    }

    #[test]
    fn backlog_summary_counts_moves_back() {
        let r = |n, t| RunRecord {
            rescheduled: Some(n),
            restored_through: Some(t),
            ..RunRecord::default()
        };
        let runs = [r(1, 1000), r(3, 3000), r(2, 2000), r(9, 5000)];
        let s = backlog_summary(&runs);
        assert!(s.contains("moved back 1 times"), "{s}");
        assert!(s.contains("first quarter mean 1.0 max 1"), "{s}");
        assert!(s.contains("last quarter mean 9.0 max 9, max 9"), "{s}");
    }
}
