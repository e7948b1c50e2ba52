//! Model, loss and optimizer settings, with their validation.

use serde::{Deserialize, Serialize};

use crate::arch::Layout;
use crate::error::{ModelError, Result};

/// Network architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// The 32x32 ResNet of SNGAN (Miyato et al., 2018) as compare_gan's `resnet_cifar`:
    /// generator width 2*ch and discriminator width ch, so ch = 128 gives 256 and 128.
    Resnet32,
    /// compare_gan's `resnet5` for 128x128 images: generator widths ch x (8, 8, 4, 4, 2, 1),
    /// discriminator widths ch x (1, 2, 4, 4, 8, 8); ch = 64 in the paper's main table.
    Resnet128,
    /// The scaled-up 128x128 model of Chen et al., appendix C: generator widths
    /// ch x (16, 16, 8, 4, 2, 1), discriminator widths ch x (1, 2, 4, 8, 16, 16); ch = 96.
    Resnet128Scaled,
}

impl Arch {
    /// Returns the name that configs use, such as `resnet128-scaled`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Resnet32 => "resnet32",
            Arch::Resnet128 => "resnet128",
            Arch::Resnet128Scaled => "resnet128-scaled",
        }
    }
}

/// Loss set that trains the networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Hinge GAN loss plus the rotation loss (generator on fakes, discriminator on reals).
    Ssgan,
    /// Hinge GAN loss only; the discriminator has no rotation head.
    Uncond,
    Cond,
    RotOnly,
}

/// Normalisation of the generator's residual blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorNorm {
    /// Batch norm with learned per-channel gamma and beta.
    Batch,
    /// Self-modulated batch norm: gamma and beta are computed from z by a small MLP per layer.
    SelfModulated,
}

/// Upsampling in the generator blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upsample {
    /// compare_gan's `unpool`: out[2i, 2j] = in[i, j], the other three pixels of each 2x2 cell 0.
    Zeros,
    /// Each input pixel repeated over its 2x2 cell.
    Nearest,
}

/// Weight initialisation of every convolution and linear kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// N(0, init_std^2).
    Normal,
    /// Orthogonal columns (gain 1) of the kernel flattened to (inputs x outputs).
    Orthogonal,
}

/// Arithmetic of the convolutions and matmuls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Every op in the parameters' dtype.
    #[default]
    F32,
    /// bf16 autocast: convolutions and linear layers cast their input, weight and bias to bf16
    /// and their output back to the input's dtype. Weights, gradients, optimizer state,
    /// batch-norm statistics and losses stay f32.
    Bf16,
}

impl Precision {
    /// Returns the dtype that convolutions and matmuls compute in, or `None` for no cast.
    pub fn compute_dtype(self) -> Option<candle_core::DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(candle_core::DType::BF16),
        }
    }

    fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

/// The `[model]` section of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub arch: Arch,
    pub variant: Variant,
    /// Base channel width; resnet32 uses 2*ch in the generator and ch in the discriminator,
    /// the 128x128 models multiples of ch per block (see [`Arch`]).
    pub ch: usize,
    /// Dimension of the latent vector z ~ Uniform(-1, 1).
    pub z_dim: usize,
    pub g_norm: GeneratorNorm,
    /// Hidden units of each self-modulated batch-norm MLP.
    pub sbn_hidden: usize,
    /// Spectral norm on the generator's kernels (discriminator kernels always have it when
    /// `d_spectral_norm` is true).
    pub g_spectral_norm: bool,
    pub d_spectral_norm: bool,
    pub upsample: Upsample,
    pub init: Init,
    /// Standard deviation of the normal initialiser.
    pub init_std: f64,
    /// Running-average decay of the generator's batch-norm statistics.
    pub bn_decay: f64,
    /// Added to the batch variance before the square root.
    pub bn_epsilon: f64,
    /// `f32`, or `bf16` for mixed precision. Left out of the serialized config when f32, so
    /// that the digests of configs written before this key existed do not change.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Resnet32,
            variant: Variant::Ssgan,
            ch: 128,
            z_dim: 128,
            g_norm: GeneratorNorm::SelfModulated,
            sbn_hidden: 32,
            g_spectral_norm: false,
            d_spectral_norm: true,
            upsample: Upsample::Zeros,
            init: Init::Normal,
            init_std: 0.02,
            bn_decay: 0.9,
            bn_epsilon: 1e-5,
            precision: Precision::F32,
        }
    }
}

/// The `[loss]` section of a run config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Weight of the rotation loss on fakes in the generator's loss (alpha in Chen et al.).
    pub rotation_weight_g: f64,
    /// Weight of the rotation loss on reals in the discriminator's loss (beta in Chen et al.).
    pub rotation_weight_d: f64,
    /// Global number of rotation examples per step, counting all four angles: the last
    /// rotated_batch_size / 4 images of the real batch (and of the fake batch) are rotated.
    pub rotated_batch_size: usize,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            rotation_weight_g: 0.2,
            rotation_weight_d: 1.0,
            rotated_batch_size: 64,
        }
    }
}

