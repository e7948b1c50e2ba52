//! `EvaluatorService`: one bidirectional stream per evaluator session.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use ssgan_proto::v1;
use ssgan_proto::v1::evaluator_command::Message as Outgoing;
use ssgan_proto::v1::evaluator_message::Message as Incoming;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::VERSION;
use crate::evaluation::{on_failure, on_result};
use crate::evaluators::EvaluatorKey;
use crate::shared::Core;

pub(crate) struct EvaluatorService {
    core: Core,
}

impl EvaluatorService {
    pub fn new(core: Core) -> Self {
        Self { core }
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::EvaluatorCommand, Status>> + Send>>;

#[tonic::async_trait]
impl v1::evaluator_service_server::EvaluatorService for EvaluatorService {
    type OpenEvaluatorSessionStream = SessionStream;

    async fn open_evaluator_session(
        &self,
        request: Request<Streaming<v1::EvaluatorMessage>>,
    ) -> Result<Response<SessionStream>, Status> {
        let mut inbound = request.into_inner();
        let join = read_join(&mut inbound, self.core.options.heartbeat_timeout).await?;
        check_version(&join)?;

        let (outbox, outgoing) = mpsc::unbounded_channel();
        let welcome = v1::Welcome {
            heartbeat_interval_ms: self.core.options.heartbeat_interval.as_millis() as u64,
        };
        let welcome = v1::EvaluatorCommand {
            message: Some(Outgoing::Welcome(welcome)),
        };
        let _ = outbox.send(Ok(welcome));
        let key = {
            let mut shared = self.core.lock().await;
            if shared.closing {
                return Err(Status::unavailable("the coordinator is shutting down"));
            }
            tracing::debug!(evaluator_id = %join.evaluator_id, threads = join.threads, "evaluator joined");
            let key = shared.evaluators.add(join.evaluator_id, outbox);
            shared.evaluators.dispatch();
            key
        };
        tokio::spawn(serve_session(self.core.clone(), key, inbound));
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            outgoing,
        ))))
    }
}

/// Reads the session's first message, which must be an EvaluatorJoin.
async fn read_join(
    inbound: &mut Streaming<v1::EvaluatorMessage>,
    timeout: Duration,
) -> Result<v1::EvaluatorJoin, Status> {
    let first = tokio::time::timeout(timeout, inbound.message())
        .await
        .map_err(|_| {
            Status::deadline_exceeded(format!(
                "no EvaluatorJoin within the heartbeat timeout {timeout:?}"
            ))
        })??;
    match first.and_then(|first| first.message) {
        Some(Incoming::Join(join)) => Ok(join),
        _ => Err(Status::invalid_argument(
            "the first message of an evaluator session must be an EvaluatorJoin",
        )),
    }
}

fn check_version(join: &v1::EvaluatorJoin) -> Result<(), Status> {
    if join.version == VERSION {
        return Ok(());
    }
    Err(Status::failed_precondition(format!(
        "evaluator {:?} runs ssgan version {:?}, but this coordinator runs {VERSION:?}; \
         run evaluators of the coordinator's version",
        join.evaluator_id, join.version
    )))
}

/// Reads a session's messages until the stream closes, the evaluator falls silent or the
/// coordinator shuts down. A lost evaluator's task goes back to the queue.
async fn serve_session(
    core: Core,
    key: EvaluatorKey,
    mut inbound: Streaming<v1::EvaluatorMessage>,
) {
    let mut shutdown = core.shutdown.clone();
    let timeout = core.options.heartbeat_timeout;
    let reason = loop {
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
    if shared.closing {
        return;
    }
    tracing::debug!(key, reason, "evaluator lost");
    shared.evaluators.remove(key);
    shared.evaluators.dispatch();
}

async fn handle_message(core: &Core, key: EvaluatorKey, message: v1::EvaluatorMessage) {
    let mut shared = core.lock().await;
    match message.message {
        Some(Incoming::Heartbeat(_)) | None => {}
        Some(Incoming::Join(join)) => {
            tracing::debug!(evaluator_id = %join.evaluator_id, "ignoring a repeated EvaluatorJoin");
        }
        Some(Incoming::Result(result)) => on_result(&mut shared, key, result).await,
        Some(Incoming::Failure(failure)) => on_failure(&mut shared, key, failure).await,
    }
}
