//! One connection to the coordinator: Join, Welcome, heartbeats, and the rank's messages.

use std::sync::Arc;
use std::time::Duration;

use ssgan_proto::v1::coordinator_message::Message as Inbound;
use ssgan_proto::v1::run_ended::Outcome as EndedOutcome;
use ssgan_proto::v1::worker_message::Message as Outbound;
use ssgan_proto::v1::worker_service_client::WorkerServiceClient;
use ssgan_proto::v1::{
    Abort, Assignment, CheckpointReport, CoordinatorMessage, Heartbeat, Join, Rendezvous,
    RingAddress, RunEnded, StepMetricsReport, Stop, WorkerMessage,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codec::Streaming;
use tonic::transport::Endpoint;

use super::collective::Bootstrap;
use super::job::{AttemptId, JobEvent, JobSpec, run_job};
use super::{AgentDevice, AgentError, AgentOptions};
use crate::config::RunConfig;
use crate::control::RunControl;

/// Time allowed for connecting and for the Welcome that follows the Join.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat interval used when the coordinator sends 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const OUTBOUND_CAPACITY: usize = 256;

/// Reason a session ended.
#[derive(Debug)]
pub(super) enum SessionEnd {
    /// The shutdown signal came.
    Shutdown,
    /// The connection failed or closed; `welcomed` is true when a Welcome had arrived.
    Lost { welcomed: bool },
}

/// The rank that the worker was assigned, if any.
enum JobState {
    Idle,
    /// Assignment accepted and bootstrap prepared; waiting for the Rendezvous.
    Pending(Box<Pending>),
    /// Training on a blocking thread until it sends [`JobEvent::Ended`].
    Running {
        id: AttemptId,
        control: Arc<RunControl>,
    },
}

struct Pending {
    id: AttemptId,
    rank: usize,
    world_size: usize,
    config: RunConfig,
    storage_url: String,
    resume_step: Option<u64>,
    bootstrap: Bootstrap,
    control: Arc<RunControl>,
}

type EventSender = mpsc::UnboundedSender<(AttemptId, JobEvent)>;
type EventReceiver = mpsc::UnboundedReceiver<(AttemptId, JobEvent)>;

pub(super) struct Session<'a> {
    options: &'a AgentOptions,
    device: &'a AgentDevice,
    worker_id: &'a str,
    stopped: watch::Receiver<bool>,
    outbound: Option<mpsc::Sender<WorkerMessage>>,
    state: JobState,
    events_tx: EventSender,
}

impl<'a> Session<'a> {
    pub fn new(
        options: &'a AgentOptions,
        device: &'a AgentDevice,
        worker_id: &'a str,
        stopped: watch::Receiver<bool>,
    ) -> Self {
        let (events_tx, _) = mpsc::unbounded_channel();
        Self {
            options,
            device,
            worker_id,
            stopped,
            outbound: None,
            state: JobState::Idle,
            events_tx,
        }
    }

    /// Connects, joins, and serves the coordinator's messages until the stream ends or the
    /// shutdown signal comes. Returns an error only for a permanent rejection.
    pub async fn run(mut self) -> Result<SessionEnd, AgentError> {
        let endpoint = endpoint(&self.options.coordinator_url)?;
        let (tx, rx) = mpsc::channel(OUTBOUND_CAPACITY);
        let _ = tx.send(self.join_message()).await;
        let url = &self.options.coordinator_url;
        let mut inbound = match open_stream(endpoint, rx).await {
            Ok(inbound) => inbound,
            Err(status) if is_rejection(&status) => {
                return Err(AgentError::Rejected {
                    url: url.clone(),
                    status,
                });
            }
            Err(status) => {
                tracing::warn!(worker_id = self.worker_id, %url, %status, "cannot connect to the coordinator");
                return Ok(SessionEnd::Lost { welcomed: false });
            }
        };
        let Some(interval) = self.read_welcome(&mut inbound).await else {
            return Ok(SessionEnd::Lost { welcomed: false });
        };
        tracing::debug!(worker_id = self.worker_id, %url, ?interval, "joined the coordinator");
        let heartbeat = tokio::spawn(send_heartbeats(tx.clone(), interval));
        self.outbound = Some(tx);
        let end = self.serve(&mut inbound).await;
        heartbeat.abort();
        Ok(end)
    }

