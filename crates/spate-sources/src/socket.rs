//! The TCP text-line receiver behind `socket_text_stream` (Spark's `SocketReceiver`).
//!
//! spate connects **as a client** (as Spark's `socketTextStream` connects to `nc -lk 9999`), reads
//! newline-terminated UTF-8 lines and stores them with [`ReceiverContext::store_many`] in batches
//! (one call per socket read of up to [`SocketConfig::read_buffer_bytes`], never one call per line).
//!
//! # Restart rules (as Spark's `SocketReceiver`)
//! * A refused or timed-out connect calls `restart("error connecting to ...")`.
//! * End of stream calls `restart("socket data stream had no more data")`; a final line without
//!   `\n` is delivered first (as `BufferedReader.readLine` does) in plain mode, dropped in ack mode.
//! * A read error calls `restart(...)`; an incomplete last line is dropped (the connection broke,
//!   the line may be cut anywhere).
//! * The restart delay is [`SocketConfig::restart_delay`], or the supervisor's configured delay
//!   (Spark: `spark.streaming.receiverRestartDelay`, 2000 ms) when `None`.
//!
//! # Garbage
//! Line decoding follows [`LinePolicy`] (see [`crate::lines`] for the line
//! rules): invalid UTF-8 is replaced (default), skipped or fatal for the connection; a line longer
//! than `max_line_bytes` is skipped (default) or fatal for the connection. The receiver never holds
//! more than `max(read_buffer_bytes, max_line_bytes + 1)` bytes of a line: the rest of an overlong
//! line is discarded as it arrives, so a 10 MB line with a 1 MiB limit never allocates 10 MB.
//! "Fatal for the connection" means: the error is reported (`report_error`), the connection is
//! closed and the receiver restarts after the restart delay; the rest of that connection's data is
//! lost (the socket protocol has no replay). Nothing in the byte stream can panic the receiver.
//!
//! # Acknowledged mode (`spate-ack/1`)
//! With [`SocketConfig::ack`] the receiver speaks the protocol of `spate feed --ack`
//! (`docs/format/feed-protocol.md`); without it (the default) it is the plain, at-most-once,
//! `nc`-like receiver described above.
//! * **Positions.** The peer's lines are numbered from 0 over the whole feed. The receiver holds a
//!   *position*: the sequence number of the first line it does not hold, i.e. one past the last line
//!   whose store returned `Ok`.
//! * **HELLO.** After each connect it writes `HELLO spate-ack/1 resume=<n>\n`, where `n` is the
//!   larger of [`ReceiverContext::durable_position`] (what the engine recovered from its WAL in an
//!   earlier run; 0 if `None`) and the position this receiver object already holds (earlier
//!   connections of this process). Every store of the previous connection has finished (`Ok` or
//!   refused) before the next connect, so nothing queued is numbered twice.
//! * **Numbering.** The first line received on the connection is line `n`. Every `\n`-terminated line
//!   counts, including lines dropped by the line policies (invalid UTF-8 under `Skip`, overlong
//!   lines), so positions match the feeder's. A final line without `\n` at end of stream is **not**
//!   a record in ack mode (the feeder only sends whole lines; an unterminated tail was cut and is
//!   re-sent whole after the reconnect).
//! * **Store and ACK.** Lines go to [`ReceiverContext::store_many_at`] with the position after the
//!   last line of the call (a call may hold no records when every line it covers was dropped by a
//!   policy). After each `Ok`, and only then, the store thread writes `ACK <position>\n`:
//!   cumulative, strictly increasing within a connection. A line below an acknowledged position was
//!   stored `Ok` exactly once by this process.
//! * **Refused stores.** On `StoreError::Failed` nothing more is acknowledged on that connection:
//!   the lines of the failed call and everything queued after it are dropped (counted in
//!   `lost_lines`), the connection is closed, and the receiver restarts; the new `HELLO` resumes at
//!   the last stored position, so the feeder re-sends exactly the dropped lines (no duplicate, no
//!   gap). `StoreError::Stopped` ends the receiver quietly without an ACK.
//! * **ACK writes.** An ACK write that fails or blocks longer than [`ACK_WRITE_TIMEOUT`] closes the
//!   connection (the receiver restarts and says where it stands in the next `HELLO`); storing of
//!   what was already received continues.
//! * **A peer that does not speak the protocol** (plain `nc -lk`): data still flows and is stored
//!   as in plain mode except that an unterminated final line is dropped; the `HELLO` and `ACK` lines
//!   are simply written to the peer (`nc` prints them). Numbering starts at the durable position,
//!   which means nothing to such a peer.
//! * **`Error` line policies** stop the connection at the faulty line, which is not counted: after
//!   the restart the feeder re-sends it, so the receiver reports the same error after every restart
//!   delay and the stream stalls visibly (no line is skipped silently). Use `Replace`/`Skip` to
//!   keep going.
//! * **Durability** is the engine's: with the receiver WAL on, `Ok` means the lines and the position
//!   are synced, so a `kill -9` loses nothing acknowledged and the next run resumes from
//!   `durable_position` (nothing durable is sent again). With the WAL off, `Ok` means "in memory":
//!   acknowledged lines are lost on a crash and the feeder reports `resume_below_ack`.
//!
//! # Counters
//! [`SocketTextReceiver::stats`] returns a shared [`SocketStats`] (lines, bytes, invalid UTF-8,
//! too long, connections, reconnects, connect failures, disconnects, lines lost to failed stores;
//! in ack mode the highest ACK written and the last HELLO's resume position).

