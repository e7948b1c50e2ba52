//! `ssgan fid`, `ssgan fid-stats` and `ssgan bench fid` run as real processes on the
//! random-weight FID InceptionV3 fixture and its 16 CIFAR-10 test images.
//!
//! The expected features come from pytorch-fid 0.3.0 (torch 2.15.0, torchvision 0.29.2,
//! numpy 2.4.6, CPU). The fixtures live in `fixtures/fid` under a folder named `shared`
//! next to the workspace root, and `SSGAN_SHARED_DIR` overrides that folder. Without them
//! the tests print a skip line and pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Tensor};

fn ssgan() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssgan"));
    command.env("RUST_LOG", "warn,ssgan=info");
    command
}

fn fixtures() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let shared = match std::env::var_os("SSGAN_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => root.join("../shared"),
    };
    let dir = shared.join("fixtures/fid");
    if dir.join("inception_random.pth").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: FID fixtures not found at {}", dir.display());
        None
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that the command succeeded and parses its one line of JSON output.
fn json_output(output: Output) -> serde_json::Value {
    assert!(output.status.success(), "{}", stderr(&output));
    let line = String::from_utf8(output.stdout).unwrap();
    serde_json::from_str(line.trim()).unwrap()
}

/// The fixture images as interleaved RGB bytes, 32 x 32 x 3 each.
fn fixture_images(dir: &Path) -> Vec<Vec<u8>> {
    let tensor = Tensor::read_npy(dir.join("images_u8.npy")).unwrap();
    let bytes = tensor.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    bytes.chunks(32 * 32 * 3).map(<[u8]>::to_vec).collect()
}

fn write_png_folder(images: &[Vec<u8>], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (index, rgb) in images.iter().enumerate() {
        let image = image::RgbImage::from_raw(32, 32, rgb.clone()).unwrap();
        image.save(dir.join(format!("{index:03}.png"))).unwrap();
    }
}

/// Writes the images as one CIFAR-10 binary file: a label byte, then the R, G, B planes.
fn write_cifar_file(images: &[Vec<u8>], path: &Path) {
    let mut bytes = Vec::new();
    for rgb in images {
        bytes.push(0);
        for channel in 0..3 {
            bytes.extend(rgb.chunks(3).map(|pixel| pixel[channel]));
        }
    }
    std::fs::write(path, bytes).unwrap();
}

fn read_mu(path: &Path) -> Vec<f64> {
    let archive = candle_core::npy::NpzTensors::new(path).unwrap();
    let mu = archive.get("mu").unwrap().unwrap();
    assert_eq!(mu.dtype(), DType::F64);
    mu.to_vec1::<f64>().unwrap()
}

fn trace_sigma(path: &Path) -> f64 {
    let archive = candle_core::npy::NpzTensors::new(path).unwrap();
    let sigma = archive.get("sigma").unwrap().unwrap();
    let diagonal: Vec<f64> = (0..2048)
        .map(|i| {
            sigma
                .get(i)
                .unwrap()
                .get(i)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        })
        .collect();
    diagonal.iter().sum()
}

#[test]
fn fid_stats_then_fid_against_cifar_file() {
    let Some(dir) = fixtures() else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let images = fixture_images(&dir);
    let folder = temp.path().join("pngs");
    write_png_folder(&images, &folder);
    let cifar = temp.path().join("images.bin");
    write_cifar_file(&images, &cifar);
    let stats = temp.path().join("stats.npz");
    let weights = dir.join("inception_random.pth");

    let output = ssgan()
        .arg("fid-stats")
        .arg(&folder)
        .arg("--out")
        .arg(&stats)
        .arg("--inception-weights")
        .arg(&weights)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    // mu is the mean of the float32 pool3 features; compare with the float64 reference.
    let reference = Tensor::read_npy(dir.join("features_f64.npy")).unwrap();
    let reference = reference.mean(0).unwrap().to_vec1::<f64>().unwrap();
    let mu = read_mu(&stats);
    let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (index, (actual, expected)) in mu.iter().zip(&reference).enumerate() {
        assert!(
            (actual - expected).abs() <= 1e-4 * scale,
            "mu[{index}] = {actual}, expected {expected}"
        );
    }

    // The PNGs are lossless, so the CIFAR copy of the same pixels gives the same statistics.
    let output = ssgan()
        .arg("fid")
        .arg(&stats)
        .arg(&cifar)
        .arg("--inception-weights")
        .arg(&weights)
        .arg("--json")
        .output()
        .unwrap();
    let value = json_output(output);
    let fid = value["fid"].as_f64().unwrap();
    // 16 samples in 2048 dims give a rank-15 covariance, for which the square root's
    // round-off moves FID(A, A) off 0 by about 1e-6 x tr(sigma).
    let trace = trace_sigma(&stats);
    assert!(
        fid.abs() < 1e-5 * trace,
        "FID of identical sets = {fid}, tr(sigma) = {trace}"
    );
}

