//! Upsampling and downsampling of NCHW feature maps, written from ops with correct gradients.

use candle_core::Tensor;

use crate::config::Upsample;
use crate::error::Result;

/// Doubles H and W of x: [N, C, H, W] -> [N, C, 2H, 2W], same dtype.
///
/// `Zeros` puts x[i, j] at out[2i, 2j] and zeros at the other three pixels of each 2x2 cell.
/// `Nearest` repeats x[i, j] over its cell. Both are built from reshape, cat and broadcast,
/// whose backward passes accumulate correctly even when x has other consumers.
pub fn upsample(x: &Tensor, mode: Upsample) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let cells = x.reshape((n, c, h, 1, w, 1))?;
    let filled = match mode {
        Upsample::Zeros => {
            let zeros = cells.zeros_like()?;
            let row = Tensor::cat(&[&cells, &zeros], 5)?;
            Tensor::cat(&[&row, &row.zeros_like()?], 3)?
        }
        Upsample::Nearest => cells.broadcast_as((n, c, h, 2, w, 2))?.contiguous()?,
    };
    Ok(filled.reshape((n, c, 2 * h, 2 * w))?)
}

/// Halves H and W of x by 2x2 average pooling with stride 2; H and W must be even.
pub fn downsample(x: &Tensor) -> Result<Tensor> {
    Ok(x.avg_pool2d(2)?)
}
