//! Compiles proto/ssgan/v1 with protox, a protobuf compiler in Rust, so that no system
//! `protoc` is needed, and keeps the encoded descriptor set for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: [&str; 2] = ["ssgan/v1/run.proto", "ssgan/v1/worker.proto"];

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
    // WorkerService has an rpc named Connect, whose client method `connect` would clash with
    // the generated `Client::connect(endpoint)` constructor. Without the transport helpers,
    // clients are built with `Client::new(channel)` from a `tonic::transport::Channel`.
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
