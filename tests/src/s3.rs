//! Real S3-compatible servers for tests, as started by `scripts/s3-servers.sh`.
//!
//! A test asks for a server with [`moto`] or [`s3sfs`]; when the variable the script exports is
//! missing, the helper prints a loud `SKIPPED` line naming the variable and returns `None` — or,
//! under `CI=true`, panics (the servers are mandatory in CI).

use spate_checkpoint::{CheckpointStore, S3Options, StoreOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One running S3-compatible server.
#[derive(Clone, Debug)]
pub struct S3Server {
    /// Short name (`moto`, `s3s-fs`).
    pub name: &'static str,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Bucket created by the script.
    pub bucket: String,
    /// Access key.
    pub access_key: String,
    /// Secret key.
    pub secret_key: String,
}

fn var(name: &str, test: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{test}: {name} is not set but CI=true: the S3 servers are mandatory in CI \
                 (scripts/s3-servers.sh)"
            );
            // Written to the stderr handle directly so the test harness's capture cannot hide it.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {name} is not set — start the real S3 servers with \
                 scripts/test.sh (or `source scripts/s3-servers.sh; s3_servers_start`)"
            );
            None
        }
    }
}

fn server(name: &'static str, endpoint_var: &str, test: &str) -> Option<S3Server> {
    let endpoint = var(endpoint_var, test)?;
    Some(S3Server {
        name,
        endpoint,
        bucket: var("SPATE_TEST_S3_BUCKET", test)?,
        access_key: var("SPATE_TEST_S3_ACCESS_KEY", test)?,
        secret_key: var("SPATE_TEST_S3_SECRET_KEY", test)?,
    })
}

/// moto (`SPATE_TEST_S3_MOTO`), or `None` after a loud skip message.
#[must_use]
pub fn moto(test: &str) -> Option<S3Server> {
    server("moto", "SPATE_TEST_S3_MOTO", test)
}

/// s3s-fs (`SPATE_TEST_S3_S3SFS`), or `None` after a loud skip message.
#[must_use]
pub fn s3sfs(test: &str) -> Option<S3Server> {
    server("s3s-fs", "SPATE_TEST_S3_S3SFS", test)
}

/// A prefix no other test (or run) uses.
#[must_use]
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!(
        "{tag}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

impl S3Server {
    /// Store options for this server (short timeouts for tests).
    #[must_use]
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3: S3Options {
                endpoint: Some(self.endpoint.clone()),
                region: Some("us-east-1".into()),
                access_key_id: Some(self.access_key.clone()),
                secret_access_key: Some(self.secret_key.clone()),
                virtual_hosted_style: false,
            },
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ..StoreOptions::default()
        }
    }

    /// The `AWS_*` environment a child `spate` process needs to reach this server.
    #[must_use]
    pub fn process_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// `s3://bucket/<prefix>`.
    #[must_use]
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// A fresh, empty checkpoint location on this server.
    ///
    /// # Panics
    /// If the store cannot be opened (test setup failure).
    #[must_use]
    pub fn fresh(&self, tag: &str) -> CheckpointStore {
        let url = self.url(&unique_prefix(tag));
        CheckpointStore::open(&url, self.options())
            .unwrap_or_else(|e| panic!("{}: opening {url}: {e}", self.name))
    }
}

/// Control over the s3s-fs process for kill/restart tests.
#[derive(Clone, Debug)]
pub struct S3sFsControl {
    /// The binary.
    pub bin: PathBuf,
    /// Its root directory (buckets are subdirectories).
    pub root: PathBuf,
    /// Its port.
    pub port: u16,
    /// File holding its current PID (shared with `s3_servers_stop`).
    pub pidfile: PathBuf,
    /// Credentials.
    pub access_key: String,
    /// Credentials.
    pub secret_key: String,
}

