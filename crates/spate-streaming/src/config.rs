//! [`StreamingConfig`]: defaults ← TOML file ← `SPATE_*` environment variables.

use serde::{Deserialize, Deserializer, Serialize};
use spate_types::DurationMs;
use std::path::{Path, PathBuf};

/// Errors loading or validating a [`StreamingConfig`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("reading config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML text is malformed or has unknown keys / wrong types.
    #[error("parsing config {origin}: {reason}")]
    Parse {
        /// The file path, or `<string>`.
        origin: String,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// A key has an invalid value (from the file, the environment or the builder).
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        /// The key (`batch_interval` or `SPATE_BATCH_INTERVAL`).
        key: String,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An interval outside its sane bounds (see [`IntervalBounds`]).
    #[error("{key} = {value_ms} ms is outside its bounds [{min_ms} ms, {max_ms} ms]")]
    OutOfRange {
        /// The key (`batch_interval`, or a CLI flag such as `--batch`).
        key: String,
        /// The value given, ms.
        value_ms: u64,
        /// Smallest accepted value, ms (inclusive).
        min_ms: u64,
        /// Largest accepted value, ms (inclusive).
        max_ms: u64,
    },
}

/// Inclusive sane bounds of an interval setting, ms. A value outside is refused with
/// [`ConfigError::OutOfRange`] (e.g. `--batch 1000d`, after which nothing would ever tick).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalBounds {
    /// Smallest accepted value, ms.
    pub min_ms: u64,
    /// Largest accepted value, ms.
    pub max_ms: u64,
}

impl IntervalBounds {
    /// `[min_ms, max_ms]`, both inclusive.
    #[must_use]
    pub const fn new(min_ms: u64, max_ms: u64) -> Self {
        IntervalBounds { min_ms, max_ms }
    }
}

const HOUR_MS: u64 = 3_600_000;

/// Batch interval: [1 ms, 1 h].
pub const BATCH_INTERVAL_BOUNDS: IntervalBounds = IntervalBounds::new(1, HOUR_MS);
/// Block interval: [1 ms, 1 h].
pub const BLOCK_INTERVAL_BOUNDS: IntervalBounds = IntervalBounds::new(1, HOUR_MS);
/// Receiver restart delay: [0, 1 h].
pub const RESTART_DELAY_BOUNDS: IntervalBounds = IntervalBounds::new(0, HOUR_MS);
/// Graceful-stop timeout: [1 ms, 1 h].
pub const GRACEFUL_STOP_TIMEOUT_BOUNDS: IntervalBounds = IntervalBounds::new(1, HOUR_MS);
/// Window length, slide and checkpoint interval of an operator: [1 ms, 24 h].
pub const WINDOW_BOUNDS: IntervalBounds = IntervalBounds::new(1, 24 * HOUR_MS);
/// The CLI's `--idle` and `--duration` stop conditions: [1 ms, 24 h].
pub const STOP_CONDITION_BOUNDS: IntervalBounds = IntervalBounds::new(1, 24 * HOUR_MS);
/// Default cap of the graceful-stop timeout when none is configured: 60 s.
pub const DEFAULT_GRACEFUL_STOP_CAP_MS: u64 = 60_000;

/// Checks `value` against `bounds` (a pure function).
///
/// # Errors
/// [`ConfigError::OutOfRange`] naming `key`, the value and the bounds.
pub fn check_interval(
    key: &str,
    value: DurationMs,
    bounds: IntervalBounds,
) -> Result<(), ConfigError> {
    if value.0 < bounds.min_ms || value.0 > bounds.max_ms {
        return Err(ConfigError::OutOfRange {
            key: key.to_owned(),
            value_ms: value.0,
            min_ms: bounds.min_ms,
            max_ms: bounds.max_ms,
        });
    }
    Ok(())
}

