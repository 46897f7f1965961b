//! The received-block tracker (Spark's `ReceivedBlockTracker`) and the block-store seam
//! ([`BlockHandler`], Spark's `ReceivedBlockHandler`).
//!
//! The tracker is a pure state machine over [`TrackerEvent`]s: `BlockAdded`, `BatchAllocated`,
//! `BatchCleanup` (DESIGN.md §4 steps 1–2, 7). The checkpointer writes each event to the WAL
//! *before* applying it and replays the events on restart; the in-memory engine applies them
//! directly.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use spate_types::{BatchTime, BlockId, ReceiverId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;

/// Metadata of one stored block (Spark's `ReceivedBlockInfo`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceivedBlockInfo {
    /// The block.
    pub block: BlockId,
    /// Records in the block.
    pub num_records: u64,
    /// Where the block handler stored it (e.g. a WAL record handle); empty for the memory store.
    pub handle: Vec<u8>,
}

/// The blocks allocated to one batch, per receiver (Spark's `AllocatedBlocks`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedBlocks {
    /// Blocks per receiver, in arrival order.
    pub blocks: BTreeMap<ReceiverId, Vec<ReceivedBlockInfo>>,
}

impl AllocatedBlocks {
    /// Total records over all receivers.
    pub fn num_records(&self) -> u64 {
        self.blocks
            .values()
            .flat_map(|v| v.iter())
            .map(|b| b.num_records)
            .sum()
    }
}

/// A tracker state transition (Spark's `BlockAdditionEvent`, `BatchAllocationEvent`,
/// `BatchCleanupEvent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum TrackerEvent {
    /// A block was stored and awaits allocation.
    BlockAdded(ReceivedBlockInfo),
    /// All unallocated blocks were allocated to a batch.
    BatchAllocated {
        /// The batch.
        time: BatchTime,
        /// Its blocks.
        blocks: AllocatedBlocks,
    },
    /// Allocations of these batches were dropped.
    BatchCleanup {
        /// The batches.
        times: Vec<BatchTime>,
    },
}

/// The received-block tracker: unallocated blocks per receiver, and allocations per batch.
#[derive(Debug, Default)]
pub struct ReceivedBlockTracker {
    unallocated: BTreeMap<ReceiverId, VecDeque<ReceivedBlockInfo>>,
    allocated: BTreeMap<BatchTime, AllocatedBlocks>,
    last_allocated: Option<BatchTime>,
}

/// The context's block tracker, shared by the job generator (allocation), the completion commit
/// (cleanup), recovery (replay) and each receiver's supervisor and input stream. Callers say what
/// they do; [`SharedTracker::with_locked`] is for the steps that log to the WAL under the lock.
#[derive(Clone, Default)]
pub(crate) struct SharedTracker {
    tracker: std::sync::Arc<Mutex<ReceivedBlockTracker>>,
}

impl SharedTracker {
    /// An empty tracker.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds a stored block (DESIGN.md §4 step 1).
    pub(crate) fn add_block(&self, info: ReceivedBlockInfo) -> TrackerEvent {
        self.tracker.lock().add_block(info)
    }

    /// The blocks allocated to batch `time`.
    pub(crate) fn blocks_of_batch(&self, time: BatchTime) -> AllocatedBlocks {
        self.tracker.lock().blocks_of_batch(time)
    }

    /// True while some stored block is not allocated to a batch yet.
    pub(crate) fn has_unallocated_blocks(&self) -> bool {
        self.tracker.lock().has_unallocated_blocks()
    }

    /// Runs `f` with the tracker locked: allocation and cleanup decide, log to the WAL and apply
    /// their event as one step.
    pub(crate) fn with_locked<R>(&self, f: impl FnOnce(&mut ReceivedBlockTracker) -> R) -> R {
        f(&mut self.tracker.lock())
    }
}

