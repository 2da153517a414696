//! The v2 JSON codec on arbitrary client text: never a panic, and the ack scanner
//! decides as the general decoder does whenever it takes a frame.
#![no_main]

use confab_proto::{Codec, WireFrame, json_v2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = json_v2::decode(text);
        if let Some(ack) = json_v2::scan_ack(text) {
            assert_eq!(Ok(ack.to_inbound()), json_v2::decode_tree(text), "{text}");
        }
    }
    // Binary frames on the JSON protocol must be refused, not crash.
    let _ = Codec::JsonV2.decode(&WireFrame::Binary(data.to_vec()));
});
