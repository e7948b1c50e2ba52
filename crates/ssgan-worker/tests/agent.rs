//! Two worker agents against a minimal coordinator written for this test, on 127.0.0.1:
//! join, assignment, rendezvous, reports, an agreed stop, a resume, and shutdown.

mod common;

use std::time::Duration;

use ssgan_proto::v1::coordinator_message::Message as ToWorker;
use ssgan_proto::v1::run_ended::Outcome as EndedOutcome;
use ssgan_proto::v1::worker_message::Message as FromWorker;
use ssgan_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use ssgan_proto::v1::{
    Assignment, CoordinatorMessage, Join, Rendezvous, RunEnded, Stop, Welcome, WorkerMessage,
};
use ssgan_store::BlockingStore;
use ssgan_worker::agent::{AgentOptions, run_agent};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Maximum wait for any one message from a worker.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A worker session on the test coordinator's side.
struct Link {
    join: Join,
    to_worker: mpsc::Sender<Result<CoordinatorMessage, Status>>,
    from_worker: Streaming<WorkerMessage>,
}

impl Link {
    async fn send(&self, message: ToWorker) {
        let message = CoordinatorMessage {
            message: Some(message),
        };
        self.to_worker
            .send(Ok(message))
            .await
            .expect("worker stream open");
    }

    /// Returns the next message other than a heartbeat.
    async fn next(&mut self) -> FromWorker {
        loop {
            let message = tokio::time::timeout(MESSAGE_TIMEOUT, self.from_worker.message())
                .await
                .expect("a message within the timeout")
                .expect("stream healthy")
                .expect("stream open");
            match message.message.expect("message set") {
                FromWorker::Heartbeat(_) => continue,
                other => return other,
            }
        }
    }

