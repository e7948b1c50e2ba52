//! A communicator over NCCL (through cudarc's `nccl` module) for ranks with one GPU each.
//!
//! Start-up: rank 0 calls [`create_unique_id`] and reports the bytes to the coordinator,
//! which relays them to every rank in the rendezvous. Every rank then calls
//! [`NcclCommunicator::join`] with the same id, on the candle CUDA device it trains on.
//!
//! Collectives run on the device's candle stream, so they are ordered with candle's kernels
//! without extra synchronisation. The in-place tensor collectives return as soon as NCCL
//! has enqueued them. A [`Watchdog`] aborts the communicator (ncclCommAbort) when one has not
//! finished within the timeout, and every later call then fails with
//! [`CollectiveError::Aborted`], which names the rank and the operation.

mod library;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use candle_core::cuda::CudaStorageSlice;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut, DeviceRepr};
use candle_core::cuda::cudarc::nccl::{result as nccl, sys};
use candle_core::{CudaDevice, CudaStorage, Layout};

use crate::watchdog::Watchdog;
use crate::{CollectiveError, Communicator, NCCL_UNIQUE_ID_BYTES};
use library::{NcclHandle, describe};

/// How often the watchdog checks the oldest unfinished collective.
const WATCHDOG_POLL: Duration = Duration::from_millis(50);

/// Creates the NCCL unique id of a new communicator, on rank 0.
///
/// The id contains the address on which rank 0's NCCL bootstrap listens, so it must be
/// created on the host of rank 0, and it is valid for one communicator only.
pub fn create_unique_id() -> Result<Vec<u8>, CollectiveError> {
    let id = nccl::get_uniqueid().map_err(|error| CollectiveError::Library {
        operation: "ncclGetUniqueId",
        reason: describe(error.0),
    })?;
    Ok(id.internal.iter().map(|&byte| byte as u8).collect())
}

/// Returns the version code of the loaded NCCL library, such as 23003 for NCCL 2.30.3.
pub fn nccl_version() -> Result<u32, CollectiveError> {
    let version = nccl::get_nccl_version().map_err(|error| CollectiveError::Library {
        operation: "ncclGetVersion",
        reason: describe(error.0),
    })?;
    Ok(version as u32)
}

/// An NCCL communicator of one rank, bound to one CUDA device.
pub struct NcclCommunicator {
    rank: usize,
    world_size: usize,
    device: CudaDevice,
    stream: Arc<CudaStream>,
    handle: Arc<NcclHandle>,
    watchdog: Watchdog<NcclHandle>,
}

impl NcclCommunicator {
    /// Joins the communicator that `unique_id` (from [`create_unique_id`] on rank 0) names.
    ///
    /// Every rank of `0..world_size` must call this with the same id and world size. The call
    /// blocks until all have joined, and fails with [`CollectiveError::Library`] after
    /// `timeout`. `timeout` also bounds every later collective: see the module docs.
    ///
    /// NOTE: ncclCommInitRank cannot be interrupted, so after a timeout it keeps waiting on a
    /// helper thread, and it aborts the communicator if it ever completes.
    pub fn join(
        device: &CudaDevice,
        rank: usize,
        world_size: usize,
        unique_id: &[u8],
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        let id = parse_unique_id(unique_id)?;
        if rank >= world_size {
            return Err(CollectiveError::InvalidCall {
                operation: "join",
                reason: format!("rank {rank} is outside world size {world_size}"),
            });
        }
        let stream = device.cuda_stream();
        let handle = Arc::new(init_rank(&stream, rank, world_size, id, timeout)?);
        let watchdog =
            Watchdog::start(handle.clone(), rank, timeout, WATCHDOG_POLL).map_err(|error| {
                CollectiveError::Library {
                    operation: "join",
                    reason: format!("failed to spawn the watchdog thread: {error}"),
                }
            })?;
        tracing::debug!(
            rank,
            world_size,
            ordinal = stream.context().ordinal(),
            "joined the NCCL communicator"
        );
        Ok(Self {
            rank,
            world_size,
            device: device.clone(),
            stream,
            handle,
            watchdog,
        })
    }

    /// Enqueues one NCCL call on the stream and registers it with the watchdog.
    ///
    /// NOTE: the watchdog may abort the communicator between the failure check in
    /// `Watchdog::begin` and the NCCL call, which then runs on a freed communicator. That
    /// needs a collective to exceed the timeout at the moment the next one is issued.
    fn enqueue(
        &self,
        operation: &'static str,
        call: impl FnOnce(
            sys::ncclComm_t,
            sys::cudaStream_t,
        ) -> Result<nccl::NcclStatus, nccl::NcclError>,
    ) -> Result<(), CollectiveError> {
        let ticket = self.watchdog.begin(operation)?;
        let Some(comm) = self.handle.raw() else {
            self.watchdog.enqueue_failed(ticket);
            return Err(self.aborted_error(operation));
        };
        if let Err(error) = call(comm, self.stream.cu_stream() as sys::cudaStream_t) {
            self.watchdog.enqueue_failed(ticket);
            return Err(CollectiveError::Library {
                operation,
                reason: describe(error.0),
            });
        }
        match self.stream.record_event(None) {
            Ok(event) => {
                self.watchdog.enqueued(ticket, event);
                Ok(())
            }
            Err(error) => {
                self.watchdog.enqueue_failed(ticket);
                Err(driver_error(operation, error))
            }
        }
    }

