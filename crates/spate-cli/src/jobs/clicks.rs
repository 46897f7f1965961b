//! `spate clicks`: clicks per device type over a sliding window (the seeds' user-behaviour
//! pipeline).
//!
//! Input lines are `deviceId|deviceType|time|click` ([`parse_click`]); every slide the job emits,
//! per device type, the sum of `click` over the last window of batches (processing-time windows, as
//! Spark's `reduceByKeyAndWindow`; the `time` field is validated, not used for windowing). Lines
//! that do not parse are counted (status line and final summary `malformed lines: N`), never
//! fatal.

use super::run::{self, JobArgs};
use clap::Args;
use spate_streaming::DurationMs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `spate clicks` arguments.
#[derive(Debug, Args)]
pub(crate) struct ClicksArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Window length (a multiple of --batch).
    #[arg(long, default_value = "30s", value_parser = parse_dur)]
    window: DurationMs,
    /// Slide (a multiple of --batch).
    #[arg(long, default_value = "10s", value_parser = parse_dur)]
    slide: DurationMs,
}

fn parse_dur(s: &str) -> Result<DurationMs, String> {
    if let Ok(ms) = s.trim().parse::<u64>() {
        return Ok(DurationMs::from_millis(ms));
    }
    humantime::parse_duration(s.trim())
        .map(DurationMs::from)
        .map_err(|e| format!("{s:?} is not a duration: {e}"))
}

/// Runs `spate clicks`.
pub(crate) fn run(args: ClicksArgs) -> Result<(), String> {
    let ClicksArgs { job, window, slide } = args;
    let malformed = Arc::new(AtomicU64::new(0));
    let bad = Arc::clone(&malformed);
    let (ctx, stats) = run::context(&job, "clicks", |ctx| {
        let (lines, stats) = run::input(ctx, &job)?;
        let per_type = lines
            .flat_map(move |l: String| match parse_click(&l) {
                Some(c) => vec![(c.device_type.to_owned(), c.clicks)],
                None => {
                    bad.fetch_add(1, Ordering::Relaxed);
                    Vec::new()
                }
            })
            .and_then(|s| s.reduce_by_key_and_window(|a, b| a + b, window, slide))
            .and_then(|s| s.name("clicks_per_device_type"))
            .map_err(|e| e.to_string())?;
        run::outputs(&per_type, &job, "clicks")?;
        Ok(stats)
    })?;
    if let Some(file) = &job.describe {
        return run::describe(&ctx, file);
    }
    let m1 = Arc::clone(&malformed);
    let m2 = Arc::clone(&malformed);
    run::run(
        &ctx,
        &job,
        stats,
        Box::new(move || format!(", {} malformed", m1.load(Ordering::Relaxed))),
        &move || format!("\nmalformed lines: {}", m2.load(Ordering::Relaxed)),
    )
}

/// One parsed click event: `deviceId|deviceType|time|click`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Click<'a> {
    /// Device id (non-empty).
    pub(crate) device_id: &'a str,
    /// Device type (non-empty).
    pub(crate) device_type: &'a str,
    /// Event time, ms since the epoch.
    pub(crate) time_ms: u64,
    /// Number of clicks (0 for an impression).
    pub(crate) clicks: u64,
}

/// Parses a click line: exactly four `|`-separated fields, the first two non-empty (after
/// trimming spaces), the last two unsigned decimal integers. Anything else is malformed (`None`).
pub(crate) fn parse_click(line: &str) -> Option<Click<'_>> {
    let mut it = line.split('|');
    let device_id = it.next()?.trim();
    let device_type = it.next()?.trim();
    let time_ms = it.next()?.trim().parse().ok()?;
    let clicks = it.next()?.trim().parse().ok()?;
    if it.next().is_some() || device_id.is_empty() || device_type.is_empty() {
        return None;
    }
    Some(Click {
        device_id,
        device_type,
        time_ms,
        clicks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rules() {
        assert_eq!(
            parse_click("dev-1|phone|1700000000000|1"),
            Some(Click {
                device_id: "dev-1",
                device_type: "phone",
                time_ms: 1_700_000_000_000,
                clicks: 1
            })
        );
        for bad in [
            "",
            "dev-1|phone|1",
            "dev-1|phone|1|1|x",
            "dev-1|phone|x|1",
            "dev-1|phone|1|-1",
            "|phone|1|1",
            "dev|  |1|1",
            "no separators",
            "\u{fffd}|||",
        ] {
            assert_eq!(parse_click(bad), None, "{bad:?}");
        }
    }
}
