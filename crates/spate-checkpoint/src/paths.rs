//! Every object name under a checkpoint location, built and parsed in one place.
//!
//! ```text
//! manifests/<time:020>-<generation:020>-<seq:010>.manifest   one per checkpoint (its existence commits it)
//! data/<time:020>-<generation:020>-<seq:010>/<label>         data objects written for that checkpoint
//! generations/<generation:020>                               generation claim marker (create-only)
//! generations/<generation:020>.floor                         manifests visible to that generation when it opened
//! _probe/<nonce>                                             capability probe (deleted after use)
//! ```
//!
//! All numbers are zero-padded decimal, so **lexicographic order is numeric order**: listing
//! `manifests/` sorted by name is the checkpoints in write order. A [`CheckpointKey`] is
//! `(time, generation, seq)`; a writer never publishes a key at or below one it (or, after a
//! restart, any earlier writer) published, so names never go backwards.

use spate_types::{BatchTime, Generation};
use std::fmt;

/// Prefix of manifests.
pub const MANIFESTS: &str = "manifests";
/// Prefix of data objects.
pub const DATA: &str = "data";
/// Prefix of generation claims and floors.
pub const GENERATIONS: &str = "generations";
/// Prefix of capability probes.
pub const PROBE: &str = "_probe";

/// The sort key and identity of one checkpoint: `(time, generation, seq)`.
///
/// `time` is the *name time*: the largest batch time the writer had seen when it published (as
/// Spark's `latestCheckpointTime`, SPARK-11740), so it never decreases even when the completion
/// checkpoint of an old batch is written after the generation checkpoint of a newer one. The batch
/// time the checkpoint is *for* is [`crate::Manifest::batch_time`]; restart uses the field, not the
/// name.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CheckpointKey {
    /// Name time, ms since the Unix epoch.
    pub time: BatchTime,
    /// Generation of the writer.
    pub generation: Generation,
    /// Per-writer sequence number within `(time, generation)`.
    pub seq: u32,
}

impl fmt::Display for CheckpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:020}-{:020}-{:010}",
            self.time.0, self.generation.0, self.seq
        )
    }
}

impl CheckpointKey {
    /// Parses the `<time:020>-<generation:020>-<seq:010>` form (exact width, digits only).
    #[must_use]
    pub fn parse(s: &str) -> Option<CheckpointKey> {
        let b = s.as_bytes();
        if b.len() != 52 || b[20] != b'-' || b[41] != b'-' {
            return None;
        }
        Some(CheckpointKey {
            time: BatchTime(digits(&s[0..20])?),
            generation: Generation(digits(&s[21..41])?),
            seq: u32::try_from(digits(&s[42..52])?).ok()?,
        })
    }
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What an object name denotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedName {
    /// `manifests/<key>.manifest`.
    Manifest(CheckpointKey),
    /// `data/<key>/<label>`.
    Data {
        /// The checkpoint the object was written for.
        key: CheckpointKey,
        /// Its label.
        label: String,
    },
    /// `generations/<n>`.
    Generation(Generation),
    /// `generations/<n>.floor`.
    Floor(Generation),
    /// `_probe/...`.
    Probe,
    /// Anything else (garbage, a foreign file): never deleted, reported.
    Unknown,
}

/// Builds and parses every object name (relative to the checkpoint location's root).
#[derive(Clone, Copy, Debug, Default)]
pub struct CheckpointPaths;

impl CheckpointPaths {
    /// `manifests/<key>.manifest`.
    #[must_use]
    pub fn manifest(key: CheckpointKey) -> String {
        format!("{MANIFESTS}/{key}.manifest")
    }

    /// `data/<key>/<label>`. The label must pass [`CheckpointPaths::valid_label`].
    #[must_use]
    pub fn data(key: CheckpointKey, label: &str) -> String {
        format!("{DATA}/{key}/{label}")
    }

