//! The seeded schedule of a chaos run: everything random about a run is drawn here, up front, from
//! the seed, so a seed reproduces the same schedule exactly (the processes' timing is the only
//! thing a re-run does not repeat).

use crate::rng::Rng;
use serde::Serialize;

/// How one cycle ends the program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Crash {
    /// SIGKILL `delay_ms` after the program printed its restart line (`early: false`) or after
    /// spawn, possibly while it is still recovering (`early: true`).
    Kill {
        /// Milliseconds after the reference instant.
        delay_ms: u64,
        /// Measured from spawn instead of from the restart line.
        early: bool,
    },
    /// The fail point `name` is armed through `SPATE_FAILPOINTS` (`spec` is the full value); the
    /// program is expected to abort there. If it has not ended `timeout_ms` after its restart line
    /// (the point was not reached, or the build has no fail points), it is SIGKILLed.
    FailPoint {
        /// The fail point's name (e.g. `wal::sync::before`).
        name: String,
        /// The `SPATE_FAILPOINTS` value.
        spec: String,
        /// Milliseconds after the restart line before the harness gives up and kills.
        timeout_ms: u64,
    },
}

/// A disturbance applied after a cycle's process ended, before the next start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disturbance {
    /// Flip one byte of the newest checkpoint manifest (only when at least two exist, so recovery
    /// can fall back to an older one). Local stores only.
    CorruptManifest,
    /// Append 97 non-zero bytes to the newest WAL segment (a torn tail).
    WalGarbage,
    /// Delete the sled state directory (`<checkpoint>/state`): the state must be rebuilt from the
    /// checkpoint. Local stores only.
    DeleteStateDir,
    /// Run the user's hook command ([`crate::ChaosConfig::hook`]), e.g. stop and restart the S3
    /// server, or fill a disk.
    Hook,
}

/// One crash cycle.
#[derive(Clone, Debug, Serialize)]
pub struct CyclePlan {
    /// 0-based cycle number.
    pub cycle: u32,
    /// How the cycle ends.
    pub crash: Crash,
    /// Chunks moved into the input directory this cycle, with their offsets in ms after the
    /// restart line. A move not yet due when the process ended is carried to the next run.
    pub moves: Vec<(u32, u64)>,
    /// `SPATE_STATE_BACKEND` for this run (`memory` or `sled`; built-in programs only).
    pub backend: &'static str,
    /// Applied after the process ended.
    pub disturbance: Option<Disturbance>,
}

/// The knobs a schedule is drawn with.
#[derive(Clone, Debug)]
pub struct ScheduleParams {
    /// Number of SIGKILL cycles.
    pub kill_cycles: u32,
    /// Fail points, each armed in exactly one extra cycle at a seeded position.
    pub failpoints: Vec<String>,
    /// The fail crate action armed at each point (spate: `return(abort)`).
    pub failpoint_action: String,
    /// A fail point cycle skips the first 0..=N hits of its point (`N*off->action`), seeded.
    pub max_failpoint_skip: u64,
    /// How long a fail point cycle waits after the restart line for the program to abort, ms.
    pub failpoint_timeout_ms: u64,
    /// Number of input chunks.
    pub chunks: u32,
    /// Lower bound of the kill delay after the restart line, ms (lets each run make progress).
    pub min_kill_ms: u64,
    /// Upper bound of the kill delay after the restart line, ms.
    pub max_kill_ms: u64,
    /// Probability that a kill cycle kills during start-up (delay from spawn, 0–`max_early_ms`).
    pub early_kill_probability: f64,
    /// Upper bound of an early kill's delay after spawn, ms.
    pub max_early_ms: u64,
    /// Probability of a disturbance after a cycle.
    pub disturbance_probability: f64,
    /// The disturbances allowed.
    pub disturbances: Vec<Disturbance>,
    /// Alternate `memory` and `sled` state backends at random.
    pub mix_backends: bool,
}

