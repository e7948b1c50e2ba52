//! The FID InceptionV3 against pytorch-fid 0.3.0 (torch 2.15.0, torchvision 0.29.2, CPU)
//! on the random-weight fixture network and 16 CIFAR-10 test images.
//!
//! Tolerances: the float64 network within 1e-10 of the largest float64 reference feature,
//! the float32 network within 1e-4 of it (the reference's own float32 run is within 4e-7).

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use ssgan_fid::{
    FeatureExtractor, FeatureLayer, FidInception, InceptionWeights, MemoryImages, RgbPlanes,
};

/// Images per forward pass, to keep the float64 activations small.
const BATCH: usize = 4;

fn model(dir: &Path, dtype: DType) -> FidInception {
    let weights = InceptionWeights::load(&dir.join("inception_random.pth")).unwrap();
    FidInception::new(&weights, dtype, &Device::Cpu).unwrap()
}

fn extract(model: &FidInception, dir: &Path, layer: FeatureLayer) -> Vec<f64> {
    let images = MemoryImages(common::fixture_images(dir));
    let extractor = FeatureExtractor::new(model)
        .with_batch_size(BATCH)
        .with_progress(false);
    let features = extractor.extract(&images, layer).unwrap();
    assert_eq!(features.rows(), 16);
    assert_eq!(features.dims(), layer.dims());
    features.values().to_vec()
}

/// Preprocesses images in float64 and stacks them into one batch.
fn network_input(model: &FidInception, images: &[RgbPlanes]) -> Tensor {
    let inputs: Vec<Tensor> = images
        .iter()
        .map(|image| {
            let unit = image.to_unit_tensor(DType::F64).unwrap();
            model.preprocess(&unit).unwrap()
        })
        .collect();
    Tensor::cat(&inputs, 0).unwrap()
}

/// Asserts `max |actual - expected| <= relative * max |expected|` and prints both sides.
fn assert_close(actual: &[f64], expected: &[f64], relative: f64, what: &str) {
    let error = common::max_abs_diff(actual, expected);
    let scale = common::max_abs(expected);
    eprintln!("{what}: max abs error {error:e}, max |reference| {scale}");
    assert!(
        error <= relative * scale,
        "{what}: max abs error {error:e} exceeds {relative:e} x {scale}"
    );
}

#[test]
fn preprocess_matches_resized_input() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let model = model(&dir, DType::F64);
    let image = &common::fixture_images(&dir)[0];

    let unit = image.to_unit_tensor(DType::F64).unwrap();
    let input = model.preprocess(&unit).unwrap();

    let (expected, shape) = common::read_npy(&dir.join("input_img0_f64.npy"));
    assert_eq!(shape, [3, 299, 299]);
    assert_eq!(input.dims(), [1, 3, 299, 299]);
    let actual = input.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let error = common::max_abs_diff(&actual, &expected);
    eprintln!("resized input: max abs error {error:e}");
    assert!(error <= 1e-12, "resized input: max abs error {error:e}");
}

#[test]
fn float64_features_match_pytorch_fid() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let model = model(&dir, DType::F64);
    let images = common::fixture_images(&dir);
    let mut outputs = Vec::new();
    for batch in images.chunks(BATCH) {
        outputs.push(model.forward(&network_input(&model, batch)).unwrap());
    }
    let layer_values = |layer: FeatureLayer| -> Vec<f64> {
        let parts: Vec<Tensor> = outputs.iter().map(|o| o.layer(layer).clone()).collect();
        let joined = Tensor::cat(&parts, 0).unwrap();
        joined.flatten_all().unwrap().to_vec1::<f64>().unwrap()
    };

    let cases = [
        (FeatureLayer::Pool3, "features_f64.npy"),
        (FeatureLayer::Block64, "features_f64_dims64.npy"),
        (FeatureLayer::Block192, "features_f64_dims192.npy"),
        (FeatureLayer::Block768, "features_f64_dims768.npy"),
    ];
    for (layer, file) in cases {
        let (expected, shape) = common::read_npy(&dir.join(file));
        assert_eq!(shape, [16, layer.dims()], "{file}");
        assert_close(&layer_values(layer), &expected, 1e-10, file);
    }
    let logits = outputs[0].logits.dims().to_vec();
    assert_eq!(logits, [BATCH, 1008]);
}

#[test]
fn float32_features_match_pytorch_fid() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let model = model(&dir, DType::F32);

    let actual = extract(&model, &dir, FeatureLayer::Pool3);

    let (reference64, _) = common::read_npy(&dir.join("features_f64.npy"));
    let (reference32, _) = common::read_npy(&dir.join("features_f32.npy"));
    assert_close(&actual, &reference64, 1e-4, "float32 vs features_f64.npy");
    assert_close(&actual, &reference32, 1e-4, "float32 vs features_f32.npy");
}

#[test]
fn forward_rejects_wrong_input_size() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let model = model(&dir, DType::F32);
    let input = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();

    let error = model.forward(&input).err().unwrap();

    assert!(error.to_string().contains("[N, 3, 299, 299]"), "{error}");
}

#[test]
fn logits_are_fc_of_pool3() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let weights = InceptionWeights::load(&dir.join("inception_random.pth")).unwrap();
    let model = FidInception::new(&weights, DType::F64, &Device::Cpu).unwrap();
    let images = common::fixture_images(&dir);
    let input = network_input(&model, &images[..2]);

    let outputs = model.forward(&input).unwrap();

    // pytorch-fid never runs `fc`, so there is no reference output: check the layer against
    // torch.nn.Linear's definition, pool3 W^T + b, from the raw weights.
    let to_f64 = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
    let fc_weight = to_f64(weights.tensor("fc.weight").unwrap());
    let fc_bias = to_f64(weights.tensor("fc.bias").unwrap());
    let expected = outputs
        .pool3
        .matmul(&fc_weight.t().unwrap())
        .unwrap()
        .broadcast_add(&fc_bias)
        .unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    assert_eq!(outputs.logits.dims(), [2, 1008]);
    assert_close(&flat(&outputs.logits), &flat(&expected), 1e-12, "logits");
}
