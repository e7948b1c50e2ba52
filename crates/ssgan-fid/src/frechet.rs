//! The Frechet distance between two Gaussians fitted to feature sets (FID), computed
//! with symmetric eigendecompositions only.
//!
//! pytorch-fid 0.3.0 computes `tr(sqrtm(sigma1 @ sigma2))` with scipy's general `sqrtm`.
//! Mathematically that trace is the sum of `sqrt(lambda)` over the eigenvalues of
//! `sigma1^(1/2) sigma2 sigma1^(1/2)`, a symmetric positive semi-definite matrix, which is
//! what is computed here.

use faer::{Mat, Side};
use tracing::debug;

use crate::error::{FidError, Result};
use crate::stats::Statistics;

/// Offset added to both diagonals when the square root is not finite (pytorch-fid's eps).
pub const SINGULAR_OFFSET: f64 = 1e-6;

/// Largest imaginary part of the square root that is dropped as round-off, as pytorch-fid
/// accepts `|imag| <= 1e-3` on the diagonal of `sqrtm(sigma1 @ sigma2)`.
const MAX_IMAGINARY: f64 = 1e-3;

/// The terms of the squared Frechet distance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FrechetTerms {
    /// `|mu1 - mu2|^2`.
    pub mean_term: f64,
    pub trace_sigma1: f64,
    pub trace_sigma2: f64,
    /// `tr((sigma1 sigma2)^(1/2))`.
    pub trace_sqrt_product: f64,
    /// Whether the square root was computed on `sigma + 1e-6 I` because the plain one was
    /// not finite.
    pub offset_used: bool,
}

impl FrechetTerms {
    /// Returns `mean_term + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))`, the
    /// squared Frechet distance (the value pytorch-fid reports as FID).
    pub fn distance(&self) -> f64 {
        self.mean_term + self.trace_sigma1 + self.trace_sigma2 - 2.0 * self.trace_sqrt_product
    }
}

/// Returns the squared Frechet distance between the Gaussians `a` and `b`, in f64.
///
/// # Errors
///
/// See [`frechet_terms`].
pub fn frechet_distance(a: &Statistics, b: &Statistics) -> Result<f64> {
    Ok(frechet_terms(a, b)?.distance())
}

/// Computes the terms of the squared Frechet distance between `a` and `b`.
///
/// If the square root is not finite, it is computed again on `sigma + 1e-6 I` for both
/// covariances, as pytorch-fid does. The trace terms keep the plain covariances. Because
/// the inputs are checked to be finite and only symmetric eigensolvers run, this retry is
/// reached only if an eigensolver returns non-finite values. pytorch-fid reaches it through
/// round-off in scipy's general `sqrtm`.
///
/// # Errors
///
/// [`FidError::DimensionMismatch`] if the dimensions differ, [`FidError::ImaginaryComponent`]
/// if the product has an eigenvalue below -1e-6 (so the square root would have an
/// imaginary part above 1e-3), and [`FidError::Eigen`] if an eigendecomposition fails.
pub fn frechet_terms(a: &Statistics, b: &Statistics) -> Result<FrechetTerms> {
    check_dims(a, b)?;
    let (sigma1, sigma2) = (a.symmetric_sigma(), b.symmetric_sigma());
    let mut trace_sqrt_product = trace_sqrt_product(&sigma1, &sigma2)?;
    let offset_used = !trace_sqrt_product.is_finite();
    if offset_used {
        debug!(
            offset = SINGULAR_OFFSET,
            "square root of the covariance product is not finite; adding an offset"
        );
        trace_sqrt_product = offset_trace_sqrt_product(&sigma1, &sigma2, SINGULAR_OFFSET)?;
    }
    Ok(FrechetTerms {
        mean_term: squared_distance(a.mu(), b.mu()),
        trace_sigma1: trace(&sigma1),
        trace_sigma2: trace(&sigma2),
        trace_sqrt_product,
        offset_used,
    })
}

