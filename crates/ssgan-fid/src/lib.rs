//! FID evaluation: pytorch-fid's FID InceptionV3 in candle, the Frechet distance, KID, the
//! Inception Score, and statistics files that pytorch-fid reads and writes.
//!
//! - [`InceptionWeights::load`] reads `pt_inception-2015-12-05-6726825d.pth` (the legacy
//!   PyTorch format), zip-format `.pth` files and safetensors.
//! - [`FidInception`] maps images in [0, 1] to pool3 and the other feature layers.
//! - [`FeatureExtractor`] runs it over an [`ImageSource`] in batches.
//! - [`Statistics`] stores mean and covariance and reads and writes `.npz` files.
//! - [`frechet_distance`], [`kernel_inception_distance`] and [`inception_score`] are the
//!   metrics.
//!
//! Error policy: every fallible function returns [`FidError`]. The library logs at debug
//! and trace level only.

mod error;
mod extract;
mod features;
mod frechet;
pub mod inception;
mod inception_score;
mod kid;
pub mod source;
mod stats;
pub mod weights;

pub use error::{FidError, Result};
pub use extract::{DEFAULT_BATCH_SIZE, FeatureExtractor};
pub use features::FeatureMatrix;
pub use frechet::{
    FrechetTerms, SINGULAR_OFFSET, frechet_distance, frechet_distance_with_offset, frechet_terms,
};
pub use inception::{FeatureLayer, FidInception, InceptionOutputs};
pub use inception_score::{inception_score, inception_score_from_logits};
pub use kid::{
    KidEstimate, MAX_BLOCK_SIZE, kernel_inception_distance, kernel_inception_distance_blocks,
};
pub use source::{CifarImages, ImageFolder, ImageSource, MemoryImages, RgbPlanes};
pub use stats::Statistics;
pub use weights::InceptionWeights;

/// File name of pytorch-fid's FID Inception weights.
pub const WEIGHTS_FILE_NAME: &str = "pt_inception-2015-12-05-6726825d.pth";

/// Download address of [`WEIGHTS_FILE_NAME`], as pytorch-fid 0.3.0 uses it.
pub const WEIGHTS_URL: &str = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth";
