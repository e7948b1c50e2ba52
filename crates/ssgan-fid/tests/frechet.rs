//! The Frechet distance against pytorch-fid 0.3.0 (numpy 2.4.6, scipy 1.17.1): the
//! expected values in `fd_expected.json`, with the tolerances of the fixture notes
//! (1e-9 relative for full-rank cases, 2e-6 for the rank-deficient one), plus invariants.

mod common;

use std::path::Path;

use faer::Mat;
use serde_json::Value;
use ssgan_fid::{
    FidError, Statistics, frechet_distance, frechet_distance_with_offset, frechet_terms,
};

fn expected(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("fd_expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn case_value(expected: &Value, case: &str, key: &str) -> f64 {
    expected["cases"][case][key].as_f64().unwrap()
}

fn stats_of(dir: &Path, file: &str) -> Statistics {
    Statistics::from_features(&common::read_features(&dir.join(file))).unwrap()
}

fn assert_relative(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let error = (actual - expected).abs() / expected.abs();
    eprintln!("{what}: {actual} vs {expected}, relative error {error:e}");
    assert!(
        error <= tolerance,
        "{what}: {actual} vs {expected}, relative error {error:e} above {tolerance:e}"
    );
}

#[test]
fn main_features_case() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let expected = expected(&dir);
    let (a, b) = (
        stats_of(&dir, "fd_feats_a.npy"),
        stats_of(&dir, "fd_feats_b.npy"),
    );

    let terms = frechet_terms(&a, &b).unwrap();
    let self_distance = frechet_distance(&a, &a).unwrap();

    let case = "main_features";
    let fid = case_value(&expected, case, "fid_pytorch_fid");
    assert_relative(terms.distance(), fid, 1e-9, "main FID");
    assert!(!terms.offset_used);
    let mean_term = case_value(&expected, case, "mean_term_sq_norm");
    assert_relative(terms.mean_term, mean_term, 1e-12, "main |mu1 - mu2|^2");
    let trace = case_value(&expected, case, "trace_sqrt_product_eigen");
    assert_relative(terms.trace_sqrt_product, trace, 1e-10, "main tr sqrt");
    eprintln!("main_self: {self_distance:e}");
    assert!(self_distance.abs() < 1e-6, "FID(A, A) = {self_distance}");
}

#[test]
fn main_features_moments() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let a = stats_of(&dir, "fd_feats_a.npy");
    let b = stats_of(&dir, "fd_feats_b.npy");
    let moments =
        candle_core::npy::NpzTensors::new(dir.join("fd_feats_expected_moments.npz")).unwrap();
    let array = |name: &str| -> Vec<f64> {
        let tensor = moments.get(name).unwrap().unwrap();
        tensor.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    };

    for (stats, side) in [(&a, "a"), (&b, "b")] {
        let mu = array(&format!("mu_{side}"));
        let diag: Vec<f64> = (0..2048).map(|i| stats.sigma()[(i, i)]).collect();
        let corner: Vec<f64> = (0..256).map(|k| stats.sigma()[(k / 16, k % 16)]).collect();
        let checks = [
            (stats.mu().to_vec(), mu, "mu"),
            (diag, array(&format!("sigma_{side}_diag")), "sigma diagonal"),
            (
                corner,
                array(&format!("sigma_{side}_corner16")),
                "sigma corner",
            ),
        ];
        for (actual, expected, what) in checks {
            let error = common::max_abs_diff(&actual, &expected);
            let scale = common::max_abs(&expected);
            eprintln!("{side} {what}: max abs error {error:e}");
            assert!(error <= 1e-12 * scale, "{side} {what}: error {error:e}");
        }
    }
}

#[test]
fn singular_features_case() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let expected = expected(&dir);
    let a = stats_of(&dir, "fd_singular_a.npy");
    let b = stats_of(&dir, "fd_singular_b.npy");

    let terms = frechet_terms(&a, &b).unwrap();
    let with_offset = frechet_distance_with_offset(&a, &b, 1e-6).unwrap();

    let case = "singular_features";
    let fid = case_value(&expected, case, "fid_pytorch_fid");
    assert_relative(terms.distance(), fid, 2e-6, "singular FID");
    assert!(!terms.offset_used, "scipy 1.17 takes no offset branch here");
    let offset_fid = case_value(&expected, case, "fid_if_eps_branch_taken");
    assert_relative(with_offset, offset_fid, 2e-6, "singular FID with offset");
    // The two behaviours differ by 1.1e-5 relative, so the tolerance separates them.
    assert!((terms.distance() - with_offset).abs() > 1e-3);
}

