mod common;

use candle_core::DType;
use ssgan_model::config::{Arch, GeneratorNorm, ModelConfig, Variant};

// Parameter counts of compare_gan's resnet_cifar at G 256 / D 128 channels, counted by hand
// from its variable shapes.
const G_PLAIN_BN: usize = 5_849_603;
const G_SELF_MODULATED_BN: usize = 5_993_187;
const D_WITHOUT_ROTATION_HEAD: usize = 1_483_137;
const ROTATION_HEAD: usize = 516;

#[test]
fn generator_parameter_count_plain_bn() {
    let model = ModelConfig {
        g_norm: GeneratorNorm::Batch,
        ..ModelConfig::default()
    };
    let gan = common::build(&model, DType::F32, 0);
    assert_eq!(gan.generator_params().param_count(), G_PLAIN_BN);
}

#[test]
fn generator_parameter_count_self_modulated_bn() {
    let gan = common::build(&ModelConfig::default(), DType::F32, 0);
    assert_eq!(gan.generator_params().param_count(), G_SELF_MODULATED_BN);
}

#[test]
fn discriminator_parameter_counts() {
    let ssgan = common::build(&ModelConfig::default(), DType::F32, 0);
    let expected = D_WITHOUT_ROTATION_HEAD + ROTATION_HEAD;
    assert_eq!(ssgan.discriminator_params().param_count(), expected);
    let uncond = ModelConfig {
        variant: Variant::Uncond,
        ..ModelConfig::default()
    };
    let uncond = common::build(&uncond, DType::F32, 0);
    assert_eq!(
        uncond.discriminator_params().param_count(),
        D_WITHOUT_ROTATION_HEAD
    );
}

// compare_gan's resnet5 at ch = 64 with self-modulated batch norm, counted by hand from its
// variable shapes.
const RESNET128_G: usize = 14_019_939;
const RESNET128_D: usize = 15_086_529;
const RESNET128_ROTATION_HEAD: usize = 2_052;

// The scaled-up model at ch = 4, counted separately from the shapes of Tables 6 and 7 (a
// short Python sum over the layers, not this crate's layout code): G 356,583; D 154,877 plus
// the 260 of the rotation head. At the paper's ch = 96 the same sum gives G 92,512,707 and
// D 88,795,681 + 6,148.
const SCALED_CH4_G: usize = 356_583;
const SCALED_CH4_D: usize = 154_877 + 260;

#[test]
fn resnet128_parameter_counts_match_compare_gan() {
    let model = ModelConfig {
        arch: Arch::Resnet128,
        ch: 64,
        ..ModelConfig::default()
    };
    let gan = common::build(&model, DType::F32, 0);
    assert_eq!(gan.generator_params().param_count(), RESNET128_G);
    let expected = RESNET128_D + RESNET128_ROTATION_HEAD;
    assert_eq!(gan.discriminator_params().param_count(), expected);
}

#[test]
fn scaled_parameter_counts_match_the_tables() {
    let model = ModelConfig {
        arch: Arch::Resnet128Scaled,
        ch: 4,
        ..ModelConfig::default()
    };
    let gan = common::build(&model, DType::F32, 0);
    assert_eq!(gan.generator_params().param_count(), SCALED_CH4_G);
    assert_eq!(gan.discriminator_params().param_count(), SCALED_CH4_D);
}

#[test]
fn models_128_image_shapes() {
    for arch in [Arch::Resnet128, Arch::Resnet128Scaled] {
        let model = ModelConfig {
            arch,
            ch: 1,
            ..common::tiny_model()
        };
        let gan = common::build(&model, DType::F32, 2);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
        let z = gan.latent(4, &mut rng).unwrap();
        let images = gan.sample(&z).unwrap();
        assert_eq!(images.dims4().unwrap(), (4, 3, 128, 128), "{arch:?}");
        let (loss, metrics) = gan.discriminator_loss(&images, &z, false).unwrap();
        let loss = loss.to_scalar::<f32>().unwrap();
        assert!(
            loss.is_finite() && metrics.rotation > 0.0,
            "{arch:?}: {loss}"
        );
        let small = common::pattern_images(4, DType::F32);
        let error = gan.discriminator_loss(&small, &z, false).err().unwrap();
        assert!(error.to_string().contains("expected 3x128x128"), "{error}");
    }
}

#[test]
fn generator_output_shape_and_range() {
    let gan = common::build(&common::tiny_model(), DType::F32, 4);
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
    let z = gan.latent(5, &mut rng).unwrap();
    let images = gan.sample(&z).unwrap();
    assert_eq!(images.dims4().unwrap(), (5, 3, 32, 32));
    let values = common::to_vec(&images);
    assert!(
        values.iter().all(|v| *v > 0.0 && *v < 1.0),
        "sigmoid output outside (0, 1)"
    );
}

#[test]
fn latent_is_uniform_in_minus_one_to_one() {
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(9);
    let z = ssgan_model::latent(256, 128, &mut rng, &candle_core::Device::Cpu, DType::F32).unwrap();
    let values = common::to_vec(&z);
    assert!(values.iter().all(|v| (-1.0..1.0).contains(v)));
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!(
        (variance - 1.0 / 3.0).abs() < 0.02,
        "variance {variance}, Uniform(-1, 1) has 1/3"
    );
}

#[test]
fn orthogonal_init_gives_orthonormal_kernels() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    // [out, in] with more inputs than outputs: the rows are orthonormal.
    for (fan_in, fan_out) in [(18, 6), (6, 18), (7, 7)] {
        let w = ssgan_model::params::orthogonal_values(&mut rng, fan_in, fan_out);
        let (small, large) = (fan_in.min(fan_out), fan_in.max(fan_out));
        // Vectors along the smaller dimension, each of the larger length.
        let vector = |k: usize| -> Vec<f64> {
            (0..large)
                .map(|m| {
                    if fan_in >= fan_out {
                        w[k * fan_in + m]
                    } else {
                        w[m * fan_in + k]
                    }
                })
                .collect()
        };
        for a in 0..small {
            for b in 0..small {
                let dot: f64 = vector(a).iter().zip(vector(b)).map(|(x, y)| x * y).sum();
                let expected = if a == b { 1.0 } else { 0.0 };
                assert!(
                    (dot - expected).abs() < 1e-12,
                    "{fan_in}x{fan_out}: <{a}, {b}> = {dot}"
                );
            }
        }
    }
}

#[test]
fn orthogonal_model_builds() {
    let model = ModelConfig {
        init: ssgan_model::config::Init::Orthogonal,
        ..common::tiny_model()
    };
    let gan = common::build(&model, DType::F32, 8);
    assert_eq!(
        gan.generator_params().param_count(),
        common::build(&common::tiny_model(), DType::F32, 8)
            .generator_params()
            .param_count()
    );
}