    fn aborted_error(&self, operation: &'static str) -> CollectiveError {
        match self.watchdog.failure() {
            Some(failure) => failure.to_error(),
            None => CollectiveError::Library {
                operation,
                reason: "the NCCL communicator was aborted".to_owned(),
            },
        }
    }

    /// Waits for the stream, which an abort also releases, and returns the watchdog's
    /// failure if there was one.
    fn wait_host(&self, operation: &'static str) -> Result<(), CollectiveError> {
        let synchronized = self.stream.synchronize();
        if let Some(failure) = self.watchdog.failure() {
            return Err(failure.to_error());
        }
        synchronized.map_err(|error| driver_error(operation, error))
    }

    /// Copies host values to the device, runs `collective` on them and copies them back.
    fn on_host_copy(
        &self,
        operation: &'static str,
        data: &mut [f32],
        collective: impl FnOnce(&Self, &mut CudaSlice<f32>) -> Result<(), CollectiveError>,
    ) -> Result<(), CollectiveError> {
        if data.is_empty() {
            return Ok(());
        }
        let mut buffer = self
            .stream
            .clone_htod(data)
            .map_err(|error| driver_error(operation, error))?;
        collective(self, &mut buffer)?;
        self.stream
            .memcpy_dtoh(&buffer, data)
            .map_err(|error| driver_error(operation, error))?;
        self.wait_host(operation)
    }

    /// Sums `values` in place over all ranks, asynchronously on the stream.
    fn all_reduce_device<T: DeviceRepr + NcclElement>(
        &self,
        operation: &'static str,
        values: &mut CudaSlice<T>,
        range: std::ops::Range<usize>,
    ) -> Result<(), CollectiveError> {
        if range.is_empty() {
            return Ok(());
        }
        let count = range.len();
        let mut view = values.slice_mut(range);
        let stream = self.stream.clone();
        self.enqueue(operation, |comm, cu_stream| {
            let (pointer, _record) = view.device_ptr_mut(&stream);
            let pointer = pointer as *mut std::ffi::c_void;
            // SAFETY: `pointer` addresses `count` live elements of T on this communicator's
            // device, and NCCL allows the send and receive buffers to be the same.
            unsafe {
                nccl::all_reduce(
                    pointer,
                    pointer,
                    count,
                    T::NCCL,
                    sys::ncclRedOp_t::ncclSum,
                    comm,
                    cu_stream,
                )
            }
        })
    }

    fn broadcast_device(
        &self,
        values: &mut CudaSlice<f32>,
        root: usize,
    ) -> Result<(), CollectiveError> {
        let count = values.len();
        let stream = self.stream.clone();
        self.enqueue("broadcast", |comm, cu_stream| {
            let (pointer, _record) = values.device_ptr_mut(&stream);
            let pointer = pointer as *mut std::ffi::c_void;
            // SAFETY: as in all_reduce_device; `root` was checked against the world size.
            unsafe {
                nccl::broadcast(
                    pointer,
                    pointer,
                    count,
                    sys::ncclDataType_t::ncclFloat32,
                    root as i32,
                    comm,
                    cu_stream,
                )
            }
        })
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    /// Copies `data` to the device, sums it over all ranks and copies it back. Blocks until
    /// done, or until the watchdog aborts the communicator after the timeout.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        self.on_host_copy("all_reduce_sum", data, |comm, buffer| {
            let len = buffer.len();
            comm.all_reduce_device("all_reduce_sum", buffer, 0..len)
        })
    }

    /// Copies rank `root`'s `data` to every rank through the devices. Blocks like
    /// [`NcclCommunicator::all_reduce_sum`].
    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        if root >= self.world_size {
            return Err(CollectiveError::InvalidCall {
                operation: "broadcast",
                reason: format!("root rank {root} is outside world size {}", self.world_size),
            });
        }
        self.on_host_copy("broadcast", data, |comm, buffer| {
            comm.broadcast_device(buffer, root)
        })
    }

    /// Sums one value over all ranks, which no rank can finish before all have started.
    fn barrier(&self) -> Result<(), CollectiveError> {
        let mut token = [1.0f32];
        self.on_host_copy("barrier", &mut token, |comm, buffer| {
            comm.all_reduce_device("barrier", buffer, 0..1)
        })
    }

    /// Sums the F32, F64 or BF16 values of `storage` that `layout` covers in place, without a
    /// copy to the host. Returns once NCCL has enqueued the sum on the device's stream.
    fn all_reduce_sum_cuda(
        &self,
        storage: &mut CudaStorage,
        layout: &Layout,
    ) -> Result<(), CollectiveError> {
        const OPERATION: &str = "all_reduce_sum_cuda";
        if storage.device.id() != self.device.id() {
            return Err(CollectiveError::InvalidCall {
                operation: OPERATION,
                reason: "the tensor is on another CUDA device than the communicator".to_owned(),
            });
        }
        let range = crate::cuda::contiguous_range(OPERATION, layout)?;
        match &mut storage.slice {
            CudaStorageSlice::F32(values) => self.all_reduce_device(OPERATION, values, range),
            CudaStorageSlice::F64(values) => self.all_reduce_device(OPERATION, values, range),
            CudaStorageSlice::BF16(values) => self.all_reduce_device(OPERATION, values, range),
            _ => Err(CollectiveError::InvalidCall {
                operation: OPERATION,
                reason: format!(
                    "NCCL all-reduce supports F32, F64 and BF16, got {:?}",
                    candle_core::backend::BackendStorage::dtype(storage)
                ),
            }),
        }
    }
}

