//! `ssgan fid` and `ssgan fid-stats`: FID between image sets or statistics files, and
//! pytorch-fid-compatible statistics of one set.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use ssgan_evaluator::resolve_inception_weights;
use ssgan_fid::source::{open_image_source, quantize_unit_images};
use ssgan_fid::{
    FeatureExtractor, FeatureLayer, FidInception, InceptionWeights, MemoryImages, RgbPlanes,
    Statistics, WEIGHTS_FILE_NAME, WEIGHTS_URL, frechet_distance,
};
use ssgan_worker::rng::sample_rng;
use ssgan_worker::sample::load_checkpoint_generator;

/// Generated images per generator forward pass in `fid-stats --samples`.
const GENERATOR_CHUNK: usize = 250;

#[derive(Args)]
pub struct FidArgs {
    /// First set: a .npz statistics file, an image folder (PNG/JPEG), a CIFAR-10 binary
    /// file, or a CIFAR-10 folder (its data_batch_*.bin files, else test_batch.bin).
    a: PathBuf,
    /// Second set, of the same kinds as the first.
    b: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Print one line of JSON, {"fid": VALUE}, instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct FidStatsArgs {
    /// Image set: an image folder (PNG/JPEG), a CIFAR-10 binary file or folder, or with
    /// --samples a checkpoint (STORAGE/runs/RUN_ID for the newest, or
    /// STORAGE/runs/RUN_ID/checkpoints/STEP).
    source: String,
    /// Output statistics file (.npz with float64 `mu` and `sigma`, as pytorch-fid writes).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Number of images to generate from the checkpoint SOURCE.
    #[arg(long)]
    samples: Option<usize>,
    /// Seed of the generated latent vectors. Default: the run's seed.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct ModelArgs {
    /// FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a
    /// zip-format .pth or .safetensors with the same keys). Needed for every set that is not
    /// a .npz file. A URL (https://, s3://, gs://, az://) is downloaded once into
    /// ~/.cache/ssgan.
    #[arg(long, value_name = "PATH_OR_URL")]
    inception_weights: Option<String>,
    /// Feature layer, as pytorch-fid's --dims: 64, 192, 768 or 2048 (pool3).
    #[arg(long, default_value_t = 2048)]
    dims: usize,
    /// Images per Inception forward pass.
    #[arg(long, default_value_t = ssgan_fid::DEFAULT_BATCH_SIZE)]
    batch_size: usize,
}

impl ModelArgs {
    /// Loads the network in float32, or explains where to get the weights.
    fn load_model(&self, needed_for: &Path) -> Result<FidInception> {
        let Some(path) = &self.inception_weights else {
            anyhow::bail!(
                "--inception-weights is missing, and {} is not a .npz statistics file, so its \
                 features need the FID Inception network. Download {WEIGHTS_FILE_NAME} from \
                 {WEIGHTS_URL}, put it anywhere (for example ~/.cache/ssgan/) and pass \
                 --inception-weights PATH, or pass --inception-weights {WEIGHTS_URL}",
                needed_for.display()
            );
        };
        let weights = InceptionWeights::load(&resolve_inception_weights(path)?)?;
        Ok(FidInception::new(&weights, DType::F32, &Device::Cpu)?)
    }

    fn layer(&self) -> Result<FeatureLayer> {
        Ok(FeatureLayer::from_dims(self.dims)?)
    }
}

pub fn run_fid(args: FidArgs) -> Result<i32> {
    let mut model = None;
    let a = side_statistics(&args.a, &args.model, &mut model)?;
    let b = side_statistics(&args.b, &args.model, &mut model)?;
    let fid = frechet_distance(&a, &b)?;
    if args.json {
        println!("{}", serde_json::json!({ "fid": fid }));
    } else {
        println!("FID: {fid}");
    }
    Ok(0)
}

pub fn run_fid_stats(args: FidStatsArgs) -> Result<i32> {
    check_output_folder(&args.out)?;
    if args.samples.is_none() {
        check_not_a_run(Path::new(&args.source))?;
    }
    let model = args.model.load_model(Path::new(&args.source))?;
    let images = match args.samples {
        Some(samples) => generated_images(&args.source, samples, args.seed)?,
        None => None,
    };
    let features = match images {
        Some(images) => extract(&model, &args.model, &images)?,
        None => {
            let source = open_image_source(Path::new(&args.source))?;
            extract(&model, &args.model, source.as_ref())?
        }
    };
    let stats = Statistics::from_features(&features)?;
    stats.write_npz(&args.out)?;
    tracing::info!(
        "wrote {}-d statistics of {} images to {}",
        stats.dims(),
        features.rows(),
        args.out.display()
    );
    Ok(0)
}

/// Rejects an `--out` whose folder does not exist before any feature is computed.
fn check_output_folder(out: &Path) -> Result<()> {
    let folder = match out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    anyhow::ensure!(
        folder.is_dir(),
        "cannot write --out {}: folder {} does not exist. Create it first.",
        out.display(),
        folder.display()
    );
    Ok(())
}

/// Rejects a run or checkpoint directory as an image set, which needs `--samples`.
fn check_not_a_run(source: &Path) -> Result<()> {
    let markers = ["run.json", "checkpoints", "MANIFEST.json"];
    let is_run = markers.iter().any(|name| source.join(name).exists());
    anyhow::ensure!(
        !is_run,
        "{} is a run or checkpoint directory, not an image set: pass --samples N to generate N \
         images from its checkpoint",
        source.display()
    );
    Ok(())
}

/// Reads a .npz side, or computes the statistics of an image side with a model loaded once.
fn side_statistics(
    path: &Path,
    args: &ModelArgs,
    model: &mut Option<FidInception>,
) -> Result<Statistics> {
    if is_npz(path) {
        return Ok(Statistics::read_npz(path)?);
    }
    if model.is_none() {
        *model = Some(args.load_model(path)?);
    }
    let model = model.as_ref().expect("loaded above");
    let source = open_image_source(path)?;
    let features = extract(model, args, source.as_ref())
        .with_context(|| format!("cannot compute features of {}", path.display()))?;
    Ok(Statistics::from_features(&features)?)
}

fn extract(
    model: &FidInception,
    args: &ModelArgs,
    source: &dyn ssgan_fid::ImageSource,
) -> Result<ssgan_fid::FeatureMatrix> {
    let extractor = FeatureExtractor::new(model).with_batch_size(args.batch_size);
    Ok(extractor.extract(source, args.layer()?)?)
}

fn is_npz(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// Generates `samples` images from the checkpoint at `url`, quantized to 8 bits as a PNG
/// would store them. The latent vectors continue one stream, as `ssgan sample` draws them.
fn generated_images(url: &str, samples: usize, seed: Option<u64>) -> Result<Option<MemoryImages>> {
    anyhow::ensure!(
        samples >= 2,
        "invalid --samples {samples}: expected at least 2 images"
    );
    let generator = load_checkpoint_generator(url)?;
    let mut rng = sample_rng(seed.unwrap_or(generator.config.run.seed));
    let mut images: Vec<RgbPlanes> = Vec::with_capacity(samples);
    while images.len() < samples {
        let count = GENERATOR_CHUNK.min(samples - images.len());
        let z = generator.gan.latent(count, &mut rng)?;
        images.extend(quantize_unit_images(&generator.gan.sample(&z)?)?);
    }
    tracing::info!(
        run_id = generator.run_id,
        "generated {samples} images from step {}",
        generator.step
    );
    Ok(Some(MemoryImages(images)))
}
