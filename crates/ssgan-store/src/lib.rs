//! Object storage for SS-GAN checkpoints, sample grids and run records.
//!
//! Everything lives under one root URL (a local directory, S3, Google Cloud Storage, Azure
//! or an in-memory store) in this layout:
//!
//! ```text
//! runs/<run_id>/run.json                               RunRecord as JSON
//! runs/<run_id>/checkpoints/<step:010>/<file>          checkpoint files named by the caller
//! runs/<run_id>/checkpoints/<step:010>/MANIFEST.json   file names, sizes and SHA-256 digests
//! runs/<run_id>/checkpoints/<step:010>/eval.json       FID result of the evaluator
//! runs/<run_id>/samples/<step:010>.png                 sample grid
//! runs/<run_id>/<file>                                 run-level files (cached FID statistics)
//! ```
//!
//! Step directories are zero-padded to 10 digits, such as `0000000100`. A checkpoint counts
//! as committed only once its `MANIFEST.json` exists. The manifest is written after every
//! file, with a create-only put. A commit of a step that already has a manifest is rejected
//! before it uploads anything, so a committed checkpoint's files are not overwritten. The
//! exception is two commits of one step that run at the same time, which
//! [`Store::commit_checkpoint`] describes.
//!
//! [`Store`] is the async API and [`BlockingStore`] wraps it with its own tokio runtime.

mod blocking;
mod checkpoint;
mod error;
mod eval;
mod layout;
mod manifest;
mod object_url;
mod run;
mod store;
mod url;

#[cfg(test)]
mod tests;

pub use blocking::BlockingStore;
pub use checkpoint::LoadedCheckpoint;
pub use error::StoreError;
pub use eval::EvalRecord;
pub use layout::validate_run_id;
pub use manifest::{CheckpointFile, MANIFEST_FORMAT, Manifest, ManifestEntry};
pub use object_url::read_object_url;
pub use run::{RunRecord, RunState, StepMetrics};
pub use store::Store;
pub use url::parse_checkpoint_url;
