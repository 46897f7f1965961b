//! `spate`: runs spate's main jobs and inspects what spate persisted (WAL segments, checkpoints).
//!
//! Every subcommand answers bad input (missing paths, damaged files, unreachable stores) with a
//! one-line error on stderr and a non-zero exit code; it never panics on input.

mod chaos;
mod checkpoint;
mod feed;
mod jobs;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// The engine allocates on receiver threads and frees on batch threads (blocks, per-batch maps);
// mimalloc's thread-local free lists make that cheap where glibc malloc was 20-29 % of a profiled
// word count (docs/performance.md). The benchmarks use it too, so their figures match the binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod failpoints;
mod wal;

/// spate — fault-tolerant micro-batch stream processing.
#[derive(Debug, Parser)]
#[command(name = "spate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Subcommands. Each area lives in its own module (`wal`, `checkpoint`, `jobs`, ...), which owns its
/// clap arguments and its `run` function.
#[derive(Debug, Subcommand)]
enum Command {
    /// Print version and format information.
    Info {
        /// List every named fail point instead (name, crate, description; tab-separated), and
        /// whether this build compiled them in (`spate-cli/failpoints` feature).
        #[arg(long)]
        failpoints: bool,
    },
    /// Inspect a write-ahead log directory (`dump`, `verify`).
    #[command(subcommand)]
    Wal(wal::WalCommand),
    /// Inspect a checkpoint location (`ls`, `show`, `verify`, `gc`).
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Serve a corpus over TCP at a fixed or stepped rate, with exact accounting and optional acks.
    Feed(feed::FeedArgs),
    /// Generate a deterministic corpus (words: byte-identical to the Spark harness; clicks).
    Gen(jobs::gen::GenArgs),
    /// Word count over a socket or a directory (per-batch counts; running totals per word with --checkpoint).
    Wordcount(jobs::wordcount::WordcountArgs),
    /// Clicks per device type over a sliding window (malformed lines counted, never fatal).
    Clicks(jobs::clicks::ClicksArgs),
    /// Crash testing: kill a streaming program many times and check exactly-once results.
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Diagnostics: `SPATE_LOG=debug` (or any tracing filter, e.g. `spate_streaming=debug`) logs
    // the engine's events to stderr.
    if let Ok(filter) = std::env::var("SPATE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    if let Err(code) = failpoints::setup() {
        return code;
    }
    match cli.command {
        Command::Wal(cmd) => wal::run(cmd),
        Command::Checkpoint(cmd) => checkpoint::run(cmd),
        Command::Info { failpoints: true } => failpoints::list(),
        Command::Info { failpoints: false } => {
            println!(
                "spate {} (wal format {}, checkpoint format {}, codec {})",
                env!("CARGO_PKG_VERSION"),
                spate_types::format::WAL_FORMAT_VERSION,
                spate_types::format::CHECKPOINT_FORMAT_VERSION,
                spate_types::format::CODEC_BINCODE2
            );
            ExitCode::SUCCESS
        }
        Command::Feed(args) => feed::run(args),
        Command::Gen(args) => jobs::report(jobs::gen::run(args)),
        Command::Wordcount(args) => jobs::report(jobs::wordcount::run(args)),
        Command::Clicks(args) => jobs::report(jobs::clicks::run(args)),
        Command::Chaos(cmd) => chaos::run(cmd),
    }
}