impl ReceivedBlockTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an event (used directly and for WAL replay).
    pub fn apply(&mut self, event: &TrackerEvent) {
        match event {
            TrackerEvent::BlockAdded(info) => self
                .unallocated
                .entry(info.block.receiver)
                .or_default()
                .push_back(info.clone()),
            TrackerEvent::BatchAllocated { time, blocks } => {
                for (r, bs) in &blocks.blocks {
                    if let Some(q) = self.unallocated.get_mut(r) {
                        q.retain(|b| !bs.contains(b));
                    }
                }
                self.allocated.insert(*time, blocks.clone());
                if self.last_allocated.is_none_or(|l| *time > l) {
                    self.last_allocated = Some(*time);
                }
            }
            TrackerEvent::BatchCleanup { times } => {
                for t in times {
                    self.allocated.remove(t);
                }
            }
        }
    }

    /// Records a stored block.
    pub fn add_block(&mut self, info: ReceivedBlockInfo) -> TrackerEvent {
        let e = TrackerEvent::BlockAdded(info);
        self.apply(&e);
        e
    }

    /// Allocates every unallocated block to batch `time` (Spark's `allocateBlocksToBatch`).
    /// Idempotent: a time at or before the last allocated one is not allocated again (returns
    /// `None`), so re-generating a batch after recovery reuses its recorded blocks.
    pub fn allocate_blocks_to_batch(&mut self, time: BatchTime) -> Option<TrackerEvent> {
        let e = self.plan_allocation(time)?;
        self.apply(&e);
        Some(e)
    }

    /// The allocation event [`allocate_blocks_to_batch`](Self::allocate_blocks_to_batch) would
    /// apply, without applying it: the write-ahead path logs it first and applies it only once the
    /// log write succeeded (Spark's SPARK-23991 discipline). Blocks added between planning and
    /// applying stay unallocated.
    pub fn plan_allocation(&self, time: BatchTime) -> Option<TrackerEvent> {
        if self.last_allocated.is_some_and(|l| time <= l) {
            return None;
        }
        let mut blocks = AllocatedBlocks::default();
        for (r, q) in &self.unallocated {
            if !q.is_empty() {
                blocks.blocks.insert(*r, q.iter().cloned().collect());
            }
        }
        Some(TrackerEvent::BatchAllocated { time, blocks })
    }

    /// The cleanup event for batches strictly before `before` and their blocks, without applying
    /// it (see [`plan_allocation`](Self::plan_allocation)); `None` if nothing would be dropped.
    pub fn plan_cleanup(
        &self,
        before: BatchTime,
    ) -> Option<(TrackerEvent, Vec<ReceivedBlockInfo>)> {
        let times: Vec<BatchTime> = self.allocated.range(..before).map(|(t, _)| *t).collect();
        if times.is_empty() {
            return None;
        }
        let blocks = times
            .iter()
            .filter_map(|t| self.allocated.get(t))
            .flat_map(|a| a.blocks.values().flatten().cloned())
            .collect();
        Some((TrackerEvent::BatchCleanup { times }, blocks))
    }

    /// Every block the tracker still references (unallocated, or allocated to a batch not yet
    /// cleaned up): what the WAL must keep.
    pub fn referenced_blocks(&self) -> impl Iterator<Item = &ReceivedBlockInfo> {
        self.unallocated.values().flatten().chain(
            self.allocated
                .values()
                .flat_map(|a| a.blocks.values().flatten()),
        )
    }

    /// Batch times with a recorded allocation, ascending.
    pub fn allocated_times(&self) -> Vec<BatchTime> {
        self.allocated.keys().copied().collect()
    }

    /// Blocks stored but not yet allocated, over all receivers.
    pub fn unallocated_blocks(&self) -> usize {
        self.unallocated.values().map(VecDeque::len).sum()
    }

    /// The blocks of batch `time` (empty if none were allocated).
    pub fn blocks_of_batch(&self, time: BatchTime) -> AllocatedBlocks {
        self.allocated.get(&time).cloned().unwrap_or_default()
    }

    /// True if some stored block has not been allocated to a batch yet.
    pub fn has_unallocated_blocks(&self) -> bool {
        self.unallocated.values().any(|q| !q.is_empty())
    }

    /// Drops allocations of batches strictly before `before`, returning the event and the blocks
    /// that belonged to them (to delete from the block store).
    pub fn cleanup_old_batches(
        &mut self,
        before: BatchTime,
    ) -> (TrackerEvent, Vec<ReceivedBlockInfo>) {
        let times: Vec<BatchTime> = self.allocated.range(..before).map(|(t, _)| *t).collect();
        let blocks = times
            .iter()
            .filter_map(|t| self.allocated.get(t))
            .flat_map(|a| a.blocks.values().flatten().cloned())
            .collect();
        let e = TrackerEvent::BatchCleanup { times };
        self.apply(&e);
        (e, blocks)
    }

    /// The most recently allocated batch time.
    pub fn last_allocated(&self) -> Option<BatchTime> {
        self.last_allocated
    }
}

