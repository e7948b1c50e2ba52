//! Training on `data.kind = "image-folder"`: images of other sizes than the model's, a
//! 128x128 architecture, and a resume that equals the uninterrupted run.

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use image::{Rgb, RgbImage};
use ssgan_store::BlockingStore;
use ssgan_worker::{Outcome, Trainer};

/// Writes 12 PNG and JPEG images of 36 to 48 pixels a side into two subfolders of `root`.
fn write_images(root: &Path) {
    for index in 0..12u32 {
        let (width, height) = (36 + 4 * (index % 4), 48 - 3 * (index % 3));
        let image = RgbImage::from_fn(width, height, |x, y| {
            let value = |k: u32| ((x * k + y * (k + index) + 17 * index) % 256) as u8;
            Rgb([value(3), value(5), value(7)])
        });
        let folder = root.join(if index % 2 == 0 { "even" } else { "odd" });
        std::fs::create_dir_all(&folder).unwrap();
        let extension = if index % 3 == 0 { "jpg" } else { "png" };
        image
            .save(folder.join(format!("{index:02}.{extension}")))
            .unwrap();
    }
}

fn folder_overrides(images: &Path, extra: &[&str]) -> Vec<String> {
    let mut overrides = vec![
        "data.kind=\"image-folder\"".to_string(),
        format!("data.path={:?}", images.display().to_string()),
    ];
    overrides.extend(extra.iter().map(|s| s.to_string()));
    overrides
}

fn train(storage: &str, run_id: &str, overrides: &[String]) -> Trainer {
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let config = common::tiny_config(&overrides);
    let mut trainer = Trainer::open(config, storage, run_id).expect("trainer opens");
    let outcome = trainer
        .run(&AtomicBool::new(false), |_| {})
        .expect("training runs");
    assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    trainer
}

fn checkpoint_file(storage: &str, run_id: &str, step: u64, name: &str) -> bytes::Bytes {
    let store = BlockingStore::open(storage).unwrap();
    let checkpoint = store.load_checkpoint(run_id, step).unwrap();
    checkpoint.file(name).unwrap().clone()
}

#[test]
fn folder_resume_equals_straight_run() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_images(&images);
    let storage = dir.path().join("out");
    let storage = storage.to_str().unwrap();

    let straight = folder_overrides(&images, &["train.steps=4", "checkpoint.every=4"]);
    train(storage, "straight", &straight);
    let half = folder_overrides(&images, &["train.steps=2", "checkpoint.every=4"]);
    train(storage, "split", &half);
    train(storage, "split", &straight);

    for name in ["generator.safetensors", "optimizer_d.safetensors"] {
        let a = checkpoint_file(storage, "straight", 4, name);
        let b = checkpoint_file(storage, "split", 4, name);
        assert!(
            a == b,
            "{name} after a resume differs from the straight run"
        );
    }
    let state = checkpoint_file(storage, "split", 4, "trainer.json");
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["dataset_len"], 12, "{state}");
}

#[test]
fn folder_trains_128_model() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_images(&images);
    let storage = dir.path().join("out");
    let storage = storage.to_str().unwrap();
    let extra = [
        "model.arch=\"resnet128\"",
        "model.ch=1",
        "train.batch_size=4",
        "loss.rotated_batch_size=4",
        "train.steps=1",
    ];
    let trainer = train(storage, "wide", &folder_overrides(&images, &extra));
    assert_eq!(trainer.config().model.image_size(), 128);
    let sample = dir.path().join("out/runs/wide/samples/0000000001.png");
    let grid = image::open(&sample).unwrap();
    assert_eq!(grid.width(), 8 * 130 + 2);
}

#[test]
fn missing_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder");
    let overrides = folder_overrides(&missing, &[]);
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let storage = dir.path().join("out");
    let result = Trainer::open(
        common::tiny_config(&overrides),
        storage.to_str().unwrap(),
        "none",
    );
    let error = result
        .err()
        .expect("a missing folder is an error")
        .to_string();
    assert!(error.contains("no-such-folder"), "{error}");
    assert!(error.contains("not found"), "{error}");
    assert!(
        !storage.exists(),
        "storage was written before the data was checked"
    );
}

#[test]
fn broken_image_fails_run_with_reason() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_images(&images);
    std::fs::write(images.join("odd/zz-broken.png"), "not a png").unwrap();
    let storage = dir.path().join("out");
    let storage = storage.to_str().unwrap();
    let overrides = folder_overrides(
        &images,
        &["train.batch_size=13", "loss.rotated_batch_size=4"],
    );
    let overrides: Vec<&str> = overrides.iter().map(String::as_str).collect();
    let mut trainer = Trainer::open(common::tiny_config(&overrides), storage, "broken").unwrap();
    let error = trainer.run(&AtomicBool::new(false), |_| {}).unwrap_err();
    assert!(error.to_string().contains("zz-broken.png"), "{error}");
    assert!(!error.to_string().contains(".."), "{error}");

    let record = BlockingStore::open(storage)
        .unwrap()
        .read_run("broken")
        .unwrap()
        .unwrap();
    assert_eq!(record.state, ssgan_store::RunState::Failed);
    assert!(
        record.message.contains("zz-broken.png"),
        "{}",
        record.message
    );
}
