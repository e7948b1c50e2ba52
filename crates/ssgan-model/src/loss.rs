//! Hinge GAN losses and the rotation cross-entropy.

use candle_core::{D, Tensor};

use crate::error::Result;

/// Discriminator hinge loss: mean relu(1 - real) + mean relu(1 + fake), a scalar tensor.
/// `real_logits` and `fake_logits` are [B] logits of unrotated images.
pub fn hinge_discriminator(real_logits: &Tensor, fake_logits: &Tensor) -> Result<Tensor> {
    let real = (1.0 - real_logits)?.relu()?.mean_all()?;
    let fake = (fake_logits + 1.0)?.relu()?.mean_all()?;
    Ok((real + fake)?)
}

/// Generator hinge loss: -mean(fake_logits), a scalar tensor.
pub fn hinge_generator(fake_logits: &Tensor) -> Result<Tensor> {
    Ok(fake_logits.mean_all()?.neg()?)
}

/// Mean cross-entropy of rotation logits [4n, 4] against labels [4n] (u32 in 0..4), computed
/// through log-softmax (compare_gan uses log(softmax + 1e-10), a difference of at most 1e-10).
pub fn rotation_cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

/// Fraction of rows whose largest rotation logit is at the label.
pub fn rotation_accuracy(logits: &Tensor, labels: &Tensor) -> Result<f64> {
    let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let expected = labels.to_vec1::<u32>()?;
    let hits = predicted
        .iter()
        .zip(&expected)
        .filter(|(p, e)| p == e)
        .count();
    Ok(hits as f64 / expected.len().max(1) as f64)
}
