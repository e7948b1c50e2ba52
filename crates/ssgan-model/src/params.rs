//! Named parameters and state buffers of a network, their initialisation and (de)serialisation.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, StandardNormal};

use crate::config::Init;
use crate::error::{ModelError, Result};

/// Whether a tensor is trained by the optimizer or is state updated in the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Trained by the optimizer.
    Param,
    /// Updated in the forward pass: spectral-norm vectors, batch-norm running statistics.
    Buffer,
}

/// The tensors of one network, in creation order, each with a unique dotted name.
#[derive(Default)]
pub struct ParamStore {
    entries: Vec<(String, Kind, Var)>,
}

impl ParamStore {
    /// Trainable parameters in creation order.
    pub fn params(&self) -> Vec<(&str, &Var)> {
        self.of_kind(Kind::Param)
    }

    /// State buffers in creation order.
    pub fn buffers(&self) -> Vec<(&str, &Var)> {
        self.of_kind(Kind::Buffer)
    }

    fn of_kind(&self, kind: Kind) -> Vec<(&str, &Var)> {
        let matching = self.entries.iter().filter(|(_, k, _)| *k == kind);
        matching
            .map(|(name, _, var)| (name.as_str(), var))
            .collect()
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|(_, v)| v.elem_count()).sum()
    }

    fn insert(&mut self, name: String, kind: Kind, var: Var) -> Var {
        debug_assert!(
            self.entries.iter().all(|(n, _, _)| *n != name),
            "duplicate {name}"
        );
        self.entries.push((name, kind, var.clone()));
        var
    }

    /// Returns every tensor, parameters and buffers, by name.
    pub fn tensors(&self) -> HashMap<String, Tensor> {
        let all = self.entries.iter();
        all.map(|(name, _, var)| (name.clone(), var.as_tensor().clone()))
            .collect()
    }

    /// Serialises every tensor to safetensors bytes.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let tensors = self.tensors();
        safetensors::serialize(&tensors, None).map_err(|e| ModelError::State {
            what: "network tensors".into(),
            reason: e.to_string(),
        })
    }

    /// Overwrites every tensor with the one of the same name in `bytes`.
    ///
    /// Fails, changing nothing, when a name is missing or extra or a shape or dtype differs.
    pub fn load_safetensors(&self, bytes: &[u8], what: &str) -> Result<()> {
        let device = self.device();
        let loaded = candle_core::safetensors::load_buffer(bytes, &device)?;
        self.check_names(&loaded, what)?;
        let mut updates = Vec::with_capacity(self.entries.len());
        for (name, _, var) in &self.entries {
            updates.push((var, checked_tensor(&loaded[name], var, name, what)?));
        }
        for (var, value) in updates {
            var.set(&value)?;
        }
        Ok(())
    }

    fn check_names(&self, loaded: &HashMap<String, Tensor>, what: &str) -> Result<()> {
        let missing = self
            .entries
            .iter()
            .find(|(n, _, _)| !loaded.contains_key(n));
        if let Some((name, _, _)) = missing {
            return Err(state_error(what, format!("tensor {name} is missing")));
        }
        let extra = loaded
            .keys()
            .find(|n| self.entries.iter().all(|(m, _, _)| m != *n));
        match extra {
            Some(name) => Err(state_error(what, format!("unexpected tensor {name}"))),
            None => Ok(()),
        }
    }

    fn device(&self) -> Device {
        let first = self.entries.first();
        first.map_or(Device::Cpu, |(_, _, v)| v.device().clone())
    }
}

fn state_error(what: &str, reason: String) -> ModelError {
    ModelError::State {
        what: what.to_string(),
        reason,
    }
}

fn checked_tensor(loaded: &Tensor, var: &Var, name: &str, what: &str) -> Result<Tensor> {
    if loaded.shape() != var.shape() {
        let reason = format!(
            "{name} has shape {:?}, the model expects {:?}",
            loaded.shape(),
            var.shape()
        );
        return Err(state_error(what, reason));
    }
    if loaded.dtype() != var.dtype() {
        let reason = format!(
            "{name} has dtype {:?}, the model expects {:?}",
            loaded.dtype(),
            var.dtype()
        );
        return Err(state_error(what, reason));
    }
    Ok(loaded.clone())
}

