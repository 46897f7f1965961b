//! Compatibility of a checkpoint with the running build: the graph description plus the settings
//! that define the computation. Used by [`StreamingContext::get_or_create`](crate::StreamingContext::get_or_create)
//! and by `spate checkpoint diff`.
//!
//! Spark restores whatever code and batch interval the checkpoint serialized, silently ignoring the
//! new build (measured with Spark 3.5.9: an added operator, a new batch interval and a changed
//! function were all ignored). spate instead compares a canonical [`GraphDescription`] and a fixed
//! list of computation-defining settings ([`COMPUTATION_KEYS`]) and rejects any difference with a
//! structured [`CompatibilityDiff`]. Everything else in [`StreamingConfig`] is *operational* and may
//! change freely across restarts ([`OPERATIONAL_KEYS`]).

use crate::config::StreamingConfig;
use crate::graph::{diff, GraphChange, GraphDescription, GraphDiff};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Settings that define the computation: a checkpoint written with a different value is rejected.
///
/// * `batch_interval` — the batch grid (Spark silently keeps the checkpointed one);
/// * `default_partitions` — partition count of shuffled results (changes which keys share a
///   partition, and so state layout and output file contents);
/// * `format.checkpoint`, `format.wal`, `format.codec` — on-disk format versions of this build.
///
/// Window lengths, slides, per-operator partition counts, element and state types and state versions
/// are part of the [`GraphDescription`] and compared there. Zero time is taken from the checkpoint.
pub const COMPUTATION_KEYS: &[&str] = &[
    "batch_interval",
    "default_partitions",
    "format.checkpoint",
    "format.wal",
    "format.codec",
];

/// Settings that may change between runs of one checkpoint (endpoints, credentials, rates, paths,
/// parallelism, timeouts, the missed-batch policy).
pub const OPERATIONAL_KEYS: &[&str] = &[
    "app_name",
    "block_interval",
    "parallelism",
    "max_rate_per_receiver",
    "receiver_restart_delay",
    "graceful_stop_timeout",
    "stop_gracefully_on_signal",
    "concurrent_jobs",
    "checkpoint",
    "wal_dir",
    "wal_segment_bytes",
    "receiver_wal",
    "missed_batches",
    "checkpoint_retain",
    "state_backend",
    "state_dir",
    "state_snapshot_every",
    "create_on_error",
    "max_recovery_batches",
];

/// The computation-defining settings of `config` (keys: [`COMPUTATION_KEYS`]), rendered as text, as
/// recorded in every manifest's `conf`.
pub fn computation_settings(config: &StreamingConfig) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "batch_interval".to_owned(),
        config.batch_interval.to_string(),
    );
    m.insert(
        "default_partitions".to_owned(),
        config.default_partitions.to_string(),
    );
    m.insert(
        "format.checkpoint".to_owned(),
        spate_types::format::CHECKPOINT_FORMAT_VERSION.to_string(),
    );
    m.insert(
        "format.wal".to_owned(),
        spate_types::format::WAL_FORMAT_VERSION.to_string(),
    );
    m.insert(
        "format.codec".to_owned(),
        spate_types::format::CODEC_BINCODE2.to_string(),
    );
    m
}

/// What a build defines: its graph description and computation-defining settings. Written by an
/// application's `--describe FILE` (JSON) and compared with a checkpoint by `spate checkpoint diff
/// <url> --graph FILE` — the same comparison `get_or_create` makes, without starting anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildDescription {
    /// The graph.
    pub graph: GraphDescription,
    /// [`computation_settings`] of the build's configuration.
    pub settings: BTreeMap<String, String>,
}

impl BuildDescription {
    /// Compares a checkpoint (its stored description bytes and `conf`) with this build.
    pub fn compare_with_checkpoint(
        &self,
        stored_description: &[u8],
        stored_settings: &BTreeMap<String, String>,
    ) -> CompatibilityDiff {
        match decode_description(stored_description) {
            Ok(old) => compare(&old, stored_settings, &self.graph, &self.settings),
            Err(e) => CompatibilityDiff {
                undecodable: Some(e),
                ..CompatibilityDiff::default()
            },
        }
    }
}

/// One differing computation-defining setting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingChange {
    /// The key (one of [`COMPUTATION_KEYS`]).
    pub key: String,
    /// The checkpointed value (`none` if the checkpoint did not record it).
    pub old: String,
    /// This build's value (`none` if this build does not define it).
    pub new: String,
}

impl fmt::Display for SettingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "setting {}: {} → {}", self.key, self.old, self.new)
    }
}

/// Everything that differs between a checkpoint and the current build; empty means compatible.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompatibilityDiff {
    /// Graph differences (operators added, removed or changed; batch interval).
    pub graph: GraphDiff,
    /// Computation-defining settings that differ (the batch interval appears in `graph` only).
    pub settings: Vec<SettingChange>,
    /// The graph description stored in the checkpoint could not be decoded (written by an
    /// incompatible build); `graph` is empty then.
    pub undecodable: Option<String>,
    /// Operational differences that do not make the checkpoint incompatible: an input's `detail`
    /// (socket address, input directory), which are endpoints and paths that may move.
    #[serde(default)]
    pub notes: Vec<GraphChange>,
}

