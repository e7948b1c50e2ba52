//! Collectives on candle tensors, including an all-reduce that autograd can differentiate.
//!
//! The multi-rank path runs over a two-process `TcpRing` in ssgan-model's synchronized
//! batch-norm tests (`tests/sync_batch_norm.rs`), which compare it with one rank on the whole
//! batch. Only F32 inputs are tested with several ranks.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, InplaceOp1, Layout, Shape, Tensor};

use crate::{CollectiveError, Communicator};

/// Sums `x` over all ranks, as an op whose gradient is again summed over all ranks.
///
/// `x` may have any shape. On the CPU its dtype is F32 or F64. On a CUDA device (feature
/// `cuda`) it is F32, F64 or BF16, and the communicator's [`Communicator::all_reduce_sum_cuda`]
/// sums it, on the device for NCCL. The result has the same shape and dtype. Synchronized batch norm uses this for its per-channel sums, so that the
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

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let range = crate::cuda::contiguous_range("all_reduce_sum_tensor", layout)
            .map_err(candle_core::Error::wrap)?;
        let mut copy = crate::cuda::copy_range(storage, range).map_err(candle_core::Error::wrap)?;
        let compact = Layout::contiguous(layout.shape());
        self.comm
            .all_reduce_sum_cuda(&mut copy, &compact)
            .map_err(candle_core::Error::wrap)?;
        Ok((copy, layout.shape().clone()))
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

/// Replaces the values of the contiguous tensor `x` with their sum over all ranks, in place
/// in its storage. Not differentiable.
///
/// On the CPU `x` is F32. On a CUDA device (feature `cuda`) it is F32 or BF16, or also F64
/// with NCCL, and NCCL sums it on the device. `x` may be a narrowed view: only the elements
/// it covers change, in every tensor that shares the storage. Every rank must call this
/// with the same element count and dtype. A missing peer makes the call fail with the
/// communicator's timeout error, which for NCCL may come from a later call instead.
pub fn all_reduce_sum_in_place(comm: &dyn Communicator, x: &Tensor) -> Result<(), CollectiveError> {
    if comm.world_size() == 1 {
        return Ok(());
    }
    let op = AllReduceInPlace { comm };
    x.inplace_op1(&op)
        .map_err(|source| CollectiveError::Tensor {
            operation: "all_reduce_sum_in_place",
            source,
        })
}

struct AllReduceInPlace<'a> {
    comm: &'a dyn Communicator,
}

impl InplaceOp1 for AllReduceInPlace<'_> {
    fn name(&self) -> &'static str {
        "all-reduce-sum-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(candle_core::Error::msg(
                "all-reduce-sum-in-place needs a contiguous tensor",
            ));
        };
        match storage {
            CpuStorage::F32(values) => self
                .comm
                .all_reduce_sum(&mut values[start..end])
                .map_err(candle_core::Error::wrap),
            other => Err(candle_core::Error::msg(format!(
                "all-reduce-sum-in-place supports F32 on the CPU, got {:?}",
                other.dtype()
            ))),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &mut candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<()> {
        self.comm
            .all_reduce_sum_cuda(storage, layout)
            .map_err(candle_core::Error::wrap)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::twins::Twins;

    #[test]
    fn in_place_sum_changes_only_the_view() {
        let whole = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0], &Device::Cpu).unwrap();
        let view = whole.narrow(0, 1, 2).unwrap();

        all_reduce_sum_in_place(&Twins, &view).unwrap();

        assert_eq!(whole.to_vec1::<f32>().unwrap(), [1.0, 4.0, 6.0, 4.0]);
        assert_eq!(view.to_vec1::<f32>().unwrap(), [4.0, 6.0]);
    }

    #[test]
    fn in_place_sum_rejects_f64_on_cpu() {
        let x = Tensor::new(&[1.0f64], &Device::Cpu).unwrap();
        let error = all_reduce_sum_in_place(&Twins, &x).unwrap_err();
        assert!(error.to_string().contains("F32"), "{error}");
    }
}
