//! Settings of a forward pass: training or evaluation, state updates, gradient recording.

use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use ssgan_collective::Communicator;

/// Settings of one forward pass, shared by every layer of a network.
#[derive(Clone)]
pub struct Ctx {
    /// Batch-norm layers use batch statistics (true) or running averages (false).
    pub train: bool,
    /// Layers update their state: spectral-norm vectors and batch-norm running averages.
    pub update_state: bool,
    /// Parameters take part in autograd. When false the pass records no graph for them, which
    /// saves the memory and time of a network whose weights this step does not train.
    pub track: bool,
    /// Group over which batch-norm statistics are summed.
    pub comm: Arc<dyn Communicator>,
    /// Dtype of the convolutions and matmuls under mixed precision; `None` computes in the
    /// input's dtype.
    pub compute_dtype: Option<DType>,
}

impl Ctx {
    /// Returns the tensor of `var` for this pass: the variable itself, or a detached copy.
    pub fn param(&self, var: &Var) -> Tensor {
        if self.track {
            var.as_tensor().clone()
        } else {
            var.as_detached_tensor()
        }
    }

    /// Training pass that records gradients and updates state.
    pub fn training(comm: Arc<dyn Communicator>) -> Self {
        Self {
            train: true,
            update_state: true,
            track: true,
            comm,
            compute_dtype: None,
        }
    }

    /// Evaluation pass: running statistics, no state updates except spectral norm's, no graph.
    pub fn eval(comm: Arc<dyn Communicator>) -> Self {
        Self {
            train: false,
            update_state: false,
            track: false,
            comm,
            compute_dtype: None,
        }
    }

    /// Casts `x` to the compute dtype, if mixed precision is on.
    pub fn to_compute(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self.compute_dtype {
            Some(dtype) => x.to_dtype(dtype),
            None => Ok(x.clone()),
        }
    }

    /// Returns the same settings with parameter tracking set to `track`.
    pub fn with_track(&self, track: bool) -> Self {
        Self {
            track,
            ..self.clone()
        }
    }
}
