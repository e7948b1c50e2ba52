//! Collectives on the CUDA storage of candle tensors for communicators that work on host
//! memory, such as [`crate::TcpRing`]: the values go through the host.

use std::ops::Range;

use candle_core::backend::BackendStorage;
use candle_core::cuda::CudaStorageSlice;
use candle_core::{CpuStorage, CudaStorage, Layout};

use crate::{CollectiveError, Communicator};

/// Returns the storage offsets of a contiguous layout.
pub(crate) fn contiguous_range(
    operation: &'static str,
    layout: &Layout,
) -> Result<Range<usize>, CollectiveError> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(start..end),
        None => Err(CollectiveError::InvalidCall {
            operation,
            reason: "the tensor must be contiguous".to_owned(),
        }),
    }
}

/// Sums the F32 or BF16 values of `storage` in `layout` over all ranks by copying them to
/// the host, calling [`Communicator::all_reduce_sum`] and copying the sums back. BF16
/// values are summed in F32. Blocks until the copy back has finished.
pub(crate) fn all_reduce_via_host<C: Communicator + ?Sized>(
    comm: &C,
    storage: &mut CudaStorage,
    layout: &Layout,
) -> Result<(), CollectiveError> {
    const OPERATION: &str = "all_reduce_sum_cuda";
    let range = contiguous_range(OPERATION, layout)?;
    let tensor_error = |source| CollectiveError::Tensor {
        operation: OPERATION,
        source,
    };
    let mut values: Vec<f32> = match storage.to_cpu_storage().map_err(tensor_error)? {
        CpuStorage::F32(values) => values[range.clone()].to_vec(),
        CpuStorage::BF16(values) => values[range.clone()].iter().map(|v| v.to_f32()).collect(),
        other => {
            return Err(CollectiveError::InvalidCall {
                operation: OPERATION,
                reason: format!("supports F32 and BF16 tensors, got {:?}", other.dtype()),
            });
        }
    };
    comm.all_reduce_sum(&mut values)?;
    let stream = storage.device.cuda_stream();
    let copied = match &mut storage.slice {
        CudaStorageSlice::F32(slice) => stream.memcpy_htod(&values, &mut slice.slice_mut(range)),
        CudaStorageSlice::BF16(slice) => {
            let narrow: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
            stream.memcpy_htod(&narrow, &mut slice.slice_mut(range))
        }
        _ => unreachable!("the dtype was checked above"),
    };
    copied
        .and_then(|()| stream.synchronize())
        .map_err(|error| CollectiveError::Library {
            operation: OPERATION,
            reason: format!("CUDA copy to the device failed: {error:?}"),
        })
}

/// Copies the F32, F64 or BF16 values of `storage` in `range` into a new storage.
pub(crate) fn copy_range(
    storage: &CudaStorage,
    range: Range<usize>,
) -> Result<CudaStorage, CollectiveError> {
    const OPERATION: &str = "all_reduce_sum_tensor";
    let stream = storage.device.cuda_stream();
    let copied = match &storage.slice {
        CudaStorageSlice::F32(values) => stream
            .clone_dtod(&values.slice(range))
            .map(CudaStorageSlice::F32),
        CudaStorageSlice::F64(values) => stream
            .clone_dtod(&values.slice(range))
            .map(CudaStorageSlice::F64),
        CudaStorageSlice::BF16(values) => stream
            .clone_dtod(&values.slice(range))
            .map(CudaStorageSlice::BF16),
        _ => {
            return Err(CollectiveError::InvalidCall {
                operation: OPERATION,
                reason: format!("supports F32, F64 and BF16, got {:?}", storage.dtype()),
            });
        }
    };
    let slice = copied.map_err(|error| CollectiveError::Library {
        operation: OPERATION,
        reason: format!("CUDA copy failed: {error:?}"),
    })?;
    Ok(CudaStorage {
        slice,
        device: storage.device.clone(),
    })
}
