//! One connection to the coordinator: join, welcome, heartbeats, and one task at a time.

use std::sync::Arc;
use std::time::Duration;

use ssgan_proto::v1;
use ssgan_proto::v1::evaluator_command::Message as Inbound;
use ssgan_proto::v1::evaluator_message::Message as Outbound;
use ssgan_proto::v1::evaluator_service_client::EvaluatorServiceClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::codec::Streaming;
use tonic::transport::Endpoint;

use crate::job::{EvalFile, FidModel};
use crate::{EvaluatorError, EvaluatorOptions};

/// Time allowed for connecting and for the Welcome that follows the join.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat interval used when the coordinator sends 0.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const OUTBOUND_CAPACITY: usize = 64;

/// Reason a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The shutdown signal came.
    Shutdown,
    /// The connection failed or closed; `welcomed` is true when a Welcome had arrived.
    Lost { welcomed: bool },
}

/// Outcome of one task, sent from its blocking thread back to the session.
type TaskOutcome = (v1::EvaluationTask, Result<EvalFile, String>);

pub(crate) struct Session<'a> {
    options: &'a EvaluatorOptions,
    evaluator_id: &'a str,
    model: Arc<FidModel>,
    stopped: watch::Receiver<bool>,
}

impl<'a> Session<'a> {
    pub fn new(
        options: &'a EvaluatorOptions,
        evaluator_id: &'a str,
        model: Arc<FidModel>,
        stopped: watch::Receiver<bool>,
    ) -> Self {
        Self {
            options,
            evaluator_id,
            model,
            stopped,
        }
    }

    /// Connects, joins, and runs the coordinator's tasks until the stream ends or the
    /// shutdown signal comes. Returns an error only for a permanent rejection.
    pub async fn run(self) -> Result<SessionEnd, EvaluatorError> {
        let url = &self.options.coordinator_url;
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| EvaluatorError::InvalidUrl { url: url.clone() })?
            .connect_timeout(CONNECT_TIMEOUT);
        let (outbound, receiver) = mpsc::channel(OUTBOUND_CAPACITY);
        let _ = outbound.send(message(Outbound::Join(self.join()))).await;
        let mut inbound = match open_stream(endpoint, receiver).await {
            Ok(inbound) => inbound,
            Err(status) if is_rejection(&status) => {
                return Err(EvaluatorError::Rejected {
                    url: url.clone(),
                    status,
                });
            }
            Err(status) => {
                tracing::debug!(evaluator_id = self.evaluator_id, %url, %status, "cannot connect to the coordinator");
                return Ok(SessionEnd::Lost { welcomed: false });
            }
        };
        let Some(interval) = read_welcome(&mut inbound).await else {
            return Ok(SessionEnd::Lost { welcomed: false });
        };
        tracing::debug!(evaluator_id = self.evaluator_id, %url, ?interval, "joined the coordinator");
        let heartbeat = tokio::spawn(send_heartbeats(outbound.clone(), interval));
        let end = self.serve(&mut inbound, &outbound).await;
        heartbeat.abort();
        Ok(end)
    }

    fn join(&self) -> v1::EvaluatorJoin {
        v1::EvaluatorJoin {
            evaluator_id: self.evaluator_id.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            threads: self.options.threads,
        }
    }

    async fn serve(
        &self,
        inbound: &mut Streaming<v1::EvaluatorCommand>,
        outbound: &mpsc::Sender<v1::EvaluatorMessage>,
    ) -> SessionEnd {
        let (done_sender, mut done) = mpsc::unbounded_channel::<TaskOutcome>();
        let mut stopped = self.stopped.clone();
        loop {
            tokio::select! {
                _ = crate::shutdown_signalled(&mut stopped) => return SessionEnd::Shutdown,
                outcome = done.recv() => {
                    let Some((task, outcome)) = outcome else { continue };
                    let _ = outbound.send(outcome_message(task, outcome)).await;
                }
                received = inbound.message() => match received {
                    Ok(Some(command)) => self.handle(command, &done_sender),
                    Ok(None) => return SessionEnd::Lost { welcomed: true },
                    Err(status) => {
                        tracing::debug!(evaluator_id = self.evaluator_id, %status, "the coordinator stream failed");
                        return SessionEnd::Lost { welcomed: true };
                    }
                },
            }
        }
    }

    /// Starts a task on a blocking thread; its outcome comes back through `done`.
    fn handle(&self, command: v1::EvaluatorCommand, done: &mpsc::UnboundedSender<TaskOutcome>) {
        let Some(Inbound::Task(task)) = command.message else {
            return;
        };
        tracing::debug!(evaluator_id = self.evaluator_id, run_id = %task.run_id, step = task.step, "evaluation started");
        let model = self.model.clone();
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = model.evaluate(&task).map_err(|error| error.to_string());
            let _ = done.send((task, outcome));
        });
    }
}

fn message(message: Outbound) -> v1::EvaluatorMessage {
    v1::EvaluatorMessage {
        message: Some(message),
    }
}

fn outcome_message(
    task: v1::EvaluationTask,
    outcome: Result<EvalFile, String>,
) -> v1::EvaluatorMessage {
    match outcome {
        Ok(eval) => message(Outbound::Result(v1::EvaluationResult {
            run_id: task.run_id,
            step: task.step,
            fid: eval.fid,
            samples: eval.samples,
        })),
        Err(error) => {
            tracing::debug!(run_id = %task.run_id, step = task.step, error, "evaluation failed");
            message(Outbound::Failure(v1::EvaluationFailure {
                run_id: task.run_id,
                step: task.step,
                message: error,
            }))
        }
    }
}

async fn open_stream(
    endpoint: Endpoint,
    outbound: mpsc::Receiver<v1::EvaluatorMessage>,
) -> Result<Streaming<v1::EvaluatorCommand>, tonic::Status> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let mut client = EvaluatorServiceClient::new(channel);
    let response = client
        .open_evaluator_session(ReceiverStream::new(outbound))
        .await?;
    Ok(response.into_inner())
}

/// Waits for the Welcome and returns the heartbeat interval it sets.
async fn read_welcome(inbound: &mut Streaming<v1::EvaluatorCommand>) -> Option<Duration> {
    let first = tokio::time::timeout(CONNECT_TIMEOUT, inbound.message()).await;
    match first {
        Ok(Ok(Some(v1::EvaluatorCommand {
            message: Some(Inbound::Welcome(welcome)),
        }))) => Some(match welcome.heartbeat_interval_ms {
            0 => DEFAULT_HEARTBEAT,
            millis => Duration::from_millis(millis),
        }),
        other => {
            tracing::debug!(?other, "expected a Welcome from the coordinator");
            None
        }
    }
}

/// Returns true for statuses with which a coordinator rejects an evaluator for good, such
/// as a version mismatch, because reconnecting would get the same status.
fn is_rejection(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        Code::FailedPrecondition | Code::InvalidArgument | Code::PermissionDenied
    )
}

async fn send_heartbeats(outbound: mpsc::Sender<v1::EvaluatorMessage>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let heartbeat = message(Outbound::Heartbeat(v1::Heartbeat {}));
        if outbound.send(heartbeat).await.is_err() {
            return;
        }
    }
}
