//! Storage URLs: opening the object store behind one, joining object keys onto it, and
//! splitting checkpoint URLs.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::ObjectStoreScheme;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use url::{Position, Url};

use crate::StoreError;
use crate::layout::validate_run_id;

/// An opened object store, the root path inside it and the normalised root URL.
pub(crate) struct OpenedRoot {
    pub(crate) object_store: Arc<dyn ObjectStore>,
    pub(crate) root: Path,
    pub(crate) url: String,
}

/// Opens the object store named by `url`, which is a plain local path unless it contains
/// `://`.
pub(crate) fn open_root(url: &str) -> Result<OpenedRoot, StoreError> {
    if url.trim().is_empty() {
        return Err(invalid_url(url, "it is empty. Pass a local path or a URL"));
    }
    if !url.contains("://") {
        return open_local_path(url);
    }

    let parsed = Url::parse(url).map_err(|error| invalid_url(url, &error.to_string()))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid_url(
            url,
            "query strings and fragments are not supported, so remove the part from '?' or '#'",
        ));
    }
    match parsed.scheme() {
        "file" => open_file_url(url, &parsed),
        "memory" => open_memory_url(url, &parsed),
        _ => open_cloud_url(url, &parsed),
    }
}

/// Creates the directory if missing and roots a [`LocalFileSystem`] there. The normalised URL
/// is the canonical absolute path.
fn open_local_path(path: &str) -> Result<OpenedRoot, StoreError> {
    let directory = create_directory(path, std::path::Path::new(path))?;
    let display = directory.to_str().ok_or_else(|| {
        invalid_url(
            path,
            "the absolute path is not valid UTF-8. Use a UTF-8 path",
        )
    })?;
    let url = display.to_owned();
    open_local_directory(path, &directory, url)
}

fn open_file_url(url: &str, parsed: &Url) -> Result<OpenedRoot, StoreError> {
    let path = parsed.to_file_path().map_err(|()| {
        invalid_url(
            url,
            "it is not an absolute local path. Use file:///absolute/path",
        )
    })?;
    let directory = create_directory(url, &path)?;
    open_local_directory(url, &directory, normalise_url(parsed))
}

/// Creates `path` and its parents, and returns its canonical form.
fn create_directory(url: &str, path: &std::path::Path) -> Result<std::path::PathBuf, StoreError> {
    std::fs::create_dir_all(path)
        .and_then(|()| std::fs::canonicalize(path))
        .map_err(|error| invalid_url(url, &format!("failed to create the directory: {error}")))
}

fn open_local_directory(
    url: &str,
    directory: &std::path::Path,
    normalised: String,
) -> Result<OpenedRoot, StoreError> {
    // Automatic cleanup removes directories left empty by deletes, so that a local store
    // lists the same run directories as an object store would.
    let local = LocalFileSystem::new_with_prefix(directory)
        .map_err(|error| invalid_url(url, &error.to_string()))?
        .with_automatic_cleanup(true);
    Ok(OpenedRoot {
        object_store: Arc::new(local),
        root: Path::default(),
        url: normalised,
    })
}

/// Opens a new, empty [`InMemory`] store. Two opens of the same URL do not share data.
fn open_memory_url(url: &str, parsed: &Url) -> Result<OpenedRoot, StoreError> {
    if parsed.host_str().is_some_and(|host| !host.is_empty()) {
        return Err(invalid_url(
            url,
            "memory URLs take no host. Use memory:// or memory:///prefix",
        ));
    }
    Ok(OpenedRoot {
        object_store: Arc::new(InMemory::new()),
        root: parse_root_path(url, parsed.path())?,
        url: normalise_url(parsed),
    })
}

/// Opens S3, Google Cloud Storage or Azure, with credentials and endpoint read from the
/// environment by each builder's `from_env`.
fn open_cloud_url(url: &str, parsed: &Url) -> Result<OpenedRoot, StoreError> {
    let (scheme, root) =
        ObjectStoreScheme::parse(parsed).map_err(|error| unsupported_scheme(url, &error))?;
    let built = match scheme {
        ObjectStoreScheme::AmazonS3 => s3_builder(parsed)
            .build()
            .map(|store| Arc::new(store) as Arc<dyn ObjectStore>),
        ObjectStoreScheme::GoogleCloudStorage => GoogleCloudStorageBuilder::from_env()
            .with_url(parsed.as_str())
            .build()
            .map(|store| Arc::new(store) as Arc<dyn ObjectStore>),
        ObjectStoreScheme::MicrosoftAzure => MicrosoftAzureBuilder::from_env()
            .with_url(parsed.as_str())
            .build()
            .map(|store| Arc::new(store) as Arc<dyn ObjectStore>),
        _ => return Err(unsupported_scheme(url, &parsed.scheme())),
    };
    let object_store = built.map_err(|error| {
        invalid_url(
            url,
            &format!("failed to configure the object store: {error}"),
        )
    })?;
    Ok(OpenedRoot {
        object_store,
        root,
        url: normalise_url(parsed),
    })
}