/// Configuration of a [`StreamingContext`](crate::StreamingContext).
///
/// Durations accept either an integer number of **milliseconds** (`batch_interval = 1000`) or a
/// humantime string (`batch_interval = "1s"`, `"200ms"`). Load order: [`Default`], then a TOML file
/// ([`StreamingConfig::from_toml_file`]), then `SPATE_<KEY>` environment variables
/// ([`StreamingConfig::apply_env`]), e.g. `SPATE_BATCH_INTERVAL=2s`, `SPATE_PARALLELISM=4`.
/// Spark's equivalent keys are named on each field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamingConfig {
    /// Application name (logs, listener events). Default `spate`.
    pub app_name: String,
    /// Batch interval (Spark's `batchDuration`). Default 1 s. Must be positive.
    #[serde(deserialize_with = "de_duration")]
    pub batch_interval: DurationMs,
    /// Block interval of receivers' block generators (`spark.streaming.blockInterval`).
    /// Default 200 ms. Must be positive.
    #[serde(deserialize_with = "de_duration")]
    pub block_interval: DurationMs,
    /// Worker threads for partition-parallel transformations (Spark's `local[N]`). Default: the
    /// number of cores.
    pub parallelism: usize,
    /// Partitions of shuffled (by-key) results and of split inputs (Spark's
    /// `spark.default.parallelism`). Default: `parallelism`.
    pub default_partitions: usize,
    /// Maximum records per second per receiver (`spark.streaming.receiver.maxRate`); `None` or 0 =
    /// unlimited. Enforced in `store`, which blocks, as Spark's `RateLimiter`.
    pub max_rate_per_receiver: Option<u64>,
    /// Delay between a receiver's `on_stop` and `on_start` on restart
    /// (`spark.streaming.receiverRestartDelay`). Default 2 s.
    #[serde(deserialize_with = "de_duration")]
    pub receiver_restart_delay: DurationMs,
    /// Bound on a graceful stop (`spark.streaming.gracefulStopTimeout`). Default `None` = 10 ×
    /// batch interval.
    #[serde(deserialize_with = "de_opt_duration")]
    pub graceful_stop_timeout: Option<DurationMs>,
    /// Stop gracefully on SIGTERM / SIGINT (`spark.streaming.stopGracefullyOnShutdown`).
    /// Default false.
    pub stop_gracefully_on_signal: bool,
    /// Batches processed concurrently (`spark.streaming.concurrentJobs`). Default 1.
    pub concurrent_jobs: usize,
    /// Checkpoint location URL (`file:///path`, bare path, `s3://bucket/prefix`, `memory://`)
    /// (Spark's `ssc.checkpoint(dir)`). Set, the engine writes metadata checkpoints and keeps the
    /// receiver WAL; [`StreamingContext::get_or_create`](crate::StreamingContext::get_or_create)
    /// sets it from its URL argument. `None` (default): nothing survives a crash.
    pub checkpoint: Option<String>,
    /// Directory of the write-ahead log (received blocks and tracker events). Default: `<checkpoint
    /// path>/wal` for local checkpoint URLs; **required** for `s3://` and `memory://` checkpoints,
    /// since the WAL needs a local file with fdatasync (docs/design/0001-fault-tolerance.md).
    pub wal_dir: Option<PathBuf>,
    /// WAL segment size in bytes (default 64 MiB); segments are deleted whole once no retained
    /// batch needs them, so smaller segments free disk sooner. Spark rolls its WAL every 60 s
    /// (`rollingIntervalSecs`); spate also rolls every 60 s.
    pub wal_segment_bytes: u64,
    /// Write received blocks to the WAL before `store` returns
    /// (`spark.streaming.receiver.writeAheadLog.enable`). Default **true** when checkpointing
    /// (Spark: false). Off, received-but-unprocessed records are lost on a crash.
    pub receiver_wal: bool,
    /// What restart does with batch times missed while the application was down:
    /// `generate_all` (default, as Spark's `JobGenerator.restart`), `coalesce_empty` or
    /// `coalesce` (see [`MissedBatches`] and docs/recovery.md "Bounded catch-up").
    pub missed_batches: MissedBatches,
    /// Completed checkpoints kept by automatic GC (default 10; Spark keeps the last 10 files).
    pub checkpoint_retain: usize,
    /// Where stateful operators keep their state: `memory` (default) or `sled` (local disk under
    /// `state_dir`, for state larger than memory). Either way the checkpoint is the source of
    /// truth: the sled directory is rebuilt from it on every start.
    pub state_backend: StateBackendKind,
    /// Directory of the sled state backend. Default: `<checkpoint path>/state` for local
    /// checkpoints; required with `state_backend = "sled"` and a remote checkpoint.
    pub state_dir: Option<PathBuf>,
    /// Data checkpoints of a stateful operator between two full snapshots of a partition: every
    /// `state_snapshot_every`-th data checkpoint writes a snapshot, the others a delta of the keys
    /// changed since the previous one (default 10; 1 = always a snapshot). Bounds restore work.
    pub state_snapshot_every: u32,
    /// With no valid checkpoint but files present, archive them and start fresh instead of failing
    /// (Spark's `getOrCreate(createOnError = true)`, which deletes nothing either). Default false.
    pub create_on_error: bool,
    /// Bound on recovery work (docs/recovery.md, "Recovery-time estimate"): when a restore of the
    /// newest checkpoint would recompute this many batches of a stateful operator's state or more,
    /// the completing batch writes an extra data checkpoint (a delta). Default 20; 0 = no bound
    /// (only the data-checkpoint interval).
    pub max_recovery_batches: u64,
    /// Back-pressure (`spark.streaming.backpressure.enabled`, off by default in Spark): every
    /// completed batch feeds a PID rate estimator per receiver (Spark's `PIDRateEstimator`) whose
    /// estimate becomes the receiver's rate limit while the engine is loaded; see
    /// `docs/flow-control.md`. `max_rate_per_receiver` stays a hard cap. Default **true**.
    pub backpressure: bool,
    /// Records/s each receiver may store before the first estimate
    /// (`spark.streaming.backpressure.initialRate`); `None`: unlimited (the memory budget still
    /// bounds memory). Default `None`.
    pub backpressure_initial_rate: Option<u64>,
    /// The PID gains of the back-pressure estimator (Spark's `spark.streaming.backpressure.pid.*`).
    pub backpressure_pid: PidConfig,
    /// Memory budget of received, unprocessed data, bytes: blocks are held against it from their
    /// store until the batch that reads them is cleaned up. At the budget receivers stop storing
    /// (`store_many` blocks; the socket receiver stops reading, so TCP pushes back on the sender);
    /// it is exceeded by at most one block per receiver. 0: unlimited. Default 256 MiB.
    pub receiver_memory_budget: u64,
    /// A receiver's block is cut as soon as its records reach this many bytes, as well as every
    /// `block_interval`, so a block (one WAL record) stays far below the WAL's record limit
    /// (`spate_wal::MAX_RECORD_BYTES`, 64 MiB). 0: by time only. Default 4 MiB.
    pub max_block_bytes: u64,
}

