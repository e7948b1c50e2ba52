//! The ResNet generators: 32x32 (SNGAN / compare_gan `resnet_cifar`) and the two 128x128
//! models, built from the block plans of [`crate::arch::Layout`].

use candle_core::Tensor;

use crate::arch::{BASE_SIZE, GeneratorBlockPlan, Layout};
use crate::batch_norm::{Norm, NormSpec};
use crate::config::{ModelConfig, Upsample};
use crate::ctx::Ctx;
use crate::error::{ModelError, Result};
use crate::kernels::{Addend, ConvKind, Fusion};
use crate::layers::{Conv2d, Linear};
use crate::params::Builder;
use crate::resample::upsample;

/// One residual upsampling block:
/// out = conv_b(relu(bn2(conv_a(up(relu(bn1(x))))))) + conv_shortcut(up(x)); conv_a and
/// conv_b are 3x3, and the shortcut is 3x3 or 1x1 as in the block plan.
struct GeneratorBlock {
    bn1: Norm,
    conv_a: Conv2d,
    bn2: Norm,
    conv_b: Conv2d,
    shortcut: Conv2d,
    upsample: Upsample,
}

impl GeneratorBlock {
    fn new(
        builder: &mut Builder,
        name: &str,
        plan: &GeneratorBlockPlan,
        cfg: &ModelConfig,
    ) -> Result<Self> {
        let sn = cfg.g_spectral_norm;
        let (c_in, c_mid, c_out) = (plan.c_in, plan.c_mid, plan.c_out);
        let k = plan.shortcut_kernel;
        Ok(Self {
            bn1: Norm::new(builder, &format!("{name}.bn1"), &norm_spec(cfg, c_in))?,
            conv_a: Conv2d::new(builder, &format!("{name}.conv_a"), (c_in, c_mid), 3, sn)?,
            bn2: Norm::new(builder, &format!("{name}.bn2"), &norm_spec(cfg, c_mid))?,
            conv_b: Conv2d::new(builder, &format!("{name}.conv_b"), (c_mid, c_out), 3, sn)?,
            shortcut: Conv2d::new(builder, &format!("{name}.shortcut"), (c_in, c_out), k, sn)?,
            upsample: cfg.upsample,
        })
    }

    /// Runs the block as three fused convolutions: the ReLUs happen inside the convolutions,
    /// and conv_b adds the shortcut, which carries conv_b's bias as well as its own.
    fn forward(&self, ctx: &Ctx, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        let relu = Fusion {
            relu_input: true,
            pool_output: false,
        };
        let h = self.bn1.forward(ctx, x, z)?;
        let (kind, h) = self.upsampled(&h)?;
        let a_bias = self.conv_a.bias(ctx);
        let h = self
            .conv_a
            .forward_fused(ctx, &h, kind, relu, Addend::Bias(&a_bias))?;
        let h = self.bn2.forward(ctx, &h, z)?;
        let shortcut_bias = (self.shortcut.bias(ctx) + self.conv_b.bias(ctx))?;
        let (kind, x) = self.upsampled(x)?;
        let plain = Fusion::default();
        let shortcut =
            self.shortcut
                .forward_fused(ctx, &x, kind, plain, Addend::Bias(&shortcut_bias))?;
        let residual = Addend::Residual(&shortcut);
        self.conv_b
            .forward_fused(ctx, &h, ConvKind::Same, relu, residual)
    }

    /// Returns the convolution kind and input that upsample `x` with this block's mode: zero
    /// insertion runs inside the convolution, and nearest-neighbour upsampling before it.
    /// ReLU commutes with both, so a fused ReLU on the input stays correct.
    fn upsampled(&self, x: &Tensor) -> Result<(ConvKind, Tensor)> {
        match self.upsample {
            Upsample::Zeros => Ok((ConvKind::ZeroUpsampled, x.clone())),
            Upsample::Nearest => Ok((ConvKind::Same, upsample(x, Upsample::Nearest)?)),
        }
    }
}

fn norm_spec(cfg: &ModelConfig, channels: usize) -> NormSpec {
    NormSpec {
        kind: cfg.g_norm,
        channels,
        z_dim: cfg.z_dim,
        hidden: cfg.sbn_hidden,
        spectral_norm: cfg.g_spectral_norm,
        decay: cfg.bn_decay,
        epsilon: cfg.bn_epsilon,
    }
}

/// Maps z to square RGB images: linear to 4x4, upsampling blocks (three to 32x32, five to
/// 128x128), norm, ReLU, 3x3 conv, sigmoid.
pub struct Generator {
    fc: Linear,
    blocks: Vec<GeneratorBlock>,
    final_norm: Norm,
    out: Conv2d,
    width: usize,
    z_dim: usize,
}

