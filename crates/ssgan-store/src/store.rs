//! [`Store`] and the object reads and writes shared by its checkpoint and run operations.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::StoreError;
use crate::layout::{Layout, step_dir_name};
use crate::url::{OpenedRoot, join_url, open_root};

/// Size of one multipart upload part. Files up to this size are written with a single put.
/// Amazon S3 requires parts of at least 5 MiB, except the last, and allows 10,000 parts per
/// upload (S3 user guide, "Amazon S3 multipart upload limits"), so 16 MiB parts cover files
/// up to 156.25 GiB.
pub(crate) const MULTIPART_PART_SIZE: usize = 16 * 1024 * 1024;

/// Maximum number of parts of one file uploaded at the same time.
const MULTIPART_PARTS_IN_FLIGHT: usize = 4;

/// Checkpoints, samples and run records under one root URL of an object store.
///
/// Cloning is cheap and clones share the underlying object store client.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) object_store: Arc<dyn ObjectStore>,
    pub(crate) layout: Layout,
    url: String,
}

impl Store {
    /// Opens the store rooted at `url`.
    ///
    /// `url` is one of:
    /// - a string without `://`, which is a plain local path, relative or absolute, and is
    ///   created if missing;
    /// - `file:///absolute/path`, also created if missing;
    /// - `s3://bucket/prefix`, `s3a://bucket/prefix`, or an `https://` URL of an AWS S3 or
    ///   Cloudflare R2 host;
    /// - `gs://bucket/prefix`;
    /// - `az://container/prefix`, the `adl`, `azure`, `abfs` and `abfss` schemes, or an
    ///   `https://` URL of an Azure Blob Storage or Data Lake host;
    /// - `memory://` or `memory:///prefix`, a new empty in-memory store for tests.
    ///
    /// Cloud stores take credentials, region and endpoint from the environment through
    /// `AmazonS3Builder::from_env`, `GoogleCloudStorageBuilder::from_env` and
    /// `MicrosoftAzureBuilder::from_env` (for example `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT`,
    /// `AWS_ALLOW_HTTP`). Opening sends no request, so a wrong credential or bucket shows up
    /// on the first operation.
    ///
    /// # S3 and create-only writes
    ///
    /// Committing a checkpoint writes its manifest with `PutMode::Create`. object_store 0.14
    /// sends that to S3 as a PutObject with `If-None-Match: *`, which AWS S3 honours (S3 user
    /// guide, "How to prevent object overwrites with conditional writes"), and so does the
    /// s3s-fs 0.14.1 test server. Leave `AWS_CONDITIONAL_PUT` unset or set it to `etag`.
    /// With `AWS_CONDITIONAL_PUT=disabled`, every commit fails with
    /// [`StoreError::CreateOnlyPutUnsupported`]. A server that ignores the header overwrites
    /// silently, so a repeated commit is then caught only by the manifest existence check
    /// that runs before any file is uploaded, and two concurrent commits of one step are not
    /// caught at all.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let opened = open_root(url)?;
        tracing::debug!(url = %opened.url, store = %opened.object_store, "opened store");
        Ok(Self::from_opened(opened))
    }

    pub(crate) fn from_opened(opened: OpenedRoot) -> Self {
        Self {
            object_store: opened.object_store,
            layout: Layout::new(opened.root),
            url: opened.url,
        }
    }

    /// Returns the root URL as given to [`Store::open`], normalised: a plain path becomes its
    /// canonical absolute path, and trailing slashes are removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the URL of a checkpoint directory, which
    /// [`parse_checkpoint_url`](crate::parse_checkpoint_url) splits back into its parts.
    /// The run id is not validated here.
    pub fn checkpoint_url(&self, run_id: &str, step: u64) -> String {
        let key = format!("runs/{run_id}/checkpoints/{}", step_dir_name(step));
        join_url(&self.url, &key)
    }

    /// Returns the user-facing URL of an object path under this store's root.
    pub(crate) fn object_url(&self, location: &Path) -> String {
        let key = match location.prefix_match(self.layout.root()) {
            Some(parts) => parts
                .map(|part| part.as_ref().to_owned())
                .collect::<Vec<_>>()
                .join("/"),
            None => location.to_string(),
        };
        join_url(&self.url, &key)
    }

    pub(crate) fn backend_error(
        &self,
        operation: &'static str,
        location: &Path,
        source: object_store::Error,
    ) -> StoreError {
        StoreError::ObjectStore {
            operation,
            url: self.object_url(location),
            source,
        }
    }

    /// Reads a whole object, returning `None` if it does not exist.
    pub(crate) async fn read_optional(&self, location: &Path) -> Result<Option<Bytes>, StoreError> {
        let read = async { self.object_store.get(location).await?.bytes().await };
        match read.await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(self.backend_error("read", location, source)),
        }
    }

    /// Writes an object, replacing any existing one. Payloads larger than one part are sent
    /// as a multipart upload.
    pub(crate) async fn write(&self, location: &Path, bytes: Bytes) -> Result<(), StoreError> {
        tracing::trace!(location = %location, size = bytes.len(), "writing object");
        let written = if bytes.len() <= MULTIPART_PART_SIZE {
            let payload = PutPayload::from_bytes(bytes);
            self.object_store.put(location, payload).await.map(drop)
        } else {
            self.write_multipart(location, bytes).await
        };
        written.map_err(|source| self.backend_error("write", location, source))
    }

    async fn write_multipart(&self, location: &Path, bytes: Bytes) -> object_store::Result<()> {
        let upload = self.object_store.put_multipart(location).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, MULTIPART_PART_SIZE);
        for start in (0..bytes.len()).step_by(MULTIPART_PART_SIZE) {
            if let Err(error) = writer.wait_for_capacity(MULTIPART_PARTS_IN_FLIGHT).await {
                abort_multipart(writer, location).await;
                return Err(error);
            }
            let end = (start + MULTIPART_PART_SIZE).min(bytes.len());
            writer.put(bytes.slice(start..end));
        }
        // finish() aborts the upload itself when a part or the completion fails.
        writer.finish().await.map(drop)
    }

    /// Deletes an object, treating a missing object as already deleted.
    pub(crate) async fn delete_if_exists(&self, location: &Path) -> Result<(), StoreError> {
        match self.object_store.delete(location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(self.backend_error("delete", location, source)),
        }
    }

    /// Deletes every object under `prefix`.
    pub(crate) async fn delete_prefix(&self, prefix: &Path) -> Result<(), StoreError> {
        let locations = self
            .object_store
            .list(Some(prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        let mut deleted = self.object_store.delete_stream(locations);
        loop {
            match deleted.try_next().await {
                Ok(Some(location)) => tracing::trace!(location = %location, "deleted object"),
                Ok(None) => return Ok(()),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(source) => {
                    return Err(self.backend_error("delete objects under", prefix, source));
                }
            }
        }
    }
}

/// Aborts a multipart upload after a failed part. The part's error is what the caller
/// returns, so an abort failure is only logged.
async fn abort_multipart(writer: WriteMultipart, location: &Path) {
    if let Err(error) = writer.abort().await {
        tracing::debug!(location = %location, %error, "failed to abort multipart upload");
    }
}
