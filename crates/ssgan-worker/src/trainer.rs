//! The training loop of one rank: data, steps, checkpoints and resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use ssgan_collective::{Communicator, SingleRank};
use ssgan_data::{BatchOrder, CifarDataset, DataPosition, Split};
use ssgan_store::{BlockingStore, CheckpointFile, LoadedCheckpoint, RunRecord, RunState};

use crate::config::RunConfig;
use crate::error::{Result, WorkerError};
use crate::grid::png_grid;
use crate::rng::sample_rng;
use crate::step::{StepReport, Stepper};
use crate::uploader::{Snapshot, Uploader};

/// File names of the trainer's own state inside a checkpoint.
pub const TRAINER_FILE: &str = "trainer.json";
pub const CONFIG_FILE: &str = "config.toml";
/// Number of images in a sample grid (8 x 8).
pub const GRID_IMAGES: usize = 64;

/// The trainer's position, saved beside the model state in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub format: u32,
    /// Generator steps completed.
    pub step: u64,
    pub generator_updates: u64,
    pub discriminator_updates: u64,
    /// Position of the next real image in the shuffled data stream.
    pub data_position: DataPosition,
    pub world_size: usize,
    /// Seed of every random draw; latent vectors are drawn from (seed, step, phase) streams,
    /// so no other generator state exists.
    pub seed: u64,
    pub rng_scheme: String,
    pub config_digest: String,
    pub created_unix_ms: u64,
}

/// Interval between run-record updates while training, so that others can tell it is alive.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Age after which a RUNNING record counts as left behind by a process that died.
const STALE_AFTER: Duration = Duration::from_secs(120);

const RNG_SCHEME: &str = "chacha8: key = run.seed, stream = step * 256 + phase";

/// Result of [`Trainer::run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached train.steps and committed the final checkpoint.
    Finished { step: u64 },
    /// Stopped on request after committing a checkpoint.
    Stopped { step: u64 },
}

/// One rank's training run.
pub struct Trainer {
    stepper: Stepper,
    store: BlockingStore,
    uploader: Uploader,
    record: RunRecord,
    sample_z: Tensor,
    resumed_from: Option<u64>,
    /// Step of the newest checkpoint committed or being uploaded.
    last_checkpoint: Option<u64>,
}

impl Trainer {
    /// Validates the config, reads the dataset, opens storage, and resumes the run from its
    /// newest verified checkpoint if it has one. Nothing is written before all of that passed.
    pub fn open(config: RunConfig, storage_url: &str, run_id: &str) -> Result<Self> {
        ssgan_store::validate_run_id(run_id)?;
        let comm: Arc<dyn Communicator> = Arc::new(SingleRank);
        config.validate(comm.world_size())?;
        let dataset = CifarDataset::open(&config.data.path, Split::Train)?;
        let store = BlockingStore::open(storage_url)?;
        let latest = store.load_latest(run_id)?;
        let stepper = Stepper::new(config, dataset, comm)?;
        let mut trainer = Self::assemble(stepper, store, run_id)?;
        if let Some(checkpoint) = latest {
            trainer.restore(&checkpoint)?;
        }
        Ok(trainer)
    }

    fn assemble(stepper: Stepper, store: BlockingStore, run_id: &str) -> Result<Self> {
        let seed = stepper.config.run.seed;
        let sample_z = stepper.gan.latent(GRID_IMAGES, &mut sample_rng(seed))?;
        let record = match store.read_run(run_id)? {
            Some(record) => check_not_active(record)?,
            None => new_record(run_id, &stepper.config),
        };
        let uploader = Uploader::new(store.store().clone(), store.runtime().clone());
        Ok(Self {
            stepper,
            store,
            uploader,
            record,
            sample_z,
            resumed_from: None,
            last_checkpoint: None,
        })
    }

    fn restore(&mut self, checkpoint: &LoadedCheckpoint) -> Result<()> {
        let url = self
            .store
            .checkpoint_url(&self.record.run_id, checkpoint.step);
        self.check_saved_config(checkpoint, &url)?;
        let state: TrainerState =
            serde_json::from_slice(checkpoint.file(TRAINER_FILE)?).map_err(|e| {
                WorkerError::BadCheckpoint {
                    url: url.clone(),
                    reason: format!("{TRAINER_FILE} is invalid: {e}"),
                }
            })?;

        let stepper = &mut self.stepper;
        stepper
            .gan
            .load_state(|name| checkpoint.files.get(name).map(|b| b.as_ref()))?;
        let (seed, len) = (stepper.config.run.seed, stepper.dataset.len());
        stepper.order = BatchOrder::new(seed, len, state.data_position)?;
        stepper.step = state.step;

        self.resumed_from = Some(state.step);
        self.last_checkpoint = Some(state.step);
        tracing::debug!(run_id = %self.record.run_id, step = state.step, "resumed from checkpoint");
        Ok(())
    }

    /// Rejects a resume whose config differs from the checkpoint's in a key that matters.
    fn check_saved_config(&self, checkpoint: &LoadedCheckpoint, url: &str) -> Result<()> {
        let text = std::str::from_utf8(checkpoint.file(CONFIG_FILE)?).map_err(|e| {
            WorkerError::BadCheckpoint {
                url: url.to_string(),
                reason: format!("{CONFIG_FILE} is not UTF-8: {e}"),
            }
        })?;
        let saved = RunConfig::from_toml(text, url, &[])?;
        let keys = self.stepper.config.incompatible_keys(&saved);
        if keys.is_empty() {
            return Ok(());
        }
        Err(WorkerError::ConfigMismatch {
            run_id: self.record.run_id.clone(),
            step: checkpoint.step,
            keys: keys.join(", "),
        })
    }