/// Returns an S3 builder configured from the `AWS_*` environment variables and `url`.
///
/// The builder keeps object_store's default `S3ConditionalPut::ETagMatch` unless
/// `AWS_CONDITIONAL_PUT` overrides it. `Store::open` documents why checkpoint commits need it.
pub(crate) fn s3_builder(url: &Url) -> AmazonS3Builder {
    AmazonS3Builder::from_env().with_url(url.as_str())
}

fn unsupported_scheme(url: &str, detail: &dyn std::fmt::Display) -> StoreError {
    invalid_url(
        url,
        &format!(
            "unsupported scheme ({detail}). Use a local path, file://, memory://, s3://, \
             s3a://, gs://, az://, adl://, azure://, abfs:// or abfss://"
        ),
    )
}

fn parse_root_path(url: &str, path: &str) -> Result<Path, StoreError> {
    Path::from_url_path(path).map_err(|error| invalid_url(url, &error.to_string()))
}

/// Serialises `url` without trailing slashes, keeping a bare `/` path as it is.
fn normalise_url(url: &Url) -> String {
    let path = url.path();
    let trimmed = path.trim_end_matches('/');
    let path = if trimmed.is_empty() && !path.is_empty() {
        "/"
    } else {
        trimmed
    };
    format!("{}{path}", &url[..Position::BeforePath])
}

/// Appends a relative object key to a normalised root URL or path.
///
/// A root with an empty URL path, such as `memory://`, gets a slash so that the key is not
/// read as the URL's host.
pub(crate) fn join_url(root: &str, key: &str) -> String {
    if root.ends_with('/') && !root.ends_with("://") {
        format!("{root}{key}")
    } else {
        format!("{root}/{key}")
    }
}

fn invalid_url(url: &str, reason: &str) -> StoreError {
    StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Splits a checkpoint URL into (storage root URL, run id, step).
///
/// Accepts `<root>/runs/<run_id>/checkpoints/<step>`, which returns `Some(step)`, and
/// `<root>/runs/<run_id>`, which returns `None` to mean the latest checkpoint. `<root>` is a
/// local path or a URL that [`Store::open`](crate::Store::open) accepts. A step may be
/// zero-padded or not. A trailing slash is ignored.
pub fn parse_checkpoint_url(url: &str) -> Result<(String, String, Option<u64>), StoreError> {
    let invalid = || StoreError::InvalidCheckpointUrl {
        url: url.to_owned(),
    };
    if !url.contains("://") {
        return split_local_checkpoint_path(url).ok_or_else(invalid);
    }

    let parsed = Url::parse(url).map_err(|_| invalid())?;
    let segments: Vec<&str> = parsed.path().split('/').filter(|s| !s.is_empty()).collect();
    let (root_len, run_id, step) = split_checkpoint_segments(&segments).ok_or_else(invalid)?;
    let root_path = match (root_len, parsed.scheme()) {
        (0, "file") => "/".to_owned(),
        (0, _) => String::new(),
        _ => format!("/{}", segments[..root_len].join("/")),
    };
    let root = format!("{}{root_path}", &parsed[..Position::BeforePath]);
    Ok((root, run_id, step))
}

fn split_local_checkpoint_path(path: &str) -> Option<(String, String, Option<u64>)> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (root_len, run_id, step) = split_checkpoint_segments(&segments)?;
    let absolute = path.starts_with('/');
    let root = match (root_len, absolute) {
        (0, true) => "/".to_owned(),
        (0, false) => ".".to_owned(),
        (_, true) => format!("/{}", segments[..root_len].join("/")),
        (_, false) => segments[..root_len].join("/"),
    };
    Some((root, run_id, step))
}

