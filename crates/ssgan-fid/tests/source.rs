//! Image sets: folder listing, CIFAR-10 detection and pixel conversion.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ssgan_fid::source::{open_image_source, quantize_unit_images};
use ssgan_fid::{FidError, ImageFolder, ImageSource, RgbPlanes};

fn write_png(path: &Path, value: u8) {
    image::RgbImage::from_pixel(4, 3, image::Rgb([value, 0, 255]))
        .save(path)
        .unwrap();
}

#[test]
fn folder_lists_images_sorted() {
    let temp = tempfile::tempdir().unwrap();
    write_png(&temp.path().join("b.png"), 2);
    write_png(&temp.path().join("a.PNG"), 1);
    std::fs::write(temp.path().join("notes.txt"), "not an image").unwrap();

    let folder = ImageFolder::open(temp.path()).unwrap();
    let images = folder.read(0..2).unwrap();

    assert_eq!(folder.len(), 2);
    assert!(folder.files()[0].ends_with("a.PNG"));
    assert_eq!((images[0].width, images[0].height), (4, 3));
    assert_eq!(images[0].pixels[0], 1, "red plane first");
    assert_eq!(images[0].pixels[12], 0, "green plane second");
    assert_eq!(images[0].pixels[24], 255, "blue plane third");
}

#[test]
fn empty_folder_is_rejected() {
    let temp = tempfile::tempdir().unwrap();

    let error = ImageFolder::open(temp.path()).err().unwrap();

    assert!(matches!(error, FidError::NoImages { .. }), "{error:?}");
}

#[test]
fn cifar_file_is_detected() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("one.bin");
    let mut record = vec![3u8];
    record.extend((0..3072).map(|i| (i % 251) as u8));
    std::fs::write(&path, &record).unwrap();

    let source = open_image_source(&path).unwrap();
    let images = source.read(0..1).unwrap();

    assert_eq!(source.len(), 1);
    assert_eq!(images[0].pixels, record[1..]);
}

#[test]
fn unit_tensor_divides_by_255() {
    let image = RgbPlanes {
        width: 1,
        height: 1,
        pixels: vec![0, 51, 255],
    };

    let values = image.to_unit_tensor(DType::F32).unwrap();

    let values = values.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(values, [0.0, 51.0f32 / 255.0, 1.0]);
}

#[test]
fn quantize_rounds_and_clamps() {
    let values = [0.0f32, 0.5, 1.2, -0.1, 1.0 / 255.0, 0.999];
    let images = Tensor::from_slice(&values, (2, 3, 1, 1), &Device::Cpu).unwrap();

    let quantized = quantize_unit_images(&images).unwrap();

    assert_eq!(quantized[0].pixels, [0, 128, 255]);
    assert_eq!(quantized[1].pixels, [0, 1, 255]);
}
