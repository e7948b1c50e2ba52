//! Feature statistics (mean and covariance) and pytorch-fid's `.npz` statistics files.

use std::path::Path;

use candle_core::npy::NpzTensors;
use candle_core::{DType, Device, Tensor};
use faer::Mat;
use tracing::debug;

use crate::error::{FidError, Result};
use crate::features::{FeatureMatrix, symmetrize};

/// Mean `mu` (D) and covariance `sigma` (D x D) of a feature set, in f64.
#[derive(Clone, Debug)]
pub struct Statistics {
    mu: Vec<f64>,
    sigma: Mat<f64>,
}

impl Statistics {
    /// Wraps a mean and a covariance.
    ///
    /// # Errors
    ///
    /// [`FidError::DimensionMismatch`] if `sigma` is not D x D for D = `mu.len()`, and
    /// [`FidError::NonFinite`] for a NaN or an infinity.
    pub fn new(mu: Vec<f64>, sigma: Mat<f64>) -> Result<Self> {
        for (what, actual) in [
            ("sigma rows", sigma.nrows()),
            ("sigma columns", sigma.ncols()),
        ] {
            if actual != mu.len() {
                return Err(FidError::DimensionMismatch {
                    what,
                    expected: mu.len(),
                    actual,
                });
            }
        }
        check_finite("mu", mu.iter().copied())?;
        let dims = mu.len();
        let sigma_values = (0..dims * dims).map(|k| sigma[(k / dims, k % dims)]);
        check_finite("sigma", sigma_values)?;
        Ok(Self { mu, sigma })
    }

    /// Computes `mu = mean(features, axis=0)` and `sigma = cov(features, rowvar=False)`
    /// (divided by N - 1), the statistics pytorch-fid computes.
    ///
    /// # Errors
    ///
    /// [`FidError::TooFewSamples`] for fewer than 2 samples.
    pub fn from_features(features: &FeatureMatrix) -> Result<Self> {
        let sigma = features.covariance()?;
        Self::new(features.mean(), sigma)
    }

    /// Returns the mean.
    pub fn mu(&self) -> &[f64] {
        &self.mu
    }

    /// Returns the covariance.
    pub fn sigma(&self) -> &Mat<f64> {
        &self.sigma
    }

    /// Returns the feature dimension D.
    pub fn dims(&self) -> usize {
        self.mu.len()
    }

    /// Reads a pytorch-fid statistics file: an `.npz` archive (compressed or not) with
    /// arrays `mu` (D) and `sigma` (D x D), float64 or float32, C order.
    ///
    /// # Errors
    ///
    /// [`FidError::StatsNotFound`] if the file does not exist, [`FidError::StatsFile`] if it
    /// is not a readable npz archive or an array has
    /// another shape or dtype, and [`FidError::MissingStatsKey`] naming an absent array.
    pub fn read_npz(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(FidError::StatsNotFound {
                path: path.to_path_buf(),
            });
        }
        let archive = NpzTensors::new(path).map_err(|error| stats_error(path, error))?;
        let mu = read_array(&archive, path, "mu")?;
        let sigma = read_array(&archive, path, "sigma")?;
        let dims = mu.dims().to_vec();
        let [d] = dims[..] else {
            return Err(stats_error(
                path,
                format!("mu has shape {dims:?}, expected (D,)"),
            ));
        };
        if sigma.dims() != [d, d] {
            let actual = sigma.dims().to_vec();
            return Err(stats_error(
                path,
                format!("sigma has shape {actual:?}, expected ({d}, {d}) to match mu"),
            ));
        }
        let mu = mu.to_vec1::<f64>()?;
        let sigma = sigma.flatten_all()?.to_vec1::<f64>()?;
        debug!(path = %path.display(), dims = d, "read statistics");
        let sigma = Mat::from_fn(d, d, |i, j| sigma[i * d + j]);
        Self::new(mu, sigma).map_err(|error| stats_error(path, error))
    }

    /// Writes the statistics as pytorch-fid does with `--save-stats`: an `.npz` archive
    /// with float64 arrays `mu` (D) and `sigma` (D x D), C order. The archive is stored
    /// without compression, which `np.load` reads as well.
    ///
    /// # Errors
    ///
    /// [`FidError::StatsWrite`] if the file cannot be written.
    pub fn write_npz(&self, path: &Path) -> Result<()> {
        let d = self.dims();
        let mu = Tensor::from_slice(&self.mu, d, &Device::Cpu)?;
        let sigma: Vec<f64> = (0..d * d).map(|k| self.sigma[(k / d, k % d)]).collect();
        let sigma = Tensor::from_vec(sigma, (d, d), &Device::Cpu)?;
        Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], path).map_err(|error| {
            FidError::StatsWrite {
                path: path.to_path_buf(),
                reason: error.to_string(),
            }
        })?;
        debug!(path = %path.display(), dims = d, "wrote statistics");
        Ok(())
    }

    /// Returns sigma with its asymmetric round-off removed.
    pub(crate) fn symmetric_sigma(&self) -> Mat<f64> {
        let mut sigma = self.sigma.clone();
        symmetrize(&mut sigma);
        sigma
    }
}

fn read_array(archive: &NpzTensors, path: &Path, key: &'static str) -> Result<Tensor> {
    let array = archive
        .get(key)
        .map_err(|error| stats_error(path, format!("cannot read array {key:?}: {error}")))?;
    let Some(array) = array else {
        let mut present: Vec<String> = archive.names().into_iter().cloned().collect();
        present.sort();
        return Err(FidError::MissingStatsKey {
            path: path.to_path_buf(),
            key,
            present,
        });
    };
    match array.dtype() {
        DType::F64 => Ok(array),
        DType::F32 => Ok(array.to_dtype(DType::F64)?),
        other => Err(stats_error(
            path,
            format!("array {key:?} has dtype {other:?}, expected float64"),
        )),
    }
}

fn check_finite(what: &'static str, values: impl Iterator<Item = f64>) -> Result<()> {
    for (index, value) in values.enumerate() {
        if !value.is_finite() {
            return Err(FidError::NonFinite { what, index });
        }
    }
    Ok(())
}

fn stats_error(path: &Path, reason: impl ToString) -> FidError {
    FidError::StatsFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}
