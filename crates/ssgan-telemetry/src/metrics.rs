//! The metrics of a run, recorded through OpenTelemetry's global meter provider.
//!
//! Without an OTLP endpoint, [`crate::init`] installs no provider, and every record is a
//! no-op. Each value carries `ssgan.run_id` and, where a rank records it, `ssgan.rank`.
//!
//! | name | kind | unit | recorded |
//! | --- | --- | --- | --- |
//! | `ssgan.loss_d`, `ssgan.loss_g` | gauge | 1 | every step, rank 0 |
//! | `ssgan.rotation_loss_d`, `ssgan.rotation_loss_g` | gauge | 1 | every step, rank 0 |
//! | `ssgan.rotation_accuracy` | gauge | 1 | every step, rank 0 |
//! | `ssgan.images_per_second` | gauge | {image}/s | every step, rank 0 |
//! | `ssgan.step.duration` | histogram | s | every step, every rank |
//! | `ssgan.data_wait.duration` | histogram | s | every step, every rank |
//! | `ssgan.collective.duration` | histogram | s | every step, every rank |
//! | `ssgan.checkpoint.duration` | histogram | s | every committed checkpoint |
//! | `ssgan.checkpoint.size` | counter | By | every committed checkpoint |
//! | `ssgan.fid` | gauge | 1 | every evaluation |
//! | `ssgan.restarts` | counter | {restart} | every restart by the coordinator |

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

/// Losses and speed of one generator step, as rank 0 reports them.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepValues {
    pub loss_d: f64,
    pub loss_g: f64,
    pub rotation_loss_d: f64,
    pub rotation_loss_g: f64,
    pub rotation_accuracy: f64,
    pub images_per_second: f64,
}

/// The instruments, created on first use from the global meter provider.
struct Instruments {
    loss_d: Gauge<f64>,
    loss_g: Gauge<f64>,
    rotation_loss_d: Gauge<f64>,
    rotation_loss_g: Gauge<f64>,
    rotation_accuracy: Gauge<f64>,
    images_per_second: Gauge<f64>,
    step_duration: Histogram<f64>,
    data_wait: Histogram<f64>,
    collective: Histogram<f64>,
    checkpoint_duration: Histogram<f64>,
    checkpoint_size: Counter<u64>,
    fid: Gauge<f64>,
    restarts: Counter<u64>,
}

impl Instruments {
    fn new(meter: &Meter) -> Self {
        let gauge =
            |name: &'static str, unit: &'static str| meter.f64_gauge(name).with_unit(unit).build();
        let seconds = |name: &'static str| meter.f64_histogram(name).with_unit("s").build();
        Self {
            loss_d: gauge("ssgan.loss_d", "1"),
            loss_g: gauge("ssgan.loss_g", "1"),
            rotation_loss_d: gauge("ssgan.rotation_loss_d", "1"),
            rotation_loss_g: gauge("ssgan.rotation_loss_g", "1"),
            rotation_accuracy: gauge("ssgan.rotation_accuracy", "1"),
            images_per_second: gauge("ssgan.images_per_second", "{image}/s"),
            step_duration: seconds("ssgan.step.duration"),
            data_wait: seconds("ssgan.data_wait.duration"),
            collective: seconds("ssgan.collective.duration"),
            checkpoint_duration: seconds("ssgan.checkpoint.duration"),
            checkpoint_size: meter
                .u64_counter("ssgan.checkpoint.size")
                .with_unit("By")
                .build(),
            fid: gauge("ssgan.fid", "1"),
            restarts: meter
                .u64_counter("ssgan.restarts")
                .with_unit("{restart}")
                .build(),
        }
    }
}

/// Returns the instruments. The meter provider must be installed before the first call,
/// which [`crate::init`] does before any command runs.
fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| Instruments::new(&opentelemetry::global::meter("ssgan")))
}

fn run_attributes(run_id: &str, rank: usize) -> [KeyValue; 2] {
    [
        KeyValue::new("ssgan.run_id", run_id.to_owned()),
        KeyValue::new("ssgan.rank", rank as i64),
    ]
}

/// Records the losses and speed of a step that rank 0 reports.
pub fn record_step_values(run_id: &str, values: &StepValues) {
    let attributes = run_attributes(run_id, 0);
    let meters = instruments();
    meters.loss_d.record(values.loss_d, &attributes);
    meters.loss_g.record(values.loss_g, &attributes);
    meters
        .rotation_loss_d
        .record(values.rotation_loss_d, &attributes);
    meters
        .rotation_loss_g
        .record(values.rotation_loss_g, &attributes);
    meters
        .rotation_accuracy
        .record(values.rotation_accuracy, &attributes);
    meters
        .images_per_second
        .record(values.images_per_second, &attributes);
}

/// Records the wall time of one generator step of `rank`.
pub fn record_step_duration(run_id: &str, rank: usize, seconds: f64) {
    instruments()
        .step_duration
        .record(seconds, &run_attributes(run_id, rank));
}

/// Records the time a rank waited for a real batch: the part of building it that the
/// prefetch did not hide, and the copy to the device.
pub fn record_data_wait(run_id: &str, rank: usize, seconds: f64) {
    instruments()
        .data_wait
        .record(seconds, &run_attributes(run_id, rank));
}

/// Records the time a rank spent in collectives during a step: the gradient all-reduce and
/// synchronized batch norm. On GPUs this is only the time to queue NCCL's asynchronous work.
pub fn record_collective_time(run_id: &str, rank: usize, seconds: f64) {
    instruments()
        .collective
        .record(seconds, &run_attributes(run_id, rank));
}

/// Records a committed checkpoint: the time its upload and commit took, and its bytes.
pub fn record_checkpoint(run_id: &str, seconds: f64, bytes: u64) {
    let attributes = run_attributes(run_id, 0);
    instruments()
        .checkpoint_duration
        .record(seconds, &attributes);
    instruments().checkpoint_size.add(bytes, &attributes);
}

/// Records the FID of the run's newest evaluated checkpoint.
pub fn record_fid(run_id: &str, fid: f64) {
    let attributes = [KeyValue::new("ssgan.run_id", run_id.to_owned())];
    instruments().fid.record(fid, &attributes);
}

/// Counts a restart of a run by the coordinator.
pub fn record_restart(run_id: &str) {
    let attributes = [KeyValue::new("ssgan.run_id", run_id.to_owned())];
    instruments().restarts.add(1, &attributes);
}
