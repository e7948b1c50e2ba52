//! The run registry: every run's record, kept in memory and written through to
//! `runs/<run_id>/run.json`, with the recent step metrics and the event channel of each run.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use ssgan_proto::v1;
use ssgan_store::{EvalRecord, RunRecord, RunState, Store, StoreError};
use tokio::sync::broadcast;

use crate::convert::{metrics_from_proto, state_to_proto};
use crate::error::RegistryError;
use crate::state::{is_legal, state_after_restart, state_name};

/// Step metrics kept per run for WatchRun replays. Older steps are dropped.
const HISTORY_STEPS: usize = 10_000;

/// Events buffered per run for slow watchers. A watcher that falls further behind skips the
/// oldest events.
const EVENT_BUFFER: usize = 1024;

/// One run of the registry.
pub(crate) struct RunEntry {
    pub record: RunRecord,
    /// Step metrics of the current coordinator's lifetime, oldest first.
    pub history: VecDeque<v1::StepMetrics>,
    pub events: broadcast::Sender<v1::RunEvent>,
}

impl RunEntry {
    fn new(record: RunRecord) -> Self {
        Self {
            record,
            history: VecDeque::new(),
            events: broadcast::channel(EVENT_BUFFER).0,
        }
    }

    fn publish(&self, event: v1::run_event::Event) {
        // A send fails only when the run has no watcher.
        let _ = self.events.send(v1::RunEvent { event: Some(event) });
    }
}

/// Records of every run, by run id.
pub(crate) struct Registry {
    store: Store,
    runs: BTreeMap<String, RunEntry>,
}

