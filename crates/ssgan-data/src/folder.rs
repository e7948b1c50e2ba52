//! Training images from a folder tree of PNG and JPEG files, such as an extracted ImageNet
//! train split (one subfolder per class) or a flat folder of CelebA-HQ images.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use image::imageops::{self, FilterType};
use rayon::prelude::*;
use tracing::{debug, warn};

use crate::DataError;
use crate::images::TrainImages;

/// File extensions read as images, compared ignoring case.
pub const FOLDER_IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Extensions of image formats that this crate does not decode. Files with them are counted
/// and reported once, so that a folder of WebP files does not look empty.
const UNREAD_IMAGE_EXTENSIONS: [&str; 6] = ["bmp", "gif", "tif", "tiff", "webp", "ppm"];

/// Folder depth below the root at which listing stops with an error, which also ends a
/// loop of symbolic links.
const MAX_DEPTH: usize = 32;

/// The image files below a folder, each served as a `size` x `size` RGB image. The centered
/// square of the largest side that fits is cut out and resized with a triangle (bilinear)
/// filter, which averages over the source pixels when it shrinks.
///
/// Image `i` is the `i`-th file in the byte order of its path relative to the root, so the
/// numbering does not depend on the order in which the file system lists a folder. Files
/// are decoded when a batch needs them, not held in memory.
#[derive(Clone, Debug)]
pub struct FolderImages {
    root: PathBuf,
    files: Vec<PathBuf>,
    size: usize,
}

impl FolderImages {
    /// Lists the PNG and JPEG files in `root` and its subfolders, following symbolic links.
    /// Names that start with a dot are skipped.
    ///
    /// # Errors
    ///
    /// [`DataError::FolderNotFound`] when `root` does not exist, [`DataError::NotAFolder`]
    /// when it is not a directory, [`DataError::Io`] when a folder cannot be listed,
    /// [`DataError::FolderTooDeep`] below [`MAX_DEPTH`] levels and [`DataError::NoImages`]
    /// when no file has an image extension.
    pub fn open(root: &Path, size: usize) -> Result<Self, DataError> {
        if !root.exists() {
            return Err(DataError::FolderNotFound {
                path: root.to_path_buf(),
            });
        }
        if !root.is_dir() {
            return Err(DataError::NotAFolder {
                path: root.to_path_buf(),
            });
        }
        let mut listing = Listing::default();
        listing.visit(root, 0)?;
        if listing.unread > 0 {
            warn!(
                root = %root.display(),
                files = listing.unread,
                "skipping image files that are not PNG or JPEG; convert them to read them"
            );
        }
        if listing.files.is_empty() {
            return Err(DataError::NoImages {
                path: root.to_path_buf(),
            });
        }
        listing.files.sort();
        debug!(root = %root.display(), images = listing.files.len(), size, "listed image folder");
        Ok(Self {
            root: root.to_path_buf(),
            files: listing.files,
            size,
        })
    }

    /// Returns the image files in index order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Decodes image `index` and returns it cropped and resized, as 3 x size x size bytes:
    /// the red, green and blue planes, each row-major.
    pub fn planes(&self, index: usize) -> Result<Vec<u8>, DataError> {
        let path = self.files.get(index).ok_or(DataError::IndexOutOfRange {
            index,
            len: self.files.len(),
        })?;
        let decoded = image::open(path).map_err(|error| DataError::Image {
            path: path.clone(),
            reason: one_line(&error.to_string()),
        })?;
        let square = center_square(&decoded.to_rgb8(), self.size as u32);
        Ok(to_planes(&square))
    }
}

/// Files found while walking the tree.
#[derive(Default)]
struct Listing {
    files: Vec<PathBuf>,
    /// Files with an extension of [`UNREAD_IMAGE_EXTENSIONS`].
    unread: usize,
}

