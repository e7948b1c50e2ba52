//! Starting attempts: PENDING runs get idle workers, ranks and an Assignment each.

use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message;
use ssgan_store::{RunRecord, RunState};

use crate::convert::world_size;
use crate::error::RegistryError;
use crate::gang::Gang;
use crate::grouping::{Selection, select_members};
use crate::pool::{SessionKey, Task};
use crate::shared::Shared;

/// Starts every PENDING run for which enough workers are idle, oldest run first. The
/// workers of one attempt share a backend: see [`select_members`].
///
/// NOTE: a run that needs more workers than are idle is skipped, so smaller runs created later
/// may start first and a large run can wait for as long as small runs keep arriving.
pub(crate) async fn schedule(shared: &mut Shared) {
    if shared.closing {
        return;
    }
    for run_id in shared.registry.pending() {
        let Ok(entry) = shared.registry.get(&run_id) else {
            continue;
        };
        let world_size = world_size(&entry.record) as usize;
        let members = match select_members(&shared.pool.idle(), world_size) {
            Selection::Members(members) => members,
            Selection::TooFew => continue,
            Selection::Mixed { counts } => {
                tracing::debug!(
                    run_id,
                    world_size,
                    idle_by_nccl_version = ?counts,
                    "not starting the run: the idle workers mix CPU and GPU workers or NCCL versions"
                );
                continue;
            }
        };
        if let Err(error) = start_attempt(shared, &run_id, members).await {
            tracing::warn!(run_id, %error, "failed to start an attempt");
        }
    }
}

/// Moves a run to RUNNING with its next attempt number and sends each member its Assignment.
async fn start_attempt(
    shared: &mut Shared,
    run_id: &str,
    members: Vec<SessionKey>,
) -> Result<(), RegistryError> {
    let record = shared
        .registry
        .transition(run_id, RunState::Running, "", |record| {
            record.attempts += 1;
        })
        .await?
        .clone();
    let storage_url = shared.registry.store().url().to_owned();
    for (rank, key) in members.iter().enumerate() {
        let assignment = assignment(&record, rank as u32, &storage_url);
        let task = Task {
            run_id: run_id.to_owned(),
            attempt: record.attempts,
            rank: rank as u32,
        };
        shared.pool.assign(*key, task);
        shared.pool.send(*key, Message::Assignment(assignment));
    }
    shared
        .gangs
        .insert(run_id.to_owned(), Gang::new(record.attempts, members));
    Ok(())
}

fn assignment(record: &RunRecord, rank: u32, storage_url: &str) -> v1::Assignment {
    v1::Assignment {
        run_id: record.run_id.clone(),
        attempt: record.attempts,
        rank,
        world_size: world_size(record),
        config_toml: record.config_toml.clone(),
        storage_url: storage_url.to_owned(),
        resume_step: record.resume_step,
    }
}
