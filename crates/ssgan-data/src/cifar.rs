//! Reader for the CIFAR-10 binary format (`cifar-10-batches-bin`).
//!
//! A file is a sequence of 3,073-byte records with no header. Byte 0 of a record is the
//! label (0 to 9). The next 3,072 bytes are the red, green and blue planes in that order,
//! each a 32 x 32 image in row-major order.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::DataError;

/// Bytes of pixel data in one image: 3 channels x 32 rows x 32 columns.
pub const IMAGE_BYTES: usize = 3072;

/// Bytes in one record of a CIFAR-10 binary file: the label byte and the image.
pub const RECORD_BYTES: usize = 3073;

/// Largest valid label. CIFAR-10 has ten classes, 0 airplane to 9 truck.
const MAX_LABEL: u8 = 9;

const TRAIN_PREFIX: &str = "data_batch_";
const TRAIN_PATTERN: &str = "data_batch_*.bin";
const TEST_FILE: &str = "test_batch.bin";

/// Part of CIFAR-10 to read from a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Every `data_batch_*.bin` file in the directory.
    Train,
    /// The file `test_batch.bin`.
    Test,
}

impl fmt::Display for Split {
    /// Writes `train` or `test`.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Split::Train => "train",
            Split::Test => "test",
        };
        formatter.write_str(name)
    }
}

/// CIFAR-10 images and labels, held in memory.
///
/// Images are stored back to back as `u8`, 3,072 bytes each in channel-major order
/// (red plane, green plane, blue plane, each 32 x 32 row-major). Image `i` comes from
/// record `i` of the files in the order of [`CifarDataset::files`].
#[derive(Clone)]
pub struct CifarDataset {
    images: Vec<u8>,
    labels: Vec<u8>,
    files: Vec<PathBuf>,
}

impl CifarDataset {
    /// Reads one split of CIFAR-10 from a file or a directory.
    ///
    /// If `path` is a directory, `Split::Train` reads every `data_batch_*.bin` in it,
    /// sorted by file name, and `Split::Test` reads `test_batch.bin`. If `path` is a
    /// file, it is read whatever `split` is.
    ///
    /// # Errors
    ///
    /// [`DataError::NotFound`] if `path` does not exist, [`DataError::NoMatchingFiles`]
    /// if the directory contains no file of the split, and the errors of
    /// [`CifarDataset::from_files`].
    pub fn open(path: &Path, split: Split) -> Result<Self, DataError> {
        let metadata = fs::metadata(path).map_err(|error| io_error(path, error))?;
        if !metadata.is_dir() {
            return Self::from_files(&[path.to_path_buf()]);
        }

        let files = split_files(path, split)?;
        debug!(dir = %path.display(), ?split, ?files, "found CIFAR-10 files");
        Self::from_files(&files)
    }

    /// Reads CIFAR-10 binary files and concatenates their records in the given order.
    ///
    /// Each file is read whole and validated before its images are kept.
    ///
    /// # Errors
    ///
    /// [`DataError::NoFiles`] for an empty list, [`DataError::NotFound`] or
    /// [`DataError::Io`] if a file cannot be read, and [`DataError::EmptyFile`],
    /// [`DataError::TruncatedRecord`] or [`DataError::InvalidLabel`] if a file is not
    /// valid CIFAR-10 binary.
    pub fn from_files(files: &[PathBuf]) -> Result<Self, DataError> {
        if files.is_empty() {
            return Err(DataError::NoFiles);
        }

        // Reserving the total size up front keeps the buffer from being reallocated, so
        // the images are held once. Only a file that grows after this size check can
        // cause a reallocation.
        let total_bytes = total_file_bytes(files)?;
        let mut dataset = Self {
            images: Vec::with_capacity(total_bytes),
            labels: Vec::with_capacity(total_bytes / RECORD_BYTES),
            files: files.to_vec(),
        };
        for path in files {
            dataset.append_file(path)?;
        }
        Ok(dataset)
    }

    /// Returns the number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Returns true if the dataset has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Returns the label of image `index`, in 0 to 9.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    pub fn label(&self, index: usize) -> u8 {
        self.labels[index]
    }

    /// Returns all labels, one per image, each in 0 to 9.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Returns the 3,072 pixel bytes of image `index` in channel-major order.
    ///
    /// # Panics
    ///
    /// If `index >= self.len()`.
    pub fn image(&self, index: usize) -> &[u8] {
        let start = index * IMAGE_BYTES;
        &self.images[start..start + IMAGE_BYTES]
    }

    /// Returns the files that the images were read from, in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Reads one file onto the end of the image buffer, then strips its label bytes.
    fn append_file(&mut self, path: &Path) -> Result<(), DataError> {
        let start = self.images.len();
        read_appending(path, &mut self.images)?;

        let records = validate_records(path, &self.images[start..])?;
        split_labels(&mut self.images, start, records, &mut self.labels);
        debug!(file = %path.display(), records, "read CIFAR-10 file");
        Ok(())
    }
}

