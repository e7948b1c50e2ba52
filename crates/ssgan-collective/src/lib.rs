//! Collective communication between the ranks of a data-parallel SS-GAN run.
//!
//! The training step talks only to the [`Communicator`] trait. A single-process run uses
//! [`SingleRank`], whose collectives do no work. A multi-process CPU run uses [`TcpRing`].
//! Every backend implements the same trait, so the model code does not change with the world
//! size.
//!
//! A rank joins a ring in two steps, because the coordinator must collect every rank's
//! listening address before any rank can connect:
//!
//! ```no_run
//! use ssgan_collective::{Communicator, RingConfig, RingListener, RingMembership};
//! # fn addresses_from_coordinator(_: std::net::SocketAddr) -> Vec<std::net::SocketAddr> {
//! #     unimplemented!()
//! # }
//! let listener = RingListener::bind("127.0.0.1:0".parse()?)?;
//! let addresses = addresses_from_coordinator(listener.local_addr());
//! let membership = RingMembership { rank: 0, addresses, token: 7 };
//! let ring = listener.join(&membership, &RingConfig::default())?;
//! let mut values = vec![0.5f32; 1024];
//! ring.all_reduce_sum(&mut values)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the `cuda` feature, [`NcclCommunicator`] runs the collectives with NCCL on GPUs, and
//! the tensor collectives work on CUDA tensors with every backend.
//!
//! Error policy: every collective returns [`CollectiveError`]. A backend must not panic on a
//! peer's failure and must not block longer than its timeout, except that [`TcpRing`] takes up
//! to 1 s more after a failure to pass its abort message on.

mod bench;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod gpu_info;
mod gradients;
#[cfg(feature = "cuda")]
mod nccl;
mod ring;
mod single;
mod tensor;
mod timed;
#[cfg(test)]
mod twins;
mod watchdog;

pub use bench::{AllReduceBenchRow, bench_all_reduce};
pub use error::CollectiveError;
#[cfg(feature = "cuda")]
pub use gpu_info::gpu_info;
pub use gpu_info::{GpuInfo, parse_kernel_driver_version};
pub use gradients::{
    DEFAULT_BUCKET_BYTES, all_reduce_mean_bucketed, all_reduce_mean_in_place,
    check_parameters_match,
};
#[cfg(feature = "cuda")]
pub use nccl::{NcclCommunicator, create_unique_id, nccl_version};
pub use ring::{RingConfig, RingListener, RingMembership, TcpRing};
pub use single::SingleRank;
pub use tensor::{all_reduce_sum_in_place, all_reduce_sum_tensor};
pub use timed::TimedCommunicator;
pub use watchdog::{CollectiveLibrary, FailureReason, Ticket, Watchdog, WatchdogFailure};

/// A group of `world_size` ranks that run the same sequence of collective calls.
///
/// Every rank must issue the same collectives, with the same lengths, in the same order.
/// A backend must give up after its timeout and return an error that names the peer rank and
/// the operation, so that a lost peer cannot hang the caller.
pub trait Communicator: Send + Sync {
    /// This process's rank, in `0..world_size()`.
    fn rank(&self) -> usize;

    /// Number of ranks in the group.
    fn world_size(&self) -> usize;

    /// Replaces `data` on every rank with the element-wise sum over all ranks.
    ///
    /// Every rank must call this with a slice of the same length.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError>;

    /// Replaces `data` on every rank with the contents of `data` on rank `root`.
    ///
    /// Every rank must call this with a slice of the same length and the same `root`.
    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<(), CollectiveError>;

    /// Returns once every rank has reached the barrier.
    fn barrier(&self) -> Result<(), CollectiveError>;

    /// Replaces the values of `storage` that the contiguous `layout` covers with their sum
    /// over all ranks.
    ///
    /// Every rank must call this with the same element count and dtype. The default copies
    /// F32 or BF16 values through the host and calls [`Communicator::all_reduce_sum`];
    /// [`NcclCommunicator`] sums on the device and may return before the sum has finished,
    /// because later work on the same CUDA stream waits for it.
    #[cfg(feature = "cuda")]
    fn all_reduce_sum_cuda(
        &self,
        storage: &mut candle_core::CudaStorage,
        layout: &candle_core::Layout,
    ) -> Result<(), CollectiveError> {
        cuda::all_reduce_via_host(self, storage, layout)
    }
}

/// Length of an NCCL unique id in bytes, as relayed in the rendezvous.
pub const NCCL_UNIQUE_ID_BYTES: usize = 128;
