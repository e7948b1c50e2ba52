//! The run record (`run.json`) of a run that this process owns.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ssgan_store::{BlockingStore, RunRecord, RunState};

use crate::config::RunConfig;
use crate::error::{Result, WorkerError};

/// Interval between run-record updates while training, so that others can tell it is alive.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(30);
/// Age after which a RUNNING record counts as left behind by a process that died.
const STALE_AFTER: Duration = Duration::from_secs(120);

/// Reads the run's record, or starts a new one, for training in this single process.
/// Rejects a run that another process trains, and one of several worker processes.
pub(super) fn open_record(
    store: &BlockingStore,
    run_id: &str,
    config: &RunConfig,
) -> Result<RunRecord> {
    let Some(record) = store.read_run(run_id)? else {
        return Ok(new_record(run_id, config));
    };
    if record.world_size > 1 {
        return Err(WorkerError::WorldSizeMismatch {
            run_id: record.run_id,
            world_size: record.world_size,
        });
    }
    check_not_active(record)
}

/// The run record of a run that this process owns, shared by the trainer and the threads
/// that add to it, such as an FID evaluation beside training.
///
/// Every change writes run.json while the lock is held, so the writes reach storage in the
/// order of the changes and none overwrites another's fields.
#[derive(Clone, Debug)]
pub struct SharedRecord {
    record: Arc<Mutex<RunRecord>>,
}

impl SharedRecord {
    pub(super) fn new(record: RunRecord) -> Self {
        Self {
            record: Arc::new(Mutex::new(record)),
        }
    }

    /// Applies `change` to the record, stamps the update time and writes run.json.
    ///
    /// When the write fails, the change stays in memory and goes out with the next one.
    pub fn update<T>(
        &self,
        store: &BlockingStore,
        change: impl FnOnce(&mut RunRecord) -> T,
    ) -> Result<T> {
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let value = change(&mut record);
        record.updated_unix_ms = now_ms();
        store.write_run(&record)?;
        Ok(value)
    }

    /// Returns a copy of the record as it is in memory.
    pub fn snapshot(&self) -> RunRecord {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        record.clone()
    }
}

/// Stores the run's config and its target step in the record.
pub(super) fn set_config(record: &mut RunRecord, config: &RunConfig) {
    record.target_steps = config.train.steps;
    record.config_toml = config.to_toml();
}

/// Rejects a run that another process is training, which is the case when its record is
/// RUNNING and was updated within [`STALE_AFTER`]. A process that died leaves a RUNNING record
/// behind, and that record counts as stale once it is older than [`STALE_AFTER`].
fn check_not_active(record: RunRecord) -> Result<RunRecord> {
    let age_ms = now_ms().saturating_sub(record.updated_unix_ms);
    let fresh = age_ms < STALE_AFTER.as_millis() as u64;
    if record.state == RunState::Running && fresh {
        return Err(WorkerError::RunActive {
            run_id: record.run_id,
            seconds_ago: age_ms / 1000,
            stale_after: STALE_AFTER.as_secs(),
        });
    }
    Ok(record)
}

fn new_record(run_id: &str, config: &RunConfig) -> RunRecord {
    let now = now_ms();
    RunRecord {
        run_id: run_id.to_string(),
        state: RunState::Pending,
        config_toml: config.to_toml(),
        attempts: 0,
        latest_step: None,
        best_step: None,
        target_steps: config.train.steps,
        created_unix_ms: now,
        updated_unix_ms: now,
        world_size: 1,
        ..RunRecord::default()
    }
}

pub(super) fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    since_epoch.as_millis() as u64
}
