//! The forward-only inference convolution against candle's conv2d followed by the same
//! scale, shift and ReLU, in f64 and f32. The cases cover strides 1 and 2, symmetric and
//! per-axis padding, square, rectangular and 1x1 kernels, odd sizes and batches larger than
//! the thread count.

mod common;

use candle_core::{DType, Device, Tensor};
use ssgan_model::kernels::{ConvGeometry, Epilogue, conv2d_inference};

use common::{flat_f64 as flat, max_relative_error, pattern};

/// One test case: x [N, C, H, W], kernel [O, C, kh, kw], stride and (ph, pw).
#[derive(Clone, Copy, Debug)]
struct Case {
    input: (usize, usize, usize, usize),
    c_out: usize,
    kernel: (usize, usize),
    stride: usize,
    padding: (usize, usize),
}

const fn case(
    input: (usize, usize, usize, usize),
    c_out: usize,
    kernel: (usize, usize),
    stride: usize,
    padding: (usize, usize),
) -> Case {
    Case {
        input,
        c_out,
        kernel,
        stride,
        padding,
    }
}

const CASES: [Case; 14] = [
    // 1x1, stride 1, no padding: the GEMM without im2col.
    case((3, 5, 7, 6), 4, (1, 1), 1, (0, 0)),
    case((1, 1, 1, 1), 1, (1, 1), 1, (0, 0)),
    // 1x1 with stride 2 or padding goes through im2col.
    case((2, 3, 7, 5), 2, (1, 1), 2, (0, 0)),
    case((2, 3, 4, 3), 2, (1, 1), 1, (1, 2)),
    // Square kernels, "same" and "valid", strides 1 and 2, odd sizes.
    case((2, 3, 9, 7), 4, (3, 3), 1, (1, 1)),
    case((5, 2, 9, 9), 3, (3, 3), 2, (0, 0)),
    case((3, 4, 8, 11), 5, (3, 3), 2, (1, 1)),
    case((2, 3, 6, 5), 2, (5, 5), 1, (2, 2)),
    case((1, 2, 3, 3), 2, (5, 5), 2, (2, 2)),
    // Rectangular kernels with per-axis padding, as in InceptionV3's 1x7 / 7x1 / 1x3 / 3x1.
    case((2, 3, 5, 9), 4, (1, 7), 1, (0, 3)),
    case((2, 3, 9, 5), 4, (7, 1), 1, (3, 0)),
    case((3, 4, 4, 6), 3, (1, 3), 1, (0, 1)),
    case((3, 4, 6, 4), 3, (3, 1), 2, (1, 0)),
    // A batch of 9 images, larger than any thread count of a small machine.
    case((9, 2, 5, 4), 3, (2, 3), 1, (1, 0)),
];

/// candle's conv2d on the explicitly padded input, then scale, shift and ReLU.
fn reference(x: &Tensor, w: &Tensor, case: Case, scale: &Tensor, shift: &Tensor) -> Tensor {
    let (ph, pw) = case.padding;
    let padded = x.pad_with_zeros(2, ph, ph).unwrap();
    let padded = padded.pad_with_zeros(3, pw, pw).unwrap();
    let y = padded.conv2d(w, 0, case.stride, 1, 1).unwrap();
    let per_channel = |t: &Tensor| t.reshape((1, case.c_out, 1, 1)).unwrap();
    let y = y.broadcast_mul(&per_channel(scale)).unwrap();
    let y = y.broadcast_add(&per_channel(shift)).unwrap();
    y.relu().unwrap()
}

fn compare(dtype: DType, tolerance: f64) {
    for case in CASES {
        let (n, c, h, w) = case.input;
        let (kh, kw) = case.kernel;
        let x = pattern(&[n, c, h, w], 1, dtype);
        let kernel = pattern(&[case.c_out, c, kh, kw], 2, dtype);
        let scale = pattern(&[case.c_out], 3, dtype);
        let shift = pattern(&[case.c_out], 4, dtype);
        let geometry = ConvGeometry {
            stride: case.stride,
            padding: case.padding,
        };
        let epilogue = Epilogue {
            scale: Some(&scale),
            shift: Some(&shift),
            relu: true,
        };
        let ours = conv2d_inference(&x, &kernel, geometry, epilogue).unwrap();
        let expected = reference(&x, &kernel, case, &scale, &shift);
        assert_eq!(ours.dims(), expected.dims(), "{case:?} shape");
        assert_eq!(ours.dtype(), dtype, "{case:?} dtype");
        let error = max_relative_error(&flat(&ours), &flat(&expected));
        assert!(error < tolerance, "{case:?}: relative error {error:e}");
    }
}

#[test]
fn inference_conv_matches_candle_f64() {
    // Only the summation order differs from candle's kernels.
    compare(DType::F64, 1e-12);
}

