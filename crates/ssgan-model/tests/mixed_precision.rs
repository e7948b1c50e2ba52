//! bf16 mixed precision (`model.precision = "bf16"`): the step trains f32 master weights, and
//! its losses stay close to the f32 model's. GPU only: candle 0.11 has no bf16 matmul on the
//! CPU, so these run with `--features cuda` (scripts/gpu-check.sh).
#![cfg(feature = "cuda")]

mod common;

use candle_core::{DType, Device};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_model::{ModelConfig, Precision};

fn gpu() -> Device {
    Device::new_cuda(0).unwrap()
}

fn model(precision: Precision) -> ModelConfig {
    ModelConfig {
        precision,
        ..common::tiny_model()
    }
}

#[test]
fn bf16_loss_close_to_f32() {
    let f32_gan = common::build_on(&model(Precision::F32), DType::F32, 7, &gpu());
    let bf16_gan = common::build_on(&model(Precision::Bf16), DType::F32, 7, &gpu());
    let reals = common::pattern_images(4, DType::F32)
        .to_device(&gpu())
        .unwrap();
    let z = f32_gan
        .latent(4, &mut ChaCha8Rng::seed_from_u64(1))
        .unwrap();

    let (f32_loss, _) = f32_gan.discriminator_loss(&reals, &z, false).unwrap();
    let (bf16_loss, _) = bf16_gan.discriminator_loss(&reals, &z, false).unwrap();

    assert_eq!(bf16_loss.dtype(), DType::F32);
    let f32_value = f32_loss.to_scalar::<f32>().unwrap();
    let bf16_value = bf16_loss.to_scalar::<f32>().unwrap();
    // bf16 keeps 8 significant bits, about 0.4% per rounding.
    let difference = (f32_value - bf16_value).abs();
    assert!(
        difference < 0.05 * f32_value.abs().max(1.0),
        "f32 {f32_value}, bf16 {bf16_value}"
    );
}

#[test]
fn bf16_step_keeps_f32_weights() {
    let mut gan = common::build_on(&model(Precision::Bf16), DType::F32, 7, &gpu());
    let before = common::to_vec(gan.discriminator_params().params()[0].1.as_tensor());
    let reals = common::pattern_images(4, DType::F32)
        .to_device(&gpu())
        .unwrap();
    let z = gan.latent(4, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();

    let metrics = gan.discriminator_step(&reals, &z).unwrap();

    assert!(metrics.loss.is_finite(), "loss {}", metrics.loss);
    for store in [gan.generator_params(), gan.discriminator_params()] {
        for (name, var) in store.params().into_iter().chain(store.buffers()) {
            assert_eq!(var.dtype(), DType::F32, "{name}");
        }
    }
    let after = common::to_vec(gan.discriminator_params().params()[0].1.as_tensor());
    assert_ne!(
        before, after,
        "the step did not change the first discriminator weight"
    );
}