use crate::lines::{decode_line, Decoded, InvalidUtf8Policy, LinePolicy, OverlongPolicy};
use crate::receiver::{Receiver, ReceiverContext, ReceiverError, StoreError};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Configuration of a [`SocketTextReceiver`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketConfig {
    /// Line length limit and the invalid-UTF-8 / overlong policies.
    pub lines: LinePolicy,
    /// Size of each socket read, in bytes (default 1 MiB).
    pub read_buffer_bytes: usize,
    /// Connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// How often a blocked read wakes up to check for a stop request (default 100 ms).
    pub poll_interval: Duration,
    /// Delay before reconnecting; `None` uses the supervisor's configured restart delay.
    pub restart_delay: Option<Duration>,
    /// Bound on decoded lines waiting to be stored, in bytes of input (default 16 MiB). The
    /// engine's `store_many` blocks until its block is cut (every block interval, or at once for a
    /// store larger than the engine's `max_block_bytes`), so a separate store thread hands over
    /// everything decoded meanwhile in one call (at most this many bytes of lines) while the
    /// receive thread keeps reading; beyond this bound the receive thread stops reading (TCP
    /// back-pressure). The receiver holds at most about twice this outside the engine's memory
    /// budget (one call being stored, one queued).
    pub max_pending_bytes: usize,
    /// Maximum lines per second this receiver stores (`None`: unlimited). Spark's
    /// `spark.streaming.receiver.maxRate`; the receiver stops reading (TCP back-pressure reaches
    /// the sender) while it is ahead of the rate.
    pub max_rate_lines_per_sec: Option<u64>,
    /// Acknowledged mode, protocol `spate-ack/1` (see the [module docs](self)):
    /// send `HELLO`, number lines, store them with their position and acknowledge what is stored.
    /// Default `false`: plain `nc`-like mode, at most once.
    pub ack: bool,
}

/// How long one `HELLO` or `ACK` write may block (the peer does not read) before the receiver drops
/// the connection and restarts (ack mode).
pub const ACK_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The protocol name and version sent in ack mode's `HELLO`.
pub const ACK_PROTOCOL: &str = "spate-ack/1";

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            lines: LinePolicy::default(),
            read_buffer_bytes: 1 << 20,
            connect_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(100),
            restart_delay: None,
            max_pending_bytes: 16 << 20,
            max_rate_lines_per_sec: None,
            ack: false,
        }
    }
}

/// Live counters of a [`SocketTextReceiver`], shared across its connections and restarts.
#[derive(Debug, Default)]
pub struct SocketStats {
    lines: AtomicU64,
    bytes: AtomicU64,
    invalid_utf8: AtomicU64,
    too_long: AtomicU64,
    connections: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    lost_lines: AtomicU64,
    acked: AtomicU64,
    resume: AtomicU64,
}

/// A point-in-time copy of [`SocketStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketStatsSnapshot {
    /// Lines stored (delivered to the engine).
    pub lines: u64,
    /// Bytes read from the socket.
    pub bytes: u64,
    /// Lines that were not valid UTF-8 (replaced, skipped, or that failed the connection).
    pub invalid_utf8: u64,
    /// Lines longer than the limit (skipped, or that failed the connection).
    pub too_long: u64,
    /// Successful connects.
    pub connections: u64,
    /// Successful connects after the first one (`connections - 1`).
    pub reconnects: u64,
    /// Failed connect attempts (refused, timed out, unresolvable).
    pub connect_failures: u64,
    /// Connections that ended (end of stream or read error).
    pub disconnects: u64,
    /// Decoded lines that `store_many` refused (receiver stopping or store failure).
    pub lost_lines: u64,
    /// Ack mode: the highest position acknowledged (`ACK <n>` written) by this receiver, over all
    /// its connections; 0 before the first ACK or in plain mode.
    pub acked: u64,
    /// Ack mode: the `resume` position of the last `HELLO` sent; 0 in plain mode.
    pub resume: u64,
}

