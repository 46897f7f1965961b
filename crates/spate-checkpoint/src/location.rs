//! Where a checkpoint lives: [`CheckpointUrl`], the one parser of checkpoint URLs (the store, the
//! engine, the CLI and the chaos harness all read locations through it).
//!
//! | input | location |
//! | --- | --- |
//! | `/var/ck`, `ck` (no `://`) | local directory, as given |
//! | `file:///var/ck` | local directory `/var/ck` (`file://ck`, relative, is an error) |
//! | `s3://bucket`, `s3://bucket/a/b/` | S3 bucket `bucket`, prefix `""` / `a/b` |
//! | `memory://`, `memory://name` | a fresh in-memory store (tests) |
//!
//! Anything else (another scheme, an empty path, an S3 URL without bucket or with a prefix
//! `object_store` rejects) is a [`LocationError`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a string is not a checkpoint URL.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// The string (or the path after `file://`) is empty.
    #[error("empty path")]
    EmptyPath,
    /// A scheme other than `file`, `s3` and `memory`.
    #[error("unsupported scheme {scheme:?} (use a path, file://, s3:// or memory://)")]
    UnsupportedScheme {
        /// The scheme found (before `://`).
        scheme: String,
    },
    /// `s3://` with nothing before the first `/`.
    #[error("no bucket in s3:// URL")]
    NoBucket,
    /// The S3 prefix is not a valid `object_store` path (e.g. an empty segment `a//b` or `..`).
    #[error("invalid S3 prefix {prefix:?}: {reason}")]
    InvalidPrefix {
        /// The prefix, as given.
        prefix: String,
        /// Why `object_store` rejects it.
        reason: String,
    },
    /// `file://` followed by a relative path (`file://ck` reads as host `ck` in RFC 8089; a file
    /// URL must be absolute). A bare relative path (`ck`) is accepted.
    #[error("file URL {url:?} is not absolute: write file:///{path} or the bare path {path}")]
    RelativeFileUrl {
        /// The URL as given.
        url: String,
        /// The relative path after `file://`.
        path: String,
    },
}

/// A parsed checkpoint location. Parse once ([`CheckpointUrl::parse`] or [`str::parse`]), then
/// ask it: [`local_path`](CheckpointUrl::local_path), [`s3`](CheckpointUrl::s3),
/// [`is_memory`](CheckpointUrl::is_memory). [`Display`](fmt::Display) gives the canonical string,
/// which parses back to the same value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CheckpointUrl {
    /// A directory on local disk (a bare path or `file://<path>`).
    Local {
        /// The directory.
        path: PathBuf,
        /// Whether it was written `file://<path>` (kept for [`Display`](fmt::Display)).
        file_scheme: bool,
    },
    /// A bucket and prefix on an S3-compatible store.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix inside it, without leading or trailing `/` (`""`: the bucket's root).
        prefix: String,
    },
    /// A fresh in-memory store per open (tests, examples).
    Memory {
        /// Whatever followed `memory://` (not used to share stores).
        name: String,
    },
}

impl CheckpointUrl {
    /// Parses a checkpoint URL (see the [module](self) table).
    ///
    /// # Errors
    /// A [`LocationError`] saying what is wrong.
    pub fn parse(url: &str) -> Result<CheckpointUrl, LocationError> {
        if let Some(name) = url.strip_prefix("memory://") {
            return Ok(CheckpointUrl::Memory {
                name: name.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(LocationError::NoBucket);
            }
            let trimmed = prefix.trim_matches('/');
            object_store::path::Path::parse(trimmed).map_err(|e| LocationError::InvalidPrefix {
                prefix: prefix.to_owned(),
                reason: e.to_string(),
            })?;
            return Ok(CheckpointUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: trimmed.to_owned(),
            });
        }
        let (path, file_scheme) = match url.strip_prefix("file://") {
            Some(p) => (p, true),
            None => match url.split_once("://") {
                Some((scheme, _)) => {
                    return Err(LocationError::UnsupportedScheme {
                        scheme: scheme.to_owned(),
                    })
                }
                None => (url, false),
            },
        };
        if path.is_empty() {
            return Err(LocationError::EmptyPath);
        }
        if file_scheme && !path.starts_with('/') {
            return Err(LocationError::RelativeFileUrl {
                url: url.to_owned(),
                path: path.to_owned(),
            });
        }
        Ok(CheckpointUrl::Local {
            path: PathBuf::from(path),
            file_scheme,
        })
    }

    /// A local directory location (displayed as the bare path).
    #[must_use]
    pub fn local(path: impl Into<PathBuf>) -> CheckpointUrl {
        CheckpointUrl::Local {
            path: path.into(),
            file_scheme: false,
        }
    }

    /// The directory, for a local location; `None` for S3 and memory.
    #[must_use]
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            CheckpointUrl::Local { path, .. } => Some(path),
            _ => None,
        }
    }

    /// `(bucket, prefix)`, for an S3 location.
    #[must_use]
    pub fn s3(&self) -> Option<(&str, &str)> {
        match self {
            CheckpointUrl::S3 { bucket, prefix } => Some((bucket, prefix)),
            _ => None,
        }
    }

    /// Whether this is a `memory://` location.
    #[must_use]
    pub fn is_memory(&self) -> bool {
        matches!(self, CheckpointUrl::Memory { .. })
    }

    /// The engine's default write-ahead-log directory: `<dir>/wal` for a local location, `None`
    /// otherwise (S3 and memory checkpoints need an explicit local `wal_dir`).
    #[must_use]
    pub fn default_wal_dir(&self) -> Option<PathBuf> {
        self.local_path().map(|d| d.join("wal"))
    }

    /// The location `child` below this one: `<dir>/<child>`, `s3://bucket/<prefix>/<child>`,
    /// `memory://<name>/<child>` (`child` is taken as one or more plain path segments).
    #[must_use]
    pub fn join(&self, child: &str) -> CheckpointUrl {
        let child = child.trim_matches('/');
        let under = |base: &str| {
            if base.is_empty() {
                child.to_owned()
            } else {
                format!("{}/{child}", base.trim_end_matches('/'))
            }
        };
        match self {
            CheckpointUrl::Local { path, file_scheme } => CheckpointUrl::Local {
                path: path.join(child),
                file_scheme: *file_scheme,
            },
            CheckpointUrl::S3 { bucket, prefix } => CheckpointUrl::S3 {
                bucket: bucket.clone(),
                prefix: under(prefix),
            },
            CheckpointUrl::Memory { name } => CheckpointUrl::Memory { name: under(name) },
        }
    }
}