/// The PID gains of the back-pressure estimator in thousandths (1000 = a gain of 1.0), so the
/// configuration stays exact (`Eq`); defaults are Spark's: proportional 1.0, integral 0.2,
/// derivative 0.0, min rate 100 records/s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PidConfig {
    /// Proportional gain × 1000 (`pid.proportional`, default 1000).
    pub proportional_milli: u32,
    /// Integral gain × 1000 (`pid.integral`, default 200).
    pub integral_milli: u32,
    /// Derivative gain × 1000 (`pid.derived`, default 0).
    pub derivative_milli: u32,
    /// Lowest rate the estimator returns, records/s (`pid.minRate`, default 100; must be > 0).
    pub min_rate: u64,
}

impl Default for PidConfig {
    fn default() -> Self {
        PidConfig {
            proportional_milli: 1000,
            integral_milli: 200,
            derivative_milli: 0,
            min_rate: 100,
        }
    }
}

impl PidConfig {
    /// The gains as the estimator takes them.
    pub fn gains(&self) -> crate::rate::PidGains {
        crate::rate::PidGains {
            proportional: f64::from(self.proportional_milli) / 1000.0,
            integral: f64::from(self.integral_milli) / 1000.0,
            derivative: f64::from(self.derivative_milli) / 1000.0,
            min_rate: self.min_rate as f64,
        }
    }
}

/// Where stateful operators keep their state (see [`StreamingConfig::state_backend`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StateBackendKind {
    /// In memory (hash maps per partition).
    #[default]
    Memory,
    /// sled 0.34 trees on local disk, one per operator partition.
    Sled,
}

impl std::str::FromStr for StateBackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "memory" => Ok(StateBackendKind::Memory),
            "sled" => Ok(StateBackendKind::Sled),
            other => Err(format!(
                "unknown state backend {other:?} (expected memory or sled)"
            )),
        }
    }
}

