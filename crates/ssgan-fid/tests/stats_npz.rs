//! Reading and writing pytorch-fid statistics files (`.npz` with float64 `mu`, `sigma`).

mod common;

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use faer::Mat;
use ssgan_fid::{FidError, Statistics};

fn small_stats() -> Statistics {
    let sigma = Mat::from_fn(3, 3, |i, j| if i == j { 2.0 + i as f64 } else { 0.25 });
    Statistics::new(vec![0.1, -2.5, 1e-300], sigma).unwrap()
}

fn write_arrays(path: &Path, arrays: &[(&str, Tensor)]) {
    let refs: Vec<(&str, &Tensor)> = arrays.iter().map(|(n, t)| (*n, t)).collect();
    Tensor::write_npz(&refs, path).unwrap();
}

#[test]
fn round_trip_is_exact() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("stats.npz");
    let stats = small_stats();

    stats.write_npz(&path).unwrap();
    let loaded = Statistics::read_npz(&path).unwrap();

    assert_eq!(loaded.mu(), stats.mu());
    assert_eq!(loaded.sigma(), stats.sigma());
    let sigma = candle_core::npy::NpzTensors::new(&path)
        .unwrap()
        .get("sigma")
        .unwrap();
    assert_eq!(sigma.unwrap().dtype(), DType::F64);
}

#[test]
fn reads_compressed_pytorch_fid_file() {
    let Some(dir) = common::fixtures() else {
        return;
    };

    let stats = Statistics::read_npz(&dir.join("fd_stats_a.npz")).unwrap();

    assert_eq!(stats.dims(), 192);
    assert_eq!(stats.sigma().nrows(), 192);
    let asymmetry = (stats.sigma()[(0, 5)] - stats.sigma()[(5, 0)]).abs();
    assert!(asymmetry < 1e-12);
}

#[test]
fn missing_sigma_names_key() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("stats.npz");
    let mu = Tensor::zeros(4, DType::F64, &Device::Cpu).unwrap();
    write_arrays(&path, &[("mu", mu)]);

    let error = Statistics::read_npz(&path).unwrap_err();

    assert!(
        matches!(error, FidError::MissingStatsKey { key: "sigma", .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("\"sigma\""), "{error}");
}

#[test]
fn misshaped_sigma_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("stats.npz");
    let mu = Tensor::zeros(4, DType::F64, &Device::Cpu).unwrap();
    let sigma = Tensor::zeros((4, 3), DType::F64, &Device::Cpu).unwrap();
    write_arrays(&path, &[("mu", mu), ("sigma", sigma)]);

    let error = Statistics::read_npz(&path).unwrap_err();

    assert!(
        error.to_string().contains("sigma has shape [4, 3]"),
        "{error}"
    );
}

#[test]
fn integer_mu_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("stats.npz");
    let mu = Tensor::zeros(2, DType::I64, &Device::Cpu).unwrap();
    let sigma = Tensor::zeros((2, 2), DType::F64, &Device::Cpu).unwrap();
    write_arrays(&path, &[("mu", mu), ("sigma", sigma)]);

    let error = Statistics::read_npz(&path).unwrap_err();

    assert!(error.to_string().contains("expected float64"), "{error}");
}

#[test]
fn non_zip_file_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("stats.npz");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(b"mu, sigma")
        .unwrap();

    let error = Statistics::read_npz(&path).unwrap_err();

    assert!(matches!(error, FidError::StatsFile { .. }), "{error:?}");
    assert!(error.to_string().contains("stats.npz"), "{error}");
}

#[test]
fn non_finite_sigma_is_rejected() {
    let sigma = Mat::from_fn(2, 2, |i, j| if i == j { f64::NAN } else { 0.0 });

    let error = Statistics::new(vec![0.0; 2], sigma).unwrap_err();

    assert!(
        matches!(error, FidError::NonFinite { what: "sigma", .. }),
        "{error:?}"
    );
}
