//! The `ssgan` binary run as a user would: real processes, files and signals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn ssgan() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssgan"));
    command.env("RUST_LOG", "warn,ssgan=info");
    command
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The CPU demo config made tiny: width 2, batch 8, 2 steps, a checkpoint every step.
const TINY: [&str; 8] = [
    "--set",
    "model.ch=2",
    "--set",
    "train.batch_size=8",
    "--set",
    "loss.rotated_batch_size=8",
    "--set",
    "checkpoint.every=1",
];

fn train(storage: &Path, run_id: &str, extra: &[&str]) -> Output {
    let config = repo().join("configs/cifar10-cpu-demo.toml");
    ssgan()
        .current_dir(repo())
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--storage",
            storage.to_str().unwrap(),
        ])
        .args(["--run-id", run_id])
        .args(TINY)
        .args(extra)
        .output()
        .expect("ssgan runs")
}

fn sample(checkpoint: &Path, out: &Path, extra: &[&str]) -> Output {
    let paths = [checkpoint.to_str().unwrap(), out.to_str().unwrap()];
    ssgan()
        .args(["sample", "--checkpoint", paths[0], "--out", paths[1]])
        .args(extra)
        .output()
        .expect("ssgan runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn train_then_resume_continues_step_count() {
    let dir = tempfile::tempdir().unwrap();
    let first = train(dir.path(), "demo", &["--steps", "2"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("starting a new run"),
        "{}",
        stderr(&first)
    );
    let second = train(dir.path(), "demo", &["--steps", "3"]);
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("resuming from step 2"),
        "{}",
        stderr(&second)
    );
    assert!(
        dir.path()
            .join("runs/demo/checkpoints/0000000003/MANIFEST.json")
            .exists()
    );
    assert!(dir.path().join("runs/demo/samples/0000000003.png").exists());
}

fn read_record(storage: &Path, run_id: &str) -> serde_json::Value {
    let path = storage.join(format!("runs/{run_id}/run.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn resume_with_fewer_steps_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let first = train(dir.path(), "done", &["--steps", "2"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let before = read_record(dir.path(), "done");

    let again = train(dir.path(), "done", &["--steps", "1"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("nothing to train"),
        "{}",
        stderr(&again)
    );
    let after = read_record(dir.path(), "done");
    assert_eq!(after["target_steps"], 2, "{after}");
    assert_eq!(after["attempts"], before["attempts"], "{after}");
    assert_eq!(after["state"], "SUCCEEDED", "{after}");
}

#[test]
fn multi_worker_run_rejects_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let first = train(dir.path(), "pair", &["--steps", "1"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let path = dir.path().join("runs/pair/run.json");
    let mut record = read_record(dir.path(), "pair");
    record["world_size"] = serde_json::json!(2);
    std::fs::write(&path, record.to_string()).unwrap();

    let resumed = train(dir.path(), "pair", &["--steps", "2"]);
    assert!(!resumed.status.success());
    assert!(
        stderr(&resumed).contains("pass --workers 2"),
        "{}",
        stderr(&resumed)
    );
    let untouched = read_record(dir.path(), "pair");
    assert_eq!(untouched["latest_step"], 1, "{untouched}");
}

#[test]
fn sample_writes_grid_from_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    assert!(train(dir.path(), "s", &["--steps", "1"]).status.success());
    let out = dir.path().join("grid.png");
    let checkpoint = dir.path().join("runs/s/checkpoints/0000000001");
    let output = sample(&checkpoint, &out, &["--n", "16"]);

    assert!(output.status.success(), "{}", stderr(&output));
    let image = image::open(&out).unwrap();
    assert_eq!((image.width(), image.height()), (4 * 34 + 2, 4 * 34 + 2));
}

#[test]
fn sample_from_corrupted_checkpoint_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    assert!(train(dir.path(), "c", &["--steps", "1"]).status.success());
    let checkpoint = dir.path().join("runs/c/checkpoints/0000000001");
    std::fs::write(
        checkpoint.join("generator.safetensors"),
        b"not the bytes that were committed",
    )
    .unwrap();
    let out = dir.path().join("grid.png");
    let output = sample(&checkpoint, &out, &[]);

    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("generator.safetensors"), "{message}");
    assert_eq!(
        message.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{message}"
    );
    assert!(
        !out.exists(),
        "a grid was written from a damaged checkpoint"
    );
}

fn assert_rejected(run_id: &str, extra: &[&str], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("store");
    let output = train(&storage, run_id, extra);
    assert!(!output.status.success(), "accepted {extra:?}");
    let message = stderr(&output);
    assert!(message.contains(expected), "{extra:?}: {message}");
    assert!(!storage.exists(), "{extra:?} created {}", storage.display());
}

#[test]
fn bad_input_is_rejected_before_writing() {
    assert_rejected("bad", &["--set", "model.chanels=4"], "chanels");
    assert_rejected("bad", &["--set", "optim.g_lr=-1"], "optim.g_lr");
    assert_rejected(
        "bad",
        &["--set", "loss.rotated_batch_size=6"],
        "loss.rotated_batch_size",
    );
    assert_rejected(
        "bad",
        &["--set", "loss.rotated_batch_size=64"],
        "at most 4 x train.batch_size = 32",
    );
    assert_rejected(
        "bad",
        &["--set", "data.path=\"missing-dir\""],
        "missing-dir",
    );
    assert_rejected("../escape", &[], "../escape");
}

#[test]
fn interrupt_commits_checkpoint_and_exits_zero() {
    stop_signal_commits_checkpoint("-INT");
}

#[test]
fn terminate_commits_checkpoint_and_exits_zero() {
    stop_signal_commits_checkpoint("-TERM");
}

fn stop_signal_commits_checkpoint(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let config = repo().join("configs/cifar10-cpu-demo.toml");
    let mut child = ssgan()
        .current_dir(repo())
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--storage",
            dir.path().to_str().unwrap(),
        ])
        .args(["--run-id", "int", "--steps", "100000"])
        .args(TINY)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = dir
        .path()
        .join("runs/int/checkpoints/0000000001/MANIFEST.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first.exists() {
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{signal}: exit status {status}");
    let record = std::fs::read_to_string(dir.path().join("runs/int/run.json")).unwrap();
    assert!(record.contains("\"STOPPED\""), "{record}");
}

#[test]
fn bench_step_prints_json() {
    let config = repo().join("configs/cifar10-cpu-demo.toml");
    let output = ssgan()
        .current_dir(repo())
        .args([
            "bench",
            "step",
            "--config",
            config.to_str().unwrap(),
            "--warmup",
            "0",
            "--steps",
            "1",
            "--json",
        ])
        .args(["--batch-size", "8"])
        .args(&TINY[..6])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8(output.stdout).unwrap();
    let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(value["images_per_second"].as_f64().unwrap() > 0.0, "{line}");
    assert!(
        value["step_seconds_median"].as_f64().unwrap() > 0.0,
        "{line}"
    );
    assert_eq!(value["batch_size"].as_u64(), Some(8), "{line}");
}

fn bench_data(config: &Path, extra: &[&str]) -> serde_json::Value {
    let output = ssgan()
        .current_dir(repo())
        .args(["bench", "data", "--config", config.to_str().unwrap()])
        .args(["--batches", "2", "--batch-size", "16", "--json"])
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(line.trim()).unwrap()
}

#[test]
fn bench_data_reads_cifar_and_folders() {
    let demo = repo().join("configs/cifar10-cpu-demo.toml");
    let cifar = bench_data(&demo, &[]);
    assert_eq!(cifar["data_kind"], "cifar10", "{cifar}");
    assert_eq!(cifar["dataset_images"].as_u64(), Some(2000), "{cifar}");
    assert_eq!(cifar["image_size"].as_u64(), Some(32), "{cifar}");
    assert!(
        cifar["images_per_second"].as_f64().unwrap() > 0.0,
        "{cifar}"
    );

    let dir = tempfile::tempdir().unwrap();
    for index in 0..5u8 {
        let image = image::RgbImage::from_pixel(150, 120, image::Rgb([index * 40, 9, 200]));
        image.save(dir.path().join(format!("{index}.jpg"))).unwrap();
    }
    let scaled = repo().join("configs/imagenet128-scaled.toml");
    let path = format!("data.path={:?}", dir.path().display().to_string());
    let folder = bench_data(&scaled, &["--set", &path]);
    assert_eq!(folder["data_kind"], "image-folder", "{folder}");
    assert_eq!(folder["dataset_images"].as_u64(), Some(5), "{folder}");
    assert_eq!(folder["image_size"].as_u64(), Some(128), "{folder}");
    assert_eq!(folder["batch_size"].as_u64(), Some(16), "{folder}");
}

#[test]
fn bench_step_scaled_synthetic() {
    let config = repo().join("configs/imagenet128-scaled.toml");
    let output = ssgan()
        .args(["bench", "step", "--config", config.to_str().unwrap()])
        .args([
            "--synthetic",
            "--batch-size",
            "2",
            "--warmup",
            "0",
            "--steps",
            "1",
        ])
        .args([
            "--set",
            "model.ch=1",
            "--set",
            "loss.rotated_batch_size=4",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8(output.stdout).unwrap();
    let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(value["arch"], "resnet128-scaled", "{line}");
    assert_eq!(value["image_size"].as_u64(), Some(128), "{line}");
    assert_eq!(value["synthetic"], true, "{line}");
    assert!(
        value["model_flops_per_step"].as_f64().unwrap() > 0.0,
        "{line}"
    );

    let rejected = ssgan()
        .args(["train", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!rejected.status.success());
    let message = stderr(&rejected);
    assert!(message.contains("imagenet-128/train"), "{message}");
    assert!(message.contains("not found"), "{message}");

    if cfg!(not(feature = "cuda")) {
        let no_gpu = ssgan()
            .args([
                "bench",
                "step",
                "--config",
                config.to_str().unwrap(),
                "--synthetic",
            ])
            .args([
                "--device",
                "cuda:0",
                "--batch-size",
                "2",
                "--set",
                "model.ch=1",
            ])
            .args(["--set", "loss.rotated_batch_size=4"])
            .output()
            .unwrap();
        let message = stderr(&no_gpu);
        assert!(message.contains("without the `cuda` feature"), "{message}");
    }
}

#[test]
fn bench_allreduce_prints_json_per_size() {
    let output = ssgan()
        .args(["bench", "allreduce", "--ranks", "3", "--sizes", "4,40000"])
        .args(["--repeats", "1", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per size: {text}");
    for (line, bytes) in lines.iter().zip([4, 40000]) {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(value["bytes"].as_u64(), Some(bytes), "{line}");
        assert!(value["bus_gbps"].as_f64().unwrap() > 0.0, "{line}");
        assert!(value["tcp_copy_gbps"].as_f64().unwrap() > 0.0, "{line}");
    }
}

#[test]
fn bench_conv_prints_json_per_layer() {
    let output = ssgan()
        .args([
            "--threads",
            "1",
            "bench",
            "conv",
            "--ch",
            "4",
            "--batch-size",
            "4",
        ])
        .args(["--rotated", "4", "--repeats", "1", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(text.lines().count(), 8, "one line per layer: {text}");
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(
            value["ours_forward_gflops"].as_f64().unwrap() > 0.0,
            "{line}"
        );
        assert!(
            value["candle_input_grad_gflops"].as_f64().unwrap() > 0.0,
            "{line}"
        );
    }
}

/// Trains against the loopback S3 server of `.ci/run` and samples from the S3 checkpoint.
/// Without `SSGAN_TEST_S3_ENDPOINT` it prints why it skipped, and fails under `CI=true`.
#[test]
fn train_and_sample_on_s3() {
    let Ok(endpoint) = std::env::var("SSGAN_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set SSGAN_TEST_S3_ENDPOINT"
        );
        eprintln!("skipped: set SSGAN_TEST_S3_ENDPOINT and SSGAN_TEST_S3_BUCKET to run against S3");
        return;
    };
    let bucket = std::env::var("SSGAN_TEST_S3_BUCKET")
        .expect("SSGAN_TEST_S3_BUCKET is set with the endpoint");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let root = format!("s3://{bucket}/cli-{}-{nanos}", std::process::id());
    let config = repo().join("configs/cifar10-cpu-demo.toml");
    let s3 = |command: &mut Command| {
        command
            .env("AWS_ENDPOINT", &endpoint)
            .env("AWS_ALLOW_HTTP", "true");
    };
    let mut train = ssgan();
    s3(&mut train);
    let output = train
        .current_dir(repo())
        .args([
            "train",
            "--config",
            config.to_str().unwrap(),
            "--storage",
            &root,
            "--run-id",
            "s3run",
            "--steps",
            "1",
        ])
        .args(TINY)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("grid.png");
    let mut sample = ssgan();
    s3(&mut sample);
    let checkpoint = format!("{root}/runs/s3run/checkpoints/0000000001");
    let output = sample
        .args([
            "sample",
            "--checkpoint",
            &checkpoint,
            "--out",
            out.to_str().unwrap(),
            "--n",
            "4",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(out.exists());
}
