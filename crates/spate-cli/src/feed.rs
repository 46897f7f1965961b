//! `spate feed`: a fast, rate-controlled TCP line server with exact accounting and an optional
//! acknowledgement protocol.
//!
//! spate's (and Spark's) socket source connects as a *client*, as to `nc -lk`. `spate feed` is that
//! server: it replays a corpus file, line by line, at a fixed or stepped rate (lines/s), to one
//! connected receiver at a time, and counts exactly what it sent, what was acknowledged and what it
//! re-sent after a reconnect.
//!
//! # Line numbering
//! Line `seq` (0-based) of the feed is line `seq % corpus_lines` of the corpus. Without `--cycle` the
//! feed is finite: lines `0..N` where `N` is `--lines` or the corpus length.
//!
//! # Plain mode (default, like `nc -lk`)
//! Lines are written and forgotten. After a disconnect the next connection resumes at the next unsent
//! line (as the Spark anchor harness's `feeder.py`), so lines that were in socket buffers when the
//! receiver died are lost: at-most-once delivery, the guarantee of Spark's `socketTextStream`.
//!
//! # Acknowledged mode (`--ack`), protocol `spate-ack/1`
//! 1. The receiver connects and sends `HELLO spate-ack/1 resume=<seq>\n`: the first line it does *not*
//!    yet hold durably (0 on a fresh start; after a crash, what its write-ahead log recovered).
//! 2. The feeder sends lines starting at `<seq>`.
//! 3. The receiver sends `ACK <seq>\n` whenever more lines are durable: every line below `<seq>` is
//!    durable (cumulative, never decreasing within a connection).
//!
//! The receiver, not the feeder, decides where to resume, so a line that was made durable but whose
//! `ACK` was lost in a crash is not sent twice, and a resume point *below* an acknowledged position —
//! the receiver lost data it had acknowledged — is detected and reported (`resume_below_ack`). The
//! feed is complete when every line is acknowledged. Full spec: `docs/format/feed-protocol.md`.

use clap::Args;
use serde::Serialize;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Protocol name and version sent in the receiver's `HELLO`.
pub(crate) const ACK_PROTOCOL: &str = "spate-ack/1";

/// Arguments of `spate feed`.
#[derive(Debug, Args)]
pub(crate) struct FeedArgs {
    /// Address to listen on (the receiver connects to it), e.g. `127.0.0.1:9999`; port 0 picks a
    /// free port, printed as `listening on ADDR` on stderr.
    #[arg(long, default_value = "127.0.0.1:9999")]
    listen: String,
    /// Corpus file: one record per line (`spate gen words` makes one).
    #[arg(long)]
    file: PathBuf,
    /// Fixed rate in lines/s; 0 = as fast as the receiver reads.
    #[arg(long, default_value_t = 0, conflicts_with = "steps")]
    rate: u64,
    /// Staircase of rates: `RATE:SECONDS,RATE:SECONDS,...` (lines/s for seconds each); the feed ends
    /// after the last step.
    #[arg(long)]
    steps: Option<String>,
    /// Number of lines to send (default: the corpus length, or unbounded with --cycle).
    #[arg(long)]
    lines: Option<u64>,
    /// Repeat the corpus endlessly (line seq % corpus length).
    #[arg(long)]
    cycle: bool,
    /// Acknowledged mode (protocol spate-ack/1): wait for the receiver's HELLO, resume where it says,
    /// and finish only when every line is acknowledged.
    #[arg(long)]
    ack: bool,
    /// Stop after this long (e.g. `60s`, `500ms`), complete or not.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Pacing tick in ms: each tick sends the lines due by then.
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    /// Keep the connection open this long after the last line is sent (plain mode) so the receiver
    /// can read everything before the close, e.g. `2s`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    linger: Duration,
    /// Write the final statistics (JSON) to this file as well as stdout; also written when the
    /// feed is stopped by SIGINT or SIGTERM (then `stopped_by_signal` names it).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Seconds between progress lines on stderr (0 = none).
    #[arg(long, default_value_t = 1)]
    progress_secs: u64,
}

/// One step of a staircase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    rate: u64,
    secs: u64,
}

/// Statistics of one step, for the "is the feeder the bottleneck?" check.
#[derive(Debug, Serialize, Clone)]
struct StepStats {
    offered_rate: u64,
    secs: u64,
    sent: u64,
    achieved_rate: f64,
}

