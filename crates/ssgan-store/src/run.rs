//! Run records and sample images.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::eval::EvalRecord;
use crate::layout::validate_run_id;
use crate::{Store, StoreError};

/// State of a training run as stored in its `run.json`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    #[default]
    Pending,
    Running,
    Stopping,
    Stopped,
    Succeeded,
    Failed,
    Recovering,
}

/// Contents of `runs/<run_id>/run.json`.
///
/// Fields added after the first version carry `#[serde(default)]`, so older records still read.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RunRecord {
    pub run_id: String,
    pub state: RunState,
    /// The run's training configuration as TOML text.
    pub config_toml: String,
    /// Number of times the run has been started, counting the first start.
    pub attempts: u32,
    /// Step of the latest committed checkpoint.
    pub latest_step: Option<u64>,
    /// Step of the checkpoint with the best FID.
    pub best_step: Option<u64>,
    pub target_steps: u64,
    /// Milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub updated_unix_ms: u64,
    /// Number of worker processes. Records written before this field existed read as 0,
    /// which means 1.
    #[serde(default)]
    pub world_size: u32,
    /// Idempotency key of the CreateRun request that created the run.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Reason the run failed or is recovering; empty in other states.
    #[serde(default)]
    pub message: String,
    /// Metrics of the last step that rank 0 reported.
    #[serde(default)]
    pub last_step: Option<StepMetrics>,
    /// Committed checkpoint step that the next attempt starts from. `None`: the latest
    /// committed one.
    #[serde(default)]
    pub resume_step: Option<u64>,
    /// Restarts after a lost worker or a failed attempt since the run was created or last
    /// resumed, which the coordinator's restart limit bounds.
    #[serde(default)]
    pub restarts: u32,
    /// FID results that the evaluator reported, in the order they arrived, one per step.
    #[serde(default)]
    pub evals: Vec<EvalRecord>,
    /// Checkpoint steps whose evaluation is queued or running. Retention keeps them, and a
    /// restarted coordinator queues them again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_evals: Vec<u64>,
}

impl RunRecord {
    /// Records a checkpoint's FID, replacing an earlier result of the same step, removes the
    /// step from `pending_evals` and moves `best_step` to the lowest finite FID.
    pub fn record_eval(&mut self, eval: EvalRecord) {
        self.evals.retain(|earlier| earlier.step != eval.step);
        self.drop_pending_eval(eval.step);
        self.evals.push(eval);
        self.best_step = best_step(&self.evals);
    }

    /// Adds `step` to `pending_evals` unless it is there already.
    pub fn add_pending_eval(&mut self, step: u64) {
        if !self.pending_evals.contains(&step) {
            self.pending_evals.push(step);
        }
    }

    /// Removes `step` from `pending_evals`, as after a failed evaluation.
    pub fn drop_pending_eval(&mut self, step: u64) {
        self.pending_evals.retain(|pending| *pending != step);
    }

    /// Returns the checkpoint steps that retention must keep beyond the newest ones: the
    /// best-FID step and the steps whose evaluation is pending.
    pub fn protected_steps(&self) -> Vec<u64> {
        let best = self.best_step.into_iter();
        best.chain(self.pending_evals.iter().copied()).collect()
    }
}

/// Returns the step with the lowest finite FID; the earlier step wins a tie.
fn best_step(evals: &[EvalRecord]) -> Option<u64> {
    evals
        .iter()
        .filter(|eval| eval.fid.is_finite())
        .min_by(|a, b| a.fid.total_cmp(&b.fid).then(a.step.cmp(&b.step)))
        .map(|eval| eval.step)
}

/// Metrics of one generator step, as reported by rank 0.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct StepMetrics {
    /// Generator steps completed, this one included.
    pub step: u64,
    pub loss_d: f64,
    pub loss_g: f64,
    pub rotation_loss_d: f64,
    /// Fraction of rotated real images whose rotation the discriminator predicts.
    pub rotation_accuracy: f64,
    pub rotation_loss_g: f64,
    pub step_seconds: f64,
    pub images_per_second: f64,
}

impl Store {
    /// Reads a run's record, returning `Ok(None)` when the run has none.
    ///
    /// Fails with [`StoreError::InvalidRunRecord`] when `run.json` is not a valid record or
    /// names another run.
    pub async fn read_run(&self, run_id: &str) -> Result<Option<RunRecord>, StoreError> {
        validate_run_id(run_id)?;
        let location = self.layout.run_record(run_id);
        let Some(json) = self.read_optional(&location).await? else {
            return Ok(None);
        };

        let url = self.object_url(&location);
        let record = parse_run_record(&json, run_id, &url)?;
        tracing::trace!(run_id, state = ?record.state, "read run record");
        Ok(Some(record))
    }

