//! Restart reports: one JSON object per recovery attempt under `restart-reports/`, never garbage.

use crate::error::{CheckpointError, Result};
use crate::paths::{CheckpointPaths, ParsedName, RESTART_REPORTS};
use crate::store::CheckpointStore;
use bytes::Bytes;
use spate_types::Generation;

impl CheckpointStore {
    /// Stores a restart report as `restart-reports/<time_ms:020>-<generation:020>.json`
    /// ([`CheckpointPaths::restart_report`]) and returns that object name. The engine writes one per
    /// recovery attempt (`get_or_create`); `spate checkpoint reports` lists them.
    ///
    /// `time_ms` is the wall-clock time of the attempt (ms since the Unix epoch), `generation` the
    /// generation the caller records in the name (recovery passes the restored checkpoint's, 0 for
    /// none); names sort by time, then generation. The bytes are stored as given
    /// (plain JSON, no envelope, so `cat` works); a second report with the same name overwrites the
    /// first. Restart reports are never chosen by resolve, never deleted by GC and kept in place by
    /// [`CheckpointStore::archive`].
    ///
    /// # Durability
    /// On `Ok`, the report is durable (fsynced file and directory on local disk; an acknowledged PUT
    /// on S3).
    ///
    /// # Errors
    /// [`CheckpointError::InvalidArgument`] if `json` is not valid JSON; request errors.
    pub async fn put_restart_report(
        &self,
        time_ms: u64,
        generation: Generation,
        json: Bytes,
    ) -> Result<String> {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&json) {
            return Err(CheckpointError::InvalidArgument(format!(
                "restart report is not valid JSON: {e}"
            )));
        }
        let rel = CheckpointPaths::restart_report(time_ms, generation);
        self.put_overwrite(&rel, json).await?;
        Ok(rel)
    }

    /// Names of every restart report (`restart-reports/...`), **oldest first** (ascending name =
    /// ascending `(time, generation)`). Names under `restart-reports/` that do not parse are not
    /// included (they are "unknown" objects).
    ///
    /// # Errors
    /// Request errors.
    pub async fn list_restart_reports(&self) -> Result<Vec<String>> {
        let listed = self.list_raw(Some(RESTART_REPORTS)).await?;
        Ok(listed
            .into_iter()
            .filter(|o| {
                matches!(
                    CheckpointPaths::parse(&o.path),
                    ParsedName::RestartReport { .. }
                )
            })
            .map(|o| o.path)
            .collect())
    }

    /// Reads one restart report (a name from [`CheckpointStore::list_restart_reports`]) and returns
    /// its bytes as stored.
    ///
    /// # Errors
    /// [`CheckpointError::InvalidArgument`] if `name` is not a restart-report name,
    /// [`CheckpointError::NotFound`] if it does not exist, request errors.
    pub async fn read_restart_report(&self, name: &str) -> Result<Bytes> {
        if !matches!(
            CheckpointPaths::parse(name),
            ParsedName::RestartReport { .. }
        ) {
            return Err(CheckpointError::InvalidArgument(format!(
                "{name:?} is not a restart report name (restart-reports/<time:020>-<generation:020>.json)"
            )));
        }
        self.get_opt(name)
            .await?
            .ok_or_else(|| CheckpointError::NotFound {
                object: name.to_owned(),
            })
    }
}
