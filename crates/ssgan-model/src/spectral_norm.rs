//! Spectral normalisation of a kernel by one power iteration per forward pass.

use candle_core::{Tensor, Var};

use crate::ctx::Ctx;
use crate::error::Result;
use crate::params::Builder;

/// Squared-norm floor of the vector normalisation (TensorFlow's `l2_normalize` epsilon).
const NORM_EPSILON: f64 = 1e-12;

/// The persisted left singular-vector estimate `u` of one kernel.
///
/// The kernel is viewed as a matrix M of shape [out, in*kh*kw]; `u` lives on the input side.
/// Each pass computes v = normalize(M u), u' = normalize(M^T v), sigma = v^T M u', and divides
/// the kernel by sigma. u and v carry no gradient; the gradient flows through M in M / sigma.
pub struct SpectralNorm {
    u: Var,
}

impl SpectralNorm {
    /// Creates `u` ~ N(0, 1), not normalised, for a kernel with `fan_in` inputs per output.
    pub fn new(builder: &mut Builder, name: &str, fan_in: usize) -> Result<Self> {
        let u = builder.normal_buffer(format!("{name}.sn_u"), fan_in)?;
        Ok(Self { u })
    }

    /// Returns the kernel divided by its estimated largest singular value, same shape.
    ///
    /// With `ctx.update_state` the new estimate of u is stored, as compare_gan does on every
    /// pass that reads the weight (training and evaluation alike).
    pub fn normalize(&self, ctx: &Ctx, kernel: &Tensor) -> Result<Tensor> {
        let sigma = self.sigma(ctx, kernel)?;
        Ok(kernel.broadcast_div(&sigma)?)
    }

    /// Estimates the largest singular value of `kernel`, as a tensor of shape [1, 1].
    pub fn sigma(&self, ctx: &Ctx, kernel: &Tensor) -> Result<Tensor> {
        let out = kernel.dim(0)?;
        let matrix = kernel.reshape((out, ()))?;
        let fixed = matrix.detach();
        let u = self.u.as_detached_tensor().unsqueeze(1)?;
        let v = l2_normalize(&fixed.matmul(&u)?)?;
        let u_next = l2_normalize(&fixed.t()?.matmul(&v)?)?;
        if ctx.update_state {
            self.u.set(&u_next.squeeze(1)?)?;
        }
        Ok(v.t()?.matmul(&matrix.matmul(&u_next)?)?)
    }

    /// Returns the current estimate of u.
    pub fn u(&self) -> &Var {
        &self.u
    }
}

/// Divides a column vector by sqrt(max(sum of squares, 1e-12)).
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let squared = x.sqr()?.sum_all()?.maximum(NORM_EPSILON)?;
    Ok(x.broadcast_div(&squared.sqrt()?)?)
}
