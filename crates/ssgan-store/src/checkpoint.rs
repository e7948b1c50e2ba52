//! Committing, listing, loading and deleting checkpoints.
//!
//! A checkpoint is committed when its `MANIFEST.json` exists. The manifest is written last,
//! with a create-only put, so a crash during upload leaves a step directory without a
//! manifest, which every reader ignores.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use crate::layout::{Layout, MANIFEST_FILE_NAME, validate_file_name, validate_run_id};
use crate::manifest::{CheckpointFile, Manifest, ManifestEntry, sha256_hex};
use crate::{Store, StoreError};

/// Maximum number of checkpoint files uploaded or downloaded at the same time.
const FILE_TRANSFERS_IN_FLIGHT: usize = 4;

/// A checkpoint whose files all matched the sizes and SHA-256 digests in its manifest.
#[derive(Clone, Debug)]
pub struct LoadedCheckpoint {
    pub step: u64,
    pub manifest: Manifest,
    /// File contents by file name.
    pub files: BTreeMap<String, Bytes>,
}

impl LoadedCheckpoint {
    /// Returns the contents of the file `name`. The error names the file, the checkpoint and
    /// the files it does contain.
    pub fn file(&self, name: &str) -> Result<&Bytes, StoreError> {
        self.files
            .get(name)
            .ok_or_else(|| StoreError::FileNotInCheckpoint {
                run_id: self.manifest.run_id.clone(),
                step: self.step,
                name: name.to_owned(),
                available: self.files.keys().cloned().collect(),
            })
    }
}

impl Store {
    /// Uploads the files of a checkpoint, then commits it by writing `MANIFEST.json` with a
    /// create-only put.
    ///
    /// Rejects a file named `MANIFEST.json`, a name with `/` or another character outside
    /// `[A-Za-z0-9._-]`, and a name passed twice. Returns [`StoreError::AlreadyCommitted`]
    /// without writing anything when the step already has a manifest, because that check runs
    /// before the first upload. If another writer commits the same step between that check and
    /// the manifest write, this call still returns `AlreadyCommitted`, but its uploads may
    /// already have replaced the other writer's files, which then fail verification on load.
    pub async fn commit_checkpoint(
        &self,
        run_id: &str,
        step: u64,
        files: Vec<CheckpointFile>,
    ) -> Result<Manifest, StoreError> {
        validate_run_id(run_id)?;
        validate_checkpoint_files(&files)?;
        self.ensure_not_committed(run_id, step).await?;

        let entries = self.upload_checkpoint_files(run_id, step, &files).await?;
        let manifest = Manifest::new(run_id, step, entries);
        self.create_manifest(&manifest).await?;
        tracing::debug!(run_id, step, files = files.len(), "committed checkpoint");
        Ok(manifest)
    }

    /// Lists the committed steps of a run in ascending order: the step directories that
    /// contain a `MANIFEST.json`. An unknown run has none.
    pub async fn committed_steps(&self, run_id: &str) -> Result<Vec<u64>, StoreError> {
        validate_run_id(run_id)?;
        let checkpoints = self.layout.checkpoints(run_id);
        let objects: Vec<_> = self
            .object_store
            .list(Some(&checkpoints))
            .try_collect()
            .await
            .map_err(|source| self.backend_error("list", &checkpoints, source))?;

        let steps: BTreeSet<u64> = objects
            .iter()
            .filter_map(|meta| Layout::manifest_step(&checkpoints, &meta.location))
            .collect();
        Ok(steps.into_iter().collect())
    }

    /// Reads a checkpoint's manifest and then every file it lists, and verifies each file's
    /// size and SHA-256 digest.
    ///
    /// Fails with [`StoreError::CheckpointNotFound`] when the step has no manifest, and with
    /// [`StoreError::FileMissing`], [`StoreError::FileSizeMismatch`] or
    /// [`StoreError::FileHashMismatch`] naming the first file that fails.
    pub async fn load_checkpoint(
        &self,
        run_id: &str,
        step: u64,
    ) -> Result<LoadedCheckpoint, StoreError> {
        validate_run_id(run_id)?;
        let manifest = self.read_manifest(run_id, step).await?;
        // The futures are collected before streaming them, because a stream `map` closure
        // over borrowed entries makes the whole future fail the `Send` check of
        // `tokio::spawn`.
        let reads: Vec<_> = manifest
            .files
            .iter()
            .map(|entry| self.read_verified_file(run_id, step, entry))
            .collect();
        let loaded: Vec<(String, Bytes)> = futures::stream::iter(reads)
            .buffered(FILE_TRANSFERS_IN_FLIGHT)
            .try_collect()
            .await?;

        tracing::debug!(run_id, step, files = loaded.len(), "loaded checkpoint");
        Ok(LoadedCheckpoint {
            step,
            manifest,
            files: loaded.into_iter().collect(),
        })
    }

