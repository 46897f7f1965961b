//! `spate wordcount`: word counts over a socket or a directory.
//!
//! A word is a maximal run of non-whitespace characters (`str::split_whitespace`, Unicode
//! whitespace), counted case-sensitively. Without `--checkpoint` the counts are per batch
//! (stateless, like the Spark harness's stateless run). With `--checkpoint URL` the job keeps a
//! **running total per word** since its first start (`update_state_by_key`, data-checkpointed),
//! which survives `kill -9` exactly; `--per-batch` keeps per-batch counts with a checkpoint. Each
//! batch's result is printed (Spark's `print` format) and, with `--output DIR`, written to
//! `DIR/wordcount-<batch ms>.txt` (the running totals: every word seen so far).

use super::run::{self, JobArgs};
use clap::Args;

/// `spate wordcount` arguments.
#[derive(Debug, Args)]
pub(crate) struct WordcountArgs {
    #[command(flatten)]
    job: JobArgs,
    /// With --checkpoint: per-batch counts instead of running totals.
    #[arg(long)]
    per_batch: bool,
    /// Data-checkpoint interval of the running totals (default: the smallest multiple of --batch
    /// at least 10 s, Spark's rule for updateStateByKey).
    #[arg(long, value_parser = super::run::parse_duration_arg)]
    state_checkpoint: Option<spate_streaming::DurationMs>,
}

/// Runs `spate wordcount`.
pub(crate) fn run(args: WordcountArgs) -> Result<(), String> {
    let per_batch = args.per_batch || args.job.checkpoint.is_none();
    let state_checkpoint = args.state_checkpoint;
    let args = args.job;
    let (ctx, stats) = run::context(&args, "wordcount", |ctx| {
        let (lines, stats) = run::input(ctx, &args)?;
        let counts = lines
            // Map-side combine within each partition (a block of lines): count words as borrowed
            // `&str` and allocate one `String` per distinct word, not per occurrence. Same result
            // as flat_map(split_whitespace) -> map((w, 1)) -> reduce_by_key(+), several times
            // cheaper.
            .map_partitions(|part: Vec<String>| super::words::count_words(&part))
            .and_then(|p| p.reduce_by_key(|a, b| a + b))
            .and_then(|c| c.name("counts"))
            .map_err(|e| e.to_string())?;
        if per_batch {
            run::outputs(&counts, &args, "wordcount")?;
        } else {
            let mut totals = counts
                // A fold (total + Σ new): restarts may coalesce missed batches.
                .update_state_by_key_with(
                    spate_streaming::UpdateStateSpec::new().coalescable(),
                    |new: &[u64], old: Option<u64>| {
                        Some(old.unwrap_or(0) + new.iter().sum::<u64>())
                    },
                )
                .and_then(|t| t.name("totals"))
                .map_err(|e| e.to_string())?;
            if let Some(i) = state_checkpoint {
                totals = totals.checkpoint(i).map_err(|e| e.to_string())?;
            }
            run::outputs(&totals, &args, "wordcount")?;
        }
        Ok(stats)
    })?;
    if let Some(file) = &args.describe {
        return run::describe(&ctx, file);
    }
    run::run(&ctx, &args, stats, Box::new(String::new), &String::new)
}
