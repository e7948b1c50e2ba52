//! `ssgan coordinator`, `ssgan worker` and `ssgan evaluator`: the long-running processes of
//! the service.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use ssgan_coordinator::{Coordinator, CoordinatorOptions};
use ssgan_evaluator::{EvaluatorOptions, run_evaluator};
use ssgan_worker::agent::{AgentOptions, run_agent};

use crate::run_client::DEFAULT_COORDINATOR;
use crate::startup_run::StartupRunArgs;

#[derive(Args)]
pub struct CoordinatorArgs {
    /// Address of the gRPC server (RunService, WorkerService, health, reflection).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Storage root of the run registry and checkpoints: a local directory, or a file://,
    /// s3://, gs:// or az:// URL. Workers must be able to reach the same storage.
    #[arg(long, default_value = "ssgan-output")]
    storage: String,
    /// Seconds between the messages that every worker must send.
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// Seconds of silence after which a worker counts as lost and its run restarts.
    #[arg(long, default_value_t = 30)]
    heartbeat_timeout_seconds: u64,
    /// Restarts of a run after lost workers or failed attempts before it becomes FAILED.
    #[arg(long, default_value_t = 3)]
    restart_limit: u32,
    #[command(flatten)]
    startup: StartupRunArgs,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// URL of the coordinator.
    #[arg(long, env = "SSGAN_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    coordinator: String,
    /// Device to train on: "cpu", or "cuda:N" (the N-th visible GPU) in a build with the
    /// `cuda` feature.
    #[arg(long, default_value = "cpu", conflicts_with = "gpus")]
    device: String,
    /// Start one worker process per GPU instead ("all" or a count), each with
    /// --device cuda:I, and supervise them. Needs the `cuda` feature.
    #[arg(long, value_name = "all|N")]
    gpus: Option<crate::gpus::GpuCount>,
    /// Address that this worker's ring listener binds, on a free port, and that the other
    /// ranks connect to; use an address they can reach.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    ring_host: IpAddr,
    /// Exit when the coordinator's stream ends, instead of reconnecting.
    #[arg(long, hide = true)]
    exit_on_disconnect: bool,
}

#[derive(Args)]
pub struct EvaluatorArgs {
    /// URL of the coordinator.
    #[arg(long, env = "SSGAN_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    coordinator: String,
    /// FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a
    /// zip-format .pth or .safetensors with the same keys), as a local path or a URL
    /// (https://, s3://, gs://, az://) that is downloaded once into ~/.cache/ssgan.
    #[arg(long, value_name = "PATH_OR_URL")]
    inception_weights: String,
    /// Exit when the coordinator's stream ends, instead of reconnecting.
    #[arg(long, hide = true)]
    exit_on_disconnect: bool,
}

pub fn run_coordinator(args: CoordinatorArgs) -> Result<i32> {
    anyhow::ensure!(
        args.heartbeat_seconds >= 1 && args.heartbeat_timeout_seconds > args.heartbeat_seconds,
        "invalid heartbeat settings {} s / timeout {} s: expected an interval of at least 1 s and a longer timeout",
        args.heartbeat_seconds,
        args.heartbeat_timeout_seconds
    );
    let mut options = CoordinatorOptions::new(args.listen, args.storage.clone());
    options.heartbeat_interval = Duration::from_secs(args.heartbeat_seconds);
    options.heartbeat_timeout = Duration::from_secs(args.heartbeat_timeout_seconds);
    options.restart_limit = args.restart_limit;
    let startup = args.startup.load()?;
    runtime()?.block_on(async {
        tracing::info!(listen = %args.listen, storage = %args.storage, "coordinator starting");
        let failed = || format!("coordinator on {} failed", args.listen);
        let coordinator = Coordinator::start(options).await.with_context(failed)?;
        if let Some(run) = &startup
            && let Err(error) = run.ensure(coordinator.local_addr()).await
        {
            coordinator.shutdown().await.with_context(failed)?;
            return Err(error);
        }
        coordinator
            .run_until(termination())
            .await
            .with_context(failed)?;
        tracing::info!("coordinator stopped");
        Ok(0)
    })
}

pub fn run_worker(args: WorkerArgs) -> Result<i32> {
    if let Some(gpus) = args.gpus {
        let mut shared = vec![
            "--coordinator".to_owned(),
            args.coordinator.clone(),
            "--ring-host".to_owned(),
            args.ring_host.to_string(),
        ];
        if args.exit_on_disconnect {
            shared.push("--exit-on-disconnect".to_owned());
        }
        return crate::gpus::run_per_gpu(gpus, &shared);
    }
    let threads = u32::try_from(rayon::current_num_threads()).unwrap_or(u32::MAX);
    let mut options = AgentOptions::new(args.coordinator.clone(), threads);
    options.device = args.device;
    options.ring_host = args.ring_host;
    options.exit_on_disconnect = args.exit_on_disconnect;
    runtime()?.block_on(async {
        tracing::info!(coordinator = %args.coordinator, threads, "worker starting");
        run_agent(options, termination()).await?;
        tracing::info!("worker stopped");
        Ok(0)
    })
}

pub fn run_evaluator_process(args: EvaluatorArgs) -> Result<i32> {
    let threads = u32::try_from(rayon::current_num_threads()).unwrap_or(u32::MAX);
    let mut options =
        EvaluatorOptions::new(args.coordinator.clone(), args.inception_weights, threads);
    options.exit_on_disconnect = args.exit_on_disconnect;
    runtime()?.block_on(async {
        tracing::info!(coordinator = %args.coordinator, threads, "evaluator starting");
        run_evaluator(options, termination()).await?;
        tracing::info!("evaluator stopped");
        Ok(0)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Completes on Ctrl-C or SIGTERM.
async fn termination() {
    let kind = tokio::signal::unix::SignalKind::terminate();
    match tokio::signal::unix::signal(kind) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(error) => {
            tracing::warn!(%error, "cannot install the SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