impl fmt::Display for CheckpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointUrl::Local {
                path,
                file_scheme: true,
            } => write!(f, "file://{}", path.display()),
            CheckpointUrl::Local { path, .. } => write!(f, "{}", path.display()),
            CheckpointUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            CheckpointUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            CheckpointUrl::Memory { name } => write!(f, "memory://{name}"),
        }
    }
}

impl FromStr for CheckpointUrl {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CheckpointUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(p: &str, file_scheme: bool) -> CheckpointUrl {
        CheckpointUrl::Local {
            path: PathBuf::from(p),
            file_scheme,
        }
    }

    fn s3(bucket: &str, prefix: &str) -> CheckpointUrl {
        CheckpointUrl::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn parse_table_accepts_every_documented_form() {
        let cases: &[(&str, CheckpointUrl, &str)] = &[
            ("/var/ck", local("/var/ck", false), "/var/ck"),
            ("ck", local("ck", false), "ck"),
            ("./a b/ck", local("./a b/ck", false), "./a b/ck"),
            ("file:///var/ck", local("/var/ck", true), "file:///var/ck"),
            ("s3://bucket", s3("bucket", ""), "s3://bucket"),
            ("s3://bucket/", s3("bucket", ""), "s3://bucket"),
            ("s3://bucket/a/b", s3("bucket", "a/b"), "s3://bucket/a/b"),
            ("s3://bucket//a/b/", s3("bucket", "a/b"), "s3://bucket/a/b"),
            (
                "memory://",
                CheckpointUrl::Memory {
                    name: String::new(),
                },
                "memory://",
            ),
            (
                "memory://t1",
                CheckpointUrl::Memory { name: "t1".into() },
                "memory://t1",
            ),
        ];
        for (input, want, canonical) in cases {
            let got = CheckpointUrl::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(&got, want, "{input}");
            assert_eq!(got.to_string(), *canonical, "{input}");
            assert_eq!(
                canonical.parse::<CheckpointUrl>().as_ref(),
                Ok(want),
                "{canonical} round trip"
            );
        }
    }

    #[test]
    fn parse_table_rejects_garbage_with_a_typed_error() {
        let cases: &[(&str, LocationError)] = &[
            ("", LocationError::EmptyPath),
            ("file://", LocationError::EmptyPath),
            (
                "file://rel/ck",
                LocationError::RelativeFileUrl {
                    url: "file://rel/ck".into(),
                    path: "rel/ck".into(),
                },
            ),
            (
                "file://./ck",
                LocationError::RelativeFileUrl {
                    url: "file://./ck".into(),
                    path: "./ck".into(),
                },
            ),
            ("s3://", LocationError::NoBucket),
            ("s3:///prefix", LocationError::NoBucket),
            (
                "http://host/x",
                LocationError::UnsupportedScheme {
                    scheme: "http".into(),
                },
            ),
            (
                "S3://bucket",
                LocationError::UnsupportedScheme {
                    scheme: "S3".into(),
                },
            ),
            (
                "://nothing",
                LocationError::UnsupportedScheme {
                    scheme: String::new(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(CheckpointUrl::parse(input).as_ref(), Err(want), "{input:?}");
        }
        assert!(matches!(
            CheckpointUrl::parse("s3://bucket/a/../b"),
            Err(LocationError::InvalidPrefix { .. })
        ));
    }

    #[test]
    fn accessors_answer_by_kind() {
        let l = CheckpointUrl::parse("file:///var/ck").unwrap();
        assert_eq!(l.local_path(), Some(Path::new("/var/ck")));
        assert_eq!(l.default_wal_dir(), Some(PathBuf::from("/var/ck/wal")));
        assert_eq!(l.s3(), None);
        let s = CheckpointUrl::parse("s3://b/p").unwrap();
        assert_eq!(s.local_path(), None);
        assert_eq!(s.default_wal_dir(), None);
        assert_eq!(s.s3(), Some(("b", "p")));
        assert!(!s.is_memory());
        let m = CheckpointUrl::parse("memory://").unwrap();
        assert!(m.is_memory());
        assert_eq!(m.local_path(), None);
    }

    #[test]
    fn join_appends_one_child_below_each_kind() {
        let cases = [
            ("ck", "run-1", "ck/run-1"),
            ("file:///ck", "run-1", "file:///ck/run-1"),
            ("s3://b", "run-1", "s3://b/run-1"),
            ("s3://b/p/", "run-1", "s3://b/p/run-1"),
            ("memory://", "run-1", "memory://run-1"),
        ];
        for (base, child, want) in cases {
            let got = CheckpointUrl::parse(base).unwrap().join(child);
            assert_eq!(got.to_string(), want, "{base} + {child}");
        }
    }
}
