//! `ssgan train`: the embedded default, one process training on this machine.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use clap::Args;
use ssgan_evaluator::resolve_inception_weights;
use ssgan_worker::{Outcome, RunConfig, StepReport, TrainObserver, Trainer};

use crate::progress::Progress;
use crate::train_eval::{self, LocalEvaluation};
use crate::train_workers;

#[derive(Args)]
pub struct TrainArgs {
    /// Run config (TOML), such as configs/cifar10-cpu-demo.toml.
    #[arg(long)]
    config: PathBuf,
    /// Generator steps to train in total; the same as --set train.steps=N.
    #[arg(long)]
    steps: Option<u64>,
    /// Storage root: a local directory, or a file://, s3://, gs:// or az:// URL.
    #[arg(long, default_value = "ssgan-output")]
    storage: String,
    /// Run id: 1 to 64 letters, digits, '.', '_' or '-'. Running again with the same id
    /// resumes from its newest checkpoint.
    /// Default: run-<UTC date and time>.
    #[arg(long)]
    run_id: Option<String>,
    /// Override one config key, such as --set model.ch=32 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Train with N worker processes and a coordinator on this machine, each worker with an
    /// equal share of the --threads budget, and at least one thread. Without it, training
    /// runs in this process.
    #[arg(long, value_name = "N")]
    workers: Option<u32>,
    /// Address of the coordinator's gRPC server with --workers (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:50051", requires = "workers")]
    listen: std::net::SocketAddr,
}

pub fn run(args: TrainArgs) -> Result<i32> {
    let mut overrides = args.overrides.clone();
    if let Some(steps) = args.steps {
        overrides.push(format!("train.steps={steps}"));
    }
    let config = RunConfig::load(&args.config, &overrides)?;
    let run_id = args.run_id.unwrap_or_else(default_run_id);
    if let Some(workers) = args.workers {
        return train_workers::run(launch(config, run_id, workers, args.storage, args.listen)?);
    }
    let mut trainer = Trainer::open(config, &args.storage, &run_id)?;
    announce(&trainer, &args.storage);
    let evaluation = match train_eval::requested_weights(trainer.config()) {
        Some(weights) => Some(LocalEvaluation::start(weights, &trainer, &args.storage)?),
        None => None,
    };
    if nothing_to_train(&trainer) {
        // The run record stays as it is: no attempt is counted and train.steps is not
        // lowered below the run's step.
        if let Some(evaluation) = evaluation {
            evaluation.finish();
        }
        return Ok(0);
    }
    let stop = install_stop_handler()?;
    let mut observer = Observer {
        progress: Progress::new(trainer.step(), trainer.config().train.steps),
        evaluation: evaluation.as_ref(),
    };
    let outcome = trainer.run_observed(&stop, &mut observer);
    let progress = observer.progress;
    progress.finish();
    let outcome =
        outcome.with_context(|| format!("run {run_id} failed at step {}", trainer.step()))?;
    report_outcome(&trainer, outcome, &progress);
    if let Some(evaluation) = evaluation {
        evaluation.finish();
    }
    Ok(0)
}

/// Shows progress and hands committed checkpoints to the evaluation thread.
struct Observer<'a> {
    progress: Progress,
    evaluation: Option<&'a LocalEvaluation>,
}

impl TrainObserver for Observer<'_> {
    fn step(&mut self, report: &StepReport) {
        self.progress.update(report);
    }

    fn checkpoint_committed(&mut self, step: u64, url: &str) {
        if let Some(evaluation) = self.evaluation {
            evaluation.submit(step, url);
        }
    }
}

fn launch(
    config: RunConfig,
    run_id: String,
    workers: u32,
    storage: String,
    listen: std::net::SocketAddr,
) -> Result<train_workers::Launch> {
    anyhow::ensure!(
        workers >= 1,
        "invalid --workers 0: expected at least 1 worker process"
    );
    ssgan_store::validate_run_id(&run_id)?;
    let threads_per_worker = (rayon::current_num_threads() / workers as usize).max(1);
    let eval_weights = match train_eval::requested_weights(&config) {
        Some(weights) => Some(resolve_inception_weights(weights)?),
        None => None,
    };
    Ok(train_workers::Launch {
        config,
        run_id,
        workers,
        storage,
        listen,
        threads_per_worker,
        eval_weights,
    })
}

/// Returns true when the run resumed at or past train.steps.
fn nothing_to_train(trainer: &Trainer) -> bool {
    let target = trainer.config().train.steps;
    trainer.resumed_from().is_some_and(|step| step >= target)
}

fn announce(trainer: &Trainer, storage: &str) {
    let config = trainer.config();
    if nothing_to_train(trainer) {
        tracing::warn!(
            run_id = trainer.run_id(),
            "the run is already at step {}, at or past train.steps = {}; nothing to train (raise --steps to continue)",
            trainer.step(),
            config.train.steps
        );
        return;
    }
    match trainer.resumed_from() {
        Some(step) => tracing::info!(
            run_id = trainer.run_id(),
            "resuming from step {step} of {}",
            config.train.steps
        ),
        None => tracing::info!(
            run_id = trainer.run_id(),
            "starting a new run of {} steps",
            config.train.steps
        ),
    }
    tracing::info!(
        "storage {storage}; generator width {}, discriminator width {}, batch {}",
        config.model.g_width(),
        config.model.d_width(),
        config.train.batch_size
    );
}

fn report_outcome(trainer: &Trainer, outcome: Outcome, progress: &Progress) {
    let step = match outcome {
        Outcome::Finished { step } => step,
        Outcome::Stopped { step } => {
            let id = trainer.run_id();
            tracing::info!(
                run_id = id,
                "stopped at step {step}; run the same command with --run-id {id} to resume"
            );
            step
        }
    };
    if let Some(summary) = progress.summary() {
        tracing::info!("{summary}");
    }
    tracing::info!(
        run_id = trainer.run_id(),
        "checkpoint {}",
        trainer.checkpoint_url(step)
    );
}

/// Sets the returned flag on the first Ctrl-C; the trainer then commits a checkpoint and
/// returns. A second Ctrl-C exits at once with status 130.
fn install_stop_handler() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "interrupt: finishing this step and committing a checkpoint (Ctrl-C again to abort)"
        );
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(stop)
}

/// `run-YYYYMMDD-HHMMSS` in UTC.
fn default_run_id() -> String {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, time) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let (h, m, s) = (time / 3600, time % 3600 / 60, time % 60);
    format!("run-{year:04}{month:02}{day:02}-{h:02}{m:02}{s:02}")
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_from_days_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
    }
}
