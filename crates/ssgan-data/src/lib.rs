//! CIFAR-10 input pipeline for SS-GAN training.
//!
//! [`CifarDataset`] reads CIFAR-10 binary files into memory and builds batch tensors.
//! [`BatchOrder`] draws a deterministic, resumable order of examples, and [`shard`]
//! splits each global batch across data-parallel ranks.

mod batch;
mod cifar;
mod error;
mod images;
mod order;
mod shard;

pub use cifar::{CifarDataset, IMAGE_BYTES, RECORD_BYTES, Split};
pub use error::DataError;
pub use images::{NoiseImages, TrainImages};
pub use order::{BatchOrder, DataPosition};
pub use shard::shard;
