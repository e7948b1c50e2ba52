//! Errors of the coordinator: [`CoordinatorError`] for starting and stopping the server, and
//! [`RegistryError`] for run registry operations, which RPC handlers turn into a gRPC status.

use std::net::SocketAddr;

use ssgan_store::StoreError;
use tonic::Status;

/// Failure to start, serve or stop the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("failed to open the object store: {0}")]
    OpenStore(#[source] StoreError),
    #[error("failed to load the run registry from the object store: {0}")]
    LoadRegistry(#[source] StoreError),
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("gRPC server task panicked or was cancelled: {0}")]
    ServerTask(#[from] tokio::task::JoinError),
}

/// Failure of a run registry operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistryError {
    #[error("run {0:?} not found")]
    NotFound(String),
    #[error("run {run_id:?} is {from}, so it cannot become {to}")]
    IllegalTransition {
        run_id: String,
        from: &'static str,
        to: &'static str,
    },
    #[error("failed to write the run record: {0}")]
    Store(#[from] StoreError),
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Self {
        match &error {
            RegistryError::NotFound(_) => Status::not_found(error.to_string()),
            RegistryError::IllegalTransition { .. } => {
                Status::failed_precondition(error.to_string())
            }
            RegistryError::Store(_) => Status::internal(error.to_string()),
        }
    }
}

/// Turns an object store failure while serving a request into an INTERNAL status.
pub(crate) fn store_status(error: StoreError) -> Status {
    Status::internal(format!("object store operation failed: {error}"))
}
