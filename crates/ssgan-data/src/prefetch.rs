//! Builds the next batch on a background thread while the training step runs.

use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{DType, Device, Tensor};
use tracing::trace;

use crate::DataError;
use crate::images::TrainImages;

/// A batch being built, and the indices it is for.
struct Pending {
    indices: Vec<usize>,
    build: JoinHandle<Result<Tensor, DataError>>,
}

/// Builds each batch as an F32 tensor on the CPU, one batch ahead: [`Prefetcher::take`]
/// returns the batch of the indices it is given and starts the one of the indices that
/// come next. Image decoding for an image folder then overlaps the step that uses the
/// batch before it.
pub struct Prefetcher {
    images: Arc<dyn TrainImages>,
    pending: Option<Pending>,
}

impl Prefetcher {
    pub fn new(images: Arc<dyn TrainImages>) -> Self {
        Self {
            images,
            pending: None,
        }
    }

    pub fn images(&self) -> &dyn TrainImages {
        self.images.as_ref()
    }

    /// Returns the batch [indices.len(), 3, S, S] of `indices` with values in [0, 1], then
    /// starts building the batch of `upcoming` on a new thread.
    ///
    /// The batch comes from the thread that the previous call started when that call's
    /// `upcoming` equals `indices`. Otherwise it is built here, and the prefetched one is
    /// discarded. Errors of either way are returned here.
    pub fn take(&mut self, indices: &[usize], upcoming: Vec<usize>) -> Result<Tensor, DataError> {
        let batch = match self.pending.take() {
            Some(pending) if pending.indices == indices => join(pending.build)?,
            _ => {
                trace!(
                    images = indices.len(),
                    "no prefetched batch for these indices"
                );
                self.images.batch(indices, &Device::Cpu, DType::F32)?
            }
        };
        self.start(upcoming);
        Ok(batch)
    }

    fn start(&mut self, indices: Vec<usize>) {
        let images = self.images.clone();
        let requested = indices.clone();
        let build = std::thread::spawn(move || images.batch(&requested, &Device::Cpu, DType::F32));
        self.pending = Some(Pending { indices, build });
    }
}

fn join(build: JoinHandle<Result<Tensor, DataError>>) -> Result<Tensor, DataError> {
    match build.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoiseImages;

    fn direct(images: &NoiseImages, indices: &[usize]) -> Vec<f32> {
        let batch = images.batch(indices, &Device::Cpu, DType::F32).unwrap();
        batch.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn values(batch: Tensor) -> Vec<f32> {
        batch.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn prefetched_batches_equal_direct_ones() {
        let images = NoiseImages::new(10, 4, 7);
        let mut prefetcher = Prefetcher::new(Arc::new(NoiseImages::new(10, 4, 7)));
        let first = prefetcher.take(&[1, 2], vec![3, 4]).unwrap();
        assert_eq!(values(first), direct(&images, &[1, 2]));
        let prefetched = prefetcher.take(&[3, 4], vec![5]).unwrap();
        assert_eq!(values(prefetched), direct(&images, &[3, 4]));
        let other = prefetcher.take(&[9, 0], vec![1]).unwrap();
        assert_eq!(values(other), direct(&images, &[9, 0]));
    }

    #[test]
    fn prefetch_error_surfaces_at_take() {
        let mut prefetcher = Prefetcher::new(Arc::new(NoiseImages::new(10, 4, 7)));
        prefetcher.take(&[0], vec![10]).unwrap();
        let error = prefetcher.take(&[10], vec![0]).unwrap_err();
        assert!(
            matches!(error, DataError::IndexOutOfRange { index: 10, len: 10 }),
            "{error}"
        );
    }
}
