//! `ssgan train` with `eval.every` and `eval.inception_weights`: the in-process path
//! evaluates checkpoints on a thread, `--workers` starts an `ssgan evaluator` process. Both
//! use the random-weight FID Inception fixture in `fixtures/fid` under a folder named
//! `shared` next to the workspace root, and `SSGAN_SHARED_DIR` overrides that folder.
//! Without the fixture the tests print a skip line and pass.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::{repo, ssgan};

fn fixture_weights() -> Option<PathBuf> {
    let shared = match std::env::var_os("SSGAN_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo().join("../shared"),
    };
    let path = shared.join("fixtures/fid/inception_random.pth");
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipped: FID fixtures not found at {}", path.display());
        None
    }
}

/// Arguments of a 4-step run of a width-2 model with a checkpoint every 2 steps, each
/// evaluated with 8 generated and 8 real images.
fn train_args(storage: &Path, run_id: &str, weights: &str) -> Vec<String> {
    let mut args: Vec<String> = ["--threads", "2", "train", "--config"]
        .map(String::from)
        .to_vec();
    args.push(
        repo()
            .join("configs/cifar10-cpu-demo.toml")
            .display()
            .to_string(),
    );
    args.extend(["--storage".into(), storage.display().to_string()]);
    args.extend(["--run-id".into(), run_id.into()]);
    let keys = [
        "model.ch=2".to_string(),
        "train.batch_size=8".into(),
        "loss.rotated_batch_size=8".into(),
        "train.steps=4".into(),
        "checkpoint.every=2".into(),
        "eval.every=2".into(),
        "eval.samples=8".into(),
        "eval.real_samples=8".into(),
        format!("eval.inception_weights={weights:?}"),
    ];
    for key in keys {
        args.extend(["--set".into(), key]);
    }
    args
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Serves `file` over HTTP on 127.0.0.1 for `requests` requests, on a thread; returns the
/// URL of the file.
fn serve_file(file: &Path, requests: usize) -> String {
    let body = std::fs::read(file).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/weights/inception_random.pth",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests).flatten() {
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let mut stream = &stream;
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[test]
fn train_evaluates_in_process() {
    let Some(weights) = fixture_weights() else {
        return;
    };
    let url = serve_file(&weights, 1);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let output = ssgan()
        .env("SSGAN_CACHE_DIR", &cache)
        .args(train_args(&dir.path().join("out"), "local", &url))
        .output()
        .unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(
        cache.join("inception/inception_random.pth").is_file(),
        "{log}"
    );
    for step in [2, 4] {
        let path = dir
            .path()
            .join(format!("out/runs/local/checkpoints/{step:010}/eval.json"));
        let eval = read_json(&path);
        assert_eq!(eval["step"], step);
        assert_eq!(eval["samples"], 8);
        let fid = eval["fid"].as_f64().unwrap();
        assert!(fid.is_finite(), "fid {fid}");
        assert!(fid >= 0.0, "fid {fid}");
        assert!(log.contains(&format!("step {step}: FID")), "{log}");
    }
    assert!(
        dir.path()
            .join("out/runs/local/fid_real_stats_8.npz")
            .is_file()
    );
    let record = read_json(&dir.path().join("out/runs/local/run.json"));
    assert_eq!(eval_steps(&record), [2, 4], "{record}");
    assert!(record["best_step"].is_u64(), "{record}");
    assert!(record.get("pending_evals").is_none(), "{record}");
}

fn eval_steps(record: &serde_json::Value) -> Vec<u64> {
    let evals = record["evals"].as_array().expect("run.json has evals");
    evals
        .iter()
        .map(|eval| eval["step"].as_u64().unwrap())
        .collect()
}

fn checkpoint_steps(run: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|entry| {
            entry
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse()
                .unwrap()
        })
        .collect();
    steps.sort();
    steps
}

#[test]
fn train_keeps_best_checkpoint() {
    let Some(weights) = fixture_weights() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args = train_args(dir.path(), "best", &weights.display().to_string());
    for key in ["train.steps=6", "checkpoint.keep=1"] {
        args.extend(["--set".into(), key.into()]);
    }
    let output = ssgan().args(args).output().unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");

    let run = dir.path().join("runs/best");
    let record = read_json(&run.join("run.json"));
    assert_eq!(eval_steps(&record), [2, 4, 6], "{record}");
    let best = record["best_step"].as_u64().expect("best_step is set");
    let mut expected = vec![best, 6];
    expected.dedup();
    assert_eq!(checkpoint_steps(&run), expected, "{log}");
    assert!(
        run.join(format!("checkpoints/{best:010}/eval.json"))
            .is_file()
    );
}

#[test]
fn train_evaluates_left_pending_steps() {
    let Some(weights) = fixture_weights() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut args = train_args(dir.path(), "again", "unused");
    args.truncate(args.len() - 2);
    let output = ssgan().args(&args).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let run = dir.path().join("runs/again");
    let mut record = read_json(&run.join("run.json"));
    record["pending_evals"] = serde_json::json!([2]);
    std::fs::write(run.join("run.json"), record.to_string()).unwrap();

    // The run is at its last step, so this only evaluates the pending step.
    let output = ssgan()
        .args(train_args(
            dir.path(),
            "again",
            &weights.display().to_string(),
        ))
        .output()
        .unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("step 2: FID"), "{log}");
    let record = read_json(&run.join("run.json"));
    assert_eq!(eval_steps(&record), [2], "{record}");
    assert!(record.get("pending_evals").is_none(), "{record}");
    assert!(run.join("checkpoints/0000000002/eval.json").is_file());
}

