//! Requests that end a run early, the ranks' agreement on them, and the trainer's callbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ssgan_collective::{Communicator, SingleRank};

use crate::error::Result;
use crate::step::StepReport;
use crate::trainer::Outcome;

/// Stop and abort requests of one rank. Any thread may set them. The trainer reads them
/// before every step, and every rank acts on a request that any rank made.
#[derive(Debug, Default)]
pub struct RunControl {
    /// Commit a checkpoint at the current step, then end the run.
    pub stop: AtomicBool,
    /// End the run at the current step without a checkpoint.
    pub abort: AtomicBool,
}

impl RunControl {
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn request_abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
    }
}

/// Decision that all ranks agreed on before a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Agreed {
    Continue,
    Stop,
    Abort,
}

/// Sums every rank's `[stop, abort]` flags, so that all ranks see a request as soon as one
/// rank made it and leave the run at the same step. An abort wins over a stop.
pub(crate) fn agree(
    comm: &dyn Communicator,
    stop: &AtomicBool,
    abort: &AtomicBool,
) -> Result<Agreed> {
    let flag = |f: &AtomicBool| if f.load(Ordering::SeqCst) { 1.0 } else { 0.0 };
    let mut flags = [flag(stop), flag(abort)];
    comm.all_reduce_sum(&mut flags)
        .map_err(ssgan_model::ModelError::from)?;
    Ok(if flags[1] > 0.0 {
        Agreed::Abort
    } else if flags[0] > 0.0 {
        Agreed::Stop
    } else {
        Agreed::Continue
    })
}

/// Result of [`crate::Trainer::run_rank`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankOutcome {
    /// The run finished or stopped, as in a single-process run.
    Ended(Outcome),
    /// A rank requested an abort, and every rank left at `step` without a new checkpoint.
    Aborted { step: u64 },
}

/// Callbacks of [`crate::Trainer::run_rank`], called on the training thread.
pub trait TrainObserver {
    /// Called on every rank after each generator step, with this rank's shard metrics.
    fn step(&mut self, _report: &StepReport) {}

    /// Called on rank 0 once the checkpoint of `step` is committed at `url`.
    fn checkpoint_committed(&mut self, _step: u64, _url: &str) {}
}

/// An observer that forwards each step report to a closure.
pub(crate) struct OnStep<F>(pub F);

impl<F: FnMut(&StepReport)> TrainObserver for OnStep<F> {
    fn step(&mut self, report: &StepReport) {
        (self.0)(report)
    }
}

/// Role of a [`crate::Trainer`] in a run: its group, starting checkpoint and record ownership.
#[derive(Clone)]
pub struct RankOptions {
    /// The group of ranks; its rank and world size are this process's.
    pub comm: Arc<dyn Communicator>,
    /// Committed checkpoint step to start from. None: the newest verified checkpoint, or a
    /// new run when there is none.
    pub resume_step: Option<u64>,
    /// Whether this process reads and writes `run.json`. A single-process run owns it; in a
    /// distributed run the coordinator does, and the trainer neither reads nor writes it.
    pub owns_run_record: bool,
    /// Device of the model, the optimizer state and the batches.
    pub device: candle_core::Device,
}

impl RankOptions {
    /// Returns the options of one process that trains alone and owns the run record.
    pub fn single_process() -> Self {
        Self {
            comm: Arc::new(SingleRank),
            resume_step: None,
            owns_run_record: true,
            device: candle_core::Device::Cpu,
        }
    }

    /// Returns the options of one rank of a distributed run whose record the coordinator
    /// owns.
    pub fn distributed(comm: Arc<dyn Communicator>, resume_step: Option<u64>) -> Self {
        Self {
            comm,
            resume_step,
            owns_run_record: false,
            device: candle_core::Device::Cpu,
        }
    }
}
