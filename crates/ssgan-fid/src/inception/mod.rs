//! pytorch-fid's FID InceptionV3 (pytorch-fid 0.3.0, torchvision InceptionV3 with the
//! FIDInceptionA/C/E_1/E_2 blocks) in eval mode, with its input pipeline.

mod layers;
mod mixed;
mod resize;

use candle_core::{DType, Device, Tensor};
use tracing::trace;

use self::layers::{BasicConv2d, Chain, ConvSpec, Loader, max_pool_3x3_stride2};
use self::mixed::{EPool, MixedA, MixedB, MixedC, MixedD, MixedE};
use crate::error::{FidError, Result};
use crate::weights::InceptionWeights;

pub use self::resize::resize_bilinear;

/// Side of the square input the network expects.
pub const INPUT_SIZE: usize = 299;
/// Classes of the FID weights' `fc` layer (1008, from the 2015 TensorFlow graph).
pub const LOGIT_CLASSES: usize = 1008;
/// Width of the pool3 features.
pub const POOL3_DIMS: usize = 2048;

/// A feature layer, named by its width as in pytorch-fid's `--dims`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureLayer {
    /// Output of the first max pool (block 0), averaged over H and W: 64 values.
    Block64,
    /// Output of the second max pool (block 1), averaged over H and W: 192 values.
    Block192,
    /// Output of Mixed_6e (block 2), averaged over H and W: 768 values.
    Block768,
    /// The global average pool after Mixed_7c (pool3, block 3): 2048 values. The FID layer.
    Pool3,
    /// The 1008 logits of the `fc` layer applied to pool3, for the Inception Score.
    Logits,
}

impl FeatureLayer {
    /// Returns the layer of a pytorch-fid `--dims` value (64, 192, 768 or 2048).
    ///
    /// # Errors
    ///
    /// [`FidError::Input`] for any other value.
    pub fn from_dims(dims: usize) -> Result<Self> {
        match dims {
            64 => Ok(Self::Block64),
            192 => Ok(Self::Block192),
            768 => Ok(Self::Block768),
            2048 => Ok(Self::Pool3),
            other => Err(FidError::Input(format!(
                "feature dims {other} is not a pytorch-fid layer: expected 64, 192, 768 or 2048"
            ))),
        }
    }

    /// Returns the number of values per image.
    pub fn dims(self) -> usize {
        match self {
            Self::Block64 => 64,
            Self::Block192 => 192,
            Self::Block768 => 768,
            Self::Pool3 => POOL3_DIMS,
            Self::Logits => LOGIT_CLASSES,
        }
    }
}

/// Every feature layer of one forward pass, each [N, dims] in the model's dtype.
#[derive(Clone, Debug)]
pub struct InceptionOutputs {
    pub block64: Tensor,
    pub block192: Tensor,
    pub block768: Tensor,
    pub pool3: Tensor,
    pub logits: Tensor,
}

impl InceptionOutputs {
    /// Returns the tensor of `layer`.
    pub fn layer(&self, layer: FeatureLayer) -> &Tensor {
        match layer {
            FeatureLayer::Block64 => &self.block64,
            FeatureLayer::Block192 => &self.block192,
            FeatureLayer::Block768 => &self.block768,
            FeatureLayer::Pool3 => &self.pool3,
            FeatureLayer::Logits => &self.logits,
        }
    }
}

/// The FID InceptionV3 with its weights in one dtype (F32 or F64) on one device.
pub struct FidInception {
    stem0: Chain,
    stem1: Chain,
    mixed5: [MixedA; 3],
    mixed6a: MixedB,
    mixed6: [MixedC; 4],
    mixed7a: MixedD,
    mixed7b: MixedE,
    mixed7c: MixedE,
    fc_weight_t: Tensor,
    fc_bias: Tensor,
    dtype: DType,
    device: Device,
}

