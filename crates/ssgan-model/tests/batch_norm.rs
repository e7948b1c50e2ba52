mod common;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_model::batch_norm::Standardize;
use ssgan_model::config::Init;
use ssgan_model::ctx::Ctx;
use ssgan_model::params::{Builder, ParamStore};

fn input() -> Tensor {
    // [N=3, C=2, H=2, W=2]; channel 1 is channel 0 times 3 plus 5.
    let base: Vec<f64> = (0..12).map(|i| ((i * 37) % 11) as f64).collect();
    let mut values = Vec::new();
    for n in 0..3 {
        values.extend_from_slice(&base[n * 4..n * 4 + 4]);
        values.extend(base[n * 4..n * 4 + 4].iter().map(|v| 3.0 * v + 5.0));
    }
    Tensor::from_vec(values, (3, 2, 2, 2), &Device::Cpu).unwrap()
}

fn layer(store: &mut ParamStore) -> Standardize {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut builder = Builder {
        store,
        rng: &mut rng,
        device: Device::Cpu,
        dtype: DType::F64,
        init: Init::Normal,
        init_std: 0.02,
    };
    Standardize::new(&mut builder, "bn", 2, (0.9, 1e-5)).unwrap()
}

fn channel(t: &Tensor, c: usize) -> Vec<f64> {
    common::to_vec(&t.narrow(1, c, 1).unwrap())
}

fn moments(values: &[f64]) -> (f64, f64) {
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    (mean, var)
}

#[test]
fn training_pass_standardizes_each_channel() {
    let mut store = ParamStore::default();
    let bn = layer(&mut store);
    let y = bn
        .forward(&Ctx::training(common::single()), &input())
        .unwrap();
    for c in 0..2 {
        let (mean, var) = moments(&channel(&y, c));
        assert!(mean.abs() < 1e-12, "channel {c} mean {mean}");
        // Biased variance of the output: var / (var + eps), just under 1.
        let (_, input_var) = moments(&channel(&input(), c));
        let expected = input_var / (input_var + 1e-5);
        assert!((var - expected).abs() < 1e-12, "channel {c} variance {var}");
    }
}

#[test]
fn running_averages_follow_the_decay_rule() {
    let mut store = ParamStore::default();
    let bn = layer(&mut store);
    bn.forward(&Ctx::training(common::single()), &input())
        .unwrap();
    let buffers = store.buffers();
    let running_mean = common::values(buffers[0].1);
    let running_var = common::values(buffers[1].1);
    for c in 0..2 {
        let (mean, var) = moments(&channel(&input(), c));
        assert!(
            (running_mean[c] - 0.1 * mean).abs() < 1e-12,
            "mean of channel {c}"
        );
        assert!(
            (running_var[c] - (0.9 + 0.1 * var)).abs() < 1e-12,
            "biased variance of channel {c}"
        );
    }
}

#[test]
fn evaluation_pass_uses_running_averages() {
    let mut store = ParamStore::default();
    let bn = layer(&mut store);
    // Fresh running statistics are mean 0 and variance 1: evaluation divides by sqrt(1 + eps).
    let y = bn.forward(&Ctx::eval(common::single()), &input()).unwrap();
    let expected: Vec<f64> = common::to_vec(&input())
        .iter()
        .map(|v| v / (1.0f64 + 1e-5).sqrt())
        .collect();
    let got = common::to_vec(&y);
    for (g, e) in got.iter().zip(&expected) {
        assert!((g - e).abs() < 1e-12);
    }
    assert_eq!(
        common::values(store.buffers()[0].1),
        vec![0.0, 0.0],
        "evaluation must not update"
    );
}
