//! Named fail points (crash testing; `docs/failpoints.md`).
//!
//! Every durable step of the WAL, the checkpoint store, the state format and the engine's batch
//! commit protocol (DESIGN.md §4) carries a fail point named `crate::step::fault`, placed with
//! [`spate_fail!`](crate::spate_fail). [`ALL`] lists them (the docs page is generated from it).
//!
//! Fail points are compiled in only when the crate holding the site is built with its `failpoints`
//! cargo feature (`spate-cli/failpoints` turns on all of them); otherwise [`spate_fail!`]
//! expands to nothing. Armed from the environment by the `spate` binary:
//!
//! ```text
//! SPATE_FAILPOINTS='wal::sync::before=return;checkpoint::manifest::put::after=1*off->return(abort)'
//! ```
//!
//! The syntax is the `fail` crate's (`name=action[->action...]`, entries separated by `;`; an
//! action is `[p%][cnt*]task[(arg)]`, task one of `off`, `return(arg)`, `sleep(ms)`, `panic(msg)`,
//! `print(msg)`, `pause`, `yield`, `delay(ms)`). spate adds one meaning: `return(abort)` aborts the
//! process at the site (`std::process::abort`, no unwinding, no destructors: a crash), and
//! `return(exit)` exits with status 86 without running destructors of other threads. Any other
//! `return` makes the site fail with its typed error (an I/O-style error whose message names the
//! fail point), or, for sites without an error path, does nothing.

/// One fail point: its name and where it sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailPoint {
    /// `crate::step::fault`, the name used in `SPATE_FAILPOINTS`.
    pub name: &'static str,
    /// The crate whose `failpoints` feature compiles the site in.
    pub krate: &'static str,
    /// What has happened (durably) when the point is reached, and what `return` does there.
    pub description: &'static str,
}

const fn fp(name: &'static str, krate: &'static str, description: &'static str) -> FailPoint {
    FailPoint {
        name,
        krate,
        description,
    }
}

