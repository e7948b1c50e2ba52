mod common;

use ssgan_worker::RunConfig;
use ssgan_worker::config::DataKind;

fn load(overrides: &[&str]) -> Result<RunConfig, String> {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    RunConfig::from_toml(&common::tiny_config_text(), "test.toml", &overrides)
        .map_err(|e| e.to_string())
}

#[test]
fn shipped_configs_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for name in ["cifar10-ssgan-sbn.toml", "cifar10-cpu-demo.toml"] {
        let config =
            RunConfig::load(&root.join(name), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.model.z_dim, 128, "{name}");
    }
}

#[test]
fn presets_128_read_image_folders() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let scaled = root.join("imagenet128-scaled.toml");
    let config = RunConfig::load_without_data(&scaled, &[]).unwrap();
    assert_eq!(config.model.image_size(), 128);
    assert_eq!(
        (config.model.g_width(), config.model.d_width()),
        (1536, 1536)
    );
    assert_eq!(config.train.batch_size, 1024);
    assert_eq!(config.loss.rotated_batch_size, 512);
    assert_eq!((config.optim.beta1, config.optim.beta2), (0.0, 0.999));
    let resnet5 = root.join("imagenet128-ssgan-sbn.toml");
    let config = RunConfig::load_without_data(&resnet5, &[]).unwrap();
    assert_eq!((config.model.g_width(), config.model.d_width()), (512, 512));
    for path in [scaled, resnet5] {
        let config = RunConfig::load(&path, &[]).unwrap();
        assert_eq!(
            config.data.kind,
            DataKind::ImageFolder,
            "{}",
            path.display()
        );
    }
}

#[test]
fn cifar_data_rejects_128_models() {
    let error = load(&["model.arch=\"resnet128-scaled\""]).unwrap_err();
    assert!(error.contains("model.arch"), "{error}");
    assert!(error.contains("resnet128-scaled"), "{error}");
    assert!(error.contains("\"resnet32\" for CIFAR-10"), "{error}");
    assert!(error.contains("image-folder"), "{error}");
}

#[test]
fn paper_preset_matches_the_paper() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/cifar10-ssgan-sbn.toml");
    let config = RunConfig::load(&path, &[]).unwrap();
    assert_eq!((config.model.g_width(), config.model.d_width()), (256, 128));
    assert_eq!(config.train.batch_size, 64);
    assert_eq!(config.loss.rotated_batch_size, 64);
    assert_eq!(
        (config.loss.rotation_weight_g, config.loss.rotation_weight_d),
        (0.2, 1.0)
    );
    assert_eq!(
        (config.optim.g_lr, config.optim.beta1, config.optim.beta2),
        (2e-4, 0.0, 0.9)
    );
    assert_eq!(config.optim.n_dis, 2);
    assert_eq!(config.train.steps, 100_000);
    assert_eq!(
        (config.model.bn_decay, config.model.bn_epsilon),
        (0.9, 1e-5)
    );
}

#[test]
fn override_sets_nested_key() {
    let config = load(&["model.ch=5", "optim.g_lr=0.001", "train.steps=7"]).unwrap();
    assert_eq!(config.model.ch, 5);
    assert_eq!(config.optim.g_lr, 0.001);
    assert_eq!(config.train.steps, 7);
}

#[test]
fn unknown_key_is_rejected() {
    let error = load(&["model.channels=5"]).unwrap_err();
    assert!(error.contains("channels"), "{error}");
    let text = common::tiny_config_text().replace("[model]", "[model]\nwidth = 3");
    let error = RunConfig::from_toml(&text, "test.toml", &[])
        .unwrap_err()
        .to_string();
    assert!(error.contains("width"), "{error}");
    assert!(error.contains("test.toml"), "{error}");
}

#[test]
fn unknown_section_is_rejected() {
    let error = load(&["trian.steps=5"]).unwrap_err();
    assert!(error.contains("trian"), "{error}");
}

#[test]
fn negative_learning_rate_is_rejected() {
    let error = load(&["optim.d_lr=-0.0002"]).unwrap_err();
    assert!(error.contains("optim.d_lr"), "{error}");
    assert!(error.contains("-0.0002"), "{error}");
}

#[test]
fn rotated_batch_not_multiple_of_four_is_rejected() {
    let error = load(&["loss.rotated_batch_size=6"]).unwrap_err();
    assert!(error.contains("loss.rotated_batch_size"), "{error}");
    assert!(error.contains("multiple of 4"), "{error}");
}

