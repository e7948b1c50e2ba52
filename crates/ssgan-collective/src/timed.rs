//! A communicator that adds up the time its collectives take.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::{CollectiveError, Communicator};

/// Forwards every collective to `inner` and adds the wall time of each call to a total,
/// which [`TimedCommunicator::take_seconds`] reads and resets.
///
/// NOTE: NCCL's all-reduce returns once the operation is queued on the CUDA stream, so on
/// GPUs the total is the time to queue the device sums, not the time they take.
pub struct TimedCommunicator {
    inner: Arc<dyn Communicator>,
    nanos: AtomicU64,
}

impl TimedCommunicator {
    pub fn new(inner: Arc<dyn Communicator>) -> Self {
        Self {
            inner,
            nanos: AtomicU64::new(0),
        }
    }

    /// Returns the seconds spent in collectives since the last call, and starts a new total.
    pub fn take_seconds(&self) -> f64 {
        self.nanos.swap(0, Ordering::Relaxed) as f64 * 1e-9
    }

    fn timed<T>(&self, call: impl FnOnce(&dyn Communicator) -> T) -> T {
        let started = Instant::now();
        let result = call(self.inner.as_ref());
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        result
    }
}

impl Communicator for TimedCommunicator {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn world_size(&self) -> usize {
        self.inner.world_size()
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        self.timed(|inner| inner.all_reduce_sum(data))
    }

    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        self.timed(|inner| inner.broadcast(data, root))
    }

    fn barrier(&self) -> Result<(), CollectiveError> {
        self.timed(|inner| inner.barrier())
    }

    #[cfg(feature = "cuda")]
    fn all_reduce_sum_cuda(
        &self,
        storage: &mut candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> Result<(), CollectiveError> {
        self.timed(|inner| inner.all_reduce_sum_cuda(storage, layout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SingleRank;

    /// A rank whose all-reduce sleeps, standing in for a slow peer.
    struct Slow;

    impl Communicator for Slow {
        fn rank(&self) -> usize {
            0
        }

        fn world_size(&self) -> usize {
            1
        }

        fn all_reduce_sum(&self, _data: &mut [f32]) -> Result<(), CollectiveError> {
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(())
        }

        fn broadcast(&self, _data: &mut [f32], _root: usize) -> Result<(), CollectiveError> {
            Ok(())
        }

        fn barrier(&self) -> Result<(), CollectiveError> {
            Ok(())
        }
    }

    #[test]
    fn timed_adds_and_resets() {
        let timed = TimedCommunicator::new(Arc::new(Slow));
        let mut data = [1.0f32; 4];
        timed.all_reduce_sum(&mut data).unwrap();
        timed.all_reduce_sum(&mut data).unwrap();
        let seconds = timed.take_seconds();
        assert!(seconds >= 0.04, "{seconds}");
        assert_eq!(timed.take_seconds(), 0.0);
        assert_eq!(data, [1.0; 4]);
    }

    #[test]
    fn timed_forwards_rank_and_errors() {
        let timed = TimedCommunicator::new(Arc::new(SingleRank));
        assert_eq!((timed.rank(), timed.world_size()), (0, 1));
        assert!(timed.broadcast(&mut [0.0], 1).is_err());
    }
}
