//! Shared helpers for spate's integration tests (`tests/it`).

pub mod feed;
pub mod s3;
pub mod sources;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The `spate` binary of this build profile, built once per test run (`cargo build -p spate-cli`),
/// so a test never runs a stale binary.
///
/// # Panics
/// If the build fails or the binary is missing afterwards (test setup failure).
#[must_use]
pub fn spate_bin() -> PathBuf {
    spate_bin_with_features(&[])
}

/// The `spate` binary built with `features` of `spate-cli` (e.g. `["failpoints"]`), built once per
/// test run into this profile's normal target directory (only spate's own crates recompile: no
/// second target directory), then hard-linked (or copied) to
/// `target/<profile>/spate-tests/<features>/spate` so that a later build of another feature set,
/// which replaces `target/<profile>/spate`, never changes a binary a test is running. After a
/// feature build the plain binary is rebuilt (a no-op but for the link), so `target/<profile>/spate`
/// stays the plain build for later steps. Builds are serialized within the process.
///
/// # Panics
/// If the build fails or the binary is missing afterwards (test setup failure: under `CI=true`
/// too, never a skip).
#[must_use]
pub fn spate_bin_with_features(features: &[&str]) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let tag = if features.is_empty() {
        "plain".to_owned()
    } else {
        features.join(",")
    };
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(&tag) {
        return p.clone();
    }
    let profile_dir = profile_dir();
    build_spate(&profile_dir, features);
    let bin = profile_dir.join("spate");
    assert!(bin.exists(), "{} missing after build", bin.display());
    let dest_dir = profile_dir.join("spate-tests").join(tag.replace(',', "+"));
    std::fs::create_dir_all(&dest_dir)
        .unwrap_or_else(|e| panic!("creating {}: {e}", dest_dir.display()));
    let dest = dest_dir.join("spate");
    let _ = std::fs::remove_file(&dest);
    if std::fs::hard_link(&bin, &dest).is_err() {
        std::fs::copy(&bin, &dest)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", bin.display(), dest.display()));
    }
    if !features.is_empty() {
        build_spate(&profile_dir, &[]);
    }
    built.insert(tag, dest.clone());
    dest
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/it-<hash>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

fn build_spate(profile_dir: &Path, features: &[&str]) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "-q", "-p", "spate-cli", "--bin", "spate"]);
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd
        .status()
        .expect("running cargo build for the spate binary");
    assert!(
        st.success(),
        "cargo build -p spate-cli --features {features:?} failed"
    );
}

/// A single-threaded tokio runtime with I/O and time, for a test's async store calls.
///
/// # Panics
/// If the runtime cannot be built (test setup failure).
#[must_use]
pub fn current_thread_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
}

/// Waits for `child` to exit, calling `each` every 20 ms while it runs; after `limit` it kills and
/// reaps the child and returns `None`.
///
/// # Panics
/// If the child's status cannot be read.
pub fn wait_child(
    child: &mut std::process::Child,
    limit: std::time::Duration,
    mut each: impl FnMut(),
) -> Option<std::process::ExitStatus> {
    let start = std::time::Instant::now();
    loop {
        each();
        if let Some(st) = child.try_wait().expect("child status") {
            return Some(st);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether this run is CI (`CI=true`): there a missing prerequisite fails a test instead of
/// skipping it.
#[must_use]
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The running test's name: libtest names each test's thread after the test's path
/// (`crash::stateful_wordcount_on_s3_survives_sigkills_with_exact_totals`); `"this test"` outside
/// a test thread.
#[must_use]
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("this test")
        .to_owned()
}

/// `let srv = spate_tests::s3_or_return!(s3sfs);` — the server of `scripts/test.sh` named by a
/// function of [`s3`] (`moto`, `s3sfs`, `s3sfs_control`, `private_s3sfs`) for the running test, or
/// a return from the test after the loud skip message (which fails the test under `CI=true`).
#[macro_export]
macro_rules! s3_or_return {
    ($server:ident) => {
        match $crate::s3::$server(&$crate::current_test()) {
            Some(server) => server,
            None => return,
        }
    };
}
