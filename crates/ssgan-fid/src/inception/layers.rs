//! The building blocks of the FID InceptionV3: conv + batch norm + ReLU, and the pools.

use candle_core::{DType, Device, Tensor};
use ssgan_model::kernels::{
    ConvGeometry, Epilogue, PoolKind, PoolSpec, conv2d_inference, pool2d_inference,
};

use crate::error::Result;
use crate::weights::InceptionWeights;

/// Batch-norm epsilon of the FID InceptionV3 (torchvision's `BasicConv2d`), not PyTorch's
/// default 1e-5.
const BATCH_NORM_EPS: f64 = 1e-3;

/// Geometry of one convolution: channels, kernel (kh, kw), stride and zero padding (ph, pw).
#[derive(Clone, Copy, Debug)]
pub struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub padding: (usize, usize),
}

impl ConvSpec {
    /// Describes a stride-1 convolution with a `kernel` and `padding` per axis.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        padding: (usize, usize),
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding,
        }
    }

    /// Describes a square `k` x `k` convolution with `padding` on every side.
    pub fn square(in_channels: usize, out_channels: usize, k: usize, padding: usize) -> Self {
        Self::new(in_channels, out_channels, (k, k), (padding, padding))
    }

    /// Returns the same convolution with another stride.
    pub fn with_stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }
}

/// Reads weights under a key prefix and converts them to the model's dtype and device.
pub struct Loader<'a> {
    pub weights: &'a InceptionWeights,
    pub dtype: DType,
    pub device: &'a Device,
}

impl Loader<'_> {
    /// Loads `key` with the given shape, converted to the model's dtype and device.
    pub fn tensor(&self, key: &str, shape: &[usize]) -> Result<Tensor> {
        let tensor = self.weights.get(key, shape)?;
        Ok(tensor.to_dtype(self.dtype)?.to_device(self.device)?)
    }

    /// Loads the `BasicConv2d` at `prefix` (keys `prefix.conv.weight`, `prefix.bn.*`).
    pub fn conv(&self, prefix: &str, spec: ConvSpec) -> Result<BasicConv2d> {
        BasicConv2d::load(self, prefix, spec)
    }
}

/// Conv2d without bias, eval-mode BatchNorm2d (eps 1e-3) and ReLU, with the batch norm
/// folded into the convolution: `relu(conv(x, w * scale) + shift)`.
pub struct BasicConv2d {
    weight: Tensor,
    /// The folded batch-norm shift, [out_channels].
    shift: Tensor,
    spec: ConvSpec,
}

impl BasicConv2d {
    fn load(loader: &Loader, prefix: &str, spec: ConvSpec) -> Result<Self> {
        let (kh, kw) = spec.kernel;
        let out = spec.out_channels;
        let weight = loader.tensor(
            &format!("{prefix}.conv.weight"),
            &[out, spec.in_channels, kh, kw],
        )?;
        let bn = |name: &str| loader.tensor(&format!("{prefix}.bn.{name}"), &[out]);
        let (gamma, beta) = (bn("weight")?, bn("bias")?);
        let (mean, var) = (bn("running_mean")?, bn("running_var")?);

        let scale = gamma.broadcast_div(&(var + BATCH_NORM_EPS)?.sqrt()?)?;
        let shift = (beta - mean.broadcast_mul(&scale)?)?;
        Ok(Self {
            weight: weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?,
            shift,
            spec,
        })
    }

    /// Applies the layer to `x` [N, in_channels, H, W] of the model's dtype, giving
    /// [N, out_channels, Ho, Wo] with values >= 0.
    ///
    /// On the CPU the convolution, shift and ReLU run as one im2col + GEMM op of ssgan-model's
    /// kernels. Other devices run candle's conv2d and element-wise ops.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let geometry = ConvGeometry {
            stride: self.spec.stride,
            padding: self.spec.padding,
        };
        let epilogue = Epilogue {
            scale: None,
            shift: Some(&self.shift),
            relu: true,
        };
        Ok(conv2d_inference(x, &self.weight, geometry, epilogue)?)
    }
}

/// Layers applied one after the other.
pub struct Chain(pub Vec<BasicConv2d>);

impl Chain {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for layer in &self.0 {
            y = layer.forward(&y)?;
        }
        Ok(y)
    }
}

/// 3x3 max pool with stride 2 and no padding (floor mode).
pub fn max_pool_3x3_stride2(x: &Tensor) -> Result<Tensor> {
    Ok(pool2d_inference(x, pool_3x3(PoolKind::Max, 2, 0))?)
}

/// 3x3 max pool with stride 1 and padding 1, as PyTorch pads it (with -infinity).
pub fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    Ok(pool2d_inference(x, pool_3x3(PoolKind::Max, 1, 1))?)
}

/// 3x3 average pool with stride 1 and padding 1 that divides by the number of taps inside
/// the image (PyTorch's `count_include_pad=False`): 4 at a corner, 6 on an edge, 9 inside.
pub fn avg_pool_3x3_exclude_pad(x: &Tensor) -> Result<Tensor> {
    let spec = pool_3x3(PoolKind::AverageExcludePad, 1, 1);
    Ok(pool2d_inference(x, spec)?)
}

fn pool_3x3(kind: PoolKind, stride: usize, padding: usize) -> PoolSpec {
    PoolSpec {
        kind,
        size: 3,
        stride,
        padding,
    }
}
