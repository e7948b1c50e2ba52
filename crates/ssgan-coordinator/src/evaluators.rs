//! The pool of connected evaluators and the queue of evaluation tasks waiting for one.

use std::collections::{BTreeMap, VecDeque};

use ssgan_proto::v1;
use ssgan_proto::v1::evaluator_command::Message;
use tokio::sync::mpsc;
use tonic::Status;

/// Key of one evaluator session; keys grow with every join, as worker session keys do.
pub(crate) type EvaluatorKey = u64;

/// Sending half of an evaluator session's response stream.
pub(crate) type EvaluatorOutbox = mpsc::UnboundedSender<Result<v1::EvaluatorCommand, Status>>;

/// One connected evaluator.
struct Evaluator {
    /// Evaluator id from the join, for logs.
    evaluator_id: String,
    outbox: EvaluatorOutbox,
    /// The task in progress; `None` while the evaluator is idle.
    task: Option<v1::EvaluationTask>,
}

/// Connected evaluators by session key, and the tasks that wait for an idle one.
#[derive(Default)]
pub(crate) struct EvaluatorPool {
    evaluators: BTreeMap<EvaluatorKey, Evaluator>,
    queue: VecDeque<v1::EvaluationTask>,
    next_key: EvaluatorKey,
}

impl EvaluatorPool {
    pub fn add(&mut self, evaluator_id: String, outbox: EvaluatorOutbox) -> EvaluatorKey {
        let key = self.next_key;
        self.next_key += 1;
        let evaluator = Evaluator {
            evaluator_id,
            outbox,
            task: None,
        };
        self.evaluators.insert(key, evaluator);
        key
    }

    /// Removes a lost evaluator and puts its task, if any, first in the queue.
    pub fn remove(&mut self, key: EvaluatorKey) {
        let Some(evaluator) = self.evaluators.remove(&key) else {
            return;
        };
        if let Some(task) = evaluator.task {
            tracing::debug!(evaluator_id = %evaluator.evaluator_id, run_id = %task.run_id, step = task.step, "requeueing the task of a lost evaluator");
            self.queue.push_front(task);
        }
    }

    /// Removes every evaluator, which closes their response streams.
    pub fn clear(&mut self) {
        self.evaluators.clear();
    }

    /// Queues a task unless the same run and step is queued or in progress already.
    pub fn enqueue(&mut self, task: v1::EvaluationTask) {
        let same =
            |other: &v1::EvaluationTask| other.run_id == task.run_id && other.step == task.step;
        let in_progress = self
            .evaluators
            .values()
            .any(|evaluator| evaluator.task.as_ref().is_some_and(same));
        if in_progress || self.queue.iter().any(same) {
            return;
        }
        self.queue.push_back(task);
    }

    /// Marks the evaluator idle if it evaluates `step` of `run_id`; returns whether it did.
    pub fn finish(&mut self, key: EvaluatorKey, run_id: &str, step: u64) -> bool {
        let Some(evaluator) = self.evaluators.get_mut(&key) else {
            return false;
        };
        let matches = evaluator
            .task
            .as_ref()
            .is_some_and(|task| task.run_id == run_id && task.step == step);
        if matches {
            evaluator.task = None;
        }
        matches
    }

    /// Hands queued tasks to idle evaluators, oldest task and longest connected evaluator
    /// first.
    pub fn dispatch(&mut self) {
        for evaluator in self.evaluators.values_mut() {
            if evaluator.task.is_some() {
                continue;
            }
            let Some(task) = self.queue.pop_front() else {
                return;
            };
            tracing::debug!(evaluator_id = %evaluator.evaluator_id, run_id = %task.run_id, step = task.step, "assigning an evaluation");
            let command = v1::EvaluatorCommand {
                message: Some(Message::Task(task.clone())),
            };
            if evaluator.outbox.send(Ok(command)).is_err() {
                // The session task reports the evaluator lost and requeues the task.
                tracing::trace!(evaluator_id = %evaluator.evaluator_id, "evaluator stream already closed");
            }
            evaluator.task = Some(task);
        }
    }

    /// Returns the number of tasks of `run_id` that are queued or in progress.
    pub fn pending(&self, run_id: &str) -> u32 {
        let running = self.evaluators.values().filter_map(|e| e.task.as_ref());
        let all = running.chain(self.queue.iter());
        let count = all.filter(|task| task.run_id == run_id).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Returns the number of queued tasks.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(run_id: &str, step: u64) -> v1::EvaluationTask {
        v1::EvaluationTask {
            run_id: run_id.to_owned(),
            step,
            ..v1::EvaluationTask::default()
        }
    }

    fn received_task(
        receiver: &mut mpsc::UnboundedReceiver<Result<v1::EvaluatorCommand, Status>>,
    ) -> Option<(String, u64)> {
        let command = receiver.try_recv().ok()?.ok()?;
        match command.message? {
            Message::Task(task) => Some((task.run_id, task.step)),
            Message::Welcome(_) => None,
        }
    }

    #[test]
    fn enqueue_skips_duplicates() {
        let mut pool = EvaluatorPool::default();
        pool.enqueue(task("a", 1));
        pool.enqueue(task("a", 1));
        pool.enqueue(task("a", 2));
        assert_eq!(pool.queued(), 2);
        assert_eq!(pool.pending("a"), 2);
        assert_eq!(pool.pending("b"), 0);
    }

    #[test]
    fn dispatch_waits_for_idle_evaluator() {
        let mut pool = EvaluatorPool::default();
        let (outbox, mut receiver) = mpsc::unbounded_channel();
        let key = pool.add("e".to_owned(), outbox);
        pool.enqueue(task("a", 1));
        pool.enqueue(task("a", 2));
        pool.dispatch();
        assert_eq!(received_task(&mut receiver), Some(("a".to_owned(), 1)));
        assert_eq!(received_task(&mut receiver), None);
        assert!(!pool.finish(key, "a", 2));
        assert!(pool.finish(key, "a", 1));
        pool.dispatch();
        assert_eq!(received_task(&mut receiver), Some(("a".to_owned(), 2)));
    }

    #[test]
    fn lost_evaluator_task_is_requeued() {
        let mut pool = EvaluatorPool::default();
        let (outbox, _receiver) = mpsc::unbounded_channel();
        let key = pool.add("e".to_owned(), outbox);
        pool.enqueue(task("a", 1));
        pool.dispatch();
        assert_eq!(pool.queued(), 0);
        pool.remove(key);
        assert_eq!(pool.queued(), 1);
        let (outbox, mut receiver) = mpsc::unbounded_channel();
        pool.add("f".to_owned(), outbox);
        pool.dispatch();
        assert_eq!(received_task(&mut receiver), Some(("a".to_owned(), 1)));
    }
}
