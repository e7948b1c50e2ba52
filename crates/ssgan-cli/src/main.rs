//! The `ssgan` command: train SS-GAN, sample from checkpoints, benchmark steps.

mod bench;
mod bench_allreduce;
mod bench_data;
mod bench_fid;
mod fid;
mod gpus;
mod progress;
mod run_client;
mod sample;
mod services;
mod startup_run;
mod text;
mod train;
mod train_eval;
mod train_workers;

use clap::{Parser, Subcommand};

/// Train and use self-supervised GANs (SS-GAN).
#[derive(Parser)]
#[command(name = "ssgan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// CPU threads of every compute pool (candle's kernels, the GEMMs and the project's own
    /// kernels). Default: RAYON_NUM_THREADS if set, else one per available core.
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on this machine; the same --run-id resumes from its newest checkpoint.
    Train(train::TrainArgs),
    /// Write a PNG grid of images generated from a committed checkpoint.
    Sample(sample::SampleArgs),
    /// Print the FID between two image sets or statistics files.
    Fid(fid::FidArgs),
    /// Write pytorch-fid-compatible statistics (mu, sigma) of an image set to a .npz file.
    FidStats(fid::FidStatsArgs),
    /// Measure throughput.
    Bench(bench::BenchArgs),
    /// Create, inspect, stop, resume and watch runs of a coordinator.
    Run(run_client::RunArgs),
    /// Serve the gRPC API, keep the run registry and schedule runs on workers.
    Coordinator(services::CoordinatorArgs),
    /// Join a coordinator and train the ranks it assigns.
    Worker(services::WorkerArgs),
    /// Join a coordinator and compute the FID of the checkpoints it assigns.
    Evaluator(services::EvaluatorArgs),
}

fn main() {
    restore_sigpipe();
    let cli = Cli::parse();
    if let Err(error) = set_threads(cli.threads) {
        eprintln!("error: {}", error_chain(&error));
        std::process::exit(2);
    }
    // After set_threads, because the OTLP export starts threads of its own.
    let telemetry = match init_telemetry(&cli.command) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    };
    let result = match cli.command {
        Command::Train(args) => train::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Fid(args) => fid::run_fid(args),
        Command::FidStats(args) => fid::run_fid_stats(args),
        Command::Bench(args) => bench::run(args),
        Command::Run(args) => run_client::run(args),
        Command::Coordinator(args) => services::run_coordinator(args),
        Command::Worker(args) => services::run_worker(args),
        Command::Evaluator(args) => services::run_evaluator_process(args),
    };
    telemetry.shutdown();
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            std::process::exit(1);
        }
    }
}

/// Lets a closed standard output end the process quietly, as for other Unix tools (for
/// example `ssgan run watch ID | head`), instead of a panic in `println!`. Rust starts
/// programs with SIGPIPE ignored.
fn restore_sigpipe() {
    // SAFETY: runs first in main, before any thread exists, and installs the default
    // disposition, which needs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sizes the rayon pool that candle, gemm and the project's kernels share.
///
/// candle reads RAYON_NUM_THREADS on each call to size its GEMMs, so the variable is set too.
/// This runs before any other thread exists, which keeps `set_var` sound.
fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    let Some(threads) = threads else {
        return Ok(());
    };
    anyhow::ensure!(
        threads >= 1,
        "invalid --threads 0: expected at least 1 thread"
    );
    // SAFETY: called from main before any thread is spawned.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    Ok(())
}

/// Joins an error and its causes with ": ", leaving out a cause whose text the message
/// before it already contains.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text.replace('\n', " ")
}

/// Logs to stderr, and exports spans and metrics when OTEL_EXPORTER_OTLP_ENDPOINT is set.
/// RUST_LOG overrides the default of `info` for this binary and `warn` elsewhere. The
/// coordinator also logs its run state changes, worker joins and losses, and the evaluator
/// its evaluations, which their libraries write at debug level.
fn init_telemetry(
    command: &Command,
) -> Result<ssgan_telemetry::Telemetry, ssgan_telemetry::TelemetryError> {
    let (service, default) = match command {
        Command::Coordinator(_) => (
            "ssgan-coordinator",
            "warn,ssgan=info,ssgan_coordinator=debug",
        ),
        Command::Evaluator(_) => ("ssgan-evaluator", "warn,ssgan=info,ssgan_evaluator=debug"),
        Command::Worker(_) => ("ssgan-worker", "warn,ssgan=info"),
        _ => ("ssgan", "warn,ssgan=info"),
    };
    ssgan_telemetry::init(service, default)
}
