//! Ending attempts: stop requests, RunEnded outcomes, lost workers and restarts.
//!
//! Restart policy: a lost worker, a rank that reports FAILED, and a rank that reports ABORTED
//! without having been sent an Abort all end the attempt the same way. The coordinator sends
//! Abort to the ranks still training and moves a RUNNING run to RECOVERING, then back to
//! PENDING after the backoff, so that the scheduler starts attempt + 1 from the latest
//! committed checkpoint. After `restart_limit` restarts the run becomes FAILED instead. A run
//! that was STOPPING becomes FAILED at once, because the requested checkpoint was not written.

use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message;
use ssgan_proto::v1::run_ended::Outcome;
use ssgan_store::RunState;

use crate::error::RegistryError;
use crate::gang::Gang;
use crate::pool::SessionKey;
use crate::scheduler::schedule;
use crate::shared::{Core, Shared};

/// Handles StopRun: a run that trains gets Stop on every rank and becomes STOPPING; a run
/// that waits for workers or for a restart becomes STOPPED at once.
pub(crate) async fn stop_run(shared: &mut Shared, run_id: &str) -> Result<(), RegistryError> {
    let state = shared.registry.get(run_id)?.record.state;
    let Some(gang) = shared
        .gangs
        .get(run_id)
        .filter(|_| state == RunState::Running)
    else {
        shared
            .registry
            .transition(run_id, RunState::Stopped, "", |_| {})
            .await?;
        return Ok(());
    };
    let stop = v1::Stop {
        run_id: run_id.to_owned(),
        attempt: gang.attempt,
    };
    let members = gang.members.clone();
    shared
        .registry
        .transition(run_id, RunState::Stopping, "", |_| {})
        .await?;
    for key in members {
        shared.pool.send(key, Message::Stop(stop.clone()));
    }
    Ok(())
}

/// Handles a rank's RunEnded: frees the worker and ends the attempt when the outcome is a
/// failure or when every rank has ended.
pub(crate) async fn on_run_ended(
    core: &Core,
    shared: &mut Shared,
    key: SessionKey,
    ended: v1::RunEnded,
) {
    shared.pool.release(key, &ended.run_id, ended.attempt);
    let outcome = ended.outcome();
    tracing::debug!(run_id = %ended.run_id, attempt = ended.attempt, ?outcome, step = ended.step, "rank ended");
    let Some((gang, rank)) = shared.gangs.member(&ended.run_id, ended.attempt, key) else {
        schedule(shared).await;
        return;
    };
    let outcomes = gang.set_outcome(rank, outcome);
    if !matches!(outcome, Outcome::Finished | Outcome::Stopped) {
        let reason = failure_reason(rank, &ended);
        fail_attempt(core, shared, &ended.run_id, reason).await;
    } else if let Some(outcomes) = outcomes {
        shared.gangs.remove(&ended.run_id);
        finish_attempt(shared, &ended, &outcomes).await;
    }
    schedule(shared).await;
}

fn failure_reason(rank: usize, ended: &v1::RunEnded) -> String {
    let outcome = match ended.outcome() {
        Outcome::Failed => "failed",
        Outcome::Aborted => "aborted",
        _ => "ended without an outcome",
    };
    let mut reason = format!("rank {rank} {outcome} at step {}", ended.step);
    if !ended.message.is_empty() {
        reason = format!("{reason}: {}", ended.message);
    }
    reason
}

/// Moves a run whose ranks all ended FINISHED or STOPPED to SUCCEEDED or STOPPED.
async fn finish_attempt(shared: &mut Shared, ended: &v1::RunEnded, outcomes: &[Outcome]) {
    let state = if outcomes.iter().all(|outcome| *outcome == Outcome::Finished) {
        RunState::Succeeded
    } else {
        RunState::Stopped
    };
    let result = shared
        .registry
        .transition(&ended.run_id, state, "", |_| {})
        .await;
    if let Err(error) = result {
        tracing::warn!(run_id = %ended.run_id, attempt = ended.attempt, %error, "failed to end the run");
    }
}

