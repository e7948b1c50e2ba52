//! Conversions between the run registry's records and the API messages.

use ssgan_proto::v1;
use ssgan_store::{EvalRecord, RunRecord, RunState, StepMetrics, Store};

pub(crate) fn state_to_proto(state: RunState) -> v1::RunState {
    match state {
        RunState::Pending => v1::RunState::Pending,
        RunState::Running => v1::RunState::Running,
        RunState::Stopping => v1::RunState::Stopping,
        RunState::Stopped => v1::RunState::Stopped,
        RunState::Succeeded => v1::RunState::Succeeded,
        RunState::Failed => v1::RunState::Failed,
        RunState::Recovering => v1::RunState::Recovering,
    }
}

pub(crate) fn metrics_to_proto(metrics: &StepMetrics) -> v1::StepMetrics {
    v1::StepMetrics {
        step: metrics.step,
        loss_d: metrics.loss_d,
        loss_g: metrics.loss_g,
        rotation_loss_d: metrics.rotation_loss_d,
        rotation_accuracy: metrics.rotation_accuracy,
        rotation_loss_g: metrics.rotation_loss_g,
        step_seconds: metrics.step_seconds,
        images_per_second: metrics.images_per_second,
    }
}

pub(crate) fn metrics_from_proto(metrics: &v1::StepMetrics) -> StepMetrics {
    StepMetrics {
        step: metrics.step,
        loss_d: metrics.loss_d,
        loss_g: metrics.loss_g,
        rotation_loss_d: metrics.rotation_loss_d,
        rotation_accuracy: metrics.rotation_accuracy,
        rotation_loss_g: metrics.rotation_loss_g,
        step_seconds: metrics.step_seconds,
        images_per_second: metrics.images_per_second,
    }
}

/// Returns a record's world size, reading 0 from records older than the field as 1.
pub(crate) fn world_size(record: &RunRecord) -> u32 {
    record.world_size.max(1)
}

/// Builds the API view of a run record.
pub(crate) fn run_to_proto(record: &RunRecord, store: &Store) -> v1::Run {
    let step = record.last_step.as_ref().map_or(0, |last| last.step);
    let latest_checkpoint_url = record
        .latest_step
        .map(|checkpoint| store.checkpoint_url(&record.run_id, checkpoint))
        .unwrap_or_default();
    v1::Run {
        run_id: record.run_id.clone(),
        state: state_to_proto(record.state).into(),
        step,
        target_steps: record.target_steps,
        latest_checkpoint_step: record.latest_step,
        best_checkpoint_step: record.best_step,
        latest_checkpoint_url,
        progress: progress(step, record.target_steps),
        eta_seconds: eta_seconds(record),
        last_step: record.last_step.as_ref().map(metrics_to_proto),
        world_size: world_size(record),
        attempt: record.attempts,
        config_toml: record.config_toml.clone(),
        message: record.message.clone(),
        created_unix_ms: record.created_unix_ms,
        updated_unix_ms: record.updated_unix_ms,
        evals: record.evals.iter().map(eval_to_proto).collect(),
        pending_evals: 0,
    }
}

fn eval_to_proto(eval: &EvalRecord) -> v1::EvalResult {
    v1::EvalResult {
        step: eval.step,
        fid: eval.fid,
        samples: eval.samples,
    }
}

fn progress(step: u64, target_steps: u64) -> f64 {
    if target_steps == 0 {
        return 0.0;
    }
    (step as f64 / target_steps as f64).clamp(0.0, 1.0)
}

/// Estimates the seconds left from the duration of the last step. Unknown while the run is
/// not running or before its first step.
fn eta_seconds(record: &RunRecord) -> Option<f64> {
    let last = record.last_step.as_ref()?;
    if record.state != RunState::Running || last.step_seconds <= 0.0 {
        return None;
    }
    let steps_left = record.target_steps.saturating_sub(last.step);
    Some(steps_left as f64 * last.step_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running_record(step: u64, step_seconds: f64) -> RunRecord {
        RunRecord {
            run_id: "r".to_owned(),
            state: RunState::Running,
            target_steps: 100,
            last_step: Some(StepMetrics {
                step,
                step_seconds,
                ..StepMetrics::default()
            }),
            ..RunRecord::default()
        }
    }

    #[test]
    fn eta_uses_last_step_seconds() {
        assert_eq!(eta_seconds(&running_record(40, 0.5)), Some(30.0));
    }

    #[test]
    fn eta_unknown_without_steps() {
        let record = RunRecord {
            state: RunState::Running,
            ..RunRecord::default()
        };
        assert_eq!(eta_seconds(&record), None);
    }

    #[test]
    fn progress_is_clamped() {
        assert_eq!(progress(150, 100), 1.0);
        assert_eq!(progress(25, 100), 0.25);
        assert_eq!(progress(3, 0), 0.0);
    }
}