/// Errors of a [`BlockHandler`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockStoreError {
    /// The block is not (or no longer) in the store.
    #[error("block {block} not found in the block store")]
    NotFound {
        /// The block.
        block: BlockId,
    },
    /// Storing failed (a WAL write or sync in later versions).
    #[error("storing block {block} failed: {reason}")]
    StoreFailed {
        /// The block.
        block: BlockId,
        /// Why.
        reason: String,
    },
}

/// Where receivers' blocks are kept until their batch reads them (Spark's
/// `ReceivedBlockHandler`: `BlockManagerBasedBlockHandler` keeps them in memory,
/// `WriteAheadLogBasedBlockHandler` also writes and syncs them to the WAL).
///
/// # Durability
/// Once `store_block` returns `Ok`, the block must be readable by `take_block` in this process;
/// a WAL-backed implementation additionally guarantees it survives a crash (the handle locates it).
pub trait BlockHandler<T>: Send + Sync {
    /// Stores a block, returning the info the tracker records. `position` is the source position
    /// after the block's last record, if the receiver reported one
    /// ([`ReceiverSink::store_many_at`](spate_sources::ReceiverSink::store_many_at)); a durable
    /// handler stores it with the block. On failure the records are handed back so the supervisor
    /// can return them to the storing receivers.
    ///
    /// # Errors
    /// [`BlockStoreError::StoreFailed`] together with the records.
    fn store_block(
        &self,
        block: BlockId,
        records: Vec<T>,
        position: Option<u64>,
    ) -> Result<ReceivedBlockInfo, (BlockStoreError, Vec<T>)>;

    /// Reads a block for its batch, removing it from memory (a batch reads each block once; windows
    /// memoise the batch instead).
    ///
    /// # Errors
    /// [`BlockStoreError::NotFound`].
    fn take_block(&self, info: &ReceivedBlockInfo) -> Result<Vec<T>, BlockStoreError>;

    /// Deletes blocks of cleaned-up batches (no error if already gone).
    fn remove_blocks(&self, blocks: &[ReceivedBlockInfo]);
}

/// The in-memory block handler (Spark's `BlockManagerBasedBlockHandler`): blocks are lost on a
/// crash.
pub struct MemoryBlockHandler<T> {
    blocks: Mutex<HashMap<BlockId, Vec<T>>>,
}

impl<T> Default for MemoryBlockHandler<T> {
    fn default() -> Self {
        MemoryBlockHandler {
            blocks: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> fmt::Debug for MemoryBlockHandler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBlockHandler")
            .field("blocks", &self.blocks.lock().len())
            .finish()
    }
}

impl<T: Send> BlockHandler<T> for MemoryBlockHandler<T> {
    fn store_block(
        &self,
        block: BlockId,
        records: Vec<T>,
        _position: Option<u64>,
    ) -> Result<ReceivedBlockInfo, (BlockStoreError, Vec<T>)> {
        let n = records.len() as u64;
        self.blocks.lock().insert(block, records);
        Ok(ReceivedBlockInfo {
            block,
            num_records: n,
            handle: Vec::new(),
        })
    }

