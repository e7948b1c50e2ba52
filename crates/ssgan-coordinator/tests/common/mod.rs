//! Test harness: a coordinator on 127.0.0.1 port 0 over a local-directory store, and fake
//! workers that speak WorkerService over a real gRPC client.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use ssgan_coordinator::{Coordinator, CoordinatorOptions, VERSION};
use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message as Incoming;
use ssgan_proto::v1::run_service_client::RunServiceClient;
use ssgan_proto::v1::worker_message::Message as Outgoing;
use ssgan_proto::v1::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// Maximum wait for one expected message or state.
pub const WAIT: Duration = Duration::from_secs(5);

pub type RunClient = RunServiceClient<Channel>;

pub const CONFIG: &str = "[train]\nsteps = 10\nbatch_size = 8\n";

pub fn options(storage: &Path) -> CoordinatorOptions {
    let mut options =
        CoordinatorOptions::new("127.0.0.1:0".parse().unwrap(), storage.to_str().unwrap());
    options.heartbeat_interval = Duration::from_millis(50);
    options.heartbeat_timeout = Duration::from_millis(600);
    options.restart_limit = 2;
    options.restart_backoff = Duration::from_millis(50);
    options
}

pub async fn start(storage: &Path) -> Coordinator {
    Coordinator::start(options(storage)).await.unwrap()
}

pub async fn run_client(coordinator: &Coordinator) -> RunServiceClient<Channel> {
    RunServiceClient::connect(format!("http://{}", coordinator.local_addr()))
        .await
        .unwrap()
}

pub fn create_request(run_id: &str, workers: u32) -> v1::CreateRunRequest {
    v1::CreateRunRequest {
        config_toml: CONFIG.to_owned(),
        run_id: run_id.to_owned(),
        request_id: String::new(),
        workers,
    }
}

pub async fn create_run(client: &mut RunServiceClient<Channel>, run_id: &str, workers: u32) {
    client
        .create_run(create_request(run_id, workers))
        .await
        .unwrap();
}

pub async fn get_run(client: &mut RunServiceClient<Channel>, run_id: &str) -> v1::Run {
    let request = v1::GetRunRequest {
        run_id: run_id.to_owned(),
    };
    client.get_run(request).await.unwrap().into_inner()
}

