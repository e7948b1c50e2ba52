//! `ssgan bench fid`: throughput of FID feature extraction (pool3 of 32 x 32 images).

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device};
use clap::{Args, ValueEnum};
use serde_json::json;
use ssgan_evaluator::resolve_inception_weights;
use ssgan_fid::{FeatureExtractor, FeatureLayer, FidInception, InceptionWeights, RgbPlanes};

#[derive(Args)]
pub struct FidBenchArgs {
    /// FID Inception weights (.pth or .safetensors). Speed does not depend on the values,
    /// so any file with the FID keys will do. A local path or a URL.
    #[arg(long, value_name = "PATH_OR_URL")]
    inception_weights: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Untimed batches before measuring.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed batches; the median is reported.
    #[arg(long, default_value_t = 3)]
    batches: usize,
    /// Precision of the network.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Print one line of JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    F32,
    F64,
}

pub fn run(args: FidBenchArgs) -> Result<i32> {
    anyhow::ensure!(
        args.batches >= 1 && args.batch_size >= 1,
        "invalid --batches {} / --batch-size {}: expected at least 1 each",
        args.batches,
        args.batch_size
    );
    let dtype = match args.precision {
        Precision::F32 => DType::F32,
        Precision::F64 => DType::F64,
    };
    let weights = InceptionWeights::load(&resolve_inception_weights(&args.inception_weights)?)?;
    let model = FidInception::new(&weights, dtype, &Device::Cpu)?;
    let extractor = FeatureExtractor::new(&model).with_progress(false);
    let images = pattern_images(args.batch_size);

    let mut seconds = Vec::with_capacity(args.batches);
    for index in 0..args.warmup + args.batches {
        let start = Instant::now();
        extractor.batch_features(&images, FeatureLayer::Pool3)?;
        if index >= args.warmup {
            seconds.push(start.elapsed().as_secs_f64());
        }
    }
    seconds.sort_by(f64::total_cmp);
    let median = median_of_sorted(&seconds);
    let features_per_second = args.batch_size as f64 / median;
    let threads = candle_core::utils::get_num_threads();
    if args.json {
        let result = json!({
            "features_per_second": features_per_second,
            "batch_seconds_median": median,
            "batch_seconds_min": seconds[0],
            "batch_seconds_max": seconds[seconds.len() - 1],
            "batch_size": args.batch_size,
            "measured_batches": seconds.len(),
            "warmup_batches": args.warmup,
            "dtype": format!("{dtype:?}").to_lowercase(),
            "threads": threads,
        });
        println!("{result}");
    } else {
        println!(
            "{features_per_second:.2} features/s, median batch {median:.3} s over {} batches \
             of {} images after {} warm-up; {dtype:?}, {}",
            seconds.len(),
            args.batch_size,
            args.warmup,
            crate::text::counted(threads as u64, "thread")
        );
    }
    Ok(0)
}

/// Returns the median of sorted values, the mean of the middle two for an even count.
pub fn median_of_sorted(values: &[f64]) -> f64 {
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

/// Builds 32 x 32 images with a fixed gradient pattern, distinct per index.
fn pattern_images(count: usize) -> Vec<RgbPlanes> {
    (0..count)
        .map(|index| RgbPlanes {
            width: 32,
            height: 32,
            pixels: (0..3 * 32 * 32)
                .map(|k| ((k * 7 + index * 31) % 256) as u8)
                .collect(),
        })
        .collect()
}
