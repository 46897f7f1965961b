//! The engine's write-ahead log: received blocks, tracker events and replayable-source selections
//! in one `spate-wal` log (docs/design/0001-fault-tolerance.md, "WAL record kinds").
//!
//! Spark keeps two logs (`receivedData/<stream>` and `receivedBlockMetadata`) and writes each block
//! twice (data, then `BlockAdditionEvent`). Here one `Block` record is both the data and the
//! `BlockAdded` event, so DESIGN.md §4 step 1 costs one group-committed fdatasync; its record handle
//! is the block's handle (Spark's `WriteAheadLogRecordHandle`).

use crate::error::{Result, StreamingError};
use crate::tracker::{
    BlockHandler, BlockStoreError, MemoryBlockHandler, ReceivedBlockInfo, TrackerEvent,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use spate_io::{Clock, FileSystem};
use spate_sources::Selection;
use spate_types::{BlockId, Lsn, OperatorId, ReceiverId};
use spate_wal::{RecordHandle, RecoveryReport, Wal, WalOptions};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// WAL record kind: a received block (data + `BlockAdded`), DESIGN.md §4 step 1.
pub(crate) const KIND_BLOCK: u8 = 1;
/// WAL record kind: `BatchAllocated` (step 2).
pub(crate) const KIND_ALLOCATED: u8 = 2;
/// WAL record kind: `BatchCleanup` (step 7).
pub(crate) const KIND_CLEANUP: u8 = 3;
/// WAL record kind: a replayable source's selection for a batch (step 2).
pub(crate) const KIND_SELECTED: u8 = 4;

/// Largest WAL record the engine writes or trusts (a block's encoded records plus header), bytes:
/// the WAL's own [`spate_wal::MAX_RECORD_BYTES`], so `spate wal verify` (default options) accepts
/// every record the engine wrote. (It was 1 GiB here while the reader's default stayed 64 MiB:
/// under a flood a 272 MB block record was written that `spate wal verify` rejected.) Blocks are
/// cut by size ([`StreamingConfig::max_block_bytes`](crate::StreamingConfig::max_block_bytes)) far
/// below it; a larger block is refused with `WalError::RecordTooLarge`, never written.
pub(crate) const MAX_BLOCK_BYTES: u32 = spate_wal::MAX_RECORD_BYTES;

/// The fixed part of a `Block` record; the codec-encoded records follow it.
#[derive(Debug, Serialize, Deserialize)]
struct BlockHeader {
    block: BlockId,
    num_records: u64,
    position: Option<u64>,
}

/// What replaying the WAL found (DESIGN.md §4 recovery step 3).
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    /// Tracker events in log order, with their LSNs (`BlockAdded` from `Block` records).
    pub(crate) events: Vec<(Lsn, TrackerEvent)>,
    /// Selections recorded by replayable inputs, in log order.
    pub(crate) selections: Vec<(Lsn, OperatorId, Selection)>,
    /// Highest source position per receiver over the replayed blocks.
    pub(crate) positions: BTreeMap<ReceiverId, u64>,
    /// What `Wal::open` found (segments, torn tail).
    pub(crate) report: RecoveryReport,
    /// Records replayed.
    pub(crate) records: u64,
    /// Block records replayed, and the records they hold.
    pub(crate) blocks: u64,
    pub(crate) block_records: u64,
}

/// The engine's WAL.
pub(crate) struct EngineWal {
    wal: Wal,
    dir: PathBuf,
}

impl fmt::Debug for EngineWal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineWal").field("dir", &self.dir).finish()
    }
}

fn encode_handle(h: RecordHandle) -> Vec<u8> {
    spate_types::codec::encode(&h).unwrap_or_default()
}

/// The WAL handle of a block stored by the [`WalBlockHandler`], if it has one.
pub(crate) fn block_handle(info: &ReceivedBlockInfo) -> Option<RecordHandle> {
    if info.handle.is_empty() {
        return None;
    }
    spate_types::codec::decode(&info.handle).ok()
}

