//! The in-place Adam update against Adam written out with candle's tensor ops, in f64 and
//! f32, over several steps with changing gradients.

use candle_core::{DType, Device, Tensor, Var};
use ssgan_model::adam::{Adam, AdamConfig};
use ssgan_model::kernels::supports_in_place_adam;

const CONFIG: AdamConfig = AdamConfig {
    lr: 2e-4,
    beta1: 0.5,
    beta2: 0.9,
    epsilon: 1e-8,
};

const SHAPE: (usize, usize, usize) = (3, 5, 7);

fn random(seed: u64, dtype: DType) -> Tensor {
    let count = SHAPE.0 * SHAPE.1 * SHAPE.2;
    let values: Vec<f64> = (0..count)
        .map(|i| ((i as f64 + 1.0) * (seed as f64 + 0.37)).sin())
        .collect();
    Tensor::from_vec(values, SHAPE, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}

/// Runs one Adam update per gradient from `start` with candle's ops in f64 and returns the
/// parameter, first moment and second moment.
fn reference(start: &Tensor, grads: &[Tensor]) -> [Tensor; 3] {
    let AdamConfig {
        lr,
        beta1,
        beta2,
        epsilon,
    } = CONFIG;
    let mut param = start.to_dtype(DType::F64).unwrap();
    let mut m = param.zeros_like().unwrap();
    let mut v = param.zeros_like().unwrap();
    for (t, grad) in grads.iter().enumerate() {
        let t = t as i32 + 1;
        let grad = grad.to_dtype(DType::F64).unwrap();
        m = ((&m * beta1).unwrap() + (&grad * (1.0 - beta1)).unwrap()).unwrap();
        let squared = (grad.sqr().unwrap() * (1.0 - beta2)).unwrap();
        v = ((&v * beta2).unwrap() + squared).unwrap();
        let m_hat = (&m / (1.0 - beta1.powi(t))).unwrap();
        let v_hat = (&v / (1.0 - beta2.powi(t))).unwrap();
        let denom = (v_hat.sqrt().unwrap() + epsilon).unwrap();
        param = (param - (m_hat.div(&denom).unwrap() * lr).unwrap()).unwrap();
    }
    [param, m, v]
}

fn max_abs_difference(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let difference = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    difference.to_scalar::<f64>().unwrap()
}

fn check(dtype: DType, tolerance: f64) {
    let start = random(1, dtype);
    let grads: Vec<Tensor> = (2..6).map(|seed| random(seed, dtype)).collect();
    let var = Var::from_tensor(&start).unwrap();
    let mut adam = Adam::new(vec![("w".into(), var.clone())], CONFIG).unwrap();
    for grad in &grads {
        adam.step(&[Some(grad.clone())]).unwrap();
    }
    let [param, m, v] = reference(&start, &grads);
    let state = adam.state_to_safetensors().unwrap();
    let state = candle_core::safetensors::load_buffer(&state, &Device::Cpu).unwrap();
    let error = max_abs_difference(var.as_tensor(), &param);
    assert!(error < tolerance, "{dtype:?}: parameter error {error:e}");
    let error = max_abs_difference(&state["m.w"], &m);
    assert!(error < tolerance, "{dtype:?}: first moment error {error:e}");
    let error = max_abs_difference(&state["v.w"], &v);
    assert!(
        error < tolerance,
        "{dtype:?}: second moment error {error:e}"
    );
}

#[test]
fn in_place_adam_matches_candle_f64() {
    check(DType::F64, 1e-14);
}

#[test]
fn in_place_adam_matches_candle_f32() {
    check(DType::F32, 1e-6);
}

#[test]
fn in_place_support_checks_layouts() {
    let param = random(1, DType::F32);
    let m = param.zeros_like().unwrap();
    let transposed = Tensor::zeros((SHAPE.0, SHAPE.2, SHAPE.1), DType::F32, &Device::Cpu);
    let strided = transposed.unwrap().transpose(1, 2).unwrap();
    let wide = random(2, DType::F64);
    assert!(supports_in_place_adam(&param, &m, &m, &param));
    assert!(!supports_in_place_adam(&param, &strided, &m, &param));
    assert!(!supports_in_place_adam(&param, &m, &m, &wide));
}
