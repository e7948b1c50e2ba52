//! Helpers of the crate's unit tests.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use ssgan_collective::SingleRank;

use crate::config::Init;
use crate::ctx::Ctx;
use crate::layers::Conv2d;
use crate::params::{Builder, ParamStore};

/// Returns the settings of a training pass on one rank that records gradients and leaves the
/// state unchanged.
pub fn training_ctx() -> Ctx {
    Ctx {
        train: true,
        update_state: false,
        track: true,
        comm: Arc::new(SingleRank),
        compute_dtype: None,
    }
}

/// Creates f64 parameters on the CPU, drawn from N(0, 0.5^2).
pub fn f64_builder<'a>(store: &'a mut ParamStore, rng: &'a mut ChaCha8Rng) -> Builder<'a> {
    Builder {
        store,
        rng,
        device: Device::Cpu,
        dtype: DType::F64,
        init: Init::Normal,
        init_std: 0.5,
    }
}

/// Computes conv(x) + bias of a k x k layer (k odd) with candle's own conv2d, "same" padding.
pub fn reference_conv(ctx: &Ctx, conv: &Conv2d, x: &Tensor) -> Tensor {
    let kernel = conv.kernel(ctx).unwrap();
    let padding = kernel.dim(3).unwrap() / 2;
    let y = x.conv2d(&kernel, padding, 1, 1, 1).unwrap();
    let bias = conv.bias(ctx).reshape((1, (), 1, 1)).unwrap();
    y.broadcast_add(&bias).unwrap()
}

/// Returns max |a - b| over all elements of two f64 tensors of one shape.
pub fn max_abs_difference(a: &Tensor, b: &Tensor) -> f64 {
    let difference = (a - b).unwrap().abs().unwrap();
    difference.max_all().unwrap().to_scalar::<f64>().unwrap()
}
