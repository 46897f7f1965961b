//! `spate wordcount`: per-batch word counts over a socket or a directory.
//!
//! A word is a maximal run of non-whitespace characters (`str::split_whitespace`, Unicode
//! whitespace), counted case-sensitively. Each batch's counts are printed (Spark's `print` format)
//! and, with `--output DIR`, written to `DIR/wordcount-<batch ms>.txt`. The counts are per batch
//! (stateless, like the Spark harness's stateless run); the stateful, fault-tolerant version comes
//! with the checkpoint and WAL issues.

use super::run::{self, JobArgs};
use clap::Args;

/// `spate wordcount` arguments.
#[derive(Debug, Args)]
pub(crate) struct WordcountArgs {
    #[command(flatten)]
    job: JobArgs,
}

/// Runs `spate wordcount`.
pub(crate) fn run(args: WordcountArgs) -> Result<(), String> {
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
        run::outputs(&counts, &args, "wordcount")?;
        Ok(stats)
    })?;
    if let Some(file) = &args.describe {
        return run::describe(&ctx, file);
    }
    run::run(&ctx, &args, stats, Box::new(String::new), &String::new)
}