/// Every fail point, in protocol order within each crate. A test checks that every name here has
/// exactly one `spate_fail!` site in the sources and every site is listed.
pub const ALL: &[FailPoint] = &[
    // spate-wal
    fp(
        "wal::append::before",
        "spate-wal",
        "Start of every append, before the record is buffered. `return`: the append fails with \
         `WalError::Io`; nothing was buffered, the WAL stays usable.",
    ),
    fp(
        "wal::write::before",
        "spate-wal",
        "Group commit leader, before writing a buffered chunk to its segment. `return`: `WalError::Io` \
         (the WAL is poisoned; records of the group were not written and are not acknowledged).",
    ),
    fp(
        "wal::write::after",
        "spate-wal",
        "Group commit leader, after a chunk was written (page cache) and before it is synced. \
         `return`: `WalError::Io`, WAL poisoned; the bytes may or may not survive a crash.",
    ),
    fp(
        "wal::sync::before",
        "spate-wal",
        "Group commit leader, before the `fdatasync` of the group. `return`: `WalError::Io`, WAL \
         poisoned, no caller of the group is told its records are durable.",
    ),
    fp(
        "wal::sync::after",
        "spate-wal",
        "Group commit leader, after the `fdatasync` succeeded and before callers are released. \
         `return`: `WalError::Io` although the records are durable (replay yields them).",
    ),
    fp(
        "wal::roll::before",
        "spate-wal",
        "Before creating a new segment (first segment or roll). `return`: `WalError::Io`, WAL \
         poisoned; no segment file is created.",
    ),
    fp(
        "wal::truncate::before",
        "spate-wal",
        "Before deleting each old segment in `truncate_before` / `clean`. `return`: `WalError::Io`; \
         the segment stays on disk (a later cleanup or reopen handles it).",
    ),
    // spate-checkpoint
    fp(
        "checkpoint::data::put::before",
        "spate-checkpoint",
        "Commit, before each data object's conditional PUT. `return`: `CheckpointError::Store` \
         (determinate): nothing of this checkpoint is visible; earlier objects are garbage for GC.",
    ),
    fp(
        "checkpoint::data::put::after",
        "spate-checkpoint",
        "Commit, after a data object was written. `return`: `CheckpointError::Store` (determinate); \
         the object is unreferenced garbage, the manifest was not published.",
    ),
    fp(
        "checkpoint::manifest::put::before",
        "spate-checkpoint",
        "Commit, after every data object, before the manifest's conditional PUT. `return`: \
         `CheckpointError::Store` (determinate): the checkpoint does not exist.",
    ),
    fp(
        "checkpoint::manifest::put::after",
        "spate-checkpoint",
        "Commit, after the manifest was published and the `latest` pointer written. `return`: \
         `CheckpointError::Store` (indeterminate): the checkpoint exists although the commit \
         failed.",
    ),
    fp(
        "checkpoint::fence::check",
        "spate-checkpoint",
        "Every publish-slot attempt (once per commit, before any object is written). `return`: \
         `CheckpointError::Store` (determinate).",
    ),
    fp(
        "checkpoint::gc::delete::before",
        "spate-checkpoint",
        "GC, before each deletion (manifests first, then data objects). `return`: \
         `CheckpointError::Store`; the plan is partially executed, rerunning is safe.",
    ),
    // spate-state
    fp(
        "state::snapshot::encode::before",
        "spate-state",
        "Before a stateful operator partition is encoded as a snapshot object. `return`: \
         `StateError::Io`; nothing was written, the data checkpoint fails.",
    ),
    fp(
        "state::delta::encode::before",
        "spate-state",
        "Before a partition's changes are encoded as a delta object. `return`: `StateError::Io`; \
         nothing was written, the data checkpoint fails.",
    ),
    // spate-streaming (DESIGN.md §4)
    fp(
        "engine::block::store::before",
        "spate-streaming",
        "Step 1, before a received block is appended to the WAL. `return`: the store fails \
         (`StreamingError::Wal`), the block is not acknowledged.",
    ),
    fp(
        "engine::block::store::after",
        "spate-streaming",
        "Step 1, after the block is durable in the WAL, before the receiver is told. `return`: the \
         store reports failure although the block is in the WAL.",
    ),
    fp(
        "engine::allocate::before",
        "spate-streaming",
        "Step 2, before `BatchAllocated(T)` is logged. `return`: `StreamingError::Wal`; the blocks \
         stay unallocated, the context records the failure.",
    ),
    fp(
        "engine::allocate::after",
        "spate-streaming",
        "Step 2, after `BatchAllocated(T)` is durable, before it is applied. `return`: \
         `StreamingError::Wal` although the allocation is in the WAL (recovery replays it).",
    ),
    fp(
        "engine::selection::before",
        "spate-streaming",
        "Step 2 (file source), before the files selected for T are logged. `return`: \
         `StreamingError::Wal`; nothing logged.",
    ),
    fp(
        "engine::checkpoint::generated::submit",
        "spate-streaming",
        "Step 3, before the \"T generated\" metadata checkpoint is submitted. `return`: \
         `StreamingError::Checkpoint`, the context fails.",
    ),
    fp(
        "engine::job::run::before",
        "spate-streaming",
        "Step 4, before each output operation of T runs. `return`: the output job fails \
         (`StreamingError::JobFailed`); `panic` is caught as a job failure.",
    ),
    fp(
        "engine::job::run::after",
        "spate-streaming",
        "Step 4, after an output operation of T ran (outputs written), before T completes. \
         `return`: the job is reported failed although its outputs were written.",
    ),
    fp(
        "engine::checkpoint::data::commit::before",
        "spate-streaming",
        "Step 5, state objects encoded, before the data checkpoint commit. `return`: \
         `StreamingError::Checkpoint`, the context fails, nothing was written.",
    ),
    fp(
        "engine::checkpoint::data::commit::after",
        "spate-streaming",
        "Step 5, the data checkpoint is durable, before cleanup and the next batch. `return`: \
         `StreamingError::Checkpoint` although the checkpoint exists.",
    ),
    fp(
        "engine::checkpoint::completed::submit",
        "spate-streaming",
        "Step 6, before the \"T completed\" metadata checkpoint is submitted. `return`: \
         `StreamingError::Checkpoint`, the context fails.",
    ),
    fp(
        "engine::cleanup::before",
        "spate-streaming",
        "Step 7, after a durable completion checkpoint, before `BatchCleanup` is logged and WAL \
         segments are deleted. `return`: `StreamingError::Wal`; nothing is deleted.",
    ),
];

/// The [`FailPoint`] named `name`, if it exists.
#[must_use]
pub fn find(name: &str) -> Option<&'static FailPoint> {
    ALL.iter().find(|p| p.name == name)
}

/// The message of the I/O error a fail point site returns for `return(arg)`:
/// `"failpoint <name>"`, plus `: <arg>` when an argument was given.
#[must_use]
pub fn message(name: &str, arg: &str) -> String {
    if arg.is_empty() {
        format!("failpoint {name}")
    } else {
        format!("failpoint {name}: {arg}")
    }
}

/// An [`std::io::Error`] (kind `Other`) carrying [`message`]: the error every site maps into its
/// typed error.
#[must_use]
pub fn io_error(name: &str, arg: &str) -> std::io::Error {
    std::io::Error::other(message(name, arg))
}

/// Parses a `SPATE_FAILPOINTS` value into `(name, actions)` pairs, checking each name against
/// [`ALL`] (a typo must not silently arm nothing). Empty entries are ignored.
///
/// # Errors
/// A message naming the entry without `=` or the unknown fail point.
pub fn parse_spec(spec: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, actions)) = entry.split_once('=') else {
            return Err(format!(
                "SPATE_FAILPOINTS entry {entry:?} is not name=actions"
            ));
        };
        let name = name.trim();
        if find(name).is_none() {
            return Err(format!(
                "SPATE_FAILPOINTS: unknown fail point {name:?} (see `spate info --failpoints`)"
            ));
        }
        out.push((name.to_owned(), actions.trim().to_owned()));
    }
    Ok(out)
}

