//! Exactly-once outputs: [`TransactionalSink`] (prepare per partition, commit per batch, a
//! sink-side ledger of committed batches) and a file implementation, [`FileTransactionalSink`].
//!
//! Spark's guidance for exactly-once output is "make the output idempotent or transactional, keyed
//! by batch time and partition" and leaves the rest to the user. Here the engine drives the
//! protocol: for batch `T`, if the sink's ledger says `T` is committed (its effect already happened
//! before a crash), the re-run does nothing; otherwise every partition is prepared, then `T` is
//! committed — atomically with its ledger entry, so a crash between prepare and commit leaves no
//! visible effect, and a crash after commit is recognised on the re-run.
//!
//! ## Writing one for a database
//!
//! * Ledger: a table `spate_ledger(sink TEXT, batch_time BIGINT, PRIMARY KEY (sink, batch_time))`.
//! * `prepare(T, p, records)`: insert the records into a staging table keyed by `(T, p)`, replacing
//!   any rows a failed earlier attempt left for `(T, p)` (idempotent).
//! * `commit(T, n)`: in **one transaction**, move the staged rows of `T` into the target tables and
//!   insert `(sink, T)` into the ledger; a unique-key violation on the ledger means another attempt
//!   committed `T` already: roll back and return `Ok`.
//! * `is_committed(T)`: `SELECT 1 FROM spate_ledger WHERE sink = ? AND batch_time = ?`.
//! * Ledger rows older than the checkpoint retention may be deleted: a batch that old is never
//!   re-run.

use crate::batch::Batch;
use crate::dstream::{DStream, Data};
use crate::error::{BoxError, Result};
use crate::output::write_file_atomically;
use spate_types::{BatchTime, OperatorId};
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// A sink whose effect per batch happens exactly once across crashes and re-runs, driven by
/// [`DStream::transactional_output`].
///
/// # Contract
/// * `prepare` may be called several times for the same `(batch, partition)` (retries, re-runs after
///   a crash); it must be idempotent and have no visible effect.
/// * `commit(batch, partitions)` makes every prepared partition of `batch` visible **and** records
///   `batch` in the ledger, atomically. Once it returns `Ok`, `is_committed(batch)` is true forever
///   (or until the ledger entry is older than any batch the engine can re-run).
/// * `is_committed(batch)` answers from the ledger; the engine skips committed batches.
pub trait TransactionalSink<T>: Send + Sync + 'static {
    /// True if `batch` was committed (by this or an earlier process).
    ///
    /// # Errors
    /// The sink's error (the batch fails; nothing is written).
    fn is_committed(&self, batch: BatchTime) -> std::result::Result<bool, BoxError>;

    /// Stages the records of one partition of `batch`, invisibly.
    ///
    /// # Errors
    /// The sink's error (the batch fails before anything is committed).
    fn prepare(
        &self,
        batch: BatchTime,
        partition: u32,
        records: &[T],
    ) -> std::result::Result<(), BoxError>;

    /// Publishes the `partitions` prepared partitions of `batch` and records it in the ledger,
    /// atomically.
    ///
    /// # Errors
    /// The sink's error; the batch fails, and its re-run prepares and commits again.
    fn commit(&self, batch: BatchTime, partitions: u32) -> std::result::Result<(), BoxError>;
}

/// A [`TransactionalSink`] writing each batch as a directory `<dir>/<name>-<batch ms>/` holding one
/// file `part-<p>` per partition (one `Display` line per record), exactly once.
///
/// * `prepare` writes `part-<p>` atomically into `<dir>/_staging/<name>-<batch ms>/`.
/// * `commit` renames the staging directory to `<dir>/<name>-<batch ms>` (one atomic `rename(2)`)
///   and fsyncs `<dir>`: the ledger *is* the set of committed directories, so the data and the ledger
///   entry become visible together.
/// * A re-run of a committed batch is skipped; a crash between prepare and commit leaves only
///   staging files, which the next attempt overwrites.
#[derive(Debug, Clone)]
pub struct FileTransactionalSink {
    dir: PathBuf,
    name: String,
}

impl FileTransactionalSink {
    /// A sink writing under `dir` with batch directories named `<name>-<batch ms>`.
    pub fn new(dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        FileTransactionalSink {
            dir: dir.into(),
            name: name.into(),
        }
    }

    /// The committed directory of `batch`.
    pub fn batch_dir(&self, batch: BatchTime) -> PathBuf {
        self.dir.join(format!("{}-{}", self.name, batch.0))
    }

    fn staging_dir(&self, batch: BatchTime) -> PathBuf {
        self.dir
            .join("_staging")
            .join(format!("{}-{}", self.name, batch.0))
    }

