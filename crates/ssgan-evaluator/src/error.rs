//! Errors of the evaluator: [`EvaluatorError`] ends it, [`JobError`] fails one task.

use std::path::PathBuf;

use ssgan_fid::FidError;
use ssgan_store::StoreError;
use ssgan_worker::WorkerError;

use crate::weights::WeightsError;

/// Failures that end the evaluator; every other failure leads to a reconnection or a failed
/// task.
#[derive(Debug, thiserror::Error)]
pub enum EvaluatorError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error("failed to load the FID Inception weights {path}: {source}")]
    LoadWeights {
        path: PathBuf,
        #[source]
        source: FidError,
    },
    #[error(
        "invalid coordinator URL {url:?}: expected an http:// or https:// URL such as http://127.0.0.1:50051"
    )]
    InvalidUrl { url: String },
    #[error("the coordinator at {url} rejected this evaluator: {status}")]
    Rejected { url: String, status: tonic::Status },
    #[error("a blocking task panicked or was cancelled: {0}")]
    Task(String),
}

/// Failure of one evaluation task, reported to the coordinator as its message.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("failed to load the checkpoint's generator: {0}")]
    Generator(#[from] WorkerError),
    #[error("FID computation failed: {0}")]
    Fid(#[from] FidError),
    #[error("cannot read the reference images: {0}")]
    RealImages(#[from] ssgan_data::DataError),
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("object store operation failed: {0}")]
    Store(#[from] StoreError),
    #[error("failed to use a temporary statistics file: {0}")]
    TempFile(#[from] std::io::Error),
    #[error("failed to encode eval.json: {0}")]
    Encode(#[from] serde_json::Error),
}
