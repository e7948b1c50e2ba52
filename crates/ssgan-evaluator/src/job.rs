//! One evaluation task on a blocking thread: generated and real statistics, the FID, and
//! `eval.json` in the checkpoint directory.

use std::ops::Range;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use ssgan_data::{FolderImages, TrainImages};
use ssgan_fid::source::{open_image_source, quantize_unit_images};
use ssgan_fid::{
    FeatureExtractor, FeatureLayer, FeatureMatrix, FidInception, ImageSource, InceptionWeights,
    RgbPlanes, Statistics, frechet_distance,
};
use ssgan_proto::v1;
use ssgan_store::BlockingStore;
use ssgan_worker::config::DataKind;
use ssgan_worker::rng::sample_rng;
use ssgan_worker::sample::{CheckpointGenerator, load_checkpoint_generator};
use ssgan_worker::{RunConfig, WorkerError};

use crate::error::{EvaluatorError, JobError};

/// Reference statistics with their URL and the number of images behind them.
struct RealStatistics {
    stats: Statistics,
    url: String,
    count: u64,
}

/// Generated images per generator forward pass, and per Inception forward pass.
const BATCH: usize = 50;

/// The FID Inception network with the name of its weights file, for `eval.json`.
pub struct FidModel {
    network: FidInception,
    weights_name: String,
}

/// Contents of `runs/<run_id>/checkpoints/<step:010>/eval.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EvalFile {
    pub step: u64,
    pub fid: f64,
    /// Generated images behind `fid`.
    pub samples: u64,
    /// Training images behind the reference statistics.
    pub real_samples: u64,
    /// URL of the cached reference statistics (`.npz`, pytorch-fid's format).
    pub real_stats: String,
    /// File name of the FID Inception weights.
    pub inception_weights: String,
    /// Wall-clock seconds of the whole evaluation.
    pub seconds: f64,
}

impl FidModel {
    pub fn new(network: FidInception, weights_path: &Path) -> Self {
        let weights_name = weights_path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            network,
            weights_name,
        }
    }

    /// Loads the network from a local weights file, in float32 on the CPU.
    pub fn load(path: &Path) -> Result<Self, EvaluatorError> {
        let load_error = |source| EvaluatorError::LoadWeights {
            path: path.to_path_buf(),
            source,
        };
        let weights = InceptionWeights::load(path).map_err(load_error)?;
        let network = FidInception::new(&weights, DType::F32, &Device::Cpu).map_err(load_error)?;
        tracing::debug!(path = %path.display(), "loaded the FID Inception network");
        Ok(Self::new(network, path))
    }

    /// Runs one task: the FID of the task's checkpoint, written to its `eval.json`.
    pub fn evaluate(&self, task: &v1::EvaluationTask) -> Result<EvalFile, JobError> {
        let generator = load_checkpoint_generator(&task.checkpoint_url)?;
        self.evaluate_generator(&generator, task)
    }

    /// Runs one task with a generator already loaded from the task's checkpoint, so that
    /// retention may delete the checkpoint's weights meanwhile. Writes `eval.json` into the
    /// checkpoint directory either way.
    #[tracing::instrument(
        name = "eval",
        level = "debug",
        skip_all,
        fields(ssgan.run_id = %task.run_id, ssgan.step = task.step, ssgan.samples = task.samples)
    )]
    pub fn evaluate_generator(
        &self,
        generator: &CheckpointGenerator,
        task: &v1::EvaluationTask,
    ) -> Result<EvalFile, JobError> {
        let started = Instant::now();
        let store = BlockingStore::open(&task.storage_url)?;
        let real = self.real_statistics(&store, generator, task)?;
        let fake = self.generated_statistics(generator, task)?;
        let fid = frechet_distance(&fake, &real.stats)?;
        let eval = EvalFile {
            step: task.step,
            fid,
            samples: task.samples,
            real_samples: real.count,
            real_stats: real.url,
            inception_weights: self.weights_name.clone(),
            seconds: started.elapsed().as_secs_f64(),
        };
        let json = Bytes::from(serde_json::to_vec_pretty(&eval)?);
        let put = store.store().put_eval_result(&task.run_id, task.step, json);
        store.runtime().block_on(put)?;
        tracing::debug!(run_id = %task.run_id, step = task.step, fid, seconds = eval.seconds, "evaluated a checkpoint");
        ssgan_telemetry::metrics::record_fid(&task.run_id, fid);
        Ok(eval)
    }

    /// Generates `task.samples` images from the task's seed in batches and returns the
    /// statistics of their pool3 features.
    fn generated_statistics(
        &self,
        generator: &CheckpointGenerator,
        task: &v1::EvaluationTask,
    ) -> Result<Statistics, JobError> {
        let total = task.samples as usize;
        let extractor = self.extractor();
        let mut rng = sample_rng(task.seed);
        let mut values = Vec::with_capacity(total * FeatureLayer::Pool3.dims());
        let mut done = 0;
        while done < total {
            let count = BATCH.min(total - done);
            let images = generate_batch(generator, count, &mut rng)?;
            values.extend(extractor.batch_features(&images, FeatureLayer::Pool3)?);
            done += count;
            tracing::trace!(run_id = %task.run_id, step = task.step, done, total, "generated features");
        }
        let features = FeatureMatrix::new(total, FeatureLayer::Pool3.dims(), values)?;
        Ok(Statistics::from_features(&features)?)
    }

    /// Reads the run's cached reference statistics, or computes them from the training
    /// images and caches them. Returns them with their URL.
    ///
    /// NOTE: the cache key is the run and `real_samples` only, so a changed `data.path` or
    /// other weights reuse the old file until it is deleted.
    fn real_statistics(
        &self,
        store: &BlockingStore,
        generator: &CheckpointGenerator,
        task: &v1::EvaluationTask,
    ) -> Result<RealStatistics, JobError> {
        // Opened before the cache is read, because the dataset may have fewer images than
        // requested, and eval.json reports the number used.
        let source = open_real_images(&generator.config, task.real_samples as usize)?;
        let count = source.len() as u64;
        if count < task.real_samples {
            tracing::warn!(run_id = %task.run_id, step = task.step, "data.path has {count} images, fewer than eval.real_samples = {}; the reference statistics use {count}", task.real_samples);
        }
        let name = format!("fid_real_stats_{}.npz", task.real_samples);
        let url = store.store().run_file_url(&task.run_id, &name);
        let cached = store
            .runtime()
            .block_on(store.store().read_run_file(&task.run_id, &name))?;
        if let Some(bytes) = cached {
            tracing::debug!(run_id = %task.run_id, url, "using cached real statistics");
            let stats = statistics_from_npz(&bytes)?;
            return Ok(RealStatistics { stats, url, count });
        }
        tracing::debug!(run_id = %task.run_id, path = %generator.config.data.path.display(), images = source.len(), "computing real statistics");
        let features = self
            .extractor()
            .extract(source.as_ref(), FeatureLayer::Pool3)?;
        let stats = Statistics::from_features(&features)?;
        let bytes = npz_bytes(&stats)?;
        let put = store.store().put_run_file(&task.run_id, &name, bytes);
        store.runtime().block_on(put)?;
        Ok(RealStatistics { stats, url, count })
    }

    fn extractor(&self) -> FeatureExtractor<'_> {
        FeatureExtractor::new(&self.network)
            .with_batch_size(BATCH)
            .with_progress(false)
    }
}

