//! Adam's update of one parameter as three in-place passes: the first moment, the second
//! moment, then the parameter.
//!
//! Written with candle 0.11's tensor ops the update takes 13 ops, each of which allocates
//! and fills a new tensor of the parameter's size. These passes write into the existing
//! storage of the parameter and its moments.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor};

use super::matmul::Float;
use super::storage::{dtype_error, slice, slice_mut};

/// Coefficients of one Adam update, derived from the hyper-parameters and the step count t.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamCoefficients {
    pub beta1: f64,
    pub beta2: f64,
    /// lr / (1 - beta1^t).
    pub step_size: f64,
    /// 1 / (1 - beta2^t).
    pub v_correction: f64,
    pub epsilon: f64,
}

/// Returns true when [`adam_update_in_place`] accepts these tensors: all on the CPU, F32 or
/// F64 of one dtype, one shape, and the parameter and both moments contiguous.
pub fn supports_in_place_adam(param: &Tensor, m: &Tensor, v: &Tensor, grad: &Tensor) -> bool {
    let tensors = [param, m, v, grad];
    let dtype = param.dtype();
    let on_cpu = tensors.iter().all(|t| t.device().is_cpu());
    let same_dtype = tensors.iter().all(|t| t.dtype() == dtype);
    let same_shape = tensors.iter().all(|t| t.shape() == param.shape());
    let contiguous = [param, m, v].iter().all(|t| t.is_contiguous());
    let float = matches!(dtype, DType::F32 | DType::F64);
    on_cpu && same_dtype && same_shape && contiguous && float
}

/// Applies one Adam step to `param` and its moments `m` and `v` in place, with gradient
/// `grad`: m <- beta1 m + (1 - beta1) g, v <- beta2 v + (1 - beta2) g^2, then
/// param <- param - step_size * m / (sqrt(v_correction * v) + epsilon).
///
/// The tensors must pass [`supports_in_place_adam`]. Every tensor that shares storage with
/// `param`, `m` or `v` changes with it.
pub fn adam_update_in_place(
    param: &Tensor,
    m: &Tensor,
    v: &Tensor,
    grad: &Tensor,
    coefficients: AdamCoefficients,
) -> candle_core::Result<()> {
    let grad = grad.contiguous()?;
    let first = MomentUpdate {
        beta: coefficients.beta1,
        squared: false,
    };
    let second = MomentUpdate {
        beta: coefficients.beta2,
        squared: true,
    };
    m.inplace_op2(&grad, &first)?;
    v.inplace_op2(&grad, &second)?;
    param.inplace_op3(m, v, &ParamUpdate(coefficients))
}

/// moment <- beta * moment + (1 - beta) * g, or g^2 in place of g when `squared`.
struct MomentUpdate {
    beta: f64,
    squared: bool,
}

impl MomentUpdate {
    fn apply<T: Float>(&self, moment: &mut [T], grad: &[T], beta: T, rest: T) {
        for (m, &g) in moment.iter_mut().zip(grad) {
            let g = if self.squared { g * g } else { g };
            *m = *m * beta + g * rest;
        }
    }
}

impl InplaceOp2 for MomentUpdate {
    fn name(&self) -> &'static str {
        "adam-moment"
    }

    fn cpu_fwd(
        &self,
        moment: &mut CpuStorage,
        moment_layout: &Layout,
        grad: &CpuStorage,
        grad_layout: &Layout,
    ) -> candle_core::Result<()> {
        let (beta, rest) = (self.beta, 1.0 - self.beta);
        match (moment, grad) {
            (CpuStorage::F32(m), CpuStorage::F32(g)) => {
                let m = slice_mut(m, moment_layout)?;
                self.apply(m, slice(g, grad_layout)?, beta as f32, rest as f32);
            }
            (CpuStorage::F64(m), CpuStorage::F64(g)) => {
                let m = slice_mut(m, moment_layout)?;
                self.apply(m, slice(g, grad_layout)?, beta, rest);
            }
            (m, g) => return Err(dtype_error(self.name(), m.dtype(), g.dtype())),
        }
        Ok(())
    }
}

/// param <- param - step_size * m / (sqrt(v_correction * v) + epsilon).
struct ParamUpdate(AdamCoefficients);

/// [`AdamCoefficients`] converted to the parameter's dtype: step size, v correction, epsilon.
type Scalars<T> = (T, T, T);

fn update_param<T: Float>(param: &mut [T], m: &[T], v: &[T], (step, correction, eps): Scalars<T>) {
    for ((p, &m), &v) in param.iter_mut().zip(m).zip(v) {
        let denominator = (v * correction).sqrt() + eps;
        *p = *p - m / denominator * step;
    }
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "adam-param"
    }

    fn cpu_fwd(
        &self,
        param: &mut CpuStorage,
        param_layout: &Layout,
        m: &CpuStorage,
        m_layout: &Layout,
        v: &CpuStorage,
        v_layout: &Layout,
    ) -> candle_core::Result<()> {
        let c = self.0;
        match (param, m, v) {
            (CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v)) => {
                let scalars = (c.step_size as f32, c.v_correction as f32, c.epsilon as f32);
                let (m, v) = (slice(m, m_layout)?, slice(v, v_layout)?);
                update_param(slice_mut(p, param_layout)?, m, v, scalars);
            }
            (CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v)) => {
                let scalars = (c.step_size, c.v_correction, c.epsilon);
                let (m, v) = (slice(m, m_layout)?, slice(v, v_layout)?);
                update_param(slice_mut(p, param_layout)?, m, v, scalars);
            }
            (p, m, _) => return Err(dtype_error(self.name(), p.dtype(), m.dtype())),
        }
        Ok(())
    }
}
