//! The training loop of one rank: data, steps, checkpoints and resume.

mod record;
mod snapshot;

pub use record::SharedRecord;

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use ssgan_collective::{CollectiveError, check_parameters_match};
use ssgan_data::{BatchOrder, DataPosition};
use ssgan_store::{BlockingStore, LoadedCheckpoint, RunState};
use ssgan_telemetry::metrics::{self, StepValues};

use crate::config::RunConfig;
use crate::control::{Agreed, OnStep, RankOptions, RankOutcome, RunControl, TrainObserver, agree};
use crate::data::open_train_images;
use crate::error::{Result, WorkerError};
use crate::rng::sample_rng;
use crate::step::{StepReport, Stepper};
use crate::uploader::Uploader;

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
    /// Number of training images that the position refers to. Checkpoints written before
    /// this field existed read as `None`.
    #[serde(default)]
    pub dataset_len: Option<u64>,
    pub world_size: usize,
    /// Seed of every random draw; latent vectors are drawn from (seed, step, phase) streams,
    /// so no other generator state exists.
    pub seed: u64,
    pub rng_scheme: String,
    pub config_digest: String,
    pub created_unix_ms: u64,
}

/// Result of [`Trainer::run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached train.steps and committed the final checkpoint.
    Finished { step: u64 },
    /// Stopped on request after committing a checkpoint.
    Stopped { step: u64 },
}

/// One rank's training run.
///
/// Every rank restores the same checkpoint and trains a replica; only rank 0 writes
/// checkpoints and sample grids.
pub struct Trainer {
    stepper: Stepper,
    store: BlockingStore,
    uploader: Uploader,
    run_id: String,
    /// The run record, present when this process owns `run.json`.
    record: Option<SharedRecord>,
    sample_z: Tensor,
    resumed_from: Option<u64>,
    /// Step of the newest checkpoint committed or being uploaded.
    last_checkpoint: Option<u64>,
    /// Steps of checkpoints committed since the observer last heard of them.
    committed: Vec<u64>,
}

impl Trainer {
    /// Opens a single-process run that owns its run record: validates the config, reads the
    /// dataset, opens storage, and resumes the run from its newest verified checkpoint if it
    /// has one. Nothing is written before all of that passed.
    pub fn open(config: RunConfig, storage_url: &str, run_id: &str) -> Result<Self> {
        Self::open_rank(config, storage_url, run_id, RankOptions::single_process())
    }

    /// Opens one rank of a run, as [`Trainer::open`] does, with the group, the checkpoint
    /// and the record ownership of `options`. A `resume_step` whose checkpoint is missing or
    /// fails verification is an error; there is no fallback to an older checkpoint.
    pub fn open_rank(
        config: RunConfig,
        storage_url: &str,
        run_id: &str,
        options: RankOptions,
    ) -> Result<Self> {
        ssgan_store::validate_run_id(run_id)?;
        config.validate(options.comm.world_size())?;
        let dataset = open_train_images(&config)?;
        let store = BlockingStore::open(storage_url)?;
        let checkpoint = match options.resume_step {
            Some(step) => Some(store.load_checkpoint(run_id, step)?),
            None => store.load_latest(run_id)?,
        };
        let stepper = Stepper::on_device(config, dataset, options.comm, options.device)?;
        let record = if options.owns_run_record {
            let record = record::open_record(&store, run_id, &stepper.config)?;
            Some(SharedRecord::new(record))
        } else {
            None
        };
        let mut trainer = Self::assemble(stepper, store, run_id, record)?;
        if let Some(checkpoint) = checkpoint {
            trainer.restore(&checkpoint)?;
        }
        Ok(trainer)
    }

    fn assemble(
        stepper: Stepper,
        store: BlockingStore,
        run_id: &str,
        record: Option<SharedRecord>,
    ) -> Result<Self> {
        let seed = stepper.config.run.seed;
        let sample_z = stepper.gan.latent(GRID_IMAGES, &mut sample_rng(seed))?;
        let uploader = Uploader::new(store.store().clone(), store.runtime().clone());
        Ok(Self {
            stepper,
            store,
            uploader,
            run_id: run_id.to_string(),
            record,
            sample_z,
            resumed_from: None,
            last_checkpoint: None,
            committed: Vec::new(),
        })
    }

