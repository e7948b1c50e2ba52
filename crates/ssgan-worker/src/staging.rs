//! Copies of real batches from the host to the model's device.

use candle_core::{Device, Tensor};

use crate::error::Result;

/// Moves CPU batches to the training device. With the `cuda` feature a CUDA batch goes
/// through one page-locked host buffer, reused across steps, and an asynchronous copy on
/// candle's stream, so the host queues the step's kernels instead of waiting for the copy.
/// Other devices take `Tensor::to_device`.
#[derive(Default)]
pub struct BatchStaging {
    #[cfg(feature = "cuda")]
    pinned: Option<pinned::PinnedBatch>,
}

impl BatchStaging {
    /// Returns `batch` (a contiguous CPU tensor) on `device`, with the same shape and dtype.
    pub fn upload(&mut self, batch: &Tensor, device: &Device) -> Result<Tensor> {
        match device {
            #[cfg(feature = "cuda")]
            Device::Cuda(cuda) if batch.dtype() == candle_core::DType::F32 => {
                let pinned = self.pinned.get_or_insert_with(Default::default);
                pinned.upload(batch, cuda)
            }
            _ => Ok(batch.to_device(device)?),
        }
    }
}

#[cfg(feature = "cuda")]
mod pinned {
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::cuda_backend::cudarc::driver::PinnedHostSlice;
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, Storage, Tensor};

    use crate::error::Result;

    /// A page-locked f32 buffer of the last batch's size (the same every step).
    #[derive(Default)]
    pub struct PinnedBatch {
        buffer: Option<PinnedHostSlice<f32>>,
    }

    impl PinnedBatch {
        /// Copies `batch` into the pinned buffer and queues its copy to `device` on the
        /// device's stream. Writing the buffer first waits for the previous copy out of it,
        /// which finished long before in a training loop.
        pub fn upload(&mut self, batch: &Tensor, device: &CudaDevice) -> Result<Tensor> {
            let host = batch.flatten_all()?.to_vec1::<f32>()?;
            let buffer = self.buffer_of(device, host.len())?;
            buffer.as_mut_slice().map_err(wrap)?.copy_from_slice(&host);
            let stream = device.cuda_stream();
            // SAFETY: the copy below writes every element before any kernel reads them, as
            // both are queued on the same stream.
            let mut slice = unsafe { stream.alloc::<f32>(host.len()) }.map_err(wrap)?;
            stream.memcpy_htod(&*buffer, &mut slice).map_err(wrap)?;
            let storage = Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, device.clone()));
            let shape = batch.shape().clone();
            Ok(Tensor::from_storage(
                storage,
                shape,
                BackpropOp::none(),
                false,
            ))
        }

        fn buffer_of(
            &mut self,
            device: &CudaDevice,
            len: usize,
        ) -> Result<&mut PinnedHostSlice<f32>> {
            let fits = self.buffer.as_ref().is_some_and(|b| b.len() == len);
            if !fits {
                let context = device.cuda_stream().context().clone();
                // SAFETY: the buffer is written before it is read (`upload` fills it first).
                let buffer = unsafe { context.alloc_pinned::<f32>(len) }.map_err(wrap)?;
                self.buffer = Some(buffer);
            }
            Ok(self.buffer.as_mut().expect("the buffer was just allocated"))
        }
    }

    fn wrap(error: candle_core::cuda_backend::cudarc::driver::DriverError) -> candle_core::Error {
        candle_core::Error::wrap(error)
    }
}
