//! `spate clicks`: clicks per device type (the seeds' user-behaviour pipeline).
//!
//! Input lines are `deviceId|deviceType|time|click` ([`parse_click`]). Without `--checkpoint`,
//! every slide the job emits, per device type, the sum of `click` over the last window of batches
//! (processing-time windows, as Spark's `reduceByKeyAndWindow`; the `time` field is validated, not
//! used for windowing). With `--checkpoint URL` it keeps **per-device-type totals** that survive
//! `kill -9`: a `map_with_state` keyed by device tracks every active device and times out devices
//! idle for `--device-timeout` (their final call retires them from the active count), and an
//! `update_state_by_key` keyed by type accumulates `clicks` and `active devices`; each batch emits
//! `type<TAB>clicks=<n> active=<m>`. `--windowed` keeps the windowed job with a checkpoint. Lines
//! that do not parse are counted (status line and final summary `malformed lines: N`), never
//! fatal.

use super::run::{self, JobArgs};
use clap::Args;
use spate_streaming::{BatchTime, DStream, DurationMs, State, StateSpec};
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
    /// With --checkpoint: a device with no click line for this long is retired (map_with_state
    /// timeout, in batch time).
    #[arg(long, default_value = "60s", value_parser = parse_dur)]
    device_timeout: DurationMs,
    /// With --checkpoint: the windowed per-type sums instead of running totals.
    #[arg(long)]
    windowed: bool,
}

/// Running totals of one device type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TypeTotals {
    /// Clicks since the first start.
    pub(crate) clicks: u64,
    /// Devices of this type seen within the device timeout.
    pub(crate) active: i64,
}

impl std::fmt::Display for TypeTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "clicks={} active={}", self.clicks, self.active)
    }
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
    let ClicksArgs {
        job,
        window,
        slide,
        device_timeout,
        windowed,
    } = args;
    let stateful = job.checkpoint.is_some() && !windowed;
    let malformed = Arc::new(AtomicU64::new(0));
    let bad = Arc::clone(&malformed);
    let (ctx, stats) = run::context(&job, "clicks", |ctx| {
        let (lines, stats) = run::input(ctx, &job)?;
        if stateful {
            let totals = stateful_totals(&lines, device_timeout, bad).map_err(|e| e.to_string())?;
            run::outputs(&totals, &job, "clicks")?;
            return Ok(stats);
        }
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

/// The fault-tolerant pipeline: per device (map_with_state, idle timeout) → per type
/// (update_state_by_key) running totals.
fn stateful_totals(
    lines: &DStream<String>,
    device_timeout: DurationMs,
    bad: Arc<AtomicU64>,
) -> spate_streaming::Result<DStream<(String, TypeTotals)>> {
    // Per device: its type and whether it is known. Emits (type, (clicks, active-device delta)).
    let spec = StateSpec::function(
        |_t: BatchTime, _dev: &String, v: Option<(String, u64)>, st: &mut State<String>| {
            if st.is_timing_out() {
                // A retired device leaves its type's active count.
                return st.get().map(|ty| (ty.clone(), (0u64, -1i64)));
            }
            let (ty, clicks) = v?;
            let new_device = !st.exists();
            st.update(ty.clone());
            Some((ty, (clicks, i64::from(new_device))))
        },
    )
    .timeout(device_timeout);
    let per_device = lines
        .flat_map(move |l: String| match parse_click(&l) {
            Some(c) => vec![(c.device_id.to_owned(), (c.device_type.to_owned(), c.clicks))],
            None => {
                bad.fetch_add(1, Ordering::Relaxed);
                Vec::new()
            }
        })?
        .map_with_state(spec)?;
    per_device
        .stream()
        .update_state_by_key(|deltas: &[(u64, i64)], old: Option<TypeTotals>| {
            let mut t = old.unwrap_or_default();
            for (c, a) in deltas {
                t.clicks += c;
                t.active += a;
            }
            Some(t)
        })?
        .name("totals_per_device_type")
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