impl SocketStats {
    /// A consistent-enough copy of the counters (each read atomically).
    pub fn snapshot(&self) -> SocketStatsSnapshot {
        let connections = self.connections.load(Ordering::Relaxed);
        SocketStatsSnapshot {
            lines: self.lines.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            invalid_utf8: self.invalid_utf8.load(Ordering::Relaxed),
            too_long: self.too_long.load(Ordering::Relaxed),
            connections,
            reconnects: connections.saturating_sub(1),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            lost_lines: self.lost_lines.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            resume: self.resume.load(Ordering::Relaxed),
        }
    }
}

fn add(c: &AtomicU64, n: u64) {
    if n != 0 {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Reads `\n`-terminated lines from a TCP server; see the [module docs](self).
#[derive(Debug)]
pub struct SocketTextReceiver {
    addr: String,
    config: SocketConfig,
    stats: Arc<SocketStats>,
    /// Ack mode: one past the last line stored `Ok` by this receiver (shared across restarts).
    held: Arc<AtomicU64>,
    worker: Option<Worker>,
}

#[derive(Debug)]
struct Worker {
    stop: Arc<AtomicBool>,
    stream: Arc<Mutex<Option<TcpStream>>>,
    handle: Option<JoinHandle<()>>,
}

impl SocketTextReceiver {
    /// A receiver for `addr` (`host:port`, e.g. `127.0.0.1:9999`) with the default configuration.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::with_config(addr, SocketConfig::default())
    }

    /// A receiver for `addr` with `config`.
    pub fn with_config(addr: impl Into<String>, config: SocketConfig) -> Self {
        SocketTextReceiver {
            addr: addr.into(),
            config,
            stats: Arc::new(SocketStats::default()),
            held: Arc::new(AtomicU64::new(0)),
            worker: None,
        }
    }

    /// The shared counters (they keep counting across restarts).
    pub fn stats(&self) -> Arc<SocketStats> {
        Arc::clone(&self.stats)
    }

    /// The configured address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn validate(&self) -> Result<(), String> {
        let (host, port) = self
            .addr
            .rsplit_once(':')
            .ok_or_else(|| format!("address {:?} is not host:port", self.addr))?;
        if host.is_empty() {
            return Err(format!("address {:?} has an empty host", self.addr));
        }
        port.parse::<u16>()
            .map_err(|_| format!("address {:?} has an invalid port {port:?}", self.addr))?;
        if self.config.lines.max_line_bytes == 0 {
            return Err("max_line_bytes must be at least 1".into());
        }
        if self.config.read_buffer_bytes == 0 {
            return Err("read_buffer_bytes must be at least 1".into());
        }
        if self.config.max_rate_lines_per_sec == Some(0) {
            return Err("max_rate_lines_per_sec must be positive (None for unlimited)".into());
        }
        Ok(())
    }
}

impl Receiver<String> for SocketTextReceiver {
    fn on_start(&mut self, ctx: ReceiverContext<String>) -> Result<(), ReceiverError> {
        self.validate().map_err(|message| ReceiverError::Start {
            message,
            fatal: true,
        })?;
        // A previous worker (restart without on_stop) must not keep running.
        self.on_stop();
        let stop = Arc::new(AtomicBool::new(false));
        let stream = Arc::new(Mutex::new(None));
        let run = ConnectionRun {
            addr: self.addr.clone(),
            config: self.config.clone(),
            stats: Arc::clone(&self.stats),
            held: Arc::clone(&self.held),
            stop: Arc::clone(&stop),
            stream: Arc::clone(&stream),
            ctx,
        };
        let handle = std::thread::Builder::new()
            .name(format!("spate-socket-{}", self.addr))
            .spawn(move || run.run())
            .map_err(|e| ReceiverError::Start {
                message: format!("cannot spawn receive thread: {e}"),
                fatal: false,
            })?;
        self.worker = Some(Worker {
            stop,
            stream,
            handle: Some(handle),
        });
        Ok(())
    }