/// Final statistics (printed as JSON).
#[derive(Debug, Serialize, Default)]
struct FeedStats {
    mode: &'static str,
    corpus_lines: u64,
    target_lines: Option<u64>,
    /// Distinct lines sent at least once (the highest seq sent + 1).
    sent: u64,
    /// Line transmissions including re-sends.
    transmissions: u64,
    /// Lines sent more than once (re-sent after a reconnect, ack mode).
    resent: u64,
    /// Bytes written to sockets.
    bytes: u64,
    /// Highest cumulative acknowledgement seen (ack mode).
    acked: u64,
    connections: u64,
    /// Times a receiver asked to resume below an acknowledged position (it lost acknowledged data).
    resume_below_ack: u64,
    /// Times a receiver's ACK went backwards within a connection (protocol violation).
    ack_regressions: u64,
    complete: bool,
    elapsed_secs: f64,
    steps: Vec<StepStats>,
    /// The signal (2 = SIGINT, 15 = SIGTERM) that stopped the feed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_by_signal: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
enum FeedError {
    #[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
    Signal(std::io::Error),
    #[error("cannot read corpus {path}: {source}")]
    Corpus {
        path: String,
        source: std::io::Error,
    },
    #[error("corpus {0} is empty")]
    EmptyCorpus(String),
    #[error(
        "invalid --steps '{0}': expected RATE:SECONDS[,RATE:SECONDS...] with positive seconds"
    )]
    Steps(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot write stats to {path}: {source}")]
    Stats {
        path: String,
        source: std::io::Error,
    },
}

fn parse_steps(s: &str) -> Result<Vec<Step>, FeedError> {
    let bad = || FeedError::Steps(s.to_owned());
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (r, t) = part.split_once(':').ok_or_else(bad)?;
        let rate = r.trim().parse::<u64>().map_err(|_| bad())?;
        let secs = t.trim().parse::<u64>().map_err(|_| bad())?;
        if secs == 0 {
            return Err(bad());
        }
        out.push(Step { rate, secs });
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// The corpus in memory with the byte offset of every line start (plus the end).
struct Corpus {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl Corpus {
    fn load(path: &PathBuf) -> Result<Corpus, FeedError> {
        let mut bytes = std::fs::read(path).map_err(|source| FeedError::Corpus {
            path: path.display().to_string(),
            source,
        })?;
        if bytes.is_empty() {
            return Err(FeedError::EmptyCorpus(path.display().to_string()));
        }
        if bytes.last() != Some(&b'\n') {
            bytes.push(b'\n');
        }
        let mut starts = Vec::with_capacity(bytes.len() / 64 + 2);
        starts.push(0);
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            }
        }
        Ok(Corpus { bytes, starts })
    }

    fn lines(&self) -> u64 {
        (self.starts.len() - 1) as u64
    }

    /// Bytes of feed lines `[from, to)` that lie contiguously in the corpus (stops at the wrap).
    /// Returns the slice and the seq after its last line.
    fn contiguous(&self, from: u64, to: u64) -> (&[u8], u64) {
        let n = self.lines();
        let a = (from % n) as usize;
        let count = (to - from).min(n - a as u64) as usize;
        let slice = &self.bytes[self.starts[a]..self.starts[a + count]];
        (slice, from + count as u64)
    }
}

/// Shared between the sender and the ack-reader thread of one connection.
#[derive(Default)]
struct AckState {
    acked: AtomicU64,
    regressions: AtomicU64,
    closed: AtomicBool,
}