/// Generates `count` images in evaluation mode, quantized to 8 bits as a PNG stores them.
fn generate_batch(
    generator: &CheckpointGenerator,
    count: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Vec<RgbPlanes>, JobError> {
    let z = generator
        .gan
        .latent(count, rng)
        .map_err(WorkerError::from)?;
    let images = generator.gan.sample(&z).map_err(WorkerError::from)?;
    Ok(quantize_unit_images(&images)?)
}

/// Opens the reference images of a run: the first `count` training images of CIFAR-10,
/// or `count` images of an image folder spread evenly over its sorted files, as the
/// trainer serves them (center square, resized to the model's size).
///
/// An image folder is sorted by path, so its first files would come from few classes of
/// a dataset such as ImageNet, whose train split has one subfolder per class.
fn open_real_images(config: &RunConfig, count: usize) -> Result<Box<dyn ImageSource>, JobError> {
    let path = &config.data.path;
    match config.data.kind {
        DataKind::Cifar10 => {
            let source = open_image_source(path)?;
            let len = source.len().min(count);
            Ok(Box::new(Prefix { source, len }))
        }
        DataKind::ImageFolder => {
            let images = FolderImages::open(path, config.model.image_size())?;
            let indices = spread_indices(images.len(), count);
            Ok(Box::new(FolderSample { images, indices }))
        }
    }
}

/// Returns `min(count, len)` indices below `len` at even spacing, starting at 0.
fn spread_indices(len: usize, count: usize) -> Vec<usize> {
    let count = count.min(len);
    (0..count).map(|i| i * len / count).collect()
}

/// The first `len` images of a source.
struct Prefix {
    source: Box<dyn ImageSource>,
    len: usize,
}

impl ImageSource for Prefix {
    fn len(&self) -> usize {
        self.len
    }

    fn read(&self, range: Range<usize>) -> ssgan_fid::Result<Vec<RgbPlanes>> {
        self.source.read(range)
    }
}

/// Chosen images of an image folder, at the model's image size.
struct FolderSample {
    images: FolderImages,
    indices: Vec<usize>,
}

impl ImageSource for FolderSample {
    fn len(&self) -> usize {
        self.indices.len()
    }

    fn read(&self, range: Range<usize>) -> ssgan_fid::Result<Vec<RgbPlanes>> {
        let size = self.images.image_size();
        let read = |&index: &usize| -> ssgan_fid::Result<RgbPlanes> {
            let pixels = self.images.planes(index)?;
            Ok(RgbPlanes {
                width: size,
                height: size,
                pixels,
            })
        };
        self.indices[range].iter().map(read).collect()
    }
}

/// Encodes statistics as an `.npz` file, through a temporary file because the writer takes
/// a path.
fn npz_bytes(stats: &Statistics) -> Result<Bytes, JobError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stats.npz");
    stats.write_npz(&path)?;
    Ok(Bytes::from(std::fs::read(&path)?))
}

fn statistics_from_npz(bytes: &[u8]) -> Result<Statistics, JobError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("stats.npz");
    std::fs::write(&path, bytes)?;
    Ok(Statistics::read_npz(&path)?)
}

#[cfg(test)]
mod tests {
    use super::spread_indices;

    #[test]
    fn spread_indices_cover_the_folder() {
        assert_eq!(spread_indices(10, 4), [0, 2, 5, 7]);
        assert_eq!(spread_indices(3, 5), [0, 1, 2]);
        assert_eq!(spread_indices(1000, 1), [0]);
        let spread = spread_indices(1_281_167, 10_000);
        assert_eq!(spread.len(), 10_000);
        assert!(spread.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(*spread.last().unwrap() >= 1_281_167 - 129);
    }
}
