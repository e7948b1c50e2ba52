//! Scheduling FID evaluations: a committed checkpoint that its run's `[eval]` settings make
//! due becomes a task for an evaluator, whose result or failure is recorded here.

use ssgan_proto::v1;

use crate::config::eval_settings;
use crate::evaluators::EvaluatorKey;
use crate::shared::Shared;

/// Queues an evaluation of a newly committed checkpoint when its run's config turns
/// evaluation on and the step is due, then hands out queued tasks.
///
/// NOTE: the worker's retention does not know about queued tasks, so a checkpoint that
/// waits longer than `checkpoint.keep` newer checkpoints is deleted first and its task fails.
pub(crate) fn on_checkpoint_committed(shared: &mut Shared, run_id: &str, step: u64, url: &str) {
    let Ok(entry) = shared.registry.get(run_id) else {
        return;
    };
    let Some(settings) = eval_settings(&entry.record.config_toml) else {
        return;
    };
    if !settings.is_due(step) {
        return;
    }
    let task = v1::EvaluationTask {
        run_id: run_id.to_owned(),
        step,
        checkpoint_url: url.to_owned(),
        storage_url: shared.registry.store().url().to_owned(),
        samples: settings.samples,
        seed: settings.seed,
        real_samples: settings.real_samples,
    };
    tracing::debug!(run_id, step, "evaluation queued");
    shared.evaluators.enqueue(task);
    shared.evaluators.dispatch();
}

/// Records an evaluator's result and gives the evaluator its next task.
pub(crate) async fn on_result(
    shared: &mut Shared,
    key: EvaluatorKey,
    result: v1::EvaluationResult,
) {
    if !shared.evaluators.finish(key, &result.run_id, result.step) {
        tracing::debug!(run_id = %result.run_id, step = result.step, "ignoring a result of a task this evaluator does not hold");
        return;
    }
    if let Err(error) = shared.registry.record_eval(&result.run_id, &result).await {
        tracing::warn!(run_id = %result.run_id, step = result.step, %error, "failed to record an evaluation");
    }
    shared.evaluators.dispatch();
}

/// Logs an evaluator's failure and gives the evaluator its next task. The failed task is
/// not retried, because the same checkpoint would most likely fail again.
pub(crate) fn on_failure(shared: &mut Shared, key: EvaluatorKey, failure: v1::EvaluationFailure) {
    if !shared.evaluators.finish(key, &failure.run_id, failure.step) {
        return;
    }
    tracing::warn!(run_id = %failure.run_id, step = failure.step, message = %failure.message, "evaluation failed");
    shared.evaluators.dispatch();
}