    /// Reads messages until the RunEnded, and returns it with the checkpoint steps reported.
    async fn until_ended(&mut self) -> (RunEnded, Vec<u64>) {
        let mut checkpoints = Vec::new();
        loop {
            match self.next().await {
                FromWorker::Ended(ended) => return (ended, checkpoints),
                FromWorker::Checkpoint(report) => checkpoints.push(report.step),
                FromWorker::Step(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }
}

/// Accepts workers, welcomes them, and hands each one's stream to the test.
struct TestCoordinator {
    links: mpsc::UnboundedSender<Link>,
}

#[tonic::async_trait]
impl WorkerService for TestCoordinator {
    type OpenSessionStream = ReceiverStream<Result<CoordinatorMessage, Status>>;

    async fn open_session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::OpenSessionStream>, Status> {
        let mut from_worker = request.into_inner();
        let first = from_worker.message().await?.and_then(|m| m.message);
        let Some(FromWorker::Join(join)) = first else {
            return Err(Status::invalid_argument("the first message must be a Join"));
        };
        let (to_worker, outbound) = mpsc::channel(64);
        let welcome = ToWorker::Welcome(Welcome {
            heartbeat_interval_ms: 100,
        });
        let welcome = CoordinatorMessage {
            message: Some(welcome),
        };
        to_worker.send(Ok(welcome)).await.unwrap();
        let link = Link {
            join,
            to_worker,
            from_worker,
        };
        self.links
            .send(link)
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(Response::new(ReceiverStream::new(outbound)))
    }
}

async fn start_coordinator() -> (String, mpsc::UnboundedReceiver<Link>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (links, accepted) = mpsc::unbounded_channel();
    let service = WorkerServiceServer::new(TestCoordinator { links });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (url, accepted)
}

fn assignment(rank: u32, attempt: u32, storage: &str, steps: u64, resume: Option<u64>) -> ToWorker {
    let config = common::tiny_config(&[&format!("train.steps={steps}"), "checkpoint.every=100"]);
    ToWorker::Assignment(Assignment {
        run_id: "agents".into(),
        attempt,
        rank,
        world_size: 2,
        config_toml: config.to_toml(),
        storage_url: storage.to_string(),
        resume_step: resume,
    })
}

/// Assigns both ranks, collects their ring addresses and sends the rendezvous.
async fn start_attempt(
    links: &mut [Link],
    attempt: u32,
    storage: &str,
    steps: u64,
    resume: Option<u64>,
) {
    let mut addresses = Vec::new();
    for (rank, link) in links.iter_mut().enumerate() {
        link.send(assignment(rank as u32, attempt, storage, steps, resume))
            .await;
        match link.next().await {
            FromWorker::RingAddress(reply) => {
                assert_eq!((reply.run_id.as_str(), reply.attempt), ("agents", attempt));
                assert!(reply.address.starts_with("127.0.0.1:"), "{}", reply.address);
                addresses.push(reply.address);
            }
            other => panic!("expected a RingAddress, got {other:?}"),
        }
    }
    for link in links.iter() {
        let rendezvous = ToWorker::Rendezvous(Rendezvous {
            run_id: "agents".into(),
            attempt,
            addresses: addresses.clone(),
            token: 1000 + u64::from(attempt),
            nccl_unique_id: Vec::new(),
        });
        link.send(rendezvous).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_train_stop_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap().to_string();
    let (url, mut accepted) = start_coordinator().await;
    let mut shutdowns = Vec::new();
    let mut agents = Vec::new();
    for _ in 0..2 {
        let (shutdown, signal) = oneshot::channel::<()>();
        let options = AgentOptions::new(url.clone(), 1);
        agents.push(tokio::spawn(run_agent(options, async move {
            let _ = signal.await;
        })));
        shutdowns.push(shutdown);
    }
    let mut links = Vec::new();
    for _ in 0..2 {
        links.push(
            tokio::time::timeout(MESSAGE_TIMEOUT, accepted.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    for link in &links {
        assert_eq!(link.join.device, "cpu");
        assert_eq!(link.join.gpu, None);
        assert_eq!(link.join.threads, 1);
        assert_eq!(link.join.version, env!("CARGO_PKG_VERSION"));
        assert!(link.join.worker_id.contains(':'), "{}", link.join.worker_id);
    }

    // Attempt 1: only rank 1 receives Stop, after rank 0 has reported a step.
    start_attempt(&mut links, 1, &storage, 500, None).await;
    match links[0].next().await {
        FromWorker::Step(report) => assert_eq!(report.metrics.unwrap().step, 1),
        other => panic!("expected rank 0's first step, got {other:?}"),
    }
    let stop = Stop {
        run_id: "agents".into(),
        attempt: 1,
    };
    links[1].send(ToWorker::Stop(stop)).await;
    let (rank0, checkpoints0) = links[0].until_ended().await;
    let (rank1, checkpoints1) = links[1].until_ended().await;
    assert_eq!(rank0.outcome(), EndedOutcome::Stopped, "{rank0:?}");
    assert_eq!(rank1.outcome(), EndedOutcome::Stopped, "{rank1:?}");
    assert_eq!(
        rank0.step, rank1.step,
        "the ranks stopped at different steps"
    );
    let stopped_at = rank0.step;
    assert!((1..500).contains(&stopped_at), "stopped at {stopped_at}");
    assert_eq!(
        checkpoints0,
        vec![stopped_at],
        "rank 0 reports its checkpoint"
    );
    assert!(checkpoints1.is_empty(), "rank 1 reported a checkpoint");

    // Attempt 2: the idle workers resume from that checkpoint and finish one step later.
    let target = stopped_at + 1;
    start_attempt(&mut links, 2, &storage, target, Some(stopped_at)).await;
    let (rank0, checkpoints0) = links[0].until_ended().await;
    let (rank1, _) = links[1].until_ended().await;
    assert_eq!(rank0.outcome(), EndedOutcome::Finished, "{rank0:?}");
    assert_eq!(rank1.outcome(), EndedOutcome::Finished, "{rank1:?}");
    assert_eq!((rank0.step, rank1.step), (target, target));
    assert_eq!(checkpoints0, vec![target]);
    let store = tokio::task::spawn_blocking(move || {
        let store = BlockingStore::open(&storage).unwrap();
        store.committed_steps("agents").unwrap()
    });
    assert_eq!(store.await.unwrap(), vec![stopped_at, target]);

    for shutdown in shutdowns {
        shutdown.send(()).unwrap();
    }
    for agent in agents {
        let result = tokio::time::timeout(MESSAGE_TIMEOUT, agent)
            .await
            .unwrap()
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}
