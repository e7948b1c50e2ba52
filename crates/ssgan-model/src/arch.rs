//! Layer plans of the three architectures: channel widths, resampling and shortcut kernels of
//! every residual block, from which the generator and discriminator are built.

use crate::config::{Arch, ModelConfig};

/// Spatial size of the generator's first feature map.
pub const BASE_SIZE: usize = 4;

/// Reduction of the discriminator's last feature map to one vector per image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over height and width (compare_gan's `resnet_cifar` and `resnet5`).
    Mean,
    /// Sum over height and width (the BigGAN-style discriminator of the scaled-up run).
    Sum,
}

/// Shape of one generator block: it upsamples 2x and maps `c_in` to `c_out` channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneratorBlockPlan {
    pub c_in: usize,
    /// Output channels of the first 3x3 conv, which the second conv maps to `c_out`.
    pub c_mid: usize,
    pub c_out: usize,
    /// Kernel size of the shortcut conv: 3 in compare_gan's ResNets, 1 in the scaled-up model.
    pub shortcut_kernel: usize,
}

/// Shape of one discriminator block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiscriminatorBlockPlan {
    pub c_in: usize,
    pub c_out: usize,
    /// Whether the block ends in 2x2 average pooling.
    pub downsample: bool,
    pub shortcut_kernel: usize,
}

/// Every block of both networks for one model config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub generator: Vec<GeneratorBlockPlan>,
    pub discriminator: Vec<DiscriminatorBlockPlan>,
    pub pooling: Pooling,
}

impl Layout {
    /// Returns the layout of `cfg.arch` at base width `cfg.ch`.
    pub fn of(cfg: &ModelConfig) -> Self {
        let ch = cfg.ch;
        match cfg.arch {
            Arch::Resnet32 => resnet32(ch),
            Arch::Resnet128 => resnet128(ch),
            Arch::Resnet128Scaled => resnet128_scaled(ch),
        }
    }

    /// Channels of the generator's first feature map (BASE_SIZE x BASE_SIZE).
    pub fn generator_input_width(&self) -> usize {
        self.generator[0].c_in
    }

    /// Channels of the generator's last feature map, before the output conv.
    pub fn generator_output_width(&self) -> usize {
        self.generator[self.generator.len() - 1].c_out
    }

    /// Channels of the discriminator's features, the input of its heads.
    pub fn feature_width(&self) -> usize {
        self.discriminator[self.discriminator.len() - 1].c_out
    }

    /// Side length of the square images that the generator makes and the discriminator takes.
    pub fn image_size(&self) -> usize {
        BASE_SIZE << self.generator.len()
    }
}

/// compare_gan's `resnet_cifar` (SNGAN's CIFAR-10 ResNet): three generator blocks at width
/// 2*ch, four discriminator blocks at width ch of which the first two downsample.
fn resnet32(ch: usize) -> Layout {
    let g = 2 * ch;
    let generator = vec![g_block(g, g, g, 3); 3];
    let discriminator = [(3, true), (ch, true), (ch, false), (ch, false)]
        .iter()
        .map(|&(c_in, down)| d_block(c_in, ch, down, 3))
        .collect();
    Layout {
        generator,
        discriminator,
        pooling: Pooling::Mean,
    }
}

/// Returns compare_gan's `resnet5`. Its generator has widths ch x (8, 8, 4, 4, 2, 1) over five
/// blocks whose first conv already produces the output width. Its discriminator has widths
/// ch x (1, 2, 4, 4, 8, 8) over six downsampling blocks. All shortcuts are 3x3.
fn resnet128(ch: usize) -> Layout {
    let spec = Spec128 {
        generator: [8, 8, 4, 4, 2, 1],
        first_conv_keeps_width: false,
        discriminator: [1, 2, 4, 4, 8, 8],
        last_block_downsamples: true,
        shortcut_kernel: 3,
    };
    spec.layout(ch, Pooling::Mean)
}

/// Returns the scaled-up model of Chen et al., appendix C (Tables 6 and 7). The generator has
/// widths ch x (16, 16, 8, 4, 2, 1), and each block's first conv keeps the input width. The
/// six discriminator blocks have widths ch x (1, 2, 4, 8, 16, 16), and the last one keeps the
/// resolution. Shortcuts are 1x1 and the features are a sum over the last feature map, as in
/// compare_gan's `resnet_biggan`, whose non-local attention block the paper's tables omit.
fn resnet128_scaled(ch: usize) -> Layout {
    let spec = Spec128 {
        generator: [16, 16, 8, 4, 2, 1],
        first_conv_keeps_width: true,
        discriminator: [1, 2, 4, 8, 16, 16],
        last_block_downsamples: false,
        shortcut_kernel: 1,
    };
    spec.layout(ch, Pooling::Sum)
}

/// Width multipliers and block options of a 128x128 model: five generator blocks and six
/// discriminator blocks.
struct Spec128 {
    generator: [usize; 6],
    first_conv_keeps_width: bool,
    discriminator: [usize; 6],
    last_block_downsamples: bool,
    shortcut_kernel: usize,
}

impl Spec128 {
    fn layout(&self, ch: usize, pooling: Pooling) -> Layout {
        let k = self.shortcut_kernel;
        let widths = self.generator.map(|m| m * ch);
        let generator = widths
            .windows(2)
            .map(|w| {
                let mid = if self.first_conv_keeps_width {
                    w[0]
                } else {
                    w[1]
                };
                g_block(w[0], mid, w[1], k)
            })
            .collect();
        let d_widths: Vec<usize> = std::iter::once(3)
            .chain(self.discriminator.iter().map(|m| m * ch))
            .collect();
        let discriminator = d_widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| d_block(w[0], w[1], i < 5 || self.last_block_downsamples, k))
            .collect();
        Layout {
            generator,
            discriminator,
            pooling,
        }
    }
}

fn g_block(c_in: usize, c_mid: usize, c_out: usize, shortcut_kernel: usize) -> GeneratorBlockPlan {
    GeneratorBlockPlan {
        c_in,
        c_mid,
        c_out,
        shortcut_kernel,
    }
}

fn d_block(c_in: usize, c_out: usize, downsample: bool, k: usize) -> DiscriminatorBlockPlan {
    DiscriminatorBlockPlan {
        c_in,
        c_out,
        downsample,
        shortcut_kernel: k,
    }
}
