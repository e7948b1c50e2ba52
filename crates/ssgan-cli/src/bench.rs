//! `ssgan bench`: throughput measurements.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ssgan_worker::RunConfig;
use ssgan_worker::bench::bench_step;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    kind: BenchKind,
}

#[derive(Subcommand)]
enum BenchKind {
    /// Images per second of full training steps (n_dis discriminator steps and one generator
    /// step) on one process.
    Step(StepArgs),
    /// Inception features per second of FID feature extraction.
    Fid(crate::bench_fid::FidBenchArgs),
}

#[derive(Args)]
struct StepArgs {
    /// Run config (TOML) whose model, batch and data are measured.
    #[arg(long)]
    config: PathBuf,
    /// Override one config key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Global batch size measured, replacing the config's train.batch_size.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Untimed steps before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps; the median is reported.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Print one line of JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<i32> {
    let args = match args.kind {
        BenchKind::Step(args) => args,
        BenchKind::Fid(args) => return crate::bench_fid::run(args),
    };
    anyhow::ensure!(
        args.steps >= 1,
        "invalid --steps 0: expected at least 1 timed step"
    );
    let mut overrides = args.overrides.clone();
    overrides.push(format!("train.batch_size={}", args.batch_size));
    let config = RunConfig::load(&args.config, &overrides)?;
    let result = bench_step(config, args.warmup, args.steps)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{:.2} images/s, median step {:.3} s (min {:.3}, max {:.3}) over {} steps after {} warm-up; batch {}, n_dis {}, G width {}, D width {}, {} threads",
            result.images_per_second,
            result.step_seconds_median,
            result.step_seconds_min,
            result.step_seconds_max,
            result.measured_steps,
            result.warmup_steps,
            result.batch_size,
            result.n_dis,
            result.generator_width,
            result.discriminator_width,
            result.threads
        );
    }
    Ok(0)
}
