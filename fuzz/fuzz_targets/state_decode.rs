#![no_main]
//! Fuzzes the state checkpoint object decoder (`spate_state::format`): never panic on any input, and
//! every accepted object is canonical (re-encoding it yields the input bytes exactly). The input is
//! also restored as a one-object chain and, split at its midpoint, as a two-object chain.
use libfuzzer_sys::fuzz_target;
use spate_state::format::{self, ObjectKind, ObjectWriter};

fuzz_target!(|data: &[u8]| {
    if let Ok(o) = format::decode(data) {
        let h = o.header;
        let mut w = match h.kind {
            ObjectKind::Snapshot => ObjectWriter::snapshot(h.codec, h.operator, h.partition, h.time),
            ObjectKind::Delta { base } => {
                ObjectWriter::delta(h.codec, h.operator, h.partition, h.time, base)
                    .expect("decoder accepted base < time")
            }
        };
        for e in &o.entries {
            match &e.value {
                Some(v) => w.put(&e.key, v).expect("decoder accepted order and sizes"),
                None => w.remove(&e.key).expect("decoder accepted a removal"),
            }
        }
        assert_eq!(w.finish(), data, "accepted bytes must be canonical");
        let _ = format::restore(h.operator, h.partition, [data]);
    }
    let mid = data.len() / 2;
    if let Ok(h) = format::decode_header(data) {
        let _ = format::restore(h.operator, h.partition, [&data[..mid], &data[mid..]]);
    }
});
