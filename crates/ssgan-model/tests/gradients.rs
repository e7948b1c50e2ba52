//! Finite-difference checks, in f64, of the gradients that autograd gives both losses.

mod common;

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ssgan_model::config::ModelConfig;
use ssgan_model::{ParamStore, SsGan, latent};

const STEP: f64 = 1e-6;
/// Central differences in f64 with this step are accurate to about 1e-8 relative here.
const TOLERANCE: f64 = 1e-5;

fn check_params(
    store: &ParamStore,
    grads: &candle_core::backprop::GradStore,
    loss_at: &dyn Fn() -> f64,
) -> usize {
    let mut checked = 0;
    for (name, var) in store.params() {
        let grad = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        let grad = common::to_vec(grad);
        let count = var.elem_count();
        for index in [0, count / 2, count - 1] {
            let numeric = central_difference(var, index, loss_at);
            let analytic = grad[index];
            let scale = numeric.abs().max(analytic.abs()).max(1e-3);
            let error = (numeric - analytic).abs() / scale;
            assert!(
                error < TOLERANCE,
                "{name}[{index}]: autograd {analytic}, finite difference {numeric}"
            );
            checked += 1;
        }
    }
    checked
}

fn central_difference(var: &Var, index: usize, loss_at: &dyn Fn() -> f64) -> f64 {
    let original = common::values(var)[index];
    common::set_element(var, index, original + STEP);
    let plus = loss_at();
    common::set_element(var, index, original - STEP);
    let minus = loss_at();
    common::set_element(var, index, original);
    (plus - minus) / (2.0 * STEP)
}

/// Runs state-updating passes until every spectral-norm vector has converged.
///
/// Autograd treats u and v as constants, but a finite difference recomputes them from the
/// perturbed kernel. At converged singular vectors that dependence is second order, so the
/// two derivatives agree.
fn converge_spectral_norms(pass: &dyn Fn()) {
    for _ in 0..400 {
        pass();
    }
}

/// Moves every bias off its initial 0. A zero bias after an all-zero input patch puts a ReLU
/// exactly at its kink, where a central difference gives half of candle's one-sided slope.
fn randomize_biases(store: &ParamStore, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, var) in store.params() {
        if name.ends_with(".bias") && !name.ends_with("gamma.bias") {
            let shape = var.shape().clone();
            let count = var.elem_count();
            let values: Vec<f64> = (0..count).map(|_| rng.random_range(-0.1..0.1)).collect();
            var.set(&Tensor::from_vec(values, shape, var.device()).unwrap())
                .unwrap();
        }
    }
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn inputs(gan: &SsGan) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    (
        common::pattern_images(4, DType::F64),
        gan.latent(4, &mut rng).unwrap(),
    )
}

#[test]
fn discriminator_loss_gradients_match_finite_differences() {
    let gan = common::build(&common::tiny_model(), DType::F64, 1);
    let (reals, z) = inputs(&gan);
    randomize_biases(gan.discriminator_params(), 31);
    converge_spectral_norms(&|| drop(gan.discriminator_loss(&reals, &z, true).unwrap()));
    let (loss, metrics) = gan.discriminator_loss(&reals, &z, false).unwrap();
    assert!(metrics.rotation > 0.0, "the rotation loss must take part");
    let grads = loss.backward().unwrap();
    let loss_at = || scalar(&gan.discriminator_loss(&reals, &z, false).unwrap().0);
    let checked = check_params(gan.discriminator_params(), &grads, &loss_at);
    assert!(checked >= 3 * 14, "checked {checked} entries");
}

#[test]
fn generator_loss_gradients_match_finite_differences() {
    let model = ModelConfig {
        g_spectral_norm: true,
        ..common::tiny_model()
    };
    let gan = common::build(&model, DType::F64, 2);
    let (_, z) = inputs(&gan);
    randomize_biases(gan.generator_params(), 32);
    randomize_biases(gan.discriminator_params(), 33);
    converge_spectral_norms(&|| drop(gan.generator_loss(&z, true).unwrap()));
    let (loss, metrics) = gan.generator_loss(&z, false).unwrap();
    assert!(metrics.rotation > 0.0, "the rotation loss must take part");
    let grads = loss.backward().unwrap();
    let loss_at = || scalar(&gan.generator_loss(&z, false).unwrap().0);
    let checked = check_params(gan.generator_params(), &grads, &loss_at);
    assert!(checked >= 3 * 30, "checked {checked} entries");
}

#[test]
fn generator_gradients_plain_bn_nearest() {
    use ssgan_model::config::{GeneratorNorm, Upsample};
    let model = ModelConfig {
        g_norm: GeneratorNorm::Batch,
        upsample: Upsample::Nearest,
        ..common::tiny_model()
    };
    let gan = common::build(&model, DType::F64, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let z = latent(
        4,
        model.z_dim,
        &mut rng,
        &candle_core::Device::Cpu,
        DType::F64,
    )
    .unwrap();
    randomize_biases(gan.generator_params(), 34);
    converge_spectral_norms(&|| drop(gan.generator_loss(&z, true).unwrap()));
    let grads = gan.generator_loss(&z, false).unwrap().0.backward().unwrap();
    let loss_at = || scalar(&gan.generator_loss(&z, false).unwrap().0);
    check_params(gan.generator_params(), &grads, &loss_at);
}

#[test]
fn scaled_discriminator_gradients_match_finite_differences() {
    use ssgan_model::config::Arch;
    let model = ModelConfig {
        arch: Arch::Resnet128Scaled,
        ch: 1,
        ..common::tiny_model()
    };
    let gan = common::build(&model, DType::F64, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let z = gan.latent(4, &mut rng).unwrap();
    let reals = common::pattern_images_of_size(4, 128, DType::F64);
    randomize_biases(gan.discriminator_params(), 34);
    converge_spectral_norms(&|| drop(gan.discriminator_loss(&reals, &z, true).unwrap()));
    let (loss, _) = gan.discriminator_loss(&reals, &z, false).unwrap();
    let grads = loss.backward().unwrap();
    let loss_at = || scalar(&gan.discriminator_loss(&reals, &z, false).unwrap().0);
    let checked = check_params(gan.discriminator_params(), &grads, &loss_at);
    assert!(checked >= 3 * 20, "checked {checked} entries");
}
