//! The conformance suite on each backend, and behaviour specific to one backend.

use std::io::Write;
use std::sync::{Arc, Mutex};

use object_store::aws::S3ConditionalPut;
use object_store::path::Path;
use url::Url;

use super::conformance::run_conformance_suite;
use super::{checkpoint_file, patterned_bytes, put_raw, run_record};
use crate::url::{OpenedRoot, s3_builder};
use crate::{RunState, Store, StoreError};

#[tokio::test]
async fn memory_store_passes_conformance_suite() {
    let store = Store::open("memory://").expect("open memory store");
    run_conformance_suite(&store).await;
}

#[tokio::test]
async fn memory_store_with_prefix_passes_conformance_suite() {
    let store = Store::open("memory:///some/prefix/").expect("open memory store");
    assert_eq!(store.url(), "memory:///some/prefix");
    run_conformance_suite(&store).await;
}

#[tokio::test]
async fn local_directory_passes_conformance_suite() {
    let directory = tempfile::tempdir().expect("create temp dir");
    let store = Store::open(directory.path().to_str().unwrap()).expect("open local store");
    run_conformance_suite(&store).await;
}

#[tokio::test]
async fn local_store_writes_documented_paths() {
    let directory = tempfile::tempdir().expect("create temp dir");
    let root = directory.path().join("nested/store");
    let store = Store::open(root.to_str().unwrap()).expect("open local store");
    let files = vec![checkpoint_file("g.bin", patterned_bytes(10, 1))];
    store
        .commit_checkpoint("r1", 100, files)
        .await
        .expect("commit");
    store
        .put_sample("r1", 100, patterned_bytes(5, 2))
        .await
        .expect("sample");
    let mut record = run_record("r1");
    record.state = RunState::Running;
    store.write_run(&record).await.expect("write run");

    let step_dir = root.join("runs/r1/checkpoints/0000000100");
    assert!(step_dir.join("g.bin").is_file());
    assert!(step_dir.join("MANIFEST.json").is_file());
    assert!(root.join("runs/r1/samples/0000000100.png").is_file());
    assert!(root.join("runs/r1/run.json").is_file());
    let manifest = std::fs::read_to_string(step_dir.join("MANIFEST.json")).unwrap();
    assert!(manifest.contains("\"format\": 1"), "{manifest}");

    store
        .commit_checkpoint("r1", 200, vec![])
        .await
        .expect("commit");
    let deleted = store
        .apply_retention("r1", 1, &[])
        .await
        .expect("retention");
    assert_eq!(deleted, vec![100]);
    assert!(
        !step_dir.exists(),
        "retention left the step directory behind"
    );
}

/// Captures the output of a tracing subscriber in memory.
#[derive(Clone, Default)]
struct CapturedOutput(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedOutput {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn load_latest_warns_about_each_failed_step() {
    let store = Store::open("memory://").expect("open memory store");
    let run_id = "warned";
    for step in [1, 2] {
        let files = vec![checkpoint_file("d.bin", patterned_bytes(32, step as u8))];
        store
            .commit_checkpoint(run_id, step, files)
            .await
            .expect("commit");
    }
    let location = store.layout.checkpoint_file(run_id, 2, "d.bin");
    put_raw(&store, &location, patterned_bytes(32, 9)).await;

    let output = CapturedOutput::default();
    let writer = output.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let loaded = {
        let _default = tracing::subscriber::set_default(subscriber);
        store.load_latest(run_id).await.expect("load latest")
    };
    assert_eq!(loaded.map(|loaded| loaded.step), Some(1));

    let logged = String::from_utf8(output.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(logged.contains("WARN"), "{logged}");
    assert!(logged.contains(run_id), "{logged}");
    assert!(logged.contains("step=2"), "{logged}");
    assert!(logged.contains("d.bin"), "{logged}");
    assert!(logged.contains("SHA-256"), "{logged}");
}

/// Opens a store on the S3 server named by `SSGAN_TEST_S3_ENDPOINT`, under a prefix unique
/// to this test run, or returns `None` to skip when the variable is unset outside CI.
fn open_s3_test_store(conditional_put: S3ConditionalPut) -> Option<Store> {
    let Ok(endpoint) = std::env::var("SSGAN_TEST_S3_ENDPOINT") else {
        let message = "skipped: set SSGAN_TEST_S3_ENDPOINT (such as http://127.0.0.1:9000), \
                       SSGAN_TEST_S3_BUCKET, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                       to run the conformance suite against an S3 server";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true, but {message}"
        );
        eprintln!("{message}");
        return None;
    };
    let bucket = std::env::var("SSGAN_TEST_S3_BUCKET")
        .expect("SSGAN_TEST_S3_ENDPOINT is set, so set SSGAN_TEST_S3_BUCKET to an existing bucket");
    // Without static credentials the client would request credentials from an instance
    // metadata endpoint.
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(
            std::env::var(name).is_ok(),
            "set {name} for the S3 test server"
        );
    }

    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let prefix = format!("ssgan-store-test-{}-{unique}", std::process::id());
    let url = Url::parse(&format!("s3://{bucket}/{prefix}")).expect("S3 test URL");
    let object_store = s3_builder(&url)
        .with_endpoint(endpoint.as_str())
        .with_allow_http(endpoint.starts_with("http://"))
        .with_conditional_put(conditional_put)
        .build()
        .expect("configure S3 client");
    Some(Store::from_opened(OpenedRoot {
        object_store: Arc::new(object_store),
        root: Path::from(prefix),
        url: url.to_string(),
    }))
}

#[tokio::test]
async fn s3_server_passes_conformance_suite() {
    let Some(store) = open_s3_test_store(S3ConditionalPut::ETagMatch) else {
        return;
    };
    run_conformance_suite(&store).await;

    let root = store.layout.root().clone();
    store
        .delete_prefix(&root)
        .await
        .expect("delete test prefix");
}

#[tokio::test]
async fn s3_commit_without_conditional_put_fails() {
    let Some(store) = open_s3_test_store(S3ConditionalPut::Disabled) else {
        return;
    };
    let files = vec![checkpoint_file("g.bin", patterned_bytes(8, 1))];
    let error = store.commit_checkpoint("r", 1, files).await.unwrap_err();
    assert!(
        matches!(error, StoreError::CreateOnlyPutUnsupported { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("AWS_CONDITIONAL_PUT"), "{error}");
    assert_eq!(
        store.committed_steps("r").await.expect("steps"),
        Vec::<u64>::new()
    );

    let root = store.layout.root().clone();
    store
        .delete_prefix(&root)
        .await
        .expect("delete test prefix");
}
