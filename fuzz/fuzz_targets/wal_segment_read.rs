//! Fuzz the WAL segment reader and recovery: arbitrary bytes as the only segment (after a valid
//! header or raw) of a WAL directory in SimFs, read in every recovery mode and opened for writing.
//! Never panics; whatever is returned is a typed result.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_io::{FileSystem, SimFs};
use spate_types::Lsn;
use spate_wal::format::{encode_header, segment_file_name};
use spate_wal::{RecoveryMode, SyncPolicy, Wal, WalOptions, WalReader};
use std::path::PathBuf;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let (raw, rest) = match data.split_first() {
        Some((&b, rest)) => (b & 1 == 1, rest),
        None => return,
    };
    let mut bytes = if raw {
        Vec::new()
    } else {
        encode_header(0, 0).to_vec()
    };
    bytes.extend_from_slice(rest);
    let dir = PathBuf::from("/f");
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::SkipCorrupt,
    ] {
        let fs = SimFs::new(0);
        fs.create_dir_all(&dir).unwrap();
        fs.put_durable(&dir.join(segment_file_name(0)), &bytes);
        if let Ok(mut r) = WalReader::open(Arc::new(fs.clone()), &dir, mode, Lsn(0), 1 << 16) {
            while let Ok(Some(_)) = r.next() {}
        }
        let opts = WalOptions {
            recovery: mode,
            sync_policy: SyncPolicy::Manual,
            max_record_bytes: 1 << 16,
            segment_bytes: 4096,
            ..WalOptions::default()
        };
        if let Ok((wal, _)) = Wal::open(Arc::new(fs), &dir, opts) {
            let _ = wal.append(1, b"x");
            let _ = wal.sync();
        }
    }
});
