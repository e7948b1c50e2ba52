//! Generated messages, clients and servers of the ssgan gRPC API, from `proto/ssgan/v1`:
//! `RunService` (public), `WorkerService` (coordinator and workers) and `EvaluatorService`
//! (coordinator and evaluators).

/// Package `ssgan.v1`.
pub mod v1 {
    tonic::include_proto!("ssgan.v1");
}

/// Encoded `FileDescriptorSet` of `proto/ssgan/v1`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ssgan_v1_descriptor.bin"));
