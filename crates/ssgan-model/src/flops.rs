//! Floating-point operations of the networks and of one training step, for throughput and
//! model-FLOP-utilisation figures.
//!
//! Counted: the multiply-adds (2 FLOPs each) of every convolution and linear layer, the
//! self-modulated batch norm's small MLPs included. Not counted: normalisation, activations,
//! pooling, losses and the optimizer. A convolution over a zero-upsampled map counts only
//! the products with input pixels, a quarter of the taps, since the zeros add nothing.

use crate::arch::{BASE_SIZE, Layout};
use crate::config::{GeneratorNorm, ModelConfig, Upsample};

/// FLOPs of a k x k convolution over a `pixels`-pixel output.
fn conv(pixels: usize, k: usize, c_in: usize, c_out: usize) -> f64 {
    2.0 * (pixels * k * k * c_in * c_out) as f64
}

/// Forward FLOPs of the generator for one image.
pub fn generator_forward(cfg: &ModelConfig) -> f64 {
    let layout = Layout::of(cfg);
    let c0 = layout.generator_input_width();
    let mut total = 2.0 * (cfg.z_dim * BASE_SIZE * BASE_SIZE * c0) as f64;
    let mut side = BASE_SIZE;
    // Output pixels per input pixel that a convolution after upsampling really multiplies.
    let upsampled = match cfg.upsample {
        Upsample::Zeros => 1,
        Upsample::Nearest => 4,
    };
    for block in &layout.generator {
        let pixels = side * side;
        total += conv(pixels * upsampled, 3, block.c_in, block.c_mid);
        total += conv(
            pixels * upsampled,
            block.shortcut_kernel,
            block.c_in,
            block.c_out,
        );
        total += conv(4 * pixels, 3, block.c_mid, block.c_out);
        total += norm(cfg, block.c_in) + norm(cfg, block.c_mid);
        side *= 2;
    }
    let c_last = layout.generator_output_width();
    total + norm(cfg, c_last) + conv(side * side, 3, c_last, 3)
}

/// FLOPs of one self-modulated batch norm's MLP (none for plain batch norm).
fn norm(cfg: &ModelConfig, channels: usize) -> f64 {
    match cfg.g_norm {
        GeneratorNorm::Batch => 0.0,
        GeneratorNorm::SelfModulated => {
            let h = cfg.sbn_hidden;
            2.0 * (cfg.z_dim * h + 2 * h * channels) as f64
        }
    }
}

/// Forward FLOPs of the discriminator, both heads, for one image.
pub fn discriminator_forward(cfg: &ModelConfig) -> f64 {
    let layout = Layout::of(cfg);
    let mut side = layout.image_size();
    let mut total = 0.0;
    for block in &layout.discriminator {
        let pixels = side * side;
        total += conv(pixels, 3, block.c_in, block.c_out);
        total += conv(pixels, 3, block.c_out, block.c_out);
        total += conv(pixels, block.shortcut_kernel, block.c_in, block.c_out);
        if block.downsample {
            side /= 2;
        }
    }
    let heads = if cfg.uses_rotation() { 5 } else { 1 };
    total + 2.0 * (layout.feature_width() * heads) as f64
}

/// FLOPs of one training step: `n_dis` discriminator steps and one generator step at global
/// batch `batch`, with `rotated` rotated copies per side (3 per rotated image).
///
/// A backward pass counts twice its forward (input and weight gradients). Each discriminator
/// step runs the generator forward on `batch` latents, then the discriminator forward and
/// backward on reals and fakes with their rotated copies. The generator step runs the
/// generator forward and backward, and the frozen discriminator forward and input-gradient
/// backward on the fakes and their rotated copies.
pub fn step(cfg: &ModelConfig, batch: usize, rotated: usize, n_dis: usize) -> f64 {
    let (g, d) = (generator_forward(cfg), discriminator_forward(cfg));
    let side = (batch + rotated) as f64;
    let batch = batch as f64;
    let discriminator_step = batch * g + 3.0 * d * 2.0 * side;
    let generator_step = 3.0 * g * batch + 2.0 * d * side;
    n_dis as f64 * discriminator_step + generator_step
}

#[cfg(test)]
mod tests {
    use super::{discriminator_forward, generator_forward, step};
    use crate::config::{Arch, GeneratorNorm, ModelConfig, Upsample};

    #[test]
    fn tiny_resnet32_counts_by_hand() {
        let cfg = ModelConfig {
            ch: 1,
            z_dim: 2,
            g_norm: GeneratorNorm::Batch,
            upsample: Upsample::Nearest,
            ..ModelConfig::default()
        };
        // G width 2: fc 2*2*16*2 = 128; per block at input side s (4, 8, 16): conv_a and
        // shortcut 2*(2s)^2*9*4 each, conv_b the same; out conv 2*32*32*9*2*3.
        let blocks: f64 = [4.0f64, 8.0, 16.0]
            .iter()
            .map(|s| 3.0 * 2.0 * (2.0 * s).powi(2) * 9.0 * 4.0)
            .sum();
        let g = 128.0 + blocks + 2.0 * 1024.0 * 9.0 * 6.0;
        assert_eq!(generator_forward(&cfg), g);
        // D width 1: block 1 at 32x32 from 3 channels (conv_a 27, conv_b 9, shortcut 27
        // multiply-adds per pixel), block 2 at 16x16 and blocks 3, 4 at 8x8 (27 each),
        // heads 2*1*5.
        let d = 2.0 * (1024.0 * 63.0 + 256.0 * 27.0 + 2.0 * 64.0 * 27.0) + 10.0;
        assert_eq!(discriminator_forward(&cfg), d);
        let total = 2.0 * (4.0 * g + 6.0 * d * 7.0) + 12.0 * g + 2.0 * d * 7.0;
        assert_eq!(step(&cfg, 4, 3, 2), total);
    }

    #[test]
    fn zero_upsampling_skips_inserted_zeros() {
        let zeros = ModelConfig {
            arch: Arch::Resnet128Scaled,
            ch: 2,
            ..ModelConfig::default()
        };
        let nearest = ModelConfig {
            upsample: Upsample::Nearest,
            ..zeros.clone()
        };
        assert!(generator_forward(&zeros) < generator_forward(&nearest));
        assert!(generator_forward(&zeros) > generator_forward(&nearest) / 4.0);
    }
}