impl Registry {
    /// Loads every run record of the store. Runs whose attempt died with a previous
    /// coordinator change state as [`state_after_restart`] returns, and the change is written.
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let mut registry = Self {
            store,
            runs: BTreeMap::new(),
        };
        for run_id in registry.store.list_runs().await? {
            registry.load_run(&run_id).await?;
        }
        Ok(registry)
    }

    async fn load_run(&mut self, run_id: &str) -> Result<(), StoreError> {
        let Some(mut record) = self.store.read_run(run_id).await? else {
            tracing::debug!(run_id, "skipping a run directory without run.json");
            return Ok(());
        };
        let state = state_after_restart(record.state);
        if state != record.state {
            log_transition(&record, state, "coordinator restarted");
            record.state = state;
            record.updated_unix_ms = now_unix_ms();
            self.store.write_run(&record).await?;
        }
        self.runs.insert(run_id.to_owned(), RunEntry::new(record));
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get(&self, run_id: &str) -> Result<&RunEntry, RegistryError> {
        self.runs
            .get(run_id)
            .ok_or_else(|| RegistryError::NotFound(run_id.to_owned()))
    }

    pub fn contains(&self, run_id: &str) -> bool {
        self.runs.contains_key(run_id)
    }

    pub fn records(&self) -> impl Iterator<Item = &RunRecord> {
        self.runs.values().map(|entry| &entry.record)
    }

    /// Returns the run that a CreateRun request with `request_id` created.
    pub fn find_request(&self, request_id: &str) -> Option<&RunRecord> {
        self.records()
            .find(|record| record.request_id.as_deref() == Some(request_id))
    }

    /// Returns the ids of PENDING runs, oldest first.
    pub fn pending(&self) -> Vec<String> {
        let mut pending: Vec<&RunRecord> = self
            .records()
            .filter(|record| record.state == RunState::Pending)
            .collect();
        pending.sort_by_key(|record| record.created_unix_ms);
        pending.iter().map(|record| record.run_id.clone()).collect()
    }

    /// Writes a new run's record and adds it.
    pub async fn insert(&mut self, record: RunRecord) -> Result<(), RegistryError> {
        self.store.write_run(&record).await?;
        log_transition(&record, record.state, "created");
        self.runs
            .insert(record.run_id.clone(), RunEntry::new(record));
        Ok(())
    }

    /// Applies `edit` to a copy of a run's record, writes the copy and then keeps it, so that
    /// a failed write leaves the registry unchanged.
    pub async fn update(
        &mut self,
        run_id: &str,
        edit: impl FnOnce(&mut RunRecord),
    ) -> Result<&RunRecord, RegistryError> {
        let mut record = self.get(run_id)?.record.clone();
        edit(&mut record);
        record.updated_unix_ms = now_unix_ms();
        self.store.write_run(&record).await?;
        let entry = self.runs.get_mut(run_id).expect("run checked above");
        entry.record = record;
        Ok(&entry.record)
    }

    /// Moves a run to `to` with `message`, after applying `edit`, and publishes the change to its watchers.
    /// Fails with [`RegistryError::IllegalTransition`] when the state machine forbids it.
    pub async fn transition(
        &mut self,
        run_id: &str,
        to: RunState,
        message: &str,
        edit: impl FnOnce(&mut RunRecord),
    ) -> Result<&RunRecord, RegistryError> {
        self.check_transition(run_id, to)?;
        let record = self
            .update(run_id, |record| {
                edit(record);
                log_transition(record, to, message);
                record.state = to;
                record.message = message.to_owned();
            })
            .await?;
        let change = v1::StateChange {
            state: state_to_proto(to).into(),
            attempt: record.attempts,
            message: message.to_owned(),
        };
        self.get(run_id)?
            .publish(v1::run_event::Event::State(change));
        Ok(&self.get(run_id)?.record)
    }

    /// Fails unless the run exists and may move to `to`.
    pub fn check_transition(&self, run_id: &str, to: RunState) -> Result<(), RegistryError> {
        let from = self.get(run_id)?.record.state;
        if is_legal(from, to) {
            return Ok(());
        }
        Err(RegistryError::IllegalTransition {
            run_id: run_id.to_owned(),
            from: state_name(from),
            to: state_name(to),
        })
    }

    /// Keeps a step's metrics as the run's last step and publishes them to its watchers. The metrics are
    /// written to run.json with the run's next write, not on every step.
    pub fn record_step(&mut self, run_id: &str, metrics: v1::StepMetrics) {
        let Some(entry) = self.runs.get_mut(run_id) else {
            return;
        };
        entry.record.last_step = Some(metrics_from_proto(&metrics));
        if entry.history.len() == HISTORY_STEPS {
            entry.history.pop_front();
        }
        entry.history.push_back(metrics);
        entry.publish(v1::run_event::Event::Step(metrics));
    }

    /// Records a committed checkpoint and publishes it to the run's watchers.
    pub async fn record_checkpoint(
        &mut self,
        run_id: &str,
        step: u64,
        url: String,
    ) -> Result<(), RegistryError> {
        self.update(run_id, |record| {
            record.latest_step = Some(record.latest_step.map_or(step, |latest| latest.max(step)));
            // The next attempt starts from the newest checkpoint again.
            record.resume_step = None;
        })
        .await?;
        tracing::debug!(run_id, step, url, "checkpoint committed");
        let checkpoint = v1::CheckpointCommitted { step, url };
        self.get(run_id)?
            .publish(v1::run_event::Event::Checkpoint(checkpoint));
        Ok(())
    }
}

impl Registry {
    /// Records a checkpoint's FID with [`RunRecord::record_eval`], writes run.json and
    /// publishes the result.
    pub async fn record_eval(
        &mut self,
        run_id: &str,
        result: &v1::EvaluationResult,
    ) -> Result<(), RegistryError> {
        let eval = EvalRecord {
            step: result.step,
            fid: result.fid,
            samples: result.samples,
        };
        let record = self
            .update(run_id, |record| record.record_eval(eval))
            .await?;
        tracing::debug!(run_id, step = result.step, fid = result.fid, best_step = ?record.best_step, "evaluation recorded");
        let event = v1::EvalResult {
            step: result.step,
            fid: result.fid,
            samples: result.samples,
        };
        self.get(run_id)?.publish(v1::run_event::Event::Eval(event));
        Ok(())
    }
}

fn log_transition(record: &RunRecord, to: RunState, message: &str) {
    tracing::debug!(
        run_id = %record.run_id,
        attempt = record.attempts,
        from = state_name(record.state),
        to = state_name(to),
        message,
        "run state changed"
    );
}

/// Returns the current time in milliseconds since the Unix epoch.
pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