    /// Loads the newest committed checkpoint that passes verification.
    ///
    /// Each newer step that fails verification is logged as a warning with the run, step,
    /// file and reason, and the previous step is tried. Returns `Ok(None)` when the run has no
    /// committed checkpoint and [`StoreError::NoVerifiedCheckpoint`], listing every failure,
    /// when none verifies. Other errors, such as a failed connection, are returned at once
    /// without trying older steps.
    pub async fn load_latest(&self, run_id: &str) -> Result<Option<LoadedCheckpoint>, StoreError> {
        let steps = self.committed_steps(run_id).await?;
        if steps.is_empty() {
            return Ok(None);
        }

        let mut failures = Vec::new();
        for &step in steps.iter().rev() {
            match self.load_checkpoint(run_id, step).await {
                Ok(loaded) => return Ok(Some(loaded)),
                Err(error) if error.is_verification_failure() => {
                    warn_fallback(run_id, step, &error);
                    failures.push(format!("step {step}: {error}"));
                }
                Err(error) => return Err(error),
            }
        }
        Err(StoreError::NoVerifiedCheckpoint {
            run_id: run_id.to_owned(),
            failures,
        })
    }

    /// Deletes the committed checkpoints older than the newest `keep`, except the steps in
    /// `protect`, and returns the deleted steps in ascending order.
    ///
    /// `keep` must be at least 1, so the newest committed checkpoint is never deleted. Each
    /// checkpoint loses its manifest first and then its files, so a deletion that stops
    /// halfway leaves an uncommitted directory rather than a damaged checkpoint. Step
    /// directories without a manifest are left alone, because a commit may still be writing
    /// them.
    pub async fn apply_retention(
        &self,
        run_id: &str,
        keep: usize,
        protect: &[u64],
    ) -> Result<Vec<u64>, StoreError> {
        validate_run_id(run_id)?;
        if keep == 0 {
            return Err(StoreError::InvalidRetention { keep });
        }
        let steps = self.committed_steps(run_id).await?;
        let expired = select_expired_steps(&steps, keep, protect);
        for &step in &expired {
            self.delete_checkpoint(run_id, step).await?;
        }
        Ok(expired)
    }

    async fn ensure_not_committed(&self, run_id: &str, step: u64) -> Result<(), StoreError> {
        let manifest = self.layout.manifest(run_id, step);
        match self.object_store.head(&manifest).await {
            Ok(_) => Err(already_committed(run_id, step)),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.backend_error("check", &manifest, source)),
        }
    }

    async fn upload_checkpoint_files(
        &self,
        run_id: &str,
        step: u64,
        files: &[CheckpointFile],
    ) -> Result<Vec<ManifestEntry>, StoreError> {
        // Collected first for the same `Send` reason as in `load_checkpoint`.
        let uploads: Vec<_> = files
            .iter()
            .map(|file| self.upload_checkpoint_file(run_id, step, file))
            .collect();
        futures::stream::iter(uploads)
            .buffered(FILE_TRANSFERS_IN_FLIGHT)
            .try_collect()
            .await
    }

    async fn upload_checkpoint_file(
        &self,
        run_id: &str,
        step: u64,
        file: &CheckpointFile,
    ) -> Result<ManifestEntry, StoreError> {
        let entry = ManifestEntry::describe(&file.name, &file.bytes);
        let location = self.layout.checkpoint_file(run_id, step, &file.name);
        self.write(&location, file.bytes.clone()).await?;
        Ok(entry)
    }

    pub(crate) async fn create_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let (run_id, step) = (manifest.run_id.as_str(), manifest.step);
        let location = self.layout.manifest(run_id, step);
        let payload = PutPayload::from_bytes(manifest.to_json()?);
        let put = self
            .object_store
            .put_opts(&location, payload, PutMode::Create.into())
            .await;
        match put {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::debug!(run_id, step, "another writer committed the step first");
                Err(already_committed(run_id, step))
            }
            Err(
                source @ (object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. }),
            ) => Err(StoreError::CreateOnlyPutUnsupported {
                url: self.url().to_owned(),
                source,
            }),
            Err(source) => Err(self.backend_error("write", &location, source)),
        }
    }

    async fn read_manifest(&self, run_id: &str, step: u64) -> Result<Manifest, StoreError> {
        let location = self.layout.manifest(run_id, step);
        let Some(json) = self.read_optional(&location).await? else {
            return Err(StoreError::CheckpointNotFound {
                run_id: run_id.to_owned(),
                step,
                url: self.checkpoint_url(run_id, step),
            });
        };
        Manifest::from_json(&json, run_id, step, &self.object_url(&location))
    }

    async fn read_verified_file(
        &self,
        run_id: &str,
        step: u64,
        entry: &ManifestEntry,
    ) -> Result<(String, Bytes), StoreError> {
        let location = self.layout.checkpoint_file(run_id, step, &entry.name);
        let Some(bytes) = self.read_optional(&location).await? else {
            return Err(StoreError::FileMissing {
                run_id: run_id.to_owned(),
                step,
                file: entry.name.clone(),
                url: self.object_url(&location),
            });
        };
        verify_file(run_id, step, entry, &bytes)?;
        Ok((entry.name.clone(), bytes))
    }

    async fn delete_checkpoint(&self, run_id: &str, step: u64) -> Result<(), StoreError> {
        self.delete_if_exists(&self.layout.manifest(run_id, step))
            .await?;
        self.delete_prefix(&self.layout.checkpoint_dir(run_id, step))
            .await?;
        tracing::debug!(run_id, step, "deleted checkpoint");
        Ok(())
    }
}

