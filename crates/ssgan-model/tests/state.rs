//! Saving and restoring the full training state.

mod common;

use candle_core::DType;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_model::SsGan;

fn train_step(gan: &mut SsGan, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let reals = common::pattern_images(4, DType::F32);
    let z = gan.latent(4, &mut rng).unwrap();
    gan.discriminator_step(&reals, &z).unwrap();
    let z = gan.latent(4, &mut rng).unwrap();
    gan.generator_step(&z).unwrap();
}

fn all_values(gan: &SsGan) -> Vec<(String, Vec<f32>)> {
    let stores = [gan.generator_params(), gan.discriminator_params()];
    let mut out = Vec::new();
    for store in stores {
        let mut tensors: Vec<_> = store.tensors().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in tensors {
            out.push((name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()));
        }
    }
    out
}

#[test]
fn reloaded_state_takes_bit_identical_step() {
    let model = common::tiny_model();
    let mut original = common::build(&model, DType::F32, 21);
    train_step(&mut original, 1);
    train_step(&mut original, 2);
    let saved = original.save_state().unwrap();

    let mut restored = common::build(&model, DType::F32, 999);
    assert_ne!(
        all_values(&restored),
        all_values(&original),
        "different seeds must differ"
    );
    restored
        .load_state(|name| {
            saved
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.as_slice())
        })
        .unwrap();
    assert_eq!(restored.optimizer_steps(), original.optimizer_steps());

    train_step(&mut original, 3);
    train_step(&mut restored, 3);
    let (a, b) = (all_values(&original), all_values(&restored));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let same_bits = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(
            same_bits,
            "{name} differs after one step from the reloaded state"
        );
    }
}

#[test]
fn optimizer_moments_are_part_of_the_state() {
    // A model reloaded without the optimizer state (fresh moments) takes a different step,
    // so the bit-identical test above depends on the saved moments.
    let model = common::tiny_model();
    let mut original = common::build(&model, DType::F32, 21);
    train_step(&mut original, 1);
    let saved = original.save_state().unwrap();
    let mut partial = common::build(&model, DType::F32, 21);
    let networks_only = |name: &str| {
        let keep = !name.starts_with("optimizer");
        let source = if keep { &saved } else { &fresh_state(&model) };
        source
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.clone())
    };
    let files: Vec<(&str, Vec<u8>)> = saved
        .iter()
        .map(|(n, _)| (*n, networks_only(n).unwrap()))
        .collect();
    partial
        .load_state(|name| {
            files
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.as_slice())
        })
        .unwrap();
    train_step(&mut original, 2);
    train_step(&mut partial, 2);
    assert_ne!(all_values(&original), all_values(&partial));
}

fn fresh_state(model: &ssgan_model::ModelConfig) -> Vec<(&'static str, Vec<u8>)> {
    common::build(model, DType::F32, 21).save_state().unwrap()
}

#[test]
fn load_rejects_a_mismatched_shape() {
    let small = common::build(&common::tiny_model(), DType::F32, 1);
    let saved = small.save_state().unwrap();
    let wider = ssgan_model::ModelConfig {
        ch: 3,
        ..common::tiny_model()
    };
    let mut other = common::build(&wider, DType::F32, 1);
    let err = other
        .load_state(|name| {
            saved
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, b)| b.as_slice())
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("generator.safetensors"), "{err}");
    assert!(err.contains("shape"), "{err}");
}
