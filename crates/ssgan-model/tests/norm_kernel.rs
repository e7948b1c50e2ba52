//! The batch-norm kernels against the same functions written with candle's own ops, in f64:
//! values and gradients of every input.

use candle_core::{DType, Device, Tensor, Var};
use ssgan_model::kernels::{channel_moments, normalize_affine};

fn random(shape: &[usize], seed: u64) -> Var {
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count)
        .map(|i| (((i as u64 + 3) * (seed * 2 + 104_729)) % 997) as f64 / 498.5 - 1.0)
        .collect();
    Var::from_tensor(&Tensor::from_vec(values, shape, &Device::Cpu).unwrap()).unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) {
    let (a, e) = (flat(actual), flat(expected));
    assert_eq!(a.len(), e.len(), "{what}: lengths");
    let scale = e.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(&e)
        .fold(0f64, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        diff / scale < 1e-12,
        "{what}: relative error {:e}",
        diff / scale
    );
}

fn reference_affine(x: &Tensor, stats: &Tensor, affine: &Tensor) -> Tensor {
    let (n, c, _, _) = x.dims4().unwrap();
    let channel = |row| stats.get(row).unwrap().reshape((1, c, 1, 1)).unwrap();
    let image = |row| {
        affine
            .narrow(1, row, 1)
            .unwrap()
            .reshape((n, c, 1, 1))
            .unwrap()
    };
    let scaled = x
        .broadcast_sub(&channel(0))
        .unwrap()
        .broadcast_mul(&channel(1))
        .unwrap();
    scaled
        .broadcast_mul(&image(0))
        .unwrap()
        .broadcast_add(&image(1))
        .unwrap()
}

#[test]
fn channel_moments_match_candle() {
    let x = random(&[3, 4, 5, 2], 1);
    let probe = random(&[8], 2);
    let ours = channel_moments(x.as_tensor()).unwrap();
    let sums = x.sum((0, 2, 3)).unwrap();
    let squares = x.sqr().unwrap().sum((0, 2, 3)).unwrap();
    let reference = Tensor::cat(&[&sums, &squares], 0).unwrap();
    assert_close(&ours, &reference, "moments");
    let grad = |t: &Tensor| {
        let loss = (t * probe.as_tensor()).unwrap().sum_all().unwrap();
        loss.backward().unwrap().get(x.as_tensor()).unwrap().clone()
    };
    assert_close(&grad(&ours), &grad(&reference), "moments input gradient");
}

#[test]
fn normalize_affine_matches_candle() {
    let x = random(&[3, 4, 5, 2], 1);
    let stats = random(&[2, 4], 2);
    let affine = random(&[3, 2, 4], 3);
    let probe = random(&[3, 4, 5, 2], 4);
    let (xt, st, at) = (x.as_tensor(), stats.as_tensor(), affine.as_tensor());
    let ours = normalize_affine(xt, st, at).unwrap();
    let reference = reference_affine(xt, st, at);
    assert_close(&ours, &reference, "output");
    let grads = |t: &Tensor| {
        let loss = (t * probe.as_tensor()).unwrap().sum_all().unwrap();
        loss.backward().unwrap()
    };
    let (g_ours, g_reference) = (grads(&ours), grads(&reference));
    for (var, name) in [(xt, "x"), (st, "stats"), (at, "affine")] {
        let what = format!("gradient of {name}");
        assert_close(
            g_ours.get(var).unwrap(),
            g_reference.get(var).unwrap(),
            &what,
        );
    }
}

#[test]
fn detached_stats_get_no_gradient() {
    let x = random(&[2, 3, 2, 2], 1);
    let stats = random(&[2, 3], 2).as_detached_tensor();
    let affine = random(&[2, 2, 3], 3).as_detached_tensor();
    let y = normalize_affine(x.as_tensor(), &stats, &affine).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(x.as_tensor()).is_some(), "x has a gradient");
    assert!(grads.get(&stats).is_none(), "detached stats have none");
    assert_eq!(DType::F64, y.dtype());
}
