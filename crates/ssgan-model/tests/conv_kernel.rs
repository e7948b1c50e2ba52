//! The im2col + GEMM convolutions against candle's own conv2d: output, input gradient and
//! kernel gradient, in f64 and f32, over shapes that exercise padding edges and odd sizes,
//! plain and fused with zero-insertion upsampling.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use ssgan_model::config::Upsample;
use ssgan_model::kernels::{conv2d_same, conv2d_zero_upsampled};
use ssgan_model::resample::upsample;

use common::max_relative_error;

/// (batch, c_in, c_out, height, width, kernel). The kernel gradient sums its products
/// transposed when c_out < c_in * kernel^2 (per phase, for the upsampled convolution), so
/// the shapes cover both sides of that test.
const SHAPES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (2, 3, 4, 5, 5, 3),
    (1, 1, 1, 1, 1, 3),
    (3, 2, 5, 4, 7, 3),
    (5, 4, 3, 8, 8, 1),
    (2, 3, 2, 6, 5, 5),
    (7, 8, 6, 2, 3, 3),
    (3, 1, 12, 4, 4, 3),
];

struct Grads {
    y: Vec<f64>,
    dx: Vec<f64>,
    dw: Vec<f64>,
}

fn random(shape: &[usize], seed: u64, dtype: DType) -> Var {
    let device = Device::Cpu;
    let count: usize = shape.iter().product();
    // A fixed pseudo-random pattern, so both implementations see identical inputs.
    let values: Vec<f64> = (0..count)
        .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1009) as f64 / 504.5 - 1.0)
        .collect();
    let t = Tensor::from_vec(values, shape, &device).unwrap();
    Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
}