#[test]
fn rotated_batch_over_four_batches_is_rejected() {
    let error = load(&["loss.rotated_batch_size=36"]).unwrap_err();
    assert!(
        error.contains("at most 4 x train.batch_size = 32"),
        "{error}"
    );
    assert!(load(&["loss.rotated_batch_size=32"]).is_ok());
}

#[test]
fn malformed_override_is_rejected() {
    let error = load(&["model.ch"]).unwrap_err();
    assert!(error.contains("KEY=VALUE"), "{error}");
}

#[test]
fn unimplemented_variant_is_named() {
    let error = load(&["model.variant=\"cond\""]).unwrap_err();
    assert!(error.contains("model.variant"), "{error}");
    assert!(error.contains("not implemented"), "{error}");
}

#[test]
fn incompatible_keys_ignore_resumable_ones() {
    let a = load(&[]).unwrap();
    let b = load(&[
        "train.steps=9",
        "checkpoint.every=4",
        "model.ch=3",
        "optim.g_lr=0.1",
    ])
    .unwrap();
    assert_eq!(
        a.incompatible_keys(&b),
        vec!["model.ch".to_string(), "optim.g_lr".to_string()]
    );
    assert!(a.incompatible_keys(&a).is_empty());
}

#[test]
fn collective_section_has_defaults() {
    let config = load(&[]).unwrap();
    let collective = &config.collective;
    assert_eq!(
        collective.bucket_bytes,
        ssgan_collective::DEFAULT_BUCKET_BYTES
    );
    assert_eq!(collective.checksum_every, 100);
    assert_eq!(collective.timeout_seconds, 60);
}

#[test]
fn collective_keys_are_resumable() {
    let a = load(&[]).unwrap();
    let b = load(&[
        "collective.bucket_bytes=4096",
        "collective.checksum_every=0",
        "collective.timeout_seconds=5",
    ])
    .unwrap();
    assert_eq!(b.collective.bucket_bytes, 4096);
    assert!(a.incompatible_keys(&b).is_empty());
}

#[test]
fn collective_unknown_key_is_rejected() {
    let error = load(&["collective.bucket_size=4096"]).unwrap_err();
    assert!(error.contains("bucket_size"), "{error}");
}

#[test]
fn collective_invalid_values_are_rejected() {
    let error = load(&["collective.bucket_bytes=3"]).unwrap_err();
    assert!(error.contains("collective.bucket_bytes"), "{error}");
    let error = load(&["collective.timeout_seconds=0"]).unwrap_err();
    assert!(error.contains("collective.timeout_seconds"), "{error}");
}

#[test]
fn eval_section_has_defaults() {
    let config = load(&[]).unwrap();
    let eval = &config.eval;
    assert_eq!(eval.every, 0);
    assert_eq!(eval.samples, 10_000);
    assert_eq!(eval.real_samples, 10_000);
    assert_eq!(eval.inception_weights, None);
}

#[test]
fn eval_keys_are_resumable() {
    let a = load(&[]).unwrap();
    let b = load(&[
        "eval.every=10",
        "eval.samples=16",
        "eval.real_samples=32",
        "eval.inception_weights=\"w.pth\"",
    ])
    .unwrap();
    assert_eq!(b.eval.every, 10);
    assert_eq!(b.eval.inception_weights.as_deref(), Some("w.pth"));
    assert!(a.incompatible_keys(&b).is_empty());
}

#[test]
fn eval_config_round_trips_through_toml() {
    let config = load(&["eval.every=5", "eval.inception_weights=\"w.pth\""]).unwrap();
    let again = RunConfig::from_toml(&config.to_toml(), "round trip", &[]).unwrap();
    assert_eq!(again.eval, config.eval);
}

#[test]
fn eval_unknown_key_is_rejected() {
    let error = load(&["eval.sample=16"]).unwrap_err();
    assert!(error.contains("sample"), "{error}");
}

#[test]
fn eval_too_few_samples_is_rejected() {
    let error = load(&["eval.samples=1"]).unwrap_err();
    assert!(error.contains("eval.samples"), "{error}");
    let error = load(&["eval.real_samples=0"]).unwrap_err();
    assert!(error.contains("eval.real_samples"), "{error}");
}

#[test]
fn precision_override_selects_bf16() {
    let config = load(&["model.precision=\"bf16\""]).unwrap();
    assert_eq!(config.model.precision, ssgan_model::Precision::Bf16);
    let default = load(&[]).unwrap();
    assert_eq!(default.model.precision, ssgan_model::Precision::F32);
    assert!(load(&["model.precision=\"fp8\""]).is_err());
}
