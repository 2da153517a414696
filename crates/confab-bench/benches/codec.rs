//! Codec hot paths: decoding a client's `direct` and encoding the `direct` push that
//! fans out to every recipient (encoded once, framed per recipient).
#![allow(missing_docs, clippy::unwrap_used)]

use confab_proto::{Codec, WireFrame, json_v2};
use confab_types::{DirectPush, Push};
use divan::black_box;

fn main() {
    divan::main();
}

const DIRECT: &str = r#"{"cmd":"direct","cid":"5f2b7c1e9a0d3e4f5a6b7c8d","msg":"{\"_lctype\":-1,\"_lctext\":\"hello, how are you today?\"}","i":42,"r":1}"#;

fn push() -> Push {
    Push::Direct(DirectPush {
        cid: "5f2b7c1e9a0d3e4f5a6b7c8d".into(),
        id: "AbCdEfGhIjKlMnOpQrStUv".into(),
        timestamp: 1_760_000_000_000,
        from: "alice".into(),
        msg: r#"{"_lctype":-1,"_lctext":"hello, how are you today?"}"#.into(),
        ..Default::default()
    })
}

#[divan::bench]
fn decode_direct_json() {
    let _ = black_box(json_v2::decode(black_box(DIRECT)));
}

#[divan::bench]
fn decode_direct_json_frame() {
    let frame = WireFrame::Text(DIRECT.to_owned());
    let _ = black_box(Codec::JsonV2.decode(black_box(&frame)));
}

#[divan::bench]
fn encode_direct_push_json() -> String {
    json_v2::encode_push(black_box(&push()))
}

#[divan::bench(args = [Codec::JsonV2, Codec::Protobuf, Codec::ProtobufBase64])]
fn encode_push_body(codec: Codec) {
    let _ = black_box(codec.encode_push_body(black_box(&push())));
}

/// Per-recipient framing of an already encoded body (the fan-out inner loop).
#[divan::bench(args = [Codec::JsonV2, Codec::Protobuf, Codec::ProtobufBase64])]
fn frame_push_per_recipient(bencher: divan::Bencher<'_, '_>, codec: Codec) {
    let body = codec.encode_push_body(&push());
    bencher.bench(|| black_box(codec.frame_push(black_box(&body), Some("bob"))));
}
