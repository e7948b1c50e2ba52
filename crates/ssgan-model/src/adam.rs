//! Adam whose moments and step count can be saved and restored.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::error::{ModelError, Result};
use crate::kernels::{AdamCoefficients, adam_update_in_place, supports_in_place_adam};

/// Adam hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
}

struct Slot {
    name: String,
    param: Var,
    m: Tensor,
    v: Tensor,
}

impl Slot {
    /// Applies one update with `grad`, in place on the CPU and with candle's ops elsewhere.
    fn update(&mut self, grad: &Tensor, c: AdamCoefficients) -> Result<()> {
        let param = self.param.as_tensor();
        if supports_in_place_adam(param, &self.m, &self.v, grad) {
            return Ok(adam_update_in_place(param, &self.m, &self.v, grad, c)?);
        }
        self.m = ((&self.m * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
        self.v = ((&self.v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
        let denom = ((&self.v * c.v_correction)?.sqrt()? + c.epsilon)?;
        let update = (self.m.div(&denom)? * c.step_size)?;
        self.param.set(&param.sub(&update)?)?;
        Ok(())
    }
}

/// Adam (Kingma and Ba, 2015) with bias correction and no weight decay:
/// theta <- theta - lr * m_hat / (sqrt(v_hat) + epsilon).
pub struct Adam {
    config: AdamConfig,
    step: u64,
    slots: Vec<Slot>,
}

const STEP_KEY: &str = "adam.step";

impl Adam {
    /// Creates zero moments for each named parameter.
    pub fn new(params: Vec<(String, Var)>, config: AdamConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, param)| {
                let m = param.zeros_like()?;
                let v = param.zeros_like()?;
                Ok(Slot { name, param, m, v })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            config,
            step: 0,
            slots,
        })
    }

    /// Returns the parameters this optimizer updates, in order.
    pub fn params(&self) -> impl Iterator<Item = &Var> {
        self.slots.iter().map(|slot| &slot.param)
    }

    /// Number of updates applied so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Applies one update. `grads[i]` is the gradient of the i-th parameter; a parameter
    /// whose gradient is None is left unchanged, moments included.
    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        if grads.len() != self.slots.len() {
            let message = format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.slots.len()
            );
            return Err(ModelError::Input(message));
        }
        self.step += 1;
        let AdamConfig {
            lr,
            beta1,
            beta2,
            epsilon,
        } = self.config;
        let t = self.step as i32;
        let coefficients = AdamCoefficients {
            beta1,
            beta2,
            step_size: lr / (1.0 - beta1.powi(t)),
            v_correction: 1.0 / (1.0 - beta2.powi(t)),
            epsilon,
        };
        for (slot, grad) in self.slots.iter_mut().zip(grads) {
            let Some(grad) = grad else { continue };
            slot.update(grad, coefficients)?;
        }
        Ok(())
    }

    /// Serialises the step count and both moments of every parameter to safetensors bytes.
    pub fn state_to_safetensors(&self) -> Result<Vec<u8>> {
        let device = self.slots.first().map(|s| s.param.device().clone());
        let device = device.unwrap_or(candle_core::Device::Cpu);
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        tensors.insert(STEP_KEY.into(), Tensor::new(&[self.step as f64], &device)?);
        for slot in &self.slots {
            tensors.insert(format!("m.{}", slot.name), slot.m.clone());
            tensors.insert(format!("v.{}", slot.name), slot.v.clone());
        }
        safetensors::serialize(&tensors, None).map_err(|e| ModelError::State {
            what: "optimizer state".into(),
            reason: e.to_string(),
        })
    }

    /// Restores the state written by [`Adam::state_to_safetensors`]; changes nothing on error.
    pub fn load_state(&mut self, bytes: &[u8], what: &str) -> Result<()> {
        let device = self.slots.first().map(|s| s.param.device().clone());
        let loaded = candle_core::safetensors::load_buffer(
            bytes,
            &device.unwrap_or(candle_core::Device::Cpu),
        )?;
        let expected = 1 + 2 * self.slots.len();
        if loaded.len() != expected {
            let reason = format!("{} tensors, expected {expected}", loaded.len());
            return Err(ModelError::State {
                what: what.into(),
                reason,
            });
        }
        let step = lookup(&loaded, STEP_KEY, what)?.to_vec1::<f64>()?[0] as u64;
        let mut moments = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let m = checked_moment(&loaded, &format!("m.{}", slot.name), &slot.param, what)?;
            let v = checked_moment(&loaded, &format!("v.{}", slot.name), &slot.param, what)?;
            moments.push((m, v));
        }
        for (slot, (m, v)) in self.slots.iter_mut().zip(moments) {
            (slot.m, slot.v) = (m, v);
        }
        self.step = step;
        Ok(())
    }
}

fn lookup<'a>(tensors: &'a HashMap<String, Tensor>, key: &str, what: &str) -> Result<&'a Tensor> {
    tensors.get(key).ok_or_else(|| ModelError::State {
        what: what.into(),
        reason: format!("tensor {key} is missing"),
    })
}

fn checked_moment(
    tensors: &HashMap<String, Tensor>,
    key: &str,
    param: &Var,
    what: &str,
) -> Result<Tensor> {
    let moment = lookup(tensors, key, what)?;
    if moment.shape() != param.shape() || moment.dtype() != param.dtype() {
        let reason = format!(
            "{key} is {:?} {:?}, the parameter is {:?} {:?}",
            moment.dtype(),
            moment.shape(),
            param.dtype(),
            param.shape()
        );
        return Err(ModelError::State {
            what: what.into(),
            reason,
        });
    }
    Ok(moment.clone())
}
