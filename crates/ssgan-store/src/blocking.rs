//! [`BlockingStore`]: the [`Store`] API for synchronous callers.

use bytes::Bytes;
use tokio::runtime::{Builder, Handle, Runtime};

use crate::{CheckpointFile, LoadedCheckpoint, Manifest, RunRecord, Store, StoreError};

/// Number of tokio worker threads of a [`BlockingStore`]. Uploads are network- and
/// hash-bound, and two workers let a background upload run beside a blocking call.
const WORKER_THREADS: usize = 2;

/// A [`Store`] with its own tokio runtime, whose methods block until the operation ends.
///
/// Each method runs the [`Store`] method of the same name with `Runtime::block_on`, so it
/// panics when called from inside an async task. Call it from plain threads, or from
/// `spawn_blocking`. For the same reason, do not drop a `BlockingStore` inside an async task.
#[derive(Debug)]
pub struct BlockingStore {
    // Declared before the runtime so that the store's clients drop first.
    store: Store,
    runtime: Runtime,
}

impl BlockingStore {
    /// Starts a multi-thread runtime with two workers and opens the store at `url`, which
    /// takes every form that [`Store::open`] takes.
    pub fn open(url: &str) -> Result<BlockingStore, StoreError> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("ssgan-store")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Runtime { source })?;
        let store = {
            let _context = runtime.enter();
            Store::open(url)?
        };
        Ok(Self { store, runtime })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Returns the runtime's handle, so that callers can spawn background uploads on it.
    pub fn runtime(&self) -> &Handle {
        self.runtime.handle()
    }

    /// See [`Store::url`].
    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// See [`Store::checkpoint_url`].
    pub fn checkpoint_url(&self, run_id: &str, step: u64) -> String {
        self.store.checkpoint_url(run_id, step)
    }

    /// See [`Store::commit_checkpoint`].
    pub fn commit_checkpoint(
        &self,
        run_id: &str,
        step: u64,
        files: Vec<CheckpointFile>,
    ) -> Result<Manifest, StoreError> {
        self.runtime
            .block_on(self.store.commit_checkpoint(run_id, step, files))
    }

    /// See [`Store::committed_steps`].
    pub fn committed_steps(&self, run_id: &str) -> Result<Vec<u64>, StoreError> {
        self.runtime.block_on(self.store.committed_steps(run_id))
    }

    /// See [`Store::load_checkpoint`].
    pub fn load_checkpoint(&self, run_id: &str, step: u64) -> Result<LoadedCheckpoint, StoreError> {
        self.runtime
            .block_on(self.store.load_checkpoint(run_id, step))
    }

    /// See [`Store::load_latest`].
    pub fn load_latest(&self, run_id: &str) -> Result<Option<LoadedCheckpoint>, StoreError> {
        self.runtime.block_on(self.store.load_latest(run_id))
    }

    /// See [`Store::apply_retention`].
    pub fn apply_retention(
        &self,
        run_id: &str,
        keep: usize,
        protect: &[u64],
    ) -> Result<Vec<u64>, StoreError> {
        self.runtime
            .block_on(self.store.apply_retention(run_id, keep, protect))
    }

    /// See [`Store::put_sample`].
    pub fn put_sample(&self, run_id: &str, step: u64, png: Bytes) -> Result<String, StoreError> {
        self.runtime
            .block_on(self.store.put_sample(run_id, step, png))
    }

    /// See [`Store::read_run`].
    pub fn read_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        self.runtime.block_on(self.store.read_run(run_id))
    }

    /// See [`Store::write_run`].
    pub fn write_run(&self, record: &RunRecord) -> Result<(), StoreError> {
        self.runtime.block_on(self.store.write_run(record))
    }

    /// See [`Store::list_runs`].
    pub fn list_runs(&self) -> Result<Vec<String>, StoreError> {
        self.runtime.block_on(self.store.list_runs())
    }
}