/// Handles a closed or silent worker session. The run it trained, if any, loses its attempt.
pub(crate) async fn on_worker_lost(core: &Core, shared: &mut Shared, key: SessionKey, why: &str) {
    let Some(worker) = shared.pool.remove(key) else {
        return;
    };
    tracing::debug!(worker_id = %worker.worker_id, why, "worker lost");
    let Some(task) = worker.task else {
        return;
    };
    if shared
        .gangs
        .member(&task.run_id, task.attempt, key)
        .is_some()
    {
        let reason = format!(
            "worker {} (rank {}) lost: {why}",
            worker.worker_id, task.rank
        );
        fail_attempt(core, shared, &task.run_id, reason).await;
        schedule(shared).await;
    }
}

/// Ends a run's current attempt after a failure: Abort to the ranks still training, then
/// RECOVERING or FAILED as the module documentation describes.
async fn fail_attempt(core: &Core, shared: &mut Shared, run_id: &str, reason: String) {
    let Some(gang) = shared.gangs.remove(run_id) else {
        return;
    };
    abort_ranks(shared, run_id, &gang, &reason);
    let result = match shared.registry.get(run_id).map(|entry| entry.record.state) {
        Ok(RunState::Running) => recover(core, shared, run_id, &reason).await,
        Ok(_) => fail_run(shared, run_id, &reason).await,
        Err(error) => Err(error),
    };
    if let Err(error) = result {
        tracing::warn!(run_id, attempt = gang.attempt, %error, "failed to end a failed attempt");
    }
}

fn abort_ranks(shared: &Shared, run_id: &str, gang: &Gang, reason: &str) {
    let abort = v1::Abort {
        run_id: run_id.to_owned(),
        attempt: gang.attempt,
        reason: reason.to_owned(),
    };
    for key in gang.running_members() {
        shared.pool.send(key, Message::Abort(abort.clone()));
    }
}

async fn fail_run(shared: &mut Shared, run_id: &str, reason: &str) -> Result<(), RegistryError> {
    shared
        .registry
        .transition(run_id, RunState::Failed, reason, |_| {})
        .await?;
    Ok(())
}

/// Moves a RUNNING run to RECOVERING and schedules its return to PENDING, or to FAILED once
/// the restart limit is reached.
async fn recover(
    core: &Core,
    shared: &mut Shared,
    run_id: &str,
    reason: &str,
) -> Result<(), RegistryError> {
    let restarts = shared.registry.get(run_id)?.record.restarts;
    let limit = core.options.restart_limit;
    if restarts >= limit {
        let message = format!("{reason}; restart limit of {limit} reached");
        return fail_run(shared, run_id, &message).await;
    }
    shared
        .registry
        .transition(run_id, RunState::Recovering, reason, |record| {
            record.restarts += 1;
        })
        .await?;
    ssgan_telemetry::metrics::record_restart(run_id);
    let delay = core.options.backoff(restarts + 1);
    tokio::spawn(reschedule_after(core.clone(), run_id.to_owned(), delay));
    Ok(())
}

/// Moves a RECOVERING run back to PENDING after `delay`, unless it was stopped meanwhile or
/// the coordinator shuts down first.
async fn reschedule_after(core: Core, run_id: String, delay: std::time::Duration) {
    let mut shutdown = core.shutdown.clone();
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = shutdown.changed() => return,
    }
    let mut shared = core.lock().await;
    let Ok(entry) = shared.registry.get(&run_id) else {
        return;
    };
    if shared.closing || entry.record.state != RunState::Recovering {
        return;
    }
    let result = shared
        .registry
        .transition(&run_id, RunState::Pending, "", |_| {})
        .await;
    match result {
        Ok(_) => schedule(&mut shared).await,
        Err(error) => tracing::warn!(run_id, %error, "failed to reschedule a recovering run"),
    }
}
