//! Convolution and linear layers with optional spectral norm.

use candle_core::{Tensor, Var};

use crate::ctx::Ctx;
use crate::error::Result;
use crate::kernels::{Addend, ConvKind, Fusion, conv2d_fused};
use crate::params::Builder;
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

    /// Returns the kernel [c_out, c_in, k, k] of this pass, spectrally normalised when enabled.
    #[cfg(test)]
    pub(crate) fn kernel(&self, ctx: &Ctx) -> Result<Tensor> {
        kernel_for_pass(ctx, &self.weight, self.spectral_norm.as_ref())
    }

    /// Sets the bias to N(0, 1) draws, so that tests see where each layer's bias goes.
    #[cfg(test)]
    pub(crate) fn randomize_bias(&self) {
        let values = self.bias.as_tensor().randn_like(0.0, 1.0).unwrap();
        self.bias.set(&values).unwrap();
    }

    /// Returns the bias [c_out] of this pass: the variable itself, or a detached copy.
    pub fn bias(&self, ctx: &Ctx) -> Tensor {
        ctx.param(&self.bias)
    }

    /// Computes `addend + pool(conv(relu(x)))` for x: [N, c_in, H, W], where `kind` picks a
    /// plain or a zero-upsampled convolution and `fusion` the ReLU and 2x2 average pooling.
    ///
    /// The output is [N, c_out, Ho, Wo] in x's dtype: (H, W), doubled for `ZeroUpsampled` and
    /// halved when pooling. The addend is usually [`Conv2d::bias`], or a residual of the
    /// output's shape to which its producer already added this layer's bias. Values are unbounded.
    pub fn forward_fused(
        &self,
        ctx: &Ctx,
        x: &Tensor,
        kind: ConvKind,
        fusion: Fusion,
        addend: Addend,
    ) -> Result<Tensor> {
        let weight = kernel_for_pass(ctx, &self.weight, self.spectral_norm.as_ref())?;
        let xc = ctx.to_compute(x)?;
        let weight = ctx.to_compute(&weight)?;
        let cast = match addend {
            Addend::Bias(tensor) | Addend::Residual(tensor) => Some(ctx.to_compute(tensor)?),
            Addend::None => None,
        };
        let addend = match (addend, &cast) {
            (Addend::Bias(_), Some(tensor)) => Addend::Bias(tensor),
            (Addend::Residual(_), Some(tensor)) => Addend::Residual(tensor),
            _ => Addend::None,
        };
        let y = conv2d_fused(kind, &xc, &weight, addend, fusion)?;
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
