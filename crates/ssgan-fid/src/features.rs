//! Feature matrices and their mean and covariance.

use faer::Mat;

use crate::error::{FidError, Result};

/// Features of N samples, D values each, row-major in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureMatrix {
    rows: usize,
    dims: usize,
    values: Vec<f64>,
}

impl FeatureMatrix {
    /// Wraps `values` (rows x dims, row-major).
    ///
    /// # Errors
    ///
    /// [`FidError::DimensionMismatch`] if `values.len() != rows * dims`, and
    /// [`FidError::NonFinite`] for a NaN or an infinity.
    pub fn new(rows: usize, dims: usize, values: Vec<f64>) -> Result<Self> {
        if values.len() != rows * dims {
            return Err(FidError::DimensionMismatch {
                what: "feature values (rows x dims)",
                expected: rows * dims,
                actual: values.len(),
            });
        }
        if let Some(index) = values.iter().position(|value| !value.is_finite()) {
            return Err(FidError::NonFinite {
                what: "features",
                index,
            });
        }
        Ok(Self { rows, dims, values })
    }

    /// Wraps f32 features, widened exactly to f64 as pytorch-fid's float64 array does.
    pub fn from_f32(rows: usize, dims: usize, values: &[f32]) -> Result<Self> {
        Self::new(rows, dims, values.iter().map(|&v| f64::from(v)).collect())
    }

    /// Returns the number of samples.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Returns the number of values per sample.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Returns the values, row-major.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Returns the values of sample `row`.
    pub fn row(&self, row: usize) -> &[f64] {
        &self.values[row * self.dims..(row + 1) * self.dims]
    }

    /// Returns the mean over samples, like `np.mean(features, axis=0)`.
    pub fn mean(&self) -> Vec<f64> {
        let mut sum = vec![0.0; self.dims];
        for row in self.values.chunks_exact(self.dims.max(1)) {
            for (total, value) in sum.iter_mut().zip(row) {
                *total += value;
            }
        }
        sum.iter().map(|total| total / self.rows as f64).collect()
    }

    /// Returns the unbiased covariance (divided by N - 1), like
    /// `np.cov(features, rowvar=False)`, as a dims x dims matrix.
    ///
    /// # Errors
    ///
    /// [`FidError::TooFewSamples`] for fewer than 2 samples.
    pub fn covariance(&self) -> Result<Mat<f64>> {
        if self.rows < 2 {
            return Err(FidError::TooFewSamples {
                what: "a covariance",
                min: 2,
                actual: self.rows,
            });
        }
        let mean = self.mean();
        let centered = Mat::from_fn(self.rows, self.dims, |i, j| {
            self.values[i * self.dims + j] - mean[j]
        });
        let scale = 1.0 / (self.rows - 1) as f64;
        let mut covariance = centered.transpose() * &centered * faer::Scale(scale);
        symmetrize(&mut covariance);
        Ok(covariance)
    }
}

/// Replaces `matrix` by `(matrix + matrix^T) / 2`, removing round-off asymmetry.
pub(crate) fn symmetrize(matrix: &mut Mat<f64>) {
    let n = matrix.nrows();
    for i in 0..n {
        for j in (i + 1)..n {
            let mean = 0.5 * (matrix[(i, j)] + matrix[(j, i)]);
            matrix[(i, j)] = mean;
            matrix[(j, i)] = mean;
        }
    }
}
