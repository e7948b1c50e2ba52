//! Reading CIFAR-10 binary files written by the tests: layout, directory lookup and the
//! errors for damaged or missing files.

use std::fs;
use std::path::{Path, PathBuf};

use ssgan_data::{CifarDataset, DataError, IMAGE_BYTES, RECORD_BYTES, Split};

/// Builds one record: the label byte, then pixel byte `(fill + i) % 256` at position `i`.
fn record(label: u8, fill: u8) -> Vec<u8> {
    let mut bytes = vec![label];
    bytes.extend((0..IMAGE_BYTES).map(|i| (usize::from(fill) + i) as u8));
    bytes
}

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

fn write_records(dir: &Path, name: &str, labels: &[u8]) -> PathBuf {
    let bytes: Vec<u8> = labels
        .iter()
        .flat_map(|&label| record(label, label))
        .collect();
    write_file(dir, name, &bytes)
}

#[test]
fn truncated_file_names_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = [record(1, 0), record(2, 0)].concat();
    bytes.extend_from_slice(&[3, 0, 0]);
    let path = write_file(dir.path(), "x.bin", &bytes);

    let error = CifarDataset::from_files(std::slice::from_ref(&path)).unwrap_err();
    let message = error.to_string();

    match error {
        DataError::TruncatedRecord {
            path: error_path,
            file_bytes,
            offset,
            partial_bytes,
        } => {
            assert_eq!(error_path, path);
            assert_eq!(file_bytes, 6149);
            assert_eq!(offset, 6146);
            assert_eq!(partial_bytes, 3);
        }
        other => panic!("expected TruncatedRecord, got {other:?}"),
    }
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("6149 bytes"), "{message}");
    assert!(message.contains("byte offset 6146"), "{message}");
    assert!(message.contains("(3 bytes)"), "{message}");
}

#[test]
fn short_file_truncated_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "short.bin", &[0; 100]);

    let error = CifarDataset::from_files(&[path]).unwrap_err();

    match error {
        DataError::TruncatedRecord {
            file_bytes,
            offset,
            partial_bytes,
            ..
        } => {
            assert_eq!(file_bytes, 100);
            assert_eq!(offset, 0);
            assert_eq!(partial_bytes, 100);
        }
        other => panic!("expected TruncatedRecord, got {other:?}"),
    }
}

#[test]
fn invalid_label_names_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_records(dir.path(), "bad_label.bin", &[0, 9, 10, 3]);

    let error = CifarDataset::from_files(std::slice::from_ref(&path)).unwrap_err();
    let message = error.to_string();

    match error {
        DataError::InvalidLabel {
            path: error_path,
            record,
            offset,
            label,
        } => {
            assert_eq!(error_path, path);
            assert_eq!(record, 2);
            assert_eq!(offset, 6146);
            assert_eq!(label, 10);
        }
        other => panic!("expected InvalidLabel, got {other:?}"),
    }
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        message.contains("record 2 at byte offset 6146"),
        "{message}"
    );
    assert!(message.contains("label 10"), "{message}");
}

#[test]
fn empty_file_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_file(dir.path(), "empty.bin", &[]);

    let error = CifarDataset::from_files(std::slice::from_ref(&path)).unwrap_err();

    assert!(error.to_string().contains("is empty"), "{error}");
    match error {
        DataError::EmptyFile { path: error_path } => assert_eq!(error_path, path),
        other => panic!("expected EmptyFile, got {other:?}"),
    }
}

#[test]
fn missing_path_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_such_dir");

    let error = CifarDataset::open(&path, Split::Train).unwrap_err();

    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    match error {
        DataError::NotFound { path: error_path } => assert_eq!(error_path, path),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn missing_file_in_list_named() {
    let dir = tempfile::tempdir().unwrap();
    let present = write_records(dir.path(), "data_batch_1.bin", &[1]);
    let missing = dir.path().join("data_batch_2.bin");

    let error = CifarDataset::from_files(&[present, missing.clone()]).unwrap_err();

    match error {
        DataError::NotFound { path } => assert_eq!(path, missing),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn empty_file_list_rejected() {
    let error = CifarDataset::from_files(&[]).unwrap_err();

    assert!(matches!(error, DataError::NoFiles), "{error:?}");
}

#[test]
fn empty_directory_names_expected_files() {
    let dir = tempfile::tempdir().unwrap();
    write_records(dir.path(), "other.bin", &[1]);

    let train_error = CifarDataset::open(dir.path(), Split::Train).unwrap_err();
    let test_error = CifarDataset::open(dir.path(), Split::Test).unwrap_err();

    let train_message = train_error.to_string();
    assert!(
        train_message.contains("data_batch_*.bin"),
        "{train_message}"
    );
    assert!(
        train_message.contains(&dir.path().display().to_string()),
        "{train_message}"
    );
    assert!(matches!(
        train_error,
        DataError::NoMatchingFiles {
            split: Split::Train,
            ..
        }
    ));

    let test_message = test_error.to_string();
    assert!(test_message.contains("test_batch.bin"), "{test_message}");
    assert!(matches!(
        test_error,
        DataError::NoMatchingFiles {
            split: Split::Test,
            ..
        }
    ));
}

#[test]
fn directory_train_files_sorted() {
    let dir = tempfile::tempdir().unwrap();
    let second = write_records(dir.path(), "data_batch_2.bin", &[5, 6]);
    let first = write_records(dir.path(), "data_batch_1.bin", &[3]);
    let test = write_records(dir.path(), "test_batch.bin", &[8, 9, 0]);
    write_records(dir.path(), "batches.meta.bin", &[7]);
    fs::create_dir(dir.path().join("data_batch_3.bin")).unwrap();

    let train = CifarDataset::open(dir.path(), Split::Train).unwrap();
    let test_split = CifarDataset::open(dir.path(), Split::Test).unwrap();

    assert_eq!(train.files(), &[first, second]);
    assert_eq!(train.labels(), &[3, 5, 6]);
    assert_eq!(test_split.files(), &[test]);
    assert_eq!(test_split.labels(), &[8, 9, 0]);
}

#[test]
fn dataset_layout_matches_records() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_records(dir.path(), "a.bin", &[4, 7]);
    let second = write_records(dir.path(), "b.bin", &[2]);

    let dataset = CifarDataset::from_files(&[first, second]).unwrap();

    assert_eq!(dataset.len(), 3);
    assert!(!dataset.is_empty());
    for (index, label) in [4u8, 7, 2].into_iter().enumerate() {
        assert_eq!(dataset.label(index), label);
        assert_eq!(dataset.image(index), &record(label, label)[1..RECORD_BYTES]);
    }
}

#[test]
fn single_file_ignores_split() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_records(dir.path(), "data_batch_1.bin", &[1, 2]);

    let dataset = CifarDataset::open(&path, Split::Test).unwrap();

    assert_eq!(dataset.len(), 2);
    assert_eq!(dataset.files(), &[path]);
}
