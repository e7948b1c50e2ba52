//! Training runs against a local storage directory.

mod common;

use std::sync::atomic::AtomicBool;

use ssgan_store::{BlockingStore, RunState};
use ssgan_worker::{Outcome, Trainer};

fn train(storage: &str, run_id: &str, overrides: &[&str]) -> Trainer {
    let mut trainer =
        Trainer::open(common::tiny_config(overrides), storage, run_id).expect("trainer opens");
    let outcome = trainer
        .run(&AtomicBool::new(false), |_| {})
        .expect("training runs");
    assert!(matches!(outcome, Outcome::Finished { .. }), "{outcome:?}");
    trainer
}

fn generator_bytes(storage: &str, run_id: &str, step: u64) -> bytes::Bytes {
    let store = BlockingStore::open(storage).unwrap();
    store
        .load_checkpoint(run_id, step)
        .unwrap()
        .file("generator.safetensors")
        .unwrap()
        .clone()
}

#[test]
fn run_commits_checkpoints_and_samples() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    train(storage, "first", &[]);
    let store = BlockingStore::open(storage).unwrap();
    assert_eq!(store.committed_steps("first").unwrap(), vec![1, 2]);
    let record = store.read_run("first").unwrap().unwrap();
    assert_eq!(record.state, RunState::Succeeded);
    assert_eq!(record.latest_step, Some(2));
    for step in [1, 2] {
        let png = dir
            .path()
            .join(format!("runs/first/samples/{step:010}.png"));
        let image = image::open(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!((image.width(), image.height()), (8 * 34 + 2, 8 * 34 + 2));
    }
}

#[test]
fn resume_continues_the_step_count() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    train(storage, "resumed", &[]);
    let trainer =
        Trainer::open(common::tiny_config(&["train.steps=3"]), storage, "resumed").unwrap();
    assert_eq!(trainer.resumed_from(), Some(2));
    assert_eq!(trainer.step(), 2);
    drop(trainer);
    train(storage, "resumed", &["train.steps=3"]);
    let store = BlockingStore::open(storage).unwrap();
    assert_eq!(store.committed_steps("resumed").unwrap(), vec![1, 2, 3]);
    assert_eq!(store.read_run("resumed").unwrap().unwrap().attempts, 2);
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    train(
        storage,
        "straight",
        &["train.steps=4", "checkpoint.every=4"],
    );
    train(storage, "split", &["train.steps=2", "checkpoint.every=4"]);
    train(storage, "split", &["train.steps=4", "checkpoint.every=4"]);
    let straight = generator_bytes(storage, "straight", 4);
    let split = generator_bytes(storage, "split", 4);
    assert!(
        straight == split,
        "generator after a resume differs from the uninterrupted run"
    );
    let store = BlockingStore::open(storage).unwrap();
    let d = |run| {
        store
            .load_checkpoint(run, 4)
            .unwrap()
            .file("optimizer_d.safetensors")
            .unwrap()
            .clone()
    };
    assert!(
        d("straight") == d("split"),
        "discriminator optimizer state differs"
    );
}

#[test]
fn corrupted_latest_checkpoint_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    train(storage, "damaged", &[]);
    let file = dir
        .path()
        .join("runs/damaged/checkpoints/0000000002/generator.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let trainer = Trainer::open(common::tiny_config(&[]), storage, "damaged").unwrap();
    assert_eq!(trainer.resumed_from(), Some(1));
}

#[test]
fn resume_with_changed_config_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    train(storage, "fixed", &[]);
    let record_path = dir.path().join("runs/fixed/run.json");
    let before = std::fs::read(&record_path).unwrap();
    let error = Trainer::open(common::tiny_config(&["model.ch=3"]), storage, "fixed")
        .err()
        .expect("must fail");
    let message = error.to_string();
    assert!(message.contains("model.ch"), "{message}");
    assert!(message.contains("--run-id"), "{message}");
    assert_eq!(
        std::fs::read(&record_path).unwrap(),
        before,
        "run.json was rewritten"
    );
}

#[test]
fn missing_dataset_is_named_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let config = common::tiny_config(&["data.path=\"/nonexistent/cifar\""]);
    let error = Trainer::open(config, storage.to_str().unwrap(), "nodata")
        .err()
        .expect("must fail");
    assert!(error.to_string().contains("/nonexistent/cifar"), "{error}");
    assert!(
        !storage.exists(),
        "storage was created for a run that could not start"
    );
}

#[test]
fn stop_flag_commits_and_reports_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    let mut trainer = Trainer::open(
        common::tiny_config(&["train.steps=50", "checkpoint.every=100"]),
        storage,
        "halted",
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let outcome = trainer
        .run(&stop, |report| {
            if report.step == 2 {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap();
    assert_eq!(outcome, Outcome::Stopped { step: 2 });
    let store = BlockingStore::open(storage).unwrap();
    assert_eq!(store.committed_steps("halted").unwrap(), vec![2]);
    assert_eq!(
        store.read_run("halted").unwrap().unwrap().state,
        RunState::Stopped
    );
}

#[test]
fn second_trainer_on_running_run_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().to_str().unwrap();
    let config = common::tiny_config(&["train.steps=50", "checkpoint.every=100"]);
    let mut first = Trainer::open(config.clone(), storage, "busy").unwrap();
    let stop = AtomicBool::new(false);
    let mut second_error = None;
    first
        .run(&stop, |report| {
            if report.step == 1 {
                second_error = Trainer::open(config.clone(), storage, "busy").err();
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .unwrap();
    let message = second_error
        .expect("a second trainer must be rejected")
        .to_string();
    assert!(message.contains("RUNNING in another process"), "{message}");
    assert!(
        Trainer::open(config, storage, "busy").is_ok(),
        "a stopped run must resume"
    );
}