impl fmt::Debug for CifarDataset {
    /// Prints the image count and the files, but not the pixel data.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CifarDataset")
            .field("len", &self.len())
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// Lists the files of `split` in `dir`. Train files are sorted by name.
fn split_files(dir: &Path, split: Split) -> Result<Vec<PathBuf>, DataError> {
    let (files, expected) = match split {
        Split::Train => (train_files(dir)?, TRAIN_PATTERN),
        Split::Test => (test_files(dir), TEST_FILE),
    };
    if files.is_empty() {
        return Err(DataError::NoMatchingFiles {
            dir: dir.to_path_buf(),
            split,
            expected,
        });
    }
    Ok(files)
}

fn test_files(dir: &Path) -> Vec<PathBuf> {
    let path = dir.join(TEST_FILE);
    if path.is_file() {
        vec![path]
    } else {
        Vec::new()
    }
}

/// Lists the files in `dir` named `data_batch_*.bin`, sorted by name.
fn train_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = fs::read_dir(dir).map_err(|error| io_error(dir, error))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|error| io_error(dir, error))?.path();
        if is_train_file_name(&path) && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn is_train_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return false;
    };
    name.starts_with(TRAIN_PREFIX) && name.ends_with(".bin")
}

/// Sums the sizes of `files`, so that a missing file is reported before any is read.
fn total_file_bytes(files: &[PathBuf]) -> Result<usize, DataError> {
    let mut total: u64 = 0;
    for path in files {
        let metadata = fs::metadata(path).map_err(|error| io_error(path, error))?;
        total = total.saturating_add(metadata.len());
    }
    Ok(usize::try_from(total).unwrap_or(usize::MAX))
}

/// Appends the whole content of `path` to `buffer`.
fn read_appending(path: &Path, buffer: &mut Vec<u8>) -> Result<(), DataError> {
    let mut file = File::open(path).map_err(|error| io_error(path, error))?;
    file.read_to_end(buffer)
        .map_err(|error| io_error(path, error))?;
    Ok(())
}

/// Checks that `bytes`, the content of `path`, is a non-empty sequence of whole records
/// with labels 0 to 9, and returns the record count.
fn validate_records(path: &Path, bytes: &[u8]) -> Result<usize, DataError> {
    if bytes.is_empty() {
        return Err(DataError::EmptyFile {
            path: path.to_path_buf(),
        });
    }

    let partial_bytes = bytes.len() % RECORD_BYTES;
    if partial_bytes != 0 {
        return Err(DataError::TruncatedRecord {
            path: path.to_path_buf(),
            file_bytes: bytes.len() as u64,
            offset: (bytes.len() - partial_bytes) as u64,
            partial_bytes: partial_bytes as u64,
        });
    }

    let records = bytes.len() / RECORD_BYTES;
    for record in 0..records {
        let offset = record * RECORD_BYTES;
        let label = bytes[offset];
        if label > MAX_LABEL {
            return Err(DataError::InvalidLabel {
                path: path.to_path_buf(),
                record: record as u64,
                offset: offset as u64,
                label,
            });
        }
    }
    Ok(records)
}

/// Moves the label bytes of the `records` records that start at `buffer[start]` into
/// `labels`, and packs their images together in place.
///
/// Image `r` moves from `start + r * RECORD_BYTES + 1` down to `start + r * IMAGE_BYTES`.
/// The target never lies after the source, so copying in record order never overwrites
/// bytes that are still to be moved.
fn split_labels(buffer: &mut Vec<u8>, start: usize, records: usize, labels: &mut Vec<u8>) {
    for record in 0..records {
        let source = start + record * RECORD_BYTES;
        labels.push(buffer[source]);
        buffer.copy_within(
            source + 1..source + RECORD_BYTES,
            start + record * IMAGE_BYTES,
        );
    }
    buffer.truncate(start + records * IMAGE_BYTES);
}

fn io_error(path: &Path, error: io::Error) -> DataError {
    if error.kind() == io::ErrorKind::NotFound {
        return DataError::NotFound {
            path: path.to_path_buf(),
        };
    }
    DataError::Io {
        path: path.to_path_buf(),
        source: error,
    }
}
