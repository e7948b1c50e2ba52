//! The NCCL communicator handle and the calls that the watchdog makes on it.

use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::cuda::cudarc::driver::CudaEvent;
use candle_core::cuda::cudarc::nccl::{result as nccl, sys};

use crate::watchdog::CollectiveLibrary;

/// An NCCL communicator handle, aborted at most once: by the watchdog or on drop.
pub(super) struct NcclHandle {
    comm: sys::ncclComm_t,
    aborted: AtomicBool,
}

// SAFETY: an ncclComm_t is a pointer to NCCL's communicator state. The training thread
// enqueues collectives on it, and the watchdog thread only calls ncclCommGetAsyncError and
// ncclCommAbort, which NCCL provides for aborting a communicator from another thread. The
// `aborted` flag keeps both threads from using the handle after ncclCommAbort freed it,
// except for the race described at `NcclCommunicator::enqueue`.
unsafe impl Send for NcclHandle {}
unsafe impl Sync for NcclHandle {}

impl NcclHandle {
    /// Takes ownership of an initialised communicator.
    pub fn new(comm: sys::ncclComm_t) -> Self {
        Self {
            comm,
            aborted: AtomicBool::new(false),
        }
    }

    /// Returns the raw handle, or `None` once the communicator has been aborted.
    pub fn raw(&self) -> Option<sys::ncclComm_t> {
        (!self.aborted.load(Ordering::SeqCst)).then_some(self.comm)
    }

    fn abort_once(&self) {
        if self.aborted.swap(true, Ordering::SeqCst) {
            return;
        }
        // SAFETY: the handle came from a successful ncclCommInitRank and the swap above makes
        // this the only abort, so it is freed exactly once.
        if let Err(error) = unsafe { nccl::comm_abort(self.comm) } {
            tracing::debug!(error = %describe(error.0), "ncclCommAbort failed");
        }
    }
}

impl Drop for NcclHandle {
    /// Aborts instead of ncclCommDestroy, which would wait for pending collectives and so
    /// hang when a peer is gone.
    fn drop(&mut self) {
        self.abort_once();
    }
}

impl CollectiveLibrary for NcclHandle {
    type Marker = CudaEvent;

    fn is_complete(&self, marker: &CudaEvent) -> Result<bool, String> {
        // The watchdog thread queries events of the training thread's context.
        marker
            .context()
            .bind_to_thread()
            .map_err(|error| format!("binding the CUDA context failed: {error:?}"))?;
        marker
            .try_is_complete()
            .map_err(|error| format!("CUDA event query failed: {error:?}"))
    }

    fn async_error(&self) -> Option<String> {
        let comm = self.raw()?;
        let mut state = sys::ncclResult_t::ncclSuccess;
        // SAFETY: `comm` is live (not aborted), and NCCL allows this query from any thread.
        let queried = unsafe { sys::ncclCommGetAsyncError(comm, &mut state) };
        if queried != sys::ncclResult_t::ncclSuccess {
            return Some(format!(
                "ncclCommGetAsyncError failed: {}",
                describe(queried)
            ));
        }
        match state {
            sys::ncclResult_t::ncclSuccess | sys::ncclResult_t::ncclInProgress => None,
            error => Some(describe(error)),
        }
    }

    fn abort(&self) {
        self.abort_once();
    }
}

/// Returns NCCL's text for a result code, with the code's name.
pub(super) fn describe(result: sys::ncclResult_t) -> String {
    // SAFETY: ncclGetErrorString returns a pointer to a static, NUL-terminated string.
    let text = unsafe { CStr::from_ptr(sys::ncclGetErrorString(result)) };
    format!("{result:?}: {}", text.to_string_lossy())
}
