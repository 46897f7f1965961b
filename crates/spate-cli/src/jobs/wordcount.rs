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
    let ctx = run::context(&args, "wordcount")?;
    let (lines, stats) = run::input(&ctx, &args)?;
    let counts = lines
        // Map-side combine within each partition (a block of lines): count words as borrowed
        // `&str` and allocate one `String` per distinct word, not per occurrence. Same result as
        // flat_map(split_whitespace) -> map((w, 1)) -> reduce_by_key(+), several times cheaper.
        .map_partitions(|part: Vec<String>| count_words(&part))
        .and_then(|p| p.reduce_by_key(|a, b| a + b))
        .and_then(|c| c.name("counts"))
        .map_err(|e| e.to_string())?;
    run::outputs(&counts, &args, "wordcount")?;
    run::run(&ctx, &args, stats, Box::new(String::new), &String::new)
}

/// Counts the words (`split_whitespace`) of `lines`.
pub(crate) fn count_words(lines: &[String]) -> Vec<(String, u64)> {
    let mut m: rustc_hash::FxHashMap<&str, u64> = rustc_hash::FxHashMap::default();
    for l in lines {
        for w in l.split_whitespace() {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m.into_iter().map(|(w, c)| (w.to_owned(), c)).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_are_maximal_non_whitespace_runs_case_sensitive() {
        let lines = vec![
            "The the  THE\tthe\u{a0}x".to_string(),
            String::new(),
            " caf\u{e9}, caf\u{e9}\r".to_string(),
        ];
        let mut got = super::count_words(&lines);
        got.sort();
        let want: Vec<(String, u64)> = vec![
            ("THE".into(), 1),
            ("The".into(), 1),
            ("caf\u{e9}".into(), 1),
            ("caf\u{e9},".into(), 1),
            ("the".into(), 2),
            ("x".into(), 1),
        ];
        assert_eq!(got, want);
    }
}
