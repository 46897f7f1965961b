//! Fuzz the WAL frame and header decoders on arbitrary bytes: never panic, never allocate from an
//! unchecked length, and a decoded frame re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use spate_wal::format::{decode_frame, decode_header, encode_frame, Decoded, FLAG_SYNC_POINT};

fuzz_target!(|data: &[u8]| {
    let _ = decode_header(data);
    let mut pos = 0;
    while pos <= data.len() {
        match decode_frame(&data[pos..], 1 << 16) {
            Ok(Decoded::Frame(f)) => {
                let mut again = Vec::new();
                let flags = if f.sync_point { FLAG_SYNC_POINT } else { 0 };
                encode_frame(&mut again, flags, f.kind, f.lsn, f.time_ms, f.payload);
                assert_eq!(&again[..], &data[pos..pos + f.frame_len]);
                pos += f.frame_len;
            }
            Ok(_) | Err(_) => pos += 1,
        }
    }
});
