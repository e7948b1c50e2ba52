//! Batch norm of the generator: synchronized standardisation, plain and self-modulated affine.

use candle_core::{Tensor, Var};
use ssgan_collective::all_reduce_sum_tensor;

use crate::config::GeneratorNorm;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::kernels::{channel_moments, normalize_affine};
use crate::layers::Linear;
use crate::params::Builder;

/// Per-channel standardisation with batch statistics summed over every rank of the group.
///
/// Training passes compute mean and biased variance of the global batch from
/// (sum x, sum x^2, count), all-reduced through the pass's communicator, and update the running
/// averages m <- decay m + (1 - decay) mean, v <- decay v + (1 - decay) var (m starts at 0,
/// v at 1, no debiasing). Evaluation passes use the running averages.
pub struct Standardize {
    running_mean: Var,
    running_var: Var,
    decay: f64,
    epsilon: f64,
}

impl Standardize {
    /// Creates the running statistics of a layer with `channels` channels.
    pub fn new(
        builder: &mut Builder,
        name: &str,
        channels: usize,
        (decay, epsilon): (f64, f64),
    ) -> Result<Self> {
        let running_mean = builder.buffer(format!("{name}.running_mean"), &[channels], 0.0)?;
        let running_var = builder.buffer(format!("{name}.running_var"), &[channels], 1.0)?;
        Ok(Self {
            running_mean,
            running_var,
            decay,
            epsilon,
        })
    }

    /// Standardises x: [N, C, H, W] per channel to zero mean and unit variance, same shape.
    pub fn forward(&self, ctx: &Ctx, x: &Tensor) -> Result<Tensor> {
        let stats = self.statistics(ctx, x)?;
        let (n, c, _, _) = x.dims4()?;
        // gamma = 1 and beta = 0 for every image.
        let ones = Tensor::ones((n, 1, c), x.dtype(), x.device())?;
        let affine = Tensor::cat(&[&ones, &ones.zeros_like()?], 1)?;
        Ok(normalize_affine(x, &stats, &affine)?)
    }

    /// Returns [2, C]: the mean and 1 / sqrt(var + epsilon) per channel, from the global
    /// batch in training passes (updating the running averages when the pass allows) and from
    /// the running averages in evaluation passes.
    pub fn statistics(&self, ctx: &Ctx, x: &Tensor) -> Result<Tensor> {
        let (mean, var) = if ctx.train {
            let (mean, var) = self.batch_moments(ctx, x)?;
            if ctx.update_state {
                self.update_running(&mean, &var)?;
            }
            (mean, var)
        } else {
            let mean = self.running_mean.as_detached_tensor();
            (mean, self.running_var.as_detached_tensor())
        };
        let inv_std = (var + self.epsilon)?.sqrt()?.recip()?;
        Ok(Tensor::stack(&[&mean, &inv_std], 0)?)
    }

    /// Mean and biased variance per channel over the global batch, each of shape [C].
    fn batch_moments(&self, ctx: &Ctx, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (n, c, h, w) = x.dims4()?;
        let moments = channel_moments(x)?;
        let count = Tensor::new(&[(n * h * w) as f64], x.device())?.to_dtype(x.dtype())?;
        let local = Tensor::cat(&[&moments, &count], 0)?;
        let global = all_reduce_sum_tensor(&ctx.comm, &local)?;
        let total = global.narrow(0, 2 * c, 1)?;
        let mean = global.narrow(0, 0, c)?.broadcast_div(&total)?;
        let mean_sq = global.narrow(0, c, c)?.broadcast_div(&total)?;
        let var = (mean_sq - mean.sqr()?)?.relu()?;
        Ok((mean, var))
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor) -> Result<()> {
        let blend = |running: &Var, batch: &Tensor| -> Result<()> {
            let old = running.as_detached_tensor();
            let new = ((old * self.decay)? + (batch.detach() * (1.0 - self.decay))?)?;
            Ok(running.set(&new)?)
        };
        blend(&self.running_mean, mean)?;
        blend(&self.running_var, var)
    }
}

/// A generator normalisation layer: standardisation followed by a per-channel affine map.
pub struct Norm {
    standardize: Standardize,
    affine: Affine,
}

enum Affine {
    /// Learned gamma (init 1) and beta (init 0).
    Plain { gamma: Var, beta: Var },
    /// gamma(z) and beta(z) from a one-hidden-layer ReLU MLP of z, one MLP per layer.
    SelfModulated {
        hidden: Linear,
        gamma: Linear,
        beta: Linear,
    },
}

/// Shape settings of a [`Norm`].
pub struct NormSpec {
    pub kind: GeneratorNorm,
    pub channels: usize,
    pub z_dim: usize,
    pub hidden: usize,
    pub spectral_norm: bool,
    pub decay: f64,
    pub epsilon: f64,
}

impl Norm {
    /// Creates the layer's running statistics and affine parameters.
    pub fn new(builder: &mut Builder, name: &str, spec: &NormSpec) -> Result<Self> {
        let stats = (spec.decay, spec.epsilon);
        let standardize = Standardize::new(builder, name, spec.channels, stats)?;
        let affine = match spec.kind {
            GeneratorNorm::Batch => Affine::Plain {
                gamma: builder.constant(format!("{name}.gamma"), &[spec.channels], 1.0)?,
                beta: builder.constant(format!("{name}.beta"), &[spec.channels], 0.0)?,
            },
            GeneratorNorm::SelfModulated => self_modulated(builder, name, spec)?,
        };
        Ok(Self {
            standardize,
            affine,
        })
    }

    /// Normalises x: [N, C, H, W] given z: [N, z_dim] (used only when self-modulated), same
    /// shape and dtype as x.
    pub fn forward(&self, ctx: &Ctx, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        let stats = self.standardize.statistics(ctx, x)?;
        let (n, c, _, _) = x.dims4()?;
        let affine = match &self.affine {
            Affine::Plain { gamma, beta } => {
                let pair = Tensor::stack(&[ctx.param(gamma), ctx.param(beta)], 0)?;
                pair.unsqueeze(0)?.broadcast_as((n, 2, c))?
            }
            Affine::SelfModulated {
                hidden,
                gamma,
                beta,
            } => {
                let h = hidden.forward(ctx, z)?.relu()?;
                Tensor::stack(&[gamma.forward(ctx, &h)?, beta.forward(ctx, &h)?], 1)?
            }
        };
        Ok(normalize_affine(x, &stats, &affine)?)
    }
}

fn self_modulated(builder: &mut Builder, name: &str, spec: &NormSpec) -> Result<Affine> {
    let sn = spec.spectral_norm;
    let (z_dim, hidden_dim, c) = (spec.z_dim, spec.hidden, spec.channels);
    let hidden = Linear::new(
        builder,
        &format!("{name}.hidden"),
        (z_dim, hidden_dim),
        0.0,
        sn,
    )?;
    let gamma = Linear::new(builder, &format!("{name}.gamma"), (hidden_dim, c), 1.0, sn)?;
    let beta = Linear::new(builder, &format!("{name}.beta"), (hidden_dim, c), 0.0, sn)?;
    Ok(Affine::SelfModulated {
        hidden,
        gamma,
        beta,
    })
}
