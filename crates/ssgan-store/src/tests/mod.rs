//! Tests against real backends: a local directory, the in-memory store and, when configured,
//! an S3 server.

mod backends;
mod blocking_store;
mod conformance;
mod open_urls;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::{CheckpointFile, RunRecord, RunState, Store};

pub(crate) fn checkpoint_file(name: &str, bytes: impl Into<Bytes>) -> CheckpointFile {
    CheckpointFile {
        name: name.to_owned(),
        bytes: bytes.into(),
    }
}

/// Returns a pending run record with fixed timestamps.
pub(crate) fn run_record(run_id: &str) -> RunRecord {
    RunRecord {
        run_id: run_id.to_owned(),
        state: RunState::Pending,
        config_toml: "[train]\nsteps = 1000\n".to_owned(),
        attempts: 0,
        latest_step: None,
        best_step: None,
        target_steps: 1000,
        created_unix_ms: 1_700_000_000_000,
        updated_unix_ms: 1_700_000_000_000,
        ..RunRecord::default()
    }
}

/// Returns `len` bytes that differ between seeds and are not all equal.
pub(crate) fn patterned_bytes(len: usize, seed: u8) -> Bytes {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    Bytes::from(bytes)
}

/// Writes an object directly through object_store, bypassing the checks of [`Store`].
pub(crate) async fn put_raw(store: &Store, location: &Path, bytes: impl Into<Bytes>) {
    let payload = PutPayload::from_bytes(bytes.into());
    store
        .object_store
        .put(location, payload)
        .await
        .unwrap_or_else(|error| panic!("raw put of {location} failed: {error}"));
}

/// Reads an object directly through object_store, returning `None` if it does not exist.
pub(crate) async fn get_raw(store: &Store, location: &Path) -> Option<Bytes> {
    match store.object_store.get(location).await {
        Ok(result) => Some(result.bytes().await.expect("read object body")),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(error) => panic!("raw get of {location} failed: {error}"),
    }
}

/// Deletes an object directly through object_store.
pub(crate) async fn delete_raw(store: &Store, location: &Path) {
    store
        .object_store
        .delete(location)
        .await
        .unwrap_or_else(|error| panic!("raw delete of {location} failed: {error}"));
}

/// Lists the object paths under `prefix`, sorted.
pub(crate) async fn list_raw(store: &Store, prefix: &Path) -> Vec<String> {
    use futures::TryStreamExt;

    let objects: Vec<_> = store
        .object_store
        .list(Some(prefix))
        .try_collect()
        .await
        .unwrap_or_else(|error| panic!("raw list of {prefix} failed: {error}"));
    let mut paths: Vec<String> = objects
        .into_iter()
        .map(|meta| meta.location.to_string())
        .collect();
    paths.sort();
    paths
}
