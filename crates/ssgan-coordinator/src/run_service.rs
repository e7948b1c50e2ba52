//! `RunService`, the public API: create, inspect, stop, resume and watch runs.

use ssgan_proto::v1;
use ssgan_store::{RunRecord, RunState, validate_run_id};
use tonic::{Request, Response, Status};

use crate::attempt::stop_run;
use crate::config;
use crate::convert::run_to_proto;
use crate::error::{RegistryError, store_status};
use crate::registry::{Registry, now_unix_ms};
use crate::scheduler::schedule;
use crate::shared::{Core, Shared};
use crate::watch::{WatchStream, watch_run};

pub(crate) struct RunService {
    core: Core,
}

impl RunService {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

#[tonic::async_trait]
impl v1::run_service_server::RunService for RunService {
    async fn create_run(
        &self,
        request: Request<v1::CreateRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let mut shared = self.core.lock().await;
        let run = create_run(&mut shared, request.into_inner()).await?;
        Ok(Response::new(run))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let shared = self.core.lock().await;
        Ok(Response::new(run_view(&shared, &request.get_ref().run_id)?))
    }

    async fn list_runs(
        &self,
        _request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let shared = self.core.lock().await;
        let mut records: Vec<&RunRecord> = shared.registry.records().collect();
        records.sort_by(|a, b| (b.created_unix_ms, &b.run_id).cmp(&(a.created_unix_ms, &a.run_id)));
        let store = shared.registry.store();
        let runs = records
            .iter()
            .map(|record| run_to_proto(record, store))
            .collect();
        Ok(Response::new(v1::ListRunsResponse { runs }))
    }

    async fn stop_run(
        &self,
        request: Request<v1::StopRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let run_id = &request.get_ref().run_id;
        let mut shared = self.core.lock().await;
        stop_run(&mut shared, run_id).await?;
        Ok(Response::new(run_view(&shared, run_id)?))
    }

    async fn resume_run(
        &self,
        request: Request<v1::ResumeRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let request = request.into_inner();
        let mut shared = self.core.lock().await;
        resume_run(&mut shared, &request).await?;
        schedule(&mut shared).await;
        Ok(Response::new(run_view(&shared, &request.run_id)?))
    }

    type WatchRunStream = WatchStream;

    async fn watch_run(
        &self,
        request: Request<v1::WatchRunRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let stream = watch_run(&self.core, request.get_ref()).await?;
        Ok(Response::new(stream))
    }
}

fn run_view(shared: &Shared, run_id: &str) -> Result<v1::Run, RegistryError> {
    let record = &shared.registry.get(run_id)?.record;
    let mut run = run_to_proto(record, shared.registry.store());
    run.pending_evals = shared.evaluators.pending(run_id);
    Ok(run)
}

/// Validates a CreateRun request, writes the new run's record and schedules it. A request
/// whose request_id created a run before returns that run.
async fn create_run(shared: &mut Shared, request: v1::CreateRunRequest) -> Result<v1::Run, Status> {
    if let Some(record) = find_request(&shared.registry, &request.request_id) {
        tracing::debug!(run_id = %record.run_id, request_id = %request.request_id, "repeated CreateRun");
        return Ok(run_to_proto(record, shared.registry.store()));
    }
    let record = new_record(&shared.registry, request)?;
    let run_id = record.run_id.clone();
    shared.registry.insert(record).await?;
    schedule(shared).await;
    Ok(run_view(shared, &run_id)?)
}

fn find_request<'a>(registry: &'a Registry, request_id: &str) -> Option<&'a RunRecord> {
    if request_id.is_empty() {
        return None;
    }
    registry.find_request(request_id)
}

/// Builds the record of a new run, checking every field of the request.
fn new_record(registry: &Registry, request: v1::CreateRunRequest) -> Result<RunRecord, Status> {
    let run_id = if request.run_id.is_empty() {
        generate_run_id(registry)
    } else {
        request.run_id
    };
    validate_run_id(&run_id)
        .map_err(|error| Status::invalid_argument(format!("run_id: {error}")))?;
    let world_size = request.workers.max(1);
    let target_steps = config::validate(&request.config_toml, world_size)?;
    if registry.contains(&run_id) {
        return Err(Status::already_exists(format!(
            "run_id: run {run_id:?} already exists"
        )));
    }
    let now = now_unix_ms();
    Ok(RunRecord {
        run_id,
        state: RunState::Pending,
        config_toml: request.config_toml,
        target_steps,
        created_unix_ms: now,
        updated_unix_ms: now,
        world_size,
        request_id: Some(request.request_id).filter(|id| !id.is_empty()),
        ..RunRecord::default()
    })
}

/// Returns an unused id of the form `run-<unix ms>` or `run-<unix ms>-<n>`.
fn generate_run_id(registry: &Registry) -> String {
    let base = format!("run-{}", now_unix_ms());
    let mut run_id = base.clone();
    let mut suffix = 1;
    while registry.contains(&run_id) {
        suffix += 1;
        run_id = format!("{base}-{suffix}");
    }
    run_id
}

/// Moves a STOPPED or FAILED run back to PENDING, from the requested checkpoint and with the
/// requested target steps. A SUCCEEDED run resumes only with a larger target.
async fn resume_run(shared: &mut Shared, request: &v1::ResumeRunRequest) -> Result<(), Status> {
    let run_id = &request.run_id;
    shared
        .registry
        .check_transition(run_id, RunState::Pending)?;
    check_succeeded_target(&shared.registry.get(run_id)?.record, request.target_steps)?;
    let resume_step = checked_resume_step(&shared.registry, run_id, request.step).await?;
    let record = &shared.registry.get(run_id)?.record;
    let start_step = resume_step.or(record.latest_step).unwrap_or(0);
    let config_toml = match request.target_steps {
        Some(target) => Some((target_config(record, target, start_step)?, target)),
        None => None,
    };
    shared
        .registry
        .transition(run_id, RunState::Pending, "", |record| {
            record.resume_step = resume_step;
            record.restarts = 0;
            if let Some((config_toml, target)) = config_toml {
                record.config_toml = config_toml;
                record.target_steps = target;
            }
        })
        .await?;
    Ok(())
}

/// Rejects the resume of a SUCCEEDED run that does not raise its target.
fn check_succeeded_target(record: &RunRecord, target_steps: Option<u64>) -> Result<(), Status> {
    if record.state != RunState::Succeeded || target_steps.is_some() {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "run {:?} is SUCCEEDED at step {}; pass target_steps above it to train further",
        record.run_id, record.target_steps
    )))
}

/// Fails unless `step` is unset or a committed checkpoint of the run.
async fn checked_resume_step(
    registry: &Registry,
    run_id: &str,
    step: Option<u64>,
) -> Result<Option<u64>, Status> {
    let Some(step) = step else {
        return Ok(None);
    };
    let committed = registry
        .store()
        .committed_steps(run_id)
        .await
        .map_err(store_status)?;
    if committed.contains(&step) {
        return Ok(Some(step));
    }
    Err(Status::invalid_argument(format!(
        "step: run {run_id:?} has no committed checkpoint at step {step}; committed steps: {committed:?}"
    )))
}

fn target_config(record: &RunRecord, target: u64, start_step: u64) -> Result<String, Status> {
    if target <= start_step {
        return Err(Status::invalid_argument(format!(
            "target_steps: {target} must be greater than the resume step {start_step}"
        )));
    }
    config::with_target_steps(&record.config_toml, target)
}