    fn on_stop(&mut self) {
        let Some(mut w) = self.worker.take() else {
            return;
        };
        w.stop.store(true, Ordering::SeqCst);
        if let Ok(guard) = w.stream.lock() {
            if let Some(s) = guard.as_ref() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        if let Some(h) = w.handle.take() {
            // on_stop may be called from the receive thread itself (a synchronous restart); never
            // join ourselves.
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    fn describe(&self) -> String {
        format!("socket {}", self.addr)
    }
}

impl Drop for SocketTextReceiver {
    fn drop(&mut self) {
        self.on_stop();
    }
}

/// One connection attempt and its receive loop (runs on the receive thread).
struct ConnectionRun {
    addr: String,
    config: SocketConfig,
    stats: Arc<SocketStats>,
    held: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    stream: Arc<Mutex<Option<TcpStream>>>,
    ctx: ReceiverContext<String>,
}

enum End {
    /// Stop requested: exit quietly.
    Stopped,
    /// Restart with this reason (after reporting it as an error if `error`).
    Restart { reason: String, error: bool },
}

impl ConnectionRun {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.ctx.is_stopped()
    }

    fn run(self) {
        let end = match self.connect() {
            Ok(stream) => self.receive(stream),
            Err(e) => {
                add(&self.stats.connect_failures, 1);
                End::Restart {
                    reason: format!("error connecting to {}: {e}", self.addr),
                    error: false,
                }
            }
        };
        if let Ok(mut g) = self.stream.lock() {
            *g = None;
        }
        match end {
            End::Stopped => {}
            End::Restart { reason, error } => {
                if self.stopping() {
                    return;
                }
                if error {
                    self.ctx.report_error(&reason);
                }
                self.ctx.restart(&reason, self.config.restart_delay);
            }
        }
    }

    fn connect(&self) -> io::Result<TcpStream> {
        let mut last = None;
        for sa in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, self.config.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "address resolved to nothing")
        }))
    }

    /// Runs the receive loop with a store thread (see [`SocketConfig::max_pending_bytes`]).
    fn receive(&self, stream: TcpStream) -> End {
        let cap = (self.config.max_pending_bytes / self.config.read_buffer_bytes.max(1)).max(1);
        let (tx, rx) = mpsc::sync_channel::<Batch>(cap);
        let failed: Arc<Mutex<Option<End>>> = Arc::new(Mutex::new(None));
        let acker = if self.config.ack {
            match stream.try_clone() {
                Ok(s) => Some(Acker {
                    stream: Some(s),
                    held: Arc::clone(&self.held),
                    last: 0,
                }),
                Err(e) => {
                    return End::Restart {
                        reason: format!("cannot clone socket to {}: {e}", self.addr),
                        error: true,
                    }
                }
            }
        } else {
            None
        };
        let store = StoreThread {
            max_bytes: self.config.max_pending_bytes.max(1),
            ctx: self.ctx.clone(),
            stats: Arc::clone(&self.stats),
            failed: Arc::clone(&failed),
            stop: Arc::clone(&self.stop),
            acker,
        };
        let storer = match std::thread::Builder::new()
            .name(format!("spate-socket-store-{}", self.addr))
            .spawn(move || store.run(&rx))
        {
            Ok(h) => h,
            Err(e) => {
                return End::Restart {
                    reason: format!("cannot spawn store thread: {e}"),
                    error: true,
                }
            }
        };
        let end = self.receive_loop(
            stream,
            Pipe {
                tx,
                failed: Arc::clone(&failed),
            },
        );
        // The sender is dropped: the store thread stores what is queued, then exits. So every store
        // of this connection has finished before the next connect (ack mode's HELLO relies on it).
        let _ = storer.join();
        let stored_failure = failed.lock().ok().and_then(|mut g| g.take());
        stored_failure.unwrap_or(end)
    }

    /// Ack mode: writes `HELLO` and returns the sequence number of the first line the peer sends.
    fn hello(&self, stream: &mut TcpStream) -> Result<u64, End> {
        let held = self.held.load(Ordering::SeqCst);
        let resume = self.ctx.durable_position().unwrap_or(0).max(held);
        self.stats.resume.store(resume, Ordering::Relaxed);
        let line = format!("HELLO {ACK_PROTOCOL} resume={resume}\n");
        stream
            .set_write_timeout(Some(ACK_WRITE_TIMEOUT))
            .and_then(|()| stream.write_all(line.as_bytes()))
            .map_err(|e| End::Restart {
                reason: format!("cannot send HELLO to {}: {e}", self.addr),
                error: true,
            })?;
        Ok(resume)
    }

    fn receive_loop(&self, mut stream: TcpStream, pipe: Pipe) -> End {
        add(&self.stats.connections, 1);
        if let Err(e) = stream.set_read_timeout(Some(
            self.config.poll_interval.max(Duration::from_millis(1)),
        )) {
            return End::Restart {
                reason: format!("cannot configure socket to {}: {e}", self.addr),
                error: true,
            };
        }
        match stream.try_clone() {
            Ok(clone) => {
                if let Ok(mut g) = self.stream.lock() {
                    *g = Some(clone);
                }
            }
            Err(e) => {
                return End::Restart {
                    reason: format!("cannot clone socket to {}: {e}", self.addr),
                    error: true,
                }
            }
        }
        // on_stop may have run between connect and registering the clone.
        if self.stopping() {
            return End::Stopped;
        }
        let base = if self.config.ack {
            match self.hello(&mut stream) {
                Ok(n) => n,
                Err(end) => return end,
            }
        } else {
            0
        };
        let mut asm = LineAssembler::new(self.config.lines, self.config.read_buffer_bytes);
        let mut conn = Conn {
            pending: Vec::new(),
            started: Instant::now(),
            stored: 0,
            base,
            flushed: base,
        };
        loop {
            if self.stopping() {
                return End::Stopped;
            }
            if pipe.store_failed() {
                // `receive` returns the failure the store thread recorded.
                return End::Stopped;
            }
            match asm.read_from(&mut stream) {
                Ok(0) => {
                    add(&self.stats.disconnects, 1);
                    // Plain mode: a final line without `\n` is a record (as `readLine`). Ack mode:
                    // the feeder only sends whole lines, so an unterminated tail was cut; it is not
                    // counted and is re-sent whole after the reconnect.
                    let r = if self.config.ack {
                        Ok(())
                    } else {
                        asm.finish(&mut conn.pending)
                    };
                    self.account(&mut asm);
                    // Lines before a faulty one are delivered.
                    if let Some(end) = self.flush(&mut conn, asm.lines(), &pipe) {
                        return end;
                    }
                    if let Err(f) = r {
                        return self.fault(f);
                    }
                    return End::Restart {
                        reason: format!("socket data stream from {} had no more data", self.addr),
                        error: false,
                    };
                }
                Ok(n) => {
                    add(&self.stats.bytes, n as u64);
                    let r = asm.drain(&mut conn.pending);
                    self.account(&mut asm);
                    if let Some(end) = self.flush(&mut conn, asm.lines(), &pipe) {
                        return end;
                    }
                    if let Err(f) = r {
                        return self.fault(f);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    add(&self.stats.disconnects, 1);
                    if self.stopping() {
                        return End::Stopped;
                    }
                    // Lines completed before the error are delivered; the cut line is not.
                    if let Some(end) = self.flush(&mut conn, asm.lines(), &pipe) {
                        return end;
                    }
                    return End::Restart {
                        reason: format!("error receiving data from {}: {e}", self.addr),
                        error: true,
                    };
                }
            }
        }
    }

    fn account(&self, asm: &mut LineAssembler) {
        let c = std::mem::take(&mut asm.counts);
        add(&self.stats.invalid_utf8, c.invalid_utf8);
        add(&self.stats.too_long, c.too_long);
    }

    fn fault(&self, f: LineFault) -> End {
        End::Restart {
            reason: format!("{} from {}; dropping the connection", f, self.addr),
            error: true,
        }
    }

    /// Hands the pending lines to the store thread, with the position after the `lines` complete
    /// lines of this connection (ack mode: also when every one of them was dropped by a policy, so
    /// the position still advances); `Some(end)` if the receive loop must end.
    fn flush(&self, conn: &mut Conn, lines: u64, pipe: &Pipe) -> Option<End> {
        let position = conn.base.saturating_add(lines);
        let advanced = self.config.ack && position > conn.flushed;
        if conn.pending.is_empty() && !advanced {
            return None;
        }
        let items = std::mem::take(&mut conn.pending);
        let n = items.len() as u64;
        let bytes = items.iter().map(String::len).sum();
        if pipe
            .tx
            .send(Batch {
                items,
                position,
                bytes,
            })
            .is_err()
        {
            // The store thread ended (store refused): it recorded why.
            return Some(
                pipe.failed
                    .lock()
                    .ok()
                    .and_then(|mut g| g.take())
                    .unwrap_or(End::Stopped),
            );
        }
        conn.flushed = position;
        conn.stored += n;
        if let Some(rate) = self.config.max_rate_lines_per_sec {
            // Stay at or below `rate` lines/s since the connection started.
            let due = Duration::from_secs_f64(conn.stored as f64 / rate as f64);
            while conn.started.elapsed() < due {
                if self.stopping() {
                    return Some(End::Stopped);
                }
                let left = due.saturating_sub(conn.started.elapsed());
                std::thread::sleep(left.min(self.config.poll_interval));
            }
        }
        None
    }
}

