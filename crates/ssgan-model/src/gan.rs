//! The SS-GAN training step: losses of both networks and their Adam updates.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, backprop::GradStore};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_collective::{Communicator, all_reduce_mean_bucketed};

use crate::adam::{Adam, AdamConfig};
use crate::config::{LossConfig, ModelConfig, OptimConfig};
use crate::ctx::Ctx;
use crate::discriminator::{Discriminator, DiscriminatorOutput};
use crate::error::{ModelError, Result};
use crate::generator::Generator;
use crate::loss;
use crate::params::{Builder, ParamStore};
use crate::rotation::{SideRows, discriminator_batch, rotation_labels, side_batch};

/// Losses and rotation accuracy of one discriminator step, on this rank's shard.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DiscriminatorMetrics {
    /// Total discriminator loss: hinge + rotation_weight_d * rotation cross-entropy.
    pub loss: f64,
    pub hinge: f64,
    /// Rotation cross-entropy on reals (0 without rotation).
    pub rotation: f64,
    /// Rotation accuracy on the 4n real rotation rows (0 without rotation).
    pub rotation_accuracy: f64,
}

/// Losses and rotation accuracy of one generator step, on this rank's shard.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GeneratorMetrics {
    /// Total generator loss: hinge + rotation_weight_g * rotation cross-entropy.
    pub loss: f64,
    pub hinge: f64,
    /// Rotation cross-entropy on fakes (0 without rotation).
    pub rotation: f64,
    /// Rotation accuracy on the 4n fake rotation rows (0 without rotation).
    pub rotation_accuracy: f64,
}

/// File names of the model state inside a checkpoint.
pub const GENERATOR_FILE: &str = "generator.safetensors";
pub const DISCRIMINATOR_FILE: &str = "discriminator.safetensors";
pub const GENERATOR_OPTIMIZER_FILE: &str = "optimizer_g.safetensors";
pub const DISCRIMINATOR_OPTIMIZER_FILE: &str = "optimizer_d.safetensors";

/// Everything a run's model needs besides its weights.
pub struct GanSettings<'a> {
    pub model: &'a ModelConfig,
    pub loss: &'a LossConfig,
    pub optim: &'a OptimConfig,
    /// Seed of the initial weights and spectral-norm vectors.
    pub init_seed: u64,
    pub device: Device,
    pub dtype: DType,
    /// Maximum bytes of gradients summed by one all-reduce call, at least 4; for example
    /// `ssgan_collective::DEFAULT_BUCKET_BYTES`. Unused with one rank.
    pub bucket_bytes: usize,
}

/// Generator, discriminator and their optimizers, on one rank of a data-parallel group.
pub struct SsGan {
    generator: Generator,
    discriminator: Discriminator,
    g_store: ParamStore,
    d_store: ParamStore,
    g_optimizer: Adam,
    d_optimizer: Adam,
    comm: Arc<dyn Communicator>,
    bucket_bytes: usize,
    rotated: usize,
    loss: LossConfig,
    z_dim: usize,
    device: Device,
    dtype: DType,
    /// Dtype of convolutions and matmuls under mixed precision (`model.precision`).
    compute_dtype: Option<DType>,
}

