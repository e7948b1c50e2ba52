//! `WorkerService`: one bidirectional stream per worker session.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message as Outgoing;
use ssgan_proto::v1::worker_message::Message as Incoming;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::VERSION;
use crate::attempt::{on_run_ended, on_worker_lost};
use crate::evaluation::on_checkpoint_committed;
use crate::pool::SessionKey;
use crate::scheduler::schedule;
use crate::shared::{Core, Shared};

pub(crate) struct WorkerService {
    core: Core,
}

impl WorkerService {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl v1::worker_service_server::WorkerService for WorkerService {
    type OpenSessionStream = SessionStream;

    async fn open_session(
        &self,
        request: Request<Streaming<v1::WorkerMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let join = read_join(&mut inbound, self.core.options.heartbeat_timeout).await?;
        check_version(&join)?;

        let (outbox, outgoing) = mpsc::unbounded_channel();
        let welcome = v1::Welcome {
            heartbeat_interval_ms: self.core.options.heartbeat_interval.as_millis() as u64,
        };
        let _ = outbox.send(Ok(message(Outgoing::Welcome(welcome))));
        let key = add_worker(&self.core, join, outbox).await?;
        tokio::spawn(serve_session(self.core.clone(), key, inbound));
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            outgoing,
        ))))
    }
}

fn message(message: Outgoing) -> v1::CoordinatorMessage {
    v1::CoordinatorMessage {
        message: Some(message),
    }
}

/// Reads the session's first message, which must be a Join.
async fn read_join(
    inbound: &mut Streaming<v1::WorkerMessage>,
    timeout: Duration,
) -> Result<v1::Join, Status> {
    let first = tokio::time::timeout(timeout, inbound.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!("no Join within the heartbeat timeout {timeout:?}"))
        })??;
    match first.and_then(|first| first.message) {
        Some(Incoming::Join(join)) => Ok(join),
        _ => Err(Status::invalid_argument(
            "the first message of a worker session must be a Join",
        )),
    }
}

fn check_version(join: &v1::Join) -> Result<(), Status> {
    if join.version == VERSION {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "worker {:?} runs ssgan version {:?}, but this coordinator runs {VERSION:?}; \
         run workers of the coordinator's version",
        join.worker_id, join.version
    )))
}

async fn add_worker(
    core: &Core,
    join: v1::Join,
    outbox: crate::pool::Outbox,
) -> Result<SessionKey, Status> {
    let mut shared = core.lock().await;
    if shared.closing {
        return Err(Status::unavailable("the coordinator is shutting down"));
    }
    let nccl_version = join.gpu.as_ref().map(|gpu| gpu.nccl_version);
    match &join.gpu {
        Some(gpu) => tracing::debug!(
            worker_id = %join.worker_id, device = %join.device, hostname = %join.hostname,
            gpu = %gpu.name, nccl_version = gpu.nccl_version,
            cuda_driver_version = gpu.cuda_driver_version,
            cuda_runtime_version = gpu.cuda_runtime_version,
            driver_version = %gpu.driver_version,
            "GPU worker joined"
        ),
        None => {
            tracing::debug!(worker_id = %join.worker_id, device = %join.device, hostname = %join.hostname, "worker joined")
        }
    }
    let key = shared.pool.add(join.worker_id, nccl_version, outbox);
    schedule(&mut shared).await;
    Ok(key)
}

/// Reads a session's messages until the stream closes, the worker falls silent or the
/// coordinator shuts down.
async fn serve_session(core: Core, key: SessionKey, mut inbound: Streaming<v1::WorkerMessage>) {
    let mut shutdown = core.shutdown.clone();
    let timeout = core.options.heartbeat_timeout;
    let why = loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            next = tokio::time::timeout(timeout, inbound.message()) => next,
        };
        match next {
            Ok(Ok(Some(message))) => handle_message(&core, key, message).await,
            Ok(Ok(None)) => break "the stream closed".to_owned(),
            Ok(Err(status)) => break format!("the stream failed: {}", status.message()),
            Err(_) => break format!("no message within the heartbeat timeout {timeout:?}"),
        }
    };
    let mut shared = core.lock().await;
    if !shared.closing {
        on_worker_lost(&core, &mut shared, key, &why).await;
    }
}

async fn handle_message(core: &Core, key: SessionKey, message: v1::WorkerMessage) {
    let mut shared = core.lock().await;
    match message.message {
        Some(Incoming::Heartbeat(_)) | None => {}
        Some(Incoming::Join(join)) => {
            tracing::debug!(worker_id = %join.worker_id, "ignoring a repeated Join");
        }
        Some(Incoming::RingAddress(address)) => on_ring_address(&mut shared, key, address),
        Some(Incoming::Step(report)) => on_step(&mut shared, key, report),
        Some(Incoming::Checkpoint(report)) => on_checkpoint(&mut shared, key, report).await,
        Some(Incoming::Ended(ended)) => on_run_ended(core, &mut shared, key, ended).await,
    }
}

/// Stores a rank's ring address (and rank 0's NCCL unique id), and sends the Rendezvous to
/// every rank once all have reported.
fn on_ring_address(shared: &mut Shared, key: SessionKey, report: v1::RingAddress) {
    let Some((gang, rank)) = shared.gangs.member(&report.run_id, report.attempt, key) else {
        tracing::debug!(run_id = %report.run_id, attempt = report.attempt, "ignoring a ring address of an old attempt");
        return;
    };
    let reported = gang.set_address(rank, report.address, report.nccl_unique_id);
    let Some((addresses, nccl_unique_id)) = reported else {
        return;
    };
    let rendezvous = v1::Rendezvous {
        run_id: report.run_id.clone(),
        attempt: report.attempt,
        addresses,
        token: crate::gang::rendezvous_token(&report.run_id, report.attempt),
        nccl_unique_id,
    };
    tracing::debug!(run_id = %report.run_id, attempt = report.attempt, "sending rendezvous");
    for member in gang.members.clone() {
        shared
            .pool
            .send(member, Outgoing::Rendezvous(rendezvous.clone()));
    }
}

fn on_step(shared: &mut Shared, key: SessionKey, report: v1::StepMetricsReport) {
    if shared
        .gangs
        .member(&report.run_id, report.attempt, key)
        .is_none()
    {
        return;
    }
    if let Some(metrics) = report.metrics {
        tracing::trace!(run_id = %report.run_id, step = metrics.step, "step reported");
        shared.registry.record_step(&report.run_id, metrics);
    }
}

async fn on_checkpoint(shared: &mut Shared, key: SessionKey, report: v1::CheckpointReport) {
    if shared
        .gangs
        .member(&report.run_id, report.attempt, key)
        .is_none()
    {
        return;
    }
    let url = if report.url.is_empty() {
        shared
            .registry
            .store()
            .checkpoint_url(&report.run_id, report.step)
    } else {
        report.url
    };
    let result = shared
        .registry
        .record_checkpoint(&report.run_id, report.step, url.clone())
        .await;
    if let Err(error) = result {
        tracing::warn!(run_id = %report.run_id, attempt = report.attempt, %error, "failed to record a checkpoint");
        return;
    }
    on_checkpoint_committed(shared, &report.run_id, report.step, &url).await;
}
