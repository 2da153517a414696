//! Generates the protobuf types from `proto/message.proto` with protox (pure Rust, so
//! no `protoc` is needed on the machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/message.proto");
    let descriptors = protox::compile(["proto/message.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