#[test]
fn stats_npz_case() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let expected = expected(&dir);
    let a = Statistics::read_npz(&dir.join("fd_stats_a.npz")).unwrap();
    let b = Statistics::read_npz(&dir.join("fd_stats_b.npz")).unwrap();

    let fid = frechet_distance(&a, &b).unwrap();

    assert_eq!(a.dims(), 192);
    let reference = case_value(&expected, "stats_npz", "fid_pytorch_fid");
    assert_relative(fid, reference, 1e-9, "stats_npz FID");
}

#[test]
fn identical_sets_give_zero() {
    let stats = Statistics::from_features(&common::synthetic(200, 16, 1, 0.0)).unwrap();

    let distance = frechet_distance(&stats, &stats).unwrap();

    assert!(distance.abs() < 1e-10, "FID(A, A) = {distance}");
}

#[test]
fn identical_rank_deficient_sets_give_zero() {
    // 16 samples in 256 dims: the covariance has rank 15. The square roots of the
    // round-off eigenvalues of the 241 zero directions move the result off 0 by about
    // 1.5e-7 x tr(sigma).
    let stats = Statistics::from_features(&common::synthetic(16, 256, 4, 0.0)).unwrap();

    let terms = frechet_terms(&stats, &stats).unwrap();

    let distance = terms.distance();
    assert!(
        distance.abs() < 1e-6 * terms.trace_sigma1,
        "FID(A, A) = {distance}, tr(sigma) = {}",
        terms.trace_sigma1
    );
}

#[test]
fn distance_is_symmetric() {
    let a = Statistics::from_features(&common::synthetic(200, 16, 1, 0.0)).unwrap();
    let b = Statistics::from_features(&common::synthetic(150, 16, 2, 0.0)).unwrap();

    let ab = frechet_distance(&a, &b).unwrap();
    let ba = frechet_distance(&b, &a).unwrap();

    assert!(ab > 0.0);
    assert!((ab - ba).abs() <= 1e-12 * ab.abs().max(1.0), "{ab} vs {ba}");
}

#[test]
fn mean_shift_gives_squared_norm() {
    let a = Statistics::from_features(&common::synthetic(100, 8, 3, 0.0)).unwrap();
    let shift: Vec<f64> = (0..8).map(|i| 0.5 * i as f64 - 1.0).collect();
    let mu: Vec<f64> = a.mu().iter().zip(&shift).map(|(m, s)| m + s).collect();
    let b = Statistics::new(mu, a.sigma().clone()).unwrap();

    let distance = frechet_distance(&a, &b).unwrap();

    let norm: f64 = shift.iter().map(|s| s * s).sum();
    assert!((distance - norm).abs() < 1e-10, "{distance} vs {norm}");
}

#[test]
fn diagonal_covariances_closed_form() {
    let variances1 = [1.0, 4.0, 9.0];
    let variances2 = [4.0, 1.0, 0.0];
    let diagonal = |v: &[f64; 3]| Mat::from_fn(3, 3, |i, j| if i == j { v[i] } else { 0.0 });
    let a = Statistics::new(vec![0.0; 3], diagonal(&variances1)).unwrap();
    let b = Statistics::new(vec![0.0; 3], diagonal(&variances2)).unwrap();

    let distance = frechet_distance(&a, &b).unwrap();

    // sum (sqrt(v1) - sqrt(v2))^2 = 1 + 1 + 9.
    assert!((distance - 11.0).abs() < 1e-12, "{distance}");
}

#[test]
fn indefinite_covariance_is_rejected() {
    let identity = Mat::from_fn(2, 2, |i, j| if i == j { 1.0 } else { 0.0 });
    let negative = Mat::from_fn(2, 2, |i, j| if i == j { -1.0 } else { 0.0 });
    let a = Statistics::new(vec![0.0; 2], identity).unwrap();
    let b = Statistics::new(vec![0.0; 2], negative).unwrap();

    let error = frechet_distance(&a, &b).unwrap_err();

    assert!(
        matches!(error, FidError::ImaginaryComponent { .. }),
        "{error:?}"
    );
}

#[test]
fn dimension_mismatch_is_rejected() {
    let a = Statistics::from_features(&common::synthetic(20, 4, 1, 0.0)).unwrap();
    let b = Statistics::from_features(&common::synthetic(20, 5, 2, 0.0)).unwrap();

    let error = frechet_distance(&a, &b).unwrap_err();

    assert!(
        matches!(error, FidError::DimensionMismatch { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("expected 4, got 5"), "{error}");
}
