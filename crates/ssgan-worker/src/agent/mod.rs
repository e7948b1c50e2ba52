//! The worker agent: registers with a coordinator over `WorkerService.OpenSession`, trains the
//! ranks it is assigned, reports their progress, and reconnects when the stream is lost.
//!
//! Messages from the coordinator and what the agent does:
//! - Welcome: starts a heartbeat every `heartbeat_interval_ms`.
//! - Assignment: a CPU worker binds a ring listener on `ring_host` port 0 and sends its
//!   address in a RingAddress. A GPU worker sends an empty address, and as rank 0 of several
//!   ranks also a new NCCL unique id.
//! - Rendezvous: joins the ring, or the NCCL communicator with rank 0's unique id, and trains
//!   the rank on a blocking thread. Rank 0 sends a
//!   StepMetricsReport per step and a CheckpointReport per committed checkpoint; every rank
//!   sends RunEnded when its training ends.
//! - Stop and Abort: set this rank's stop or abort flag, which all ranks agree on before the
//!   next step.
//!
//! When the stream closes, the current run is aborted without a checkpoint, and the agent
//! reconnects with a backoff of 1 s doubling up to 10 s, until the shutdown signal.

mod collective;
mod job;
mod session;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use candle_core::Device;
use ssgan_proto::v1::GpuInfo;
use tokio::sync::watch;

use crate::DeviceSpec;

use session::{Session, SessionEnd};

/// Time between reconnection attempts: doubled after each failure, up to the maximum.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Settings of one worker process.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// URL of the coordinator's gRPC endpoint, such as `http://127.0.0.1:50051`.
    pub coordinator_url: String,
    /// Device that the worker trains on: "cpu", or "cuda:N" in a build with the `cuda`
    /// feature.
    pub device: String,
    /// Number of compute threads, reported in the Join message. The agent does not size
    /// thread pools itself: call [`crate::threads::init_thread_pools`] before starting the
    /// async runtime.
    pub threads: u32,
    /// Address that ring listeners bind (port 0) and that the other ranks connect to.
    pub ring_host: IpAddr,
    /// Ends the agent when the coordinator's stream ends instead of reconnecting, for worker
    /// processes that a coordinator process started and that must not outlive it.
    pub exit_on_disconnect: bool,
}

impl AgentOptions {
    /// Options for a CPU worker with `threads` threads and ring listeners on 127.0.0.1.
    pub fn new(coordinator_url: impl Into<String>, threads: u32) -> Self {
        Self {
            coordinator_url: coordinator_url.into(),
            device: "cpu".into(),
            threads,
            ring_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            exit_on_disconnect: false,
        }
    }
}

/// Failures that end the agent; every other failure leads to a reconnection.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The options are unusable.
    #[error("invalid worker option {option} = {value:?}: expected {expected}")]
    InvalidOption {
        option: &'static str,
        value: String,
        expected: &'static str,
    },
    /// The training device could not be opened.
    #[error("cannot open device {device}: {source}")]
    Device {
        device: String,
        source: Box<crate::WorkerError>,
    },
    /// The coordinator rejected this worker, for example because its version differs.
    #[error("the coordinator at {url} rejected this worker: {status}")]
    Rejected { url: String, status: tonic::Status },
}

/// Runs the worker until `shutdown` completes, reconnecting to the coordinator whenever the
/// stream ends. On shutdown a run in progress is aborted, and its RunEnded is sent when the
/// stream is still open.
pub async fn run_agent(
    options: AgentOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    let spec = check_options(&options)?;
    let device = AgentDevice::open(spec)?;
    let (signal, mut stopped) = watch::channel(false);
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = signal.send(true);
    });
    let result = reconnect_loop(&options, &device, &mut stopped).await;
    watcher.abort();
    result
}

async fn reconnect_loop(
    options: &AgentOptions,
    device: &AgentDevice,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let worker_id = worker_id();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let session = Session::new(options, device, &worker_id, stopped.clone());
        match session.run().await? {
            SessionEnd::Shutdown => return Ok(()),
            SessionEnd::Lost { .. } if options.exit_on_disconnect => {
                tracing::debug!(worker_id, "the coordinator stream ended, exiting");
                return Ok(());
            }
            SessionEnd::Lost { welcomed } if welcomed => backoff = FIRST_BACKOFF,
            SessionEnd::Lost { .. } => {}
        }
        tracing::debug!(worker_id, ?backoff, "reconnecting to the coordinator");
        if wait_or_shutdown(stopped, backoff).await {
            return Ok(());
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sleeps for `delay`; returns true when the shutdown signal came first.
async fn wait_or_shutdown(stopped: &mut watch::Receiver<bool>, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = shutdown_signalled(stopped) => true,
    }
}

/// Completes once the shutdown flag is set, or once its sender is gone.
pub(crate) async fn shutdown_signalled(stopped: &mut watch::Receiver<bool>) {
    // The guard that `wait_for` returns is not Send, so it is dropped here at once.
    let _ = stopped.wait_for(|s| *s).await.is_ok();
}

fn check_options(options: &AgentOptions) -> Result<DeviceSpec, AgentError> {
    let Ok(spec) = DeviceSpec::parse(&options.device) else {
        return Err(AgentError::InvalidOption {
            option: "device",
            value: options.device.clone(),
            expected: "\"cpu\" or \"cuda:N\"",
        });
    };
    if options.threads == 0 {
        return Err(AgentError::InvalidOption {
            option: "threads",
            value: "0".into(),
            expected: "at least 1",
        });
    }
    Ok(spec)
}

/// The device of a worker process, opened once and shared by all its ranks.
pub(crate) struct AgentDevice {
    pub spec: DeviceSpec,
    pub device: Device,
    /// Reported in the Join; `None` on a CPU worker.
    pub gpu: Option<GpuInfo>,
}

impl AgentDevice {
    fn open(spec: DeviceSpec) -> Result<Self, AgentError> {
        let device_error = |source| AgentError::Device {
            device: spec.to_string(),
            source: Box::new(source),
        };
        let device = spec.open().map_err(device_error)?;
        let gpu = gpu_info(&device).map_err(device_error)?;
        if let Some(gpu) = &gpu {
            tracing::debug!(%spec, name = %gpu.name, nccl_version = gpu.nccl_version, cuda_driver_version = gpu.cuda_driver_version, "opened the GPU");
        }
        Ok(Self { spec, device, gpu })
    }
}

#[cfg(feature = "cuda")]
fn gpu_info(device: &Device) -> crate::Result<Option<GpuInfo>> {
    let Device::Cuda(cuda) = device else {
        return Ok(None);
    };
    let info = ssgan_collective::gpu_info(cuda).map_err(ssgan_model::ModelError::from)?;
    Ok(Some(GpuInfo {
        name: info.name,
        cuda_driver_version: info.cuda_driver_version,
        driver_version: info.driver_version,
        cuda_runtime_version: info.cuda_runtime_version,
        nccl_version: info.nccl_version,
    }))
}

#[cfg(not(feature = "cuda"))]
fn gpu_info(_device: &Device) -> crate::Result<Option<GpuInfo>> {
    Ok(None)
}

/// Returns `<hostname>:<pid>`, unique per process.
fn worker_id() -> String {
    format!("{}:{}", hostname(), std::process::id())
}

/// Returns the host name from the kernel, the HOSTNAME variable, or "localhost".
pub(crate) fn hostname() -> String {
    let from_kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let name = from_kernel.or_else(|| std::env::var("HOSTNAME").ok());
    let name = name.map(|n| n.trim().to_string()).unwrap_or_default();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}
