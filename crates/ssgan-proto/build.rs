//! Compiles proto/ssgan/v1 with protox, a protobuf compiler in Rust, so that no system
//! `protoc` is needed, and keeps the encoded descriptor set for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 3] = [
    "ssgan/v1/run.proto",
    "ssgan/v1/worker.proto",
    "ssgan/v1/evaluator.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let descriptors = protox::compile(PROTOS, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("ssgan_v1_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
