//! The ssgan evaluator: joins a coordinator over `EvaluatorService.OpenEvaluatorSession` and
//! computes the FID of the committed checkpoints it is given.
//!
//! For each task the evaluator loads the checkpoint's generator, generates `samples` images
//! in batches (evaluation mode), computes their pool3 statistics with pytorch-fid's FID
//! InceptionV3, and compares them with the statistics of the run's training images. Those
//! are computed once per run from the first `real_samples` images of the checkpoint config's
//! `data.path` and cached in the object store as `runs/<run_id>/fid_real_stats_<N>.npz`. The
//! result goes to `eval.json` in the checkpoint directory and then to the coordinator.
//!
//! Candle work runs on a blocking thread; the async side sends heartbeats meanwhile. When the
//! stream ends the evaluator reconnects with a backoff of 1 s doubling up to 10 s, unless
//! [`EvaluatorOptions::exit_on_disconnect`] is set. The library logs at debug and trace
//! level only.

mod error;
mod job;
mod session;
mod weights;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

pub use error::{EvaluatorError, JobError};
pub use job::{EvalFile, FidModel};
pub use weights::{
    CACHE_DIR_VARIABLE, WeightsError, resolve_inception_weights, resolve_inception_weights_in,
};

use session::{Session, SessionEnd};

/// Time between reconnection attempts: doubled after each failure, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Settings of one evaluator process.
#[derive(Clone, Debug)]
pub struct EvaluatorOptions {
    /// URL of the coordinator's gRPC endpoint, such as `http://127.0.0.1:50051`.
    pub coordinator_url: String,
    /// pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, or a file with the same keys:
    /// a local path or a URL, as [`resolve_inception_weights`] takes it.
    pub inception_weights: String,
    /// Number of compute threads, reported in the join message. The evaluator does not size
    /// thread pools itself.
    pub threads: u32,
    /// Ends the evaluator when the coordinator's stream ends instead of reconnecting.
    pub exit_on_disconnect: bool,
}

impl EvaluatorOptions {
    pub fn new(
        coordinator_url: impl Into<String>,
        inception_weights: impl Into<String>,
        threads: u32,
    ) -> Self {
        Self {
            coordinator_url: coordinator_url.into(),
            inception_weights: inception_weights.into(),
            threads,
            exit_on_disconnect: false,
        }
    }
}

/// Runs the evaluator until `shutdown` completes.
///
/// # Errors
///
/// [`EvaluatorError::Weights`] before connecting when the weights file does not exist or
/// cannot be downloaded, [`EvaluatorError::LoadWeights`] when it cannot be loaded, and
/// [`EvaluatorError::Rejected`] when the coordinator rejects the evaluator for good.
pub async fn run_evaluator(
    options: EvaluatorOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EvaluatorError> {
    let model = Arc::new(load_model(&options.inception_weights).await?);
    let (signal, mut stopped) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = signal.send(true);
    });
    let result = reconnect_loop(&options, &model, &mut stopped).await;
    watcher.abort();
    result
}

/// Finds or downloads the weights and loads the FID Inception network once, in float32 on
/// the CPU, on a blocking thread.
async fn load_model(source: &str) -> Result<FidModel, EvaluatorError> {
    let source = source.to_owned();
    tokio::task::spawn_blocking(move || {
        let path = resolve_inception_weights(&source)?;
        FidModel::load(&path)
    })
    .await
    .map_err(|error| EvaluatorError::Task(error.to_string()))?
}

async fn reconnect_loop(
    options: &EvaluatorOptions,
    model: &Arc<FidModel>,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), EvaluatorError> {
    let evaluator_id = format!("{}:{}", hostname(), std::process::id());
    let mut backoff = FIRST_BACKOFF;
    loop {
        let session = Session::new(options, &evaluator_id, model.clone(), stopped.clone());
        match session.run().await? {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost { .. } if options.exit_on_disconnect => {
                tracing::debug!(evaluator_id, "the coordinator stream ended, exiting");
                return Ok(());
            }
            SessionEnd::Lost { welcomed: true } => backoff = FIRST_BACKOFF,
            SessionEnd::Lost { welcomed: false } => {}
        }
        tracing::debug!(evaluator_id, ?backoff, "reconnecting to the coordinator");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown_signalled(stopped) => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Completes once the shutdown flag is set, or once its sender is gone.
pub(crate) async fn shutdown_signalled(stopped: &mut watch::Receiver<bool>) {
    // The guard that `wait_for` returns is not Send, so it is dropped here at once.
    let _ = stopped.wait_for(|stop| *stop).await.is_ok();
}

/// Returns the host name from the kernel, the HOSTNAME variable, or "localhost".
fn hostname() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_kernel.or_else(|| std::env::var("HOSTNAME").ok());
    let name = name.map(|n| n.trim().to_owned()).unwrap_or_default();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}
