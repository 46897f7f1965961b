//! A minimal receiver harness for **unit tests of receivers** (yours and ours), beside the real
//! end-to-end tests through the engine's supervisor.
//!
//! [`CollectingSink`] keeps every stored record in memory; [`Harness`] plays the supervisor's part:
//! `on_start`, and on a `restart` request `on_stop`, the delay, `on_start` again — as Spark's
//! `ReceiverSupervisor.restartReceiver`. It has no block generator, no WAL and no rate limit.

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

/// Runs a receiver against a [`CollectingSink`], honouring restart requests.
#[derive(Debug)]
pub struct Harness<T> {
    sink: Arc<CollectingSink<T>>,
    thread: Option<JoinHandle<()>>,
    stop_tx: mpsc::Sender<Option<Duration>>,
}

impl<T: Send + 'static> Harness<T> {
    /// Starts `receiver`; restart requests without a delay wait `default_delay`.
    pub fn start<R: Receiver<T>>(mut receiver: R, default_delay: Duration) -> Self {
        let sink: Arc<CollectingSink<T>> = Arc::new(CollectingSink::default());
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