    /// Writes a run's record, replacing the previous one.
    pub async fn write_run(&self, record: &RunRecord) -> Result<(), StoreError> {
        validate_run_id(&record.run_id)?;
        let json = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Encode {
            document: "run record",
            source,
        })?;
        let location = self.layout.run_record(&record.run_id);
        self.write(&location, Bytes::from(json)).await?;
        tracing::debug!(run_id = %record.run_id, state = ?record.state, "wrote run record");
        Ok(())
    }

    /// Lists the ids of the runs under `runs/`, sorted.
    ///
    /// A run is listed once any object exists under its directory, whether or not it has a
    /// record. On a local store, an empty run directory is listed too. Directory names that are
    /// not valid run ids are skipped.
    pub async fn list_runs(&self) -> Result<Vec<String>, StoreError> {
        let runs = self.layout.runs();
        let listing = self
            .object_store
            .list_with_delimiter(Some(&runs))
            .await
            .map_err(|source| self.backend_error("list", &runs, source))?;

        let mut run_ids: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename())
            .filter(|name| validate_run_id(name).is_ok())
            .map(str::to_owned)
            .collect();
        run_ids.sort();
        run_ids.dedup();
        Ok(run_ids)
    }

    /// Writes a PNG sample grid to `runs/<run_id>/samples/<step:010>.png`, replacing any
    /// earlier one, and returns its URL.
    pub async fn put_sample(
        &self,
        run_id: &str,
        step: u64,
        png: Bytes,
    ) -> Result<String, StoreError> {
        validate_run_id(run_id)?;
        let location = self.layout.sample(run_id, step);
        self.write(&location, png).await?;
        let url = self.object_url(&location);
        tracing::debug!(run_id, step, url = %url, "wrote sample grid");
        Ok(url)
    }
}

fn parse_run_record(json: &[u8], run_id: &str, url: &str) -> Result<RunRecord, StoreError> {
    let invalid = |reason: String| StoreError::InvalidRunRecord {
        url: url.to_owned(),
        reason,
    };
    let record: RunRecord =
        serde_json::from_slice(json).map_err(|error| invalid(error.to_string()))?;
    if record.run_id != run_id {
        return Err(invalid(format!(
            "it names run {:?}, but is stored under run {run_id:?}",
            record.run_id
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(step: u64, fid: f64) -> EvalRecord {
        EvalRecord {
            step,
            fid,
            samples: 16,
        }
    }

    #[test]
    fn best_step_picks_lowest_fid() {
        assert_eq!(best_step(&[]), None);
        let evals = [eval(10, 50.0), eval(20, 30.0), eval(30, 40.0)];
        assert_eq!(best_step(&evals), Some(20));
    }

    #[test]
    fn best_step_skips_nan_and_prefers_earlier_tie() {
        let evals = [eval(10, f64::NAN), eval(20, 30.0), eval(30, 30.0)];
        assert_eq!(best_step(&evals), Some(20));
    }

    #[test]
    fn record_eval_replaces_and_clears_pending() {
        let mut record = RunRecord::default();
        record.add_pending_eval(10);
        record.add_pending_eval(20);
        record.add_pending_eval(20);
        assert_eq!(record.pending_evals, [10, 20]);
        record.record_eval(eval(10, 50.0));
        record.record_eval(eval(20, 40.0));
        record.record_eval(eval(10, 30.0));
        assert!(record.pending_evals.is_empty());
        assert_eq!(record.evals.len(), 2);
        assert_eq!(record.best_step, Some(10));
    }

    #[test]
    fn protected_steps_lists_best_and_pending() {
        let mut record = RunRecord::default();
        record.record_eval(eval(10, 5.0));
        record.add_pending_eval(30);
        assert_eq!(record.protected_steps(), [10, 30]);
    }

    #[test]
    fn run_state_serialises_in_screaming_snake_case() {
        let json = serde_json::to_string(&RunState::Recovering).unwrap();
        assert_eq!(json, "\"RECOVERING\"");
        let parsed: RunState = serde_json::from_str("\"SUCCEEDED\"").unwrap();
        assert_eq!(parsed, RunState::Succeeded);
    }

    #[test]
    fn run_record_without_newer_fields_reads() {
        let json = br#"{"run_id":"a","state":"RUNNING","config_toml":"","attempts":2,
            "latest_step":null,"best_step":null,"target_steps":5,
            "created_unix_ms":1,"updated_unix_ms":2}"#;
        let record = parse_run_record(json, "a", "u").unwrap();
        assert_eq!(record.attempts, 2);
        assert_eq!(record.world_size, 0);
        assert_eq!(record.request_id, None);
        assert_eq!(record.last_step, None);
        assert!(record.evals.is_empty());
    }

    #[test]
    fn parse_run_record_rejects_other_run() {
        let record = RunRecord {
            run_id: "a".to_owned(),
            state: RunState::Pending,
            config_toml: String::new(),
            attempts: 0,
            latest_step: None,
            best_step: None,
            target_steps: 1,
            created_unix_ms: 0,
            updated_unix_ms: 0,
            ..RunRecord::default()
        };
        let json = serde_json::to_vec(&record).unwrap();
        let error = parse_run_record(&json, "b", "u").unwrap_err();
        assert!(matches!(error, StoreError::InvalidRunRecord { .. }));
        assert!(error.to_string().contains("\"b\""), "{error}");
        assert_eq!(parse_run_record(&json, "a", "u").unwrap(), record);
    }
}
