//! The ssgan coordinator: the control plane of distributed SS-GAN training. It never touches
//! tensors.
//!
//! [`Coordinator::start`] serves two gRPC services from `proto/ssgan/v1`:
//! - `RunService`, the public API, backed by a run registry in the object store
//!   (`runs/<run_id>/run.json`), so that a restarted coordinator picks every run up again;
//! - `WorkerService`, one bidirectional stream per worker. Idle workers form a pool, and a
//!   PENDING run that needs W workers starts once W are idle that share a backend: CPU
//!   workers, or GPU workers with one NCCL version (a group with mixed NCCL versions is never
//!   formed). Each of them gets an Assignment with its rank and reports the address of its
//!   ring listener, and rank 0 of GPU workers also its NCCL unique id. Once the last report
//!   arrives, all receive the Rendezvous with every address and rank 0's id. A worker whose stream closes or that sends nothing for
//!   the heartbeat timeout is lost, and its run restarts from the latest committed checkpoint
//!   as the next attempt, within the restart limit and with backoff.
//!
//! - `EvaluatorService`, one bidirectional stream per evaluator. A committed checkpoint
//!   whose run has `eval.every` > 0 and whose step is due becomes an evaluation task, queued
//!   until an evaluator is idle. Results go to the run record (`evals`, `best_step`) and to
//!   the run's watchers. A lost evaluator's task goes back to the queue.
//!
//! State changes are logged with `tracing` at debug level, with the run id and attempt.

mod attempt;
mod config;
mod convert;
mod error;
mod evaluation;
mod evaluator_service;
mod evaluators;
mod gang;
mod grouping;
mod options;
mod pool;
mod registry;
mod run_service;
mod scheduler;
mod server;
mod shared;
mod state;
mod watch;
mod worker_service;

pub use error::CoordinatorError;
pub use options::CoordinatorOptions;
pub use server::Coordinator;

/// Version that a worker's Join must carry: the version of the ssgan crates.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
