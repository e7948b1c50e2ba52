//! Collectives on candle tensors, including an all-reduce that autograd can differentiate.
//!
//! The multi-rank path runs over a two-process `TcpRing` in ssgan-model's synchronized
//! batch-norm tests (`tests/sync_batch_norm.rs`), which compare it with one rank on the whole
//! batch. Only F32 inputs are tested with several ranks.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::{CollectiveError, Communicator};

/// Sums `x` over all ranks, as an op whose gradient is again summed over all ranks.
///
/// `x` may have any shape and dtype F32 or F64 and lives on the CPU. The result has the same
/// shape and dtype. Synchronized batch norm uses this for its per-channel sums, so that the
/// gradient of every rank's loss reaches the inputs of every other rank. With one rank the
/// input is returned unchanged (no copy, exact in F64). With several ranks F64 values travel as
/// F32, which loses precision.
///
/// Every rank must call this for the same tensor shapes in the same order, in the forward pass
/// and again in the backward pass. A missing peer makes the call fail with the communicator's
/// timeout error.
pub fn all_reduce_sum_tensor(
    comm: &Arc<dyn Communicator>,
    x: &Tensor,
) -> Result<Tensor, CollectiveError> {
    if comm.world_size() == 1 {
        return Ok(x.clone());
    }
    let op = AllReduceSum { comm: comm.clone() };
    x.contiguous()
        .and_then(|x| x.apply_op1(op))
        .map_err(|source| CollectiveError::Tensor {
            operation: "all_reduce_sum_tensor",
            source,
        })
}

struct AllReduceSum {
    comm: Arc<dyn Communicator>,
}

impl AllReduceSum {
    fn reduce(&self, mut values: Vec<f32>) -> candle_core::Result<Vec<f32>> {
        self.comm
            .all_reduce_sum(&mut values)
            .map_err(candle_core::Error::wrap)?;
        Ok(values)
    }
}

impl CustomOp1 for AllReduceSum {
    fn name(&self) -> &'static str {
        "all-reduce-sum"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::msg(
                "all-reduce-sum needs a contiguous input",
            ));
        };
        let reduced = match storage {
            CpuStorage::F32(values) => CpuStorage::F32(self.reduce(values[start..end].to_vec())?),
            CpuStorage::F64(values) => {
                let narrow = values[start..end].iter().map(|&v| v as f32).collect();
                let sums = self.reduce(narrow)?;
                CpuStorage::F64(sums.into_iter().map(f64::from).collect())
            }
            other => {
                let message = format!(
                    "all-reduce-sum supports F32 and F64, got {:?}",
                    other.dtype()
                );
                return Err(candle_core::Error::msg(message));
            }
        };
        Ok((reduced, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        let op = AllReduceSum {
            comm: self.comm.clone(),
        };
        Ok(Some(grad_res.contiguous()?.apply_op1(op)?))
    }
}