    fn join_message(&self) -> WorkerMessage {
        outbound(Outbound::Join(Join {
            worker_id: self.worker_id.to_string(),
            device: self.options.device.clone(),
            threads: self.options.threads,
            version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: super::hostname(),
            gpu: self.device.gpu.clone(),
        }))
    }

    /// Waits for the Welcome and returns its heartbeat interval; None on any other message.
    async fn read_welcome(&self, inbound: &mut Streaming<CoordinatorMessage>) -> Option<Duration> {
        let first = tokio::time::timeout(CONNECT_TIMEOUT, inbound.message()).await;
        let message = match first {
            Ok(Ok(Some(message))) => message.message,
            Ok(Ok(None)) => None,
            Ok(Err(status)) => {
                tracing::warn!(worker_id = self.worker_id, %status, "the coordinator closed the stream before its Welcome");
                return None;
            }
            Err(_) => None,
        };
        match message {
            Some(Inbound::Welcome(welcome)) => {
                Some(heartbeat_interval(welcome.heartbeat_interval_ms))
            }
            other => {
                tracing::warn!(
                    worker_id = self.worker_id,
                    ?other,
                    "expected a Welcome from the coordinator"
                );
                None
            }
        }
    }

    async fn serve(&mut self, inbound: &mut Streaming<CoordinatorMessage>) -> SessionEnd {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        self.events_tx = events_tx;
        let mut stopped = self.stopped.clone();
        loop {
            tokio::select! {
                _ = super::shutdown_signalled(&mut stopped) => {
                    self.end_job("the worker is shutting down", &mut events).await;
                    return SessionEnd::Shutdown;
                }
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.handle(message).await,
                    Ok(None) => return self.lost("the coordinator closed the stream", &mut events).await,
                    Err(status) => return self.lost(&status.to_string(), &mut events).await,
                },
                Some((id, event)) = events.recv() => self.forward(id, event).await,
            }
        }
    }

    async fn lost(&mut self, reason: &str, events: &mut EventReceiver) -> SessionEnd {
        tracing::warn!(worker_id = self.worker_id, reason, "lost the coordinator");
        self.outbound = None;
        self.end_job(reason, events).await;
        SessionEnd::Lost { welcomed: true }
    }

    /// Aborts the current rank and waits until its thread has ended.
    async fn end_job(&mut self, reason: &str, events: &mut EventReceiver) {
        match std::mem::replace(&mut self.state, JobState::Idle) {
            JobState::Idle => return,
            JobState::Pending(pending) => {
                self.send_ended(&pending.id, EndedOutcome::Aborted, 0, reason)
                    .await;
                return;
            }
            JobState::Running { id, control } => {
                tracing::debug!(run_id = %id.run_id, attempt = id.attempt, reason, "aborting the rank");
                control.request_abort();
                self.state = JobState::Running { id, control };
            }
        }
        while let Some((id, event)) = events.recv().await {
            let ended = matches!(event, JobEvent::Ended { .. });
            self.forward(id, event).await;
            if ended && matches!(self.state, JobState::Idle) {
                return;
            }
        }
    }

    async fn handle(&mut self, message: CoordinatorMessage) {
        match message.message {
            Some(Inbound::Assignment(assignment)) => self.on_assignment(assignment).await,
            Some(Inbound::Rendezvous(rendezvous)) => self.on_rendezvous(rendezvous).await,
            Some(Inbound::Stop(stop)) => self.on_stop(stop),
            Some(Inbound::Abort(abort)) => self.on_abort(abort).await,
            Some(Inbound::Welcome(_)) | None => {
                tracing::debug!(
                    worker_id = self.worker_id,
                    "ignored an empty or repeated Welcome"
                )
            }
        }
    }

    async fn on_assignment(&mut self, assignment: Assignment) {
        let id = AttemptId {
            run_id: assignment.run_id.clone(),
            attempt: assignment.attempt,
        };
        if let Some(current) = self.current_id() {
            let message = format!(
                "the worker is busy with run {} attempt {}",
                current.run_id, current.attempt
            );
            self.send_ended(&id, EndedOutcome::Failed, 0, &message)
                .await;
            return;
        }
        match self.prepare(assignment, id.clone()) {
            Ok(pending) => {
                let (address, nccl_unique_id) = pending.bootstrap.report();
                tracing::debug!(run_id = %id.run_id, attempt = id.attempt, rank = pending.rank, %address, nccl = !nccl_unique_id.is_empty(), "assigned a rank");
                self.state = JobState::Pending(Box::new(pending));
                let reply = RingAddress {
                    run_id: id.run_id,
                    attempt: id.attempt,
                    address,
                    nccl_unique_id,
                };
                self.send(Outbound::RingAddress(reply)).await;
            }
            Err(message) => {
                tracing::error!(run_id = %id.run_id, attempt = id.attempt, error = %message, "cannot accept the assignment");
                self.send_ended(&id, EndedOutcome::Failed, 0, &message)
                    .await;
            }
        }
    }

    /// Validates an assignment and prepares its collective bootstrap.
    fn prepare(&self, assignment: Assignment, id: AttemptId) -> Result<Pending, String> {
        let origin = format!("the config of run {}", assignment.run_id);
        let config = RunConfig::from_toml(&assignment.config_toml, &origin, &[])
            .map_err(|e| e.to_string())?;
        let (rank, world_size) = (assignment.rank as usize, assignment.world_size as usize);
        if rank >= world_size {
            return Err(format!("rank {rank} is outside world size {world_size}"));
        }
        config.validate(world_size).map_err(|e| e.to_string())?;
        let bootstrap =
            Bootstrap::prepare(self.device.spec, rank, world_size, self.options.ring_host)?;
        Ok(Pending {
            id,
            rank,
            world_size,
            config,
            storage_url: assignment.storage_url,
            resume_step: assignment.resume_step,
            bootstrap,
            control: Arc::new(RunControl::default()),
        })
    }

    async fn on_rendezvous(&mut self, rendezvous: Rendezvous) {
        let id = AttemptId {
            run_id: rendezvous.run_id.clone(),
            attempt: rendezvous.attempt,
        };
        let pending = match std::mem::replace(&mut self.state, JobState::Idle) {
            JobState::Pending(pending) if pending.id == id => pending,
            other => {
                self.state = other;
                tracing::warn!(run_id = %id.run_id, attempt = id.attempt, "ignored a Rendezvous for an attempt this worker is not waiting for");
                return;
            }
        };
        let pending = *pending;
        let comm = match pending
            .bootstrap
            .complete(&rendezvous, pending.rank, pending.world_size)
        {
            Ok(comm) => comm,
            Err(message) => {
                tracing::error!(run_id = %id.run_id, attempt = id.attempt, rank = pending.rank, error = %message, "invalid Rendezvous");
                self.send_ended(&id, EndedOutcome::Failed, 0, &message)
                    .await;
                return;
            }
        };
        let control = pending.control.clone();
        let spec = JobSpec {
            id: pending.id,
            rank: pending.rank,
            config: pending.config,
            storage_url: pending.storage_url,
            resume_step: pending.resume_step,
            comm,
            device: self.device.device.clone(),
            control: pending.control,
        };
        self.start(spec, control);
    }

    fn start(&mut self, spec: JobSpec, control: Arc<RunControl>) {
        let id = spec.id.clone();
        let events = self.events_tx.clone();
        tokio::task::spawn_blocking(move || run_job(spec, events));
        self.state = JobState::Running { id, control };
    }

    fn on_stop(&mut self, stop: Stop) {
        let id = AttemptId {
            run_id: stop.run_id,
            attempt: stop.attempt,
        };
        match self.current_control(&id) {
            Some(control) => control.request_stop(),
            None => {
                tracing::debug!(run_id = %id.run_id, attempt = id.attempt, "ignored a Stop for another attempt")
            }
        }
    }

    async fn on_abort(&mut self, abort: Abort) {
        let id = AttemptId {
            run_id: abort.run_id,
            attempt: abort.attempt,
        };
        tracing::debug!(run_id = %id.run_id, attempt = id.attempt, reason = abort.reason, "abort requested");
        match &self.state {
            JobState::Pending(pending) if pending.id == id => {
                self.state = JobState::Idle;
                self.send_ended(&id, EndedOutcome::Aborted, 0, &abort.reason)
                    .await;
            }
            JobState::Running {
                id: current,
                control,
            } if *current == id => control.request_abort(),
            _ => {
                tracing::debug!(run_id = %id.run_id, attempt = id.attempt, "ignored an Abort for another attempt")
            }
        }
    }

    fn current_id(&self) -> Option<&AttemptId> {
        match &self.state {
            JobState::Idle => None,
            JobState::Pending(pending) => Some(&pending.id),
            JobState::Running { id, .. } => Some(id),
        }
    }

    fn current_control(&self, id: &AttemptId) -> Option<&Arc<RunControl>> {
        match &self.state {
            JobState::Pending(pending) if pending.id == *id => Some(&pending.control),
            JobState::Running {
                id: current,
                control,
            } if current == id => Some(control),
            _ => None,
        }
    }

    /// Sends a job's event to the coordinator; an ended job makes the worker idle again.
    async fn forward(&mut self, id: AttemptId, event: JobEvent) {
        let AttemptId { run_id, attempt } = id.clone();
        let message = match event {
            JobEvent::Step(metrics) => Outbound::Step(StepMetricsReport {
                run_id,
                attempt,
                metrics: Some(metrics),
            }),
            JobEvent::Checkpoint { step, url } => Outbound::Checkpoint(CheckpointReport {
                run_id,
                attempt,
                step,
                url,
            }),
            JobEvent::Ended {
                outcome,
                step,
                message,
            } => {
                if self.current_id() == Some(&id) {
                    self.state = JobState::Idle;
                }
                tracing::debug!(run_id, attempt, step, ?outcome, "rank ended");
                Outbound::Ended(ended(&id, outcome, step, &message))
            }
        };
        self.send(message).await;
    }

    async fn send_ended(&self, id: &AttemptId, outcome: EndedOutcome, step: u64, message: &str) {
        self.send(Outbound::Ended(ended(id, outcome, step, message)))
            .await;
    }

    async fn send(&self, message: Outbound) {
        let Some(tx) = &self.outbound else {
            return;
        };
        if tx.send(outbound(message)).await.is_err() {
            tracing::debug!(
                worker_id = self.worker_id,
                "the stream to the coordinator is closed"
            );
        }
    }
}

