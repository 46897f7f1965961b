//! Every object name under a checkpoint location, built and parsed in one place.
//!
//! ```text
//! manifests/<time:020>-<generation:020>-<seq:010>.manifest   one per checkpoint (its existence commits it)
//! data/<time:020>-<generation:020>-<seq:010>/<label>         data objects written for that checkpoint
//! generations/<generation:020>                               generation claim marker (create-only)
//! generations/<generation:020>.floor                         manifests visible to that generation when it opened
//! fence/<generation:020>/<slot:020>                          publish slots of that generation (create-only; fencing)
//! _probe/<nonce>                                             capability probe (deleted after use)
//! latest                                                     pointer: the newest key published (a resolve hint, overwritten)
//! restart-reports/<time:020>-<generation:020>.json           one JSON restart report per recovery attempt
//! archived/<label>/<original name>                           a set-aside copy of the location (archive)
//! ```
//!
//! Restart reports and archives are never chosen by resolve, never deleted by GC, and not
//! "unknown" (garbage): see [`ParsedName::RestartReport`] and [`ParsedName::Archived`].
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
/// Prefix of publish slots ([`CheckpointPaths::fence_slot`]).
pub const FENCE: &str = "fence";
/// The latest-checkpoint pointer ([`CheckpointPaths::latest`]).
pub const LATEST: &str = "latest";
/// Prefix of capability probes.
pub const PROBE: &str = "_probe";
/// Prefix of restart reports.
pub const RESTART_REPORTS: &str = "restart-reports";
/// Prefix of archives ([`crate::CheckpointStore::archive`]).
pub const ARCHIVED: &str = "archived";

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
    /// `fence/<generation:020>/<slot:020>`: a publish slot (see [`crate::protocol`], fencing).
    /// Kept by archive in place; GC deletes only slots below the newest of their generation.
    FenceSlot {
        /// The generation whose slot it is.
        generation: Generation,
        /// The slot number (1, 2, ...).
        slot: u64,
    },
    /// `latest`: the pointer naming the newest key its writer published (a hint for resolve,
    /// verified against the manifests; never chosen itself, kept by GC).
    LatestPointer,
    /// `_probe/...`.
    Probe,
    /// `restart-reports/<time:020>-<generation:020>.json`: a restart report (plain JSON, no
    /// envelope). Never deleted by GC.
    RestartReport {
        /// Time the report was written, ms since the Unix epoch.
        time_ms: u64,
        /// Generation of the writer that wrote it.
        generation: Generation,
    },
    /// `archived/<label>/<original name>` (label as [`CheckpointPaths::valid_label`], original
    /// name non-empty): a copy made by [`crate::CheckpointStore::archive`]. Never resolved, never
    /// deleted by GC.
    Archived {
        /// The archive's label.
        label: String,
        /// The object's name before it was archived.
        original: String,
    },
    /// `wal/<file>`: the engine's write-ahead log, which lives under a local checkpoint directory by
    /// default (`spate-wal` manages it; docs/format/wal.md). Never resolved, verified or deleted by
    /// the checkpoint store (archived with the rest by `archive`).
    Wal {
        /// The file name within `wal/`.
        name: String,
    },
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

    /// `fence/<generation:020>/`: the prefix of one generation's publish slots.
    #[must_use]
    pub fn fence_prefix(g: Generation) -> String {
        format!("{FENCE}/{:020}/", g.0)
    }

    /// `fence/<generation:020>/<slot:020>`.
    #[must_use]
    pub fn fence_slot(g: Generation, slot: u64) -> String {
        format!("{FENCE}/{:020}/{slot:020}", g.0)
    }

    /// `latest`.
    #[must_use]
    pub fn latest() -> String {
        LATEST.to_owned()
    }

    /// `_probe/<nonce>`.
    #[must_use]
    pub fn probe(nonce: &str) -> String {
        format!("{PROBE}/{nonce}")
    }

    /// `restart-reports/<time_ms:020>-<generation:020>.json`.
    #[must_use]
    pub fn restart_report(time_ms: u64, generation: Generation) -> String {
        format!("{RESTART_REPORTS}/{time_ms:020}-{:020}.json", generation.0)
    }

    /// `archived/<label>/`: the prefix of one archive (the label must pass
    /// [`CheckpointPaths::valid_label`]).
    #[must_use]
    pub fn archive_prefix(label: &str) -> String {
        format!("{ARCHIVED}/{label}/")
    }

    /// `archived/<label>/<original>`.
    #[must_use]
    pub fn archived(label: &str, original: &str) -> String {
        format!("{ARCHIVED}/{label}/{original}")
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
        if let Some(rest) = name.strip_prefix("fence/") {
            let b = rest.as_bytes();
            if b.len() == 41 && b[20] == b'/' {
                if let (Some(g), Some(slot)) = (digits(&rest[..20]), digits(&rest[21..])) {
                    return ParsedName::FenceSlot {
                        generation: Generation(g),
                        slot,
                    };
                }
            }
            return ParsedName::Unknown;
        }
        if name == LATEST {
            return ParsedName::LatestPointer;
        }
        if name.starts_with("_probe/") {
            return ParsedName::Probe;
        }
        if let Some(rest) = name.strip_prefix("restart-reports/") {
            let b = rest.as_bytes();
            if let Some(stem) = rest.strip_suffix(".json") {
                if b.len() == 46 && b[20] == b'-' {
                    if let (Some(t), Some(g)) = (digits(&stem[..20]), digits(&stem[21..41])) {
                        return ParsedName::RestartReport {
                            time_ms: t,
                            generation: Generation(g),
                        };
                    }
                }
            }
            return ParsedName::Unknown;
        }
        if let Some(rest) = name.strip_prefix("wal/") {
            if !rest.is_empty() && !rest.contains('/') {
                return ParsedName::Wal {
                    name: rest.to_owned(),
                };
            }
            return ParsedName::Unknown;
        }
        if let Some(rest) = name.strip_prefix("archived/") {
            if let Some((label, original)) = rest.split_once('/') {
                if Self::valid_label(label) && !original.is_empty() {
                    return ParsedName::Archived {
                        label: label.to_owned(),
                        original: original.to_owned(),
                    };
                }
            }
            return ParsedName::Unknown;
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
            prop_assert_eq!(
                CheckpointPaths::parse(&CheckpointPaths::fence_slot(Generation(g), k.time.0)),
                ParsedName::FenceSlot { generation: Generation(g), slot: k.time.0 }
            );
            prop_assert!(CheckpointPaths::fence_slot(Generation(g), k.time.0).starts_with(&CheckpointPaths::fence_prefix(Generation(g))));
            prop_assert_eq!(
                CheckpointPaths::parse(&CheckpointPaths::restart_report(k.time.0, Generation(g))),
                ParsedName::RestartReport { time_ms: k.time.0, generation: Generation(g) }
            );
            // Any object, including garbage, can be archived under a valid label.
            for original in [CheckpointPaths::manifest(k), CheckpointPaths::data(k, &label), "junk".to_owned()] {
                prop_assert_eq!(
                    CheckpointPaths::parse(&CheckpointPaths::archived(&label, &original)),
                    ParsedName::Archived { label: label.clone(), original }
                );
            }
        }

        #[test]
        fn restart_report_names_sort_by_time_then_generation(t1 in any::<u64>(), g1 in any::<u64>(), t2 in any::<u64>(), g2 in any::<u64>()) {
            prop_assert_eq!(
                (t1, g1).cmp(&(t2, g2)),
                CheckpointPaths::restart_report(t1, Generation(g1)).cmp(&CheckpointPaths::restart_report(t2, Generation(g2)))
            );
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
            // Near misses of the restart-report and archive families stay garbage.
            "restart-reports/00000000000000000001-00000000000000000001.txt",
            "restart-reports/00000000000000000001-00000000000000000001",
            "restart-reports/1-1.json",
            "restart-reports/0000000000000000000x-00000000000000000001.json",
            "restart-reports/00000000000000000001_00000000000000000001.json",
            "restart-reports/00000000000000000001-000000000000000000001.json",
            "restart-reports/",
            "restart-reports",
            "archived/label",
            "archived/label/",
            "archived/.hidden/manifests/x",
            "archived//manifests/x",
            "archived/bad label/x",
            "archived",
            "archivedx/label/x",
        ] {
            assert_eq!(CheckpointPaths::parse(n), ParsedName::Unknown, "{n}");
        }
    }

    #[test]
    fn report_and_archive_names() {
        assert_eq!(
            CheckpointPaths::restart_report(1_700_000_000_123, Generation(7)),
            "restart-reports/00000001700000000123-00000000000000000007.json"
        );
        assert_eq!(
            CheckpointPaths::parse(
                "restart-reports/00000000001700000000-00000000000000000007.json"
            ),
            ParsedName::RestartReport {
                time_ms: 1_700_000_000,
                generation: Generation(7)
            }
        );
        assert_eq!(
            CheckpointPaths::parse("archived/incompatible-1/README.txt"),
            ParsedName::Archived {
                label: "incompatible-1".into(),
                original: "README.txt".into()
            }
        );
        // An archived copy of a manifest is not a manifest.
        let k = CheckpointKey {
            time: BatchTime(1),
            generation: Generation(1),
            seq: 0,
        };
        assert!(matches!(
            CheckpointPaths::parse(&CheckpointPaths::archived(
                "a",
                &CheckpointPaths::manifest(k)
            )),
            ParsedName::Archived { .. }
        ));
        assert_eq!(CheckpointPaths::archive_prefix("a"), "archived/a/");
    }

    #[test]
    fn wal_files_are_their_own_family() {
        assert_eq!(
            CheckpointPaths::parse("wal/00000000000000000000.wal"),
            ParsedName::Wal {
                name: "00000000000000000000.wal".into()
            }
        );
        assert_eq!(CheckpointPaths::parse("wal/"), ParsedName::Unknown);
        assert_eq!(CheckpointPaths::parse("wal/a/b"), ParsedName::Unknown);
        assert_eq!(CheckpointPaths::parse("walrus"), ParsedName::Unknown);
    }
}