impl Generator {
    /// Creates every parameter under the name prefix `g`.
    pub fn new(builder: &mut Builder, cfg: &ModelConfig) -> Result<Self> {
        let layout = Layout::of(cfg);
        let sn = cfg.g_spectral_norm;
        let (c, c_last) = (
            layout.generator_input_width(),
            layout.generator_output_width(),
        );
        let fc_out = BASE_SIZE * BASE_SIZE * c;
        let fc = Linear::new(builder, "g.fc", (cfg.z_dim, fc_out), 0.0, sn)?;
        let blocks = layout
            .generator
            .iter()
            .enumerate()
            .map(|(i, plan)| GeneratorBlock::new(builder, &format!("g.block{}", i + 1), plan, cfg))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = Norm::new(builder, "g.final_norm", &norm_spec(cfg, c_last))?;
        let out = Conv2d::new(builder, "g.out", (c_last, 3), 3, sn)?;
        Ok(Self {
            fc,
            blocks,
            final_norm,
            out,
            width: c,
            z_dim: cfg.z_dim,
        })
    }

    /// Generates images [N, 3, S, S] in (0, 1) from z: [N, z_dim], both in the model's dtype;
    /// S is the layout's image size (32 or 128).
    ///
    /// In training passes batch norm uses the statistics of the global batch across ranks.
    pub fn forward(&self, ctx: &Ctx, z: &Tensor) -> Result<Tensor> {
        let (n, z_dim) = z.dims2()?;
        if z_dim != self.z_dim {
            let message = format!(
                "z has {z_dim} features, the generator expects {}",
                self.z_dim
            );
            return Err(ModelError::Input(message));
        }
        let fc = self.fc.forward(ctx, z)?;
        let mut h = fc.reshape((n, self.width, BASE_SIZE, BASE_SIZE))?;
        for block in &self.blocks {
            h = block.forward(ctx, &h, z)?;
        }
        let h = self.final_norm.forward(ctx, &h, z)?;
        let relu = Fusion {
            relu_input: true,
            pool_output: false,
        };
        let bias = self.out.bias(ctx);
        let logits = self
            .out
            .forward_fused(ctx, &h, ConvKind::Same, relu, Addend::Bias(&bias))?;
        Ok(candle_nn::ops::sigmoid(&logits)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::GeneratorBlock;
    use crate::arch::GeneratorBlockPlan;
    use crate::config::{ModelConfig, Upsample};
    use crate::params::ParamStore;
    use crate::resample::upsample;
    use crate::test_support::{f64_builder, max_abs_difference, reference_conv, training_ctx};

    #[test]
    fn fused_block_matches_unfused_ops() {
        let mut cfg = ModelConfig {
            ch: 3,
            z_dim: 4,
            ..ModelConfig::default()
        };
        let mut store = ParamStore::default();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let ctx = training_ctx();
        let square = crate::arch::Layout::of(&cfg).generator[0];
        let narrowing = GeneratorBlockPlan {
            c_in: 4,
            c_mid: 4,
            c_out: 2,
            shortcut_kernel: 1,
        };
        let cases =
            [Upsample::Zeros, Upsample::Nearest].map(|mode| [(mode, square), (mode, narrowing)]);
        for (mode, plan) in cases.into_iter().flatten() {
            cfg.upsample = mode;
            let mut builder = f64_builder(&mut store, &mut rng);
            let name = format!("{mode:?}{}", plan.c_out);
            let block = GeneratorBlock::new(&mut builder, &name, &plan, &cfg).unwrap();
            for conv in [&block.conv_a, &block.conv_b, &block.shortcut] {
                conv.randomize_bias();
            }
            let x = Tensor::randn(0f64, 1.0, (2, plan.c_in, 3, 4), &Device::Cpu).unwrap();
            let z = Tensor::randn(0f64, 1.0, (2, 4), &Device::Cpu).unwrap();
            let h = block.bn1.forward(&ctx, &x, &z).unwrap().relu().unwrap();
            let h = reference_conv(&ctx, &block.conv_a, &upsample(&h, mode).unwrap());
            let h = block.bn2.forward(&ctx, &h, &z).unwrap().relu().unwrap();
            let main = reference_conv(&ctx, &block.conv_b, &h);
            let shortcut = reference_conv(&ctx, &block.shortcut, &upsample(&x, mode).unwrap());
            let expected = (main + shortcut).unwrap();
            let actual = block.forward(&ctx, &x, &z).unwrap();
            assert_eq!(actual.dims(), expected.dims(), "{mode:?}: shape");
            let error = max_abs_difference(&actual, &expected);
            assert!(error < 1e-10, "{mode:?}: max abs error {error:e}");
        }
    }
}
