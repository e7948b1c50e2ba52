//! The inference pools against a direct implementation of PyTorch's definitions
//! (`max_pool2d` with -infinity padding, `avg_pool2d(count_include_pad=False)`), on the CPU
//! kernel in f64 and f32 and on candle's ops in f16.

mod common;

use candle_core::{DType, Device, Tensor};
use ssgan_model::kernels::{PoolKind, PoolSpec, pool2d_inference};

use common::{flat_f64 as flat, max_relative_error, pattern};

/// (x shape [N, C, H, W], size, stride, padding)
const CASES: [([usize; 4], usize, usize, usize); 6] = [
    ([2, 3, 9, 7], 3, 2, 0),
    ([2, 3, 8, 8], 3, 2, 0),
    ([3, 2, 5, 6], 3, 1, 1),
    ([1, 4, 1, 1], 3, 1, 1),
    ([2, 2, 7, 5], 3, 2, 1),
    ([5, 1, 6, 9], 2, 2, 1),
];

/// Pools `x` [N, C, H, W] in f64 straight from the definition, visiting every window tap.
fn reference(x: &Tensor, spec: PoolSpec) -> Vec<f64> {
    let (n, c, h, w) = x.dims4().unwrap();
    let values = flat(x);
    let output = |size: usize| (size + 2 * spec.padding - spec.size) / spec.stride + 1;
    let (ho, wo) = (output(h), output(w));
    let mut y = Vec::with_capacity(n * c * ho * wo);
    for plane in values.chunks_exact(h * w) {
        for oh in 0..ho {
            for ow in 0..wo {
                let taps = window_values(plane, (h, w), (oh, ow), spec);
                y.push(match spec.kind {
                    PoolKind::Max => taps.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    PoolKind::AverageExcludePad => taps.iter().sum::<f64>() / taps.len() as f64,
                });
            }
        }
    }
    y
}

/// Returns the in-image values of the window of output (oh, ow).
fn window_values(
    plane: &[f64],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    spec: PoolSpec,
) -> Vec<f64> {
    let mut taps = Vec::new();
    for i in 0..spec.size {
        for j in 0..spec.size {
            let row = (oh * spec.stride + i) as isize - spec.padding as isize;
            let column = (ow * spec.stride + j) as isize - spec.padding as isize;
            if (0..h as isize).contains(&row) && (0..w as isize).contains(&column) {
                taps.push(plane[row as usize * w + column as usize]);
            }
        }
    }
    taps
}

fn compare(kind: PoolKind, dtype: DType, tolerance: f64) {
    for (shape, size, stride, padding) in CASES {
        let spec = PoolSpec {
            kind,
            size,
            stride,
            padding,
        };
        let x = pattern(&shape, 1, dtype);
        let y = pool2d_inference(&x, spec).unwrap();
        let expected = reference(&x, spec);
        assert_eq!(y.dtype(), dtype, "{spec:?} dtype");
        assert_eq!(y.elem_count(), expected.len(), "{shape:?} {spec:?} size");
        let error = max_relative_error(&flat(&y), &expected);
        assert!(
            error < tolerance,
            "{shape:?} {spec:?}: relative error {error:e}"
        );
    }
}

#[test]
fn max_pool_matches_definition_f64() {
    compare(PoolKind::Max, DType::F64, 1e-15);
}

#[test]
fn max_pool_matches_definition_f32() {
    compare(PoolKind::Max, DType::F32, 1e-7);
}

#[test]
fn average_pool_matches_definition_f64() {
    compare(PoolKind::AverageExcludePad, DType::F64, 1e-14);
}

#[test]
fn average_pool_matches_definition_f32() {
    compare(PoolKind::AverageExcludePad, DType::F32, 1e-6);
}

#[test]
fn candle_fallback_matches_definition_f16() {
    // F16 is not a kernel dtype, so these run the padded candle ops.
    compare(PoolKind::Max, DType::F16, 1e-3);
    compare(PoolKind::AverageExcludePad, DType::F16, 2e-3);
}

#[test]
fn average_excludes_padding_at_corners() {
    let x = Tensor::from_vec(vec![1f64, 2.0, 3.0, 4.0], (1, 1, 2, 2), &Device::Cpu).unwrap();
    let spec = PoolSpec {
        kind: PoolKind::AverageExcludePad,
        size: 3,
        stride: 1,
        padding: 1,
    };
    let y = pool2d_inference(&x, spec).unwrap();
    // Every 3x3 window covers the whole 2x2 image, so each output is its mean.
    assert_eq!(flat(&y), [2.5; 4]);
}

#[test]
fn padding_above_half_window_is_an_error() {
    let x = pattern(&[1, 1, 4, 4], 1, DType::F32);
    let spec = PoolSpec {
        kind: PoolKind::Max,
        size: 3,
        stride: 1,
        padding: 2,
    };
    let error = pool2d_inference(&x, spec).unwrap_err();
    assert!(error.to_string().contains("do not match"), "{error}");
}
