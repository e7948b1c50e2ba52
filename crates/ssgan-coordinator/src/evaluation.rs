//! Scheduling FID evaluations: a committed checkpoint that its run's `[eval]` settings make
//! due becomes a task for an evaluator, whose result or failure is recorded here.

use ssgan_proto::v1;
use ssgan_store::RunState;

use crate::config::{checkpoint_keep, eval_settings};
use crate::evaluators::EvaluatorKey;
use crate::shared::Shared;

/// Queues an evaluation of a newly committed checkpoint when its run's config turns
/// evaluation on and the step is due, then hands out queued tasks. The step goes into the
/// run record's `pending_evals` first, so that the worker's retention keeps the checkpoint
/// until the evaluation ends.
pub(crate) async fn on_checkpoint_committed(
    shared: &mut Shared,
    run_id: &str,
    step: u64,
    url: &str,
) {
    let Some(task) = due_task(shared, run_id, step, url) else {
        return;
    };
    let marked = shared
        .registry
        .update(run_id, |record| record.add_pending_eval(step))
        .await;
    if let Err(error) = marked {
        tracing::warn!(run_id, step, %error, "failed to record a pending evaluation");
    }
    tracing::debug!(run_id, step, "evaluation queued");
    shared.evaluators.enqueue(task);
    shared.evaluators.dispatch();
}

/// Queues again the evaluations that run records list as pending, after a restart.
pub(crate) fn requeue_pending(shared: &mut Shared) {
    let store = shared.registry.store();
    let mut tasks = Vec::new();
    for record in shared.registry.records() {
        for step in &record.pending_evals {
            let url = store.checkpoint_url(&record.run_id, *step);
            tasks.extend(task_for(shared, &record.run_id, *step, &url));
        }
    }
    for task in tasks {
        tracing::debug!(run_id = %task.run_id, step = task.step, "requeueing a pending evaluation");
        shared.evaluators.enqueue(task);
    }
}

/// Returns the evaluation task of `step` when the run's config makes it due.
fn due_task(shared: &Shared, run_id: &str, step: u64, url: &str) -> Option<v1::EvaluationTask> {
    let settings = eval_settings(&shared.registry.get(run_id).ok()?.record.config_toml)?;
    if !settings.is_due(step) {
        return None;
    }
    task_for(shared, run_id, step, url)
}

/// Builds the task of `step` from the run's `[eval]` settings. Returns None when evaluation
/// is off.
fn task_for(shared: &Shared, run_id: &str, step: u64, url: &str) -> Option<v1::EvaluationTask> {
    let entry = shared.registry.get(run_id).ok()?;
    let settings = eval_settings(&entry.record.config_toml)?;
    Some(v1::EvaluationTask {
        run_id: run_id.to_owned(),
        step,
        checkpoint_url: url.to_owned(),
        storage_url: shared.registry.store().url().to_owned(),
        samples: settings.samples,
        seed: settings.seed,
        real_samples: settings.real_samples,
    })
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
    prune_ended_run(shared, &result.run_id).await;
    shared.evaluators.dispatch();
}

/// Applies checkpoint retention to a run that has ended, because the checkpoints that it
/// kept while their evaluation was pending, or while they were the best, may now go. A
/// running run is left to its rank 0, which applies retention after each commit.
async fn prune_ended_run(shared: &Shared, run_id: &str) {
    let Ok(entry) = shared.registry.get(run_id) else {
        return;
    };
    let record = &entry.record;
    if !matches!(
        record.state,
        RunState::Succeeded | RunState::Stopped | RunState::Failed
    ) {
        return;
    }
    let keep = checkpoint_keep(&record.config_toml);
    let protected = record.protected_steps();
    let store = shared.registry.store();
    match store.apply_retention(run_id, keep, &protected).await {
        Ok(deleted) => tracing::debug!(
            run_id,
            ?deleted,
            ?protected,
            "applied retention after an evaluation"
        ),
        Err(error) => {
            tracing::warn!(run_id, %error, "failed to apply retention after an evaluation")
        }
    }
}

