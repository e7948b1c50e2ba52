//! `ssgan run create|get|list|stop|resume|watch`: the client of the coordinator's RunService.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ssgan_proto::v1::run_event::Event;
use ssgan_proto::v1::run_service_client::RunServiceClient;
use ssgan_proto::v1::{
    CreateRunRequest, GetRunRequest, ListRunsRequest, ResumeRunRequest, Run, RunState, StepMetrics,
    StopRunRequest, WatchRunRequest,
};
use ssgan_worker::RunConfig;
use tonic::transport::Channel;

/// Address of the coordinator when neither --coordinator nor SSGAN_COORDINATOR is set.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

#[derive(Args)]
pub struct RunArgs {
    /// Coordinator URL.
    #[arg(
        long,
        global = true,
        env = "SSGAN_COORDINATOR",
        default_value = DEFAULT_COORDINATOR
    )]
    coordinator: String,
    #[command(subcommand)]
    command: RunCommand,
}

#[derive(Subcommand)]
enum RunCommand {
    /// Create a run from a config and print its id; it starts when enough workers are idle.
    Create(CreateArgs),
    /// Print a run's state, progress, last metrics and checkpoints.
    Get(RunIdArgs),
    /// Print every run of the coordinator's registry.
    List(ListArgs),
    /// Commit a checkpoint and stop a run.
    Stop(RunIdArgs),
    /// Resume a stopped or failed run from a committed checkpoint.
    Resume(ResumeArgs),
    /// Stream a run's state changes and step metrics until it ends.
    Watch(WatchArgs),
}

#[derive(Args)]
struct CreateArgs {
    /// Run config (TOML), such as configs/cifar10-cpu-demo.toml.
    #[arg(long)]
    config: PathBuf,
    /// Number of worker processes; train.batch_size must be divisible by it.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Generator steps to train in total; the same as --set train.steps=N.
    #[arg(long)]
    steps: Option<u64>,
    /// Run id: 1 to 64 letters, digits, '.', '_' or '-'. Default: chosen by the coordinator.
    #[arg(long)]
    run_id: Option<String>,
    /// Key for safe retries: creating again with the same key returns the first run.
    #[arg(long)]
    request_id: Option<String>,
    /// Override one config key, such as --set model.ch=32 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

#[derive(Args)]
struct RunIdArgs {
    run_id: String,
    /// Print the run as one line of JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ListArgs {
    /// Print one line of JSON per run.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ResumeArgs {
    run_id: String,
    /// Step of the committed checkpoint to resume from. Default: the latest one.
    #[arg(long)]
    step: Option<u64>,
    /// New total of generator steps (train.steps). Default: the run's current target.
    #[arg(long)]
    steps: Option<u64>,
}

#[derive(Args)]
struct WatchArgs {
    run_id: String,
    /// First step whose metrics are printed. The coordinator replays the steps it still
    /// keeps in memory from this step on.
    #[arg(long, default_value_t = 0)]
    from_step: u64,
}

pub fn run(args: RunArgs) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(dispatch(args))
}

async fn dispatch(args: RunArgs) -> Result<i32> {
    let mut client = connect(&args.coordinator).await?;
    match args.command {
        RunCommand::Create(create) => create_run(&mut client, create).await,
        RunCommand::Get(get) => get_run(&mut client, get).await,
        RunCommand::List(list) => list_runs(&mut client, list).await,
        RunCommand::Stop(stop) => stop_run(&mut client, stop).await,
        RunCommand::Resume(resume) => resume_run(&mut client, resume).await,
        RunCommand::Watch(watch) => watch_run(&mut client, watch).await,
    }
}

/// Connects to the coordinator's RunService at `url`.
pub async fn connect(url: &str) -> Result<RunServiceClient<Channel>> {
    RunServiceClient::connect(url.to_string())
        .await
        .with_context(|| {
            format!("cannot connect to the coordinator at {url}; start one with `ssgan coordinator` or pass --coordinator")
        })
}

async fn create_run(client: &mut RunServiceClient<Channel>, args: CreateArgs) -> Result<i32> {
    let mut overrides = args.overrides.clone();
    if let Some(steps) = args.steps {
        overrides.push(format!("train.steps={steps}"));
    }
    let config = RunConfig::load(&args.config, &overrides)?;
    config.validate(args.workers as usize)?;
    let request = CreateRunRequest {
        config_toml: config.to_toml(),
        run_id: args.run_id.unwrap_or_default(),
        request_id: args.request_id.unwrap_or_default(),
        workers: args.workers,
    };
    let run = rpc(client.create_run(request).await)?;
    println!("{}", run.run_id);
    Ok(0)
}

async fn get_run(client: &mut RunServiceClient<Channel>, args: RunIdArgs) -> Result<i32> {
    let request = GetRunRequest {
        run_id: args.run_id,
    };
    let run = rpc(client.get_run(request).await)?;
    print_run(&run, args.json);
    Ok(0)
}

async fn list_runs(client: &mut RunServiceClient<Channel>, args: ListArgs) -> Result<i32> {
    let runs = rpc(client.list_runs(ListRunsRequest {}).await)?.runs;
    if !args.json {
        println!(
            "{:<24} {:<11} {:>15} {:>8}",
            "RUN", "STATE", "STEP", "WORKERS"
        );
    }
    for run in &runs {
        if args.json {
            println!("{}", run_json(run));
        } else {
            let step = format!("{}/{}", run.step, run.target_steps);
            println!(
                "{:<24} {:<11} {:>15} {:>8}",
                run.run_id,
                state_name(run.state),
                step,
                run.world_size
            );
        }
    }
    Ok(0)
}