/// The receive loop's state for one connection.
struct Conn {
    /// Decoded lines not yet handed to the store thread.
    pending: Vec<String>,
    /// When the connection started (rate limit).
    started: Instant,
    /// Lines handed to the store thread on this connection (rate limit).
    stored: u64,
    /// Ack mode: sequence number of the connection's first line (the `HELLO` resume).
    base: u64,
    /// Ack mode: position of the last batch handed to the store thread.
    flushed: u64,
}

/// Lines handed to the store thread and, in ack mode, the position after the last line they cover.
struct Batch {
    items: Vec<String>,
    position: u64,
    /// Bytes of the lines.
    bytes: usize,
}

/// The receive thread's side of the hand-over to the store thread.
struct Pipe {
    tx: mpsc::SyncSender<Batch>,
    failed: Arc<Mutex<Option<End>>>,
}

impl Pipe {
    /// True once the store thread recorded a refused store (it has exited or is exiting).
    fn store_failed(&self) -> bool {
        self.failed.lock().map(|g| g.is_some()).unwrap_or(true)
    }
}

/// Most lines handed to one `store_many` call (coalesced from several reads); the bytes are
/// bounded by [`SocketConfig::max_pending_bytes`]. (A fixed 2^20 lines per call, one call per block
/// interval, capped a receiver at 5.2 M lines/s with 200 ms blocks whatever the machine could do.)
const MAX_LINES_PER_STORE: usize = 1 << 26;

