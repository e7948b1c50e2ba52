//! Bilinear resizing as PyTorch's `F.interpolate(mode='bilinear', align_corners=False)`
//! computes it (no antialiasing), written as two interpolation matrices.

use candle_core::{DType, Device, Tensor, WithDType};
use num_traits::Float;

use crate::error::{FidError, Result};

/// Resizes `images` [N, C, H, W] (F32 or F64) to [N, C, out_h, out_w].
///
/// Output pixel i along an axis reads source coordinate `max((i + 0.5) * in / out - 0.5, 0)`,
/// with the scale `in / out` and every step computed in the images' dtype, as PyTorch does.
pub fn resize_bilinear(images: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, in_h, in_w) = images.dims4()?;
    let device = images.device();
    let (rows, columns) = match images.dtype() {
        DType::F32 => (
            interpolation_matrix::<f32>(in_h, out_h, device)?,
            interpolation_matrix::<f32>(in_w, out_w, device)?,
        ),
        DType::F64 => (
            interpolation_matrix::<f64>(in_h, out_h, device)?,
            interpolation_matrix::<f64>(in_w, out_w, device)?,
        ),
        other => {
            return Err(FidError::Input(format!(
                "images have dtype {other:?}, expected F32 or F64"
            )));
        }
    };
    // Width first, then height, the order of PyTorch's CPU kernel.
    let along_width = images.broadcast_matmul(&columns.t()?)?;
    Ok(rows.broadcast_matmul(&along_width)?)
}

/// Builds the [out, in] matrix whose row i contains the two weights of output pixel i.
fn interpolation_matrix<T: Float + WithDType + std::ops::AddAssign>(
    input: usize,
    output: usize,
    device: &Device,
) -> Result<Tensor> {
    let mut matrix = vec![T::zero(); output * input];
    for (i, row) in matrix.chunks_exact_mut(input).enumerate() {
        let (i0, i1, w0, w1) = source_pixels::<T>(i, input, output);
        row[i0] += w0;
        row[i1] += w1;
    }
    Ok(Tensor::from_vec(matrix, (output, input), device)?)
}

/// Source pixels and weights of output pixel `i`: `(i0, i1, w0, w1)`.
fn source_pixels<T: Float>(i: usize, input: usize, output: usize) -> (usize, usize, T, T) {
    let cast = |value: usize| T::from(value).expect("pixel counts fit in a float");
    let half = T::from(0.5).expect("0.5 is a float");
    let scale = cast(input) / cast(output);
    let source = (scale * (cast(i) + half) - half).max(T::zero());
    let i0 = source
        .floor()
        .to_usize()
        .expect("source is finite and >= 0");
    let i0 = i0.min(input - 1);
    let i1 = (i0 + 1).min(input - 1);
    let w1 = source - cast(i0);
    (i0, i1, T::one() - w1, w1)
}