impl FidInception {
    /// Builds the network from a state_dict with pytorch-fid's keys (`Conv2d_1a_3x3.conv.weight`
    /// ... `fc.bias`), converted to `dtype` (F32 or F64) on `device`.
    ///
    /// # Errors
    ///
    /// [`FidError::MissingWeight`] or [`FidError::WeightShape`] naming the first key that is
    /// absent or has the wrong shape, and [`FidError::Input`] for another dtype.
    pub fn new(weights: &InceptionWeights, dtype: DType, device: &Device) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(FidError::Input(format!(
                "model dtype {dtype:?} is not supported: use F32 or F64"
            )));
        }
        let loader = Loader {
            weights,
            dtype,
            device,
        };
        let (stem0, stem1) = load_stem(&loader)?;
        Ok(Self {
            stem0,
            stem1,
            mixed5: load_mixed5(&loader)?,
            mixed6a: MixedB::load(&loader, "Mixed_6a", 288)?,
            mixed6: load_mixed6(&loader)?,
            mixed7a: MixedD::load(&loader, "Mixed_7a", 768)?,
            mixed7b: MixedE::load(&loader, "Mixed_7b", 1280, EPool::Average)?,
            mixed7c: MixedE::load(&loader, "Mixed_7c", 2048, EPool::Max)?,
            fc_weight_t: loader
                .tensor("fc.weight", &[LOGIT_CLASSES, POOL3_DIMS])?
                .t()?
                .contiguous()?,
            fc_bias: loader.tensor("fc.bias", &[LOGIT_CLASSES])?,
            dtype,
            device: device.clone(),
        })
    }

    /// Returns the dtype of the weights, which inputs must have.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Returns the device of the weights, which inputs must be on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Maps images to the network input as pytorch-fid does.
    ///
    /// `images`: [N, 3, H, W] RGB in [0, 1], any H and W, the model's dtype. Returns
    /// [N, 3, 299, 299] in [-1, 1]: a bilinear resize (align_corners=false, no antialias),
    /// then `2x - 1`.
    pub fn preprocess(&self, images: &Tensor) -> Result<Tensor> {
        self.check_input(images, None)?;
        let resized = resize_bilinear(images, INPUT_SIZE, INPUT_SIZE)?;
        Ok(resized.affine(2.0, -1.0)?)
    }

    /// Runs the network on preprocessed input and returns every feature layer.
    ///
    /// `input`: [N, 3, 299, 299] in [-1, 1] (the output of [`FidInception::preprocess`]),
    /// the model's dtype and device. Returns tensors [N, dims] of that dtype: block64,
    /// block192 and block768 (spatial means, >= 0), pool3 (>= 0) and the 1008 logits.
    pub fn forward(&self, input: &Tensor) -> Result<InceptionOutputs> {
        self.check_input(input, Some(INPUT_SIZE))?;
        let block0 = max_pool_3x3_stride2(&self.stem0.forward(input)?)?;
        let block1 = max_pool_3x3_stride2(&self.stem1.forward(&block0)?)?;
        trace!(shape = ?block1.dims(), "stem done");

        let mut x = block1.clone();
        for block in &self.mixed5 {
            x = block.forward(&x)?;
        }
        x = self.mixed6a.forward(&x)?;
        for block in &self.mixed6 {
            x = block.forward(&x)?;
        }
        let block2 = x;
        let x = self.mixed7a.forward(&block2)?;
        let x = self.mixed7c.forward(&self.mixed7b.forward(&x)?)?;

        let pool3 = spatial_mean(&x)?;
        let logits = pool3
            .matmul(&self.fc_weight_t)?
            .broadcast_add(&self.fc_bias)?;
        Ok(InceptionOutputs {
            block64: spatial_mean(&block0)?,
            block192: spatial_mean(&block1)?,
            block768: spatial_mean(&block2)?,
            pool3,
            logits,
        })
    }

    fn check_input(&self, x: &Tensor, size: Option<usize>) -> Result<()> {
        let dims = x.dims();
        let shape_ok = dims.len() == 4
            && dims[1] == 3
            && size.is_none_or(|size| dims[2] == size && dims[3] == size);
        if !shape_ok {
            let expected = size.map_or("[N, 3, H, W]".to_string(), |s| format!("[N, 3, {s}, {s}]"));
            return Err(FidError::Input(format!(
                "image batch has shape {dims:?}, expected {expected}"
            )));
        }
        if x.dtype() != self.dtype {
            return Err(FidError::Input(format!(
                "image batch has dtype {:?}, but the model is {:?}: convert the batch",
                x.dtype(),
                self.dtype
            )));
        }
        Ok(())
    }
}

fn spatial_mean(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean((2, 3))?)
}

fn load_stem(loader: &Loader) -> Result<(Chain, Chain)> {
    let conv = |name: &str, spec| loader.conv(name, spec);
    let stem0 = Chain(vec![
        conv(
            "Conv2d_1a_3x3",
            ConvSpec::square(3, 32, 3, 0).with_stride(2),
        )?,
        conv("Conv2d_2a_3x3", ConvSpec::square(32, 32, 3, 0))?,
        conv("Conv2d_2b_3x3", ConvSpec::square(32, 64, 3, 1))?,
    ]);
    let stem1: Vec<BasicConv2d> = vec![
        conv("Conv2d_3b_1x1", ConvSpec::square(64, 80, 1, 0))?,
        conv("Conv2d_4a_3x3", ConvSpec::square(80, 192, 3, 0))?,
    ];
    Ok((stem0, Chain(stem1)))
}

fn load_mixed5(loader: &Loader) -> Result<[MixedA; 3]> {
    Ok([
        MixedA::load(loader, "Mixed_5b", 192, 32)?,
        MixedA::load(loader, "Mixed_5c", 256, 64)?,
        MixedA::load(loader, "Mixed_5d", 288, 64)?,
    ])
}

fn load_mixed6(loader: &Loader) -> Result<[MixedC; 4]> {
    Ok([
        MixedC::load(loader, "Mixed_6b", 768, 128)?,
        MixedC::load(loader, "Mixed_6c", 768, 160)?,
        MixedC::load(loader, "Mixed_6d", 768, 160)?,
        MixedC::load(loader, "Mixed_6e", 768, 192)?,
    ])
}