    fn restore(&mut self, checkpoint: &LoadedCheckpoint) -> Result<()> {
        let url = self.store.checkpoint_url(&self.run_id, checkpoint.step);
        self.check_saved_config(checkpoint, &url)?;
        let state: TrainerState =
            serde_json::from_slice(checkpoint.file(TRAINER_FILE)?).map_err(|e| {
                WorkerError::BadCheckpoint {
                    url: url.clone(),
                    reason: format!("{TRAINER_FILE} is invalid: {e}"),
                }
            })?;

        self.check_dataset_len(&state);
        let stepper = &mut self.stepper;
        stepper
            .gan
            .load_state(|name| checkpoint.files.get(name).map(|b| b.as_ref()))?;
        let (seed, len) = (stepper.config.run.seed, stepper.images().len());
        stepper.order = BatchOrder::new(seed, len, state.data_position)?;
        stepper.step = state.step;

        self.resumed_from = Some(state.step);
        self.last_checkpoint = Some(state.step);
        tracing::debug!(run_id = %self.run_id, rank = self.rank(), step = state.step, "resumed from checkpoint");
        Ok(())
    }

    /// Warns when the training data has another number of images than when the checkpoint
    /// was saved, because the data order then differs from that of an uninterrupted run.
    fn check_dataset_len(&self, state: &TrainerState) {
        let len = self.stepper.images().len() as u64;
        if let Some(saved) = state.dataset_len.filter(|saved| *saved != len) {
            tracing::warn!(
                run_id = %self.run_id,
                rank = self.rank(),
                step = state.step,
                "data.path now has {len} images, but the checkpoint was saved with {saved}; the run resumes with a different data order"
            );
        }
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
            run_id: self.run_id.clone(),
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
        &self.run_id
    }

    pub fn config(&self) -> &RunConfig {
        &self.stepper.config
    }

    /// Returns the model, data and step counter of this rank.
    pub fn stepper(&self) -> &Stepper {
        &self.stepper
    }

    /// Returns a handle to the run record when this process owns run.json, as
    /// [`Trainer::open`] does.
    pub fn run_record(&self) -> Option<SharedRecord> {
        self.record.clone()
    }

    /// This process's rank in the run.
    pub fn rank(&self) -> usize {
        self.stepper.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.stepper.comm.world_size()
    }

    /// User-facing URL of the checkpoint of `step`.
    pub fn checkpoint_url(&self, step: u64) -> String {
        self.store.checkpoint_url(&self.run_id, step)
    }

    /// Trains until train.steps or until `stop` is set, committing a checkpoint every
    /// checkpoint.every steps, at the end, and on stop. Calls `on_step` after every step.
    pub fn run(&mut self, stop: &AtomicBool, on_step: impl FnMut(&StepReport)) -> Result<Outcome> {
        self.run_observed(stop, &mut OnStep(on_step))
    }

    /// Trains as [`Trainer::run`] does, and also calls `observer` for each step and each
    /// committed checkpoint.
    pub fn run_observed(
        &mut self,
        stop: &AtomicBool,
        observer: &mut dyn TrainObserver,
    ) -> Result<Outcome> {
        // Nothing sets this abort flag, so every outcome is Ended.
        let abort = AtomicBool::new(false);
        match self.run_with(stop, &abort, observer)? {
            RankOutcome::Ended(outcome) => Ok(outcome),
            RankOutcome::Aborted { step } => Ok(Outcome::Stopped { step }),
        }
    }

    /// Trains as [`Trainer::run`] does, as one rank of a group whose ranks all call this.
    ///
    /// Before every step the ranks sum their stop and abort flags, so that they all leave at
    /// the same step. On a stop, rank 0 commits a checkpoint and the result is
    /// [`Outcome::Stopped`]. On an abort, no new checkpoint is written and the result is
    /// [`RankOutcome::Aborted`]. Every `collective.checksum_every` steps the ranks compare
    /// parameter checksums and fail with [`WorkerError::Diverged`] when they differ.
    pub fn run_rank(
        &mut self,
        control: &RunControl,
        observer: &mut dyn TrainObserver,
    ) -> Result<RankOutcome> {
        self.run_with(&control.stop, &control.abort, observer)
    }