/// Element types of the NCCL collectives, with NCCL's code for each.
trait NcclElement {
    const NCCL: sys::ncclDataType_t;
}

impl NcclElement for f32 {
    const NCCL: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat32;
}

impl NcclElement for f64 {
    const NCCL: sys::ncclDataType_t = sys::ncclDataType_t::ncclFloat64;
}

impl NcclElement for half::bf16 {
    const NCCL: sys::ncclDataType_t = sys::ncclDataType_t::ncclBfloat16;
}

fn parse_unique_id(bytes: &[u8]) -> Result<sys::ncclUniqueId, CollectiveError> {
    let Ok(bytes) = <[u8; NCCL_UNIQUE_ID_BYTES]>::try_from(bytes) else {
        return Err(CollectiveError::InvalidCall {
            operation: "join",
            reason: format!(
                "an NCCL unique id has {NCCL_UNIQUE_ID_BYTES} bytes, got {}",
                bytes.len()
            ),
        });
    };
    Ok(sys::ncclUniqueId {
        internal: bytes.map(|byte| byte as std::ffi::c_char),
    })
}

/// Runs ncclCommInitRank on a helper thread and waits for it for at most `timeout`.
fn init_rank(
    stream: &Arc<CudaStream>,
    rank: usize,
    world_size: usize,
    id: sys::ncclUniqueId,
    timeout: Duration,
) -> Result<NcclHandle, CollectiveError> {
    let (sender, receiver) = mpsc::channel();
    let abandoned = Arc::new(AtomicBool::new(false));
    let thread_abandoned = abandoned.clone();
    let context = stream.context().clone();
    std::thread::Builder::new()
        .name(format!("nccl-init-{rank}"))
        .spawn(move || {
            let result = context
                .bind_to_thread()
                .map_err(|error| format!("binding the CUDA context failed: {error:?}"))
                .and_then(|()| init_rank_blocking(rank, world_size, id));
            let handle = result.map(NcclHandle::new);
            if thread_abandoned.load(Ordering::SeqCst) {
                drop(handle);
                return;
            }
            let _ = sender.send(handle);
        })
        .map_err(|error| CollectiveError::Library {
            operation: "ncclCommInitRank",
            reason: format!("failed to spawn the init thread: {error}"),
        })?;
    match receiver.recv_timeout(timeout) {
        Ok(Ok(handle)) => Ok(handle),
        Ok(Err(reason)) => Err(CollectiveError::Library {
            operation: "ncclCommInitRank",
            reason,
        }),
        Err(_) => {
            abandoned.store(true, Ordering::SeqCst);
            Err(CollectiveError::Library {
                operation: "ncclCommInitRank",
                reason: format!("not every rank joined within {} ms", timeout.as_millis()),
            })
        }
    }
}

fn init_rank_blocking(
    rank: usize,
    world_size: usize,
    id: sys::ncclUniqueId,
) -> Result<sys::ncclComm_t, String> {
    let mut comm = std::mem::MaybeUninit::uninit();
    // SAFETY: `comm` is written by a successful ncclCommInitRank, and only read after it.
    unsafe {
        nccl::comm_init_rank(comm.as_mut_ptr(), world_size as i32, id, rank as i32)
            .map_err(|error| describe(error.0))?;
        Ok(comm.assume_init())
    }
}

fn driver_error(
    operation: &'static str,
    error: candle_core::cuda::cudarc::driver::DriverError,
) -> CollectiveError {
    CollectiveError::Library {
        operation,
        reason: format!("CUDA driver error: {error:?}"),
    }
}
