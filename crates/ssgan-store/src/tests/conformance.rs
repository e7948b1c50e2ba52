//! Behaviour that every backend must show. [`run_conformance_suite`] expects an empty store
//! and runs each case under its own run id.

use bytes::Bytes;

use super::{checkpoint_file, delete_raw, get_raw, list_raw, patterned_bytes, put_raw, run_record};
use crate::manifest::sha256_hex;
use crate::store::MULTIPART_PART_SIZE;
use crate::url::join_url;
use crate::{RunState, Store, StoreError, parse_checkpoint_url};

const RECORD_RUN: &str = "record-run";
const SECOND_RECORD_RUN: &str = "record-run-2";
const ROUND_TRIP_RUN: &str = "round-trip";
const UNCOMMITTED_RUN: &str = "uncommitted";
const RECOMMIT_RUN: &str = "recommit";
const CREATE_ONLY_RUN: &str = "create-only";
const CORRUPT_RUN: &str = "corrupt";
const ALL_CORRUPT_RUN: &str = "all-corrupt";
const RETENTION_RUN: &str = "retention";
const SAMPLE_RUN: &str = "sample";
const REJECTED_RUN: &str = "rejected";

/// Runs every conformance case against `store`, which must be empty.
pub(crate) async fn run_conformance_suite(store: &Store) {
    run_record_round_trip_and_listing(store).await;
    commit_then_load_round_trip(store).await;
    committed_steps_ignore_uncommitted_dirs(store).await;
    second_commit_is_rejected_and_keeps_first(store).await;
    manifest_write_is_create_only(store).await;
    corrupted_file_fails_load_and_falls_back(store).await;
    all_corrupted_checkpoints_fail_load_latest(store).await;
    retention_keeps_newest_and_protected(store).await;
    put_sample_returns_object_url(store).await;
    invalid_commits_write_nothing(store).await;

    let mut expected_runs = vec![
        RECORD_RUN,
        SECOND_RECORD_RUN,
        ROUND_TRIP_RUN,
        UNCOMMITTED_RUN,
        RECOMMIT_RUN,
        CREATE_ONLY_RUN,
        CORRUPT_RUN,
        ALL_CORRUPT_RUN,
        RETENTION_RUN,
        SAMPLE_RUN,
    ];
    expected_runs.sort_unstable();
    let runs = store.list_runs().await.expect("list runs after the suite");
    assert_eq!(runs, expected_runs, "list_runs after every case");
}

async fn commit(store: &Store, run_id: &str, step: u64, files: &[(&str, Bytes)]) {
    let files = files
        .iter()
        .map(|(name, bytes)| checkpoint_file(name, bytes.clone()))
        .collect();
    store
        .commit_checkpoint(run_id, step, files)
        .await
        .unwrap_or_else(|error| panic!("commit of {run_id} step {step} failed: {error}"));
}

async fn run_record_round_trip_and_listing(store: &Store) {
    let runs = store
        .list_runs()
        .await
        .expect("list runs of an empty store");
    assert_eq!(runs, Vec::<String>::new(), "the suite needs an empty store");
    let missing = store
        .read_run(RECORD_RUN)
        .await
        .expect("read missing record");
    assert_eq!(missing, None);

    let mut record = run_record(RECORD_RUN);
    store.write_run(&record).await.expect("write record");
    let read = store.read_run(RECORD_RUN).await.expect("read record");
    assert_eq!(read.as_ref(), Some(&record));

    record.state = RunState::Running;
    record.attempts = 2;
    record.latest_step = Some(500);
    record.best_step = Some(400);
    record.updated_unix_ms += 60_000;
    store.write_run(&record).await.expect("overwrite record");
    let read = store
        .read_run(RECORD_RUN)
        .await
        .expect("read overwritten record");
    assert_eq!(read.as_ref(), Some(&record));

    store
        .write_run(&run_record(SECOND_RECORD_RUN))
        .await
        .expect("write second record");
    let runs = store.list_runs().await.expect("list runs");
    assert_eq!(runs, vec![RECORD_RUN, SECOND_RECORD_RUN]);

    let error = store.write_run(&run_record("../escape")).await.unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRunId { .. }),
        "{error:?}"
    );

    let location = store.layout.run_record(SECOND_RECORD_RUN);
    put_raw(store, &location, Bytes::from_static(b"{\"run_id\": 3")).await;
    let error = store.read_run(SECOND_RECORD_RUN).await.unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRunRecord { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("run.json"), "{error}");
}