    /// Generator steps completed.
    pub fn step(&self) -> u64 {
        self.stepper.step
    }

    /// Returns the step of the checkpoint this run resumed from, if any.
    pub fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    pub fn run_id(&self) -> &str {
        &self.record.run_id
    }

    pub fn config(&self) -> &RunConfig {
        &self.stepper.config
    }

    fn rank(&self) -> usize {
        self.stepper.comm.rank()
    }

    /// User-facing URL of the checkpoint of `step`.
    pub fn checkpoint_url(&self, step: u64) -> String {
        self.store.checkpoint_url(&self.record.run_id, step)
    }

    /// Trains until train.steps or until `stop` is set, committing a checkpoint every
    /// checkpoint.every steps, at the end, and on stop. Calls `on_step` after every step.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut on_step: impl FnMut(&StepReport),
    ) -> Result<Outcome> {
        let result = self.run_steps(stop, &mut on_step);
        let final_state = match &result {
            Ok(Outcome::Finished { .. }) => RunState::Succeeded,
            Ok(Outcome::Stopped { .. }) => RunState::Stopped,
            Err(error) => {
                tracing::error!(run_id = %self.record.run_id, rank = self.rank(), step = self.step(), %error, "training failed");
                RunState::Failed
            }
        };
        self.record.state = final_state;
        if let Err(error) = self.save_record() {
            tracing::error!(run_id = %self.record.run_id, rank = self.rank(), step = self.step(), %error, "cannot record the final run state");
        }
        result
    }

    fn run_steps(
        &mut self,
        stop: &AtomicBool,
        on_step: &mut impl FnMut(&StepReport),
    ) -> Result<Outcome> {
        self.record.state = RunState::Running;
        self.record.attempts += 1;
        self.save_record()?;
        let target = self.stepper.config.train.steps;
        let every = self.stepper.config.checkpoint.every;
        let mut last_heartbeat = Instant::now();
        while self.step() < target && !stop.load(Ordering::SeqCst) {
            let report = self.stepper.train_step()?;
            on_step(&report);
            if last_heartbeat.elapsed() >= HEARTBEAT {
                self.save_record()?;
                last_heartbeat = Instant::now();
            }
            if self.step().is_multiple_of(every) && self.step() < target {
                self.commit_checkpoint()?;
            }
        }
        if self.last_checkpoint != Some(self.step()) {
            self.commit_checkpoint()?;
        }
        self.finish_uploads()?;
        if self.step() >= target {
            Ok(Outcome::Finished { step: self.step() })
        } else {
            Ok(Outcome::Stopped { step: self.step() })
        }
    }

    /// Snapshots the state and the sample grid, and starts their upload. The upload of the
    /// previous checkpoint must have finished, and its error, if any, is returned here.
    pub fn commit_checkpoint(&mut self) -> Result<()> {
        let snapshot = self.snapshot()?;
        self.last_checkpoint = Some(snapshot.step);
        if let Some(step) = self.uploader.submit(snapshot)? {
            self.record_committed(step)?;
        }
        Ok(())
    }

    /// Waits for the upload in flight and records it in the run record.
    pub fn finish_uploads(&mut self) -> Result<()> {
        if let Some(step) = self.uploader.wait()? {
            self.record_committed(step)?;
        }
        Ok(())
    }

    fn record_committed(&mut self, step: u64) -> Result<()> {
        self.record.latest_step = Some(step);
        self.save_record()
    }

    fn snapshot(&self) -> Result<Snapshot> {
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
        let run_id = self.record.run_id.clone();
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

    fn save_record(&mut self) -> Result<()> {
        self.record.target_steps = self.stepper.config.train.steps;
        self.record.config_toml = self.stepper.config.to_toml();
        self.record.updated_unix_ms = now_ms();
        Ok(self.store.write_run(&self.record)?)
    }
}

/// Rejects a run that another process is training, which is the case when its record is
/// RUNNING and was updated within [`STALE_AFTER`]. A process that died leaves a RUNNING record
/// behind, and that record counts as stale once it is older than [`STALE_AFTER`].
fn check_not_active(record: RunRecord) -> Result<RunRecord> {
    let age_ms = now_ms().saturating_sub(record.updated_unix_ms);
    let fresh = age_ms < STALE_AFTER.as_millis() as u64;
    if record.state == RunState::Running && fresh {
        return Err(WorkerError::RunActive {
            run_id: record.run_id,
            seconds_ago: age_ms / 1000,
            stale_after: STALE_AFTER.as_secs(),
        });
    }
    Ok(record)
}

fn new_record(run_id: &str, config: &RunConfig) -> RunRecord {
    let now = now_ms();
    RunRecord {
        run_id: run_id.to_string(),
        state: RunState::Pending,
        config_toml: config.to_toml(),
        attempts: 0,
        latest_step: None,
        best_step: None,
        target_steps: config.train.steps,
        created_unix_ms: now,
        updated_unix_ms: now,
    }
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_millis() as u64
}