/// Runs y = conv(x, w) and the gradient of sum(y * probe), for a fixed probe.
fn run(
    shape: (usize, usize, usize, usize, usize, usize),
    dtype: DType,
    conv: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> Grads {
    let (n, c, o, h, w, k) = shape;
    let x = random(&[n, c, h, w], 1, dtype);
    let kernel = random(&[o, c, k, k], 2, dtype);
    let y = conv(x.as_tensor(), kernel.as_tensor());
    let probe = random(y.dims(), 3, dtype);
    let loss = (&y * probe.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let flat = |t: &Tensor| {
        let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
        t.to_vec1::<f64>().unwrap()
    };
    Grads {
        y: flat(&y),
        dx: flat(grads.get(x.as_tensor()).unwrap()),
        dw: flat(grads.get(kernel.as_tensor()).unwrap()),
    }
}

fn candle_conv(x: &Tensor, w: &Tensor) -> Tensor {
    let k = w.dim(3).unwrap();
    x.conv2d(w, k / 2, 1, 1, 1).unwrap()
}

fn candle_upsampled_conv(x: &Tensor, w: &Tensor) -> Tensor {
    candle_conv(&upsample(x, Upsample::Zeros).unwrap(), w)
}

type Conv = fn(&Tensor, &Tensor) -> Tensor;

fn compare(dtype: DType, tolerance: f64, ours: Conv, reference: Conv) {
    for shape in SHAPES {
        let ours = run(shape, dtype, ours);
        let reference = run(shape, dtype, reference);
        let y = max_relative_error(&ours.y, &reference.y);
        assert!(y < tolerance, "{shape:?} output: relative error {y:e}");
        let dx = max_relative_error(&ours.dx, &reference.dx);
        assert!(
            dx < tolerance,
            "{shape:?} input gradient: relative error {dx:e}"
        );
        let dw = max_relative_error(&ours.dw, &reference.dw);
        assert!(
            dw < tolerance,
            "{shape:?} kernel gradient: relative error {dw:e}"
        );
    }
}

fn same(x: &Tensor, w: &Tensor) -> Tensor {
    conv2d_same(x, w, None).unwrap()
}

fn upsampled(x: &Tensor, w: &Tensor) -> Tensor {
    conv2d_zero_upsampled(x, w, None).unwrap()
}

#[test]
fn same_conv_matches_candle_f64() {
    // Only the summation order differs from candle's kernels.
    compare(DType::F64, 1e-12, same, candle_conv);
}

#[test]
fn same_conv_matches_candle_f32() {
    // Sums of up to 8 * 5 * 5 * 7 * 8 products in f32 in another order.
    compare(DType::F32, 1e-5, same, candle_conv);
}

#[test]
fn upsampled_conv_matches_candle_f64() {
    compare(DType::F64, 1e-12, upsampled, candle_upsampled_conv);
}

#[test]
fn upsampled_conv_matches_candle_f32() {
    compare(DType::F32, 1e-5, upsampled, candle_upsampled_conv);
}

#[test]
fn upsampled_output_doubles_size() {
    let x = random(&[2, 3, 3, 5], 1, DType::F32);
    let w = random(&[4, 3, 3, 3], 2, DType::F32);
    let y = conv2d_zero_upsampled(x.as_tensor(), w.as_tensor(), None).unwrap();
    assert_eq!(y.dims(), &[2, 4, 6, 10]);
}

#[test]
fn output_keeps_spatial_size() {
    let x = random(&[2, 3, 6, 4], 1, DType::F32);
    let w = random(&[5, 3, 3, 3], 2, DType::F32);
    let y = conv2d_same(x.as_tensor(), w.as_tensor(), None).unwrap();
    assert_eq!(y.dims(), &[2, 5, 6, 4]);
}

#[test]
fn mismatched_channels_is_an_error() {
    let x = random(&[1, 3, 4, 4], 1, DType::F32);
    let w = random(&[2, 4, 3, 3], 2, DType::F32);
    let err = conv2d_same(x.as_tensor(), w.as_tensor(), None).unwrap_err();
    assert!(err.to_string().contains("do not match"), "{err}");
}

#[test]
fn untracked_input_gets_no_gradient() {
    let x = random(&[2, 3, 4, 4], 1, DType::F64).as_detached_tensor();
    let w = random(&[2, 3, 3, 3], 2, DType::F64);
    let loss = conv2d_same(&x, w.as_tensor(), None)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    assert!(grads.get(&x).is_none(), "a detached input has no gradient");
    let reference = candle_conv(&x, w.as_tensor()).sum_all().unwrap();
    let expected = reference.backward().unwrap();
    let dw = grads.get(w.as_tensor()).unwrap().flatten_all().unwrap();
    let dw_expected = expected.get(w.as_tensor()).unwrap().flatten_all().unwrap();
    let error = max_relative_error(&dw.to_vec1().unwrap(), &dw_expected.to_vec1().unwrap());
    assert!(error < 1e-12, "kernel gradient: relative error {error:e}");
}

#[test]
fn bias_matches_broadcast_add() {
    for upsampled_kind in [false, true] {
        let x = random(&[3, 2, 4, 5], 1, DType::F64);
        let w = random(&[4, 2, 3, 3], 2, DType::F64);
        let b = random(&[4], 3, DType::F64);
        let (x_t, w_t, b_t) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
        let (ours, reference) = if upsampled_kind {
            let reference = candle_upsampled_conv(x_t, w_t);
            (
                conv2d_zero_upsampled(x_t, w_t, Some(b_t)).unwrap(),
                reference,
            )
        } else {
            (
                conv2d_same(x_t, w_t, Some(b_t)).unwrap(),
                candle_conv(x_t, w_t),
            )
        };
        let reference = reference
            .broadcast_add(&b_t.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        let probe = random(ours.dims(), 4, DType::F64);
        let grad_of = |y: &Tensor| {
            let loss = (y * probe.as_tensor()).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            grads.get(b_t).unwrap().to_vec1::<f64>().unwrap()
        };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let y_error = max_relative_error(&flat(&ours), &flat(&reference));
        assert!(
            y_error < 1e-12,
            "upsampled {upsampled_kind}: output error {y_error:e}"
        );
        let db_error = max_relative_error(&grad_of(&ours), &grad_of(&reference));
        assert!(
            db_error < 1e-12,
            "upsampled {upsampled_kind}: bias gradient error {db_error:e}"
        );
    }
}