/// Ack mode: the store thread's writer of `ACK` lines.
struct Acker {
    /// The connection (a clone); `None` after a failed write.
    stream: Option<TcpStream>,
    /// The receiver's held position (shared across its connections).
    held: Arc<AtomicU64>,
    /// Last position acknowledged on this connection.
    last: u64,
}

impl Acker {
    /// Records that every line below `position` is stored and acknowledges it. A failed write
    /// closes the connection (a cut `ACK` must not be followed by another one); the receiver then
    /// restarts and tells the feeder where it stands in its next `HELLO`.
    fn stored(&mut self, position: u64, stats: &SocketStats) -> Result<(), String> {
        self.held.fetch_max(position, Ordering::SeqCst);
        if position <= self.last {
            return Ok(());
        }
        let Some(s) = self.stream.as_mut() else {
            return Ok(());
        };
        match s.write_all(format!("ACK {position}\n").as_bytes()) {
            Ok(()) => {
                self.last = position;
                stats.acked.fetch_max(position, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                let _ = s.shutdown(Shutdown::Both);
                self.stream = None;
                Err(format!(
                    "cannot write ACK {position}: {e}; closing the connection"
                ))
            }
        }
    }
}

/// The store thread of one connection.
struct StoreThread {
    /// Most bytes of lines per store call ([`SocketConfig::max_pending_bytes`]).
    max_bytes: usize,
    ctx: ReceiverContext<String>,
    stats: Arc<SocketStats>,
    failed: Arc<Mutex<Option<End>>>,
    stop: Arc<AtomicBool>,
    /// `Some` in ack mode.
    acker: Option<Acker>,
}

impl StoreThread {
    /// Coalesces everything queued into one store call at a time (`store_many_at` with the
    /// position in ack mode, `store_many` otherwise); acknowledges after each `Ok` in ack mode. On a
    /// refused store it records why in `failed`, counts what is left as lost and exits, so nothing
    /// after a refused store is stored or acknowledged on this connection.
    fn run(mut self, rx: &mpsc::Receiver<Batch>) {
        while let Ok(first) = rx.recv() {
            let mut all = first.items;
            let mut position = first.position;
            let mut bytes = first.bytes;
            while all.len() < MAX_LINES_PER_STORE && bytes < self.max_bytes {
                match rx.try_recv() {
                    Ok(more) => {
                        all.extend(more.items);
                        position = position.max(more.position);
                        bytes += more.bytes;
                    }
                    Err(_) => break,
                }
            }
            let n = all.len() as u64;
            let res = if self.acker.is_some() {
                self.ctx.store_many_at(all, position)
            } else {
                self.ctx.store_many(all)
            };
            let end = match res {
                Ok(()) => {
                    add(&self.stats.lines, n);
                    if let Some(a) = self.acker.as_mut() {
                        if let Err(e) = a.stored(position, &self.stats) {
                            if !self.stop.load(Ordering::SeqCst) && !self.ctx.is_stopped() {
                                self.ctx.report_error(&e);
                            }
                        }
                    }
                    continue;
                }
                Err(StoreError::Stopped(items)) => {
                    add(&self.stats.lost_lines, items.len() as u64);
                    End::Stopped
                }
                Err(StoreError::Failed { items, reason }) => {
                    add(&self.stats.lost_lines, items.len() as u64);
                    End::Restart {
                        reason: format!("storing {} lines failed: {reason}", items.len()),
                        error: true,
                    }
                }
            };
            for rest in rx.try_iter() {
                add(&self.stats.lost_lines, rest.items.len() as u64);
            }
            if let Ok(mut g) = self.failed.lock() {
                *g = Some(end);
            }
            return;
        }
    }
}

/// Splits `data` exactly as the receiver does when the bytes arrive in reads of `chunk` bytes into a
/// buffer of `read_buffer_bytes` (for fuzzing and tests): returns the records and, under an `Error`
/// policy, the fault description that would drop the connection.
pub fn split_as_received(
    data: &[u8],
    chunk: usize,
    read_buffer_bytes: usize,
    policy: LinePolicy,
) -> (Vec<String>, Option<String>) {
    struct Chunked<'a>(&'a [u8], usize);
    impl Read for Chunked<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1.max(1)).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut policy = policy;
    policy.max_line_bytes = policy.max_line_bytes.max(1);
    let mut r = Chunked(data, chunk);
    let mut a = LineAssembler::new(policy, read_buffer_bytes);
    let mut out = Vec::new();
    loop {
        match a.read_from(&mut r) {
            Ok(0) | Err(_) => {
                let res = a.finish(&mut out);
                return (out, res.err().map(|f| f.to_string()));
            }
            Ok(_) => {
                if let Err(f) = a.drain(&mut out) {
                    return (out, Some(f.to_string()));
                }
            }
        }
    }
}

