//! The size of the compute thread pools of a worker process.

/// Error of [`init_thread_pools`].
#[derive(Debug, thiserror::Error)]
pub enum ThreadPoolError {
    #[error("invalid thread count 0: expected at least 1")]
    Zero,
    /// The global rayon pool was built before, with its own size.
    #[error("cannot size the thread pools: {0}")]
    AlreadyBuilt(#[from] rayon::ThreadPoolBuildError),
}

/// Sets the number of threads of every CPU compute pool to `threads`: the global rayon pool
/// (the project's convolution and batch-norm kernels), and, through RAYON_NUM_THREADS,
/// candle's own rayon pool and the parallelism of its gemm matrix products.
///
/// # Safety
///
/// Sets an environment variable, so no other thread may exist yet: call it at the start of
/// `main`, before the async runtime or anything else starts a thread.
pub unsafe fn init_thread_pools(threads: usize) -> Result<(), ThreadPoolError> {
    if threads == 0 {
        return Err(ThreadPoolError::Zero);
    }
    // SAFETY: the caller guarantees that this process runs one thread.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;
    Ok(())
}
