//! Finding the FID Inception weights: a local path, or a URL downloaded once into a cache
//! directory.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use ssgan_fid::{WEIGHTS_FILE_NAME, WEIGHTS_URL};
use ssgan_store::StoreError;

/// Environment variable that overrides the cache directory of downloaded weights.
pub const CACHE_DIR_VARIABLE: &str = "SSGAN_CACHE_DIR";

/// Failures of [`resolve_inception_weights`].
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(
        "the FID Inception weights {path} are missing. Download {WEIGHTS_FILE_NAME} from \
         {WEIGHTS_URL}, put it anywhere (for example ~/.cache/ssgan/) and pass its path, or \
         pass the URL itself to download it once into the cache"
    )]
    Missing { path: PathBuf },
    #[error("failed to download the FID Inception weights from {url}: {source}")]
    Download {
        url: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(
        "the FID Inception weights downloaded from {url} have SHA-256 {actual}, but the file \
         name promises a digest starting with {expected}. The download is corrupt or the file \
         was replaced; nothing was cached, so check the URL and try again"
    )]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error(
        "cannot write the weights cache {path}: {source}. Set {CACHE_DIR_VARIABLE} to a \
         writable directory"
    )]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start a runtime for the download: {0}")]
    Runtime(#[source] std::io::Error),
}

/// Returns a local path to the weights named by `source`.
///
/// A `source` without `://` is a local path and must exist, as must the path of a `file://`
/// URL. Any other URL (`https://`, `s3://`, `gs://`, `az://`...) is downloaded once to
/// `<cache>/inception/<file name>`, where `<cache>` is `$SSGAN_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/ssgan`, else `~/.cache/ssgan`. A file name that ends in `-<hex>.<ext>`,
/// as pytorch-fid's does, promises the start of the file's SHA-256, which is checked
/// before the file enters the cache.
///
/// Blocks the calling thread during a download; call it from a blocking context.
pub fn resolve_inception_weights(source: &str) -> Result<PathBuf, WeightsError> {
    if is_remote(source) {
        resolve_inception_weights_in(source, &cache_dir()?)
    } else {
        resolve_inception_weights_in(source, Path::new(""))
    }
}

/// Does what [`resolve_inception_weights`] does, with `cache` as the cache directory.
pub fn resolve_inception_weights_in(source: &str, cache: &Path) -> Result<PathBuf, WeightsError> {
    if !is_remote(source) {
        let path = source.strip_prefix("file://").unwrap_or(source);
        return existing(PathBuf::from(path));
    }
    let cached = cache.join("inception").join(file_name(source));
    if cached.is_file() {
        tracing::debug!(url = source, path = %cached.display(), "using cached weights");
        return Ok(cached);
    }
    download(source, &cached)?;
    Ok(cached)
}

/// Returns whether `source` is a URL to download rather than a local path or `file://` URL.
fn is_remote(source: &str) -> bool {
    source.contains("://") && !source.starts_with("file://")
}

fn existing(path: PathBuf) -> Result<PathBuf, WeightsError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(WeightsError::Missing { path })
    }
}

/// Returns the last path segment of `url`, or pytorch-fid's file name when it has none.
fn file_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => WEIGHTS_FILE_NAME.to_owned(),
    }
}

fn cache_dir() -> Result<PathBuf, WeightsError> {
    if let Some(dir) = std::env::var_os(CACHE_DIR_VARIABLE).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("ssgan"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".cache").join("ssgan")),
        None => Err(WeightsError::Cache {
            path: PathBuf::from("~/.cache/ssgan"),
            source: std::io::Error::other("HOME is not set"),
        }),
    }
}

/// Downloads `url`, checks the digest its name promises, and moves it to `target`.
fn download(url: &str, target: &Path) -> Result<(), WeightsError> {
    tracing::debug!(url, path = %target.display(), "downloading FID Inception weights");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(WeightsError::Runtime)?;
    let bytes = runtime
        .block_on(ssgan_store::read_object_url(url))
        .map_err(|source| WeightsError::Download {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    check_digest(url, &file_name(url), &bytes)?;
    write_atomically(target, &bytes)
}

/// Checks the SHA-256 prefix in a name such as `pt_inception-2015-12-05-6726825d.pth`.
fn check_digest(url: &str, name: &str, bytes: &[u8]) -> Result<(), WeightsError> {
    let Some(expected) = promised_digest(name) else {
        return Ok(());
    };
    let actual = hex::encode(Sha256::digest(bytes));
    if actual.starts_with(&expected) {
        return Ok(());
    }
    Err(WeightsError::HashMismatch {
        url: url.to_owned(),
        expected,
        actual,
    })
}

/// Returns the hexadecimal digest prefix after the last '-' of the file stem, if it has 8 or
/// more lowercase hex digits.
fn promised_digest(name: &str) -> Option<String> {
    let stem = name.split('.').next()?;
    let candidate = stem.rsplit('-').next()?;
    let is_hex = candidate
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
    (candidate.len() >= 8 && is_hex && candidate != stem).then(|| candidate.to_owned())
}

/// Writes to a temporary file beside `target` and renames it, so that the cache never contains
/// a partial file.
fn write_atomically(target: &Path, bytes: &[u8]) -> Result<(), WeightsError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let cache_error = |source| WeightsError::Cache {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(cache_error)?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(cache_error)?;
    std::io::Write::write_all(&mut file, bytes).map_err(cache_error)?;
    file.persist(target)
        .map_err(|error| cache_error(error.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_prefix_follows_torch_hub_names() {
        let name = "pt_inception-2015-12-05-6726825d.pth";
        assert_eq!(promised_digest(name).as_deref(), Some("6726825d"));
        assert_eq!(promised_digest("inception_random.pth"), None);
        assert_eq!(promised_digest("weights-12345.pth"), None);
        assert_eq!(promised_digest("deadbeef.pth"), None);
    }

    #[test]
    fn mismatched_digest_is_an_error() {
        let error = check_digest("u", "w-00000000.pth", b"abc").unwrap_err();
        assert!(error.to_string().contains("promises a digest"), "{error}");
        // SHA-256 of "abc" starts with ba7816bf.
        check_digest("u", "w-ba7816bf.pth", b"abc").unwrap();
    }

    #[test]
    fn local_paths_must_exist() {
        let error = resolve_inception_weights("/nonexistent/w.pth").unwrap_err();
        assert!(matches!(error, WeightsError::Missing { .. }), "{error}");
        let error = resolve_inception_weights("file:///nonexistent/w.pth").unwrap_err();
        assert!(matches!(error, WeightsError::Missing { .. }), "{error}");
    }

    #[test]
    fn file_names_come_from_the_url_path() {
        assert_eq!(file_name("https://h/a/b.pth?x=1"), "b.pth");
        assert_eq!(file_name("https://h/"), WEIGHTS_FILE_NAME);
    }
}
