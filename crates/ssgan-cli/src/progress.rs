//! The training progress bar and the end-of-run summary.

use std::collections::VecDeque;

use indicatif::{ProgressBar, ProgressStyle};
use ssgan_worker::StepReport;

/// Steps over which the summary averages rotation accuracy.
const SUMMARY_WINDOW: usize = 20;
/// Without a terminal the bar is hidden, so a log line is written every this many steps.
const LOG_EVERY: u64 = 25;

pub struct Progress {
    bar: ProgressBar,
    recent: VecDeque<StepReport>,
}

impl Progress {
    pub fn new(start: u64, target: u64) -> Self {
        let bar = ProgressBar::new(target);
        let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]")
            .expect("the template is valid");
        bar.set_style(style);
        bar.set_position(start);
        Self {
            bar,
            recent: VecDeque::new(),
        }
    }

    pub fn update(&mut self, report: &StepReport) {
        let message = format!(
            "loss_d {:.3} loss_g {:.3} rot_acc_real {:.2} {:.1} img/s",
            report.discriminator.loss,
            report.generator.loss,
            report.discriminator.rotation_accuracy,
            report.images_per_second
        );
        if self.bar.is_hidden()
            && (report.step.is_multiple_of(LOG_EVERY) || report.step == report.target_steps)
        {
            tracing::info!("step {}/{} {message}", report.step, report.target_steps);
        }
        self.bar.set_message(message);
        self.bar.set_position(report.step);
        self.recent.push_back(*report);
        if self.recent.len() > SUMMARY_WINDOW {
            self.recent.pop_front();
        }
    }

    /// Returns the step count at which the run ends.
    pub fn target(&self) -> u64 {
        self.bar.length().unwrap_or(0)
    }

    pub fn finish(&self) {
        self.bar.abandon();
    }

    /// Mean losses, rotation accuracy on reals and throughput over the last steps.
    pub fn summary(&self) -> Option<String> {
        if self.recent.is_empty() {
            return None;
        }
        let count = self.recent.len() as f64;
        let mean = |f: fn(&StepReport) -> f64| self.recent.iter().map(f).sum::<f64>() / count;
        Some(format!(
            "last {} steps: rotation accuracy on reals {:.3} (chance 0.25), loss_d {:.3}, loss_g {:.3}, {:.1} img/s",
            self.recent.len(),
            mean(|r| r.discriminator.rotation_accuracy),
            mean(|r| r.discriminator.loss),
            mean(|r| r.generator.loss),
            mean(|r| r.images_per_second)
        ))
    }
}
