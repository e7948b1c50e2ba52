use std::path::PathBuf;

/// Errors of weight loading, feature extraction, statistics files and the metrics.
#[derive(Debug, thiserror::Error)]
pub enum FidError {
    #[error("failed to read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "{} is not a weights file this loader reads: {reason}. Expected a PyTorch .pth \
         (zip or legacy format) or a .safetensors file.",
        .path.display()
    )]
    WeightsFormat { path: PathBuf, reason: String },

    #[error(
        "weight {key:?} is missing from {}: the file is not a complete FID InceptionV3 \
         state_dict. Use pt_inception-2015-12-05-6726825d.pth from pytorch-fid.",
        .path.display()
    )]
    MissingWeight { key: String, path: PathBuf },

    #[error(
        "weight {key:?} in {} has shape {actual:?}, expected {expected:?}: the file is not \
         the FID InceptionV3 state_dict (1008 classes, no AuxLogits).",
        .path.display()
    )]
    WeightShape {
        key: String,
        path: PathBuf,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    #[error("invalid input: {0}")]
    Input(String),

    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),

    #[error(
        "statistics file {} has no array {key:?} (arrays present: {present:?}): expected a \
         pytorch-fid stats file with float64 arrays `mu` and `sigma`",
        .path.display()
    )]
    MissingStatsKey {
        path: PathBuf,
        key: &'static str,
        present: Vec<String>,
    },

    #[error("statistics file {} is invalid: {reason}", .path.display())]
    StatsFile { path: PathBuf, reason: String },

    #[error("statistics file {} not found. Check the path.", .path.display())]
    StatsNotFound { path: PathBuf },

    #[error("cannot write statistics file {}: {reason}", .path.display())]
    StatsWrite { path: PathBuf, reason: String },

    #[error("{what}: expected {expected}, got {actual}")]
    DimensionMismatch {
        what: &'static str,
        expected: usize,
        actual: usize,
    },

    #[error("{what} needs at least {min} samples, got {actual}")]
    TooFewSamples {
        what: &'static str,
        min: usize,
        actual: usize,
    },

    #[error("{what} contains a non-finite value (NaN or infinity) at index {index}")]
    NonFinite { what: &'static str, index: usize },

    #[error(
        "the matrix square root of sigma1 * sigma2 has an imaginary component {magnitude:e} \
         (above 1e-3): the covariances are not positive semi-definite. Check that both \
         sigma arrays are covariance matrices."
    )]
    ImaginaryComponent { magnitude: f64 },

    #[error("eigendecomposition of {what} failed to converge")]
    Eigen { what: &'static str },

    #[error(
        "image folder {} contains no image file (bmp, jpg, jpeg, pgm, png, ppm, tif, tiff, \
         webp) at its top level; as in pytorch-fid, subfolders are not read",
        .path.display()
    )]
    NoImages { path: PathBuf },

    #[error("failed to decode image {}: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },

    #[error(transparent)]
    Data(#[from] ssgan_data::DataError),
}

pub type Result<T> = std::result::Result<T, FidError>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> FidError {
    let path = path.into();
    move |source| FidError::Io { path, source }
}