fn validate_checkpoint_files(files: &[CheckpointFile]) -> Result<(), StoreError> {
    let mut seen = BTreeSet::new();
    for file in files {
        validate_file_name(&file.name)?;
        if !seen.insert(file.name.as_str()) {
            return Err(StoreError::InvalidFileName {
                name: file.name.clone(),
                reason: "it is passed twice, but each file of a checkpoint needs a distinct name"
                    .to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks size first, because it is cheaper than hashing and names the likelier cause of a
/// truncated upload.
fn verify_file(
    run_id: &str,
    step: u64,
    entry: &ManifestEntry,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let size = bytes.len() as u64;
    if size != entry.size {
        return Err(StoreError::FileSizeMismatch {
            run_id: run_id.to_owned(),
            step,
            file: entry.name.clone(),
            expected: entry.size,
            actual: size,
        });
    }
    let digest = sha256_hex(bytes);
    if digest != entry.sha256 {
        return Err(StoreError::FileHashMismatch {
            run_id: run_id.to_owned(),
            step,
            file: entry.name.clone(),
            expected: entry.sha256.clone(),
            actual: digest,
        });
    }
    Ok(())
}

/// Returns the steps beyond the newest `keep` that are not protected, in ascending order.
/// `steps` is ascending.
fn select_expired_steps(steps: &[u64], keep: usize, protect: &[u64]) -> Vec<u64> {
    let expired_count = steps.len().saturating_sub(keep);
    steps[..expired_count]
        .iter()
        .copied()
        .filter(|step| !protect.contains(step))
        .collect()
}

fn already_committed(run_id: &str, step: u64) -> StoreError {
    StoreError::AlreadyCommitted {
        run_id: run_id.to_owned(),
        step,
    }
}

fn warn_fallback(run_id: &str, step: u64, error: &StoreError) {
    tracing::warn!(
        run_id,
        step,
        file = error.failed_file().unwrap_or(MANIFEST_FILE_NAME),
        reason = %error,
        "checkpoint failed verification, trying the previous committed step"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_expired_steps_keeps_newest_and_protected() {
        let steps = [10, 20, 30, 40, 50, 60];
        assert_eq!(select_expired_steps(&steps, 2, &[20]), vec![10, 30, 40]);
        assert_eq!(
            select_expired_steps(&steps, 1, &[]),
            vec![10, 20, 30, 40, 50]
        );
        assert_eq!(select_expired_steps(&steps, 6, &[]), Vec::<u64>::new());
        assert_eq!(select_expired_steps(&steps, 100, &[]), Vec::<u64>::new());
        assert_eq!(
            select_expired_steps(&steps, 1, &[60]),
            vec![10, 20, 30, 40, 50]
        );
        assert_eq!(select_expired_steps(&[], 1, &[]), Vec::<u64>::new());
    }

    #[test]
    fn verify_file_reports_size_before_hash() {
        let entry = ManifestEntry::describe("g.bin", b"abcd");
        let error = verify_file("r", 3, &entry, b"abc").unwrap_err();
        assert!(matches!(
            error,
            StoreError::FileSizeMismatch {
                expected: 4,
                actual: 3,
                ..
            }
        ));
        let error = verify_file("r", 3, &entry, b"abce").unwrap_err();
        assert!(matches!(error, StoreError::FileHashMismatch { .. }));
        assert!(verify_file("r", 3, &entry, b"abcd").is_ok());
    }

    #[test]
    fn validate_checkpoint_files_rejects_duplicates() {
        let file = CheckpointFile {
            name: "a.bin".to_owned(),
            bytes: Bytes::from_static(b"x"),
        };
        let error = validate_checkpoint_files(&[file.clone(), file]).unwrap_err();
        assert!(error.to_string().contains("passed twice"), "{error}");
    }
}