/// Restart policy for batch times missed during an outage (see
/// [`StreamingConfig::missed_batches`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MissedBatches {
    /// Generate every grid time in `[checkpoint time, restart time)` (Spark's behaviour): windows see
    /// every batch; a long outage means many (mostly empty) batches on restart.
    #[default]
    GenerateAll,
    /// Generate the pending batches, then only the first missed time (which receives every block
    /// recovered from the WAL) and the last one; empty batches in between are skipped and listed in
    /// the restart report. Windows then see fewer batches than a crash-free run.
    CoalesceEmpty,
    /// Bounded catch-up (docs/recovery.md "Bounded catch-up"): every run of consecutive missed
    /// times (not pending, not recorded in the WAL) runs as **one** batch at the run's last time,
    /// which reads all of the run's input (files, blocks); the times before it are listed in the
    /// restart report (`batches_coalesced`) and write no output of their own. A run spans at most
    /// the shortest remember window of the graph's file inputs. Setting it asserts that the
    /// graph's per-batch functions give the same result on merged input (stateless operators,
    /// `update_state_by_key` declared [`UpdateStateSpec::coalescable`](crate::UpdateStateSpec::coalescable));
    /// the engine refuses it (falls back to `generate_all` and says why in the restart report) for
    /// graphs where per-batch boundaries matter: windows, `map_with_state`, non-fold
    /// `update_state_by_key`.
    Coalesce,
}

impl std::str::FromStr for MissedBatches {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "generate_all" => Ok(MissedBatches::GenerateAll),
            "coalesce_empty" => Ok(MissedBatches::CoalesceEmpty),
            "coalesce" => Ok(MissedBatches::Coalesce),
            other => Err(format!(
                "unknown missed-batch policy {other:?} (expected generate_all, coalesce_empty or coalesce)"
            )),
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1)
}

impl Default for StreamingConfig {
    fn default() -> Self {
        let p = cores();
        StreamingConfig {
            app_name: "spate".to_owned(),
            batch_interval: DurationMs::from_secs(1),
            block_interval: DurationMs::from_millis(200),
            parallelism: p,
            default_partitions: p,
            max_rate_per_receiver: None,
            receiver_restart_delay: DurationMs::from_secs(2),
            graceful_stop_timeout: None,
            stop_gracefully_on_signal: false,
            concurrent_jobs: 1,
            checkpoint: None,
            wal_dir: None,
            wal_segment_bytes: 64 << 20,
            receiver_wal: true,
            missed_batches: MissedBatches::GenerateAll,
            checkpoint_retain: 10,
            state_backend: StateBackendKind::Memory,
            state_dir: None,
            state_snapshot_every: 10,
            create_on_error: false,
            max_recovery_batches: 20,
            backpressure: true,
            backpressure_initial_rate: None,
            backpressure_pid: PidConfig::default(),
            receiver_memory_budget: 256 << 20,
            max_block_bytes: 4 << 20,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurRepr {
    Ms(u64),
    Text(String),
}

fn parse_duration(key: &str, text: &str) -> Result<DurationMs, ConfigError> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(DurationMs(ms));
    }
    humantime::parse_duration(t)
        .map(DurationMs::from)
        .map_err(|e| ConfigError::InvalidValue {
            key: key.to_owned(),
            value: text.to_owned(),
            reason: format!("not a duration (ms or e.g. \"1s\", \"200ms\"): {e}"),
        })
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<DurationMs, D::Error> {
    match DurRepr::deserialize(d)? {
        DurRepr::Ms(ms) => Ok(DurationMs(ms)),
        DurRepr::Text(t) => parse_duration("duration", &t).map_err(serde::de::Error::custom),
    }
}

fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DurationMs>, D::Error> {
    de_duration(d).map(Some)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: "expected true/false".to_owned(),
        }),
    }
}