/// Matches the path segments against `.../runs/<id>/checkpoints/<step>` and `.../runs/<id>`,
/// returning the number of root segments, the run id and the step.
fn split_checkpoint_segments(segments: &[&str]) -> Option<(usize, String, Option<u64>)> {
    let (root_len, run_id, step) = match segments {
        [root @ .., "runs", run_id, "checkpoints", step] => {
            (root.len(), *run_id, Some(parse_step(step)?))
        }
        [root @ .., "runs", run_id] => (root.len(), *run_id, None),
        _ => return None,
    };
    validate_run_id(run_id).ok()?;
    Some((root_len, run_id.to_owned(), step))
}

fn parse_step(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, String, Option<u64>) {
        parse_checkpoint_url(url).unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    fn owned(root: &str, run_id: &str, step: Option<u64>) -> (String, String, Option<u64>) {
        (root.to_owned(), run_id.to_owned(), step)
    }

    #[test]
    fn parse_checkpoint_url_accepts_paths_and_urls() {
        let cases = [
            (
                "/data/ckpt/runs/r1/checkpoints/0000000100",
                owned("/data/ckpt", "r1", Some(100)),
            ),
            (
                "/data/ckpt/runs/r1/checkpoints/100/",
                owned("/data/ckpt", "r1", Some(100)),
            ),
            ("/data/ckpt/runs/r1", owned("/data/ckpt", "r1", None)),
            ("ckpt/runs/r1/", owned("ckpt", "r1", None)),
            ("runs/r1/checkpoints/5", owned(".", "r1", Some(5))),
            ("/runs/r1", owned("/", "r1", None)),
            (
                "s3://bucket/prefix/runs/r-1/checkpoints/0000000042",
                owned("s3://bucket/prefix", "r-1", Some(42)),
            ),
            ("s3://bucket/runs/r.2", owned("s3://bucket", "r.2", None)),
            ("gs://b/a/b/runs/x", owned("gs://b/a/b", "x", None)),
            (
                "file:///tmp/store/runs/r/checkpoints/0000000001",
                owned("file:///tmp/store", "r", Some(1)),
            ),
            ("file:///runs/r", owned("file:///", "r", None)),
            ("memory:///runs/r", owned("memory://", "r", None)),
            // A run may be named "runs" or "checkpoints", and the last match wins.
            ("/a/runs/runs/checkpoints/7", owned("/a", "runs", Some(7))),
        ];
        for (url, expected) in cases {
            assert_eq!(split(url), expected, "{url}");
        }
    }

    #[test]
    fn parse_checkpoint_url_rejects_other_forms() {
        let cases = [
            "",
            "/data/ckpt",
            "/data/ckpt/runs",
            "/data/ckpt/runs/r1/checkpoints",
            "/data/ckpt/runs/r1/checkpoints/abc",
            "/data/ckpt/runs/r1/checkpoints/+5",
            "/data/ckpt/runs/r1/checkpoints/100/g.bin",
            "/data/ckpt/runs/.hidden",
            "s3://runs/r1",
            "s3://bucket/runs/bad%20id",
            "/data/runs/r1/samples/0000000100.png",
        ];
        for url in cases {
            let error = parse_checkpoint_url(url).expect_err(url);
            assert!(
                matches!(&error, StoreError::InvalidCheckpointUrl { url: named } if named == url),
                "unexpected error for {url:?}: {error:?}"
            );
            assert!(
                error
                    .to_string()
                    .contains("<root>/runs/<run_id>/checkpoints/<step>"),
                "{error}"
            );
        }
    }

    #[test]
    fn normalise_url_trims_trailing_slashes() {
        let cases = [
            ("s3://bucket/prefix/", "s3://bucket/prefix"),
            ("s3://bucket/", "s3://bucket/"),
            ("s3://bucket", "s3://bucket"),
            ("file:///tmp/x//", "file:///tmp/x"),
            ("file:///", "file:///"),
            ("memory://", "memory://"),
        ];
        for (input, expected) in cases {
            let parsed = Url::parse(input).unwrap();
            assert_eq!(normalise_url(&parsed), expected, "{input}");
        }
    }

    #[test]
    fn join_url_inserts_one_slash() {
        assert_eq!(join_url("s3://b/p", "runs/x"), "s3://b/p/runs/x");
        assert_eq!(join_url("s3://b/", "runs/x"), "s3://b/runs/x");
        assert_eq!(join_url("memory://", "runs/x"), "memory:///runs/x");
        assert_eq!(join_url("file:///", "runs/x"), "file:///runs/x");
        assert_eq!(join_url("/", "runs/x"), "/runs/x");
    }
}
