//! `ssgan bench`: throughput measurements.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use ssgan_worker::RunConfig;
use ssgan_worker::bench::{StepBenchOptions, bench_step};
use ssgan_worker::bench_conv::{bench_conv, paper_layers};
use ssgan_worker::device::DeviceSpec;

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
    /// Achieved GFLOP/s of the 3x3 convolution kernels (forward, input gradient, kernel
    /// gradient) on the 32x32 model's layer shapes, next to candle's own conv ops.
    Conv(ConvArgs),
    /// All-reduce bus bandwidth of the TCP ring between processes on this machine, by message
    /// size, next to a plain TCP copy of the same size between the same processes.
    Allreduce(crate::bench_allreduce::AllReduceArgs),
    /// One rank of `bench allreduce` (started by it, not by hand).
    #[command(hide = true)]
    AllreduceRank(crate::bench_allreduce::RankArgs),
    /// Inception features per second of FID feature extraction.
    Fid(crate::bench_fid::FidBenchArgs),
    /// Images per second of the training input pipeline: reading, decoding, cropping and
    /// resizing the config's data into batches.
    Data(crate::bench_data::DataBenchArgs),
}

#[derive(Args)]
struct ConvArgs {
    /// Discriminator width; the generator's is twice this (128 is the paper's model).
    #[arg(long, default_value_t = 128)]
    ch: usize,
    /// Generator batch; the discriminator's is 2 (batch + 3 rotated / 4).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Rotated batch size (4 x the number of images rotated per side).
    #[arg(long, default_value_t = 64)]
    rotated: usize,
    /// Timed repeats per product; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Print one line of JSON per layer instead of a table.
    #[arg(long)]
    json: bool,
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
    /// Device of the model: "cpu", or "cuda:N" in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu", value_parser = DeviceSpec::parse)]
    device: DeviceSpec,
    /// Feed noise images of the model's size instead of the config's data, and leave the
    /// [data] section unchecked: times the 128x128 models without a 128x128 dataset.
    #[arg(long)]
    synthetic: bool,
    /// Print one line of JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: BenchArgs) -> Result<i32> {
    match args.kind {
        BenchKind::Step(args) => run_step(args),
        BenchKind::Conv(args) => run_conv(args),
        BenchKind::Allreduce(args) => crate::bench_allreduce::run(args),
        BenchKind::AllreduceRank(args) => crate::bench_allreduce::run_rank(args),
        BenchKind::Fid(args) => crate::bench_fid::run(args),
        BenchKind::Data(args) => crate::bench_data::run(args),
    }
}

fn run_conv(args: ConvArgs) -> Result<i32> {
    let layers = paper_layers(args.ch, args.batch_size, args.rotated);
    let results = bench_conv(&layers, args.repeats)?;
    if !args.json {
        println!(
            "{:<16} {:>5} {:>4} {:>4} {:>3}  GFLOP/s ours fwd / dx / dw   candle fwd / dx / dw",
            "layer", "N", "C", "O", "HW"
        );
    }
    for r in &results {
        if args.json {
            println!("{}", serde_json::to_string(r)?);
            continue;
        }
        println!(
            "{:<16} {:>5} {:>4} {:>4} {:>3}  {:>6.1} {:>6.1} {:>6.1}      {:>6.1} {:>6.1} {:>6.1}",
            r.layer,
            r.batch,
            r.c_in,
            r.c_out,
            r.size,
            r.ours_forward_gflops,
            r.ours_input_grad_gflops,
            r.ours_kernel_grad_gflops,
            r.candle_forward_gflops,
            r.candle_input_grad_gflops,
            r.candle_kernel_grad_gflops
        );
    }
    Ok(0)
}

fn run_step(args: StepArgs) -> Result<i32> {
    anyhow::ensure!(
        args.steps >= 1,
        "invalid --steps 0: expected at least 1 timed step"
    );
    let mut overrides = args.overrides.clone();
    overrides.push(format!("train.batch_size={}", args.batch_size));
    let config = if args.synthetic {
        RunConfig::load_without_data(&args.config, &overrides)?
    } else {
        RunConfig::load(&args.config, &overrides)?
    };
    let options = StepBenchOptions {
        warmup: args.warmup,
        measured: args.steps,
        device: args.device,
        synthetic: args.synthetic,
    };
    let result = bench_step(config, &options)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!(
            "{:.2} images/s, median step {:.3} s (min {:.3}, max {:.3}) over {} steps after {} warm-up; {} at {}x{} on {}, {:.2} model TFLOP/s; batch {}, n_dis {}, G width {}, D width {}, {}, peak RSS {}",
            result.images_per_second,
            result.step_seconds_median,
            result.step_seconds_min,
            result.step_seconds_max,
            result.measured_steps,
            result.warmup_steps,
            result.arch,
            result.image_size,
            result.image_size,
            result.device,
            result.model_tflops,
            result.batch_size,
            result.n_dis,
            result.generator_width,
            result.discriminator_width,
            crate::text::counted(result.threads as u64, "thread"),
            result
                .peak_rss_bytes
                .map_or("unknown".to_string(), |b| format!("{} MiB", b >> 20))
        );
    }
    Ok(0)
}