impl CompatibilityDiff {
    /// True if the checkpoint may be restored by this build.
    pub fn is_compatible(&self) -> bool {
        self.graph.is_empty() && self.settings.is_empty() && self.undecodable.is_none()
    }

    /// The number of differences.
    pub fn len(&self) -> usize {
        self.graph.changes.len() + self.settings.len() + usize::from(self.undecodable.is_some())
    }

    /// True if there is no difference.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One human-readable line per difference.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        if let Some(u) = &self.undecodable {
            v.push(format!("graph description unreadable by this build: {u}"));
        }
        v.extend(self.graph.changes.iter().map(ToString::to_string));
        v.extend(self.settings.iter().map(ToString::to_string));
        v
    }
}

impl fmt::Display for CompatibilityDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no differences");
        }
        f.write_str(&self.lines().join("; "))
    }
}

/// Compares a checkpoint's description and settings with the current build's.
///
/// A changed operator `detail` (the receiver's or source's `describe()`: socket address, input
/// directory) is operational: it is returned in `notes`, not as an incompatibility.
///
/// Settings missing from both sides are ignored; a key present on one side only is a change (an older
/// build that did not record it, or a newer one). The batch interval is reported once, as a graph
/// change.
pub fn compare(
    checkpointed: &GraphDescription,
    checkpointed_settings: &BTreeMap<String, String>,
    current: &GraphDescription,
    current_settings: &BTreeMap<String, String>,
) -> CompatibilityDiff {
    let mut graph = diff(checkpointed, current);
    let (notes, changes): (Vec<GraphChange>, Vec<GraphChange>) = graph
        .changes
        .into_iter()
        .partition(|c| matches!(c, GraphChange::Changed { field, .. } if field == "detail"));
    graph.changes = changes;
    let interval_in_graph = graph
        .changes
        .iter()
        .any(|c| matches!(c, GraphChange::BatchInterval { .. }));
    let mut settings = Vec::new();
    for key in COMPUTATION_KEYS {
        if *key == "batch_interval" && interval_in_graph {
            continue;
        }
        let old = checkpointed_settings.get(*key);
        let new = current_settings.get(*key);
        if old != new {
            settings.push(SettingChange {
                key: (*key).to_owned(),
                old: old.cloned().unwrap_or_else(|| "none".to_owned()),
                new: new.cloned().unwrap_or_else(|| "none".to_owned()),
            });
        }
    }
    CompatibilityDiff {
        graph,
        settings,
        undecodable: None,
        notes,
    }
}

/// Decodes a graph description stored by [`encode_description`].
///
/// # Errors
/// The codec's message if the bytes are not a description of this build's format.
pub fn decode_description(bytes: &[u8]) -> Result<GraphDescription, String> {
    spate_types::codec::decode(bytes).map_err(|e| e.to_string())
}

/// The bytes stored in a manifest for `description` (its canonical encoding).
pub fn encode_description(description: &GraphDescription) -> Vec<u8> {
    description.canonical_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::OperatorDescription;
    use spate_types::{DurationMs, OperatorId};

    fn g(window: Option<u64>, extra: bool) -> GraphDescription {
        let op = |id: u32, kind: &str, w: Option<u64>| OperatorDescription {
            id: OperatorId(id),
            kind: kind.to_owned(),
            name: None,
            inputs: if id == 0 {
                vec![]
            } else {
                vec![OperatorId(id - 1)]
            },
            slide: DurationMs(1000),
            window: w.map(DurationMs),
            partitions: None,
            element_type: "u64".to_owned(),
            state_type: None,
            state_version: None,
            output: false,
            detail: None,
        };
        let mut ops = vec![
            op(0, "socket_text_stream", None),
            op(1, "reduce_by_key_and_window", window),
        ];
        if extra {
            ops.push(op(2, "filter", None));
        }
        GraphDescription {
            batch_interval: DurationMs(1000),
            operators: ops,
        }
    }

    #[test]
    fn identical_builds_are_compatible_and_changes_are_listed() {
        let cfg = StreamingConfig::default();
        let s = computation_settings(&cfg);
        assert!(compare(&g(Some(30_000), false), &s, &g(Some(30_000), false), &s).is_compatible());
        let mut s2 = s.clone();
        s2.insert("default_partitions".into(), "7".into());
        let d = compare(&g(Some(30_000), false), &s, &g(Some(60_000), true), &s2);
        assert!(!d.is_compatible());
        let text = d.to_string();
        assert!(
            text.contains("operator 1 reduce_by_key_and_window: window"),
            "{text}"
        );
        assert!(text.contains("added: filter"), "{text}");
        assert!(text.contains("setting default_partitions"), "{text}");
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn garbage_description_is_a_message_not_a_panic() {
        assert!(decode_description(&[0xff; 7]).is_err());
        assert!(decode_description(&[]).is_err());
        let d = g(None, true);
        assert_eq!(decode_description(&encode_description(&d)).unwrap(), d);
    }
}