async fn stop_run(client: &mut RunServiceClient<Channel>, args: RunIdArgs) -> Result<i32> {
    let request = StopRunRequest {
        run_id: args.run_id,
    };
    let run = rpc(client.stop_run(request).await)?;
    print_run(&run, args.json);
    Ok(0)
}

async fn resume_run(client: &mut RunServiceClient<Channel>, args: ResumeArgs) -> Result<i32> {
    let request = ResumeRunRequest {
        run_id: args.run_id,
        step: args.step,
        target_steps: args.steps,
    };
    let run = rpc(client.resume_run(request).await)?;
    print_run(&run, false);
    Ok(0)
}

async fn watch_run(client: &mut RunServiceClient<Channel>, args: WatchArgs) -> Result<i32> {
    let request = WatchRunRequest {
        run_id: args.run_id.clone(),
        from_step: args.from_step,
    };
    let mut stream = rpc(client.watch_run(request).await)?;
    let mut last_state = RunState::Unspecified;
    while let Some(event) = stream.message().await.map_err(status_error)? {
        if let Some(state) = print_event(event.event) {
            last_state = state;
        }
    }
    match last_state {
        RunState::Failed => Ok(1),
        _ => Ok(0),
    }
}

/// Prints one event of WatchRun and returns the new state when the event is a state change.
fn print_event(event: Option<Event>) -> Option<RunState> {
    match event? {
        Event::State(change) => {
            let state = RunState::try_from(change.state).unwrap_or(RunState::Unspecified);
            let detail = if change.message.is_empty() {
                String::new()
            } else {
                format!(": {}", change.message)
            };
            println!(
                "state {} (attempt {}){detail}",
                state_name(change.state),
                change.attempt
            );
            return Some(state);
        }
        Event::Step(metrics) => println!("{}", step_line(&metrics)),
        Event::Checkpoint(checkpoint) => {
            println!("checkpoint {} {}", checkpoint.step, checkpoint.url)
        }
        Event::Eval(eval) => println!(
            "eval step {} fid {:.4} ({} samples)",
            eval.step, eval.fid, eval.samples
        ),
    }
    None
}

/// Unwraps a response, turning a gRPC status into one line with its code and message.
fn rpc<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
    result
        .map(tonic::Response::into_inner)
        .map_err(status_error)
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "the coordinator returned {:?}: {}",
        status.code(),
        status.message()
    )
}

fn step_line(metrics: &StepMetrics) -> String {
    format!(
        "step {} loss_d {:.4} loss_g {:.4} rot_acc_real {:.3} {:.1} img/s",
        metrics.step,
        metrics.loss_d,
        metrics.loss_g,
        metrics.rotation_accuracy,
        metrics.images_per_second
    )
}

fn print_run(run: &Run, json: bool) {
    if json {
        println!("{}", run_json(run));
        return;
    }
    println!("run        {}", run.run_id);
    println!("state      {}", state_name(run.state));
    println!(
        "step       {}/{} ({:.1} %)",
        run.step,
        run.target_steps,
        run.progress * 100.0
    );
    println!("workers    {}", run.world_size);
    println!("attempt    {}", run.attempt);
    if let Some(eta) = run.eta_seconds {
        println!("eta        {eta:.0} s");
    }
    if let Some(step) = run.latest_checkpoint_step {
        println!("checkpoint {step} {}", run.latest_checkpoint_url);
    }
    if let Some(metrics) = &run.last_step {
        println!("last       {}", step_line(metrics));
    }
    for eval in &run.evals {
        println!("fid        step {} {:.4}", eval.step, eval.fid);
    }
    if !run.message.is_empty() {
        println!("message    {}", run.message);
    }
}

fn run_json(run: &Run) -> serde_json::Value {
    serde_json::json!({
        "run_id": run.run_id,
        "state": state_name(run.state),
        "step": run.step,
        "target_steps": run.target_steps,
        "world_size": run.world_size,
        "attempt": run.attempt,
        "latest_checkpoint_step": run.latest_checkpoint_step,
        "latest_checkpoint_url": run.latest_checkpoint_url,
        "best_checkpoint_step": run.best_checkpoint_step,
        "progress": run.progress,
        "eta_seconds": run.eta_seconds,
        "loss_d": run.last_step.as_ref().map(|m| m.loss_d),
        "loss_g": run.last_step.as_ref().map(|m| m.loss_g),
        "rotation_accuracy": run.last_step.as_ref().map(|m| m.rotation_accuracy),
        "images_per_second": run.last_step.as_ref().map(|m| m.images_per_second),
        "message": run.message,
    })
}

/// Returns the state's name as run.json spells it, such as RUNNING: the proto enum name
/// without its `RUN_STATE_` prefix.
pub fn state_name(state: i32) -> &'static str {
    match RunState::try_from(state) {
        Ok(RunState::Unspecified) | Err(_) => "UNKNOWN",
        Ok(known) => known
            .as_str_name()
            .strip_prefix("RUN_STATE_")
            .unwrap_or("UNKNOWN"),
    }
}