    fn run_with(
        &mut self,
        stop: &AtomicBool,
        abort: &AtomicBool,
        observer: &mut dyn TrainObserver,
    ) -> Result<RankOutcome> {
        let span = tracing::debug_span!(
            "run",
            ssgan.run_id = %self.run_id,
            ssgan.rank = self.rank(),
            ssgan.world_size = self.world_size(),
        );
        let result = span.in_scope(|| self.run_steps(stop, abort, observer));
        if let Err(error) = &result {
            tracing::error!(run_id = %self.run_id, rank = self.rank(), step = self.step(), %error, "training failed");
        }
        let (final_state, message) = match &result {
            Ok(RankOutcome::Ended(Outcome::Finished { .. })) => {
                (RunState::Succeeded, String::new())
            }
            Ok(RankOutcome::Ended(Outcome::Stopped { .. })) => (RunState::Stopped, String::new()),
            Ok(RankOutcome::Aborted { step }) => {
                (RunState::Failed, format!("aborted at step {step}"))
            }
            Err(error) => (RunState::Failed, error.to_string()),
        };
        if let Err(error) = self.save_record_state(final_state, &message) {
            tracing::error!(run_id = %self.run_id, rank = self.rank(), step = self.step(), %error, "cannot record the final run state");
        }
        result
    }

    fn run_steps(
        &mut self,
        stop: &AtomicBool,
        abort: &AtomicBool,
        observer: &mut dyn TrainObserver,
    ) -> Result<RankOutcome> {
        self.save_record_state(RunState::Running, "")?;
        self.check_replicas()?;
        let target = self.stepper.config.train.steps;
        let mut last_heartbeat = Instant::now();
        while self.step() < target {
            match agree(self.stepper.comm.as_ref(), stop, abort)? {
                Agreed::Continue => {}
                Agreed::Stop => break,
                Agreed::Abort => return self.end_aborted(observer),
            }
            let report = self.traced_step()?;
            observer.step(&report);
            if last_heartbeat.elapsed() >= record::HEARTBEAT {
                self.save_record()?;
                last_heartbeat = Instant::now();
            }
            self.after_step(observer)?;
        }
        if self.last_checkpoint != Some(self.step()) {
            self.commit_after_reports(observer)?;
        }
        self.finish_uploads()?;
        self.report_committed(observer);
        let step = self.step();
        let outcome = if step >= target {
            Outcome::Finished { step }
        } else {
            Outcome::Stopped { step }
        };
        Ok(RankOutcome::Ended(outcome))
    }

    /// Runs one step in a root span of its own, so that a ratio sampler keeps or drops whole
    /// steps, and records its metrics.
    fn traced_step(&mut self) -> Result<StepReport> {
        let span = tracing::debug_span!(
            parent: None,
            "step",
            ssgan.run_id = %self.run_id,
            ssgan.rank = self.rank(),
            ssgan.step = self.step() + 1,
        );
        let report = span.in_scope(|| self.stepper.train_step())?;
        record_step_metrics(&self.run_id, self.rank(), &report);
        Ok(report)
    }

    /// Runs the periodic work after a step: the replica check and the checkpoint.
    fn after_step(&mut self, observer: &mut dyn TrainObserver) -> Result<()> {
        let step = self.step();
        let config = &self.stepper.config;
        let check_every = config.collective.checksum_every;
        let checkpoint_due = step.is_multiple_of(config.checkpoint.every);
        if check_every > 0 && step.is_multiple_of(check_every) {
            self.check_replicas()?;
        }
        if checkpoint_due && step < config.train.steps {
            self.commit_after_reports(observer)?;
        }
        if let Some(step) = self.uploader.poll()? {
            self.record_committed(step)?;
        }
        self.report_committed(observer);
        Ok(())
    }

    /// Ends an aborted run: the upload in flight, of an earlier checkpoint, still finishes.
    fn end_aborted(&mut self, observer: &mut dyn TrainObserver) -> Result<RankOutcome> {
        let step = self.step();
        tracing::debug!(run_id = %self.run_id, rank = self.rank(), step, "all ranks agreed to abort");
        self.finish_uploads()?;
        self.report_committed(observer);
        Ok(RankOutcome::Aborted { step })
    }

    /// Checks that every rank has the same parameters, buffers and step. With one rank
    /// there is nothing to compare, and nothing is computed.
    fn check_replicas(&self) -> Result<()> {
        if self.world_size() == 1 {
            return Ok(());
        }
        let tensors = self.replica_tensors()?;
        let checked = check_parameters_match(self.stepper.comm.as_ref(), &tensors);
        match checked {
            Ok(checksum) => {
                tracing::trace!(run_id = %self.run_id, rank = self.rank(), step = self.step(), checksum, "replicas match");
                Ok(())
            }
            Err(source @ CollectiveError::Diverged { .. }) => Err(WorkerError::Diverged {
                run_id: self.run_id.clone(),
                step: self.step(),
                source: Box::new(source),
            }),
            Err(other) => Err(WorkerError::from(ssgan_model::ModelError::from(other))),
        }
    }