/// Whether this build of spate-types has fail point support (`failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Runtime of the fail points (only with the `failpoints` feature).
#[cfg(feature = "failpoints")]
mod runtime {
    /// Configures every fail point named in `spec` (see [`super::parse_spec`]) with `fail::cfg`.
    /// Returns how many were configured.
    ///
    /// # Errors
    /// An unknown name or a malformed action list; nothing after the bad entry is configured.
    pub fn configure(spec: &str) -> Result<usize, String> {
        let entries = super::parse_spec(spec)?;
        for (name, actions) in &entries {
            fail::cfg(name.as_str(), actions).map_err(|e| {
                format!("SPATE_FAILPOINTS: bad actions {actions:?} for {name}: {e}")
            })?;
        }
        Ok(entries.len())
    }

    /// Reads `SPATE_FAILPOINTS` from the environment and [`configure`]s it (nothing when unset).
    ///
    /// # Errors
    /// As [`configure`].
    pub fn configure_from_env() -> Result<usize, String> {
        match std::env::var("SPATE_FAILPOINTS") {
            Ok(spec) => configure(&spec),
            Err(_) => Ok(0),
        }
    }

    /// Removes the configuration of every fail point in [`super::ALL`] (tests).
    pub fn clear_all() {
        for p in super::ALL {
            fail::remove(p.name);
        }
    }

    /// Evaluates the fail point `name`: `None` unless it triggers `return(arg)`, then `Some(arg)`
    /// (empty without an argument). `return(abort)` aborts the process, `return(exit)` exits with
    /// status 86. `panic`, `sleep`, `pause`, ... act inside `fail`.
    #[must_use]
    pub fn eval(name: &str) -> Option<String> {
        let arg = fail::eval(name, |arg| arg.unwrap_or_default())?;
        match arg.as_str() {
            "abort" => {
                eprintln!("spate: fail point {name}: abort");
                std::process::abort()
            }
            "exit" => {
                eprintln!("spate: fail point {name}: exit 86");
                std::process::exit(86)
            }
            _ => Some(arg),
        }
    }
}

#[cfg(feature = "failpoints")]
pub use runtime::{clear_all, configure, configure_from_env, eval};

/// A fail point site. Expands to nothing unless the **calling** crate is built with its
/// `failpoints` feature (which must enable `spate-types/failpoints`).
///
/// * `spate_fail!("name")` — a site without an error path: `return(...)` does nothing (except
///   `return(abort)` / `return(exit)`); `panic`, `sleep` and the other actions work.
/// * `spate_fail!("name", |arg| expr)` — a site with an error path: on `return(arg)` the enclosing
///   function (or closure) returns `expr` (`arg: String`, the action's argument, may be empty).
///   Build `expr` from [`io_error`] through the site's existing error conversion.
#[macro_export]
macro_rules! spate_fail {
    ($name:expr) => {
        #[cfg(feature = "failpoints")]
        {
            let _ = $crate::failpoints::eval($name);
        }
    };
    ($name:expr, |$arg:ident| $e:expr) => {
        #[cfg(feature = "failpoints")]
        {
            if let Some($arg) = $crate::failpoints::eval($name) {
                return $e;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::BTreeSet::new();
        for p in ALL {
            assert!(seen.insert(p.name), "duplicate fail point {}", p.name);
            let parts: Vec<&str> = p.name.split("::").collect();
            assert!(parts.len() >= 3, "{} is not crate::step::fault", p.name);
            assert!(
                parts.iter().all(|s| !s.is_empty()
                    && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')),
                "{}",
                p.name
            );
            let prefix = match parts[0] {
                "wal" => "spate-wal",
                "checkpoint" => "spate-checkpoint",
                "state" => "spate-state",
                "engine" => "spate-streaming",
                other => panic!("unknown crate prefix {other}"),
            };
            assert_eq!(p.krate, prefix, "{}", p.name);
        }
    }

    #[test]
    fn parse_spec_checks_names() {
        let v =
            parse_spec("wal::sync::before=return; wal::sync::after=1*off->return(abort);").unwrap();
        assert_eq!(
            v,
            vec![
                ("wal::sync::before".into(), "return".into()),
                ("wal::sync::after".into(), "1*off->return(abort)".into()),
            ]
        );
        let e = parse_spec("wal::sync::befor=return").unwrap_err();
        assert!(e.contains("unknown fail point \"wal::sync::befor\""), "{e}");
        let e = parse_spec("wal::sync::before").unwrap_err();
        assert!(e.contains("is not name=actions"), "{e}");
        assert_eq!(parse_spec("").unwrap(), vec![]);
    }

    #[test]
    fn messages_name_the_point() {
        assert_eq!(message("a::b::c", ""), "failpoint a::b::c");
        assert_eq!(io_error("a::b::c", "x").to_string(), "failpoint a::b::c: x");
    }
}
