//! `ssgan sample`: a PNG grid from a committed checkpoint.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ssgan_worker::grid::png_grid;
use ssgan_worker::sample::load_checkpoint_generator;

#[derive(Args)]
pub struct SampleArgs {
    /// Checkpoint: STORAGE/runs/RUN_ID/checkpoints/STEP, or STORAGE/runs/RUN_ID for the newest.
    #[arg(long)]
    checkpoint: String,
    /// Output PNG file.
    #[arg(long)]
    out: PathBuf,
    /// Number of images in the grid.
    #[arg(long, default_value_t = 64)]
    n: usize,
    /// Seed of the latent vectors. Default: the run's fixed sample-grid vectors.
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(args: SampleArgs) -> Result<i32> {
    anyhow::ensure!(args.n >= 1, "invalid --n 0: expected at least 1 image");
    let is_png = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    anyhow::ensure!(
        is_png,
        "invalid --out {}: the grid is a PNG, so name the file *.png",
        args.out.display()
    );
    let generator = load_checkpoint_generator(&args.checkpoint)?;
    let images = generator.generate(args.n, args.seed)?;
    let columns = (args.n as f64).sqrt().ceil() as usize;
    let png = png_grid(&images, columns)?;
    std::fs::write(&args.out, png)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    tracing::info!(
        run_id = generator.run_id,
        "wrote {} images from step {} to {}",
        args.n,
        generator.step,
        args.out.display()
    );
    Ok(0)
}