/// Returns the squared Frechet distance with `offset * I` added to both covariances in
/// the square root only: the value of pytorch-fid's fallback branch.
///
/// # Errors
///
/// As [`frechet_terms`].
pub fn frechet_distance_with_offset(a: &Statistics, b: &Statistics, offset: f64) -> Result<f64> {
    check_dims(a, b)?;
    let (sigma1, sigma2) = (a.symmetric_sigma(), b.symmetric_sigma());
    let terms = FrechetTerms {
        mean_term: squared_distance(a.mu(), b.mu()),
        trace_sigma1: trace(&sigma1),
        trace_sigma2: trace(&sigma2),
        trace_sqrt_product: offset_trace_sqrt_product(&sigma1, &sigma2, offset)?,
        offset_used: true,
    };
    Ok(terms.distance())
}

fn check_dims(a: &Statistics, b: &Statistics) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(FidError::DimensionMismatch {
            what: "feature dimension of the second statistics",
            expected: a.dims(),
            actual: b.dims(),
        });
    }
    Ok(())
}

fn offset_trace_sqrt_product(sigma1: &Mat<f64>, sigma2: &Mat<f64>, offset: f64) -> Result<f64> {
    trace_sqrt_product(&add_diagonal(sigma1, offset), &add_diagonal(sigma2, offset))
}

/// Computes `tr((sigma1 sigma2)^(1/2))` as the sum of `sqrt(lambda)` over the eigenvalues of
/// `sigma1^(1/2) sigma2 sigma1^(1/2)`. Negative round-off eigenvalues count as 0.
///
/// NOTE: positive round-off eigenvalues (about 1e-16 of the largest) are kept, as scipy's
/// `sqrtm` keeps them, so that rank-deficient cases match pytorch-fid (within 6e-7 on the
/// fixture). Their square roots add up when many eigenvalues are 0: FID(A, A) of a set
/// with fewer samples than dimensions is about -1e-7 x tr(sigma) instead of 0.
fn trace_sqrt_product(sigma1: &Mat<f64>, sigma2: &Mat<f64>) -> Result<f64> {
    let root1 = symmetric_sqrt(sigma1)?;
    let mut product = &root1 * sigma2 * &root1;
    crate::features::symmetrize(&mut product);
    let eigenvalues = eigenvalues(&product, "sigma1^(1/2) sigma2 sigma1^(1/2)")?;

    let min = eigenvalues.iter().copied().fold(f64::INFINITY, f64::min);
    if min < -(MAX_IMAGINARY * MAX_IMAGINARY) {
        return Err(FidError::ImaginaryComponent {
            magnitude: (-min).sqrt(),
        });
    }
    debug!(min_eigenvalue = min, "eigenvalues of the symmetric product");
    Ok(eigenvalues.iter().map(|&value| value.max(0.0).sqrt()).sum())
}

/// Returns the principal square root of a symmetric positive semi-definite matrix,
/// `U diag(sqrt(max(s, 0))) U^T`.
fn symmetric_sqrt(matrix: &Mat<f64>) -> Result<Mat<f64>> {
    let eigen = matrix
        .self_adjoint_eigen(Side::Lower)
        .map_err(|_| FidError::Eigen { what: "sigma1" })?;
    let vectors = eigen.U();
    let values = eigen.S().column_vector();
    let n = matrix.nrows();
    let scaled = Mat::from_fn(n, n, |i, j| vectors[(i, j)] * values[j].max(0.0).sqrt());
    Ok(&scaled * vectors.transpose())
}

fn eigenvalues(matrix: &Mat<f64>, what: &'static str) -> Result<Vec<f64>> {
    matrix
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|_| FidError::Eigen { what })
}

fn add_diagonal(matrix: &Mat<f64>, offset: f64) -> Mat<f64> {
    let mut shifted = matrix.clone();
    for i in 0..shifted.nrows() {
        shifted[(i, i)] += offset;
    }
    shifted
}

fn trace(matrix: &Mat<f64>) -> f64 {
    (0..matrix.nrows()).map(|i| matrix[(i, i)]).sum()
}

fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}