/// A line that failed the connection under an `Error` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineFault {
    InvalidUtf8 { offset: u64 },
    TooLong { offset: u64, limit: usize },
}

impl std::fmt::Display for LineFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineFault::InvalidUtf8 { offset } => {
                write!(f, "invalid UTF-8 at byte {offset} of the connection")
            }
            LineFault::TooLong { offset, limit } => write!(
                f,
                "line starting at byte {offset} of the connection is longer than {limit} bytes"
            ),
        }
    }
}

/// Counts of one drain (moved into [`SocketStats`] by the caller).
#[derive(Debug, Default)]
pub(crate) struct AsmCounts {
    invalid_utf8: u64,
    too_long: u64,
}

/// Incremental line splitter over a bounded buffer: `buf[start..end]` holds unprocessed bytes.
#[derive(Debug)]
pub(crate) struct LineAssembler {
    policy: LinePolicy,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Inside an overlong line: drop bytes up to the next `\n`.
    discarding: bool,
    /// Connection offset of `buf[0]`.
    base: u64,
    counts: AsmCounts,
    /// Complete (`\n`-terminated) lines consumed so far, whether they became records or were
    /// dropped by a policy; a line that failed the connection is not counted.
    lines: u64,
}

impl LineAssembler {
    pub(crate) fn new(policy: LinePolicy, read_buffer_bytes: usize) -> Self {
        LineAssembler {
            policy,
            buf: vec![0; read_buffer_bytes.max(1)],
            start: 0,
            end: 0,
            discarding: false,
            base: 0,
            counts: AsmCounts::default(),
            lines: 0,
        }
    }

