//! Helpers shared by the model's integration tests.

#![allow(dead_code)]

use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var};
use ssgan_collective::{Communicator, SingleRank};
use ssgan_model::config::{GeneratorNorm, LossConfig, ModelConfig, OptimConfig};
use ssgan_model::{GanSettings, SsGan};

pub fn single() -> Arc<dyn Communicator> {
    Arc::new(SingleRank)
}

/// Returns a model small enough for finite differences: G width 4, D width 2, z_dim 4.
pub fn tiny_model() -> ModelConfig {
    ModelConfig {
        ch: 2,
        z_dim: 4,
        sbn_hidden: 3,
        g_norm: GeneratorNorm::SelfModulated,
        ..ModelConfig::default()
    }
}

/// Rotation of the last 2 images of each side of a batch of 4.
pub fn tiny_loss() -> LossConfig {
    LossConfig {
        rotated_batch_size: 8,
        ..LossConfig::default()
    }
}

pub fn build(model: &ModelConfig, dtype: DType, seed: u64) -> SsGan {
    build_on(model, dtype, seed, &Device::Cpu)
}

/// Builds the model of `model` with the tiny loss on `device`, as one rank.
pub fn build_on(model: &ModelConfig, dtype: DType, seed: u64, device: &Device) -> SsGan {
    let loss = tiny_loss();
    let optim = OptimConfig::default();
    let settings = GanSettings {
        model,
        loss: &loss,
        optim: &optim,
        init_seed: seed,
        device: device.clone(),
        dtype,
        bucket_bytes: ssgan_collective::DEFAULT_BUCKET_BYTES,
    };
    SsGan::new(&settings, single()).expect("model builds")
}

/// Images [n, 3, 32, 32] in [0, 1] from a simple deterministic pattern.
pub fn pattern_images(n: usize, dtype: DType) -> Tensor {
    pattern_images_of_size(n, 32, dtype)
}

/// Images [n, 3, size, size] in [0, 1] from a simple deterministic pattern.
pub fn pattern_images_of_size(n: usize, size: usize, dtype: DType) -> Tensor {
    let count = n * 3 * size * size;
    let values: Vec<f64> = (0..count)
        .map(|i| ((i * 7919) % 251) as f64 / 250.0)
        .collect();
    Tensor::from_vec(values, (n, 3, size, size), &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("pattern tensor")
}

pub fn values(var: &Var) -> Vec<f64> {
    let flat = var.as_tensor().flatten_all().expect("flatten");
    flat.to_dtype(DType::F64)
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// Overwrites element `index` of `var` (flattened) with `value`.
pub fn set_element(var: &Var, index: usize, value: f64) {
    let mut all = values(var);
    all[index] = value;
    let tensor = Tensor::from_vec(all, var.shape(), var.device())
        .and_then(|t| t.to_dtype(var.dtype()))
        .expect("tensor");
    var.set(&tensor).expect("set");
}

pub fn to_vec(t: &Tensor) -> Vec<f64> {
    let flat = t.flatten_all().expect("flatten");
    flat.to_dtype(DType::F64)
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// Returns max |actual - expected| divided by max |expected| (at least 1e-12).
pub fn max_relative_error(actual: &[f64], expected: &[f64]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "lengths differ");
    let scale = expected.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    let diff = actual
        .iter()
        .zip(expected)
        .fold(0f64, |m, (a, e)| m.max((a - e).abs()));
    diff / scale
}

/// Builds a fixed pseudo-random pattern in [-1, 1) on the CPU, so that two implementations
/// see identical inputs.
pub fn pattern(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let count: usize = shape.iter().product();
    let values: Vec<f64> = (0..count)
        .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1009) as f64 / 504.5 - 1.0)
        .collect();
    let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    t.to_dtype(dtype).unwrap()
}

/// Returns the values of any tensor as a flat f64 vector.
pub fn flat_f64(t: &Tensor) -> Vec<f64> {
    let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    t.to_vec1().unwrap()
}