    /// Collects every parameter and buffer of both networks, then the step and data position.
    fn replica_tensors(&self) -> Result<Vec<Tensor>> {
        let gan = &self.stepper.gan;
        let mut tensors = Vec::new();
        for store in [gan.generator_params(), gan.discriminator_params()] {
            let vars = store.params().into_iter().chain(store.buffers());
            tensors.extend(vars.map(|(_, var)| var.as_tensor().clone()));
        }
        let position = self.stepper.order.position();
        let counters = [self.step(), position.epoch, position.offset].map(|v| v as f64);
        tensors.push(Tensor::new(&counters, &candle_core::Device::Cpu)?);
        Ok(tensors)
    }

    /// Snapshots the state and the sample grid, and starts their upload, on rank 0; the
    /// other ranks only note the step. The upload of the previous checkpoint must have
    /// finished, and its error, if any, is returned here.
    pub fn commit_checkpoint(&mut self) -> Result<()> {
        self.last_checkpoint = Some(self.step());
        if self.rank() != 0 {
            return Ok(());
        }
        let span = tracing::debug_span!("checkpoint.stage", ssgan.run_id = %self.run_id, ssgan.step = self.step());
        let snapshot = span.in_scope(|| self.snapshot())?;
        if let Some(step) = self.uploader.submit(snapshot)? {
            self.record_committed(step)?;
        }
        Ok(())
    }

    /// Commits a checkpoint once the observer has heard of every earlier one, so that its
    /// reaction, such as marking a step's evaluation pending, precedes the retention that
    /// the new upload runs.
    fn commit_after_reports(&mut self, observer: &mut dyn TrainObserver) -> Result<()> {
        self.finish_uploads()?;
        self.report_committed(observer);
        self.commit_checkpoint()
    }

    /// Waits for the upload in flight and records it in the run record.
    pub fn finish_uploads(&mut self) -> Result<()> {
        if let Some(step) = self.uploader.wait()? {
            self.record_committed(step)?;
        }
        Ok(())
    }

    fn record_committed(&mut self, step: u64) -> Result<()> {
        self.committed.push(step);
        match &self.record {
            Some(record) => record.update(&self.store, |record| {
                record.latest_step = Some(step);
            }),
            None => Ok(()),
        }
    }

    fn report_committed(&mut self, observer: &mut dyn TrainObserver) {
        for step in std::mem::take(&mut self.committed) {
            observer.checkpoint_committed(step, &self.checkpoint_url(step));
        }
    }

    /// Sets the state and its reason in an owned run record and writes it; a Running state
    /// counts an attempt.
    fn save_record_state(&mut self, state: RunState, message: &str) -> Result<()> {
        let Some(record) = &self.record else {
            return Ok(());
        };
        let config = &self.stepper.config;
        record.update(&self.store, |record| {
            if state == RunState::Running {
                record.attempts += 1;
            }
            record.state = state;
            record.message = message.to_owned();
            record::set_config(record, config);
        })
    }

    fn save_record(&mut self) -> Result<()> {
        let Some(record) = &self.record else {
            return Ok(());
        };
        let config = &self.stepper.config;
        record.update(&self.store, |record| record::set_config(record, config))
    }
}

/// Records a step's duration and data wait on every rank, and its losses on rank 0, whose
/// report is the one the run shows.
fn record_step_metrics(run_id: &str, rank: usize, report: &StepReport) {
    metrics::record_step_duration(run_id, rank, report.seconds);
    metrics::record_data_wait(run_id, rank, report.data_seconds);
    metrics::record_collective_time(run_id, rank, report.collective_seconds);
    if rank != 0 {
        return;
    }
    let values = StepValues {
        loss_d: report.discriminator.loss,
        loss_g: report.generator.loss,
        rotation_loss_d: report.discriminator.rotation,
        rotation_loss_g: report.generator.rotation,
        rotation_accuracy: report.discriminator.rotation_accuracy,
        images_per_second: report.images_per_second,
    };
    metrics::record_step_values(run_id, &values);
}