impl Listing {
    fn visit(&mut self, dir: &Path, depth: usize) -> Result<(), DataError> {
        if depth > MAX_DEPTH {
            return Err(DataError::FolderTooDeep {
                path: dir.to_path_buf(),
                max_depth: MAX_DEPTH,
            });
        }
        let io_error = |source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        };
        for entry in std::fs::read_dir(dir).map_err(io_error)? {
            let path = entry.map_err(io_error)?.path();
            let hidden = path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                self.visit(&path, depth + 1)?;
            } else if has_extension(&path, &FOLDER_IMAGE_EXTENSIONS) {
                self.files.push(path);
            } else if has_extension(&path, &UNREAD_IMAGE_EXTENSIONS) {
                self.unread += 1;
            }
        }
        Ok(())
    }
}

/// Joins the lines of a message with spaces and drops its trailing period.
fn one_line(message: &str) -> String {
    let joined: Vec<&str> = message.split_whitespace().collect();
    joined.join(" ").trim_end_matches('.').to_owned()
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    let Some(extension) = path.extension().and_then(|e| e.to_str()) else {
        return false;
    };
    extensions
        .iter()
        .any(|known| known.eq_ignore_ascii_case(extension))
}

/// Cuts the centered square of side `min(width, height)` out of `image` and resizes it to
/// `size` x `size`. When the image has an odd margin, the extra pixel is cut on the right
/// or bottom side.
pub fn center_square(image: &RgbImage, size: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    let side = width.min(height);
    let (left, top) = ((width - side) / 2, (height - side) / 2);
    let square = imageops::crop_imm(image, left, top, side, side).to_image();
    if side == size {
        return square;
    }
    imageops::resize(&square, size, size, FilterType::Triangle)
}

/// Converts interleaved RGB to planar bytes: the red plane, then green, then blue.
fn to_planes(image: &RgbImage) -> Vec<u8> {
    let area = (image.width() * image.height()) as usize;
    let mut planes = vec![0u8; 3 * area];
    for (index, pixel) in image.pixels().enumerate() {
        for channel in 0..3 {
            planes[channel * area + index] = pixel[channel];
        }
    }
    planes
}

impl TrainImages for FolderImages {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn image_size(&self) -> usize {
        self.size
    }

