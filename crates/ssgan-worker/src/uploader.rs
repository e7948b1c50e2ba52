//! Checkpoint uploads off the training thread, one in flight.

use std::time::Instant;

use bytes::Bytes;
use ssgan_store::{CheckpointFile, Store, StoreError};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::{Result, WorkerError};

/// Everything one checkpoint writes to storage.
pub struct Snapshot {
    pub run_id: String,
    pub step: u64,
    pub files: Vec<CheckpointFile>,
    pub sample_png: Bytes,
    /// Number of newest checkpoints retention keeps.
    pub keep: usize,
}

/// Runs each snapshot's upload on the store's runtime; at most one is in flight. An upload
/// error surfaces at the next [`Uploader::submit`] or [`Uploader::wait`].
pub struct Uploader {
    store: Store,
    runtime: Handle,
    in_flight: Option<(u64, JoinHandle<std::result::Result<(), StoreError>>)>,
}

impl Uploader {
    pub fn new(store: Store, runtime: Handle) -> Self {
        Self {
            store,
            runtime,
            in_flight: None,
        }
    }

    /// Waits for the previous upload, then starts this one. Returns the step of the previous
    /// upload if one completed.
    pub fn submit(&mut self, snapshot: Snapshot) -> Result<Option<u64>> {
        let finished = self.wait()?;
        let store = self.store.clone();
        let step = snapshot.step;
        let span = tracing::debug_span!("checkpoint.upload", ssgan.run_id = %snapshot.run_id, ssgan.step = step);
        let task = self
            .runtime
            .spawn(async move { upload(&store, snapshot).await }.instrument(span));
        self.in_flight = Some((step, task));
        Ok(finished)
    }

    /// Returns the step of the upload in flight if it has ended, and its error if it failed;
    /// returns None without waiting while it runs.
    pub fn poll(&mut self) -> Result<Option<u64>> {
        match &self.in_flight {
            Some((_, task)) if task.is_finished() => self.wait(),
            _ => Ok(None),
        }
    }

    /// Waits for the upload in flight, if any, and returns its step once committed.
    pub fn wait(&mut self) -> Result<Option<u64>> {
        let Some((step, task)) = self.in_flight.take() else {
            return Ok(None);
        };
        let joined = self.runtime.block_on(task);
        let outcome = joined.map_err(|e| WorkerError::BadCheckpoint {
            url: format!("step {step}"),
            reason: format!("the upload task failed: {e}"),
        })?;
        outcome?;
        Ok(Some(step))
    }
}

async fn upload(store: &Store, snapshot: Snapshot) -> std::result::Result<(), StoreError> {
    let Snapshot {
        run_id,
        step,
        files,
        sample_png,
        keep,
    } = snapshot;
    tracing::debug!(run_id, step, "uploading checkpoint");
    let started = Instant::now();
    let bytes: usize = files.iter().map(|file| file.bytes.len()).sum();
    match store.commit_checkpoint(&run_id, step, files).await {
        Ok(_) => {
            let seconds = started.elapsed().as_secs_f64();
            ssgan_telemetry::metrics::record_checkpoint(&run_id, seconds, bytes as u64);
        }
        Err(StoreError::AlreadyCommitted { .. }) => {
            // Only a resume that fell back past a checkpoint that failed verification gets
            // here. That checkpoint is kept as it is, for inspection.
            tracing::warn!(
                run_id,
                rank = 0,
                step,
                "step {step} already has a committed checkpoint, which is left unchanged; this step's state is not saved"
            );
        }
        Err(error) => return Err(error),
    }
    store.put_sample(&run_id, step, sample_png).await?;
    apply_retention(store, &run_id, step, keep).await
}

/// Deletes old checkpoints but keeps the run's best-FID step and the steps whose evaluation
/// is pending, which run.json records. The coordinator owns run.json in a distributed run,
/// and this only reads it. When run.json cannot be read, retention waits for the next
/// checkpoint rather than risk deleting the best one.
async fn apply_retention(
    store: &Store,
    run_id: &str,
    step: u64,
    keep: usize,
) -> std::result::Result<(), StoreError> {
    let protected: Vec<u64> = match store.read_run(run_id).await {
        Ok(Some(record)) => record.protected_steps(),
        Ok(None) => Vec::new(),
        Err(error) => {
            tracing::warn!(run_id, step, %error, "cannot read run.json for the best checkpoint, skipping retention");
            return Ok(());
        }
    };
    let deleted = store.apply_retention(run_id, keep, &protected).await?;
    tracing::debug!(run_id, step, ?deleted, ?protected, "checkpoint committed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use ssgan_store::RunRecord;

    use super::*;

    async fn commit(store: &Store, step: u64) {
        let file = CheckpointFile {
            name: "g.safetensors".to_owned(),
            bytes: Bytes::from_static(b"weights"),
        };
        store
            .commit_checkpoint("r", step, vec![file])
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn retention_keeps_best_step() {
        let store = Store::open("memory://").unwrap();
        let record = RunRecord {
            run_id: "r".to_owned(),
            best_step: Some(1),
            ..RunRecord::default()
        };
        store.write_run(&record).await.unwrap();
        for step in 1..=4 {
            commit(&store, step).await;
        }
        apply_retention(&store, "r", 4, 1).await.unwrap();
        assert_eq!(store.committed_steps("r").await.unwrap(), [1, 4]);
    }

    #[tokio::test]
    async fn retention_keeps_pending_steps() {
        let store = Store::open("memory://").unwrap();
        let record = RunRecord {
            run_id: "r".to_owned(),
            best_step: Some(1),
            pending_evals: vec![2],
            ..RunRecord::default()
        };
        store.write_run(&record).await.unwrap();
        for step in 1..=4 {
            commit(&store, step).await;
        }
        apply_retention(&store, "r", 4, 1).await.unwrap();
        assert_eq!(store.committed_steps("r").await.unwrap(), [1, 2, 4]);
    }

    #[tokio::test]
    async fn retention_without_run_record_keeps_newest() {
        let store = Store::open("memory://").unwrap();
        for step in 1..=3 {
            commit(&store, step).await;
        }
        apply_retention(&store, "r", 3, 1).await.unwrap();
        assert_eq!(store.committed_steps("r").await.unwrap(), [3]);
    }
}
