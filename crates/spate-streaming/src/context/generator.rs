//! The job generator (Spark's `JobGenerator`): a timer on the [`spate_io::Clock`] that, at each
//! batch time, fixes the batch's input (DESIGN.md §4 step 2), records it as generated (step 3) and
//! hands its jobs to the scheduler; after a restart it first runs the rescheduled batches.

use super::*;

impl Inner {
    pub(super) fn run_generator(self: Arc<Self>, start: BatchTime, jobs_tx: &Sender<JobSet>) {
        let batch = self.config.batch_interval;
        let rescheduled = std::mem::take(&mut *self.reschedule.lock());
        for t in rescheduled {
            if self.gen_stop_now.load(Ordering::Acquire) {
                return;
            }
            self.generate_batch(t, jobs_tx, true);
        }
        let mut next = start;
        loop {
            loop {
                if self.gen_stop_now.load(Ordering::Acquire) {
                    return;
                }
                if self.clock.wait_till_timeout(next.0, POLL).is_some() {
                    break;
                }
            }
            if self.gen_stop_now.load(Ordering::Acquire) {
                return;
            }
            let last = self.gen_stop_after_tick.load(Ordering::Acquire);
            self.generate_batch(next, jobs_tx, false);
            if last {
                self.gen_stop_time.store(next.0, Ordering::Release);
                return;
            }
            next = next.plus(batch);
        }
    }

    /// Spark's `JobGenerator.generateJobs(time)`: allocate blocks, fix every input, create the jobs.
    /// `rescheduled`: a batch a restart runs before the timer resumes.
    pub(super) fn generate_batch(&self, t: BatchTime, jobs_tx: &Sender<JobSet>, rescheduled: bool) {
        let allocated = match self.allocate(t) {
            Ok(n) => n,
            Err(e) => {
                // The allocation was not logged, so it was not applied (SPARK-23991): the blocks
                // stay unallocated for the next batch.
                self.record_failure(e);
                self.mark_processed(t);
                return;
            }
        };
        let (inputs, outputs) = {
            let g = self.graph.lock();
            (g.inputs.clone(), g.outputs.clone())
        };
        let mut records = allocated;
        for i in &inputs {
            match i.generate(t, self.checkpointer.as_deref()) {
                Ok(n) => records += n,
                Err(e) => {
                    // Spark: a job-generation failure is reported and the batch gets no jobs.
                    self.record_failure(e);
                    self.mark_processed(t);
                    return;
                }
            }
        }
        self.batch_records.lock().insert(t, records);
        if let Some(d) = &self.checkpointer {
            // DESIGN.md §4 step 3: metadata checkpoint "T generated", written off this thread.
            if let Err(e) = self
                .manifest_inputs()
                .and_then(|inputs| d.on_generated(t, inputs))
            {
                self.record_failure(e);
            }
        }
        let jobs: Vec<Arc<OutputOp>> = outputs
            .into_iter()
            .filter(|o| o.meta.meta.is_time_valid(t))
            .collect();
        let info = BatchInfo {
            batch_time: t,
            num_records: records,
            submission_time_ms: self.clock.now_ms(),
            processing_start_ms: None,
            processing_end_ms: None,
            output_operations: Vec::new(),
            rescheduled,
            recovery: None,
        };
        self.bus.post(Event::BatchSubmitted(info.clone()));
        let _ = jobs_tx.send(JobSet {
            time: t,
            info,
            jobs,
        });
    }

    /// DESIGN.md §4 step 2: allocates unallocated blocks to `t`, logging the allocation to the WAL
    /// first when receivers write to it. Returns the records allocated.
    pub(super) fn allocate(&self, t: BatchTime) -> Result<u64> {
        self.tracker.with_locked(|tr| {
            if let Some(e) = tr.plan_allocation(t) {
                if let Some(d) = self.checkpointer.as_ref().filter(|d| d.logs_allocations()) {
                    d.on_allocated(t, &e)?;
                }
                tr.apply(&e);
            }
            Ok(tr.blocks_of_batch(t).num_records())
        })
    }
}