    /// Decodes the images on the rayon thread pool, one image per task.
    fn batch(&self, indices: &[usize], device: &Device, dtype: DType) -> Result<Tensor, DataError> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(DataError::UnsupportedDtype { dtype });
        }
        let images: Vec<Vec<u8>> = indices
            .par_iter()
            .map(|&index| self.planes(index))
            .collect::<Result<_, _>>()?;
        let bytes = images.concat();
        let shape = (indices.len(), 3, self.size, self.size);
        let batch = match dtype {
            DType::F64 => {
                let values = bytes.iter().map(|&byte| f64::from(byte) / 255.0).collect();
                Tensor::from_vec::<_, f64>(values, shape, device)?
            }
            _ => {
                let values = bytes.iter().map(|&byte| f32::from(byte) / 255.0).collect();
                Tensor::from_vec::<_, f32>(values, shape, device)?
            }
        };
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use image::{Rgb, RgbImage};

    use super::*;

    /// Builds a 7 x 5 image whose channels are simple functions of x and y, wrapping at 256.
    fn pattern() -> RgbImage {
        RgbImage::from_fn(7, 5, |x, y| {
            let red = (37 * x + 11 * y) % 256;
            let green = (23 * x * y + 5) % 256;
            let blue = (200 + 7 * y - 13 * x) % 256;
            Rgb([red as u8, green as u8, blue as u8])
        })
    }

    /// Pillow 13.0.0: `Image.fromarray(pattern).crop((1, 0, 6, 5)).resize((s, s),
    /// Image.BILINEAR)`, as planar bytes.
    const PILLOW_3: [u8; 27] = [
        58, 116, 174, 75, 133, 191, 92, 150, 208, 19, 35, 50, 71, 130, 158, 122, 113, 125, 184,
        164, 144, 195, 175, 155, 206, 186, 166,
    ];

    /// The first row of each plane of the same crop resized to 8 x 8.
    const PILLOW_8_FIRST_ROWS: [[u8; 8]; 3] = [
        [37, 53, 76, 99, 123, 146, 169, 185],
        [5, 5, 5, 5, 5, 5, 5, 5],
        [187, 181, 173, 165, 157, 149, 141, 135],
    ];

    fn max_difference(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap()
    }

    #[test]
    fn center_square_crops_without_resize() {
        let square = center_square(&pattern(), 5);
        assert_eq!(square.dimensions(), (5, 5));
        for (x, y, pixel) in square.enumerate_pixels() {
            assert_eq!(pixel, pattern().get_pixel(x + 1, y), "pixel ({x}, {y})");
        }
    }

    #[test]
    fn center_square_shrinks_like_pillow() {
        let planes = to_planes(&center_square(&pattern(), 3));
        let difference = max_difference(&planes, &PILLOW_3);
        assert!(difference <= 1, "{planes:?} differs by {difference}");
    }

    #[test]
    fn center_square_enlarges_like_pillow() {
        let planes = to_planes(&center_square(&pattern(), 8));
        for (channel, expected) in PILLOW_8_FIRST_ROWS.iter().enumerate() {
            let row = &planes[channel * 64..channel * 64 + 8];
            let difference = max_difference(row, expected);
            assert!(difference <= 1, "channel {channel}: {row:?}");
        }
    }

    fn save(path: &Path, image: &RgbImage) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image.save(path).unwrap();
    }

    fn solid(width: u32, height: u32, value: u8) -> RgbImage {
        RgbImage::from_pixel(width, height, Rgb([value, value / 2, 255 - value]))
    }

    #[test]
    fn folder_lists_tree_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        save(&root.join("b/2.png"), &solid(4, 4, 20));
        save(&root.join("a/9.PNG"), &solid(6, 4, 10));
        save(&root.join("b/1.jpg"), &solid(8, 8, 200));
        save(&root.join(".hidden/0.png"), &solid(4, 4, 0));
        std::fs::write(root.join("labels.txt"), "not an image").unwrap();
        std::fs::write(root.join("skip.webp"), "unread format").unwrap();

        let images = FolderImages::open(root, 4).unwrap();
        let names: Vec<_> = images
            .files()
            .iter()
            .map(|file| file.strip_prefix(root).unwrap().to_owned())
            .collect();
        let expected: Vec<PathBuf> = ["a/9.PNG", "b/1.jpg", "b/2.png"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(names, expected);
        assert_eq!(images.image_size(), 4);
    }

    #[test]
    fn folder_batch_scales_bytes_to_unit() {
        let dir = tempfile::tempdir().unwrap();
        save(&dir.path().join("0.png"), &solid(6, 4, 10));
        save(&dir.path().join("1.png"), &solid(2, 2, 250));
        let images = FolderImages::open(dir.path(), 4).unwrap();

        let batch = images.batch(&[1, 0, 1], &Device::Cpu, DType::F64).unwrap();
        assert_eq!(batch.dims4().unwrap(), (3, 3, 4, 4));
        let values = batch.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let expected_first = [250.0, 125.0, 5.0].map(|byte: f64| byte / 255.0);
        for (channel, expected) in expected_first.iter().enumerate() {
            let plane = &values[channel * 16..(channel + 1) * 16];
            assert!(plane.iter().all(|v| v == expected), "channel {channel}");
        }
        assert_eq!(values[48] * 255.0, 10.0);
        let single = images.batch(&[1], &Device::Cpu, DType::F32).unwrap();
        assert_eq!(single.dtype(), DType::F32);
    }

    #[test]
    fn folder_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let empty = FolderImages::open(dir.path(), 4).unwrap_err();
        assert!(matches!(empty, DataError::NoImages { .. }), "{empty}");

        let file = dir.path().join("x.png");
        std::fs::write(&file, "not a png").unwrap();
        let not_folder = FolderImages::open(&file, 4).unwrap_err();
        assert!(
            matches!(not_folder, DataError::NotAFolder { .. }),
            "{not_folder}"
        );

        let images = FolderImages::open(dir.path(), 4).unwrap();
        let broken = images.batch(&[0], &Device::Cpu, DType::F32).unwrap_err();
        assert!(broken.to_string().contains("x.png"), "{broken}");
        let outside = images.planes(1).unwrap_err();
        assert!(matches!(
            outside,
            DataError::IndexOutOfRange { index: 1, len: 1 }
        ));
    }
}
