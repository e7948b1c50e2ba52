/// Failure of a collective operation.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// A peer did not take part in time.
    #[error("{operation} timed out after {timeout_ms} ms waiting for rank {peer}")]
    Timeout {
        operation: &'static str,
        peer: usize,
        timeout_ms: u64,
    },
    /// A peer's connection failed.
    #[error("{operation} failed talking to rank {peer}: {source}")]
    Peer {
        operation: &'static str,
        peer: usize,
        source: std::io::Error,
    },
    /// The parameters of some ranks differ from those of rank 0.
    #[error("parameters of ranks {ranks:?} differ from rank 0: {detail}")]
    Diverged { ranks: Vec<usize>, detail: String },
    /// The caller passed arguments that the group cannot agree on.
    #[error("invalid {operation} call: {reason}")]
    InvalidCall {
        operation: &'static str,
        reason: String,
    },
    /// A tensor could not be moved to or from host memory.
    #[error("{operation}: tensor error: {source}")]
    Tensor {
        operation: &'static str,
        source: candle_core::Error,
    },
}
