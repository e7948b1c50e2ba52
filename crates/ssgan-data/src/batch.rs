//! Conversion of selected images into a batch tensor.

use candle_core::{DType, Device, Tensor};
use tracing::trace;

use crate::DataError;
use crate::cifar::CifarDataset;

const CHANNELS: usize = 3;
const IMAGE_SIDE: usize = 32;

impl CifarDataset {
    /// Builds a tensor of the images at `indices`, in the order given.
    ///
    /// The tensor has shape `[indices.len(), 3, 32, 32]` (batch, channel as red, green,
    /// blue, row, column) and the requested `dtype`, which must be `F32` or `F64`. Each
    /// value is the pixel byte divided by 255, so values lie in `[0, 1]`. Rescaling to
    /// another range, such as `[-1, 1]`, is left to the caller. An empty `indices` gives
    /// a tensor of shape `[0, 3, 32, 32]`.
    ///
    /// # Errors
    ///
    /// [`DataError::UnsupportedDtype`] for any other dtype, [`DataError::IndexOutOfRange`]
    /// for an index `>= self.len()`, and [`DataError::Tensor`] if candle fails to create
    /// the tensor on `device`.
    pub fn batch(
        &self,
        indices: &[usize],
        device: &Device,
        dtype: DType,
    ) -> Result<Tensor, DataError> {
        self.check_indices(indices)?;
        let shape = (indices.len(), CHANNELS, IMAGE_SIDE, IMAGE_SIDE);
        trace!(
            images = indices.len(),
            ?dtype,
            ?device,
            "building batch tensor"
        );

        let tensor = match dtype {
            DType::F32 => {
                let pixels = self.scaled_pixels(indices, |byte| f32::from(byte) / 255.0);
                Tensor::from_vec(pixels, shape, device)?
            }
            DType::F64 => {
                let pixels = self.scaled_pixels(indices, |byte| f64::from(byte) / 255.0);
                Tensor::from_vec(pixels, shape, device)?
            }
            _ => return Err(DataError::UnsupportedDtype { dtype }),
        };
        Ok(tensor)
    }

    fn check_indices(&self, indices: &[usize]) -> Result<(), DataError> {
        let len = self.len();
        match indices.iter().find(|&&index| index >= len) {
            Some(&index) => Err(DataError::IndexOutOfRange { index, len }),
            None => Ok(()),
        }
    }

    /// Returns the pixels of the images at `indices`, back to back, each passed through
    /// `scale`.
    fn scaled_pixels<T>(&self, indices: &[usize], scale: impl Fn(u8) -> T) -> Vec<T> {
        let mut pixels = Vec::with_capacity(indices.len() * CHANNELS * IMAGE_SIDE * IMAGE_SIDE);
        for &index in indices {
            pixels.extend(self.image(index).iter().map(|&byte| scale(byte)));
        }
        pixels
    }
}