/// The `[optim]` section of a run config: Adam for both networks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub g_lr: f64,
    pub d_lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    /// Discriminator steps per generator step.
    pub n_dis: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            g_lr: 2e-4,
            d_lr: 2e-4,
            beta1: 0.0,
            beta2: 0.9,
            epsilon: 1e-8,
            n_dis: 2,
        }
    }
}

fn invalid(key: &'static str, value: impl ToString, expected: &str) -> ModelError {
    ModelError::InvalidConfig {
        key,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn check(ok: bool, key: &'static str, value: impl ToString, expected: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(invalid(key, value, expected))
    }
}

impl ModelConfig {
    /// Rejects values outside their valid range and features this version lacks.
    pub fn validate(&self) -> Result<()> {
        self.check_implemented()?;
        check(self.ch >= 1, "model.ch", self.ch, "at least 1")?;
        check(self.z_dim >= 1, "model.z_dim", self.z_dim, "at least 1")?;
        let positive = self.init_std.is_finite() && self.init_std > 0.0;
        check(
            positive,
            "model.init_std",
            self.init_std,
            "a positive number",
        )?;
        let decay_ok = (0.0..1.0).contains(&self.bn_decay);
        check(decay_ok, "model.bn_decay", self.bn_decay, "in [0, 1)")?;
        let eps_ok = self.bn_epsilon.is_finite() && self.bn_epsilon > 0.0;
        check(
            eps_ok,
            "model.bn_epsilon",
            self.bn_epsilon,
            "a positive number",
        )?;
        let hidden_ok = self.g_norm != GeneratorNorm::SelfModulated || self.sbn_hidden >= 1;
        check(hidden_ok, "model.sbn_hidden", self.sbn_hidden, "at least 1")
    }

    /// Rejects variants that this version does not build yet.
    fn check_implemented(&self) -> Result<()> {
        if matches!(self.variant, Variant::Cond | Variant::RotOnly) {
            let value = format!("{:?}", self.variant).to_lowercase();
            return Err(ModelError::Unsupported {
                key: "model.variant",
                value,
                supported: "ssgan, uncond",
            });
        }
        Ok(())
    }

    /// Channel width of the generator's first residual block (all of them in resnet32).
    pub fn g_width(&self) -> usize {
        Layout::of(self).generator_input_width()
    }

    /// Channel width of the discriminator's last residual block (all but the first input in
    /// resnet32).
    pub fn d_width(&self) -> usize {
        Layout::of(self).feature_width()
    }

    /// Side length of the square images the model makes and scores: 32 or 128.
    pub fn image_size(&self) -> usize {
        Layout::of(self).image_size()
    }

    /// Returns whether the discriminator has a rotation head and the losses use it.
    pub fn uses_rotation(&self) -> bool {
        self.variant == Variant::Ssgan
    }
}

impl LossConfig {
    /// Checks the weights and the rotated batch size against the global batch size.
    pub fn validate(&self, batch_size: usize, world_size: usize) -> Result<()> {
        let w_g = self.rotation_weight_g;
        check(
            w_g.is_finite() && w_g >= 0.0,
            "loss.rotation_weight_g",
            w_g,
            "a number >= 0",
        )?;
        let w_d = self.rotation_weight_d;
        check(
            w_d.is_finite() && w_d >= 0.0,
            "loss.rotation_weight_d",
            w_d,
            "a number >= 0",
        )?;
        let rotated = self.rotated_batch_size;
        let per_rank = 4 * world_size;
        let expected = format!(
            "a positive multiple of {per_rank} (4 angles times world size {world_size}) and \
             at most 4 x train.batch_size = {}",
            4 * batch_size
        );
        let ok = rotated > 0 && rotated.is_multiple_of(per_rank) && rotated <= 4 * batch_size;
        check(ok, "loss.rotated_batch_size", rotated, &expected)
    }

    /// Number of images per rank, on each of the real and fake sides, that are rotated.
    pub fn rotated_per_rank(&self, world_size: usize) -> usize {
        self.rotated_batch_size / world_size / 4
    }
}

impl OptimConfig {
    /// Rejects non-positive learning rates, betas outside [0, 1) and n_dis = 0.
    pub fn validate(&self) -> Result<()> {
        let lr_expected = "a positive number such as 0.0002";
        check(
            self.g_lr.is_finite() && self.g_lr > 0.0,
            "optim.g_lr",
            self.g_lr,
            lr_expected,
        )?;
        check(
            self.d_lr.is_finite() && self.d_lr > 0.0,
            "optim.d_lr",
            self.d_lr,
            lr_expected,
        )?;
        check(
            (0.0..1.0).contains(&self.beta1),
            "optim.beta1",
            self.beta1,
            "in [0, 1)",
        )?;
        check(
            (0.0..1.0).contains(&self.beta2),
            "optim.beta2",
            self.beta2,
            "in [0, 1)",
        )?;
        let eps_ok = self.epsilon.is_finite() && self.epsilon > 0.0;
        check(eps_ok, "optim.epsilon", self.epsilon, "a positive number")?;
        check(self.n_dis >= 1, "optim.n_dis", self.n_dis, "at least 1")
    }
}