/// Logs an evaluator's failure, drops the step from the run's pending evaluations and gives
/// the evaluator its next task. The failed task is not retried, because the same checkpoint
/// would most likely fail again.
pub(crate) async fn on_failure(
    shared: &mut Shared,
    key: EvaluatorKey,
    failure: v1::EvaluationFailure,
) {
    if !shared.evaluators.finish(key, &failure.run_id, failure.step) {
        return;
    }
    tracing::warn!(run_id = %failure.run_id, step = failure.step, message = %failure.message, "evaluation failed");
    let step = failure.step;
    let cleared = shared
        .registry
        .update(&failure.run_id, |record| record.drop_pending_eval(step))
        .await;
    if let Err(error) = cleared {
        tracing::warn!(run_id = %failure.run_id, step, %error, "failed to clear a pending evaluation");
    }
    shared.evaluators.dispatch();
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ssgan_store::{CheckpointFile, EvalRecord, RunRecord, Store};

    use super::*;
    use crate::evaluators::EvaluatorPool;
    use crate::gang::Gangs;
    use crate::pool::Pool;
    use crate::registry::Registry;

    const CONFIG: &str = "[train]\nsteps = 4\n[eval]\nevery = 2\nsamples = 8\n";

    async fn shared_with(record: RunRecord) -> Shared {
        let store = Store::open("memory://").unwrap();
        store.write_run(&record).await.unwrap();
        Shared {
            registry: Registry::load(store).await.unwrap(),
            pool: Pool::default(),
            gangs: Gangs::default(),
            evaluators: EvaluatorPool::default(),
            closing: false,
        }
    }

    fn record(pending: Vec<u64>) -> RunRecord {
        RunRecord {
            run_id: "r".to_owned(),
            state: RunState::Running,
            config_toml: CONFIG.to_owned(),
            target_steps: 4,
            pending_evals: pending,
            ..RunRecord::default()
        }
    }

    #[tokio::test]
    async fn due_checkpoint_becomes_pending() {
        let mut shared = shared_with(record(Vec::new())).await;
        on_checkpoint_committed(&mut shared, "r", 1, "memory:///runs/r/checkpoints/1").await;
        on_checkpoint_committed(&mut shared, "r", 2, "memory:///runs/r/checkpoints/2").await;
        assert_eq!(shared.evaluators.pending("r"), 1);
        let stored = shared
            .registry
            .store()
            .read_run("r")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.pending_evals, [2]);
    }

    #[tokio::test]
    async fn restart_requeues_pending_evaluations() {
        let mut shared = shared_with(record(vec![2, 4])).await;
        requeue_pending(&mut shared);
        assert_eq!(shared.evaluators.pending("r"), 2);
    }

    /// Commits a one-file checkpoint of every step in `steps`.
    async fn commit_steps(store: &Store, steps: &[u64]) {
        for &step in steps {
            let file = CheckpointFile {
                name: "g.safetensors".to_owned(),
                bytes: Bytes::from_static(b"weights"),
            };
            store
                .commit_checkpoint("r", step, vec![file])
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn ended_run_keeps_newest_and_best() {
        let mut ended = record(Vec::new());
        ended.state = RunState::Succeeded;
        ended.config_toml = format!("{CONFIG}[checkpoint]\nkeep = 1\n");
        ended.record_eval(EvalRecord {
            step: 2,
            fid: 10.0,
            samples: 8,
        });
        let shared = shared_with(ended.clone()).await;
        let store = shared.registry.store();
        commit_steps(store, &[2, 4, 6]).await;
        prune_ended_run(&shared, "r").await;
        assert_eq!(store.committed_steps("r").await.unwrap(), [2, 6]);

        // A running run is left to its rank 0.
        ended.state = RunState::Running;
        let shared = shared_with(ended).await;
        let store = shared.registry.store();
        commit_steps(store, &[8, 10]).await;
        prune_ended_run(&shared, "r").await;
        assert_eq!(store.committed_steps("r").await.unwrap(), [8, 10]);
    }
}