async fn commit_then_load_round_trip(store: &Store) {
    let run_id = ROUND_TRIP_RUN;
    // The large file takes the multipart upload path.
    let files = [
        ("generator.safetensors", patterned_bytes(1000, 1)),
        (
            "discriminator.safetensors",
            patterned_bytes(MULTIPART_PART_SIZE + 12_345, 2),
        ),
        ("state.json", Bytes::from_static(b"{\"step\": 100}")),
        ("empty.bin", Bytes::new()),
    ];
    let checkpoint_files = files
        .iter()
        .map(|(name, bytes)| checkpoint_file(name, bytes.clone()))
        .collect();
    let manifest = store
        .commit_checkpoint(run_id, 100, checkpoint_files)
        .await
        .expect("commit checkpoint");

    assert_eq!(manifest.format, 1);
    assert_eq!(manifest.run_id, run_id);
    assert_eq!(manifest.step, 100);
    assert_eq!(manifest.files.len(), files.len());
    for ((name, bytes), entry) in files.iter().zip(&manifest.files) {
        assert_eq!(entry.name, *name);
        assert_eq!(entry.size, bytes.len() as u64, "size of {name}");
        assert_eq!(entry.sha256, sha256_hex(bytes), "digest of {name}");
    }

    let steps = store
        .committed_steps(run_id)
        .await
        .expect("committed steps");
    assert_eq!(steps, vec![100]);

    let loaded = store
        .load_checkpoint(run_id, 100)
        .await
        .expect("load checkpoint");
    assert_eq!(loaded.step, 100);
    assert_eq!(loaded.manifest, manifest);
    assert_eq!(loaded.files.len(), files.len());
    for (name, bytes) in &files {
        let stored = loaded.file(name).expect("file listed in manifest");
        assert!(
            stored == bytes,
            "bytes of {name} differ after the round trip"
        );
    }

    let error = loaded.file("missing.bin").unwrap_err();
    assert!(
        matches!(error, StoreError::FileNotInCheckpoint { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("missing.bin"), "{message}");
    assert!(message.contains("step 100"), "{message}");

    let latest = store.load_latest(run_id).await.expect("load latest");
    assert_eq!(latest.map(|loaded| loaded.step), Some(100));

    let url = store.checkpoint_url(run_id, 100);
    let expected_key = format!("runs/{run_id}/checkpoints/0000000100");
    assert_eq!(url, join_url(store.url(), &expected_key));
    let parsed = parse_checkpoint_url(&url).expect("parse checkpoint URL");
    assert_eq!(
        parsed,
        (store.url().to_owned(), run_id.to_owned(), Some(100))
    );
}

async fn committed_steps_ignore_uncommitted_dirs(store: &Store) {
    let run_id = UNCOMMITTED_RUN;
    let files = [("g.bin", patterned_bytes(64, 3))];
    commit(store, run_id, 1, &files).await;

    // Step 2 has files but no manifest, as after a crash during upload. The other two
    // manifests are not in padded step directories.
    let layout = &store.layout;
    put_raw(
        store,
        &layout.checkpoint_file(run_id, 2, "g.bin"),
        patterned_bytes(64, 4),
    )
    .await;
    let checkpoints = layout.checkpoints(run_id);
    put_raw(
        store,
        &checkpoints.clone().join("2").join("MANIFEST.json"),
        "{}",
    )
    .await;
    put_raw(
        store,
        &checkpoints.clone().join("notes").join("MANIFEST.json"),
        "{}",
    )
    .await;

    let steps = store
        .committed_steps(run_id)
        .await
        .expect("committed steps");
    assert_eq!(steps, vec![1]);

    let error = store.load_checkpoint(run_id, 2).await.unwrap_err();
    assert!(
        matches!(error, StoreError::CheckpointNotFound { step: 2, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("MANIFEST.json"), "{error}");

    let latest = store.load_latest(run_id).await.expect("load latest");
    assert_eq!(latest.map(|loaded| loaded.step), Some(1));

    // Committing over the leftover files makes the step visible.
    commit(store, run_id, 2, &[("g.bin", patterned_bytes(64, 5))]).await;
    let steps = store
        .committed_steps(run_id)
        .await
        .expect("committed steps");
    assert_eq!(steps, vec![1, 2]);
}

async fn second_commit_is_rejected_and_keeps_first(store: &Store) {
    let run_id = RECOMMIT_RUN;
    let first = Bytes::from_static(b"first generator");
    commit(store, run_id, 5, &[("g.bin", first.clone())]).await;

    let second = vec![
        checkpoint_file("g.bin", Bytes::from_static(b"second generator")),
        checkpoint_file("extra.bin", Bytes::from_static(b"extra")),
    ];
    let error = store
        .commit_checkpoint(run_id, 5, second)
        .await
        .unwrap_err();
    match &error {
        StoreError::AlreadyCommitted {
            run_id: named,
            step,
        } => {
            assert_eq!(named, run_id);
            assert_eq!(*step, 5);
        }
        other => panic!("expected AlreadyCommitted, got {other:?}"),
    }

    let layout = &store.layout;
    let stored = get_raw(store, &layout.checkpoint_file(run_id, 5, "g.bin")).await;
    assert_eq!(
        stored,
        Some(first.clone()),
        "first commit's file was overwritten"
    );
    let extra = get_raw(store, &layout.checkpoint_file(run_id, 5, "extra.bin")).await;
    assert_eq!(extra, None, "rejected commit uploaded a file");

    let loaded = store
        .load_checkpoint(run_id, 5)
        .await
        .expect("load first commit");
    assert_eq!(loaded.file("g.bin").expect("g.bin"), &first);
}

/// Checks the backend's create-only put itself, which guards a commit that passed the
/// existence check at the same time as another commit of the step.
async fn manifest_write_is_create_only(store: &Store) {
    let run_id = CREATE_ONLY_RUN;
    let files = vec![checkpoint_file("g.bin", patterned_bytes(8, 15))];
    let first = store
        .commit_checkpoint(run_id, 3, files)
        .await
        .expect("commit");

    let mut second = first.clone();
    second.created_unix_ms += 1;
    let error = store.create_manifest(&second).await.unwrap_err();
    assert!(
        matches!(error, StoreError::AlreadyCommitted { step: 3, .. }),
        "{error:?}"
    );

    let loaded = store.load_checkpoint(run_id, 3).await.expect("load");
    assert_eq!(
        loaded.manifest, first,
        "the second manifest write replaced the first"
    );
}

async fn corrupted_file_fails_load_and_falls_back(store: &Store) {
    let run_id = CORRUPT_RUN;
    let step_one = [
        ("g.bin", patterned_bytes(256, 6)),
        ("d.bin", patterned_bytes(256, 7)),
    ];
    let step_two = [
        ("g.bin", patterned_bytes(256, 8)),
        ("d.bin", patterned_bytes(256, 9)),
    ];
    commit(store, run_id, 1, &step_one).await;
    commit(store, run_id, 2, &step_two).await;

    // Same length, different bytes: only the digest can catch it.
    let damaged = patterned_bytes(256, 10);
    let location = store.layout.checkpoint_file(run_id, 2, "d.bin");
    put_raw(store, &location, damaged.clone()).await;

    let error = store.load_checkpoint(run_id, 2).await.unwrap_err();
    let expected_digest = sha256_hex(&step_two[1].1);
    let actual_digest = sha256_hex(&damaged);
    match &error {
        StoreError::FileHashMismatch {
            run_id: named,
            step,
            file,
            expected,
            actual,
        } => {
            assert_eq!(named, run_id);
            assert_eq!(*step, 2);
            assert_eq!(file, "d.bin");
            assert_eq!(expected, &expected_digest);
            assert_eq!(actual, &actual_digest);
        }
        other => panic!("expected FileHashMismatch, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("d.bin"), "{message}");
    assert!(message.contains(&expected_digest), "{message}");
    assert!(message.contains(&actual_digest), "{message}");

    let latest = store.load_latest(run_id).await.expect("load latest");
    let latest = latest.expect("step 1 still verifies");
    assert_eq!(latest.step, 1);
    assert_eq!(latest.file("g.bin").expect("g.bin"), &step_one[0].1);
    assert_eq!(latest.file("d.bin").expect("d.bin"), &step_one[1].1);

    // A truncated file is reported by size before its digest is computed.
    let location = store.layout.checkpoint_file(run_id, 2, "g.bin");
    put_raw(store, &location, patterned_bytes(100, 8)).await;
    let error = store.load_checkpoint(run_id, 2).await.unwrap_err();
    match &error {
        StoreError::FileSizeMismatch {
            file,
            expected,
            actual,
            ..
        } => {
            assert_eq!(file, "g.bin");
            assert_eq!(*expected, 256);
            assert_eq!(*actual, 100);
        }
        other => panic!("expected FileSizeMismatch, got {other:?}"),
    }
}

async fn all_corrupted_checkpoints_fail_load_latest(store: &Store) {
    let run_id = ALL_CORRUPT_RUN;
    let none = store
        .load_latest(run_id)
        .await
        .expect("load latest of empty run");
    assert!(none.is_none(), "a run without checkpoints loads as None");

    commit(store, run_id, 1, &[("g.bin", patterned_bytes(32, 11))]).await;
    commit(store, run_id, 2, &[("g.bin", patterned_bytes(32, 12))]).await;
    delete_raw(store, &store.layout.checkpoint_file(run_id, 1, "g.bin")).await;
    put_raw(
        store,
        &store.layout.checkpoint_file(run_id, 2, "g.bin"),
        patterned_bytes(32, 13),
    )
    .await;

    let error = store.load_latest(run_id).await.unwrap_err();
    let StoreError::NoVerifiedCheckpoint {
        run_id: named,
        failures,
    } = &error
    else {
        panic!("expected NoVerifiedCheckpoint, got {error:?}");
    };
    assert_eq!(named, run_id);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures[0].starts_with("step 2:"), "{}", failures[0]);
    assert!(failures[0].contains("SHA-256"), "{}", failures[0]);
    assert!(failures[1].starts_with("step 1:"), "{}", failures[1]);
    assert!(failures[1].contains("missing"), "{}", failures[1]);

    let error = store.load_checkpoint(run_id, 1).await.unwrap_err();
    assert!(
        matches!(error, StoreError::FileMissing { step: 1, .. }),
        "{error:?}"
    );
}

async fn retention_keeps_newest_and_protected(store: &Store) {
    let run_id = RETENTION_RUN;
    for step in (10..=60).step_by(10) {
        commit(
            store,
            run_id,
            step,
            &[("g.bin", patterned_bytes(16, step as u8))],
        )
        .await;
    }
    // An uncommitted directory is left alone by retention.
    let uncommitted = store.layout.checkpoint_file(run_id, 5, "g.bin");
    put_raw(store, &uncommitted, patterned_bytes(16, 0)).await;

    let deleted = store
        .apply_retention(run_id, 2, &[20])
        .await
        .expect("retention");
    assert_eq!(deleted, vec![10, 30, 40]);
    let steps = store
        .committed_steps(run_id)
        .await
        .expect("committed steps");
    assert_eq!(steps, vec![20, 50, 60]);
    for step in [10, 30, 40] {
        let remaining = list_raw(store, &store.layout.checkpoint_dir(run_id, step)).await;
        assert_eq!(
            remaining,
            Vec::<String>::new(),
            "objects left in step {step}"
        );
    }
    assert!(
        get_raw(store, &uncommitted).await.is_some(),
        "uncommitted file deleted"
    );

    let deleted = store
        .apply_retention(run_id, 1, &[20, 60])
        .await
        .expect("retention");
    assert_eq!(deleted, vec![50]);

    let error = store.apply_retention(run_id, 0, &[]).await.unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRetention { keep: 0 }),
        "{error:?}"
    );

    let deleted = store
        .apply_retention(run_id, 1, &[])
        .await
        .expect("retention");
    assert_eq!(deleted, vec![20]);
    let steps = store
        .committed_steps(run_id)
        .await
        .expect("committed steps");
    assert_eq!(steps, vec![60], "the newest checkpoint must survive");

    let deleted = store
        .apply_retention(run_id, 1, &[])
        .await
        .expect("retention");
    assert_eq!(deleted, Vec::<u64>::new());
    let latest = store.load_latest(run_id).await.expect("load latest");
    assert_eq!(latest.map(|loaded| loaded.step), Some(60));
}

async fn put_sample_returns_object_url(store: &Store) {
    let png = patterned_bytes(2048, 14);
    let url = store
        .put_sample(SAMPLE_RUN, 100, png.clone())
        .await
        .expect("put sample");
    let expected_key = format!("runs/{SAMPLE_RUN}/samples/0000000100.png");
    assert_eq!(url, join_url(store.url(), &expected_key));
    let stored = get_raw(store, &store.layout.sample(SAMPLE_RUN, 100)).await;
    assert_eq!(stored, Some(png));
}

async fn invalid_commits_write_nothing(store: &Store) {
    let run_id = REJECTED_RUN;
    let good = || checkpoint_file("g.bin", Bytes::from_static(b"g"));
    let cases = [
        vec![
            good(),
            checkpoint_file("MANIFEST.json", Bytes::from_static(b"{}")),
        ],
        vec![
            good(),
            checkpoint_file("sub/d.bin", Bytes::from_static(b"d")),
        ],
        vec![good(), good()],
    ];
    for files in cases {
        let error = store.commit_checkpoint(run_id, 1, files).await.unwrap_err();
        assert!(
            matches!(error, StoreError::InvalidFileName { .. }),
            "{error:?}"
        );
    }
    let error = store
        .commit_checkpoint("../x", 1, vec![good()])
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::InvalidRunId { .. }),
        "{error:?}"
    );

    let written = list_raw(store, &store.layout.runs().join(run_id)).await;
    assert_eq!(
        written,
        Vec::<String>::new(),
        "a rejected commit wrote objects"
    );
}
