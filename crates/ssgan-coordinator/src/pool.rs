//! The pool of connected workers, idle or assigned to a run attempt.

use std::collections::BTreeMap;

use ssgan_proto::v1;
use ssgan_proto::v1::coordinator_message::Message;
use tokio::sync::mpsc;
use tonic::Status;

/// Key of one worker session. Keys grow with every Join, so a worker that reconnects with
/// the same worker id gets a new key and the old session's late messages cannot reach it.
pub(crate) type SessionKey = u64;

/// Sending half of a worker session's response stream.
pub(crate) type Outbox = mpsc::UnboundedSender<Result<v1::CoordinatorMessage, Status>>;

/// Rank of a run attempt that a worker trains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Task {
    pub run_id: String,
    pub attempt: u32,
    pub rank: u32,
}

/// One connected worker.
pub(crate) struct Worker {
    /// Worker id from the Join, for logs.
    pub worker_id: String,
    /// NCCL version code from the Join's GpuInfo; `None` for a CPU worker.
    pub nccl_version: Option<u32>,
    outbox: Outbox,
    /// The attempt the worker trains; `None` while it is idle. It is cleared only when the
    /// worker reports RunEnded, even after an Abort, so that it is not reassigned while it
    /// still winds the old attempt down.
    pub task: Option<Task>,
}

/// Connected workers by session key, in the order they joined.
#[derive(Default)]
pub(crate) struct Pool {
    workers: BTreeMap<SessionKey, Worker>,
    next_key: SessionKey,
}

impl Pool {
    pub fn add(
        &mut self,
        worker_id: String,
        nccl_version: Option<u32>,
        outbox: Outbox,
    ) -> SessionKey {
        let key = self.next_key;
        self.next_key += 1;
        let worker = Worker {
            worker_id,
            nccl_version,
            outbox,
            task: None,
        };
        self.workers.insert(key, worker);
        key
    }

    /// Removes a worker, which closes its response stream.
    pub fn remove(&mut self, key: SessionKey) -> Option<Worker> {
        self.workers.remove(&key)
    }

    /// Removes every worker, which closes their response streams.
    pub fn clear(&mut self) {
        self.workers.clear();
    }

    /// Returns the idle workers with their NCCL versions, longest connected first.
    pub fn idle(&self) -> Vec<(SessionKey, Option<u32>)> {
        self.workers
            .iter()
            .filter(|(_, worker)| worker.task.is_none())
            .map(|(key, worker)| (*key, worker.nccl_version))
            .collect()
    }

    pub fn assign(&mut self, key: SessionKey, task: Task) {
        if let Some(worker) = self.workers.get_mut(&key) {
            worker.task = Some(task);
        }
    }

    /// Returns a worker to the idle pool if it trains attempt `attempt` of `run_id`.
    pub fn release(&mut self, key: SessionKey, run_id: &str, attempt: u32) {
        let Some(worker) = self.workers.get_mut(&key) else {
            return;
        };
        let matches = worker
            .task
            .as_ref()
            .is_some_and(|task| task.run_id == run_id && task.attempt == attempt);
        if matches {
            worker.task = None;
        }
    }

    /// Sends a message to a worker. A worker whose stream has closed is skipped, because its
    /// session task reports it lost.
    pub fn send(&self, key: SessionKey, message: Message) {
        let Some(worker) = self.workers.get(&key) else {
            return;
        };
        let message = v1::CoordinatorMessage {
            message: Some(message),
        };
        if worker.outbox.send(Ok(message)).is_err() {
            tracing::trace!(worker_id = %worker.worker_id, "worker stream already closed");
        }
    }
}