impl SsGan {
    /// Builds both networks with their initial weights (drawn from `init_seed`) and optimizers.
    pub fn new(settings: &GanSettings, comm: Arc<dyn Communicator>) -> Result<Self> {
        let GanSettings {
            model, loss, optim, ..
        } = settings;
        model.validate()?;
        optim.validate()?;
        validate_bucket_bytes(settings.bucket_bytes)?;
        let mut rng = ChaCha8Rng::seed_from_u64(settings.init_seed);
        let (mut g_store, mut d_store) = (ParamStore::default(), ParamStore::default());
        let generator = Generator::new(&mut builder(&mut g_store, &mut rng, settings), model)?;
        let discriminator =
            Discriminator::new(&mut builder(&mut d_store, &mut rng, settings), model)?;
        let g_optimizer = Adam::new(named_params(&g_store), adam_config(optim, optim.g_lr))?;
        let d_optimizer = Adam::new(named_params(&d_store), adam_config(optim, optim.d_lr))?;
        let rotated = if model.uses_rotation() {
            loss.rotated_per_rank(comm.world_size())
        } else {
            0
        };
        Ok(Self {
            generator,
            discriminator,
            g_store,
            d_store,
            g_optimizer,
            d_optimizer,
            rotated,
            loss: (*loss).clone(),
            z_dim: model.z_dim,
            device: settings.device.clone(),
            dtype: settings.dtype,
            bucket_bytes: settings.bucket_bytes,
            compute_dtype: model.precision.compute_dtype(),
            comm,
        })
    }

    /// Computes the discriminator loss on reals [B, 3, S, S] in [0, 1] (S: the model's image
    /// size, 32 or 128) and fakes generated from z [B, z_dim].
    ///
    /// The generator runs in training mode (batch statistics) without recording a graph; the
    /// discriminator scores [x, x_rot, g, g_rot] in one pass. `update_state` lets batch norm and
    /// spectral norm update their state, as a real step does.
    pub fn discriminator_loss(
        &self,
        reals: &Tensor,
        z: &Tensor,
        update_state: bool,
    ) -> Result<(Tensor, DiscriminatorMetrics)> {
        let g_ctx = self.ctx(update_state, false);
        let fakes = self.generator.forward(&g_ctx, z)?.detach();
        check_same_image_shape(reals, &fakes)?;
        let (batch, real_rows, fake_rows) = discriminator_batch(reals, &fakes, self.rotated)?;
        let out = self
            .discriminator
            .forward(&self.ctx(update_state, true), &batch)?;
        let real_logits = narrow_rows(&out.logits, real_rows.gan_rows())?;
        let fake_logits = narrow_rows(&out.logits, fake_rows.gan_rows())?;
        let hinge = loss::hinge_discriminator(&real_logits, &fake_logits)?;
        let (rotation, accuracy) = self.rotation_loss(&out, real_rows)?;
        let total = weighted_sum(&hinge, rotation.as_ref(), self.loss.rotation_weight_d)?;
        let metrics = DiscriminatorMetrics {
            loss: scalar(&total)?,
            hinge: scalar(&hinge)?,
            rotation: rotation.as_ref().map_or(Ok(0.0), scalar)?,
            rotation_accuracy: accuracy,
        };
        Ok((total, metrics))
    }

    /// Computes the generator loss on fakes from z [B, z_dim]: the discriminator (not recorded for its own
    /// weights) scores [g, g_rot]. It has no batch-dependent layers, so leaving the reals out
    /// of this pass gives the same fake logits as the full four-part batch.
    pub fn generator_loss(
        &self,
        z: &Tensor,
        update_state: bool,
    ) -> Result<(Tensor, GeneratorMetrics)> {
        let fakes = self.generator.forward(&self.ctx(update_state, true), z)?;
        let batch = side_batch(&fakes, self.rotated)?;
        let out = self
            .discriminator
            .forward(&self.ctx(update_state, false), &batch)?;
        let rows = SideRows {
            start: 0,
            batch: z.dim(0)?,
            rotated: self.rotated,
        };
        let fake_logits = narrow_rows(&out.logits, rows.gan_rows())?;
        let hinge = loss::hinge_generator(&fake_logits)?;
        let (rotation, accuracy) = self.rotation_loss(&out, rows)?;
        let total = weighted_sum(&hinge, rotation.as_ref(), self.loss.rotation_weight_g)?;
        let metrics = GeneratorMetrics {
            loss: scalar(&total)?,
            hinge: scalar(&hinge)?,
            rotation: rotation.as_ref().map_or(Ok(0.0), scalar)?,
            rotation_accuracy: accuracy,
        };
        Ok((total, metrics))
    }

