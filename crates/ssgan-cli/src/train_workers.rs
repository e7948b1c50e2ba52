//! `ssgan train --workers N`: a coordinator in this process and N `ssgan worker` child
//! processes on this machine, driven through the coordinator's RunService.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ssgan_coordinator::{Coordinator, CoordinatorOptions};
use ssgan_model::{DiscriminatorMetrics, GeneratorMetrics};
use ssgan_proto::v1::run_event::Event;
use ssgan_proto::v1::run_service_client::RunServiceClient;
use ssgan_proto::v1::{
    CreateRunRequest, GetRunRequest, ResumeRunRequest, Run, RunState, StepMetrics, StopRunRequest,
    WatchRunRequest,
};
use ssgan_worker::{RunConfig, StepReport};
use tonic::transport::Channel;

use crate::progress::Progress;
use crate::run_client::{connect, state_name};
use crate::text::counted;
use crate::train_eval::{log_evaluations, spawn_evaluator, wait_for_evaluations};

/// Time that worker processes get to exit after SIGTERM before they are killed.
const WORKER_EXIT_GRACE: Duration = Duration::from_secs(10);

/// Settings of `train --workers`: the run and how to start its processes.
pub struct Launch {
    pub config: RunConfig,
    pub run_id: String,
    pub workers: u32,
    pub storage: String,
    pub listen: SocketAddr,
    /// Compute threads of each worker process.
    pub threads_per_worker: usize,
    /// Local FID Inception weights of an evaluator process to start; None: no evaluator.
    pub eval_weights: Option<PathBuf>,
}

pub fn run(launch: Launch) -> Result<i32> {
    launch.config.validate(launch.workers as usize)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(launch))
}

async fn run_async(launch: Launch) -> Result<i32> {
    let options = CoordinatorOptions::new(launch.listen, launch.storage.clone());
    let coordinator = Coordinator::start(options).await.with_context(|| {
        format!(
            "cannot start the coordinator on {}; pass a free address with --listen",
            launch.listen
        )
    })?;
    let url = format!("http://{}", coordinator.local_addr());
    tracing::info!(
        "coordinator at {url}; in another terminal: ssgan run watch {} --coordinator {url}",
        launch.run_id
    );
    let mut workers = spawn_workers(&launch, &url)?;
    let mut evaluator = match &launch.eval_weights {
        Some(weights) => Some(spawn_evaluator(&url, weights, launch.threads_per_worker)?),
        None => None,
    };
    let result = drive_run(&url, &launch, evaluator.as_mut()).await;
    workers.extend(evaluator);
    stop_workers(&mut workers).await;
    if let Err(error) = coordinator.shutdown().await {
        tracing::warn!(run_id = %launch.run_id, %error, "the coordinator did not shut down cleanly");
    }
    result
}

fn spawn_workers(launch: &Launch, url: &str) -> Result<Vec<Child>> {
    let exe = std::env::current_exe().context("cannot find the ssgan executable")?;
    let mut children = Vec::new();
    for index in 0..launch.workers {
        let child = Command::new(&exe)
            .args(["--threads", &launch.threads_per_worker.to_string()])
            .args(["worker", "--coordinator", url, "--exit-on-disconnect"])
            .stdin(Stdio::null())
            // A process group of its own keeps a terminal's Ctrl-C away from the worker, so
            // that only this process reacts to it, by stopping the run with a checkpoint.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start worker process {index}"))?;
        tracing::debug!(pid = child.id(), index, "started worker process");
        children.push(child);
    }
    Ok(children)
}