/// Creates the tensors of one network: names them, draws their initial values, records them.
pub struct Builder<'a> {
    pub store: &'a mut ParamStore,
    pub rng: &'a mut ChaCha8Rng,
    pub device: Device,
    pub dtype: DType,
    pub init: Init,
    pub init_std: f64,
}

impl Builder<'_> {
    /// Creates a kernel of `shape`, whose first dimension is the outputs and whose other
    /// dimensions are the inputs (candle's [out, in] and [out, in, kh, kw] layouts).
    pub fn kernel(&mut self, name: String, shape: &[usize]) -> Result<Var> {
        let fan_out = shape[0];
        let fan_in: usize = shape[1..].iter().product();
        let values = match self.init {
            Init::Normal => self.normal_values(fan_out * fan_in, self.init_std),
            Init::Orthogonal => orthogonal_values(self.rng, fan_in, fan_out),
        };
        self.var(name, Kind::Param, values, shape)
    }

    /// Creates a parameter filled with `value`.
    pub fn constant(&mut self, name: String, shape: &[usize], value: f64) -> Result<Var> {
        let count = shape.iter().product();
        self.var(name, Kind::Param, vec![value; count], shape)
    }

    /// Creates a buffer filled with `value`.
    pub fn buffer(&mut self, name: String, shape: &[usize], value: f64) -> Result<Var> {
        let count = shape.iter().product();
        self.var(name, Kind::Buffer, vec![value; count], shape)
    }

    /// Creates a buffer drawn from N(0, 1).
    pub fn normal_buffer(&mut self, name: String, len: usize) -> Result<Var> {
        let values = self.normal_values(len, 1.0);
        self.var(name, Kind::Buffer, values, &[len])
    }

    fn normal_values(&mut self, count: usize, std: f64) -> Vec<f64> {
        let normal = Normal::new(0.0, std).expect("init_std is validated positive");
        (0..count).map(|_| normal.sample(self.rng)).collect()
    }

    fn var(&mut self, name: String, kind: Kind, values: Vec<f64>, shape: &[usize]) -> Result<Var> {
        let tensor = Tensor::from_vec(values, shape, &self.device)?.to_dtype(self.dtype)?;
        let var = Var::from_tensor(&tensor)?;
        Ok(self.store.insert(name, kind, var))
    }
}

/// Draws a kernel with orthonormal columns (or rows, when there are fewer inputs than
/// outputs), as TensorFlow's orthogonal initialiser with gain 1: the Q of a Gaussian matrix,
/// with signs fixed by R's diagonal. Returned in [out, in] order.
pub fn orthogonal_values(rng: &mut ChaCha8Rng, fan_in: usize, fan_out: usize) -> Vec<f64> {
    let (rows, cols) = (fan_in.max(fan_out), fan_in.min(fan_out));
    let mut columns: Vec<Vec<f64>> = (0..cols)
        .map(|_| (0..rows).map(|_| rng.sample(StandardNormal)).collect())
        .collect();
    gram_schmidt(&mut columns);
    let mut out = vec![0.0; fan_in * fan_out];
    for (c, column) in columns.iter().enumerate() {
        for (r, value) in column.iter().enumerate() {
            // Columns span the larger dimension; place them so that [out, in] is orthogonal.
            let (o, i) = if fan_in >= fan_out { (c, r) } else { (r, c) };
            out[o * fan_in + i] = *value;
        }
    }
    out
}

/// Modified Gram-Schmidt; each column ends with unit norm and R's diagonal is positive.
fn gram_schmidt(columns: &mut [Vec<f64>]) {
    for j in 0..columns.len() {
        let (done, rest) = columns.split_at_mut(j);
        let column = &mut rest[0];
        for previous in done.iter() {
            let dot: f64 = previous.iter().zip(column.iter()).map(|(a, b)| a * b).sum();
            column
                .iter_mut()
                .zip(previous)
                .for_each(|(c, p)| *c -= dot * p);
        }
        let norm = column.iter().map(|v| v * v).sum::<f64>().sqrt();
        column.iter_mut().for_each(|v| *v /= norm);
    }
}
