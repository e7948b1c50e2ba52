use candle_core::{Device, Tensor};
use ssgan_model::loss::{
    hinge_discriminator, hinge_generator, rotation_accuracy, rotation_cross_entropy,
};

fn scalar(t: Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

#[test]
fn hinge_discriminator_hand_values() {
    let real = Tensor::new(&[2.0f64, 0.5, -1.0], &Device::Cpu).unwrap();
    let fake = Tensor::new(&[-3.0f64, 0.0, 1.5], &Device::Cpu).unwrap();
    // real: relu(1 - [2, 0.5, -1]) = [0, 0.5, 2], mean 2.5 / 3
    // fake: relu(1 + [-3, 0, 1.5]) = [0, 1, 2.5], mean 3.5 / 3
    let loss = scalar(hinge_discriminator(&real, &fake).unwrap());
    assert!((loss - 2.0).abs() < 1e-12, "loss {loss}");
}

#[test]
fn hinge_generator_hand_values() {
    let fake = Tensor::new(&[-3.0f64, 0.0, 1.5, 0.5], &Device::Cpu).unwrap();
    let loss = scalar(hinge_generator(&fake).unwrap());
    assert!((loss - 0.25).abs() < 1e-12, "loss {loss}");
}

#[test]
fn rotation_cross_entropy_hand_values() {
    // Row 1: uniform logits, -log(1/4) = ln 4. Row 2: logits [ln 3, 0, 0, 0] give softmax
    // [1/2, 1/6, 1/6, 1/6]; label 0 costs ln 2.
    let logits = Tensor::new(
        &[[0.0f64, 0.0, 0.0, 0.0], [3f64.ln(), 0.0, 0.0, 0.0]],
        &Device::Cpu,
    )
    .unwrap();
    let labels = Tensor::new(&[2u32, 0], &Device::Cpu).unwrap();
    let loss = scalar(rotation_cross_entropy(&logits, &labels).unwrap());
    let expected = (4f64.ln() + 2f64.ln()) / 2.0;
    assert!(
        (loss - expected).abs() < 1e-12,
        "loss {loss}, expected {expected}"
    );
}

#[test]
fn rotation_accuracy_counts_argmax_hits() {
    let logits = Tensor::new(
        &[
            [0.0f64, 5.0, 0.0, 0.0],
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 9.0],
            [0.0, 0.0, 2.0, 0.0],
        ],
        &Device::Cpu,
    )
    .unwrap();
    let labels = Tensor::new(&[1u32, 0, 2, 2], &Device::Cpu).unwrap();
    assert_eq!(rotation_accuracy(&logits, &labels).unwrap(), 0.75);
}
