/// Errors of model construction, training steps and state loading.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed (a shape mismatch is a bug in the caller or in this crate).
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A collective operation failed.
    #[error(transparent)]
    Collective(#[from] ssgan_collective::CollectiveError),
    /// A configuration value is outside its valid range.
    #[error("invalid value {value} for {key}: expected {expected}")]
    InvalidConfig {
        key: &'static str,
        value: String,
        expected: String,
    },
    /// A configuration value names a feature that this version does not implement.
    #[error("{key} = {value:?} is not implemented yet; supported: {supported}")]
    Unsupported {
        key: &'static str,
        value: String,
        supported: &'static str,
    },
    /// A saved state does not fit the model it is loaded into.
    #[error("cannot load {what}: {reason}")]
    State { what: String, reason: String },
    /// An input batch has the wrong shape.
    #[error("invalid input: {0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
