//! The size-limited codec never panics and never over-allocates on arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Sample {
    a: u64,
    s: String,
    v: Vec<(u32, Vec<u8>)>,
    o: Option<Box<Sample>>,
}

fuzz_target!(|data: &[u8]| {
    let _ = spate_types::codec::decode::<Sample>(data);
    let _ = spate_types::codec::decode::<Vec<String>>(data);
    let _ = spate_types::codec::decode_prefix::<std::collections::BTreeMap<u64, Vec<u64>>>(data);
});
