mod common;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use ssgan_model::config::Init;
use ssgan_model::ctx::Ctx;
use ssgan_model::params::{Builder, ParamStore};
use ssgan_model::spectral_norm::SpectralNorm;

/// Largest eigenvalue of a symmetric matrix by cyclic Jacobi rotations, in f64.
fn largest_eigenvalue(mut a: Vec<Vec<f64>>) -> f64 {
    let n = a.len();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-24 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (row_p, row_q) = (a[p].clone(), a[q].clone());
                for (k, (apk, aqk)) in row_p.iter().zip(&row_q).enumerate() {
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i][i]).fold(f64::MIN, f64::max)
}

#[test]
fn jacobi_reference_finds_known_eigenvalue() {
    // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
    let top = largest_eigenvalue(vec![vec![2.0, 1.0], vec![1.0, 2.0]]);
    assert!((top - 3.0).abs() < 1e-12, "top {top}");
}

#[test]
fn sigma_converges_to_largest_singular_value() {
    let (c_out, c_in, k) = (6, 2, 3);
    let fan_in = c_in * k * k;
    let mut store = ParamStore::default();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut builder = Builder {
        store: &mut store,
        rng: &mut rng,
        device: Device::Cpu,
        dtype: DType::F64,
        init: Init::Normal,
        init_std: 1.0,
    };
    let kernel = builder.kernel("w".into(), &[c_out, c_in, k, k]).unwrap();
    let sn = SpectralNorm::new(&mut builder, "w", fan_in).unwrap();
    let ctx = Ctx::training(common::single());

    let w = common::values(&kernel);
    let gram: Vec<Vec<f64>> = (0..fan_in)
        .map(|i| {
            (0..fan_in)
                .map(|j| {
                    (0..c_out)
                        .map(|o| w[o * fan_in + i] * w[o * fan_in + j])
                        .sum()
                })
                .collect()
        })
        .collect();
    let expected = largest_eigenvalue(gram).sqrt();

    let mut sigma = 0.0;
    for _ in 0..300 {
        sigma = sn
            .sigma(&ctx, kernel.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[0];
    }
    let relative = (sigma - expected).abs() / expected;
    assert!(
        relative < 1e-9,
        "sigma {sigma}, largest singular value {expected}"
    );

    let normalized = sn.normalize(&ctx, kernel.as_tensor()).unwrap();
    let ratio: f64 = (kernel.as_tensor() / &normalized)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(
        (ratio - expected).abs() / expected < 1e-9,
        "kernel / normalized = {ratio}"
    );
}

#[test]
fn sigma_leaves_u_unchanged_without_state_updates() {
    let mut store = ParamStore::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut builder = Builder {
        store: &mut store,
        rng: &mut rng,
        device: Device::Cpu,
        dtype: DType::F64,
        init: Init::Normal,
        init_std: 1.0,
    };
    let kernel = builder.kernel("w".into(), &[4, 5]).unwrap();
    let sn = SpectralNorm::new(&mut builder, "w", 5).unwrap();
    let before = common::values(sn.u());
    let mut ctx = Ctx::training(common::single());
    ctx.update_state = false;
    sn.sigma(&ctx, kernel.as_tensor()).unwrap();
    assert_eq!(common::values(sn.u()), before);
    ctx.update_state = true;
    sn.sigma(&ctx, kernel.as_tensor()).unwrap();
    assert_ne!(common::values(sn.u()), before);
    let _ = Tensor::zeros(1, DType::F64, &Device::Cpu);
}
