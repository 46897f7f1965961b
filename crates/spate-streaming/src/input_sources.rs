//! Built-in input sources (`socket_text_stream`, `text_file_stream`) as an inherent
//! `impl StreamingContext` block on top of [`StreamingContext::receiver_stream`] and
//! [`StreamingContext::replayable_stream`]. The sources themselves live in `spate-sources`
//! (`docs/sources.md`).

use crate::context::StreamingContext;
use crate::dstream::DStream;
use crate::error::Result;
use spate_sources::file::{FileSourceConfig, TextFileSource};
use spate_sources::socket::{SocketConfig, SocketTextReceiver};
use std::path::PathBuf;

impl StreamingContext {
    /// Lines of text from a TCP server at `addr` (`host:port`), received by a
    /// [`SocketTextReceiver`] that connects as a client (Spark's `socketTextStream`, which connects
    /// to `nc -lk <port>`). Default [`SocketConfig`]: 1 MiB lines, invalid UTF-8 replaced with
    /// U+FFFD, overlong lines skipped and counted, reconnect after the context's receiver restart
    /// delay. Records reach batches through the receiver supervisor's block generator (block
    /// interval), in memory (no receiver WAL yet: lines received but not yet processed are lost on a
    /// crash, as Spark without the WAL).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`](crate::StreamingError::AlreadyStarted).
    pub fn socket_text_stream(&self, addr: impl Into<String>) -> Result<DStream<String>> {
        self.socket_text_stream_with(addr, SocketConfig::default())
    }

    /// As [`socket_text_stream`](Self::socket_text_stream) with an explicit configuration (line
    /// policies, read size, restart delay). To read the receiver's counters, build the
    /// [`SocketTextReceiver`] yourself, keep its [`stats`](SocketTextReceiver::stats) and pass it
    /// to [`receiver_stream`](Self::receiver_stream).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`](crate::StreamingError::AlreadyStarted).
    pub fn socket_text_stream_with(
        &self,
        addr: impl Into<String>,
        config: SocketConfig,
    ) -> Result<DStream<String>> {
        self.receiver_stream(SocketTextReceiver::with_config(addr, config))
    }

    /// New text files moved into directory `dir`, as Spark's `textFileStream`: at each batch time
    /// the directory is listed and files are selected by modification time within the remembered
    /// window (60 s minimum), files already present at creation are ignored, hidden and in-progress
    /// names are skipped; the selection (names, sizes, mtimes) is recorded before the batch runs.
    /// See `docs/sources.md` for the exact rules.
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`](crate::StreamingError::AlreadyStarted).
    pub fn text_file_stream(&self, dir: impl Into<PathBuf>) -> Result<DStream<String>> {
        self.text_file_stream_with(dir, FileSourceConfig::new(self.batch_interval()))
    }

    /// As [`text_file_stream`](Self::text_file_stream) with an explicit configuration; its
    /// `batch_interval` is replaced by the context's. "Now" for `new_files_only` is the context
    /// clock's time at this call (Spark: the clock at `FileInputDStream` construction).
    ///
    /// # Errors
    /// [`StreamingError::AlreadyStarted`](crate::StreamingError::AlreadyStarted).
    pub fn text_file_stream_with(
        &self,
        dir: impl Into<PathBuf>,
        config: FileSourceConfig,
    ) -> Result<DStream<String>> {
        self.replayable_stream(self.text_file_source(dir, config))
    }

    /// The [`TextFileSource`] that [`text_file_stream_with`](Self::text_file_stream_with) would
    /// use (batch interval and start time from this context), for callers that want to keep its
    /// [`stats`](TextFileSource::stats) before passing it to
    /// [`replayable_stream`](Self::replayable_stream).
    pub fn text_file_source(
        &self,
        dir: impl Into<PathBuf>,
        config: FileSourceConfig,
    ) -> TextFileSource {
        let config = FileSourceConfig {
            batch_interval: self.batch_interval(),
            ..config
        };
        TextFileSource::with_start_time(dir, config, self.clock().now_ms())
    }
}
