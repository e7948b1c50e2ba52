//! Reading real CIFAR-10 files: the 2,000-image sample in the repository and, when
//! present, the full 10,000-image train and test files.
//!
//! The full files live outside the repository, in `data/cifar10` under a folder named
//! `shared` next to the workspace root. Set `SSGAN_SHARED_DIR` to use another folder in
//! place of that `shared` folder. The full-file tests print a line to stderr and pass
//! when the files are absent.

use std::path::{Path, PathBuf};

use ssgan_data::{CifarDataset, Split};

/// Records per class in the first 2,000 records of the sample, labels 0 to 9.
const SAMPLE_CLASS_COUNTS: [usize; 10] = [200, 221, 192, 209, 189, 197, 213, 198, 188, 193];

fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

fn sample_dir() -> PathBuf {
    workspace_root().join("data").join("cifar10-sample")
}

/// Returns the folder of the full CIFAR-10 files, or `None` after printing a skip line.
fn full_data_dir() -> Option<PathBuf> {
    let shared = match std::env::var_os("SSGAN_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().parent().unwrap().join("shared"),
    };
    let dir = shared.join("data").join("cifar10");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: full CIFAR-10 files not found at {}",
            dir.display()
        );
        None
    }
}

fn class_counts(dataset: &CifarDataset) -> [usize; 10] {
    let mut counts = [0; 10];
    for &label in dataset.labels() {
        counts[usize::from(label)] += 1;
    }
    counts
}

#[test]
fn sample_has_2000_images() {
    let dir = sample_dir();

    let dataset = CifarDataset::open(&dir, Split::Train).unwrap();

    assert_eq!(dataset.len(), 2000);
    assert_eq!(dataset.files(), &[dir.join("data_batch_1.bin")]);
    assert!(dataset.labels().iter().all(|&label| label <= 9));
    assert_eq!(class_counts(&dataset), SAMPLE_CLASS_COUNTS);
}

#[test]
fn sample_has_no_test_split() {
    let error = CifarDataset::open(&sample_dir(), Split::Test).unwrap_err();

    assert!(error.to_string().contains("test_batch.bin"), "{error}");
}

#[test]
fn full_files_have_10000_images() {
    let Some(dir) = full_data_dir() else {
        return;
    };

    let train = CifarDataset::open(&dir, Split::Train).unwrap();
    let test = CifarDataset::open(&dir, Split::Test).unwrap();

    assert_eq!(train.len(), 10_000);
    assert_eq!(train.files(), &[dir.join("data_batch_1.bin")]);
    assert_eq!(class_counts(&train), [1000; 10]);
    assert_eq!(test.len(), 10_000);
    assert_eq!(test.files(), &[dir.join("test_batch.bin")]);
    assert_eq!(class_counts(&test), [1000; 10]);
}

#[test]
fn sample_matches_full_prefix() {
    let Some(dir) = full_data_dir() else {
        return;
    };

    let sample = CifarDataset::open(&sample_dir(), Split::Train).unwrap();
    let full = CifarDataset::open(&dir, Split::Train).unwrap();

    assert_eq!(sample.labels(), &full.labels()[..2000]);
    for index in 0..sample.len() {
        assert_eq!(sample.image(index), full.image(index), "image {index}");
    }
}
