//! The ResNet discriminators (32x32 and 128x128) with their true/fake and rotation heads,
//! built from the block plans of [`crate::arch::Layout`].

use candle_core::Tensor;

use crate::arch::{DiscriminatorBlockPlan, Layout, Pooling};
use crate::config::ModelConfig;
use crate::ctx::Ctx;
use crate::error::{ModelError, Result};
use crate::kernels::{Addend, ConvKind, Fusion};
use crate::layers::{Conv2d, Linear};
use crate::params::Builder;

/// Number of rotation classes: 0, 90, 180 and 270 degrees.
pub const ROTATIONS: usize = 4;

/// One residual block: out = down(conv_b(relu(conv_a(relu(x))))) + down(conv_shortcut(x));
/// conv_a and conv_b are 3x3, the shortcut 3x3 or 1x1; `down` is 2x2 average pooling, or
/// nothing in blocks that keep the resolution.
struct DiscriminatorBlock {
    conv_a: Conv2d,
    conv_b: Conv2d,
    shortcut: Conv2d,
    downsample: bool,
}

impl DiscriminatorBlock {
    fn new(
        builder: &mut Builder,
        name: &str,
        plan: &DiscriminatorBlockPlan,
        sn: bool,
    ) -> Result<Self> {
        let (c_in, c_out, k) = (plan.c_in, plan.c_out, plan.shortcut_kernel);
        Ok(Self {
            conv_a: Conv2d::new(builder, &format!("{name}.conv_a"), (c_in, c_out), 3, sn)?,
            conv_b: Conv2d::new(builder, &format!("{name}.conv_b"), (c_out, c_out), 3, sn)?,
            shortcut: Conv2d::new(builder, &format!("{name}.shortcut"), (c_in, c_out), k, sn)?,
            downsample: plan.downsample,
        })
    }

    /// Runs the block as three fused convolutions: the ReLUs happen inside the convolutions,
    /// each branch is pooled before the sum, and conv_b adds the pooled shortcut, which
    /// carries conv_b's bias as well as its own. Average pooling is linear, so this equals
    /// down(conv_b(relu(h)) + conv_shortcut(x)) while the unpooled branches never exist as
    /// tensors.
    fn forward(&self, ctx: &Ctx, x: &Tensor) -> Result<Tensor> {
        let relu = Fusion {
            relu_input: true,
            pool_output: false,
        };
        let pool = Fusion {
            relu_input: false,
            pool_output: self.downsample,
        };
        let both = Fusion {
            relu_input: true,
            ..pool
        };
        let shortcut_bias = (self.shortcut.bias(ctx) + self.conv_b.bias(ctx))?;
        let shortcut = self.shortcut.forward_fused(
            ctx,
            x,
            ConvKind::Same,
            pool,
            Addend::Bias(&shortcut_bias),
        )?;
        let a_bias = self.conv_a.bias(ctx);
        let h = self
            .conv_a
            .forward_fused(ctx, x, ConvKind::Same, relu, Addend::Bias(&a_bias))?;
        let residual = Addend::Residual(&shortcut);
        self.conv_b
            .forward_fused(ctx, &h, ConvKind::Same, both, residual)
    }
}

/// Outputs of one discriminator pass over a batch of N images.
pub struct DiscriminatorOutput {
    /// True/fake logits, [N].
    pub logits: Tensor,
    /// Rotation logits, [N, 4]; None when the variant has no rotation head.
    pub rotation_logits: Option<Tensor>,
}

/// Scores square RGB images: residual blocks (four at 32x32, six at 128x128), ReLU, spatial
/// mean or sum, then a linear true/fake head and, for SS-GAN, a linear 4-way rotation head on
/// the same features.
pub struct Discriminator {
    blocks: Vec<DiscriminatorBlock>,
    head: Linear,
    rotation_head: Option<Linear>,
    pooling: Pooling,
    image_size: usize,
}

impl Discriminator {
    /// Creates every parameter under the name prefix `d`.
    pub fn new(builder: &mut Builder, cfg: &ModelConfig) -> Result<Self> {
        let layout = Layout::of(cfg);
        let (c, sn) = (layout.feature_width(), cfg.d_spectral_norm);
        let blocks = layout
            .discriminator
            .iter()
            .enumerate()
            .map(|(i, plan)| {
                DiscriminatorBlock::new(builder, &format!("d.block{}", i + 1), plan, sn)
            })
            .collect::<Result<Vec<_>>>()?;
        let head = Linear::new(builder, "d.head", (c, 1), 0.0, sn)?;
        let rotation_head = cfg
            .uses_rotation()
            .then(|| Linear::new(builder, "d.rotation_head", (c, ROTATIONS), 0.0, sn))
            .transpose()?;
        Ok(Self {
            blocks,
            head,
            rotation_head,
            pooling: layout.pooling,
            image_size: layout.image_size(),
        })
    }

    /// Scores x: [N, 3, S, S] with values in [0, 1], in the model's dtype; S is the layout's
    /// image size (32 or 128). Logits are unbounded.
    pub fn forward(&self, ctx: &Ctx, x: &Tensor) -> Result<DiscriminatorOutput> {
        let (_, channels, height, width) = x.dims4()?;
        let s = self.image_size;
        if (channels, height, width) != (3, s, s) {
            let message = format!("images are {channels}x{height}x{width}, expected 3x{s}x{s}");
            return Err(ModelError::Input(message));
        }
        let mut h = x.clone();
        for block in &self.blocks {
            h = block.forward(ctx, &h)?;
        }
        let features = match self.pooling {
            Pooling::Mean => h.relu()?.mean((2, 3))?,
            Pooling::Sum => h.relu()?.sum((2, 3))?,
        };
        let logits = self.head.forward(ctx, &features)?.squeeze(1)?;
        let rotation_logits = match &self.rotation_head {
            Some(head) => Some(head.forward(ctx, &features)?),
            None => None,
        };
        Ok(DiscriminatorOutput {
            logits,
            rotation_logits,
        })
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::DiscriminatorBlock;
    use crate::params::ParamStore;
    use crate::test_support::{f64_builder, max_abs_difference, reference_conv, training_ctx};

    #[test]
    fn fused_block_matches_unfused_ops() {
        let mut store = ParamStore::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut builder = f64_builder(&mut store, &mut rng);
        let ctx = training_ctx();
        for (down, k) in [(true, 3), (false, 3), (true, 1)] {
            let plan = crate::arch::DiscriminatorBlockPlan {
                c_in: 3,
                c_out: 5,
                downsample: down,
                shortcut_kernel: k,
            };
            let name = format!("b{down}{k}");
            let block = DiscriminatorBlock::new(&mut builder, &name, &plan, true).unwrap();
            for conv in [&block.conv_a, &block.conv_b, &block.shortcut] {
                conv.randomize_bias();
            }
            let x = Tensor::randn(0f64, 1.0, (2, 3, 6, 4), &Device::Cpu).unwrap();
            let h = reference_conv(&ctx, &block.conv_a, &x.relu().unwrap());
            let main = reference_conv(&ctx, &block.conv_b, &h.relu().unwrap());
            let sum = (main + reference_conv(&ctx, &block.shortcut, &x)).unwrap();
            let expected = if down {
                sum.avg_pool2d(2).unwrap()
            } else {
                sum
            };
            let actual = block.forward(&ctx, &x).unwrap();
            assert_eq!(actual.dims(), expected.dims(), "downsample {down}: shape");
            let error = max_abs_difference(&actual, &expected);
            assert!(error < 1e-10, "downsample {down}: max abs error {error:e}");
        }
    }
}
