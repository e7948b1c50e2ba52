//! Image sets to compute features of: CIFAR-10 binary files, image folders and images
//! already in memory, all as 8-bit RGB.

use std::ops::Range;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use ssgan_data::{CifarDataset, IMAGE_BYTES, Split};
use tracing::debug;

use crate::error::{FidError, Result, io_error};

/// File extensions that pytorch-fid 0.3.0 reads from an image folder (compared ignoring case).
///
/// NOTE: this crate enables only the `png` and `jpeg` decoders of the `image` crate, so a
/// bmp, pgm, ppm, tif, tiff or webp file is listed but fails to decode with an error that
/// names it.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
];

/// An 8-bit RGB image in planar layout: the red, green and blue planes, each row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbPlanes {
    pub width: usize,
    pub height: usize,
    /// 3 x height x width bytes.
    pub pixels: Vec<u8>,
}

impl RgbPlanes {
    /// Converts interleaved RGB bytes (height x width x 3, row-major) to planes.
    pub fn from_interleaved(width: usize, height: usize, rgb: &[u8]) -> Self {
        let area = width * height;
        let mut pixels = vec![0u8; 3 * area];
        for (index, pixel) in rgb.chunks_exact(3).take(area).enumerate() {
            for channel in 0..3 {
                pixels[channel * area + index] = pixel[channel];
            }
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    /// Converts the image to [1, 3, H, W] of `dtype` in [0, 1], each value `u8 / 255`.
    ///
    /// The division is exact division in `dtype` (not a multiplication by 1/255), which is
    /// what torchvision's `ToTensor` computes in float32.
    pub fn to_unit_tensor(&self, dtype: DType) -> Result<Tensor> {
        let shape = (1, 3, self.height, self.width);
        let bytes = Tensor::from_slice(&self.pixels, shape, &candle_core::Device::Cpu)?;
        let values = bytes.to_dtype(dtype)?;
        let divisor = Tensor::new(255f64, &candle_core::Device::Cpu)?.to_dtype(dtype)?;
        Ok(values.broadcast_div(&divisor)?)
    }
}

/// Quantizes images [N, 3, H, W] with values in [0, 1] to 8 bits per channel, as writing
/// them to PNG would (`round(255 x)`, clamped), so that their features match those of the
/// saved files.
pub fn quantize_unit_images(images: &Tensor) -> Result<Vec<RgbPlanes>> {
    let (n, channels, height, width) = images.dims4()?;
    if channels != 3 {
        return Err(FidError::Input(format!(
            "generated images have {channels} channels, expected 3 (RGB)"
        )));
    }
    let scaled = (images.to_dtype(DType::F32)?.clamp(0.0, 1.0)? * 255.0)?.round()?;
    let values = scaled.flatten_all()?.to_vec1::<f32>()?;
    let per_image = 3 * height * width;
    Ok((0..n)
        .map(|index| RgbPlanes {
            width,
            height,
            pixels: values[index * per_image..(index + 1) * per_image]
                .iter()
                .map(|&value| value as u8)
                .collect(),
        })
        .collect())
}

/// A numbered set of images that can be read in ranges.
pub trait ImageSource {
    /// Returns the number of images.
    fn len(&self) -> usize;

    /// Returns true if the set has no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads images `range.start .. range.end`.
    fn read(&self, range: Range<usize>) -> Result<Vec<RgbPlanes>>;
}

/// Opens an image set by what `path` is.
///
/// A file is read as CIFAR-10 binary. A folder with `data_batch_*.bin` files is read as the
/// CIFAR-10 train split, else one with `test_batch.bin` as the test split, else as an
/// image folder.
///
/// # Errors
///
/// [`FidError::Io`] if `path` does not exist, and the errors of [`CifarImages::open`] and
/// [`ImageFolder::open`].
pub fn open_image_source(path: &Path) -> Result<Box<dyn ImageSource>> {
    let metadata = std::fs::metadata(path).map_err(io_error(path))?;
    if !metadata.is_dir() {
        return Ok(Box::new(CifarImages::open(path, Split::Train)?));
    }
    if has_cifar_train_files(path)? {
        return Ok(Box::new(CifarImages::open(path, Split::Train)?));
    }
    if path.join("test_batch.bin").is_file() {
        return Ok(Box::new(CifarImages::open(path, Split::Test)?));
    }
    Ok(Box::new(ImageFolder::open(path)?))
}

fn has_cifar_train_files(dir: &Path) -> Result<bool> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let name = entry.map_err(io_error(dir))?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("data_batch_") && name.ends_with(".bin") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// CIFAR-10 images (32 x 32) from binary files.
pub struct CifarImages(pub CifarDataset);

impl CifarImages {
    /// Opens a CIFAR-10 binary file, or the files of `split` in a folder.
    pub fn open(path: &Path, split: Split) -> Result<Self> {
        Ok(Self(CifarDataset::open(path, split)?))
    }
}

impl ImageSource for CifarImages {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn read(&self, range: Range<usize>) -> Result<Vec<RgbPlanes>> {
        Ok(range
            .map(|index| RgbPlanes {
                width: 32,
                height: 32,
                pixels: self.0.image(index)[..IMAGE_BYTES].to_vec(),
            })
            .collect())
    }
}

/// The image files of one folder (not its subfolders), sorted by path, decoded to RGB.
pub struct ImageFolder {
    files: Vec<PathBuf>,
}

impl ImageFolder {
    /// Lists the files of `dir` with an extension of [`IMAGE_EXTENSIONS`].
    ///
    /// # Errors
    ///
    /// [`FidError::Io`] if the folder cannot be listed, [`FidError::NoImages`] if it has no
    /// image file.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            if has_image_extension(&path) && path.is_file() {
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(FidError::NoImages {
                path: dir.to_path_buf(),
            });
        }
        files.sort();
        debug!(dir = %dir.display(), images = files.len(), "listed image folder");
        Ok(Self { files })
    }

    /// Returns the image files in reading order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }
}

fn has_image_extension(path: &Path) -> bool {
    let Some(extension) = path.extension().and_then(|e| e.to_str()) else {
        return false;
    };
    IMAGE_EXTENSIONS
        .iter()
        .any(|known| known.eq_ignore_ascii_case(extension))
}

impl ImageSource for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn read(&self, range: Range<usize>) -> Result<Vec<RgbPlanes>> {
        self.files[range]
            .iter()
            .map(|path| decode_rgb(path))
            .collect()
    }
}

/// Decodes an image file and converts it to RGB, as PIL's `convert('RGB')` does.
fn decode_rgb(path: &Path) -> Result<RgbPlanes> {
    let image = image::open(path).map_err(|source| FidError::Image {
        path: path.to_path_buf(),
        source,
    })?;
    let rgb = image.to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    Ok(RgbPlanes::from_interleaved(width, height, rgb.as_raw()))
}

/// Images held in memory.
pub struct MemoryImages(pub Vec<RgbPlanes>);

impl ImageSource for MemoryImages {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn read(&self, range: Range<usize>) -> Result<Vec<RgbPlanes>> {
        Ok(self.0[range].to_vec())
    }
}
