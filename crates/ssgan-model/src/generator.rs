//! The 32x32 ResNet generator (SNGAN / compare_gan `resnet_cifar`).

use candle_core::Tensor;

use crate::batch_norm::{Norm, NormSpec};
use crate::config::{ModelConfig, Upsample};
use crate::ctx::Ctx;
use crate::error::{ModelError, Result};
use crate::layers::{Conv2d, Linear};
use crate::params::Builder;

/// Spatial size of the first feature map; three upsampling blocks take it to 32.
const BASE_SIZE: usize = 4;
const BLOCKS: usize = 3;

/// One residual upsampling block:
/// out = conv_b(relu(bn2(conv_a(up(relu(bn1(x))))))) + conv_shortcut(up(x)), all convs 3x3.
struct GeneratorBlock {
    bn1: Norm,
    conv_a: Conv2d,
    bn2: Norm,
    conv_b: Conv2d,
    shortcut: Conv2d,
    upsample: Upsample,
}

impl GeneratorBlock {
    fn new(builder: &mut Builder, name: &str, cfg: &ModelConfig) -> Result<Self> {
        let (c, sn) = (cfg.g_width(), cfg.g_spectral_norm);
        let spec = norm_spec(cfg);
        Ok(Self {
            bn1: Norm::new(builder, &format!("{name}.bn1"), &spec)?,
            conv_a: Conv2d::new(builder, &format!("{name}.conv_a"), (c, c), 3, sn)?,
            bn2: Norm::new(builder, &format!("{name}.bn2"), &spec)?,
            conv_b: Conv2d::new(builder, &format!("{name}.conv_b"), (c, c), 3, sn)?,
            shortcut: Conv2d::new(builder, &format!("{name}.shortcut"), (c, c), 3, sn)?,
            upsample: cfg.upsample,
        })
    }

    fn forward(&self, ctx: &Ctx, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        let h = self.bn1.forward(ctx, x, z)?.relu()?;
        let h = self.conv_a.forward_upsampled(ctx, &h, self.upsample)?;
        let h = self.bn2.forward(ctx, &h, z)?.relu()?;
        let main = self.conv_b.forward(ctx, &h)?;
        let shortcut = self.shortcut.forward_upsampled(ctx, x, self.upsample)?;
        Ok((main + shortcut)?)
    }
}

fn norm_spec(cfg: &ModelConfig) -> NormSpec {
    NormSpec {
        kind: cfg.g_norm,
        channels: cfg.g_width(),
        z_dim: cfg.z_dim,
        hidden: cfg.sbn_hidden,
        spectral_norm: cfg.g_spectral_norm,
        decay: cfg.bn_decay,
        epsilon: cfg.bn_epsilon,
    }
}

/// Maps z to 32x32 RGB images: linear to 4x4, three upsampling blocks, norm, ReLU, 3x3 conv,
/// sigmoid.
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
        let (c, sn) = (cfg.g_width(), cfg.g_spectral_norm);
        let fc_out = BASE_SIZE * BASE_SIZE * c;
        let fc = Linear::new(builder, "g.fc", (cfg.z_dim, fc_out), 0.0, sn)?;
        let blocks = (0..BLOCKS)
            .map(|i| GeneratorBlock::new(builder, &format!("g.block{}", i + 1), cfg))
            .collect::<Result<Vec<_>>>()?;
        let final_norm = Norm::new(builder, "g.final_norm", &norm_spec(cfg))?;
        let out = Conv2d::new(builder, "g.out", (c, 3), 3, sn)?;
        Ok(Self {
            fc,
            blocks,
            final_norm,
            out,
            width: c,
            z_dim: cfg.z_dim,
        })
    }

    /// Generates images [N, 3, 32, 32] in (0, 1) from z: [N, z_dim], both in the model's dtype.
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
        let h = self.final_norm.forward(ctx, &h, z)?.relu()?;
        Ok(candle_nn::ops::sigmoid(&self.out.forward(ctx, &h)?)?)
    }
}
