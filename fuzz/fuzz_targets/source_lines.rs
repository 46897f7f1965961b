//! The socket receiver's line splitter and the file source's decoders never panic on arbitrary
//! bytes, and the splitter agrees with whole-buffer splitting (chunking must not change records).
#![no_main]
use libfuzzer_sys::fuzz_target;
use spate_sources::file::{FileSourceConfig, TextFileSource};
use spate_sources::lines::{InvalidUtf8Policy, LinePolicy, OverlongPolicy};
use spate_sources::{ReplayableSource, Selection};
use spate_types::{BatchTime, DurationMs};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let (hdr, body) = data.split_at(3);
    let policy = LinePolicy {
        max_line_bytes: 1 + hdr[0] as usize,
        invalid_utf8: match hdr[1] % 3 {
            0 => InvalidUtf8Policy::Replace,
            1 => InvalidUtf8Policy::Skip,
            _ => InvalidUtf8Policy::Error,
        },
        overlong: if hdr[1] & 4 == 0 {
            OverlongPolicy::Skip
        } else {
            OverlongPolicy::Error
        },
    };
    let chunk = 1 + hdr[2] as usize;
    let (a, ea) =
        spate_sources::socket::split_as_received(body, chunk, 1 + (hdr[2] as usize % 7), policy);
    let (b, eb) =
        spate_sources::socket::split_as_received(body, body.len().max(1), 1 << 16, policy);
    assert_eq!(a, b);
    assert_eq!(ea.is_some(), eb.is_some());

    // Decoders of persisted selections and positions.
    let mut src = TextFileSource::with_start_time(
        "/nonexistent-spate-fuzz",
        FileSourceConfig::new(DurationMs::from_secs(1)),
        0,
    );
    let _ = src.restore(body, &[]);
    let sel = Selection {
        time: BatchTime::from_millis(1),
        data: body.to_vec(),
        summary: String::new(),
    };
    let _ = spate_sources::file::decode_selection(&sel);
});
