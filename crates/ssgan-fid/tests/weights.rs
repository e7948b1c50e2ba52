//! Loading the random-weight FID InceptionV3 fixtures: the zip-format file, the legacy
//! (pre-1.6) stem file and safetensors, and the errors for incomplete weights.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use ssgan_fid::{FidError, FidInception, InceptionWeights};

const STEM_PREFIXES: [&str; 5] = [
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
];

fn assert_same_tensor(a: &Tensor, b: &Tensor, key: &str) {
    assert_eq!(a.dims(), b.dims(), "{key}: shapes differ");
    assert_eq!(a.dtype(), b.dtype(), "{key}: dtypes differ");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let (a, b) = (a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap());
    assert!(a == b, "{key}: values differ");
}

#[test]
fn zip_file_has_566_keys() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let weights = InceptionWeights::load(&dir.join("inception_random.pth")).unwrap();

    assert_eq!(weights.len(), 566);
    let fc = weights.tensor("fc.weight").unwrap();
    assert_eq!(fc.dims(), [1008, 2048]);
    let counter = weights
        .tensor("Mixed_7c.branch_pool.bn.num_batches_tracked")
        .unwrap();
    assert_eq!(counter.dtype(), DType::I64);
    assert_eq!(counter.to_scalar::<i64>().unwrap(), 0);
}

#[test]
fn legacy_stem_matches_zip_file() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let full = InceptionWeights::load(&dir.join("inception_random.pth")).unwrap();
    let stem = InceptionWeights::load(&dir.join("inception_random_stem_legacy.pth")).unwrap();

    assert_eq!(stem.len(), 30);
    for key in stem.keys() {
        assert!(
            STEM_PREFIXES.iter().any(|prefix| key.starts_with(prefix)),
            "unexpected key {key}"
        );
        let expected = full.tensor(key).unwrap();
        assert_same_tensor(stem.tensor(key).unwrap(), expected, key);
    }
}

#[test]
fn safetensors_matches_legacy() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let stem = InceptionWeights::load(&dir.join("inception_random_stem_legacy.pth")).unwrap();
    let tensors: HashMap<String, Tensor> = stem
        .keys()
        .into_iter()
        .map(|key| (key.to_string(), stem.tensor(key).unwrap().clone()))
        .collect();
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("stem.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();

    let loaded = InceptionWeights::load(&path).unwrap();

    assert_eq!(loaded.len(), 30);
    for key in stem.keys() {
        assert_same_tensor(loaded.tensor(key).unwrap(), stem.tensor(key).unwrap(), key);
    }
}

#[test]
fn missing_key_error_names_key() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let stem = InceptionWeights::load(&dir.join("inception_random_stem_legacy.pth")).unwrap();

    let error = FidInception::new(&stem, DType::F32, &Device::Cpu)
        .err()
        .unwrap();

    assert!(matches!(error, FidError::MissingWeight { .. }), "{error:?}");
    assert!(error.to_string().contains("\"Mixed_5b."), "{error}");
}

#[test]
fn misshaped_key_error_names_key() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let full = InceptionWeights::load(&dir.join("inception_random.pth")).unwrap();
    let mut tensors: HashMap<String, Tensor> = full
        .keys()
        .into_iter()
        .map(|key| (key.to_string(), full.tensor(key).unwrap().clone()))
        .collect();
    let key = "Mixed_6c.branch7x7_2.conv.weight";
    let wrong = Tensor::zeros((160, 160, 7, 1), DType::F32, &Device::Cpu).unwrap();
    tensors.insert(key.to_string(), wrong);
    let weights = InceptionWeights::from_tensors(tensors, &dir.join("edited.pth"));

    let error = FidInception::new(&weights, DType::F32, &Device::Cpu)
        .err()
        .unwrap();

    let message = error.to_string();
    assert!(matches!(error, FidError::WeightShape { .. }), "{error:?}");
    assert!(message.contains(key), "{message}");
    assert!(message.contains("[160, 160, 1, 7]"), "{message}");
}

#[test]
fn truncated_legacy_file_is_rejected() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let bytes = std::fs::read(dir.join("inception_random_stem_legacy.pth")).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("truncated.pth");
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();

    let error = InceptionWeights::load(&path).unwrap_err();

    assert!(matches!(error, FidError::WeightsFormat { .. }), "{error:?}");
    assert!(error.to_string().contains("truncated"), "{error}");
}

#[test]
fn unknown_file_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("weights.bin");
    std::fs::write(&path, b"not a weights file at all").unwrap();

    let error = InceptionWeights::load(&path).unwrap_err();

    assert!(matches!(error, FidError::WeightsFormat { .. }), "{error:?}");
    assert!(error.to_string().contains("weights.bin"), "{error}");
}
