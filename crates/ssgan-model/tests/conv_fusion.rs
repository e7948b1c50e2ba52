//! The fused convolution op (ReLU on the input, 2x2 average pooling of the output, bias or
//! residual addend) against the same function built from candle's own ops: output and the
//! gradients of input, kernel and addend, in f64 and f32.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use ssgan_model::config::Upsample;
use ssgan_model::kernels::{Addend, ConvKind, Fusion, conv2d_fused};
use ssgan_model::resample::upsample;

use common::max_relative_error;

/// (batch, c_in, c_out, height, width, kernel); every convolution output is of even size.
const SHAPES: [(usize, usize, usize, usize, usize, usize); 4] = [
    (2, 3, 4, 4, 6, 3),
    (3, 2, 5, 6, 4, 3),
    (1, 4, 3, 2, 2, 1),
    (2, 3, 2, 4, 8, 5),
];

const FUSIONS: [Fusion; 4] = [
    Fusion {
        relu_input: false,
        pool_output: false,
    },
    Fusion {
        relu_input: true,
        pool_output: false,
    },
    Fusion {
        relu_input: false,
        pool_output: true,
    },
    Fusion {
        relu_input: true,
        pool_output: true,
    },
];

fn random(shape: &[usize], seed: u64, dtype: DType) -> Var {
    let count: usize = shape.iter().product();
    // A fixed pseudo-random pattern in (-1, 1) with no exact zeros, so the ReLU mask is the
    // same for both implementations.
    let values: Vec<f64> = (0..count)
        .map(|i| (((i as u64 + 1) * (seed * 2 + 7919)) % 1009) as f64 / 504.5 - 1.0)
        .collect();
    let t = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
    Var::from_tensor(&t.to_dtype(dtype).unwrap()).unwrap()
}

/// The fused function from candle's relu, conv2d, avg_pool2d and add.
fn reference(kind: ConvKind, x: &Tensor, w: &Tensor, addend: Addend, fusion: Fusion) -> Tensor {
    let x = if fusion.relu_input {
        x.relu().unwrap()
    } else {
        x.clone()
    };
    let x = match kind {
        ConvKind::Same => x,
        ConvKind::ZeroUpsampled => upsample(&x, Upsample::Zeros).unwrap(),
    };
    let k = w.dim(3).unwrap();
    let y = x.conv2d(w, k / 2, 1, 1, 1).unwrap();
    let y = if fusion.pool_output {
        y.avg_pool2d(2).unwrap()
    } else {
        y
    };
    match addend {
        Addend::None => y,
        Addend::Bias(b) => y.broadcast_add(&b.reshape((1, (), 1, 1)).unwrap()).unwrap(),
        Addend::Residual(r) => (y + r).unwrap(),
    }
}

fn flat(t: &Tensor) -> Vec<f64> {
    let t = t.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    t.to_vec1::<f64>().unwrap()
}

/// Output and gradients of x, kernel and addend of sum(y * probe).
fn outputs(y: &Tensor, inputs: [&Var; 3]) -> [Vec<f64>; 4] {
    let probe = random(y.dims(), 5, y.dtype());
    let loss = (y * probe.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let grad = |v: &Var| flat(grads.get(v.as_tensor()).expect("a gradient"));
    [flat(y), grad(inputs[0]), grad(inputs[1]), grad(inputs[2])]
}

fn compare(kind: ConvKind, residual: bool, dtype: DType, tolerance: f64) {
    for shape in SHAPES {
        for fusion in FUSIONS {
            let (n, c, o, h, w, k) = shape;
            let x = random(&[n, c, h, w], 1, dtype);
            let kernel = random(&[o, c, k, k], 2, dtype);
            let scale = if kind == ConvKind::ZeroUpsampled {
                2
            } else {
                1
            };
            let pool = if fusion.pool_output { 2 } else { 1 };
            let (ho, wo) = (h * scale / pool, w * scale / pool);
            let addend = match residual {
                true => random(&[n, o, ho, wo], 3, dtype),
                false => random(&[o], 3, dtype),
            };
            let addend_of = |t| match residual {
                true => Addend::Residual(t),
                false => Addend::Bias(t),
            };
            let (x_t, w_t) = (x.as_tensor(), kernel.as_tensor());
            let ours = conv2d_fused(kind, x_t, w_t, addend_of(addend.as_tensor()), fusion);
            let ours = outputs(&ours.unwrap(), [&x, &kernel, &addend]);
            let expected = reference(kind, x_t, w_t, addend_of(addend.as_tensor()), fusion);
            let expected = outputs(&expected, [&x, &kernel, &addend]);
            let names = [
                "output",
                "input gradient",
                "kernel gradient",
                "addend gradient",
            ];
            for ((name, a), e) in names.iter().zip(&ours).zip(&expected) {
                let error = max_relative_error(a, e);
                assert!(
                    error < tolerance,
                    "{kind:?} {shape:?} {fusion:?} residual {residual}: {name} error {error:e}"
                );
            }
        }
    }
}

#[test]
fn fused_same_bias_f64() {
    compare(ConvKind::Same, false, DType::F64, 1e-12);
}

#[test]
fn fused_same_residual_f64() {
    compare(ConvKind::Same, true, DType::F64, 1e-12);
}

#[test]
fn fused_upsampled_bias_f64() {
    compare(ConvKind::ZeroUpsampled, false, DType::F64, 1e-12);
}

#[test]
fn fused_upsampled_residual_f64() {
    compare(ConvKind::ZeroUpsampled, true, DType::F64, 1e-12);
}

#[test]
fn fused_same_residual_f32() {
    // Sums of up to 4 * 5 * 5 * 8 * 8 products in f32 in another order.
    compare(ConvKind::Same, true, DType::F32, 1e-5);
}

#[test]
fn fused_upsampled_bias_f32() {
    compare(ConvKind::ZeroUpsampled, false, DType::F32, 1e-5);
}

#[test]
fn pooling_odd_output_is_an_error() {
    let x = random(&[1, 2, 3, 4], 1, DType::F32);
    let w = random(&[2, 2, 3, 3], 2, DType::F32);
    let fusion = Fusion {
        relu_input: false,
        pool_output: true,
    };
    let err = conv2d_fused(
        ConvKind::Same,
        x.as_tensor(),
        w.as_tensor(),
        Addend::None,
        fusion,
    )
    .unwrap_err();
    assert!(err.to_string().contains("odd size 3x4"), "{err}");
}

#[test]
fn residual_of_wrong_shape_is_an_error() {
    let x = random(&[1, 2, 4, 4], 1, DType::F32);
    let w = random(&[3, 2, 3, 3], 2, DType::F32);
    let residual = random(&[1, 3, 4, 4], 3, DType::F32);
    let fusion = Fusion {
        relu_input: false,
        pool_output: true,
    };
    let addend = Addend::Residual(residual.as_tensor());
    let err =
        conv2d_fused(ConvKind::Same, x.as_tensor(), w.as_tensor(), addend, fusion).unwrap_err();
    assert!(
        err.to_string().contains("does not match the output"),
        "{err}"
    );
}
