//! One assigned rank, trained on a blocking thread so that candle work stays off the async
//! runtime's worker threads.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use candle_core::Device;
use ssgan_proto::v1::StepMetrics;
use ssgan_proto::v1::run_ended::Outcome as EndedOutcome;
use tokio::sync::mpsc::UnboundedSender;

use super::collective::JobComm;
use crate::config::RunConfig;
use crate::control::{RankOptions, RankOutcome, RunControl, TrainObserver};
use crate::error::WorkerError;
use crate::step::StepReport;
use crate::trainer::{Outcome, Trainer};

/// The run attempt that a job belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AttemptId {
    pub run_id: String,
    pub attempt: u32,
}

/// Report of a job to its session.
#[derive(Debug)]
pub(super) enum JobEvent {
    Step(StepMetrics),
    Checkpoint {
        step: u64,
        url: String,
    },
    Ended {
        outcome: EndedOutcome,
        step: u64,
        message: String,
    },
}

/// Everything a rank needs to connect to its group and train.
pub(super) struct JobSpec {
    pub id: AttemptId,
    pub rank: usize,
    pub config: RunConfig,
    pub storage_url: String,
    pub resume_step: Option<u64>,
    pub comm: JobComm,
    pub device: Device,
    pub control: Arc<RunControl>,
}

/// Connects to the group (TCP ring or NCCL) and trains. Sends a final [`JobEvent::Ended`] after success, an error or
/// a panic.
pub(super) fn run_job(spec: JobSpec, events: UnboundedSender<(AttemptId, JobEvent)>) {
    let id = spec.id.clone();
    let rank = spec.rank;
    let mut reporter = Reporter {
        id: id.clone(),
        rank,
        step: spec.resume_step.unwrap_or(0),
        events: events.clone(),
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| train(spec, &mut reporter)));
    let step = reporter.step;
    let (outcome, message) = match result {
        Ok(Ok(outcome)) => (ended_outcome(outcome), String::new()),
        Ok(Err(error)) => {
            tracing::error!(run_id = %id.run_id, attempt = id.attempt, rank, step, %error, "rank failed");
            (EndedOutcome::Failed, error.to_string())
        }
        Err(_) => {
            tracing::error!(run_id = %id.run_id, attempt = id.attempt, rank, step, "rank panicked");
            (
                EndedOutcome::Failed,
                "the training thread panicked".to_string(),
            )
        }
    };
    let ended = JobEvent::Ended {
        outcome,
        step,
        message,
    };
    let _ = events.send((id, ended));
}

fn train(spec: JobSpec, reporter: &mut Reporter) -> Result<RankOutcome, WorkerError> {
    let timeout = spec.config.collective.timeout();
    let comm = spec.comm.connect(&spec.device, spec.rank, timeout)?;
    tracing::debug!(run_id = %spec.id.run_id, rank = spec.rank, device = ?spec.device, "connected to the group");
    let mut options = RankOptions::distributed(comm, spec.resume_step);
    options.device = spec.device;
    let mut trainer = Trainer::open_rank(spec.config, &spec.storage_url, &spec.id.run_id, options)?;
    reporter.step = trainer.step();
    trainer.run_rank(&spec.control, reporter)
}

fn ended_outcome(outcome: RankOutcome) -> EndedOutcome {
    match outcome {
        RankOutcome::Ended(Outcome::Finished { .. }) => EndedOutcome::Finished,
        RankOutcome::Ended(Outcome::Stopped { .. }) => EndedOutcome::Stopped,
        RankOutcome::Aborted { .. } => EndedOutcome::Aborted,
    }
}

/// Forwards rank 0's steps and checkpoints to the session, and tracks every rank's step.
struct Reporter {
    id: AttemptId,
    rank: usize,
    step: u64,
    events: UnboundedSender<(AttemptId, JobEvent)>,
}

impl TrainObserver for Reporter {
    fn step(&mut self, report: &StepReport) {
        self.step = report.step;
        if self.rank == 0 {
            let _ = self
                .events
                .send((self.id.clone(), JobEvent::Step(metrics(report))));
        }
    }

    fn checkpoint_committed(&mut self, step: u64, url: &str) {
        let event = JobEvent::Checkpoint {
            step,
            url: url.to_string(),
        };
        let _ = self.events.send((self.id.clone(), event));
    }
}

/// Converts this rank's step report; the losses are those of rank 0's shard.
fn metrics(report: &StepReport) -> StepMetrics {
    StepMetrics {
        step: report.step,
        loss_d: report.discriminator.loss,
        loss_g: report.generator.loss,
        rotation_loss_d: report.discriminator.rotation,
        rotation_accuracy: report.discriminator.rotation_accuracy,
        rotation_loss_g: report.generator.rotation,
        step_seconds: report.seconds,
        images_per_second: report.images_per_second,
    }
}