/// Sends SIGTERM to every worker, waits for them, and kills those still running after
/// [`WORKER_EXIT_GRACE`].
async fn stop_workers(children: &mut [Child]) {
    for child in children.iter() {
        terminate(child);
    }
    let deadline = tokio::time::Instant::now() + WORKER_EXIT_GRACE;
    for child in children.iter_mut() {
        while matches!(child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if matches!(child.try_wait(), Ok(None)) {
            tracing::warn!(
                pid = child.id(),
                "worker did not exit after SIGTERM, killing it"
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with the pid of our own child and a valid signal number has no memory
    // effects. For a child that already exited it fails with ESRCH, which is ignored.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// Creates or resumes the run, shows its progress, and stops it on Ctrl-C. With an evaluator,
/// waits for the run's pending evaluations before returning.
async fn drive_run(url: &str, launch: &Launch, evaluator: Option<&mut Child>) -> Result<i32> {
    let mut client = connect(url).await?;
    let Some(run) = ensure_run(&mut client, launch).await? else {
        return Ok(0);
    };
    announce(&run);
    let mut progress = Progress::new(run.step, run.target_steps);
    let state = watch_until_done(&mut client, &launch.run_id, &mut progress).await;
    progress.finish();
    if let Some(evaluator) = evaluator {
        wait_for_evaluations(&mut client, &launch.run_id, evaluator).await?;
    }
    report_end(&mut client, &launch.run_id, state?, &progress).await
}

/// Creates the run, or resumes it when the storage already has a run of that id. Returns
/// None when the run has already reached train.steps.
async fn ensure_run(
    client: &mut RunServiceClient<Channel>,
    launch: &Launch,
) -> Result<Option<Run>> {
    let run_id = launch.run_id.clone();
    let existing = client
        .get_run(GetRunRequest {
            run_id: run_id.clone(),
        })
        .await;
    let run = match existing {
        Err(status) if status.code() == tonic::Code::NotFound => {
            let request = CreateRunRequest {
                config_toml: launch.config.to_toml(),
                run_id,
                request_id: String::new(),
                workers: launch.workers,
            };
            client.create_run(request).await
        }
        Err(status) => Err(status),
        Ok(response) => return resume_existing(client, response.into_inner(), launch).await,
    };
    let run = run
        .map(tonic::Response::into_inner)
        .map_err(|status| anyhow::anyhow!("cannot create the run: {}", status.message()))?;
    Ok(Some(run))
}

async fn resume_existing(
    client: &mut RunServiceClient<Channel>,
    run: Run,
    launch: &Launch,
) -> Result<Option<Run>> {
    let target = launch.config.train.steps;
    let state = RunState::try_from(run.state).unwrap_or(RunState::Unspecified);
    if run.world_size != launch.workers {
        let hint = match run.world_size {
            1 => "leave out --workers to resume it in one process".to_owned(),
            size => format!("pass --workers {size}"),
        };
        bail!(
            "run {} was created with {}, not {}; {hint}",
            run.run_id,
            counted(run.world_size, "worker process"),
            launch.workers
        );
    }
    if state == RunState::Succeeded && run.step >= target {
        tracing::warn!(
            run_id = %run.run_id,
            "the run is already at step {}, at or past train.steps = {target}; nothing to train (raise --steps to continue)",
            run.step
        );
        return Ok(None);
    }
    match state {
        RunState::Stopped | RunState::Failed | RunState::Succeeded => {
            let request = ResumeRunRequest {
                run_id: run.run_id.clone(),
                step: None,
                target_steps: Some(target),
            };
            let resumed = client.resume_run(request).await.map_err(|status| {
                anyhow::anyhow!("cannot resume run {}: {}", run.run_id, status.message())
            })?;
            Ok(Some(resumed.into_inner()))
        }
        // A restarted coordinator schedules PENDING, RUNNING and RECOVERING runs itself.
        _ => Ok(Some(run)),
    }
}

fn announce(run: &Run) {
    match run.latest_checkpoint_step {
        Some(step) => tracing::info!(
            run_id = %run.run_id,
            "resuming from step {step} of {} with {}",
            run.target_steps,
            counted(run.world_size, "worker")
        ),
        None => tracing::info!(
            run_id = %run.run_id,
            "starting a new run of {} steps with {}",
            run.target_steps,
            counted(run.world_size, "worker")
        ),
    }
}

/// Follows the run's events until it ends, asking for a stop on the first Ctrl-C or SIGTERM;
/// a second one exits at once with status 130.
async fn watch_until_done(
    client: &mut RunServiceClient<Channel>,
    run_id: &str,
    progress: &mut Progress,
) -> Result<RunState> {
    let request = WatchRunRequest {
        run_id: run_id.to_string(),
        from_step: 0,
    };
    let mut stream = client.watch_run(request).await?.into_inner();
    let mut stop_requested = false;
    let mut interrupts = Interrupts::new()?;
    let mut state = RunState::Unspecified;
    loop {
        tokio::select! {
            message = stream.message() => match message? {
                Some(event) => apply_event(event.event, progress, &mut state),
                None => return Ok(state),
            },
            () = interrupts.next() => {
                if stop_requested {
                    eprintln!("second interrupt: exiting without waiting for the checkpoint");
                    std::process::exit(130);
                }
                stop_requested = true;
                eprintln!("interrupt: stopping the run after a checkpoint (Ctrl-C again to abort)");
                let request = StopRunRequest { run_id: run_id.to_string() };
                if let Err(status) = client.stop_run(request).await {
                    tracing::warn!(run_id, "cannot stop the run: {}", status.message());
                }
            }
        }
    }
}

fn apply_event(event: Option<Event>, progress: &mut Progress, state: &mut RunState) {
    match event {
        Some(Event::Step(metrics)) => progress.update(&step_report(&metrics, progress)),
        Some(Event::State(change)) => {
            *state = RunState::try_from(change.state).unwrap_or(RunState::Unspecified);
            if !change.message.is_empty() {
                tracing::info!("run {}: {}", state_name(change.state), change.message);
            } else {
                tracing::debug!("run {}", state_name(change.state));
            }
        }
        Some(Event::Checkpoint(checkpoint)) => {
            tracing::debug!(step = checkpoint.step, "checkpoint committed")
        }
        _ => {}
    }
}

/// Converts a step that rank 0 reported into the progress bar's report. Losses and accuracy
/// are those of rank 0's shard of the global batch.
fn step_report(metrics: &StepMetrics, progress: &Progress) -> StepReport {
    StepReport {
        step: metrics.step,
        target_steps: progress.target(),
        discriminator: DiscriminatorMetrics {
            loss: metrics.loss_d,
            rotation: metrics.rotation_loss_d,
            rotation_accuracy: metrics.rotation_accuracy,
            ..Default::default()
        },
        generator: GeneratorMetrics {
            loss: metrics.loss_g,
            rotation: metrics.rotation_loss_g,
            ..Default::default()
        },
        seconds: metrics.step_seconds,
        // The coordinator's step reports do not carry the data and collective times.
        data_seconds: 0.0,
        collective_seconds: 0.0,
        images_per_second: metrics.images_per_second,
    }
}

async fn report_end(
    client: &mut RunServiceClient<Channel>,
    run_id: &str,
    state: RunState,
    progress: &Progress,
) -> Result<i32> {
    if let Some(summary) = progress.summary() {
        tracing::info!("{summary}");
    }
    let run = client
        .get_run(GetRunRequest {
            run_id: run_id.to_string(),
        })
        .await?
        .into_inner();
    if let Some(step) = run.latest_checkpoint_step {
        tracing::info!(run_id, "checkpoint {step}: {}", run.latest_checkpoint_url);
    }
    log_evaluations(&run);
    match state {
        RunState::Succeeded => Ok(0),
        RunState::Stopped => {
            tracing::info!(
                run_id,
                "stopped; run the same command with --run-id {run_id} to resume"
            );
            Ok(0)
        }
        other => bail!(
            "run {run_id} ended {}: {}",
            state_name(other as i32),
            run.message
        ),
    }
}

/// A stream of Ctrl-C and SIGTERM deliveries.
struct Interrupts {
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    fn new() -> Result<Self> {
        let kind = tokio::signal::unix::SignalKind::terminate();
        let terminate =
            tokio::signal::unix::signal(kind).context("cannot install the SIGTERM handler")?;
        Ok(Self { terminate })
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
