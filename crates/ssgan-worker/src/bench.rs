//! `ssgan bench step`: throughput of full training steps.

use std::sync::Arc;

use serde::Serialize;
use ssgan_collective::SingleRank;
use ssgan_data::{CifarDataset, Split};

use crate::config::RunConfig;
use crate::error::Result;
use crate::step::Stepper;

/// Result of a step benchmark.
#[derive(Clone, Debug, Serialize)]
pub struct StepBench {
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
}

/// Reads the peak resident set size from /proc/self/status, on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Times `measured` full steps of `config` after `warmup` untimed ones, on one rank.
pub fn bench_step(config: RunConfig, warmup: usize, measured: usize) -> Result<StepBench> {
    let dataset = CifarDataset::open(&config.data.path, Split::Train)?;
    let mut stepper = Stepper::new(config.clone(), dataset, Arc::new(SingleRank))?;
    for _ in 0..warmup {
        stepper.train_step()?;
    }
    let mut seconds = Vec::with_capacity(measured);
    for _ in 0..measured.max(1) {
        seconds.push(stepper.train_step()?.seconds);
    }
    seconds.sort_by(f64::total_cmp);
    let middle = seconds.len() / 2;
    let median = if seconds.len() % 2 == 0 {
        (seconds[middle - 1] + seconds[middle]) / 2.0
    } else {
        seconds[middle]
    };
    Ok(StepBench {
        images_per_second: config.train.batch_size as f64 / median,
        step_seconds_median: median,
        step_seconds_min: seconds[0],
        step_seconds_max: seconds[seconds.len() - 1],
        batch_size: config.train.batch_size,
        n_dis: config.optim.n_dis,
        warmup_steps: warmup,
        measured_steps: seconds.len(),
        generator_width: config.model.g_width(),
        discriminator_width: config.model.d_width(),
        threads: candle_core::utils::get_num_threads(),
        peak_rss_bytes: peak_rss_bytes(),
    })
}
