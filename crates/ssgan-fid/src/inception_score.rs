//! Inception Score: `exp(mean_x KL(p(y|x) || p(y)))` over one split, in f64.

use crate::error::{FidError, Result};
use crate::features::FeatureMatrix;

/// Largest deviation of a probability row's sum from 1 that is accepted.
const SUM_TOLERANCE: f64 = 1e-6;

/// Computes the Inception Score from class logits [N, classes] (softmax per row).
///
/// With pytorch-fid's weights the logits have 1008 classes, and all of them enter the
/// softmax.
///
/// # Errors
///
/// [`FidError::TooFewSamples`] for an empty matrix.
pub fn inception_score_from_logits(logits: &FeatureMatrix) -> Result<f64> {
    let mut probabilities = Vec::with_capacity(logits.values().len());
    for row in 0..logits.rows() {
        probabilities.extend(softmax(logits.row(row)));
    }
    let probabilities = FeatureMatrix::new(logits.rows(), logits.dims(), probabilities)?;
    inception_score(&probabilities)
}

/// Computes the Inception Score from class probabilities [N, classes], one split.
///
/// # Errors
///
/// [`FidError::TooFewSamples`] for an empty matrix, and [`FidError::Input`] if a row has a
/// negative entry or does not sum to 1 within 1e-6.
pub fn inception_score(probabilities: &FeatureMatrix) -> Result<f64> {
    let rows = probabilities.rows();
    if rows == 0 {
        return Err(FidError::TooFewSamples {
            what: "the Inception Score",
            min: 1,
            actual: 0,
        });
    }
    for row in 0..rows {
        check_distribution(probabilities.row(row), row)?;
    }
    let marginal = probabilities.mean();
    let total: f64 = (0..rows)
        .map(|row| kl_divergence(probabilities.row(row), &marginal))
        .sum();
    Ok((total / rows as f64).exp())
}

fn check_distribution(row: &[f64], index: usize) -> Result<()> {
    let sum: f64 = row.iter().sum();
    if row.iter().any(|&p| p < 0.0) || (sum - 1.0).abs() > SUM_TOLERANCE {
        return Err(FidError::Input(format!(
            "probability row {index} sums to {sum} or has a negative entry: expected a \
             distribution over classes (pass logits to inception_score_from_logits)"
        )));
    }
    Ok(())
}

/// `KL(p || q) = sum p ln(p / q)`, where terms with `p = 0` are 0.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(p, _)| **p > 0.0)
        .map(|(p, q)| p * (p.ln() - q.ln()))
        .sum()
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exponentials: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = exponentials.iter().sum();
    exponentials.iter().map(|e| e / sum).collect()
}
