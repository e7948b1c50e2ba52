//! [`Store::open`] on each accepted URL form and on rejected ones.

use crate::{Store, StoreError};

#[test]
fn open_local_path_creates_and_canonicalises() {
    let directory = tempfile::tempdir().expect("create temp dir");
    let requested = directory.path().join("a/b/../c/");
    let store = Store::open(requested.to_str().unwrap()).expect("open");

    let expected = directory.path().canonicalize().unwrap().join("a/c");
    assert!(expected.is_dir(), "the store directory was not created");
    assert_eq!(store.url(), expected.to_str().unwrap());
    assert_eq!(
        store.checkpoint_url("r", 5),
        format!("{}/runs/r/checkpoints/0000000005", expected.display())
    );
}

#[test]
fn open_file_url_keeps_url_form() {
    let directory = tempfile::tempdir().expect("create temp dir");
    let root = directory.path().canonicalize().unwrap().join("store");
    let url = format!("file://{}/", root.display());
    let store = Store::open(&url).expect("open");

    assert!(root.is_dir(), "the store directory was not created");
    assert_eq!(store.url(), format!("file://{}", root.display()));
    assert_eq!(
        store.checkpoint_url("r", 1),
        format!("file://{}/runs/r/checkpoints/0000000001", root.display())
    );
}

#[test]
fn open_memory_url_normalises() {
    assert_eq!(Store::open("memory://").unwrap().url(), "memory://");
    assert_eq!(Store::open("memory:///").unwrap().url(), "memory:///");
    let store = Store::open("memory:///p/q/").unwrap();
    assert_eq!(store.url(), "memory:///p/q");
    assert_eq!(
        store.checkpoint_url("r", 1),
        "memory:///p/q/runs/r/checkpoints/0000000001"
    );
    let root = Store::open("memory://").unwrap();
    assert_eq!(
        root.checkpoint_url("r", 1),
        "memory:///runs/r/checkpoints/0000000001"
    );
}

/// Building an S3 client sends no request, so this test needs no server.
#[test]
fn open_s3_url_normalises() {
    let store = Store::open("s3://bucket/some/prefix/").expect("open");
    assert_eq!(store.url(), "s3://bucket/some/prefix");
    assert_eq!(store.layout.root().as_ref(), "some/prefix");
    assert_eq!(
        store.checkpoint_url("r", 42),
        "s3://bucket/some/prefix/runs/r/checkpoints/0000000042"
    );
}

#[test]
fn open_rejects_unsupported_urls() {
    let cases = [
        ("", "empty"),
        ("   ", "empty"),
        ("ftp://host/path", "unsupported scheme"),
        ("http://example.com/store", "unsupported scheme"),
        ("memory://host/x", "take no host"),
        ("s3://bucket/p?versionId=1", "query strings"),
        ("file://relative/path", "absolute local path"),
    ];
    for (url, expected) in cases {
        let error = Store::open(url).expect_err(url);
        let StoreError::InvalidUrl { url: named, reason } = &error else {
            panic!("expected InvalidUrl for {url:?}, got {error:?}");
        };
        assert_eq!(named, url);
        assert!(reason.contains(expected), "{url:?}: {reason}");
    }
}
