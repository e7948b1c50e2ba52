//! One rank's training steps: real batches in data order, latent vectors, model updates.

use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use ssgan_collective::{Communicator, TimedCommunicator};
use ssgan_data::{BatchOrder, DataPosition, Prefetcher, TrainImages, shard};
use ssgan_model::{DiscriminatorMetrics, GanSettings, GeneratorMetrics, SsGan, latent};

use crate::config::RunConfig;
use crate::error::{Result, WorkerError};
use crate::rng::step_rng;
use crate::staging::BatchStaging;

/// Metrics of one generator step and the discriminator steps before it.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    /// Generator steps completed, this one included.
    pub step: u64,
    pub target_steps: u64,
    /// Mean over this step's n_dis discriminator steps.
    pub discriminator: DiscriminatorMetrics,
    pub generator: GeneratorMetrics,
    pub seconds: f64,
    /// Part of `seconds` spent waiting for real batches and copying them to the device.
    pub data_seconds: f64,
    /// Part of `seconds` spent in collectives: gradient all-reduce and synchronized batch
    /// norm. On GPUs only the time to queue NCCL's work, which runs asynchronously.
    pub collective_seconds: f64,
    /// Global batch over the step's wall time.
    pub images_per_second: f64,
}

/// The model, the data and the step counter of one rank.
pub struct Stepper {
    pub(crate) config: RunConfig,
    pub(crate) gan: SsGan,
    /// The training images, one batch built ahead.
    pub(crate) batches: Prefetcher,
    pub(crate) order: BatchOrder,
    pub(crate) comm: Arc<dyn Communicator>,
    /// The same communicator as `comm`, for the time its collectives take.
    collective_timer: Arc<TimedCommunicator>,
    pub(crate) step: u64,
    /// Device of the model; batches are assembled on the CPU and copied here.
    device: Device,
    staging: BatchStaging,
}

impl Stepper {
    /// Builds the model with its initial weights on the CPU, at step 0 and the start of
    /// epoch 0.
    pub fn new(
        config: RunConfig,
        dataset: Box<dyn TrainImages>,
        comm: Arc<dyn Communicator>,
    ) -> Result<Self> {
        Self::on_device(config, dataset, comm, Device::Cpu)
    }

    /// Builds the model with its initial weights on `device`, at step 0 and the start of
    /// epoch 0.
    pub fn on_device(
        config: RunConfig,
        dataset: Box<dyn TrainImages>,
        comm: Arc<dyn Communicator>,
        device: Device,
    ) -> Result<Self> {
        check_image_size(dataset.as_ref(), &config)?;
        let collective_timer = Arc::new(TimedCommunicator::new(comm));
        let comm: Arc<dyn Communicator> = collective_timer.clone();
        let gan = build_gan_on(&config, comm.clone(), &device)?;
        let order = BatchOrder::new(config.run.seed, dataset.len(), DataPosition::default())?;
        Ok(Self {
            config,
            gan,
            batches: Prefetcher::new(Arc::from(dataset)),
            order,
            comm,
            collective_timer,
            step: 0,
            device,
            staging: BatchStaging::default(),
        })
    }

