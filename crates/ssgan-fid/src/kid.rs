//! Kernel Inception Distance: the unbiased estimate of the squared maximum mean
//! discrepancy (MMD^2) with the cubic polynomial kernel `k(a, b) = (a . b / d + 1)^3`,
//! averaged over blocks of at most 1024 samples of each set.

use faer::Mat;

use crate::error::{FidError, Result};
use crate::features::FeatureMatrix;

/// Largest block of one set for which the kernel matrices are formed at once.
pub const MAX_BLOCK_SIZE: usize = 1024;

/// The KID estimate and its spread over blocks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KidEstimate {
    /// Mean of the unbiased MMD^2 estimates of the blocks. It can be slightly negative
    /// when the two sets come from the same distribution.
    pub mean: f64,
    /// Standard deviation of the block estimates (divided by the number of blocks).
    pub std: f64,
    pub blocks: usize,
}

/// Estimates KID between `a` and `b` with blocks of at most [`MAX_BLOCK_SIZE`] samples.
///
/// # Errors
///
/// See [`kernel_inception_distance_blocks`].
pub fn kernel_inception_distance(a: &FeatureMatrix, b: &FeatureMatrix) -> Result<KidEstimate> {
    kernel_inception_distance_blocks(a, b, MAX_BLOCK_SIZE)
}

/// Estimates KID with blocks of at most `max_block_size` samples of each set.
///
/// There are `ceil(max(n_a, n_b) / max_block_size)` blocks. Block k takes the samples
/// `k n / blocks .. (k + 1) n / blocks` of each set, in order, so that block sizes differ by
/// at most one.
///
/// # Errors
///
/// [`FidError::DimensionMismatch`] if the feature dimensions differ, and
/// [`FidError::TooFewSamples`] if a block would have fewer than 2 samples of a set.
pub fn kernel_inception_distance_blocks(
    a: &FeatureMatrix,
    b: &FeatureMatrix,
    max_block_size: usize,
) -> Result<KidEstimate> {
    if a.dims() != b.dims() {
        return Err(FidError::DimensionMismatch {
            what: "feature dimension of the second set",
            expected: a.dims(),
            actual: b.dims(),
        });
    }
    let blocks = a.rows().max(b.rows()).div_ceil(max_block_size.max(1));
    let min_rows = a.rows().min(b.rows());
    if blocks == 0 || min_rows < 2 * blocks {
        return Err(FidError::TooFewSamples {
            what: "KID (2 per block of each set)",
            min: 2 * blocks.max(1),
            actual: min_rows,
        });
    }
    let estimates: Vec<f64> = (0..blocks)
        .map(|k| block_mmd2(&block(a, k, blocks), &block(b, k, blocks)))
        .collect();
    let mean = estimates.iter().sum::<f64>() / blocks as f64;
    let variance = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / blocks as f64;
    Ok(KidEstimate {
        mean,
        std: variance.sqrt(),
        blocks,
    })
}

/// Returns rows `k n / blocks .. (k + 1) n / blocks` of `features` as a matrix.
fn block(features: &FeatureMatrix, k: usize, blocks: usize) -> Mat<f64> {
    let n = features.rows();
    let (start, end) = (k * n / blocks, (k + 1) * n / blocks);
    Mat::from_fn(end - start, features.dims(), |i, j| {
        features.row(start + i)[j]
    })
}

/// Unbiased MMD^2 of two blocks: the within-set kernel means leave out the diagonal.
fn block_mmd2(x: &Mat<f64>, y: &Mat<f64>) -> f64 {
    let (m, n) = (x.nrows() as f64, y.nrows() as f64);
    let dims = x.ncols() as f64;
    let (xx_sum, xx_trace) = kernel_sums(x, x, dims);
    let (yy_sum, yy_trace) = kernel_sums(y, y, dims);
    let (xy_sum, _) = kernel_sums(x, y, dims);
    (xx_sum - xx_trace) / (m * (m - 1.0)) + (yy_sum - yy_trace) / (n * (n - 1.0))
        - 2.0 * xy_sum / (m * n)
}

/// Returns the sum and the trace of the kernel matrix `(x y^T / dims + 1)^3`.
fn kernel_sums(x: &Mat<f64>, y: &Mat<f64>, dims: f64) -> (f64, f64) {
    let dots = x * y.transpose();
    let kernel = |i: usize, j: usize| (dots[(i, j)] / dims + 1.0).powi(3);
    let mut sum = 0.0;
    for i in 0..dots.nrows() {
        for j in 0..dots.ncols() {
            sum += kernel(i, j);
        }
    }
    let trace = (0..dots.nrows().min(dots.ncols()))
        .map(|i| kernel(i, i))
        .sum();
    (sum, trace)
}
