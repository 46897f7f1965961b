//! A program under test as a child process whose stderr is read line by line in the background.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What [`Proc::next_event`] saw.
#[derive(Debug)]
pub enum Event {
    /// A stderr line (without the newline) and when it was read.
    Line(String, Instant),
    /// The process closed stderr (it ended, or is ending).
    Closed,
    /// Nothing before the deadline.
    Timeout,
}

/// A running child. Dropped while running, it is killed (our own child, by handle) and reaped.
#[derive(Debug)]
pub struct Proc {
    child: Option<Child>,
    lines: Receiver<(String, Instant)>,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// When the process was spawned.
    pub spawned: Instant,
}

impl Proc {
    /// Starts the program.
    ///
    /// Spawns `bin args` with `envs` added, stdin and stdout null, stderr piped and read by a
    /// background thread (the last 64 KiB are kept once it passes 128 KiB).
    ///
    /// # Errors
    /// The spawn's I/O error.
    pub fn spawn<S: AsRef<OsStr>>(
        bin: &Path,
        args: &[S],
        envs: &[(String, String)],
    ) -> std::io::Result<Proc> {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let spawned = Instant::now();
        let mut child = cmd.spawn()?;
        let err = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("the child's stderr was not piped"))?;
        let (tx, rx) = mpsc::channel();
        let stderr = Arc::new(Mutex::new(String::new()));
        let acc = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(err);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).into_owned();
                        if let Ok(mut g) = acc.lock() {
                            // Keep the last 64 KiB: enough for a diagnosis, bounded for long runs.
                            g.push_str(&line);
                            if g.len() > 128 * 1024 {
                                let cut = g.len() - 64 * 1024;
                                let cut =
                                    (cut..g.len()).find(|&i| g.is_char_boundary(i)).unwrap_or(0);
                                g.drain(..cut);
                            }
                        }
                        let _ = tx.send((
                            line.trim_end_matches(['\n', '\r']).to_owned(),
                            Instant::now(),
                        ));
                    }
                }
            }
        });
        Ok(Proc {
            child: Some(child),
            lines: rx,
            stderr,
            reader: Some(reader),
            spawned,
        })
    }

    /// The tail of stderr read so far.
    pub fn stderr_tail(&self, max: usize) -> String {
        let s = self.stderr.lock().map(|g| g.clone()).unwrap_or_default();
        if s.len() <= max {
            return s;
        }
        let cut = s.len() - max;
        let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s[cut..].to_owned()
    }

    /// The next stderr line, waiting until `deadline`.
    pub fn next_event(&self, deadline: Instant) -> Event {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok((l, t)) => Event::Line(l, t),
            Err(RecvTimeoutError::Timeout) => Event::Timeout,
            Err(RecvTimeoutError::Disconnected) => Event::Closed,
        }
    }

    /// Whether the process has ended (its status if so).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn join_reader(&mut self) {
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }

    /// SIGKILL (`Child::kill` on Unix) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.join_reader();
    }

    /// Waits up to `timeout` for the process to end by itself; `None` (still running) after it.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                self.child = None;
                self.join_reader();
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `exit N` or `signal N (NAME)`.
pub fn describe_status(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(6)) => "signal 6 (SIGABRT)".to_owned(),
        (None, Some(9)) => "signal 9 (SIGKILL)".to_owned(),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => "unknown status".to_owned(),
    }
}
