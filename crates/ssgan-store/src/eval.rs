//! FID evaluation results: `eval.json` beside a checkpoint, and run-level files such as the
//! cached statistics of the real images.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::layout::{
    CHECKPOINTS_DIR, RUN_RECORD_FILE_NAME, SAMPLES_DIR, validate_file_name, validate_run_id,
};
use crate::{Store, StoreError};

/// One FID result of a run, as kept in its `run.json`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EvalRecord {
    /// Step of the evaluated checkpoint.
    pub step: u64,
    pub fid: f64,
    /// Number of generated images behind `fid`.
    pub samples: u64,
}

impl Store {
    /// Writes a checkpoint's `eval.json`, replacing an earlier one, and returns its URL.
    ///
    /// The file sits inside the checkpoint directory, so retention deletes it together with
    /// the checkpoint. It is not listed in the manifest, which the trainer wrote before.
    pub async fn put_eval_result(
        &self,
        run_id: &str,
        step: u64,
        json: Bytes,
    ) -> Result<String, StoreError> {
        validate_run_id(run_id)?;
        let location = self.layout.eval_result(run_id, step);
        self.write(&location, json).await?;
        tracing::debug!(run_id, step, "wrote eval result");
        Ok(self.object_url(&location))
    }

    /// Reads a checkpoint's `eval.json`, returning `Ok(None)` when it has none.
    pub async fn read_eval_result(
        &self,
        run_id: &str,
        step: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        validate_run_id(run_id)?;
        self.read_optional(&self.layout.eval_result(run_id, step))
            .await
    }

    /// Writes `runs/<run_id>/<name>`, replacing an earlier one, and returns its URL.
    ///
    /// Fails with [`StoreError::InvalidFileName`] for a name that breaks the checkpoint file
    /// name rule or that the layout reserves (`run.json`, `checkpoints`, `samples`).
    pub async fn put_run_file(
        &self,
        run_id: &str,
        name: &str,
        bytes: Bytes,
    ) -> Result<String, StoreError> {
        validate_run_id(run_id)?;
        validate_run_file_name(name)?;
        let location = self.layout.run_file(run_id, name);
        self.write(&location, bytes).await?;
        tracing::debug!(run_id, name, "wrote run file");
        Ok(self.object_url(&location))
    }

    /// Reads `runs/<run_id>/<name>`, returning `Ok(None)` when it does not exist.
    pub async fn read_run_file(
        &self,
        run_id: &str,
        name: &str,
    ) -> Result<Option<Bytes>, StoreError> {
        validate_run_id(run_id)?;
        validate_run_file_name(name)?;
        self.read_optional(&self.layout.run_file(run_id, name))
            .await
    }

    /// Returns the URL of `runs/<run_id>/<name>`.
    pub fn run_file_url(&self, run_id: &str, name: &str) -> String {
        self.object_url(&self.layout.run_file(run_id, name))
    }
}

fn validate_run_file_name(name: &str) -> Result<(), StoreError> {
    validate_file_name(name)?;
    if [RUN_RECORD_FILE_NAME, CHECKPOINTS_DIR, SAMPLES_DIR].contains(&name) {
        return Err(StoreError::InvalidFileName {
            name: name.to_owned(),
            reason: format!("{name} is reserved by the run layout, so choose another name"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eval_result_round_trips() {
        let store = Store::open("memory://").unwrap();
        assert_eq!(store.read_eval_result("r", 4).await.unwrap(), None);
        let url = store
            .put_eval_result("r", 4, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert!(
            url.ends_with("runs/r/checkpoints/0000000004/eval.json"),
            "{url}"
        );
        let read = store.read_eval_result("r", 4).await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"{}"[..]));
    }

    #[tokio::test]
    async fn run_file_rejects_reserved_names() {
        let store = Store::open("memory://").unwrap();
        for name in ["run.json", "checkpoints", "samples", "../x"] {
            let result = store.put_run_file("r", name, Bytes::new()).await;
            assert!(result.is_err(), "{name} was accepted");
        }
        store
            .put_run_file("r", "stats.npz", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let read = store.read_run_file("r", "stats.npz").await.unwrap();
        assert_eq!(read.as_deref(), Some(&b"x"[..]));
    }
}