/// s3s-fs process control, or `None` after a loud skip message.
#[must_use]
pub fn s3sfs_control(test: &str) -> Option<S3sFsControl> {
    Some(S3sFsControl {
        bin: var("SPATE_TEST_S3SFS_BIN", test)?.into(),
        root: var("SPATE_TEST_S3SFS_ROOT", test)?.into(),
        port: var("SPATE_TEST_S3SFS_PORT", test)?.parse().ok()?,
        pidfile: var("SPATE_TEST_S3SFS_PIDFILE", test)?.into(),
        access_key: var("SPATE_TEST_S3_ACCESS_KEY", test)?,
        secret_key: var("SPATE_TEST_S3_SECRET_KEY", test)?,
    })
}

impl S3sFsControl {
    /// The server's current PID.
    ///
    /// # Panics
    /// If the pid file is unreadable.
    #[must_use]
    pub fn pid(&self) -> i32 {
        std::fs::read_to_string(&self.pidfile)
            .expect("s3s-fs pid file")
            .trim()
            .parse()
            .expect("s3s-fs pid")
    }

    /// Sends SIGKILL to the server (by PID) and waits until its port is closed.
    ///
    /// # Panics
    /// If `kill` fails or the port stays open.
    pub fn kill9(&self) {
        let pid = self.pid();
        let st = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill -9 {pid} failed");
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("s3s-fs port {} still open after SIGKILL", self.port);
    }

    /// Restarts the server on the same root and port, records its PID, waits for the port.
    ///
    /// # Panics
    /// If it does not come up within 10 s.
    pub fn restart(&self) {
        for _ in 0..50 {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.with_extension("restart.log"))
                .expect("log file");
            let child = std::process::Command::new(&self.bin)
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args([
                    "--access-key",
                    &self.access_key,
                    "--secret-key",
                    &self.secret_key,
                ])
                .arg(&self.root)
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawning s3s-fs");
            let pid = child.id();
            std::fs::write(&self.pidfile, pid.to_string()).expect("pid file");
            // The child is deliberately not waited on here: s3_servers_stop stops it by PID.
            std::mem::forget(child);
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        panic!("s3s-fs did not restart on port {}", self.port);
    }
}

/// A private s3s-fs (own root, port and pid file under a temporary directory), for tests that
/// kill and restart the server: killing the shared one made the S3 tests running beside them
/// fail with "connection refused" (seen in CI: `checkpoint::s3sfs_store_passes_the_checkpoint_conformance_suite` while
/// `checkpoint::s3sfs_killed_mid_checkpoint_recovers` had the shared server down). Stopped by PID
/// when dropped.
#[derive(Debug)]
pub struct PrivateS3sFs {
    /// The server, as the shared helpers describe one (bucket `spate-test`).
    pub server: S3Server,
    /// Its process control.
    pub control: S3sFsControl,
    _dir: tempfile::TempDir,
}

/// Starts a [`PrivateS3sFs`] with the shared server's binary and credentials, or `None` after a
/// loud skip message (as [`s3sfs_control`]).
///
/// # Panics
/// If the server cannot be started (test setup failure).
#[must_use]
pub fn private_s3sfs(test: &str) -> Option<PrivateS3sFs> {
    let shared = s3sfs_control(test)?;
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("root");
    let bucket = "spate-test";
    std::fs::create_dir_all(root.join(bucket)).expect("bucket directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let control = S3sFsControl {
        bin: shared.bin,
        root,
        port,
        pidfile: dir.path().join("pid"),
        access_key: shared.access_key.clone(),
        secret_key: shared.secret_key.clone(),
    };
    control.restart();
    Some(PrivateS3sFs {
        server: S3Server {
            name: "s3s-fs (private)",
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.into(),
            access_key: shared.access_key,
            secret_key: shared.secret_key,
        },
        control,
        _dir: dir,
    })
}

impl Drop for PrivateS3sFs {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.control.pidfile) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid.trim()])
                .status();
        }
    }
}