#[test]
fn fid_of_npz_files_needs_no_weights() {
    let Some(dir) = fixtures() else {
        return;
    };

    let output = ssgan()
        .arg("fid")
        .arg(dir.join("fd_stats_a.npz"))
        .arg(dir.join("fd_stats_b.npz"))
        .arg("--json")
        .output()
        .unwrap();

    let value = json_output(output);
    // pytorch-fid 0.3.0 with scipy 1.17.1 gives 55.85837569829084.
    let fid = value["fid"].as_f64().unwrap();
    assert!((fid - 55.85837569829084).abs() < 1e-7, "{fid}");
}

#[test]
fn missing_weights_error_says_where_to_get_them() {
    let temp = tempfile::tempdir().unwrap();
    let folder = temp.path().join("pngs");
    write_png_folder(&[vec![128; 32 * 32 * 3]], &folder);

    let output = ssgan()
        .arg("fid")
        .arg(&folder)
        .arg(&folder)
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("pt_inception-2015-12-05-6726825d.pth"),
        "{message}"
    );
    assert!(message.contains("--inception-weights"), "{message}");
}

#[test]
fn bench_fid_prints_json() {
    let Some(dir) = fixtures() else {
        return;
    };

    let output = ssgan()
        .args([
            "bench",
            "fid",
            "--batch-size",
            "2",
            "--warmup",
            "0",
            "--batches",
            "1",
        ])
        .arg("--inception-weights")
        .arg(dir.join("inception_random.pth"))
        .arg("--json")
        .output()
        .unwrap();

    let value = json_output(output);
    assert!(
        value["features_per_second"].as_f64().unwrap() > 0.0,
        "{value}"
    );
    assert_eq!(value["batch_size"], 2);
}

#[test]
fn fid_stats_from_checkpoint_samples() {
    let Some(dir) = fixtures() else {
        return;
    };
    let temp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let config = root.join("configs/cifar10-cpu-demo.toml");
    let tiny = [
        "model.ch=2",
        "train.batch_size=8",
        "loss.rotated_batch_size=8",
    ];
    let mut train = ssgan();
    train
        .current_dir(&root)
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--storage")
        .arg(temp.path())
        .args(["--run-id", "f", "--steps", "1"]);
    for setting in tiny {
        train.args(["--set", setting]);
    }
    let output = train.output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let checkpoint = temp.path().join("runs/f");
    let stats = |name: &str| -> Vec<f64> {
        let out = temp.path().join(name);
        let output = ssgan()
            .arg("fid-stats")
            .arg(&checkpoint)
            .args(["--samples", "3", "--seed", "7", "--inception-weights"])
            .arg(dir.join("inception_random.pth"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        read_mu(&out)
    };

    let first = stats("first.npz");
    let second = stats("second.npz");

    assert_eq!(first.len(), 2048);
    assert!(first.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert_eq!(first, second, "the same seed gives the same samples");
}

#[test]
fn fid_stats_checks_inputs_before_work() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    write_png_folder(&[vec![7u8; 3 * 32 * 32]], &images);
    let missing = dir.path().join("no-such-folder/stats.npz");
    let output = ssgan()
        .args(["fid-stats", images.to_str().unwrap(), "--out"])
        .arg(&missing)
        .args(["--inception-weights", "unused.pth"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("no-such-folder does not exist"),
        "{message}"
    );

    let run = dir.path().join("runs/r");
    std::fs::create_dir_all(run.join("checkpoints")).unwrap();
    let output = ssgan()
        .args(["fid-stats", run.to_str().unwrap(), "--out"])
        .arg(dir.path().join("stats.npz"))
        .args(["--inception-weights", "unused.pth"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains("pass --samples N"), "{message}");
}
