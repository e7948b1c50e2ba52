use std::path::PathBuf;

use crate::cifar::{RECORD_BYTES, Split};

/// Errors from reading CIFAR-10 files, assembling batches and ordering examples.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "{} not found: expected a CIFAR-10 binary file or a directory that contains \
         data_batch_*.bin files. Check the path.",
        .path.display()
    )]
    NotFound { path: PathBuf },

    #[error(
        "{} contains no CIFAR-10 {split} file: looked for {expected}. Point the path at \
         the extracted cifar-10-batches-bin directory or at a single .bin file, or train on \
         a folder of PNG or JPEG images with data.kind = \"image-folder\".",
        .dir.display()
    )]
    NoMatchingFiles {
        dir: PathBuf,
        split: Split,
        expected: &'static str,
    },

    #[error("no CIFAR-10 files were given: pass at least one .bin file")]
    NoFiles,

    #[error("failed to read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{} is empty, expected a sequence of {RECORD_BYTES}-byte CIFAR-10 records. \
         The file may be damaged or an incomplete download.",
        .path.display()
    )]
    EmptyFile { path: PathBuf },

    #[error(
        "{}: {file_bytes} bytes is not a whole number of {RECORD_BYTES}-byte records, \
         so the record at byte offset {offset} is truncated ({partial_bytes} bytes). \
         The file may be damaged or not in CIFAR-10 binary format.",
        .path.display()
    )]
    TruncatedRecord {
        path: PathBuf,
        file_bytes: u64,
        offset: u64,
        partial_bytes: u64,
    },

    #[error(
        "{}: record {record} at byte offset {offset} has label {label}, expected 0 to 9. \
         The file may be damaged or not in CIFAR-10 binary format \
         (CIFAR-100 binary records have two label bytes and 3074 bytes in all).",
        .path.display()
    )]
    InvalidLabel {
        path: PathBuf,
        record: u64,
        offset: u64,
        label: u8,
    },

    #[error(
        "{} is not a folder: data.kind = \"image-folder\" expects a directory of PNG or \
         JPEG files (subfolders are read too). Check data.path.",
        .path.display()
    )]
    NotAFolder { path: PathBuf },

    #[error(
        "image folder {} not found: data.kind = \"image-folder\" expects a directory of PNG \
         or JPEG files. Check data.path.",
        .path.display()
    )]
    FolderNotFound { path: PathBuf },

    #[error(
        "{} contains no PNG or JPEG file (.png, .jpg, .jpeg, in any subfolder). Check \
         data.path.",
        .path.display()
    )]
    NoImages { path: PathBuf },

    #[error(
        "{} is more than {max_depth} folders below the image root, which a loop of \
         symbolic links can cause: point data.path at a folder with a shallower tree",
        .path.display()
    )]
    FolderTooDeep { path: PathBuf, max_depth: usize },

    #[error(
        "failed to decode image {}: {reason}. Remove or replace the file.",
        .path.display()
    )]
    Image {
        path: PathBuf,
        /// The decoder's message on one line, without its final period.
        reason: String,
    },

    #[error("image index {index} is out of range for a dataset of {len} images")]
    IndexOutOfRange { index: usize, len: usize },

    #[error("batch dtype {dtype:?} is not supported: request F32 or F64")]
    UnsupportedDtype { dtype: candle_core::DType },

    #[error("failed to build the image batch tensor: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error("cannot draw batches from an empty dataset: the dataset length is 0")]
    EmptyDataset,

    #[error(
        "data position offset {offset} in epoch {epoch} is past the end of a dataset of {len} \
         examples. Resume with the dataset that the position was saved with."
    )]
    OffsetOutOfRange { epoch: u64, offset: u64, len: usize },

    #[error("world size must be at least 1, got 0")]
    ZeroWorldSize,

    #[error(
        "rank {rank} is out of range for world size {world_size}: expected a rank below {world_size}"
    )]
    RankOutOfRange { rank: usize, world_size: usize },

    #[error(
        "global batch size {batch_size} is not divisible by world size {world_size}: \
         choose a batch size that is a multiple of {world_size}"
    )]
    IndivisibleBatch {
        batch_size: usize,
        world_size: usize,
    },
}