fn ended(id: &AttemptId, outcome: EndedOutcome, step: u64, message: &str) -> RunEnded {
    RunEnded {
        run_id: id.run_id.clone(),
        attempt: id.attempt,
        outcome: outcome as i32,
        step,
        message: message.to_string(),
    }
}

fn outbound(message: Outbound) -> WorkerMessage {
    WorkerMessage {
        message: Some(message),
    }
}

fn endpoint(url: &str) -> Result<Endpoint, AgentError> {
    let endpoint =
        Endpoint::from_shared(url.to_string()).map_err(|_| AgentError::InvalidOption {
            option: "coordinator_url",
            value: url.to_string(),
            expected: "an http:// or https:// URL such as http://127.0.0.1:50051",
        })?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT))
}

async fn open_stream(
    endpoint: Endpoint,
    outbound: mpsc::Receiver<WorkerMessage>,
) -> Result<Streaming<CoordinatorMessage>, tonic::Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = WorkerServiceClient::new(channel);
    let response = client.open_session(ReceiverStream::new(outbound)).await?;
    Ok(response.into_inner())
}

/// Returns true for statuses with which a coordinator rejects a worker for good, such as a
/// version mismatch, because reconnecting would get the same status.
fn is_rejection(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
    )
}

fn heartbeat_interval(millis: u64) -> Duration {
    match millis {
        0 => DEFAULT_HEARTBEAT,
        millis => Duration::from_millis(millis),
    }
}

async fn send_heartbeats(tx: mpsc::Sender<WorkerMessage>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if tx
            .send(outbound(Outbound::Heartbeat(Heartbeat {})))
            .await
            .is_err()
        {
            return;
        }
    }
}