/// Draws the schedule for `seed`: kill and fail point cycles interleaved, the chunks spread over
/// the cycles.
pub fn draw(seed: u64, p: &ScheduleParams) -> Vec<CyclePlan> {
    let mut rng = Rng::new(seed);
    let total = p.kill_cycles + p.failpoints.len() as u32;
    // Seeded positions of the fail point cycles (never cycle 0: the first run must create the
    // checkpoint the later cycles restart from) unless there are no kill cycles at all.
    let mut fp_at: Vec<Option<String>> = vec![None; total as usize];
    for name in &p.failpoints {
        loop {
            let lo = u64::from(p.kill_cycles > 0);
            let at = rng.range(lo, u64::from(total) - 1) as usize;
            if fp_at[at].is_none() {
                fp_at[at] = Some(name.clone());
                break;
            }
        }
    }
    // Chunks: cycle i gets a contiguous run; spread evenly with jitter, all assigned.
    let mut next_chunk = 0u32;
    let mut plans = Vec::with_capacity(total as usize);
    for c in 0..total {
        let due = ((u64::from(c) + 1) * u64::from(p.chunks) / u64::from(total.max(1))) as u32;
        let want = due.saturating_sub(next_chunk) + rng.range(0, 1) as u32;
        let n = want.min(p.chunks - next_chunk);
        let crash = match &fp_at[c as usize] {
            Some(name) => {
                let skip = rng.range(0, p.max_failpoint_skip);
                let spec = if skip == 0 {
                    format!("{name}={}", p.failpoint_action)
                } else {
                    format!("{name}={skip}*off->{}", p.failpoint_action)
                };
                Crash::FailPoint {
                    name: name.clone(),
                    spec,
                    timeout_ms: p.failpoint_timeout_ms,
                }
            }
            None => {
                let early = c > 0 && rng.chance(p.early_kill_probability);
                Crash::Kill {
                    delay_ms: if early {
                        rng.range(0, p.max_early_ms)
                    } else {
                        rng.range(p.min_kill_ms, p.max_kill_ms)
                    },
                    early,
                }
            }
        };
        let horizon = match &crash {
            Crash::Kill {
                delay_ms,
                early: false,
            } => (*delay_ms).max(1),
            Crash::Kill { early: true, .. } => 1,
            Crash::FailPoint { timeout_ms, .. } => timeout_ms / 2,
        };
        let mut offsets: Vec<u64> = (0..n).map(|_| rng.range(0, horizon)).collect();
        offsets.sort_unstable();
        let moves: Vec<(u32, u64)> = (next_chunk..next_chunk + n).zip(offsets).collect();
        next_chunk += n;
        let backend = if p.mix_backends && rng.chance(0.5) {
            "sled"
        } else {
            "memory"
        };
        let disturbance = if !p.disturbances.is_empty() && rng.chance(p.disturbance_probability) {
            let i = rng.range(0, p.disturbances.len() as u64 - 1) as usize;
            Some(p.disturbances[i])
        } else {
            None
        };
        plans.push(CyclePlan {
            cycle: c,
            crash,
            moves,
            backend,
            disturbance,
        });
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ScheduleParams {
        ScheduleParams {
            kill_cycles: 30,
            failpoints: vec!["a::b".into(), "c::d".into()],
            failpoint_action: "return(abort)".into(),
            max_failpoint_skip: 2,
            failpoint_timeout_ms: 3000,
            chunks: 50,
            min_kill_ms: 0,
            max_kill_ms: 1000,
            early_kill_probability: 0.2,
            max_early_ms: 400,
            disturbance_probability: 0.2,
            disturbances: vec![Disturbance::WalGarbage],
            mix_backends: true,
        }
    }

    #[test]
    fn a_seed_reproduces_its_schedule_and_every_fail_point_appears_once() {
        let a = serde_json::to_string(&draw(5, &params())).unwrap();
        let b = serde_json::to_string(&draw(5, &params())).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, serde_json::to_string(&draw(6, &params())).unwrap());
        let plans = draw(5, &params());
        assert_eq!(plans.len(), 32);
        for name in ["a::b", "c::d"] {
            let n = plans
                .iter()
                .filter(|p| matches!(&p.crash, Crash::FailPoint { name: x, .. } if x == name))
                .count();
            assert_eq!(n, 1, "{name}");
        }
        assert!(!matches!(plans[0].crash, Crash::FailPoint { .. }));
        let moved: Vec<u32> = plans
            .iter()
            .flat_map(|p| p.moves.iter().map(|m| m.0))
            .collect();
        assert_eq!(
            moved,
            (0..50).collect::<Vec<_>>(),
            "every chunk once, in order"
        );
    }
}
