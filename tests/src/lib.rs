//! Shared helpers for spate's integration tests (`tests/it`).

pub mod s3;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `spate` binary of this build profile, built once per test run (`cargo build -p spate-cli`),
/// so a test never runs a stale binary.
///
/// # Panics
/// If the build fails or the binary is missing afterwards (test setup failure).
pub fn spate_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/it-<hash> -> target/<profile>/spate
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .to_path_buf();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("tests/ has a parent");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace)
            .args(["build", "-q", "-p", "spate-cli", "--bin", "spate"]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let st = cmd
            .status()
            .expect("running cargo build for the spate binary");
        assert!(st.success(), "cargo build -p spate-cli failed");
        let bin = profile_dir.join("spate");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}