fn parse_num<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse::<T>()
        .map_err(|e| ConfigError::InvalidValue {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

impl StreamingConfig {
    /// Defaults with the given batch interval.
    pub fn with_batch_interval(batch_interval: DurationMs) -> Self {
        StreamingConfig {
            batch_interval,
            ..StreamingConfig::default()
        }
    }

    /// Parses TOML text (keys as the field names; missing keys keep their defaults; unknown keys are
    /// an error) and validates the result.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] for malformed TOML / unknown keys, [`ConfigError::InvalidValue`] from
    /// [`validate`](Self::validate).
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::parse_toml(text, "<string>")
    }

    fn parse_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut cfg: StreamingConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            reason: e.to_string(),
        })?;
        // `default_partitions` follows `parallelism` unless given explicitly.
        if let Ok(table) = text.parse::<toml::Table>() {
            if table.contains_key("parallelism") && !table.contains_key("default_partitions") {
                cfg.default_partitions = cfg.parallelism;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a TOML file; see [`from_toml_str`](Self::from_toml_str).
    ///
    /// # Errors
    /// [`ConfigError::Io`] if unreadable, otherwise as [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_toml(&text, &path.display().to_string())
    }

    /// Defaults, then the file (if any), then the process environment's `SPATE_*` variables.
    ///
    /// # Errors
    /// As [`from_toml_file`](Self::from_toml_file) and [`apply_env`](Self::apply_env).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            Some(p) => Self::from_toml_file(p)?,
            None => Self::default(),
        };
        cfg.apply_env(std::env::vars())?;
        Ok(cfg)
    }

    /// Applies `SPATE_<FIELD>` variables from `vars` (pass `std::env::vars()`; tests pass their own
    /// list). Other `SPATE_*` names are ignored (they belong to other components, e.g. logging).
    /// An empty value for an optional key clears it.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] naming the variable.
    pub fn apply_env<I, K, V>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut partitions_set = false;
        let mut parallelism_set = false;
        for (k, v) in vars {
            let (key, value) = (k.as_ref(), v.as_ref());
            match key {
                "SPATE_APP_NAME" => self.app_name = value.to_owned(),
                "SPATE_BATCH_INTERVAL" => self.batch_interval = parse_duration(key, value)?,
                "SPATE_BLOCK_INTERVAL" => self.block_interval = parse_duration(key, value)?,
                "SPATE_PARALLELISM" => {
                    self.parallelism = parse_num(key, value)?;
                    parallelism_set = true;
                }
                "SPATE_DEFAULT_PARTITIONS" => {
                    self.default_partitions = parse_num(key, value)?;
                    partitions_set = true;
                }
                "SPATE_MAX_RATE_PER_RECEIVER" => {
                    self.max_rate_per_receiver = if value.trim().is_empty() {
                        None
                    } else {
                        Some(parse_num(key, value)?)
                    }
                }
                "SPATE_RECEIVER_RESTART_DELAY" => {
                    self.receiver_restart_delay = parse_duration(key, value)?;
                }
                "SPATE_GRACEFUL_STOP_TIMEOUT" => {
                    self.graceful_stop_timeout = if value.trim().is_empty() {
                        None
                    } else {
                        Some(parse_duration(key, value)?)
                    }
                }
                "SPATE_STOP_GRACEFULLY_ON_SIGNAL" => {
                    self.stop_gracefully_on_signal = parse_bool(key, value)?;
                }
                "SPATE_CONCURRENT_JOBS" => self.concurrent_jobs = parse_num(key, value)?,
                "SPATE_CHECKPOINT" => {
                    self.checkpoint = (!value.trim().is_empty()).then(|| value.to_owned());
                }
                "SPATE_WAL_DIR" => {
                    self.wal_dir = (!value.trim().is_empty()).then(|| PathBuf::from(value));
                }
                "SPATE_RECEIVER_WAL" => self.receiver_wal = parse_bool(key, value)?,
                "SPATE_WAL_SEGMENT_BYTES" => self.wal_segment_bytes = parse_num(key, value)?,
                "SPATE_CREATE_ON_ERROR" => self.create_on_error = parse_bool(key, value)?,
                "SPATE_MISSED_BATCHES" => {
                    self.missed_batches =
                        value.parse().map_err(|reason| ConfigError::InvalidValue {
                            key: key.to_owned(),
                            value: value.to_owned(),
                            reason,
                        })?;
                }
                "SPATE_CHECKPOINT_RETAIN" => self.checkpoint_retain = parse_num(key, value)?,
                "SPATE_STATE_BACKEND" => {
                    self.state_backend =
                        value.parse().map_err(|reason| ConfigError::InvalidValue {
                            key: key.to_owned(),
                            value: value.to_owned(),
                            reason,
                        })?;
                }
                "SPATE_STATE_DIR" => {
                    self.state_dir = (!value.trim().is_empty()).then(|| PathBuf::from(value));
                }
                "SPATE_STATE_SNAPSHOT_EVERY" => self.state_snapshot_every = parse_num(key, value)?,
                "SPATE_MAX_RECOVERY_BATCHES" => self.max_recovery_batches = parse_num(key, value)?,
                _ => {}
            }
        }
        if parallelism_set && !partitions_set {
            self.default_partitions = self.parallelism;
        }
        self.validate()
    }

    /// Checks every value's range.
    ///
    /// # Errors
    /// [`ConfigError::InvalidValue`] for a zero batch/block interval, parallelism, partitions or
    /// concurrent jobs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, value: String, reason: &str| {
            Err(ConfigError::InvalidValue {
                key: key.to_owned(),
                value,
                reason: reason.to_owned(),
            })
        };
        if self.batch_interval.0 == 0 {
            return bad("batch_interval", "0 ms".into(), "must be positive");
        }
        if self.block_interval.0 == 0 {
            return bad("block_interval", "0 ms".into(), "must be positive");
        }
        if self.parallelism == 0 {
            return bad("parallelism", "0".into(), "must be at least 1");
        }
        if self.backpressure_pid.min_rate == 0 {
            return bad(
                "backpressure_pid.min_rate",
                "0".into(),
                "must be at least 1",
            );
        }
        if self.default_partitions == 0 {
            return bad("default_partitions", "0".into(), "must be at least 1");
        }
        if self.concurrent_jobs == 0 {
            return bad("concurrent_jobs", "0".into(), "must be at least 1");
        }
        if self.wal_segment_bytes < 4096 {
            return bad(
                "wal_segment_bytes",
                self.wal_segment_bytes.to_string(),
                "must be at least 4096",
            );
        }
        if self.state_snapshot_every == 0 {
            return bad("state_snapshot_every", "0".into(), "must be at least 1");
        }
        if self.checkpoint_retain == 0 {
            return bad("checkpoint_retain", "0".into(), "must be at least 1");
        }
        check_interval("batch_interval", self.batch_interval, BATCH_INTERVAL_BOUNDS)?;
        check_interval("block_interval", self.block_interval, BLOCK_INTERVAL_BOUNDS)?;
        check_interval(
            "receiver_restart_delay",
            self.receiver_restart_delay,
            RESTART_DELAY_BOUNDS,
        )?;
        if let Some(t) = self.graceful_stop_timeout {
            check_interval("graceful_stop_timeout", t, GRACEFUL_STOP_TIMEOUT_BOUNDS)?;
        }
        Ok(())
    }

    /// The effective graceful-stop timeout: the configured one, or 10 × batch interval (Spark)
    /// capped at [`DEFAULT_GRACEFUL_STOP_CAP_MS`] (60 s), so a long batch interval cannot make a
    /// graceful stop wait for minutes.
    pub fn effective_graceful_stop_timeout(&self) -> DurationMs {
        self.graceful_stop_timeout.unwrap_or(DurationMs(
            self.batch_interval
                .0
                .saturating_mul(10)
                .min(DEFAULT_GRACEFUL_STOP_CAP_MS),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_accepts_ms_and_humantime_and_keeps_defaults() {
        let c = StreamingConfig::from_toml_str(
            "batch_interval = \"2s\"\nblock_interval = 50\nparallelism = 3\nmax_rate_per_receiver = 1000\n",
        )
        .unwrap();
        assert_eq!(c.batch_interval, DurationMs(2000));
        assert_eq!(c.block_interval, DurationMs(50));
        assert_eq!(c.parallelism, 3);
        assert_eq!(c.default_partitions, 3);
        assert_eq!(c.max_rate_per_receiver, Some(1000));
        assert_eq!(c.concurrent_jobs, 1);
        assert_eq!(c.receiver_restart_delay, DurationMs(2000));
        assert_eq!(c.effective_graceful_stop_timeout(), DurationMs(20_000));
    }

    #[test]
    fn toml_rejects_unknown_keys_garbage_and_zero() {
        assert!(matches!(
            StreamingConfig::from_toml_str("batch_intervall = 1"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            StreamingConfig::from_toml_str("\u{0}\u{ff}[[[="),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            StreamingConfig::from_toml_str("batch_interval = \"soon\""),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            StreamingConfig::from_toml_str("batch_interval = 0"),
            Err(ConfigError::InvalidValue { key, .. }) if key == "batch_interval"
        ));
    }

    #[test]
    fn intervals_outside_their_bounds_are_refused_naming_key_value_and_bounds() {
        let out = |text: &str| match StreamingConfig::from_toml_str(text) {
            Err(ConfigError::OutOfRange {
                key,
                value_ms,
                min_ms,
                max_ms,
            }) => (key, value_ms, min_ms, max_ms),
            other => panic!("{text}: expected OutOfRange, got {other:?}"),
        };
        assert_eq!(
            out("batch_interval = \"1000d\""),
            ("batch_interval".into(), 86_400_000_000, 1, 3_600_000)
        );
        assert_eq!(
            out("block_interval = \"2h\""),
            ("block_interval".into(), 7_200_000, 1, 3_600_000)
        );
        assert_eq!(
            out("graceful_stop_timeout = 0"),
            ("graceful_stop_timeout".into(), 0, 1, 3_600_000)
        );
        assert_eq!(
            out("receiver_restart_delay = \"3h\"").0,
            "receiver_restart_delay"
        );
        // The bounds themselves are accepted.
        StreamingConfig::from_toml_str("batch_interval = \"1h\"\nblock_interval = 1").unwrap();
        let mut c = StreamingConfig::default();
        let err = c
            .apply_env([("SPATE_BATCH_INTERVAL", "18446744073709551615")])
            .unwrap_err();
        assert!(matches!(err, ConfigError::OutOfRange { key, .. } if key == "batch_interval"));
        // Garbage stays a parse error, never a panic.
        for g in [
            "-1s",
            "1e9",
            "\u{0}",
            "9999999999999999999999",
            "1 fortnight",
            "",
        ] {
            let err = c.apply_env([("SPATE_BATCH_INTERVAL", g)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidValue { key, .. } if key == "SPATE_BATCH_INTERVAL"),
                "{g:?}: {err:?}"
            );
        }
        assert!(matches!(
            check_interval("--idle", DurationMs(0), STOP_CONDITION_BOUNDS),
            Err(ConfigError::OutOfRange { min_ms: 1, .. })
        ));
    }

    #[test]
    fn the_default_graceful_stop_timeout_is_ten_batches_capped_at_60_s() {
        let t = |batch: u64, configured: Option<u64>| {
            let mut c = StreamingConfig::with_batch_interval(DurationMs(batch));
            c.graceful_stop_timeout = configured.map(DurationMs);
            c.effective_graceful_stop_timeout().0
        };
        assert_eq!(t(500, None), 5_000);
        assert_eq!(t(6_000, None), 60_000);
        assert_eq!(t(3_600_000, None), 60_000);
        assert_eq!(t(3_600_000, Some(120_000)), 120_000);
        assert_eq!(t(1_000, Some(1)), 1);
    }

    #[test]
    fn env_overrides_file_values() {
        let mut c = StreamingConfig::from_toml_str("batch_interval = 500").unwrap();
        c.apply_env([
            ("SPATE_BATCH_INTERVAL", "3s"),
            ("SPATE_PARALLELISM", "5"),
            ("SPATE_STOP_GRACEFULLY_ON_SIGNAL", "true"),
            ("SPATE_CHECKPOINT", "file:///tmp/x"),
            ("SPATE_LOG", "debug"),
        ])
        .unwrap();
        assert_eq!(c.batch_interval, DurationMs(3000));
        assert_eq!(c.parallelism, 5);
        assert_eq!(c.default_partitions, 5);
        assert!(c.stop_gracefully_on_signal);
        assert_eq!(c.checkpoint.as_deref(), Some("file:///tmp/x"));
        let err = c
            .apply_env([("SPATE_CONCURRENT_JOBS", "many")])
            .unwrap_err();
        assert!(
            matches!(err, ConfigError::InvalidValue { key, .. } if key == "SPATE_CONCURRENT_JOBS")
        );
    }

    #[test]
    fn file_loading_reports_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spate.toml");
        std::fs::write(&p, "app_name = \"wc\"\nconcurrent_jobs = 2\n").unwrap();
        let c = StreamingConfig::from_toml_file(&p).unwrap();
        assert_eq!(c.app_name, "wc");
        assert_eq!(c.concurrent_jobs, 2);
        let missing = dir.path().join("nope.toml");
        assert!(
            matches!(StreamingConfig::from_toml_file(&missing), Err(ConfigError::Io { path, .. }) if path == missing)
        );
    }
}
