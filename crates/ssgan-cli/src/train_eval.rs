//! FID evaluation during `ssgan train`, when the config sets `eval.every` and
//! `eval.inception_weights`: a thread beside the trainer in the in-process path, and an
//! `ssgan evaluator` child process with `--workers`.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use ssgan_evaluator::{EvalFile, FidModel, resolve_inception_weights};
use ssgan_proto::v1::run_service_client::RunServiceClient;
use ssgan_proto::v1::{EvaluationTask, GetRunRequest, Run};
use ssgan_store::{BlockingStore, EvalRecord, RunRecord};
use ssgan_worker::sample::{CheckpointGenerator, load_checkpoint_generator};
use ssgan_worker::{RunConfig, SharedRecord, Trainer};
use tonic::transport::Channel;

use crate::text::counted;

/// Time between polls of the run's pending evaluations at the end of `train --workers`.
const PENDING_POLL: Duration = Duration::from_millis(500);

/// Returns the weights source when the config requests evaluation during training. Warns
/// about a config that sets only one of the two keys.
pub fn requested_weights(config: &RunConfig) -> Option<&str> {
    let eval = &config.eval;
    match (eval.every, eval.inception_weights.as_deref()) {
        (0, Some(_)) => {
            tracing::warn!(
                "eval.inception_weights is set but eval.every is 0, so no checkpoint is evaluated; set eval.every=N to evaluate every Nth step"
            );
            None
        }
        (every, None) if every > 0 => {
            tracing::warn!(
                "eval.every = {every} but eval.inception_weights is not set, so this command evaluates nothing; set eval.inception_weights=PATH_OR_URL, or run `ssgan evaluator` beside a coordinator"
            );
            None
        }
        (_, weights) => weights,
    }
}

/// One checkpoint to evaluate, with its generator loaded while the checkpoint was new.
struct Job {
    generator: CheckpointGenerator,
    task: EvaluationTask,
}

/// Storage and run record, shared by the training and the evaluation thread. The FID
/// results go to the record.
struct RunLink {
    store: BlockingStore,
    record: SharedRecord,
    run_id: String,
}

/// A thread that evaluates checkpoints in commit order, beside the trainer.
///
/// Queued steps go to the record's `pending_evals` and results to its `evals` and
/// `best_step`, so that retention keeps the best checkpoint and those still to evaluate.
pub struct LocalEvaluation {
    jobs: Option<mpsc::Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    link: Arc<RunLink>,
    config: RunConfig,
}

impl LocalEvaluation {
    /// Finds or downloads the weights, loads the network and starts the thread. Then queues
    /// the steps that the run record lists as pending, which an earlier process left.
    pub fn start(weights: &str, trainer: &Trainer, storage_url: &str) -> Result<Self> {
        let path = resolve_inception_weights(weights)?;
        let model = FidModel::load(&path)?;
        tracing::info!(weights = %path.display(), "evaluating checkpoints with FID in this process");
        let record = trainer
            .run_record()
            .context("the trainer does not own the run record")?;
        let link = Arc::new(RunLink {
            store: BlockingStore::open(storage_url)?,
            record,
            run_id: trainer.run_id().to_owned(),
        });
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread_link = link.clone();
        let worker = std::thread::Builder::new()
            .name("fid-eval".to_owned())
            .spawn(move || evaluate_all(&model, &thread_link, queue))
            .context("cannot start the evaluation thread")?;
        let evaluation = Self {
            jobs: Some(jobs),
            worker: Some(worker),
            link,
            config: trainer.config().clone(),
        };
        evaluation.queue_pending();
        Ok(evaluation)
    }

    /// Queues the checkpoint of `step` at `url` when the config makes it due. Failures are
    /// logged, since training goes on without the evaluation.
    pub fn submit(&self, step: u64, url: &str) {
        if self.config.eval.is_due(step, self.config.train.steps) {
            self.queue(step, url);
        }
    }

    /// Queues the steps left pending in the run record. A step whose checkpoint cannot be
    /// loaded is logged as an error and dropped from the record.
    fn queue_pending(&self) {
        let link = &self.link;
        for step in link.record.snapshot().pending_evals {
            let url = link.store.checkpoint_url(&link.run_id, step);
            tracing::info!(run_id = %link.run_id, step, "queueing an evaluation that an earlier process left pending");
            self.queue(step, &url);
        }
    }

