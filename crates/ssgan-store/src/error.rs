//! The error type of every fallible operation in this crate.

/// Errors returned by [`Store`](crate::Store), [`BlockingStore`](crate::BlockingStore) and the
/// free functions of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage URL or path passed to `open` cannot be used.
    #[error("invalid storage URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A run id breaks the naming rule of [`validate_run_id`](crate::validate_run_id).
    #[error(
        "invalid run id {id:?}: it {reason}, but a run id must be 1 to 64 characters \
         from A-Z, a-z, 0-9, '.', '_' and '-', and must not start with '.'"
    )]
    InvalidRunId { id: String, reason: String },

    /// A checkpoint file name passed to `commit_checkpoint` cannot be stored under that name.
    #[error("invalid checkpoint file name {name:?}: {reason}")]
    InvalidFileName { name: String, reason: String },

    /// A string passed to [`parse_checkpoint_url`](crate::parse_checkpoint_url) has neither
    /// accepted form.
    #[error(
        "invalid checkpoint URL {url:?}: expected <root>/runs/<run_id>/checkpoints/<step> \
         or <root>/runs/<run_id>, as a local path or a URL"
    )]
    InvalidCheckpointUrl { url: String },

    /// `apply_retention` was called with `keep == 0`.
    #[error(
        "invalid retention count keep={keep}: keep must be at least 1, because the newest \
         committed checkpoint is never deleted"
    )]
    InvalidRetention { keep: usize },

    /// The step already has a manifest. The rejected commit uploaded nothing, unless another
    /// commit of the step ran at the same time.
    #[error(
        "checkpoint step {step} of run {run_id:?} is already committed, so commit under a new \
         step or delete the existing checkpoint first"
    )]
    AlreadyCommitted { run_id: String, step: u64 },

    /// The checkpoint has no manifest, so it was never committed or has been deleted.
    #[error(
        "checkpoint step {step} of run {run_id:?} not found because \
         {url}/MANIFEST.json is missing. List runs/<run id>/checkpoints/*/MANIFEST.json for the committed steps"
    )]
    CheckpointNotFound {
        run_id: String,
        step: u64,
        url: String,
    },

    /// [`LoadedCheckpoint::file`](crate::LoadedCheckpoint::file) received a name that the
    /// manifest does not list.
    #[error(
        "file {name:?} is not in checkpoint step {step} of run {run_id:?}, \
         which contains {available:?}"
    )]
    FileNotInCheckpoint {
        run_id: String,
        step: u64,
        name: String,
        available: Vec<String>,
    },

    /// A `MANIFEST.json` cannot be parsed or contradicts its location.
    #[error("invalid checkpoint manifest {url}: {reason}. Load an earlier step")]
    InvalidManifest { url: String, reason: String },

    /// A file listed in the manifest is missing from the checkpoint directory.
    #[error(
        "checkpoint file {file:?} of run {run_id:?} step {step} is missing at {url}, \
         so the checkpoint is damaged. Load an earlier step"
    )]
    FileMissing {
        run_id: String,
        step: u64,
        file: String,
        url: String,
    },

    /// A checkpoint file has a different size from the one in the manifest.
    #[error(
        "checkpoint file {file:?} of run {run_id:?} step {step} is {actual} bytes, but the \
         manifest expects {expected} bytes. The file is corrupted, so load an earlier step"
    )]
    FileSizeMismatch {
        run_id: String,
        step: u64,
        file: String,
        expected: u64,
        actual: u64,
    },

    /// A checkpoint file has a different SHA-256 digest from the one in the manifest.
    #[error(
        "checkpoint file {file:?} of run {run_id:?} step {step} has SHA-256 {actual}, but the \
         manifest expects {expected}. The file is corrupted, so load an earlier step"
    )]
    FileHashMismatch {
        run_id: String,
        step: u64,
        file: String,
        expected: String,
        actual: String,
    },

    /// The run has committed checkpoints, but every one of them failed verification.
    #[error(
        "run {run_id:?} has committed checkpoints, but none passed verification: {}",
        failures.join("; ")
    )]
    NoVerifiedCheckpoint {
        run_id: String,
        /// One entry per failed step, newest first.
        failures: Vec<String>,
    },

    /// A `run.json` cannot be parsed or names another run.
    #[error("invalid run record {url}: {reason}")]
    InvalidRunRecord { url: String, reason: String },

    /// A manifest or run record could not be encoded as JSON.
    #[error("failed to encode the {document} as JSON")]
    Encode {
        /// Document name, such as "run record".
        document: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// The backend rejected a create-only put (`PutMode::Create`) as unsupported, so
    /// checkpoints cannot be committed safely.
    #[error(
        "the object store behind {url} does not support create-only writes, which committing \
         a checkpoint needs. For S3, do not set AWS_CONDITIONAL_PUT=disabled, and use a server \
         that honours If-None-Match: * on PutObject"
    )]
    CreateOnlyPutUnsupported {
        url: String,
        #[source]
        source: object_store::Error,
    },

    /// Any other failure reported by the object store.
    #[error("failed to {operation} {url}")]
    ObjectStore {
        /// Operation in the infinitive, such as "read" or "list".
        operation: &'static str,
        url: String,
        #[source]
        source: object_store::Error,
    },

    /// The tokio runtime of a [`BlockingStore`](crate::BlockingStore) could not be started.
    #[error("failed to start the tokio runtime of BlockingStore")]
    Runtime {
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// Returns whether this error means that stored checkpoint data is damaged or missing,
    /// as opposed to an invalid request or a failed connection.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            Self::CheckpointNotFound { .. }
                | Self::InvalidManifest { .. }
                | Self::FileMissing { .. }
                | Self::FileSizeMismatch { .. }
                | Self::FileHashMismatch { .. }
        )
    }

    /// Returns the checkpoint file that failed verification, or `MANIFEST.json` when the
    /// manifest itself is missing or invalid.
    pub fn failed_file(&self) -> Option<&str> {
        match self {
            Self::FileMissing { file, .. }
            | Self::FileSizeMismatch { file, .. }
            | Self::FileHashMismatch { file, .. } => Some(file),
            Self::CheckpointNotFound { .. } | Self::InvalidManifest { .. } => {
                Some(crate::layout::MANIFEST_FILE_NAME)
            }
            _ => None,
        }
    }
}
