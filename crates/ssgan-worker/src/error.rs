use ssgan_data::DataError;
use ssgan_model::ModelError;
use ssgan_store::StoreError;

/// Errors of configuring, running and checkpointing a training run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The config file could not be read.
    #[error("cannot read config {path}: {source}")]
    ConfigRead {
        path: String,
        source: std::io::Error,
    },
    /// The config is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("invalid config {origin}: {message}")]
    ConfigParse { origin: String, message: String },
    /// A `--set KEY=VALUE` override is malformed.
    #[error("invalid override {text:?}: {reason}")]
    Override { text: String, reason: String },
    /// A config value is outside its valid range.
    #[error("invalid value {value} for {key}: expected {expected}")]
    InvalidValue {
        key: &'static str,
        value: String,
        expected: String,
    },
    /// The config of a resumed run differs from the one its checkpoint was trained with.
    #[error(
        "run {run_id} was trained with a different config; these keys differ from its \
         checkpoint at step {step}: {keys}. Use the same config, or start a new run with \
         another --run-id"
    )]
    ConfigMismatch {
        run_id: String,
        step: u64,
        keys: String,
    },
    /// Another process is training the run.
    #[error(
        "run {run_id} is RUNNING in another process (its record was updated {seconds_ago} s \
         ago); stop that process first. If it died, retry after its record is {stale_after} s old"
    )]
    RunActive {
        run_id: String,
        seconds_ago: u64,
        stale_after: u64,
    },
    /// A run of several worker processes was opened by a single process.
    #[error(
        "run {run_id} was created with {world_size} worker processes, and one process cannot \
         resume it; pass --workers {world_size}"
    )]
    WorldSizeMismatch { run_id: String, world_size: u32 },
    /// A checkpoint's trainer state is unreadable.
    #[error("checkpoint {url} is unusable: {reason}")]
    BadCheckpoint { url: String, reason: String },
    /// The ranks of a distributed run no longer hold the same parameters.
    #[error(
        "replicas of run {run_id} diverged at step {step}: {source}. The ranks applied \
         different updates; resume the run from its latest checkpoint"
    )]
    Diverged {
        run_id: String,
        step: u64,
        source: Box<ssgan_collective::CollectiveError>,
    },
    /// Encoding the sample grid failed.
    #[error("cannot encode the sample grid: {0}")]
    Image(String),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<candle_core::Error> for WorkerError {
    fn from(error: candle_core::Error) -> Self {
        WorkerError::Model(ModelError::Tensor(error))
    }
}

pub type Result<T> = std::result::Result<T, WorkerError>;
