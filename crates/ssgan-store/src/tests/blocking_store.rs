//! [`BlockingStore`] on a local directory, called from a plain test thread.

use bytes::Bytes;

use super::{checkpoint_file, patterned_bytes, run_record};
use crate::{BlockingStore, StoreError};

#[test]
fn blocking_store_round_trip() {
    let directory = tempfile::tempdir().expect("create temp dir");
    let store = BlockingStore::open(directory.path().to_str().unwrap()).expect("open");
    assert_eq!(store.url(), store.store().url());

    let generator = patterned_bytes(4096, 1);
    for step in [10, 20, 30] {
        let files = vec![checkpoint_file("g.bin", generator.clone())];
        let manifest = store.commit_checkpoint("b", step, files).expect("commit");
        assert_eq!(manifest.step, step);
    }
    let error = store
        .commit_checkpoint("b", 30, vec![checkpoint_file("g.bin", Bytes::new())])
        .unwrap_err();
    assert!(
        matches!(error, StoreError::AlreadyCommitted { step: 30, .. }),
        "{error:?}"
    );

    assert_eq!(store.committed_steps("b").expect("steps"), vec![10, 20, 30]);
    let loaded = store.load_checkpoint("b", 20).expect("load");
    assert_eq!(loaded.file("g.bin").expect("g.bin"), &generator);
    let latest = store
        .load_latest("b")
        .expect("load latest")
        .expect("has checkpoints");
    assert_eq!(latest.step, 30);

    assert_eq!(
        store.apply_retention("b", 1, &[10]).expect("retention"),
        vec![20]
    );
    assert_eq!(store.committed_steps("b").expect("steps"), vec![10, 30]);

    let url = store
        .put_sample("b", 30, patterned_bytes(8, 2))
        .expect("sample");
    assert!(url.ends_with("/runs/b/samples/0000000030.png"), "{url}");
    assert!(
        store
            .checkpoint_url("b", 30)
            .ends_with("/runs/b/checkpoints/0000000030")
    );

    assert_eq!(store.read_run("b").expect("read run"), None);
    store.write_run(&run_record("b")).expect("write run");
    assert_eq!(
        store.read_run("b").expect("read run"),
        Some(run_record("b"))
    );
    assert_eq!(store.list_runs().expect("list runs"), vec!["b"]);
}

#[test]
fn blocking_store_runtime_runs_background_commit() {
    let directory = tempfile::tempdir().expect("create temp dir");
    let store = BlockingStore::open(directory.path().to_str().unwrap()).expect("open");

    let background = store.store().clone();
    let files = vec![checkpoint_file("g.bin", patterned_bytes(100, 3))];
    let upload = store
        .runtime()
        .spawn(async move { background.commit_checkpoint("bg", 7, files).await });
    let manifest = store
        .runtime()
        .block_on(upload)
        .expect("join")
        .expect("commit");

    assert_eq!(manifest.step, 7);
    assert_eq!(store.committed_steps("bg").expect("steps"), vec![7]);
}

/// Fails to compile if a `Store` future cannot be passed to `tokio::spawn`.
#[test]
fn store_futures_are_send() {
    fn require_spawnable<F: std::future::Future + Send + 'static>(_future: F) {}

    let store = crate::Store::open("memory://").expect("open");
    let record = run_record("s");
    let s = store.clone();
    require_spawnable(async move { s.commit_checkpoint("s", 1, vec![]).await });
    let s = store.clone();
    require_spawnable(async move { s.committed_steps("s").await });
    let s = store.clone();
    require_spawnable(async move { s.load_checkpoint("s", 1).await });
    let s = store.clone();
    require_spawnable(async move { s.load_latest("s").await });
    let s = store.clone();
    require_spawnable(async move { s.apply_retention("s", 1, &[]).await });
    let s = store.clone();
    require_spawnable(async move { s.put_sample("s", 1, Bytes::new()).await });
    let s = store.clone();
    require_spawnable(async move { s.read_run("s").await });
    let s = store.clone();
    require_spawnable(async move { s.write_run(&record).await });
    require_spawnable(async move { store.list_runs().await });
}