/// Polls GetRun until the run is in `state`, failing after [`WAIT`].
pub async fn wait_for_state(
    client: &mut RunServiceClient<Channel>,
    run_id: &str,
    state: v1::RunState,
) -> v1::Run {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let run = get_run(client, run_id).await;
        if run.state() == state {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} stayed {:?}, expected {state:?}",
            run.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A worker played by the test: a session stream and, unless silent, a heartbeat task.
pub struct FakeWorker {
    pub worker_id: String,
    outbox: mpsc::Sender<v1::WorkerMessage>,
    inbound: Streaming<v1::CoordinatorMessage>,
    heartbeat: Option<JoinHandle<()>>,
}

impl FakeWorker {
    /// Joins and checks the Welcome; the worker then sends a Heartbeat every 50 ms.
    pub async fn join(coordinator: &Coordinator, worker_id: &str) -> FakeWorker {
        let mut worker = Self::join_silent(coordinator, worker_id).await;
        let outbox = worker.outbox.clone();
        worker.heartbeat = Some(tokio::spawn(send_heartbeats(outbox)));
        worker
    }

    /// Joins as a GPU worker whose NCCL library has `nccl_version`, with heartbeats.
    pub async fn join_gpu(
        coordinator: &Coordinator,
        worker_id: &str,
        nccl_version: u32,
    ) -> FakeWorker {
        let gpu = v1::GpuInfo {
            name: "NVIDIA H200".to_owned(),
            cuda_driver_version: 13_000,
            driver_version: "580.95.05".to_owned(),
            cuda_runtime_version: 13_000,
            nccl_version,
        };
        let mut worker = Self::join_with(coordinator, worker_id, "cuda:0", Some(gpu)).await;
        let outbox = worker.outbox.clone();
        worker.heartbeat = Some(tokio::spawn(send_heartbeats(outbox)));
        worker
    }

    /// Joins and checks the Welcome, but sends no heartbeats.
    pub async fn join_silent(coordinator: &Coordinator, worker_id: &str) -> FakeWorker {
        Self::join_with(coordinator, worker_id, "cpu", None).await
    }

    async fn join_with(
        coordinator: &Coordinator,
        worker_id: &str,
        device: &str,
        gpu: Option<v1::GpuInfo>,
    ) -> FakeWorker {
        let join = Outgoing::Join(v1::Join {
            worker_id: worker_id.to_owned(),
            device: device.to_owned(),
            threads: 1,
            version: VERSION.to_owned(),
            hostname: "localhost".to_owned(),
            gpu,
        });
        let (outbox, inbound) = open_session(coordinator, join).await.unwrap();
        let mut worker = FakeWorker {
            worker_id: worker_id.to_owned(),
            outbox,
            inbound,
            heartbeat: None,
        };
        match worker.next().await {
            Incoming::Welcome(welcome) => assert_eq!(welcome.heartbeat_interval_ms, 50),
            other => panic!("expected a Welcome, got {other:?}"),
        }
        worker
    }

    /// Returns the next message from the coordinator, failing after [`WAIT`].
    pub async fn next(&mut self) -> Incoming {
        let received = tokio::time::timeout(WAIT, self.inbound.message()).await;
        let message = received
            .unwrap_or_else(|_| panic!("{}: no message within {WAIT:?}", self.worker_id))
            .unwrap_or_else(|status| panic!("{}: stream failed: {status}", self.worker_id))
            .unwrap_or_else(|| panic!("{}: stream ended", self.worker_id));
        message.message.expect("message without content")
    }

    /// Returns whether the coordinator ended the session within [`WAIT`].
    pub async fn stream_ends(&mut self) -> bool {
        matches!(
            tokio::time::timeout(WAIT, self.inbound.message()).await,
            Ok(Ok(None) | Err(_))
        )
    }

    /// Returns whether no message arrives within `wait`.
    pub async fn stays_quiet(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.inbound.message())
            .await
            .is_err()
    }

    pub async fn next_assignment(&mut self) -> v1::Assignment {
        match self.next().await {
            Incoming::Assignment(assignment) => assignment,
            other => panic!("{}: expected an Assignment, got {other:?}", self.worker_id),
        }
    }

    pub async fn send(&self, message: Outgoing) {
        let message = v1::WorkerMessage {
            message: Some(message),
        };
        self.outbox.send(message).await.unwrap();
    }

    pub async fn send_ended(&self, assignment: &v1::Assignment, outcome: v1::run_ended::Outcome) {
        let ended = v1::RunEnded {
            run_id: assignment.run_id.clone(),
            attempt: assignment.attempt,
            outcome: outcome.into(),
            step: 10,
            message: String::new(),
        };
        self.send(Outgoing::Ended(ended)).await;
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.abort();
        }
    }
}

async fn send_heartbeats(outbox: mpsc::Sender<v1::WorkerMessage>) {
    loop {
        let heartbeat = v1::WorkerMessage {
            message: Some(Outgoing::Heartbeat(v1::Heartbeat {})),
        };
        if outbox.send(heartbeat).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a WorkerService session whose first message is `first`.
pub async fn open_session(
    coordinator: &Coordinator,
    first: Outgoing,
) -> Result<
    (
        mpsc::Sender<v1::WorkerMessage>,
        Streaming<v1::CoordinatorMessage>,
    ),
    Status,
> {
    let url = format!("http://{}", coordinator.local_addr());
    let mut client = WorkerServiceClient::connect(url).await.unwrap();
    let (outbox, requests) = mpsc::channel(16);
    let first = v1::WorkerMessage {
        message: Some(first),
    };
    outbox.send(first).await.unwrap();
    let response = client.open_session(ReceiverStream::new(requests)).await?;
    Ok((outbox, response.into_inner()))
}
