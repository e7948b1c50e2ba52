//! Convolution and linear layers with optional spectral norm.

use candle_core::{Tensor, Var};

use crate::config::Upsample;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::kernels::{conv2d_same, conv2d_zero_upsampled};
use crate::params::Builder;
use crate::resample::upsample;
use crate::spectral_norm::SpectralNorm;

/// A k x k convolution, stride 1, "same" zero padding, with bias.
pub struct Conv2d {
    weight: Var,
    bias: Var,
    spectral_norm: Option<SpectralNorm>,
}

impl Conv2d {
    /// Creates a conv named `name` from `c_in` to `c_out` channels; `kernel_size` must be odd.
    pub fn new(
        builder: &mut Builder,
        name: &str,
        (c_in, c_out): (usize, usize),
        kernel_size: usize,
        spectral_norm: bool,
    ) -> Result<Self> {
        let shape = [c_out, c_in, kernel_size, kernel_size];
        let weight = builder.kernel(format!("{name}.weight"), &shape)?;
        let bias = builder.constant(format!("{name}.bias"), &[c_out], 0.0)?;
        let fan_in = c_in * kernel_size * kernel_size;
        let spectral_norm = optional_sn(builder, name, fan_in, spectral_norm)?;
        Ok(Self {
            weight,
            bias,
            spectral_norm,
        })
    }

    /// Convolves x: [N, c_in, H, W] to [N, c_out, H, W], in x's dtype. Under mixed precision
    /// the convolution itself runs in the compute dtype.
    pub fn forward(&self, ctx: &Ctx, x: &Tensor) -> Result<Tensor> {
        let weight = kernel_for_pass(ctx, &self.weight, self.spectral_norm.as_ref())?;
        let bias = ctx.param(&self.bias);
        let (xc, weight, bias) = (
            ctx.to_compute(x)?,
            ctx.to_compute(&weight)?,
            ctx.to_compute(&bias)?,
        );
        let y = conv2d_same(&xc, &weight, Some(&bias))?;
        Ok(y.to_dtype(x.dtype())?)
    }

    /// Upsamples x: [N, c_in, H, W] by 2 with `mode` and convolves it, giving
    /// [N, c_out, 2H, 2W] in x's dtype. Zero insertion runs as one fused op that skips the
    /// products with inserted zeros.
    pub fn forward_upsampled(&self, ctx: &Ctx, x: &Tensor, mode: Upsample) -> Result<Tensor> {
        let weight = kernel_for_pass(ctx, &self.weight, self.spectral_norm.as_ref())?;
        let bias = ctx.param(&self.bias);
        let (xc, weight, bias) = (
            ctx.to_compute(x)?,
            ctx.to_compute(&weight)?,
            ctx.to_compute(&bias)?,
        );
        let y = match mode {
            Upsample::Zeros => conv2d_zero_upsampled(&xc, &weight, Some(&bias))?,
            Upsample::Nearest => conv2d_same(&upsample(&xc, mode)?, &weight, Some(&bias))?,
        };
        Ok(y.to_dtype(x.dtype())?)
    }
}

/// An affine layer x W^T + b, with optional spectral norm on W.
pub struct Linear {
    weight: Var,
    bias: Var,
    spectral_norm: Option<SpectralNorm>,
}

impl Linear {
    /// Creates a layer from `d_in` to `d_out` features whose bias starts at `bias_init`.
    pub fn new(
        builder: &mut Builder,
        name: &str,
        (d_in, d_out): (usize, usize),
        bias_init: f64,
        spectral_norm: bool,
    ) -> Result<Self> {
        let weight = builder.kernel(format!("{name}.weight"), &[d_out, d_in])?;
        let bias = builder.constant(format!("{name}.bias"), &[d_out], bias_init)?;
        let spectral_norm = optional_sn(builder, name, d_in, spectral_norm)?;
        Ok(Self {
            weight,
            bias,
            spectral_norm,
        })
    }

    /// Maps x: [N, d_in] to [N, d_out], in x's dtype. Under mixed precision the matmul and
    /// the bias add run in the compute dtype.
    pub fn forward(&self, ctx: &Ctx, x: &Tensor) -> Result<Tensor> {
        let weight = kernel_for_pass(ctx, &self.weight, self.spectral_norm.as_ref())?;
        let (xc, weight) = (ctx.to_compute(x)?, ctx.to_compute(&weight)?);
        let bias = ctx.to_compute(&ctx.param(&self.bias))?;
        let y = xc.matmul(&weight.t()?)?.broadcast_add(&bias)?;
        Ok(y.to_dtype(x.dtype())?)
    }
}

fn optional_sn(
    builder: &mut Builder,
    name: &str,
    fan_in: usize,
    enabled: bool,
) -> Result<Option<SpectralNorm>> {
    enabled
        .then(|| SpectralNorm::new(builder, name, fan_in))
        .transpose()
}

fn kernel_for_pass(ctx: &Ctx, weight: &Var, sn: Option<&SpectralNorm>) -> Result<Tensor> {
    let kernel = ctx.param(weight);
    match sn {
        Some(sn) => sn.normalize(ctx, &kernel),
        None => Ok(kernel),
    }
}