    /// Runs n_dis discriminator steps and one generator step on the next real batches.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let started = Instant::now();
        // Collectives between steps, such as the stop agreement, are not the step's.
        self.collective_timer.take_seconds();
        let n_dis = self.config.optim.n_dis;
        let mut d_sum = DiscriminatorMetrics::default();
        let mut data_seconds = 0.0;
        for phase in 0..n_dis {
            let waited = Instant::now();
            let reals = self.next_real_batch()?;
            data_seconds += waited.elapsed().as_secs_f64();
            let z = self.latent_shard(phase as u32)?;
            let span = tracing::debug_span!("d_forward_backward", phase);
            let metrics = span.in_scope(|| self.gan.discriminator_step(&reals, &z))?;
            accumulate(&mut d_sum, &metrics);
        }
        let z = self.latent_shard(n_dis as u32)?;
        let span = tracing::debug_span!("g_forward_backward");
        let generator = span.in_scope(|| self.gan.generator_step(&z))?;
        self.step += 1;
        let seconds = started.elapsed().as_secs_f64();
        Ok(StepReport {
            step: self.step,
            target_steps: self.config.train.steps,
            discriminator: scaled(&d_sum, 1.0 / n_dis as f64),
            generator,
            seconds,
            data_seconds,
            collective_seconds: self.collective_timer.take_seconds(),
            images_per_second: self.config.train.batch_size as f64 / seconds,
        })
    }

    /// Takes this rank's shard of the next global batch, and starts building the shard
    /// after it. Only [`BatchOrder::next_batch`] advances the order, so a checkpoint saves
    /// the position of the batches used, not of the one built ahead.
    #[tracing::instrument(name = "data", level = "debug", skip_all)]
    fn next_real_batch(&mut self) -> Result<Tensor> {
        let batch_size = self.config.train.batch_size;
        let (rank, world_size) = (self.comm.rank(), self.comm.world_size());
        let mine = shard(&self.order.next_batch(batch_size), rank, world_size)?;
        let upcoming = shard(&self.order.peek_batch(batch_size), rank, world_size)?;
        let batch = self.batches.take(&mine, upcoming)?;
        self.staging.upload(&batch, &self.device)
    }

    /// Returns the training images.
    pub fn images(&self) -> &dyn TrainImages {
        self.batches.images()
    }

    /// This rank's rows of the global batch of latent vectors of `phase` in the current step.
    /// Drawing the global batch makes the vectors independent of the world size.
    fn latent_shard(&self, phase: u32) -> Result<Tensor> {
        let batch = self.config.train.batch_size;
        let mut rng = step_rng(self.config.run.seed, self.step, phase);
        let z = latent(
            batch,
            self.config.model.z_dim,
            &mut rng,
            &Device::Cpu,
            DType::F32,
        )?;
        let per_rank = batch / self.comm.world_size();
        let mine = z.narrow(0, self.comm.rank() * per_rank, per_rank)?;
        Ok(mine.to_device(&self.device)?)
    }

    /// Returns the model being trained.
    pub fn gan(&self) -> &SsGan {
        &self.gan
    }
}

/// Builds the model of `config` with its initial weights on the CPU.
pub fn build_gan(config: &RunConfig, comm: Arc<dyn Communicator>) -> Result<SsGan> {
    build_gan_on(config, comm, &Device::Cpu)
}

/// Builds the model of `config` with its initial weights on `device`. The weights are drawn
/// the same way on every device.
pub fn build_gan_on(
    config: &RunConfig,
    comm: Arc<dyn Communicator>,
    device: &Device,
) -> Result<SsGan> {
    let settings = GanSettings {
        model: &config.model,
        loss: &config.loss,
        optim: &config.optim,
        init_seed: config.run.seed,
        device: device.clone(),
        dtype: DType::F32,
        bucket_bytes: config.collective.bucket_bytes,
    };
    Ok(SsGan::new(&settings, comm)?)
}

/// Rejects training images whose size differs from the model's.
fn check_image_size(dataset: &dyn TrainImages, config: &RunConfig) -> Result<()> {
    let (data, model) = (dataset.image_size(), config.model.image_size());
    if data == model {
        return Ok(());
    }
    Err(WorkerError::InvalidValue {
        key: "model.arch",
        value: format!("{:?} ({model}x{model} images)", config.model.arch.name()),
        expected: format!("an architecture for the data's {data}x{data} images"),
    })
}

fn accumulate(sum: &mut DiscriminatorMetrics, step: &DiscriminatorMetrics) {
    sum.loss += step.loss;
    sum.hinge += step.hinge;
    sum.rotation += step.rotation;
    sum.rotation_accuracy += step.rotation_accuracy;
}

fn scaled(sum: &DiscriminatorMetrics, factor: f64) -> DiscriminatorMetrics {
    DiscriminatorMetrics {
        loss: sum.loss * factor,
        hinge: sum.hinge * factor,
        rotation: sum.rotation * factor,
        rotation_accuracy: sum.rotation_accuracy * factor,
    }
}
