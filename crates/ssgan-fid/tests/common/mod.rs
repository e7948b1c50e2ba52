//! Locating the FID fixtures and reading their `.npy` files.
//!
//! The fixtures live outside the repository, in `fixtures/fid` under a folder named
//! `shared` next to the workspace root. Set `SSGAN_SHARED_DIR` to use another folder in
//! place of that `shared` folder. Tests that need them print a line to stderr and pass
//! when they are absent.
//!
//! Every fixture was made on CPU with Python 3.11.7, torch 2.15.0, torchvision 0.29.2,
//! pytorch-fid 0.3.0, numpy 2.4.6 and scipy 1.17.1, from a random-weight FID InceptionV3
//! (seed 20240607) and synthetic feature sets.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use ssgan_fid::{FeatureMatrix, RgbPlanes};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Returns the FID fixture folder, or `None` after printing a skip line.
pub fn fixtures() -> Option<PathBuf> {
    let shared = match std::env::var_os("SSGAN_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().parent().unwrap().join("shared"),
    };
    let dir = shared.join("fixtures").join("fid");
    if dir.join("inception_random.pth").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: FID fixtures not found at {}", dir.display());
        None
    }
}

/// Reads an `.npy` file as f64 values and its shape.
pub fn read_npy(path: &Path) -> (Vec<f64>, Vec<usize>) {
    let tensor = Tensor::read_npy(path).unwrap();
    let shape = tensor.dims().to_vec();
    let values = tensor
        .to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    (values, shape)
}

/// Reads an `.npy` matrix as features; f32 files are widened exactly.
pub fn read_features(path: &Path) -> FeatureMatrix {
    let (values, shape) = read_npy(path);
    FeatureMatrix::new(shape[0], shape[1], values).unwrap()
}

/// Reads `images_u8.npy` (N, 32, 32, 3) as planar RGB images.
pub fn fixture_images(dir: &Path) -> Vec<RgbPlanes> {
    let tensor = Tensor::read_npy(dir.join("images_u8.npy")).unwrap();
    let (n, height, width, _) = tensor.dims4().unwrap();
    let bytes = tensor.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let per_image = height * width * 3;
    (0..n)
        .map(|i| {
            RgbPlanes::from_interleaved(width, height, &bytes[i * per_image..(i + 1) * per_image])
        })
        .collect()
}

/// Returns `max |a - b|`.
pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Returns `max |values|`.
pub fn max_abs(values: &[f64]) -> f64 {
    values.iter().map(|v| v.abs()).fold(0.0, f64::max)
}

/// Features of `rows` samples whose values follow a fixed pseudo-random pattern (a 64-bit
/// linear congruential generator) in `offset .. offset + 1`.
pub fn synthetic(rows: usize, dims: usize, seed: u64, offset: f64) -> FeatureMatrix {
    let mut state = seed;
    let values = (0..rows * dims)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            offset + (state >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    FeatureMatrix::new(rows, dims, values).unwrap()
}