    /// Reads once from `r` into the free space (compacting or growing up to the line limit first).
    pub(crate) fn read_from<R: Read>(&mut self, r: &mut R) -> io::Result<usize> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.base += self.start as u64;
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                // A partial line fills the buffer; it is at most max_line_bytes long (drain
                // switches to discarding beyond that), so growth stops at max_line_bytes + 1.
                let cap = self.policy.max_line_bytes.saturating_add(1);
                let new_len = self.buf.len().saturating_mul(2).min(cap).max(self.end + 1);
                self.buf.resize(new_len, 0);
            }
        }
        r.read(&mut self.buf[self.end..])
            .inspect(|&n| self.end += n)
    }

    /// Complete lines consumed so far (see the field).
    pub(crate) fn lines(&self) -> u64 {
        self.lines
    }

    /// Buffer size in bytes (for the bounded-memory tests).
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Moves every complete line into `out`.
    pub(crate) fn drain(&mut self, out: &mut Vec<String>) -> Result<(), LineFault> {
        let max = self.policy.max_line_bytes;
        while self.start < self.end {
            match memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                Some(i) => {
                    let line_start = self.start;
                    self.start += i + 1;
                    if self.discarding {
                        self.discarding = false;
                        self.lines += 1;
                        continue;
                    }
                    self.emit(line_start, line_start + i, out)?;
                    self.lines += 1;
                }
                None => {
                    let partial = self.end - self.start;
                    if self.discarding {
                        self.start = self.end;
                    } else if partial > max {
                        self.too_long(self.start)?;
                        self.discarding = true;
                        self.start = self.end;
                    }
                    break;
                }
            }
        }
        if self.start == self.end {
            self.base += self.start as u64;
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }

    /// End of stream: the final unterminated line (if any) becomes a record.
    pub(crate) fn finish(&mut self, out: &mut Vec<String>) -> Result<(), LineFault> {
        self.drain(out)?;
        let r = if !self.discarding && self.start < self.end {
            self.emit(self.start, self.end, out)
        } else {
            Ok(())
        };
        self.base += self.end as u64;
        self.start = 0;
        self.end = 0;
        self.discarding = false;
        r
    }

    fn too_long(&mut self, line_start: usize) -> Result<(), LineFault> {
        self.counts.too_long += 1;
        match self.policy.overlong {
            OverlongPolicy::Skip => Ok(()),
            OverlongPolicy::Error => Err(LineFault::TooLong {
                offset: self.base + line_start as u64,
                limit: self.policy.max_line_bytes,
            }),
        }
    }

    fn emit(&mut self, s: usize, e: usize, out: &mut Vec<String>) -> Result<(), LineFault> {
        if e - s > self.policy.max_line_bytes {
            return self.too_long(s);
        }
        let (d, invalid) = decode_line(&self.buf[s..e], self.policy.invalid_utf8);
        if invalid {
            self.counts.invalid_utf8 += 1;
        }
        match d {
            Decoded::Line(l) => out.push(l),
            Decoded::SkippedInvalid => {}
            Decoded::InvalidError { valid_up_to } => {
                debug_assert_eq!(self.policy.invalid_utf8, InvalidUtf8Policy::Error);
                return Err(LineFault::InvalidUtf8 {
                    offset: self.base + (s + valid_up_to) as u64,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader yielding fixed chunks.
    struct Chunks(Vec<Vec<u8>>);
    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let c = &mut self.0[0];
            let n = c.len().min(buf.len());
            buf[..n].copy_from_slice(&c[..n]);
            c.drain(..n);
            if c.is_empty() {
                self.0.remove(0);
            }
            Ok(n)
        }
    }

    fn run(
        chunks: Vec<&[u8]>,
        policy: LinePolicy,
        buf: usize,
    ) -> (Vec<String>, Result<(), LineFault>, LineAssembler) {
        let mut r = Chunks(chunks.into_iter().map(<[u8]>::to_vec).collect());
        let mut a = LineAssembler::new(policy, buf);
        let mut out = Vec::new();
        loop {
            match a.read_from(&mut r) {
                Ok(0) => {
                    let res = a.finish(&mut out);
                    return (out, res, a);
                }
                Ok(_) => {
                    if let Err(f) = a.drain(&mut out) {
                        return (out, Err(f), a);
                    }
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn lines_split_across_reads_and_tiny_buffer() {
        let (out, r, _) = run(
            vec![b"hel", b"lo wo", b"rld\r\nsecond\nthi", b"rd"],
            LinePolicy::default(),
            4,
        );
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec!["hello world", "second", "third"]);
    }

    #[test]
    fn overlong_line_is_skipped_with_bounded_buffer() {
        let big = vec![b'x'; 100_000];
        let policy = LinePolicy {
            max_line_bytes: 1000,
            ..LinePolicy::default()
        };
        let mut chunks: Vec<&[u8]> = vec![b"a\n"];
        chunks.extend(big.chunks(777));
        chunks.push(b"\nb\n");
        let (out, r, a) = run(chunks, policy, 256);
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec!["a", "b"]);
        assert_eq!(a.counts.too_long, 1);
        assert!(a.capacity() <= 1001, "buffer grew to {}", a.capacity());
    }

    #[test]
    fn line_of_exactly_the_limit_is_kept() {
        let line = vec![b'y'; 300];
        let mut data = line.clone();
        data.push(b'\n');
        let policy = LinePolicy {
            max_line_bytes: 300,
            ..LinePolicy::default()
        };
        let (out, r, _) = run(vec![&data], policy, 64);
        assert_eq!(r, Ok(()));
        assert_eq!(out, vec!["y".repeat(300)]);
    }

    #[test]
    fn error_policies_report_offsets() {
        let policy = LinePolicy {
            invalid_utf8: InvalidUtf8Policy::Error,
            ..LinePolicy::default()
        };
        let (out, r, _) = run(vec![b"ok\nab\xc3(\n"], policy, 64);
        assert_eq!(out, vec!["ok"]);
        assert_eq!(r, Err(LineFault::InvalidUtf8 { offset: 5 }));

        let policy = LinePolicy {
            max_line_bytes: 3,
            overlong: OverlongPolicy::Error,
            ..LinePolicy::default()
        };
        let (_, r, _) = run(vec![b"abc\n", b"abcdefgh"], policy, 2);
        assert_eq!(
            r,
            Err(LineFault::TooLong {
                offset: 4,
                limit: 3
            })
        );
    }

    #[test]
    fn random_garbage_never_panics_and_matches_whole_split() {
        let mut x = 0x9e37_79b9u32;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for round in 0..200 {
            let len = (next() % 2000) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    let v = next();
                    if v % 7 == 0 {
                        b'\n'
                    } else {
                        (v >> 8) as u8
                    }
                })
                .collect();
            let policy = LinePolicy {
                max_line_bytes: 1 + round % 50,
                ..LinePolicy::default()
            };
            let chunk = 1 + (next() % 97) as usize;
            let (out, r, a) = run(data.chunks(chunk).collect(), policy, 1 + round % 13);
            assert_eq!(r, Ok(()));
            // Ack-mode numbering: every `\n` is one line, kept or dropped.
            let newlines = data.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(a.lines(), newlines, "round {round}");
            let mut expect = Vec::new();
            let mut c = crate::lines::LineCounts::default();
            crate::lines::split_lines(&data, &policy, &mut expect, &mut c).unwrap();
            assert_eq!(out, expect, "round {round}");
        }
    }
}
