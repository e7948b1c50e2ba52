//! Batch tensors built from the 2,000-image sample in the repository.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp};
use ssgan_data::{CifarDataset, DataError, IMAGE_BYTES, RECORD_BYTES, Split};

fn sample_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/cifar10-sample/data_batch_1.bin")
}

fn sample() -> CifarDataset {
    CifarDataset::open(&sample_file(), Split::Train).unwrap()
}

/// Reads record 0, channel 1 (green), row 2, column 3 straight from the file bytes.
fn known_pixel_byte() -> u8 {
    let bytes = std::fs::read(sample_file()).unwrap();
    bytes[1 + 1024 + 2 * 32 + 3]
}

#[test]
fn batch_f32_shape_and_pixel() {
    let dataset = sample();
    let device = Device::Cpu;

    // Record 0 sits at batch position 1, so a wrong index mapping shows up.
    let batch = dataset.batch(&[7, 0], &device, DType::F32).unwrap();

    assert_eq!(batch.dims(), &[2, 3, 32, 32]);
    assert_eq!(batch.dtype(), DType::F32);
    let pixel = batch.i((1, 1, 2, 3)).unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(pixel, f32::from(known_pixel_byte()) / 255.0);
}

#[test]
fn batch_f64_shape_and_pixel() {
    let dataset = sample();

    let batch = dataset.batch(&[0], &Device::Cpu, DType::F64).unwrap();

    assert_eq!(batch.dims(), &[1, 3, 32, 32]);
    assert_eq!(batch.dtype(), DType::F64);
    let pixel = batch.i((0, 1, 2, 3)).unwrap().to_scalar::<f64>().unwrap();
    assert_eq!(pixel, f64::from(known_pixel_byte()) / 255.0);
}

#[test]
fn batch_values_equal_bytes_over_255() {
    let dataset = sample();
    let indices = [3, 1999, 42];

    let batch = dataset.batch(&indices, &Device::Cpu, DType::F32).unwrap();
    let values = batch.flatten_all().unwrap().to_vec1::<f32>().unwrap();

    assert_eq!(values.len(), indices.len() * IMAGE_BYTES);
    for (position, &index) in indices.iter().enumerate() {
        let image_values = &values[position * IMAGE_BYTES..(position + 1) * IMAGE_BYTES];
        let expected: Vec<f32> = dataset
            .image(index)
            .iter()
            .map(|&byte| f32::from(byte) / 255.0)
            .collect();
        assert_eq!(image_values, expected.as_slice(), "image {index}");
    }
    assert!(values.iter().all(|value| (0.0..=1.0).contains(value)));
}

#[test]
fn image_matches_file_record() {
    let dataset = sample();
    let bytes = std::fs::read(sample_file()).unwrap();
    let index = 1234;

    let record = &bytes[index * RECORD_BYTES..(index + 1) * RECORD_BYTES];

    assert_eq!(dataset.label(index), record[0]);
    assert_eq!(dataset.image(index), &record[1..]);
}

#[test]
fn batch_empty_indices() {
    let dataset = sample();

    let batch = dataset.batch(&[], &Device::Cpu, DType::F32).unwrap();

    assert_eq!(batch.dims(), &[0, 3, 32, 32]);
}

#[test]
fn batch_rejects_out_of_range_index() {
    let dataset = sample();

    let error = dataset
        .batch(&[0, 2000], &Device::Cpu, DType::F32)
        .unwrap_err();

    assert!(error.to_string().contains("2000"), "{error}");
    match error {
        DataError::IndexOutOfRange { index, len } => {
            assert_eq!(index, 2000);
            assert_eq!(len, 2000);
        }
        other => panic!("expected IndexOutOfRange, got {other:?}"),
    }
}

#[test]
fn batch_rejects_unsupported_dtype() {
    let dataset = sample();

    for dtype in [DType::U8, DType::BF16, DType::F16] {
        let error = dataset.batch(&[0], &Device::Cpu, dtype).unwrap_err();

        assert!(
            matches!(error, DataError::UnsupportedDtype { dtype: got } if got == dtype),
            "{dtype:?}: {error:?}"
        );
    }
}
