//! Invariants of KID (unbiased polynomial-kernel MMD^2) and the Inception Score.

mod common;

use ssgan_fid::{
    FeatureMatrix, FidError, inception_score, inception_score_from_logits,
    kernel_inception_distance, kernel_inception_distance_blocks,
};

fn one_hots(classes: &[usize], count: usize) -> FeatureMatrix {
    let mut values = vec![0.0; classes.len() * count];
    for (row, &class) in classes.iter().enumerate() {
        values[row * count + class] = 1.0;
    }
    FeatureMatrix::new(classes.len(), count, values).unwrap()
}

#[test]
fn kid_of_identical_sets_is_small() {
    let a = common::synthetic(300, 32, 1, 0.0);

    let kid = kernel_inception_distance(&a, &a).unwrap();

    // For one set against itself the unbiased estimate is 2 (1^T K 1 - m tr K) / (m^2 (m - 1)),
    // which is <= 0 for a positive semi-definite kernel matrix K, and small.
    assert!(kid.mean <= 0.0, "KID(A, A) = {}", kid.mean);
    assert!(kid.mean > -1e-2, "KID(A, A) = {}", kid.mean);
    assert_eq!(kid.blocks, 1);
}

#[test]
fn kid_of_same_distribution_is_near_zero() {
    let a = common::synthetic(400, 16, 1, 0.0);
    let b = common::synthetic(400, 16, 2, 0.0);
    let shifted = common::synthetic(400, 16, 3, 0.5);

    let same = kernel_inception_distance(&a, &b).unwrap().mean;
    let different = kernel_inception_distance(&a, &shifted).unwrap().mean;

    assert!(same.abs() < 5e-2, "same distribution: {same}");
    assert!(different > 20.0 * same.abs(), "{different} vs {same}");
}

#[test]
fn kid_closed_form_for_two_points() {
    // Blocks of two 1-d samples: x = {0, 0}, y = {1, 1}. k(a, b) = (a b + 1)^3, so
    // within x: 1, within y: 8, across: 1, and MMD^2 = 1 + 8 - 2 = 7.
    let x = FeatureMatrix::new(2, 1, vec![0.0, 0.0]).unwrap();
    let y = FeatureMatrix::new(2, 1, vec![1.0, 1.0]).unwrap();

    let kid = kernel_inception_distance(&x, &y).unwrap();

    assert!((kid.mean - 7.0).abs() < 1e-12, "{}", kid.mean);
}

#[test]
fn kid_splits_into_blocks() {
    let a = common::synthetic(50, 4, 1, 0.0);
    let b = common::synthetic(30, 4, 2, 0.2);

    let kid = kernel_inception_distance_blocks(&a, &b, 20).unwrap();

    assert_eq!(kid.blocks, 3);
    assert!(kid.std >= 0.0);
}

#[test]
fn kid_is_symmetric() {
    let a = common::synthetic(60, 4, 1, 0.0);
    let b = common::synthetic(60, 4, 2, 0.3);

    let ab = kernel_inception_distance(&a, &b).unwrap().mean;
    let ba = kernel_inception_distance(&b, &a).unwrap().mean;

    assert!((ab - ba).abs() < 1e-12, "{ab} vs {ba}");
}

#[test]
fn kid_rejects_one_sample() {
    let a = common::synthetic(1, 4, 1, 0.0);
    let b = common::synthetic(10, 4, 2, 0.0);

    let error = kernel_inception_distance(&a, &b).unwrap_err();

    assert!(matches!(error, FidError::TooFewSamples { .. }), "{error:?}");
}

#[test]
fn inception_score_of_identical_predictions_is_one() {
    let probabilities = one_hots(&[3; 10], 8);

    let score = inception_score(&probabilities).unwrap();

    assert!((score - 1.0).abs() < 1e-12, "{score}");
}

#[test]
fn inception_score_of_distinct_classes_is_class_count() {
    let probabilities = one_hots(&[0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7], 10);

    let score = inception_score(&probabilities).unwrap();

    assert!((score - 8.0).abs() < 1e-10, "{score}");
}

#[test]
fn inception_score_of_uniform_predictions_is_one() {
    let logits = FeatureMatrix::new(5, 4, vec![2.0; 20]).unwrap();

    let score = inception_score_from_logits(&logits).unwrap();

    assert!((score - 1.0).abs() < 1e-12, "{score}");
}

#[test]
fn inception_score_from_confident_logits() {
    // Logits of 50 on the true class make the softmax one-hot to within e^-50.
    let mut values = vec![0.0; 4 * 4];
    for row in 0..4 {
        values[row * 4 + row] = 50.0;
    }
    let logits = FeatureMatrix::new(4, 4, values).unwrap();

    let score = inception_score_from_logits(&logits).unwrap();

    assert!((score - 4.0).abs() < 1e-9, "{score}");
}

#[test]
fn inception_score_rejects_non_distributions() {
    let probabilities = FeatureMatrix::new(1, 2, vec![0.7, 0.7]).unwrap();

    let error = inception_score(&probabilities).unwrap_err();

    assert!(error.to_string().contains("sums to 1.4"), "{error}");
}
