//! Input pipeline for SS-GAN training.
//!
//! [`CifarDataset`] reads CIFAR-10 binary files into memory and builds batch tensors, and
//! [`FolderImages`] serves a folder tree of PNG and JPEG files at the model's image size.
//! [`BatchOrder`] draws a deterministic, resumable order of examples, and [`shard`]
//! splits each global batch across data-parallel ranks.

mod batch;
mod cifar;
mod error;
mod folder;
mod images;
mod order;
mod prefetch;
mod shard;

pub use cifar::{CifarDataset, IMAGE_BYTES, RECORD_BYTES, Split};
pub use error::DataError;
pub use folder::{FOLDER_IMAGE_EXTENSIONS, FolderImages, center_square};
pub use images::{NoiseImages, TrainImages};
pub use order::{BatchOrder, DataPosition};
pub use prefetch::Prefetcher;
pub use shard::shard;
