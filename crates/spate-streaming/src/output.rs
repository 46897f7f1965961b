//! Output operations: `print`, `foreach_batch`, `save_as_text_files`.

use crate::batch::Batch;
use crate::context::OutputOp;
use crate::dstream::{DStream, Data};
use crate::error::{BoxError, Result, StreamingError};
use crate::graph::{Node, NodeMeta};
use spate_types::{BatchTime, OperatorId};
use std::fmt::{Debug, Display};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Spark's `DStream.print` block for one batch: a line of 43 dashes, `Time: <ms> ms`, dashes, the
/// given lines, `...` if there were more elements, and a blank line.
pub fn format_print(time: BatchTime, lines: &[String], more: bool) -> String {
    const DASHES: &str = "-------------------------------------------";
    let mut s = format!("{DASHES}\nTime: {time}\n{DASHES}\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    if more {
        s.push_str("...\n");
    }
    s.push('\n');
    s
}

/// The output file of a batch: `<prefix>-<batch ms>[.<suffix>]` (Spark's `rddToFileName`).
pub fn output_file_name(prefix: &str, suffix: &str, time: BatchTime) -> String {
    if suffix.is_empty() {
        format!("{prefix}-{}", time.0)
    } else {
        format!("{prefix}-{}.{suffix}", time.0)
    }
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, written and
/// fsynced, renamed over `path`, then the directory fsynced. Once this returns `Ok` the file is
/// durable with exactly `contents`; a crash before leaves the old file (or none), never a torn one.
///
/// # Errors
/// [`StreamingError::OutputIo`] naming the path.
pub fn write_file_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let io = |source| StreamingError::OutputIo {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(io)
}

impl<T: Data> DStream<T> {
    pub(crate) fn output(
        &self,
        kind: &'static str,
        f: impl Fn(BatchTime, &Batch<T>) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> Result<OperatorId> {
        let slide = self.slide();
        let input = self.id();
        let node: Arc<Node<()>> = self.ctx.register::<()>(kind, |id| {
            let mut m = NodeMeta::new(id, kind, vec![input], slide, std::any::type_name::<T>());
            m.is_output = true;
            (m, Box::new(|_| Ok(None)))
        })?;
        let parent = Arc::clone(&self.node);
        let id = node.meta.id;
        self.ctx.register_output(OutputOp {
            meta: node,
            run: Box::new(move |t| match parent.get_or_compute(t) {
                Ok(Some(b)) => f(t, &b),
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            }),
        });
        Ok(id)
    }

    /// Runs `f` on every batch (Spark's `foreachRDD`), on the job thread with the worker pool
    /// installed (rayon calls inside run on it). A panic fails the batch (reported by
    /// `await_termination`), it does not crash the engine.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn foreach_batch(
        &self,
        f: impl Fn(BatchTime, &Batch<T>) + Send + Sync + 'static,
    ) -> Result<OperatorId> {
        self.output("foreach_batch", move |t, b| {
            f(t, b);
            Ok(())
        })
    }

    /// As [`foreach_batch`](Self::foreach_batch) with a fallible function: an `Err` fails the
    /// batch (Spark's job failure).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn try_foreach_batch(
        &self,
        f: impl Fn(BatchTime, &Batch<T>) -> std::result::Result<(), BoxError> + Send + Sync + 'static,
    ) -> Result<OperatorId> {
        self.output("foreach_batch", move |t, b| {
            f(t, b).map_err(|e| e.to_string())
        })
    }

    /// Prints the first `n` elements of every batch to stdout in Spark's format (see
    /// [`format_print`]), rendered with `Debug`.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn print(&self, n: usize) -> Result<OperatorId>
    where
        T: Debug,
    {
        self.print_with(n, |x| format!("{x:?}"))
    }

    /// As [`print`](Self::print) with a custom element formatter.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn print_with(
        &self,
        n: usize,
        fmt: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Result<OperatorId> {
        self.output("print", move |t, b| {
            let lines: Vec<String> = b.iter().take(n).map(&fmt).collect();
            let more = b.len() > n;
            let text = format_print(t, &lines, more);
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| format!("writing to stdout: {e}"))
        })
    }

    /// Writes every batch to `<prefix>-<batch ms>[.<suffix>]`, one element per line rendered with
    /// `Display`, in partition order, atomically (see [`write_file_atomically`]); a re-run of the
    /// batch overwrites the file with the same contents (Spark's `saveAsTextFiles`, idempotent by
    /// name).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn save_as_text_files(
        &self,
        prefix: impl Into<String>,
        suffix: impl Into<String>,
    ) -> Result<OperatorId>
    where
        T: Display,
    {
        self.save_as_text_files_with(prefix, suffix, |x| x.to_string())
    }

    /// As [`save_as_text_files`](Self::save_as_text_files) with a custom line formatter.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`].
    pub fn save_as_text_files_with(
        &self,
        prefix: impl Into<String>,
        suffix: impl Into<String>,
        fmt: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Result<OperatorId> {
        let (prefix, suffix) = (prefix.into(), suffix.into());
        self.output("save_as_text_files", move |t, b| {
            let mut text = String::new();
            for x in b.iter() {
                text.push_str(&fmt(x));
                text.push('\n');
            }
            let path = PathBuf::from(output_file_name(&prefix, &suffix, t));
            write_file_atomically(&path, text.as_bytes()).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_format_is_sparks() {
        let s = format_print(BatchTime(2000), &["(a, 1)".into(), "(b, 2)".into()], true);
        assert_eq!(
            s,
            "-------------------------------------------\nTime: 2000 ms\n-------------------------------------------\n(a, 1)\n(b, 2)\n...\n\n"
        );
        assert_eq!(format_print(BatchTime(1), &[], false).lines().count(), 4);
    }

    #[test]
    fn file_names_and_atomic_overwrite() {
        assert_eq!(
            output_file_name("out/c", "txt", BatchTime(5)),
            "out/c-5.txt"
        );
        assert_eq!(output_file_name("c", "", BatchTime(5)), "c-5");
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/x-1.txt");
        write_file_atomically(&p, b"one\n").unwrap();
        write_file_atomically(&p, b"two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp files left behind");
        // A path under a regular file cannot be created: a typed error naming the path.
        let bad = p.join("nested.txt");
        assert!(
            matches!(write_file_atomically(&bad, b"x"), Err(StreamingError::OutputIo { path, .. }) if path == bad)
        );
    }
}
