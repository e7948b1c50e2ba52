//! `ssgan bench step`: throughput of full training steps.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use ssgan_collective::SingleRank;
use ssgan_data::{NoiseImages, TrainImages};

use crate::config::RunConfig;
use crate::data::open_train_images;
use crate::device::DeviceSpec;
use crate::error::Result;
use crate::step::Stepper;

/// Settings of a step benchmark.
#[derive(Clone, Debug)]
pub struct StepBenchOptions {
    /// Untimed steps before measuring.
    pub warmup: usize,
    /// Timed steps; the median is reported.
    pub measured: usize,
    /// Device of the model (the CPU, or `cuda:N` in a `cuda` build).
    pub device: DeviceSpec,
    /// Feed noise images of the model's size instead of the config's data.
    pub synthetic: bool,
}

/// Result of a step benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
    /// `model.arch` of the config.
    pub arch: &'static str,
    /// Side length of the images.
    pub image_size: usize,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Whether the real images were noise (`--synthetic`).
    pub synthetic: bool,
    /// Global batch divided by the median step time.
    pub images_per_second: f64,
    /// Median wall time of one step: n_dis discriminator steps and one generator step.
    pub step_seconds_median: f64,
    pub step_seconds_min: f64,
    pub step_seconds_max: f64,
    pub batch_size: usize,
    pub n_dis: usize,
    pub warmup_steps: usize,
    pub measured_steps: usize,
    pub generator_width: usize,
    pub discriminator_width: usize,
    /// Threads of candle's CPU kernels.
    pub threads: usize,
    /// Peak resident memory of this process so far (Linux VmHWM); None where unavailable.
    pub peak_rss_bytes: Option<u64>,
    /// Model FLOPs of one step (`ssgan_model::flops::step`).
    pub model_flops_per_step: f64,
    /// Model FLOPs per second at the median step time, in TFLOP/s.
    pub model_tflops: f64,
}

/// Reads the peak resident set size from /proc/self/status, on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Times `options.measured` full steps of `config` after `options.warmup` untimed ones, on
/// one rank. On a GPU each timed step ends when the device has finished its work.
pub fn bench_step(config: RunConfig, options: &StepBenchOptions) -> Result<StepBench> {
    let dataset = bench_images(&config, options.synthetic)?;
    let device = options.device.open()?;
    let single = Arc::new(SingleRank);
    let mut stepper = Stepper::on_device(config.clone(), dataset, single, device.clone())?;
    for _ in 0..options.warmup {
        stepper.train_step()?;
    }
    let mut seconds = Vec::with_capacity(options.measured);
    for _ in 0..options.measured.max(1) {
        let started = Instant::now();
        stepper.train_step()?;
        device.synchronize()?;
        seconds.push(started.elapsed().as_secs_f64());
    }
    Ok(summary(&config, options, seconds))
}

/// Opens the config's training images, or noise images of the model's size.
fn bench_images(config: &RunConfig, synthetic: bool) -> Result<Box<dyn TrainImages>> {
    if synthetic {
        let size = config.model.image_size();
        return Ok(Box::new(NoiseImages::new(50_000, size, config.run.seed)));
    }
    open_train_images(config)
}

fn median(sorted: &[f64]) -> f64 {
    let middle = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

fn summary(config: &RunConfig, options: &StepBenchOptions, mut seconds: Vec<f64>) -> StepBench {
    seconds.sort_by(f64::total_cmp);
    let median = median(&seconds);
    let (model, batch) = (&config.model, config.train.batch_size);
    let rotated = 3 * config.loss.rotated_batch_size / 4;
    let flops = ssgan_model::flops::step(model, batch, rotated, config.optim.n_dis);
    StepBench {
        arch: model.arch.name(),
        image_size: model.image_size(),
        device: options.device.to_string(),
        synthetic: options.synthetic,
        images_per_second: batch as f64 / median,
        step_seconds_median: median,
        step_seconds_min: seconds[0],
        step_seconds_max: seconds[seconds.len() - 1],
        batch_size: batch,
        n_dis: config.optim.n_dis,
        warmup_steps: options.warmup,
        measured_steps: seconds.len(),
        generator_width: model.g_width(),
        discriminator_width: model.d_width(),
        threads: candle_core::utils::get_num_threads(),
        peak_rss_bytes: peak_rss_bytes(),
        model_flops_per_step: flops,
        model_tflops: flops / median / 1e12,
    }
}
