//! The training step's view of a dataset: square RGB images addressed by index.

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::DataError;
use crate::cifar::CifarDataset;

/// Training images addressed by index, as the data order draws them.
pub trait TrainImages: Send + Sync {
    /// Returns the number of images.
    fn len(&self) -> usize;

    /// Returns true if there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the side length of the square images.
    fn image_size(&self) -> usize;

    /// Builds the batch [indices.len(), 3, S, S] of the images at `indices`, in that order,
    /// with values in [0, 1]; `dtype` must be F32 or F64.
    fn batch(&self, indices: &[usize], device: &Device, dtype: DType) -> Result<Tensor, DataError>;
}

impl TrainImages for CifarDataset {
    fn len(&self) -> usize {
        CifarDataset::len(self)
    }

    fn image_size(&self) -> usize {
        32
    }

    fn batch(&self, indices: &[usize], device: &Device, dtype: DType) -> Result<Tensor, DataError> {
        CifarDataset::batch(self, indices, device, dtype)
    }
}

/// Images of uniform noise in [0, 1]: a stand-in for real data where only the time of a
/// step matters (`ssgan bench step --synthetic`), for image sizes that no bundled dataset
/// has. Image i is the same on every call, so batches are reproducible.
pub struct NoiseImages {
    len: usize,
    size: usize,
    seed: u64,
}

impl NoiseImages {
    /// Describes `len` noise images of `size` x `size` pixels drawn from `seed`.
    pub fn new(len: usize, size: usize, seed: u64) -> Self {
        Self { len, size, seed }
    }

    fn image(&self, index: usize) -> impl Iterator<Item = f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(index as u64);
        let count = 3 * self.size * self.size;
        (0..count).map(move |_| rng.random::<f32>())
    }
}

impl TrainImages for NoiseImages {
    fn len(&self) -> usize {
        self.len
    }

    fn image_size(&self) -> usize {
        self.size
    }

    fn batch(&self, indices: &[usize], device: &Device, dtype: DType) -> Result<Tensor, DataError> {
        if let Some(&index) = indices.iter().find(|&&i| i >= self.len) {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.len,
            });
        }
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(DataError::UnsupportedDtype { dtype });
        }
        let values: Vec<f32> = indices.iter().flat_map(|&i| self.image(i)).collect();
        let shape = (indices.len(), 3, self.size, self.size);
        let batch = Tensor::from_vec(values, shape, device)?;
        Ok(batch.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::{NoiseImages, TrainImages};

    #[test]
    fn noise_images_are_reproducible_and_in_range() {
        let images = NoiseImages::new(10, 8, 3);
        let a = images.batch(&[4, 7], &Device::Cpu, DType::F32).unwrap();
        let b = images.batch(&[7], &Device::Cpu, DType::F64).unwrap();
        assert_eq!(a.dims4().unwrap(), (2, 3, 8, 8));
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert!(a.iter().all(|v| (0.0..1.0).contains(v)));
        let second: Vec<f64> = a[192..].iter().map(|&v| f64::from(v)).collect();
        assert_eq!(second, b, "image 7 differs between calls");
        assert_ne!(a[..192], a[192..], "images 4 and 7 are equal");
        let error = images.batch(&[10], &Device::Cpu, DType::F32).err().unwrap();
        assert!(error.to_string().contains("10"), "{error}");
    }
}
