#![no_main]
//! Fuzzes the checkpoint envelope and manifest decoders: never panic on any input.
use libfuzzer_sys::fuzz_target;
use spate_checkpoint::envelope::{decode, ObjectKind};

fuzz_target!(|data: &[u8]| {
    let _ = decode("fuzz", ObjectKind::Data, data);
    let _ = spate_checkpoint::Manifest::from_bytes(
        "manifests/00000000000000000001-00000000000000000001-0000000000.manifest",
        data,
    );
});