/// Runs `spate feed`.
pub(crate) fn run(args: FeedArgs) -> ExitCode {
    match feed(&args) {
        Ok(stats) => {
            if let Some(sig) = stats.stopped_by_signal {
                // The shell's convention for a run ended by a signal (130, 143).
                ExitCode::from(u8::try_from(128 + sig).unwrap_or(1))
            } else if stats.complete || args.duration.is_some() || args.cycle {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(e) => {
            eprintln!("spate feed: {e}");
            ExitCode::from(2)
        }
    }
}

fn feed(args: &FeedArgs) -> Result<FeedStats, FeedError> {
    let corpus = Corpus::load(&args.file)?;
    let steps = args.steps.as_deref().map(parse_steps).transpose()?;
    let target = match (args.lines, args.cycle) {
        (Some(n), _) => Some(n),
        (None, false) => Some(corpus.lines()),
        (None, true) => None,
    };
    let listener = TcpListener::bind(&args.listen).map_err(|source| FeedError::Listen {
        addr: args.listen.clone(),
        source,
    })?;
    let local = listener.local_addr().map_err(|source| FeedError::Listen {
        addr: args.listen.clone(),
        source,
    })?;
    eprintln!("listening on {local}");
    listener
        .set_nonblocking(true)
        .map_err(|source| FeedError::Listen {
            addr: args.listen.clone(),
            source,
        })?;

    // SIGINT / SIGTERM end the feed like its deadline, so the statistics are still written.
    let signalled = Arc::new(AtomicUsize::new(0));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(sig, Arc::clone(&signalled), sig as usize)
            .map_err(FeedError::Signal)?;
    }
    let stop = || signalled.load(Ordering::Relaxed) != 0;
    let start = Instant::now();
    let total_secs: Option<u64> = steps.as_ref().map(|s| s.iter().map(|x| x.secs).sum());
    let deadline = match (args.duration, total_secs) {
        (Some(d), _) => Some(start + d),
        (None, Some(s)) => Some(start + Duration::from_secs(s)),
        (None, None) => None,
    };
    let mut stats = FeedStats {
        mode: if args.ack { "ack" } else { "plain" },
        corpus_lines: corpus.lines(),
        target_lines: target,
        ..FeedStats::default()
    };
    let step_sent: Arc<Mutex<Vec<u64>>> =
        Arc::new(Mutex::new(vec![0; steps.as_ref().map_or(0, Vec::len)]));
    // `next_unsent`: highest seq sent + 1 (distinct lines sent). `acked_max`: highest cumulative ACK.
    let mut next_unsent: u64 = 0;
    let mut acked_max: u64 = 0;
    let mut last_progress = Instant::now();

    'accept: loop {
        if stop() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if is_complete(args.ack, target, next_unsent, acked_max) {
            stats.complete = true;
            break;
        }
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => {
                eprintln!("spate feed: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        stats.connections += 1;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(false);
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();

        // Where does this connection start?
        let ack_state = Arc::new(AckState::default());
        let mut seq = if args.ack {
            match read_hello(&stream) {
                Ok(resume) => {
                    if resume < acked_max {
                        stats.resume_below_ack += 1;
                        eprintln!(
                            "spate feed: receiver {peer} resumes at line {resume}, below acknowledged {acked_max}: it lost acknowledged data"
                        );
                    }
                    if resume > next_unsent {
                        // The receiver holds lines an earlier feeder process delivered (this
                        // feeder was restarted): they count as sent, and the feed resumes there.
                        eprintln!(
                            "spate feed: receiver {peer} resumes at line {resume}, beyond the {next_unsent} lines this feeder sent (delivered by an earlier feeder); starting at {resume}"
                        );
                        next_unsent = resume;
                    }
                    ack_state.acked.store(resume, Ordering::Relaxed);
                    acked_max = acked_max.max(resume);
                    resume
                }
                Err(e) => {
                    eprintln!("spate feed: receiver {peer} sent no valid HELLO: {e}");
                    continue 'accept;
                }
            }
        } else {
            next_unsent
        };
        eprintln!(
            "connection {} from {peer}, starting at line {seq}",
            stats.connections
        );
        let reader = if args.ack {
            let st = Arc::clone(&ack_state);
            stream
                .try_clone()
                .ok()
                .map(|s| std::thread::spawn(move || read_acks(s, &st)))
        } else {
            None
        };
        let mut writer = &stream;
        loop {
            let now = Instant::now();
            if stop() || deadline.is_some_and(|d| now >= d) {
                break;
            }
            if args.ack {
                acked_max = acked_max.max(ack_state.acked.load(Ordering::Relaxed));
                if ack_state.closed.load(Ordering::Relaxed) {
                    break;
                }
            }
            if is_complete(args.ack, target, next_unsent, acked_max) {
                break;
            }
            if args.progress_secs > 0 && last_progress.elapsed().as_secs() >= args.progress_secs {
                last_progress = Instant::now();
                eprintln!(
                    "t={:.1}s sent={} acked={} resent={}",
                    start.elapsed().as_secs_f64(),
                    next_unsent,
                    acked_max,
                    stats.resent
                );
            }
            // How many distinct lines are due by now (rate limiting applies to new lines; re-sends
            // after a reconnect go out as fast as the receiver takes them).
            let elapsed = start.elapsed();
            let (due, step_idx) = due_lines(args.rate, steps.as_deref(), elapsed);
            // Re-sends below `next_unsent` are never held back by the rate.
            let mut limit = due.map_or(u64::MAX, |d| d.max(next_unsent));
            if let Some(t) = target {
                limit = limit.min(t);
            }
            if seq >= limit {
                if target.is_some_and(|t| seq >= t) {
                    // All sent: wait for acks (ack mode) or linger then finish (plain mode).
                    if !args.ack {
                        if !args.linger.is_zero() {
                            std::thread::sleep(args.linger);
                        }
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                std::thread::sleep(Duration::from_millis(args.tick_ms.max(1)));
                continue;
            }
            // Send a chunk: at most one tick's worth or 4 MiB-ish, contiguous in the corpus.
            let chunk_end = limit.min(seq + 65_536);
            let (bytes, after) = corpus.contiguous(seq, chunk_end);
            if let Err(e) = writer.write_all(bytes) {
                eprintln!("spate feed: connection {} closed: {e}", stats.connections);
                break;
            }
            let n = after - seq;
            stats.transmissions += n;
            stats.bytes += bytes.len() as u64;
            let fresh_from = seq.max(next_unsent);
            if after > next_unsent {
                let fresh = after - fresh_from;
                if let Some(i) = step_idx {
                    if let Ok(mut v) = step_sent.lock() {
                        if let Some(x) = v.get_mut(i) {
                            *x += fresh;
                        }
                    }
                }
                stats.resent += n - fresh;
                next_unsent = after;
            } else {
                stats.resent += n;
            }
            seq = after;
        }
        let _ = writer.flush();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        if let Some(h) = reader {
            let _ = h.join();
        }
        if args.ack {
            acked_max = acked_max.max(ack_state.acked.load(Ordering::Relaxed));
            stats.ack_regressions += ack_state.regressions.load(Ordering::Relaxed);
        }
        if !args.ack && target.is_some_and(|t| next_unsent >= t) {
            stats.complete = true;
            break;
        }
    }
    stats.sent = next_unsent;
    stats.acked = acked_max;
    stats.stopped_by_signal = match signalled.load(Ordering::Relaxed) {
        0 => None,
        sig => i32::try_from(sig).ok(),
    };
    stats.complete = stats.complete || is_complete(args.ack, target, next_unsent, acked_max);
    stats.elapsed_secs = start.elapsed().as_secs_f64();
    if let Some(steps) = &steps {
        let sent = step_sent.lock().map(|v| v.clone()).unwrap_or_default();
        stats.steps = steps
            .iter()
            .zip(sent)
            .map(|(s, n)| StepStats {
                offered_rate: s.rate,
                secs: s.secs,
                sent: n,
                achieved_rate: n as f64 / s.secs as f64,
            })
            .collect();
    }
    let json = serde_json::to_string(&stats).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    println!("{json}");
    if let Some(p) = &args.stats {
        std::fs::write(p, format!("{json}\n")).map_err(|source| FeedError::Stats {
            path: p.display().to_string(),
            source,
        })?;
    }
    Ok(stats)
}

fn is_complete(ack: bool, target: Option<u64>, sent: u64, acked: u64) -> bool {
    match target {
        Some(t) if ack => acked >= t,
        Some(t) => sent >= t,
        None => false,
    }
}

/// Distinct lines due after `elapsed` under a fixed rate or a staircase (None = unlimited), and
/// the index of the current step.
fn due_lines(rate: u64, steps: Option<&[Step]>, elapsed: Duration) -> (Option<u64>, Option<usize>) {
    match steps {
        Some(steps) => {
            let mut acc: u64 = 0;
            let mut t0 = Duration::ZERO;
            for (i, s) in steps.iter().enumerate() {
                let len = Duration::from_secs(s.secs);
                if elapsed < t0 + len {
                    let into = elapsed - t0;
                    let due = acc + (s.rate as f64 * into.as_secs_f64()) as u64;
                    return (Some(due), Some(i));
                }
                acc += s.rate * s.secs;
                t0 += len;
            }
            (Some(acc), None)
        }
        None if rate == 0 => (None, None),
        None => (Some((rate as f64 * elapsed.as_secs_f64()) as u64), None),
    }
}

/// Reads the receiver's `HELLO spate-ack/1 resume=<seq>` line (10 s timeout).
fn read_hello(stream: &TcpStream) -> Result<u64, String> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut line = String::new();
    let mut r = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    // Read byte-wise bounded: a HELLO is short; never buffer past it (acks follow on the same stream
    // and are read by another reader, so read exactly one line).
    let mut byte = [0u8; 1];
    loop {
        match std::io::Read::read(&mut r, &mut byte) {
            Ok(0) => return Err("connection closed before HELLO".into()),
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => {
                if line.len() > 256 {
                    return Err("HELLO line longer than 256 bytes".into());
                }
                line.push(char::from(byte[0]));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let _ = stream.set_read_timeout(None);
    parse_hello(line.trim_end_matches('\r'))
}

fn parse_hello(line: &str) -> Result<u64, String> {
    let mut parts = line.split_whitespace();
    if parts.next() != Some("HELLO") {
        return Err(format!("expected HELLO, got {line:?}"));
    }
    match parts.next() {
        Some(p) if p == ACK_PROTOCOL => {}
        other => {
            return Err(format!(
                "unsupported protocol {other:?}, want {ACK_PROTOCOL}"
            ))
        }
    }
    let resume = parts
        .next()
        .and_then(|p| p.strip_prefix("resume="))
        .ok_or_else(|| format!("HELLO without resume=: {line:?}"))?;
    resume
        .parse::<u64>()
        .map_err(|_| format!("bad resume value {resume:?}"))
}

fn parse_ack(line: &str) -> Option<u64> {
    line.strip_prefix("ACK ")?.trim().parse().ok()
}

/// Reads `ACK <seq>` lines until the connection closes; records the highest and any regression.
fn read_acks(stream: TcpStream, st: &AckState) {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Some(n) = parse_ack(line.trim_end()) {
                    let prev = st.acked.fetch_max(n, Ordering::Relaxed);
                    if n < prev {
                        st.regressions.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    eprintln!(
                        "spate feed: ignoring unexpected line from receiver: {:?}",
                        line.trim_end()
                    );
                }
            }
        }
    }
    st.closed.store(true, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_reject_garbage() {
        assert_eq!(
            parse_steps("1000:2, 5000:3").unwrap(),
            vec![
                Step {
                    rate: 1000,
                    secs: 2
                },
                Step {
                    rate: 5000,
                    secs: 3
                }
            ]
        );
        for bad in ["", "x", "100", "100:0", "a:1", "1:b", ",,"] {
            assert!(parse_steps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn staircase_due_lines() {
        let s = [
            Step { rate: 100, secs: 2 },
            Step {
                rate: 1000,
                secs: 1,
            },
        ];
        assert_eq!(
            due_lines(0, Some(&s), Duration::from_secs(1)),
            (Some(100), Some(0))
        );
        assert_eq!(
            due_lines(0, Some(&s), Duration::from_millis(2500)),
            (Some(700), Some(1))
        );
        assert_eq!(
            due_lines(0, Some(&s), Duration::from_secs(9)),
            (Some(1200), None)
        );
        assert_eq!(due_lines(0, None, Duration::from_secs(9)), (None, None));
        assert_eq!(
            due_lines(10, None, Duration::from_secs(3)),
            (Some(30), None)
        );
    }

    #[test]
    fn hello_and_ack_parsing() {
        assert_eq!(parse_hello("HELLO spate-ack/1 resume=42"), Ok(42));
        assert!(parse_hello("HELLO spate-ack/2 resume=42").is_err());
        assert!(parse_hello("HI").is_err());
        assert!(parse_hello("HELLO spate-ack/1 resume=-1").is_err());
        assert!(parse_hello("HELLO spate-ack/1").is_err());
        assert_eq!(parse_ack("ACK 7"), Some(7));
        assert_eq!(parse_ack("ACK x"), None);
        assert_eq!(parse_ack("NACK 7"), None);
    }

    #[test]
    fn corpus_slices_wrap_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.txt");
        std::fs::write(&p, "a\nbb\nccc").unwrap();
        let c = Corpus::load(&p).unwrap();
        assert_eq!(c.lines(), 3);
        assert_eq!(c.contiguous(0, 2), (&b"a\nbb\n"[..], 2));
        assert_eq!(c.contiguous(2, 5), (&b"ccc\n"[..], 3));
        assert_eq!(c.contiguous(3, 5), (&b"a\nbb\n"[..], 5));
        let empty = dir.path().join("e.txt");
        std::fs::write(&empty, "").unwrap();
        assert!(matches!(
            Corpus::load(&empty),
            Err(FeedError::EmptyCorpus(_))
        ));
        assert!(matches!(
            Corpus::load(&dir.path().join("missing")),
            Err(FeedError::Corpus { .. })
        ));
    }
}
