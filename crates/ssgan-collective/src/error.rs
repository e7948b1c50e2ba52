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
    /// Another rank detected that `failed_rank` failed and sent an abort message around the ring.
    #[error("{operation} aborted: rank {reporter} reported that rank {failed_rank} failed")]
    PeerFailed {
        operation: &'static str,
        failed_rank: usize,
        reporter: usize,
    },
    /// A peer issued a different collective, length or sequence number than this rank.
    #[error("{operation} does not match the call of rank {peer}: {reason}")]
    Mismatch {
        operation: &'static str,
        peer: usize,
        reason: String,
    },
    /// The peer this rank connected to rejected the handshake.
    #[error("rank {peer} rejected the ring handshake: {reason}")]
    Rejected { peer: usize, reason: String },
    /// The listening socket could not be bound.
    #[error("failed to bind the ring listener to {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    /// An earlier collective failed, so the ranks may disagree on what was sent.
    #[error(
        "{operation} rejected because an earlier collective failed ({cause}); \
         build a new communicator for the next run attempt"
    )]
    Poisoned {
        operation: &'static str,
        cause: String,
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
    /// A watchdog aborted the communicator because a collective did not finish in time or
    /// the communicator library reported an error. Every later call returns this error.
    #[error(
        "{operation} (collective {sequence} of rank {rank}) {reason}, so the communicator was \
         aborted; build a new communicator for the next run attempt"
    )]
    Aborted {
        operation: &'static str,
        rank: usize,
        sequence: u64,
        reason: String,
    },
    /// The communicator library failed outside a collective, for example while connecting.
    #[error("{operation} failed: {reason}")]
    Library {
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

impl CollectiveError {
    /// Returns the rank that this error blames: the peer that timed out, closed its
    /// connection or sent a mismatched call, or the failed rank of an abort message.
    pub fn blamed_rank(&self) -> Option<usize> {
        match self {
            CollectiveError::Timeout { peer, .. }
            | CollectiveError::Peer { peer, .. }
            | CollectiveError::Mismatch { peer, .. } => Some(*peer),
            CollectiveError::PeerFailed { failed_rank, .. } => Some(*failed_rank),
            _ => None,
        }
    }
}