    /// Batches committed so far (the ledger), ascending.
    ///
    /// # Errors
    /// I/O errors listing the directory.
    pub fn committed_batches(&self) -> std::io::Result<Vec<BatchTime>> {
        let mut v = Vec::new();
        let prefix = format!("{}-", self.name);
        match std::fs::read_dir(&self.dir) {
            Ok(rd) => {
                for e in rd {
                    let e = e?;
                    if let Some(t) = e
                        .file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix(&prefix))
                        .and_then(|t| t.parse::<u64>().ok())
                    {
                        v.push(BatchTime(t));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        v.sort_unstable();
        Ok(v)
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl<T: Display + Send + Sync + 'static> TransactionalSink<T> for FileTransactionalSink {
    fn is_committed(&self, batch: BatchTime) -> std::result::Result<bool, BoxError> {
        Ok(self.batch_dir(batch).is_dir())
    }

    fn prepare(
        &self,
        batch: BatchTime,
        partition: u32,
        records: &[T],
    ) -> std::result::Result<(), BoxError> {
        let mut text = String::new();
        for r in records {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        let path = self.staging_dir(batch).join(format!("part-{partition:05}"));
        write_file_atomically(&path, text.as_bytes())?;
        Ok(())
    }

    fn commit(&self, batch: BatchTime, partitions: u32) -> std::result::Result<(), BoxError> {
        let staging = self.staging_dir(batch);
        let target = self.batch_dir(batch);
        if target.is_dir() {
            // Committed by an earlier attempt whose success was not observed.
            return Ok(());
        }
        for p in 0..partitions {
            let part = staging.join(format!("part-{p:05}"));
            if !part.is_file() {
                return Err(format!(
                    "commit of batch {batch}: {} was not prepared",
                    part.display()
                )
                .into());
            }
        }
        std::fs::create_dir_all(&self.dir)?;
        match std::fs::rename(&staging, &target) {
            Ok(()) => {}
            // Committed by an earlier attempt whose success was not observed.
            Err(_) if target.is_dir() => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        sync_dir(&self.dir)?;
        if let Some(parent) = staging.parent() {
            let _ = sync_dir(parent);
        }
        Ok(())
    }
}

impl<T: Data> DStream<T> {
    /// Writes every batch through a [`TransactionalSink`] exactly once: a batch the sink's ledger
    /// already holds is skipped (a re-run after a crash); otherwise each partition is prepared
    /// (partition-parallel on the worker pool), then the batch is committed.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`](crate::StreamingError::AlreadyStarted).
    pub fn transactional_output(&self, sink: impl TransactionalSink<T>) -> Result<OperatorId> {
        self.output("transactional_output", move |t, b: &Batch<T>| {
            if sink.is_committed(t).map_err(|e| e.to_string())? {
                tracing::info!(
                    batch = t.0,
                    "transactional output: batch already committed; skipped"
                );
                return Ok(());
            }
            use rayon::prelude::*;
            let parts: Vec<&[T]> = b.partitions().collect();
            parts
                .par_iter()
                .enumerate()
                .try_for_each(|(p, recs)| {
                    sink.prepare(t, u32::try_from(p).unwrap_or(u32::MAX), recs)
                })
                .map_err(|e| e.to_string())?;
            sink.commit(t, u32::try_from(parts.len()).unwrap_or(u32::MAX))
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_commits_once_and_recognises_its_ledger() {
        let d = tempfile::tempdir().unwrap();
        let s = FileTransactionalSink::new(d.path(), "out");
        let t = BatchTime(1000);
        assert!(!TransactionalSink::<u32>::is_committed(&s, t).unwrap());
        s.prepare(t, 0, &[1u32, 2]).unwrap();
        s.prepare(t, 1, &[3u32]).unwrap();
        // Prepared is invisible.
        assert!(s.committed_batches().unwrap().is_empty());
        // A retried prepare overwrites.
        s.prepare(t, 1, &[4u32]).unwrap();
        TransactionalSink::<u32>::commit(&s, t, 2).unwrap();
        assert!(TransactionalSink::<u32>::is_committed(&s, t).unwrap());
        assert_eq!(s.committed_batches().unwrap(), vec![t]);
        assert_eq!(
            std::fs::read_to_string(s.batch_dir(t).join("part-00001")).unwrap(),
            "4\n"
        );
        // Committing again (an unobserved success) is Ok.
        TransactionalSink::<u32>::commit(&s, t, 2).unwrap();
        // A commit of an unprepared batch fails and publishes nothing.
        assert!(TransactionalSink::<u32>::commit(&s, BatchTime(2000), 1).is_err());
        assert_eq!(s.committed_batches().unwrap(), vec![t]);
    }
}