impl EngineWal {
    /// Opens (creating if needed) the WAL in `dir`, repairing a torn tail, and replays it.
    pub(crate) fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        clock: Arc<dyn Clock>,
        segment_bytes: u64,
    ) -> Result<(EngineWal, Replayed)> {
        let wal_err = |source| StreamingError::Wal {
            dir: dir.to_owned(),
            source,
        };
        let opts = WalOptions {
            clock,
            segment_bytes,
            // One record per block; blocks are cut by size well below this.
            max_record_bytes: MAX_BLOCK_BYTES,
            ..WalOptions::default()
        };
        let (wal, report) = Wal::open(fs, dir, opts).map_err(wal_err)?;
        let journal = EngineWal {
            wal,
            dir: dir.to_owned(),
        };
        let mut replayed = Replayed {
            report,
            ..Replayed::default()
        };
        let mut reader = journal.wal.replay_from(Lsn(0)).map_err(wal_err)?;
        while let Some(rec) = reader.next().map_err(wal_err)? {
            replayed.records += 1;
            let bad = |reason: String| StreamingError::WalRecord {
                dir: dir.to_owned(),
                lsn: rec.lsn,
                kind: rec.kind,
                reason,
            };
            match rec.kind {
                KIND_BLOCK => {
                    let (h, _) = split_block(&rec.payload).map_err(bad)?;
                    replayed.blocks += 1;
                    replayed.block_records += h.num_records;
                    if let Some(p) = h.position {
                        let e = replayed.positions.entry(h.block.receiver).or_insert(p);
                        *e = (*e).max(p);
                    }
                    replayed.events.push((
                        rec.lsn,
                        TrackerEvent::BlockAdded(ReceivedBlockInfo {
                            block: h.block,
                            num_records: h.num_records,
                            handle: encode_handle(rec.handle),
                        }),
                    ));
                }
                KIND_ALLOCATED | KIND_CLEANUP => {
                    let e: TrackerEvent =
                        spate_types::codec::decode(&rec.payload).map_err(|e| bad(e.to_string()))?;
                    let ok = matches!(
                        (&e, rec.kind),
                        (TrackerEvent::BatchAllocated { .. }, KIND_ALLOCATED)
                            | (TrackerEvent::BatchCleanup { .. }, KIND_CLEANUP)
                    );
                    if !ok {
                        return Err(bad("event does not match its record kind".into()));
                    }
                    replayed.events.push((rec.lsn, e));
                }
                KIND_SELECTED => {
                    let (op, sel): (OperatorId, Selection) =
                        spate_types::codec::decode(&rec.payload).map_err(|e| bad(e.to_string()))?;
                    replayed.selections.push((rec.lsn, op, sel));
                }
                other => {
                    return Err(bad(format!(
                        "unknown record kind {other} (written by a newer build?)"
                    )))
                }
            }
        }
        Ok((journal, replayed))
    }

    /// Syncs and closes the WAL and releases its directory lock (the context stopped: a later
    /// `get_or_create` on the same location, in this process or another, may open it).
    pub(crate) fn release(&self) -> Result<()> {
        self.wal.release().map_err(|source| StreamingError::Wal {
            dir: self.dir.clone(),
            source,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn err(&self, source: spate_wal::WalError) -> StreamingError {
        StreamingError::Wal {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The error of a fail point site (`docs/failpoints.md`): a WAL I/O error naming the point.
    #[cfg(feature = "failpoints")]
    pub(crate) fn failpoint(&self, name: &str, arg: &str) -> StreamingError {
        self.err(spate_wal::WalError::Io {
            path: self.dir.clone(),
            source: spate_types::failpoints::io_error(name, arg),
        })
    }

    /// Appends and syncs a block record (step 1).
    fn append_block(
        &self,
        block: BlockId,
        num_records: u64,
        position: Option<u64>,
        data: &[u8],
    ) -> Result<ReceivedBlockInfo> {
        let header = spate_types::codec::encode(&BlockHeader {
            block,
            num_records,
            position,
        })
        .map_err(|source| StreamingError::Encode {
            what: "a WAL block header",
            source,
        })?;
        let mut payload = Vec::with_capacity(4 + header.len() + data.len());
        payload.extend_from_slice(
            &u32::try_from(header.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        payload.extend_from_slice(&header);
        payload.extend_from_slice(data);
        spate_types::spate_fail!("engine::block::store::before", |a| Err(
            self.failpoint("engine::block::store::before", &a)
        ));
        let h = self
            .wal
            .append_with_handle(KIND_BLOCK, &payload)
            .map_err(|e| self.err(e))?;
        spate_types::spate_fail!("engine::block::store::after", |a| Err(
            self.failpoint("engine::block::store::after", &a)
        ));
        Ok(ReceivedBlockInfo {
            block,
            num_records,
            handle: encode_handle(h),
        })
    }

    /// Reads a block's encoded records back by its handle (Spark's
    /// `WriteAheadLogBackedBlockRDD` reading a segment).
    fn read_block(&self, info: &ReceivedBlockInfo) -> std::result::Result<Vec<u8>, String> {
        let h = block_handle(info).ok_or("block has no WAL handle")?;
        let rec = self.wal.read_at(h).map_err(|e| e.to_string())?;
        if rec.kind != KIND_BLOCK {
            return Err(format!("record {} is not a block", rec.lsn.0));
        }
        let (hdr, data) = split_block(&rec.payload)?;
        if hdr.block != info.block {
            return Err(format!(
                "record holds block {}, not {}",
                hdr.block, info.block
            ));
        }
        Ok(data.to_vec())
    }

    /// Appends and syncs a tracker event (`BatchAllocated` or `BatchCleanup`), returning its LSN.
    pub(crate) fn append_event(&self, e: &TrackerEvent) -> Result<Lsn> {
        let kind = match e {
            TrackerEvent::BatchAllocated { .. } => KIND_ALLOCATED,
            TrackerEvent::BatchCleanup { .. } => KIND_CLEANUP,
            TrackerEvent::BlockAdded(_) => KIND_BLOCK,
        };
        let payload = spate_types::codec::encode(e).map_err(|source| StreamingError::Encode {
            what: "a WAL tracker event",
            source,
        })?;
        self.wal.append(kind, &payload).map_err(|e| self.err(e))
    }

    /// Appends and syncs a selection record, returning its LSN.
    pub(crate) fn append_selection(&self, op: OperatorId, sel: &Selection) -> Result<Lsn> {
        spate_types::spate_fail!("engine::selection::before", |a| Err(
            self.failpoint("engine::selection::before", &a)
        ));
        let payload =
            spate_types::codec::encode(&(op, sel)).map_err(|source| StreamingError::Encode {
                what: "a WAL source selection",
                source,
            })?;
        self.wal
            .append(KIND_SELECTED, &payload)
            .map_err(|e| self.err(e))
    }

    /// Deletes whole segments below `lsn` (step 7, after the completion checkpoint is durable).
    pub(crate) fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        self.wal
            .truncate_before(lsn)
            .map(|v| v.len())
            .map_err(|e| self.err(e))
    }

    /// The LSN the next record gets.
    pub(crate) fn next_lsn(&self) -> Lsn {
        self.wal.next_lsn()
    }
}

fn split_block(payload: &[u8]) -> std::result::Result<(BlockHeader, &[u8]), String> {
    let Some(len) = payload.get(..4) else {
        return Err("block record shorter than its header length".into());
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let Some(header) = payload.get(4..4 + len) else {
        return Err(format!("block header length {len} exceeds the record"));
    };
    let h: BlockHeader = spate_types::codec::decode(header).map_err(|e| e.to_string())?;
    Ok((h, &payload[4 + len..]))
}

/// The WAL-backed block handler (Spark's `WriteAheadLogBasedBlockHandler`): each block is written
/// and synced to the WAL before `store_block` returns, and also kept in memory so its batch reads it
/// without I/O; after a restart blocks are read back from the WAL by handle.
pub(crate) struct WalBlockHandler<T> {
    journal: Arc<EngineWal>,
    memory: MemoryBlockHandler<T>,
    /// The WAL handle of each block held in `memory`: the in-memory copy is served only for the
    /// same record (block ids are unique across restarts, see `Supervisor::restore_next_seq`;
    /// this keeps a reused id from ever serving another block's records).
    handles: parking_lot::Mutex<std::collections::HashMap<BlockId, Vec<u8>>>,
}

impl<T> WalBlockHandler<T> {
    pub(crate) fn new(journal: Arc<EngineWal>) -> Self {
        WalBlockHandler {
            journal,
            memory: MemoryBlockHandler::default(),
            handles: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl<T> fmt::Debug for WalBlockHandler<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalBlockHandler")
            .field("dir", &self.journal.dir)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + Send + Sync> BlockHandler<T> for WalBlockHandler<T> {
    fn store_block(
        &self,
        block: BlockId,
        records: Vec<T>,
        position: Option<u64>,
    ) -> std::result::Result<ReceivedBlockInfo, (BlockStoreError, Vec<T>)> {
        let failed =
            |reason: String, records| (BlockStoreError::StoreFailed { block, reason }, records);
        let data = match spate_types::codec::encode(&records) {
            Ok(d) => d,
            Err(e) => return Err(failed(e.to_string(), records)),
        };
        match self
            .journal
            .append_block(block, records.len() as u64, position, &data)
        {
            Ok(info) => {
                self.handles.lock().insert(block, info.handle.clone());
                let _ = self.memory.store_block(block, records, position);
                Ok(info)
            }
            Err(e) => Err(failed(e.to_string(), records)),
        }
    }

    fn take_block(&self, info: &ReceivedBlockInfo) -> std::result::Result<Vec<T>, BlockStoreError> {
        let same = {
            let mut h = self.handles.lock();
            let same = h.get(&info.block) == Some(&info.handle);
            if same {
                h.remove(&info.block);
            }
            same
        };
        if same {
            if let Ok(v) = self.memory.take_block(info) {
                return Ok(v);
            }
        }
        let not_found = |reason: String| {
            tracing::error!(block = %info.block, "reading block from the WAL: {reason}");
            BlockStoreError::NotFound { block: info.block }
        };
        let data = self.journal.read_block(info).map_err(not_found)?;
        spate_types::codec::decode(&data).map_err(|e| not_found(e.to_string()))
    }

    fn remove_blocks(&self, blocks: &[ReceivedBlockInfo]) {
        let mut h = self.handles.lock();
        let same: Vec<ReceivedBlockInfo> = blocks
            .iter()
            .filter(|b| h.get(&b.block) == Some(&b.handle))
            .cloned()
            .collect();
        for b in &same {
            h.remove(&b.block);
        }
        drop(h);
        self.memory.remove_blocks(&same);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_io::{CrashMode, ManualClock, SimFs};
    use spate_wal::{RecoveryMode, WalError, WalReader};

    /// Issue 13 item 5: the writer and every reader share one limit. The largest block record the
    /// engine may write (payload exactly `spate_wal::MAX_RECORD_BYTES`) survives a power loss and
    /// reads back both through the engine and through a reader with the WAL's default options
    /// (what `spate wal verify` uses); one byte more is refused as `RecordTooLarge`, never written.
    #[test]
    fn the_largest_allowed_block_record_reads_back_after_a_crash_and_one_byte_more_is_refused() {
        let fs = SimFs::new(13);
        let dir = Path::new("/wal");
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(0));
        let block = BlockId {
            receiver: ReceiverId(0),
            seq: 5,
        };
        let header = spate_types::codec::encode(&BlockHeader {
            block,
            num_records: 1,
            position: Some(9),
        })
        .unwrap();
        let max = spate_wal::MAX_RECORD_BYTES as usize;
        let data: Vec<u8> = (0..max - 4 - header.len())
            .map(|i| (i % 251) as u8)
            .collect();
        let info = {
            let (j, _) =
                EngineWal::open(Arc::new(fs.clone()), dir, Arc::clone(&clock), 256 << 20).unwrap();
            let info = j.append_block(block, 1, Some(9), &data).unwrap();
            let too_big = [data.as_slice(), &[0]].concat();
            let refused = j.append_block(
                BlockId {
                    receiver: ReceiverId(0),
                    seq: 6,
                },
                1,
                Some(10),
                &too_big,
            );
            assert!(
                matches!(
                    &refused,
                    Err(StreamingError::Wal {
                        source: WalError::RecordTooLarge { len, max: m },
                        ..
                    }) if *len == max + 1 && *m as usize == max
                ),
                "{refused:?}"
            );
            info
        };
        fs.crash(CrashMode::DropUnsynced);
        let (j, replayed) =
            EngineWal::open(Arc::new(fs.clone()), dir, Arc::clone(&clock), 256 << 20).unwrap();
        assert_eq!((replayed.blocks, replayed.block_records), (1, 1));
        assert_eq!(replayed.positions.get(&ReceiverId(0)), Some(&9));
        assert!(
            j.read_block(&info).unwrap() == data,
            "block data differs after the crash"
        );
        drop(j);
        let mut r = WalReader::open(
            Arc::new(fs),
            dir,
            RecoveryMode::AbsoluteConsistency,
            Lsn(0),
            WalOptions::default().max_record_bytes,
        )
        .unwrap();
        let rec = r.next().unwrap().unwrap();
        assert_eq!((rec.kind, rec.payload.len()), (KIND_BLOCK, max));
        assert!(r.next().unwrap().is_none());
    }
}