    /// `generations/<n:020>`.
    #[must_use]
    pub fn generation(g: Generation) -> String {
        format!("{GENERATIONS}/{:020}", g.0)
    }

    /// `generations/<n:020>.floor`.
    #[must_use]
    pub fn floor(g: Generation) -> String {
        format!("{GENERATIONS}/{:020}.floor", g.0)
    }

    /// `_probe/<nonce>`.
    #[must_use]
    pub fn probe(nonce: &str) -> String {
        format!("{PROBE}/{nonce}")
    }

    /// A data-object label: 1..=128 bytes of `[A-Za-z0-9._-]`, not starting with `.`.
    #[must_use]
    pub fn valid_label(label: &str) -> bool {
        !label.is_empty()
            && label.len() <= 128
            && !label.starts_with('.')
            && label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    }

    /// Parses a relative object name; anything not built by this type is [`ParsedName::Unknown`].
    #[must_use]
    pub fn parse(name: &str) -> ParsedName {
        if let Some(rest) = name.strip_prefix("manifests/") {
            return rest
                .strip_suffix(".manifest")
                .and_then(CheckpointKey::parse)
                .map_or(ParsedName::Unknown, ParsedName::Manifest);
        }
        if let Some(rest) = name.strip_prefix("data/") {
            if let Some((k, label)) = rest.split_once('/') {
                if let Some(key) = CheckpointKey::parse(k) {
                    if Self::valid_label(label) {
                        return ParsedName::Data {
                            key,
                            label: label.to_owned(),
                        };
                    }
                }
            }
            return ParsedName::Unknown;
        }
        if let Some(rest) = name.strip_prefix("generations/") {
            let (num, floor) = match rest.strip_suffix(".floor") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            if num.len() == 20 {
                if let Some(n) = digits(num) {
                    return if floor {
                        ParsedName::Floor(Generation(n))
                    } else {
                        ParsedName::Generation(Generation(n))
                    };
                }
            }
            return ParsedName::Unknown;
        }
        if name.starts_with("_probe/") {
            return ParsedName::Probe;
        }
        ParsedName::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = CheckpointKey> {
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(t, g, s)| CheckpointKey {
            time: BatchTime(t),
            generation: Generation(g),
            seq: s,
        })
    }

    proptest! {
        #[test]
        fn names_round_trip(k in key(), label in "[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", g in any::<u64>()) {
            prop_assert_eq!(CheckpointPaths::parse(&CheckpointPaths::manifest(k)), ParsedName::Manifest(k));
            prop_assert_eq!(CheckpointPaths::parse(&CheckpointPaths::data(k, &label)), ParsedName::Data { key: k, label: label.clone() });
            prop_assert_eq!(CheckpointPaths::parse(&CheckpointPaths::generation(Generation(g))), ParsedName::Generation(Generation(g)));
            prop_assert_eq!(CheckpointPaths::parse(&CheckpointPaths::floor(Generation(g))), ParsedName::Floor(Generation(g)));
        }

        #[test]
        fn lexicographic_order_is_key_order(a in key(), b in key()) {
            prop_assert_eq!(a.cmp(&b), CheckpointPaths::manifest(a).cmp(&CheckpointPaths::manifest(b)));
            prop_assert_eq!(a.cmp(&b), CheckpointPaths::data(a, "x").cmp(&CheckpointPaths::data(b, "x")));
        }

        #[test]
        fn garbage_names_never_panic(s in ".{0,80}") {
            let _ = CheckpointPaths::parse(&s);
        }
    }

    #[test]
    fn foreign_names_are_unknown() {
        for n in [
            "manifests/1.manifest",
            "manifests/x",
            "data/abc/def",
            "generations/12",
            "README",
            "data/00000000000000000001-00000000000000000001-0000000001/.hidden",
        ] {
            assert_eq!(CheckpointPaths::parse(n), ParsedName::Unknown, "{n}");
        }
    }
}