    /// Applies one discriminator update: loss, backward, gradient mean over ranks, Adam.
    pub fn discriminator_step(
        &mut self,
        reals: &Tensor,
        z: &Tensor,
    ) -> Result<DiscriminatorMetrics> {
        let (total, metrics) = self.discriminator_loss(reals, z, true)?;
        let grads = total.backward()?;
        let grads = self.synced_grads(&grads, &self.d_optimizer)?;
        self.d_optimizer.step(&grads)?;
        Ok(metrics)
    }

    /// Applies one generator update: loss, backward, gradient mean over ranks, Adam.
    pub fn generator_step(&mut self, z: &Tensor) -> Result<GeneratorMetrics> {
        let (total, metrics) = self.generator_loss(z, true)?;
        let grads = total.backward()?;
        let grads = self.synced_grads(&grads, &self.g_optimizer)?;
        self.g_optimizer.step(&grads)?;
        Ok(metrics)
    }

    /// Generates images [N, 3, S, S] in (0, 1) from z [N, z_dim] in evaluation mode
    /// (running batch-norm statistics, no state updates, no graph).
    pub fn sample(&self, z: &Tensor) -> Result<Tensor> {
        let ctx = Ctx {
            compute_dtype: self.compute_dtype,
            ..Ctx::eval(self.comm.clone())
        };
        self.generator.forward(&ctx, z)
    }

    fn rotation_loss(
        &self,
        out: &DiscriminatorOutput,
        rows: SideRows,
    ) -> Result<(Option<Tensor>, f64)> {
        let Some(logits) = &out.rotation_logits else {
            return Ok((None, 0.0));
        };
        if self.rotated == 0 {
            return Ok((None, 0.0));
        }
        let rotation_logits = narrow_rows(logits, rows.rotation_rows())?;
        let labels = rotation_labels(self.rotated, &self.device)?;
        let ce = loss::rotation_cross_entropy(&rotation_logits, &labels)?;
        Ok((
            Some(ce),
            loss::rotation_accuracy(&rotation_logits, &labels)?,
        ))
    }

    fn ctx(&self, update_state: bool, track: bool) -> Ctx {
        Ctx {
            train: true,
            update_state,
            track,
            comm: self.comm.clone(),
            compute_dtype: self.compute_dtype,
        }
    }

    fn synced_grads(&self, grads: &GradStore, optimizer: &Adam) -> Result<Vec<Option<Tensor>>> {
        let mut found: Vec<Option<Tensor>> = optimizer
            .params()
            .map(|p| grads.get(p.as_tensor()).cloned())
            .collect();
        if self.comm.world_size() > 1 {
            // Every rank's graph reaches the same parameters, so the present gradients line up.
            let mut present: Vec<Tensor> = found.iter().flatten().cloned().collect();
            all_reduce_mean_bucketed(self.comm.as_ref(), &mut present, self.bucket_bytes)?;
            let mut reduced = present.into_iter();
            found
                .iter_mut()
                .flatten()
                .for_each(|g| *g = reduced.next().expect("same count"));
        }
        Ok(found)
    }

    /// Draws z ~ Uniform(-1, 1) of shape [n, z_dim] from `rng`, in the model's dtype.
    pub fn latent(&self, n: usize, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        latent(n, self.z_dim, rng, &self.device, self.dtype)
    }

    /// Generator tensors: parameters and state buffers.
    pub fn generator_params(&self) -> &ParamStore {
        &self.g_store
    }

    /// Discriminator tensors: parameters and state buffers.
    pub fn discriminator_params(&self) -> &ParamStore {
        &self.d_store
    }

    /// Number of generator and discriminator updates applied so far.
    pub fn optimizer_steps(&self) -> (u64, u64) {
        (self.g_optimizer.step_count(), self.d_optimizer.step_count())
    }

