//! The training loop of an SS-GAN rank: the run config, data batches, the model's steps,
//! sample grids, and checkpoints committed to object storage and resumed from it.
//!
//! Error policy: every fallible function returns [`WorkerError`]; errors caught and not
//! returned (a failed final run-record write) are logged with the run id, rank and step.

pub mod agent;
pub mod bench;
pub mod bench_conv;
pub mod config;
pub mod control;
pub mod data;
pub mod device;
mod error;
pub mod grid;
pub mod rng;
pub mod sample;
mod staging;
pub mod step;
pub mod threads;
pub mod trainer;
mod uploader;

pub use config::RunConfig;
pub use control::{RankOptions, RankOutcome, RunControl, TrainObserver};
pub use device::DeviceSpec;
pub use error::{Result, WorkerError};
pub use step::{StepReport, Stepper};
pub use trainer::{Outcome, SharedRecord, Trainer};
