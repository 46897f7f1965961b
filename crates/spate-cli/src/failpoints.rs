//! Fail points in the `spate` binary: arming them from `SPATE_FAILPOINTS` at startup, listing them
//! (`spate info --failpoints`), and announcing deliberately broken test-only builds.

use std::process::ExitCode;

/// Arms the fail points named in `SPATE_FAILPOINTS` (`fail` crate syntax, `docs/failpoints.md`)
/// when built with the `failpoints` feature, and warns on stderr when the build is one of the
/// deliberately broken `chaos-broken-*` builds.
///
/// # Errors
/// Exit code 2 (after a one-line message) for an unknown fail point or malformed actions, or when
/// `SPATE_FAILPOINTS` is set in a build without fail points (arming nothing silently would make a
/// chaos run meaningless).
pub(crate) fn setup() -> Result<(), ExitCode> {
    if spate_wal::CHAOS_BROKEN_SKIP_SYNC {
        eprintln!(
            "spate: WARNING: test-only broken build (chaos-broken-skip-sync): the WAL does not fsync"
        );
    }
    if spate_checkpoint::CHAOS_BROKEN_MANIFEST_FIRST {
        eprintln!(
            "spate: WARNING: test-only broken build (chaos-broken-manifest-first): manifests are \
             published before their data objects"
        );
    }
    #[cfg(feature = "failpoints")]
    {
        match spate_types::failpoints::configure_from_env() {
            Ok(0) => {}
            Ok(n) => eprintln!("spate: {n} fail point(s) armed from SPATE_FAILPOINTS"),
            Err(e) => {
                eprintln!("spate: {e}");
                return Err(ExitCode::from(2));
            }
        }
    }
    #[cfg(not(feature = "failpoints"))]
    {
        if std::env::var_os("SPATE_FAILPOINTS").is_some_and(|v| !v.is_empty()) {
            eprintln!(
                "spate: SPATE_FAILPOINTS is set but this build has no fail points (build with \
                 `--features failpoints`)"
            );
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

/// `spate info --failpoints`: a header line, then one tab-separated line per fail point.
pub(crate) fn list() -> ExitCode {
    println!(
        "# fail points: {} ({})",
        spate_types::failpoints::ALL.len(),
        if cfg!(feature = "failpoints") {
            "compiled in; arm with SPATE_FAILPOINTS"
        } else {
            "NOT compiled in: build with --features failpoints"
        }
    );
    for p in spate_types::failpoints::ALL {
        println!("{}\t{}\t{}", p.name, p.krate, p.description);
    }
    ExitCode::SUCCESS
}
