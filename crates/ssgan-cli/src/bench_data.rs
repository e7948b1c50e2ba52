//! `ssgan bench data`: images per second of the training input pipeline.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device};
use clap::Args;
use serde_json::json;
use ssgan_data::BatchOrder;
use ssgan_data::DataPosition;
use ssgan_worker::RunConfig;
use ssgan_worker::data::open_train_images;

use crate::bench_fid::median_of_sorted;

#[derive(Args)]
pub struct DataBenchArgs {
    /// Run config (TOML) whose [data] section and image size are measured.
    #[arg(long)]
    config: PathBuf,
    /// Override one config key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Images per batch. Default: the config's train.batch_size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Untimed batches before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed batches; the median is reported.
    #[arg(long, default_value_t = 5)]
    batches: usize,
    /// Print one line of JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Builds batches in the training order, on this thread, as the trainer's prefetch thread
/// does, and reports the median batch time.
pub fn run(args: DataBenchArgs) -> Result<i32> {
    anyhow::ensure!(
        args.batches >= 1,
        "invalid --batches 0: expected at least 1 timed batch"
    );
    let config = RunConfig::load(&args.config, &args.overrides)?;
    let batch_size = args.batch_size.unwrap_or(config.train.batch_size);
    anyhow::ensure!(
        batch_size >= 1,
        "invalid --batch-size 0: expected at least 1 image"
    );

    let images = open_train_images(&config)?;
    let mut order = BatchOrder::new(config.run.seed, images.len(), DataPosition::default())?;
    let mut seconds = Vec::with_capacity(args.batches);
    for index in 0..args.warmup + args.batches {
        let indices = order.next_batch(batch_size);
        let start = Instant::now();
        images.batch(&indices, &Device::Cpu, DType::F32)?;
        if index >= args.warmup {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }

    seconds.sort_by(f64::total_cmp);
    let median = median_of_sorted(&seconds);
    let images_per_second = batch_size as f64 / median;
    let threads = rayon::current_num_threads();
    let kind = serde_json::to_value(config.data.kind)?;

    if args.json {
        let result = json!({
            "images_per_second": images_per_second,
            "batch_seconds_median": median,
            "batch_seconds_min": seconds[0],
            "batch_seconds_max": seconds[seconds.len() - 1],
            "batch_size": batch_size,
            "measured_batches": seconds.len(),
            "warmup_batches": args.warmup,
            "data_kind": kind,
            "data_path": config.data.path,
            "dataset_images": images.len(),
            "image_size": images.image_size(),
            "threads": threads,
        });
        println!("{result}");
    } else {
        println!(
            "{images_per_second:.1} images/s, median batch {median:.3} s over {} batches of \
             {batch_size} after {} warm-up; {kind} {} ({} images) at {s}x{s}, {}",
            seconds.len(),
            args.warmup,
            config.data.path.display(),
            images.len(),
            crate::text::counted(threads as u64, "thread"),
            s = images.image_size(),
        );
    }
    Ok(0)
}