#[test]
fn train_workers_starts_evaluator() {
    let Some(weights) = fixture_weights() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let weights = format!("file://{}", weights.display());
    let mut args = train_args(dir.path(), "pooled", &weights);
    args.extend(["--workers", "1", "--listen", "127.0.0.1:0"].map(String::from));
    let output = ssgan().args(args).output().unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");

    let record = read_json(&dir.path().join("runs/pooled/run.json"));
    assert_eq!(record["state"], "SUCCEEDED", "{record}");
    let steps: Vec<u64> = record["evals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|eval| eval["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4], "{record}");
    assert!(record["best_step"].is_u64(), "{record}");
    assert!(log.contains("step 4: FID"), "{log}");
    assert!(log.contains("best checkpoint by FID"), "{log}");
    let eval = dir
        .path()
        .join("runs/pooled/checkpoints/0000000004/eval.json");
    assert!(eval.is_file(), "{log}");
}

#[test]
fn eval_without_weights_warns() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = train_args(dir.path(), "plain", "unused");
    // Drop the weights override, keeping eval.every.
    args.truncate(args.len() - 2);
    let output = ssgan().args(args).output().unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("eval.inception_weights is not set"), "{log}");
    let eval = dir
        .path()
        .join("runs/plain/checkpoints/0000000004/eval.json");
    assert!(!eval.exists());
}

/// Writes `count` PNG images of 40 x 36 pixels into `dir`.
fn write_images(dir: &Path, count: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for index in 0..count {
        let image = image::RgbImage::from_fn(40, 36, |x, y| {
            let value = |k: u32| ((x * k + y * (k + index) + 31 * index) % 256) as u8;
            image::Rgb([value(2), value(3), value(5)])
        });
        image.save(dir.join(format!("{index:03}.png"))).unwrap();
    }
}

#[test]
fn train_evaluates_image_folder() {
    let Some(weights) = fixture_weights() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_images(&images, 16);
    let mut args = train_args(dir.path(), "folder", &weights.display().to_string());
    let data = [
        "data.kind=\"image-folder\"".to_string(),
        format!("data.path={:?}", images.display().to_string()),
        "eval.real_samples=32".to_string(),
    ];
    for key in data {
        args.extend(["--set".into(), key]);
    }
    let output = ssgan().args(args).output().unwrap();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");

    let run = dir.path().join("runs/folder");
    let record = read_json(&run.join("run.json"));
    assert_eq!(eval_steps(&record), [2, 4], "{record}");
    let eval = read_json(&run.join("checkpoints/0000000004/eval.json"));
    let fid = eval["fid"].as_f64().unwrap();
    assert!(fid.is_finite(), "fid {fid}");
    assert!(fid >= 0.0, "fid {fid}");
    // The folder has 16 images, fewer than the 32 requested.
    assert_eq!(eval["real_samples"], 16, "{eval}");
    assert!(log.contains("fewer than eval.real_samples"), "{log}");
    assert!(run.join("fid_real_stats_32.npz").is_file());
}