    /// Serialises networks and optimizer states to (file name, safetensors bytes) pairs.
    pub fn save_state(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        Ok(vec![
            (GENERATOR_FILE, self.g_store.to_safetensors()?),
            (DISCRIMINATOR_FILE, self.d_store.to_safetensors()?),
            (
                GENERATOR_OPTIMIZER_FILE,
                self.g_optimizer.state_to_safetensors()?,
            ),
            (
                DISCRIMINATOR_OPTIMIZER_FILE,
                self.d_optimizer.state_to_safetensors()?,
            ),
        ])
    }

    /// Restores what [`SsGan::save_state`] wrote. `file` returns the bytes of a named file.
    pub fn load_state<'a>(&mut self, file: impl Fn(&str) -> Option<&'a [u8]>) -> Result<()> {
        let read = |name: &str| {
            file(name).ok_or_else(|| ModelError::State {
                what: name.into(),
                reason: "file is missing".into(),
            })
        };
        self.g_store
            .load_safetensors(read(GENERATOR_FILE)?, GENERATOR_FILE)?;
        self.d_store
            .load_safetensors(read(DISCRIMINATOR_FILE)?, DISCRIMINATOR_FILE)?;
        self.g_optimizer
            .load_state(read(GENERATOR_OPTIMIZER_FILE)?, GENERATOR_OPTIMIZER_FILE)?;
        self.d_optimizer.load_state(
            read(DISCRIMINATOR_OPTIMIZER_FILE)?,
            DISCRIMINATOR_OPTIMIZER_FILE,
        )
    }
}

/// Draws z ~ Uniform(-1, 1) of shape [n, z_dim] from `rng`.
pub fn latent(
    n: usize,
    z_dim: usize,
    rng: &mut ChaCha8Rng,
    device: &Device,
    dtype: DType,
) -> Result<Tensor> {
    use rand::Rng;
    let values: Vec<f32> = (0..n * z_dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    Ok(Tensor::from_vec(values, (n, z_dim), device)?.to_dtype(dtype)?)
}

fn validate_bucket_bytes(bytes: usize) -> Result<()> {
    if bytes >= 4 {
        return Ok(());
    }
    Err(ModelError::InvalidConfig {
        key: "collective.bucket_bytes",
        value: bytes.to_string(),
        expected: "at least 4 (one f32 value)".into(),
    })
}

fn builder<'a>(
    store: &'a mut ParamStore,
    rng: &'a mut ChaCha8Rng,
    settings: &GanSettings,
) -> Builder<'a> {
    Builder {
        store,
        rng,
        device: settings.device.clone(),
        dtype: settings.dtype,
        init: settings.model.init,
        init_std: settings.model.init_std,
    }
}

fn named_params(store: &ParamStore) -> Vec<(String, Var)> {
    store
        .params()
        .into_iter()
        .map(|(name, var)| (name.to_string(), var.clone()))
        .collect()
}

fn adam_config(optim: &OptimConfig, lr: f64) -> AdamConfig {
    AdamConfig {
        lr,
        beta1: optim.beta1,
        beta2: optim.beta2,
        epsilon: optim.epsilon,
    }
}

fn narrow_rows(t: &Tensor, (start, len): (usize, usize)) -> Result<Tensor> {
    Ok(t.narrow(0, start, len)?)
}

fn weighted_sum(base: &Tensor, extra: Option<&Tensor>, weight: f64) -> Result<Tensor> {
    match extra {
        Some(extra) => Ok((base + (extra * weight)?)?),
        None => Ok(base.clone()),
    }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Rejects real images whose channels and size differ from the generator's images.
fn check_same_image_shape(reals: &Tensor, fakes: &Tensor) -> Result<()> {
    let (real, fake) = (&reals.dims()[1..], &fakes.dims()[1..]);
    if real == fake {
        return Ok(());
    }
    let text = |dims: &[usize]| {
        dims.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("x")
    };
    let message = format!(
        "real images are {}, expected {} like the generator's",
        text(real),
        text(fake)
    );
    Err(ModelError::Input(message))
}