#[test]
fn inference_conv_matches_candle_f32() {
    // Sums of up to 5 * 5 * 3 products in f32 in another order.
    compare(DType::F32, 1e-5);
}

#[test]
fn default_epilogue_is_plain_conv() {
    let x = pattern(&[2, 3, 6, 5], 1, DType::F64);
    let kernel = pattern(&[4, 3, 3, 3], 2, DType::F64);
    let geometry = ConvGeometry {
        stride: 2,
        padding: (1, 1),
    };
    let ours = conv2d_inference(&x, &kernel, geometry, Epilogue::default()).unwrap();
    let expected = x.conv2d(&kernel, 1, 2, 1, 1).unwrap();
    let error = max_relative_error(&flat(&ours), &flat(&expected));
    assert!(error < 1e-12, "relative error {error:e}");
    let negatives = flat(&ours).iter().filter(|&&v| v < 0.0).count();
    assert!(negatives > 0, "without ReLU some outputs are negative");
}

#[test]
fn shift_alone_matches_broadcast_add() {
    let x = pattern(&[3, 4, 5, 5], 1, DType::F32);
    let kernel = pattern(&[6, 4, 1, 1], 2, DType::F32);
    let shift = pattern(&[6], 3, DType::F32);
    let epilogue = Epilogue {
        shift: Some(&shift),
        ..Epilogue::default()
    };
    let ours = conv2d_inference(&x, &kernel, ConvGeometry::default(), epilogue).unwrap();
    let expected = x.conv2d(&kernel, 0, 1, 1, 1).unwrap();
    let expected = expected
        .broadcast_add(&shift.reshape((1, 6, 1, 1)).unwrap())
        .unwrap();
    let error = max_relative_error(&flat(&ours), &flat(&expected));
    assert!(error < 1e-6, "relative error {error:e}");
}

#[test]
fn strided_input_is_made_contiguous() {
    // A transposed view: the op must read it through its layout, not as raw storage.
    let x = pattern(&[2, 3, 5, 7], 1, DType::F64)
        .transpose(2, 3)
        .unwrap();
    let kernel = pattern(&[2, 3, 3, 3], 2, DType::F64);
    let geometry = ConvGeometry {
        stride: 1,
        padding: (1, 1),
    };
    let ours = conv2d_inference(&x, &kernel, geometry, Epilogue::default()).unwrap();
    let expected = x.contiguous().unwrap().conv2d(&kernel, 1, 1, 1, 1).unwrap();
    let error = max_relative_error(&flat(&ours), &flat(&expected));
    assert!(error < 1e-12, "relative error {error:e}");
}

#[test]
fn empty_batch_gives_empty_output() {
    let x = Tensor::zeros((0, 3, 5, 5), DType::F32, &Device::Cpu).unwrap();
    let kernel = pattern(&[2, 3, 3, 3], 2, DType::F32);
    let y = conv2d_inference(&x, &kernel, ConvGeometry::default(), Epilogue::default()).unwrap();
    assert_eq!(y.dims(), [0, 2, 3, 3]);
}

/// Returns the message of a convolution that must fail, with a shift of `shift_len` values.
fn error_message(
    x: &[usize],
    kernel: &[usize],
    geometry: ConvGeometry,
    shift_len: Option<usize>,
) -> String {
    let x = pattern(x, 1, DType::F32);
    let kernel = pattern(kernel, 2, DType::F32);
    let shift = shift_len.map(|len| pattern(&[len], 3, DType::F32));
    let epilogue = Epilogue {
        shift: shift.as_ref(),
        ..Epilogue::default()
    };
    let result = conv2d_inference(&x, &kernel, geometry, epilogue);
    result.unwrap_err().to_string()
}

#[test]
fn mismatched_channels_is_an_error() {
    let geometry = ConvGeometry::default();
    let message = error_message(&[1, 3, 4, 4], &[2, 4, 3, 3], geometry, None);
    assert!(message.contains("do not match"), "{message}");
}

#[test]
fn kernel_larger_than_padded_input_is_an_error() {
    let geometry = ConvGeometry {
        stride: 1,
        padding: (1, 0),
    };
    let message = error_message(&[1, 2, 2, 6], &[2, 2, 5, 1], geometry, None);
    assert!(message.contains("do not match"), "{message}");
}

#[test]
fn zero_stride_is_an_error() {
    let geometry = ConvGeometry {
        stride: 0,
        padding: (0, 0),
    };
    let message = error_message(&[1, 2, 4, 4], &[2, 2, 3, 3], geometry, None);
    assert!(message.contains("stride: 0"), "{message}");
}

#[test]
fn wrong_shift_length_is_an_error() {
    let geometry = ConvGeometry::default();
    let message = error_message(&[1, 2, 4, 4], &[3, 2, 1, 1], geometry, Some(2));
    assert!(message.contains("shift has shape [2]"), "{message}");
}
