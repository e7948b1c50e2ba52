//! Generating images from a committed checkpoint.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use ssgan_collective::SingleRank;
use ssgan_model::{SsGan, latent};
use ssgan_store::{BlockingStore, LoadedCheckpoint, parse_checkpoint_url};

use crate::config::RunConfig;
use crate::error::{Result, WorkerError};
use crate::rng::sample_rng;
use crate::step::build_gan;
use crate::trainer::CONFIG_FILE;

/// A generator restored from a checkpoint.
pub struct CheckpointGenerator {
    pub gan: SsGan,
    pub config: RunConfig,
    pub run_id: String,
    pub step: u64,
}

/// Loads the model of the checkpoint at `url`: `<storage>/runs/<id>/checkpoints/<step>` for
/// that step, or `<storage>/runs/<id>` for the newest one that verifies.
pub fn load_checkpoint_generator(url: &str) -> Result<CheckpointGenerator> {
    let (root, run_id, step) = parse_checkpoint_url(url)?;
    let store = BlockingStore::open(&root)?;
    let checkpoint = match step {
        Some(step) => store.load_checkpoint(&run_id, step)?,
        None => store
            .load_latest(&run_id)?
            .ok_or_else(|| WorkerError::BadCheckpoint {
                url: url.to_string(),
                reason: "the run has no committed checkpoint".into(),
            })?,
    };
    let config = checkpoint_config(&checkpoint, url)?;
    let mut gan = build_gan(&config, Arc::new(SingleRank))?;
    gan.load_state(|name| checkpoint.files.get(name).map(|b| b.as_ref()))?;
    Ok(CheckpointGenerator {
        gan,
        config,
        run_id,
        step: checkpoint.step,
    })
}

fn checkpoint_config(checkpoint: &LoadedCheckpoint, url: &str) -> Result<RunConfig> {
    let text = std::str::from_utf8(checkpoint.file(CONFIG_FILE)?).map_err(|e| {
        WorkerError::BadCheckpoint {
            url: url.to_string(),
            reason: format!("{CONFIG_FILE} is not UTF-8: {e}"),
        }
    })?;
    RunConfig::from_toml(text, url, &[])
}

impl CheckpointGenerator {
    /// Generates `n` images [n, 3, 32, 32] in (0, 1) in evaluation mode.
    ///
    /// Without `seed`, the latent vectors are the first n of the run's fixed sample-grid
    /// vectors. With a seed, they come from that seed's sample stream instead.
    pub fn generate(&self, n: usize, seed: Option<u64>) -> Result<Tensor> {
        let mut rng = sample_rng(seed.unwrap_or(self.config.run.seed));
        let z = latent(
            n,
            self.config.model.z_dim,
            &mut rng,
            &Device::Cpu,
            DType::F32,
        )?;
        Ok(self.gan.sample(&z)?)
    }
}
