//! The job scheduler (Spark's `JobScheduler`): runs each batch's jobs (DESIGN.md §4 step 4) on the
//! worker pool, then executes the completion plan of [`crate::plan::plan_completion`] (steps 5–7).

use super::*;

impl Inner {
    pub(super) fn run_job_set(&self, js: JobSet) {
        if self.gen_stop_now.load(Ordering::Acquire) {
            // Non-graceful stop: queued batches are dropped.
            return;
        }
        let JobSet {
            time,
            mut info,
            jobs,
        } = js;
        info.processing_start_ms = Some(self.clock.now_ms());
        self.bus.post(Event::BatchStarted(info.clone()));
        for op in &jobs {
            let meta = &op.meta.meta;
            let description = meta.kind_and_name();
            let mut oi = OutputOperationInfo {
                batch_time: time,
                operator: meta.id,
                description,
                start_ms: self.clock.now_ms(),
                end_ms: None,
                failure: None,
            };
            self.bus.post(Event::OutputStarted(oi.clone()));
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                spate_types::spate_fail!("engine::job::run::before", |a| Err(
                    spate_types::failpoints::message("engine::job::run::before", &a)
                ));
                let r = self.pool.install(|| (op.run)(time));
                spate_types::spate_fail!("engine::job::run::after", |a| Err(
                    spate_types::failpoints::message("engine::job::run::after", &a)
                ));
                r
            }));
            let failure = match res {
                Ok(Ok(())) => None,
                Ok(Err(m)) => Some(m),
                Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
            };
            if let Some(m) = &failure {
                self.record_failure(StreamingError::JobFailed {
                    time,
                    operator: meta.id,
                    kind: meta.kind.to_owned(),
                    message: m.clone(),
                });
            }
            oi.end_ms = Some(self.clock.now_ms());
            oi.failure = failure;
            self.bus.post(Event::OutputCompleted(oi.clone()));
            info.output_operations.push(oi);
        }
        info.num_records = self
            .batch_records
            .lock()
            .remove(&time)
            .unwrap_or(info.num_records);
        info.processing_end_ms = Some(self.clock.now_ms());
        info.recovery = self.recovery_estimate(time, info.processing_delay_ms());
        self.bus.post(Event::BatchCompleted(info));
        self.commit_completion(time);
        self.mark_processed(time);
    }

    /// Updates the mean processing time with `processed_ms` and estimates what a crash at the
    /// completion of `t` (before its commit) would replay; `None` without checkpointing.
    fn recovery_estimate(
        &self,
        t: BatchTime,
        processed_ms: Option<u64>,
    ) -> Option<crate::listener::RecoveryEstimate> {
        let d = self.checkpointer.as_ref()?;
        let mean = {
            let mut m = self.mean_processing_ms.lock();
            if let Some(p) = processed_ms {
                // Processing times are far below 2^52 ms: exact.
                #[allow(clippy::cast_precision_loss)]
                let p = p as f64;
                *m = Some(m.map_or(p, |old| 0.8 * old + 0.2 * p));
            }
            *m
        };
        let state_ops = self.graph.lock().state_ops.clone();
        let chains: Vec<_> = d
            .op_facts(&state_ops)
            .into_iter()
            .map(|o| o.chain)
            .collect();
        let (batches, ms) = crate::plan::replay_estimate(
            t,
            d.pending_len(),
            &chains,
            BatchTime(self.zero_time.load(Ordering::Acquire)),
            self.config.batch_interval,
            mean,
        );
        // Rounded to whole ms; a negative or huge estimate saturates.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let millis = ms.map(|s| s.round() as u64);
        Some(crate::listener::RecoveryEstimate { batches, millis })
    }

    /// Source positions of every input (for a manifest).
    pub(crate) fn source_positions(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let inputs = self.graph.lock().inputs.clone();
        let mut m = BTreeMap::new();
        for i in &inputs {
            m.extend(i.checkpoint_state()?);
        }
        Ok(m)
    }

    /// What every manifest records besides the commit state.
    pub(crate) fn manifest_inputs(&self) -> Result<ManifestInputs> {
        Ok(ManifestInputs {
            zero: BatchTime(self.zero_time.load(Ordering::Acquire)),
            batch: self.config.batch_interval,
            positions: self.source_positions()?,
        })
    }

    /// Spark's `ClearMetadata(time)`: forget old batches, old allocations and their blocks. With
    /// checkpointing, allocations, blocks and WAL segments are dropped only once the completion
    /// checkpoint of `t` is durable (Spark's `ClearCheckpointData`; DESIGN.md §4 steps 5–7): the
    /// decisions are [`plan_completion`]'s, this executes them.
    pub(super) fn commit_completion(&self, t: BatchTime) {
        let (nodes, state_ops) = {
            let g = self.graph.lock();
            (g.nodes.clone(), g.state_ops.clone())
        };
        let mut max_remember = 0;
        for n in &nodes {
            n.clear_metadata(t);
            max_remember = max_remember.max(n.meta().remember.load(Ordering::Acquire));
        }
        let (oldest_pending, catch_up) = self
            .checkpointer
            .as_ref()
            .map_or((None, false), |d| d.on_jobs_done(t));
        let ops = match &self.checkpointer {
            Some(d) => d.op_facts(&state_ops),
            None => Vec::new(),
        };
        let plan = plan_completion(
            t,
            &CompletionFacts {
                zero: BatchTime(self.zero_time.load(Ordering::Acquire)),
                batch: self.config.batch_interval,
                max_remember,
                checkpointing: self.checkpointer.is_some(),
                oldest_pending,
                snapshot_every: self.config.state_snapshot_every,
                ops: &ops,
                catch_up,
                since_data_checkpoint_ms: self
                    .checkpointer
                    .as_ref()
                    .and_then(|d| d.since_data_checkpoint_ms()),
                max_recovery_batches: self.config.max_recovery_batches,
            },
        );
        let before = plan.cleanup_before;
        let r = match (&self.checkpointer, plan.commit) {
            (Some(d), CompletionCommit::Completed) => self
                .manifest_inputs()
                .and_then(|inputs| d.on_completed(t, inputs, before)),
            (Some(d), CompletionCommit::Data) => {
                let due: Vec<_> = plan
                    .due_ops
                    .iter()
                    .map(|o| (Arc::clone(&state_ops[o.index]), o.snapshot_or_delta))
                    .collect();
                self.manifest_inputs()
                    .and_then(|inputs| d.on_data_checkpoint(t, inputs, &due))
                    .map(|()| self.after_completed(before))
            }
            (_, CompletionCommit::None) | (None, _) => {
                let inputs = self.graph.lock().inputs.clone();
                let (_, removed) = self
                    .tracker
                    .with_locked(|tr| tr.cleanup_old_batches(before));
                for i in &inputs {
                    i.clear(before, &removed);
                }
                Ok(())
            }
        };
        if let Err(e) = r {
            self.record_failure(e);
        }
    }

    /// The state backends' home, from the configuration (sled: rebuilt empty, the checkpoint is the
    /// source of truth).
    pub(crate) fn state_source(&self) -> Result<crate::state::BackendSource> {
        match self.config.state_backend {
            crate::config::StateBackendKind::Memory => Ok(crate::state::BackendSource::Memory),
            crate::config::StateBackendKind::Sled => {
                let dir = match (&self.config.state_dir, &self.config.checkpoint) {
                    (Some(d), _) => d.clone(),
                    (None, Some(url)) => crate::checkpointer::local_dir(url)
                        .map(|d| d.join("state"))
                        .ok_or_else(|| {
                            StreamingError::Config(crate::config::ConfigError::InvalidValue {
                                key: "state_dir".into(),
                                value: String::new(),
                                reason: "the sled state backend needs a local directory: set \
                                         state_dir (the checkpoint is not on local disk)"
                                    .into(),
                            })
                        })?,
                    (None, None) => std::path::PathBuf::from("spate-state"),
                };
                let store = spate_state::SledStore::open_fresh(&dir).map_err(|source| {
                    StreamingError::State {
                        operator: OperatorId(u32::MAX),
                        source,
                    }
                })?;
                Ok(crate::state::BackendSource::Sled(Arc::new(store)))
            }
        }
    }

    /// Clears inputs after a durable completion checkpoint (called by the waiter thread).
    pub(super) fn after_completed(&self, before: BatchTime) {
        let Some(d) = &self.checkpointer else { return };
        match d.on_completion_durable(&self.tracker, before) {
            Ok(removed) => {
                let inputs = self.graph.lock().inputs.clone();
                for i in &inputs {
                    i.clear(before, &removed);
                }
            }
            Err(e) => self.record_failure(e),
        }
    }

    pub(super) fn mark_processed(&self, t: BatchTime) {
        let mut p = self.progress.lock();
        p.processed.insert(t);
        while p.processed.len() > 1024 {
            p.processed.pop_first();
        }
        if p.last_processed.is_none_or(|l| t > l) {
            p.last_processed = Some(t);
        }
        self.progress_cv.notify_all();
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
