//! Bytes from the other side of a channel are untrusted: the decoder must refuse them
//! cleanly, never crash, hang or allocate without bound. Run: `make fuzz`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nebula_memory::isolation::channel::decode;
use serde::Deserialize;

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
enum Request {
    Ping(u64),
    Put { key: String, #[serde(with = "serde_bytes")] value: Vec<u8> },
    Batch(Vec<(u32, String)>),
    Flags(Option<bool>, [u8; 4]),
}

fuzz_target!(|data: &[u8]| {
    let _ = decode::<Request>(data, 1 << 16);
    let _ = decode::<Vec<String>>(data, 1 << 16);
    let _ = decode::<(u64, Vec<u8>, String)>(data, 1 << 16);
});