    fn take_block(&self, info: &ReceivedBlockInfo) -> Result<Vec<T>, BlockStoreError> {
        self.blocks
            .lock()
            .remove(&info.block)
            .ok_or(BlockStoreError::NotFound { block: info.block })
    }

    fn remove_blocks(&self, blocks: &[ReceivedBlockInfo]) {
        let mut m = self.blocks.lock();
        for b in blocks {
            m.remove(&b.block);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(r: u32, seq: u64, n: u64) -> ReceivedBlockInfo {
        ReceivedBlockInfo {
            block: BlockId {
                receiver: ReceiverId(r),
                seq,
            },
            num_records: n,
            handle: vec![],
        }
    }

    #[test]
    fn allocation_takes_all_unallocated_blocks_once() {
        let mut t = ReceivedBlockTracker::new();
        t.add_block(info(0, 0, 3));
        t.add_block(info(1, 0, 2));
        t.add_block(info(0, 1, 1));
        assert!(t.has_unallocated_blocks());
        t.allocate_blocks_to_batch(BatchTime(1000)).unwrap();
        assert!(!t.has_unallocated_blocks());
        let a = t.blocks_of_batch(BatchTime(1000));
        assert_eq!(a.num_records(), 6);
        assert_eq!(a.blocks[&ReceiverId(0)].len(), 2);
        // Idempotent for past times.
        t.add_block(info(0, 2, 5));
        assert!(t.allocate_blocks_to_batch(BatchTime(1000)).is_none());
        assert_eq!(t.blocks_of_batch(BatchTime(1000)).num_records(), 6);
        t.allocate_blocks_to_batch(BatchTime(2000)).unwrap();
        assert_eq!(t.blocks_of_batch(BatchTime(2000)).num_records(), 5);
        assert_eq!(t.blocks_of_batch(BatchTime(3000)).num_records(), 0);
    }

    #[test]
    fn replaying_events_rebuilds_the_same_state() {
        let mut t = ReceivedBlockTracker::new();
        let mut log = vec![t.add_block(info(0, 0, 3))];
        log.extend(t.allocate_blocks_to_batch(BatchTime(1000)));
        log.push(t.add_block(info(0, 1, 4)));
        log.extend(t.allocate_blocks_to_batch(BatchTime(2000)));
        let (e, removed) = t.cleanup_old_batches(BatchTime(2000));
        assert_eq!(removed, vec![info(0, 0, 3)]);
        log.push(e);
        let mut r = ReceivedBlockTracker::new();
        for e in &log {
            let bytes = spate_types::codec::encode(e).unwrap();
            r.apply(&spate_types::codec::decode(&bytes).unwrap());
        }
        assert_eq!(
            r.blocks_of_batch(BatchTime(1000)),
            AllocatedBlocks::default()
        );
        assert_eq!(
            r.blocks_of_batch(BatchTime(2000)),
            t.blocks_of_batch(BatchTime(2000))
        );
        assert_eq!(r.last_allocated(), Some(BatchTime(2000)));
    }

    #[test]
    fn memory_handler_round_trip_and_missing_block() {
        let h = MemoryBlockHandler::default();
        let id = BlockId {
            receiver: ReceiverId(0),
            seq: 7,
        };
        let i = h.store_block(id, vec![1, 2, 3], None).unwrap();
        assert_eq!(i.num_records, 3);
        assert_eq!(h.take_block(&i).unwrap(), vec![1, 2, 3]);
        assert!(matches!(
            h.take_block(&i),
            Err(BlockStoreError::NotFound { .. })
        ));
    }
}
