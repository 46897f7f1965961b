//! A minimal receiver harness for **unit tests of receivers** (yours and ours), beside the real
//! end-to-end tests through the engine's supervisor.
//!
//! [`CollectingSink`] keeps every stored record in memory; [`Harness`] plays the supervisor's part:
//! `on_start`, and on a `restart` request `on_stop`, the delay, `on_start` again — as Spark's
//! `ReceiverSupervisor.restartReceiver`. It has no block generator, no WAL and no rate limit.
//!
//! For sequence-numbered (reliable) receivers the sink also plays the engine's position contract:
//! [`CollectingSink::set_durable_position`] is what
//! [`ReceiverSink::durable_position`] returns (a "recovered" position), every position passed to
//! `store_many_at` is recorded ([`CollectingSink::positions`]), and faults can be scripted: a store
//! that fails ([`CollectingSink::fail_store_at`]) or a crash right after a store became durable
//! ([`CollectingSink::crash_after_store_at`]). To simulate a process restart, start a new
//! [`Harness`] with [`Harness::start_with_sink`] and a fresh sink whose durable position is the
//! old sink's [`CollectingSink::last_position`].

use crate::receiver::{Receiver, ReceiverContext, ReceiverSink, StoreError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A [`ReceiverSink`] that collects records, restart requests and reported errors.
#[derive(Debug)]
pub struct CollectingSink<T> {
    items: Mutex<Vec<T>>,
    calls: AtomicU64,
    errors: Mutex<Vec<String>>,
    restarts: Mutex<Vec<String>>,
    stopped: AtomicBool,
    restart_tx: Mutex<Option<mpsc::Sender<Option<Duration>>>>,
    positions: Mutex<Vec<u64>>,
    durable: Mutex<Option<u64>>,
    faults: Mutex<Faults>,
}

/// Scripted store faults (one-shot each).
#[derive(Debug, Default)]
struct Faults {
    fail_at: Option<u64>,
    crash_at: Option<u64>,
    failed: u64,
}

impl<T> Default for CollectingSink<T> {
    fn default() -> Self {
        CollectingSink {
            items: Mutex::new(Vec::new()),
            calls: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            restarts: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
            restart_tx: Mutex::new(None),
            positions: Mutex::new(Vec::new()),
            durable: Mutex::new(None),
            faults: Mutex::new(Faults::default()),
        }
    }
}

fn lock<X>(m: &Mutex<X>) -> std::sync::MutexGuard<'_, X> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: Clone> CollectingSink<T> {
    /// A copy of every record stored so far, in store order.
    pub fn items(&self) -> Vec<T> {
        lock(&self.items).clone()
    }
}

impl<T> CollectingSink<T> {
    /// Number of records stored so far.
    pub fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// True if nothing was stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of `store_many` calls.
    pub fn store_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Reasons of the restart requests so far.
    pub fn restarts(&self) -> Vec<String> {
        lock(&self.restarts).clone()
    }

    /// Errors reported so far.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.errors).clone()
    }

    /// Asserts that some restart reason contains `needle` (the reasons in the panic message).
    ///
    /// # Panics
    /// If none does.
    #[track_caller]
    pub fn assert_restarted_with(&self, needle: &str) {
        assert_mentions("restart reason", &self.restarts(), needle);
    }

    /// Asserts that some reported error contains `needle` (the errors in the panic message).
    ///
    /// # Panics
    /// If none does.
    #[track_caller]
    pub fn assert_error_with(&self, needle: &str) {
        assert_mentions("error", &self.errors(), needle);
    }

    /// Sets what [`ReceiverSink::durable_position`] returns (as if the engine had recovered this
    /// position from its WAL); `None` (the default) is a fresh start.
    pub fn set_durable_position(&self, position: Option<u64>) {
        *lock(&self.durable) = position;
    }

    /// The positions of the successful `store_many_at` calls, in call order.
    pub fn positions(&self) -> Vec<u64> {
        lock(&self.positions).clone()
    }

    /// The position of the last successful `store_many_at` call (what the engine would recover
    /// after a crash of this "process"), or `None` if there was none.
    pub fn last_position(&self) -> Option<u64> {
        lock(&self.positions).last().copied()
    }

    /// Makes the first `store_many_at` call whose position is at least `position` fail with
    /// [`StoreError::Failed`] (nothing stored, records handed back), once.
    pub fn fail_store_at(&self, position: u64) {
        lock(&self.faults).fail_at = Some(position);
    }

    /// Simulates a `kill -9` right after a store became durable: the first `store_many_at` call
    /// whose position is at least `position` stores its records and position, then the sink
    /// behaves as a dead process: that call returns [`StoreError::Stopped`] with no records (so the
    /// receiver cannot acknowledge them), [`is_stopped`](ReceiverSink::is_stopped) becomes true and
    /// every later store is refused.
    pub fn crash_after_store_at(&self, position: u64) {
        lock(&self.faults).crash_at = Some(position);
    }

    /// Number of stores failed by [`fail_store_at`](Self::fail_store_at) so far.
    pub fn failed_stores(&self) -> u64 {
        lock(&self.faults).failed
    }

    /// Waits until `pred(len)` holds or `timeout` passes; returns whether it held.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if pred(self) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        pred(self)
    }
}

