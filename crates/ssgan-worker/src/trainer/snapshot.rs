//! The files of a checkpoint: model state, trainer state, config, and the sample grid.

use bytes::Bytes;
use ssgan_store::CheckpointFile;

use super::record::now_ms;
use super::{CONFIG_FILE, TRAINER_FILE, Trainer, TrainerState};
use crate::error::Result;
use crate::grid::png_grid;
use crate::uploader::Snapshot;

const RNG_SCHEME: &str = "chacha8: key = run.seed, stream = step * 256 + phase";

impl Trainer {
    pub(super) fn snapshot(&self) -> Result<Snapshot> {
        let mut files: Vec<CheckpointFile> = self
            .stepper
            .gan
            .save_state()?
            .into_iter()
            .map(|(name, bytes)| CheckpointFile {
                name: name.to_string(),
                bytes: Bytes::from(bytes),
            })
            .collect();
        let state =
            serde_json::to_vec_pretty(&self.trainer_state()).expect("trainer state serialises");
        files.push(CheckpointFile {
            name: TRAINER_FILE.into(),
            bytes: Bytes::from(state),
        });
        let config = Bytes::from(self.stepper.config.to_toml());
        files.push(CheckpointFile {
            name: CONFIG_FILE.into(),
            bytes: config,
        });
        let sample_png = Bytes::from(self.sample_grid()?);
        let run_id = self.run_id.clone();
        let keep = self.stepper.config.checkpoint.keep;
        Ok(Snapshot {
            run_id,
            step: self.step(),
            files,
            sample_png,
            keep,
        })
    }

    fn trainer_state(&self) -> TrainerState {
        let stepper = &self.stepper;
        let (generator_updates, discriminator_updates) = stepper.gan.optimizer_steps();
        TrainerState {
            format: 1,
            step: stepper.step,
            generator_updates,
            discriminator_updates,
            data_position: stepper.order.position(),
            dataset_len: Some(stepper.images().len() as u64),
            world_size: stepper.comm.world_size(),
            seed: stepper.config.run.seed,
            rng_scheme: RNG_SCHEME.into(),
            config_digest: stepper.config.digest(),
            created_unix_ms: now_ms(),
        }
    }

    /// PNG of an 8x8 grid generated from the run's fixed latent vectors in evaluation mode.
    pub fn sample_grid(&self) -> Result<Vec<u8>> {
        png_grid(&self.stepper.gan.sample(&self.sample_z)?, 8)
    }
}
