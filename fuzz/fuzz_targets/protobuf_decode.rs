//! The protobuf codec on arbitrary binary frames and base64 text frames: never a panic.
#![no_main]

use confab_proto::{Codec, WireFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Codec::Protobuf.decode(&WireFrame::Binary(data.to_vec()));
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Codec::ProtobufBase64.decode(&WireFrame::Text(text.to_owned()));
    }
});