impl<T: Send> ReceiverSink<T> for CollectingSink<T> {
    fn store_many(&self, items: Vec<T>) -> Result<(), StoreError<T>> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(StoreError::Stopped(items));
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        lock(&self.items).extend(items);
        Ok(())
    }

    fn store_many_at(&self, items: Vec<T>, position: u64) -> Result<(), StoreError<T>> {
        if self.stopped.load(Ordering::SeqCst) {
            return Err(StoreError::Stopped(items));
        }
        let mut faults = lock(&self.faults);
        if faults.fail_at.is_some_and(|p| position >= p) {
            faults.fail_at = None;
            faults.failed += 1;
            return Err(StoreError::Failed {
                items,
                reason: format!("scripted failure at position {position}"),
            });
        }
        let crash = faults.crash_at.is_some_and(|p| position >= p);
        if crash {
            faults.crash_at = None;
        }
        drop(faults);
        {
            // Items and position are recorded together, as one WAL block.
            let mut stored = lock(&self.items);
            let mut positions = lock(&self.positions);
            if positions.last().is_some_and(|&last| position < last) {
                self.errors_push(format!(
                    "store_many_at position went backwards: {position} after {:?}",
                    positions.last()
                ));
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            stored.extend(items);
            positions.push(position);
        }
        if crash {
            self.stopped.store(true, Ordering::SeqCst);
            return Err(StoreError::Stopped(Vec::new()));
        }
        Ok(())
    }

    fn durable_position(&self) -> Option<u64> {
        *lock(&self.durable)
    }

    fn restart(&self, reason: &str, delay: Option<Duration>) {
        lock(&self.restarts).push(reason.to_owned());
        if let Some(tx) = lock(&self.restart_tx).as_ref() {
            let _ = tx.send(delay);
        }
    }

    fn report_error(&self, message: &str) {
        lock(&self.errors).push(message.to_owned());
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

impl<T> CollectingSink<T> {
    fn errors_push(&self, message: String) {
        lock(&self.errors).push(message);
    }
}

/// Runs a receiver against a [`CollectingSink`], honouring restart requests.
#[derive(Debug)]
pub struct Harness<T> {
    sink: Arc<CollectingSink<T>>,
    thread: Option<JoinHandle<()>>,
    stop_tx: mpsc::Sender<Option<Duration>>,
}

impl<T: Send + 'static> Harness<T> {
    /// Starts `receiver`; restart requests without a delay wait `default_delay`.
    pub fn start<R: Receiver<T>>(receiver: R, default_delay: Duration) -> Self {
        Self::start_with_sink(receiver, Arc::new(CollectingSink::default()), default_delay)
    }

    /// As [`start`](Self::start), storing into `sink` (for example one with a durable position or
    /// scripted faults). Use a fresh sink per harness: stopping the harness stops its sink.
    pub fn start_with_sink<R: Receiver<T>>(
        mut receiver: R,
        sink: Arc<CollectingSink<T>>,
        default_delay: Duration,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Option<Duration>>();
        *lock(&sink.restart_tx) = Some(tx.clone());
        let ctx = ReceiverContext::new(Arc::clone(&sink) as Arc<dyn ReceiverSink<T>>);
        let s2 = Arc::clone(&sink);
        let thread = std::thread::spawn(move || {
            if let Err(e) = receiver.on_start(ctx.clone()) {
                s2.report_error(&e.to_string());
            }
            while let Ok(delay) = rx.recv() {
                if s2.is_stopped() {
                    break;
                }
                receiver.on_stop();
                std::thread::sleep(delay.unwrap_or(default_delay));
                if s2.is_stopped() {
                    break;
                }
                if let Err(e) = receiver.on_start(ctx.clone()) {
                    s2.report_error(&e.to_string());
                }
            }
            receiver.on_stop();
        });
        Harness {
            sink,
            thread: Some(thread),
            stop_tx: tx,
        }
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<CollectingSink<T>> {
        &self.sink
    }

    /// Stops the receiver (`on_stop`) and waits for it.
    pub fn stop(mut self) -> Arc<CollectingSink<T>> {
        self.shutdown();
        Arc::clone(&self.sink)
    }

    fn shutdown(&mut self) {
        self.sink.stopped.store(true, Ordering::SeqCst);
        let _ = self.stop_tx.send(None);
        *lock(&self.sink.restart_tx) = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<T> Drop for Harness<T> {
    fn drop(&mut self) {
        self.sink.stopped.store(true, Ordering::SeqCst);
        let _ = self.stop_tx.send(None);
        *lock(&self.sink.restart_tx) = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Panics unless one of `texts` contains `needle`.
#[track_caller]
fn assert_mentions(what: &str, texts: &[String], needle: &str) {
    assert!(
        texts.iter().any(|x| x.contains(needle)),
        "no {what} with {needle:?}: {texts:?}"
    );
}