    fn queue(&self, step: u64, url: &str) {
        let link = &self.link;
        let run_id = link.run_id.as_str();
        let generator = match load_checkpoint_generator(url) {
            Ok(generator) => generator,
            Err(error) => {
                tracing::error!(run_id, step, %error, "cannot load the checkpoint to evaluate it");
                link.update_record(step, |record| record.drop_pending_eval(step));
                return;
            }
        };
        link.update_record(step, |record| record.add_pending_eval(step));
        let task = EvaluationTask {
            run_id: run_id.to_owned(),
            step,
            checkpoint_url: url.to_owned(),
            storage_url: link.store.url().to_owned(),
            samples: self.config.eval.samples,
            seed: self.config.run.seed,
            real_samples: self.config.eval.real_samples,
        };
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job { generator, task });
        }
    }

    /// Waits for the queued evaluations to finish, then applies checkpoint retention again,
    /// because checkpoints kept only while their evaluation was pending may now go.
    pub fn finish(mut self) {
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            tracing::info!("waiting for the queued FID evaluations");
            if worker.join().is_err() {
                tracing::error!("the evaluation thread panicked");
            }
        }
        self.link.apply_retention(self.config.checkpoint.keep);
    }
}

impl RunLink {
    /// Applies `change` to the run record and writes it, logging a failed write.
    fn update_record(&self, step: u64, change: impl FnOnce(&mut RunRecord)) {
        if let Err(error) = self.record.update(&self.store, change) {
            tracing::error!(run_id = %self.run_id, step, %error, "failed to write the run record");
        }
    }

    /// Deletes the checkpoints beyond the newest `keep` other than the best and the pending.
    fn apply_retention(&self, keep: usize) {
        let protected = self.record.snapshot().protected_steps();
        let run_id = self.run_id.as_str();
        match self.store.apply_retention(run_id, keep, &protected) {
            Ok(deleted) => tracing::debug!(
                run_id,
                ?deleted,
                ?protected,
                "applied retention after the evaluations"
            ),
            Err(error) => {
                tracing::error!(run_id, %error, "failed to apply checkpoint retention after the evaluations")
            }
        }
    }
}

fn evaluate_all(model: &FidModel, link: &RunLink, queue: mpsc::Receiver<Job>) {
    for job in queue {
        let task = &job.task;
        match model.evaluate_generator(&job.generator, task) {
            Ok(eval) => {
                report(&eval, task);
                let result = EvalRecord {
                    step: eval.step,
                    fid: eval.fid,
                    samples: eval.samples,
                };
                link.update_record(task.step, |record| record.record_eval(result));
            }
            Err(error) => {
                tracing::error!(run_id = %task.run_id, step = task.step, %error, "evaluation failed");
                link.update_record(task.step, |record| record.drop_pending_eval(task.step));
            }
        }
    }
}

fn report(eval: &EvalFile, task: &EvaluationTask) {
    tracing::info!(
        run_id = %task.run_id,
        "step {}: FID {:.3} ({} generated against {} real images, {:.0} s), {}/eval.json",
        eval.step,
        eval.fid,
        eval.samples,
        eval.real_samples,
        eval.seconds,
        task.checkpoint_url
    );
}

/// Starts `ssgan evaluator` for the coordinator at `url`, in its own process group like the
/// workers, so that Ctrl-C reaches only this process.
pub fn spawn_evaluator(url: &str, weights: &Path, threads: usize) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the ssgan executable")?;
    let child = Command::new(exe)
        .args(["--threads", &threads.to_string(), "evaluator"])
        .args(["--coordinator", url, "--exit-on-disconnect"])
        .arg("--inception-weights")
        .arg(weights)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .context("cannot start the evaluator process")?;
    tracing::debug!(pid = child.id(), "started evaluator process");
    Ok(child)
}

/// Waits until the coordinator has no queued or running evaluation of `run_id`, the
/// evaluator process exits, or Ctrl-C.
pub async fn wait_for_evaluations(
    client: &mut RunServiceClient<Channel>,
    run_id: &str,
    evaluator: &mut Child,
) -> Result<()> {
    let mut announced = false;
    loop {
        let run = get_run(client, run_id).await?;
        if run.pending_evals == 0 {
            return Ok(());
        }
        if let Ok(Some(status)) = evaluator.try_wait() {
            tracing::error!(
                run_id,
                "the evaluator process exited ({status}) with {} evaluations pending",
                run.pending_evals
            );
            return Ok(());
        }
        if !announced {
            tracing::info!(
                run_id,
                "waiting for {} (Ctrl-C to skip them)",
                counted(run.pending_evals, "FID evaluation")
            );
            announced = true;
        }
        tokio::select! {
            () = tokio::time::sleep(PENDING_POLL) => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::warn!(run_id, "interrupt: not waiting for the remaining evaluations");
                return Ok(());
            }
        }
    }
}

async fn get_run(client: &mut RunServiceClient<Channel>, run_id: &str) -> Result<Run> {
    let request = GetRunRequest {
        run_id: run_id.to_owned(),
    };
    Ok(client.get_run(request).await?.into_inner())
}

/// Logs the FID of each evaluated step and the best one.
pub fn log_evaluations(run: &Run) {
    for eval in &run.evals {
        tracing::info!(run_id = %run.run_id, "step {}: FID {:.3} ({} generated images)", eval.step, eval.fid, eval.samples);
    }
    if let Some(step) = run.best_checkpoint_step {
        tracing::info!(run_id = %run.run_id, "best checkpoint by FID: step {step}");
    }
}
