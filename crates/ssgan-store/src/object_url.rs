//! Reading one object named by its full URL, for inputs that live outside a storage root,
//! such as network weights on S3 or an HTTP server.

use std::sync::Arc;

use bytes::Bytes;
use object_store::ClientOptions;
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::http::HttpBuilder;
use object_store::path::Path;
use url::Url;

use crate::StoreError;
use crate::url::open_root;

/// Reads the whole object at `url`: `s3://`, `gs://`, `az://` (and the other schemes of
/// [`Store::open`](crate::Store::open)), `http://` or `https://`.
///
/// Credentials and endpoints come from the environment, as for a storage root. Plain
/// `http://` is accepted, for servers on a private network.
pub async fn read_object_url(url: &str) -> Result<Bytes, StoreError> {
    let (parent, name) = split_object_url(url)?;
    let (store, key) = open_parent(url, &parent, &name)?;
    let result = store
        .get(&key)
        .await
        .map_err(|source| StoreError::ObjectStore {
            operation: "read",
            url: url.to_owned(),
            source,
        })?;
    result
        .bytes()
        .await
        .map_err(|source| StoreError::ObjectStore {
            operation: "read",
            url: url.to_owned(),
            source,
        })
}

/// Splits `url` into the URL of its parent directory and the object's name.
fn split_object_url(url: &str) -> Result<(Url, String), StoreError> {
    let parsed = Url::parse(url).map_err(|error| invalid(url, &error.to_string()))?;
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(
            url,
            "query strings and fragments are not supported, so remove the part from '?' or '#'",
        ));
    }
    let name = parsed
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| invalid(url, "it names no file. Give the URL of the object itself"))?;
    let name = name.to_owned();
    let mut parent = parsed.clone();
    parent
        .path_segments_mut()
        .map_err(|()| invalid(url, "it cannot have a path"))?
        .pop();
    Ok((parent, name))
}

/// Opens the store of the parent directory and returns it with the object's key.
fn open_parent(
    url: &str,
    parent: &Url,
    name: &str,
) -> Result<(Arc<dyn ObjectStore>, Path), StoreError> {
    let key = Path::from_url_path(name).map_err(|error| invalid(url, &error.to_string()))?;
    match parent.scheme() {
        "http" | "https" => Ok((open_http(url, parent)?, key)),
        "file" | "memory" => Err(invalid(
            url,
            "local files are read directly. Pass the file's path instead",
        )),
        _ => {
            let opened = open_root(parent.as_str())?;
            let key = opened.root.parts().chain(key.parts()).collect();
            Ok((opened.object_store, key))
        }
    }
}

fn open_http(url: &str, parent: &Url) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let store = HttpBuilder::new()
        .with_url(parent.as_str())
        .with_client_options(ClientOptions::new().with_allow_http(true))
        .build()
        .map_err(|error| invalid(url, &format!("cannot configure the HTTP client: {error}")))?;
    Ok(Arc::new(store))
}

fn invalid(url: &str, reason: &str) -> StoreError {
    StoreError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_the_parent_and_the_name() {
        let (parent, name) = split_object_url("s3://bucket/weights/pt.pth").unwrap();
        assert_eq!(parent.as_str(), "s3://bucket/weights");
        assert_eq!(name, "pt.pth");
        let (parent, name) = split_object_url("http://127.0.0.1:8/a.pth").unwrap();
        assert_eq!(parent.as_str(), "http://127.0.0.1:8/");
        assert_eq!(name, "a.pth");
    }

    #[test]
    fn split_rejects_directories_and_queries() {
        let error = split_object_url("https://host/dir/")
            .unwrap_err()
            .to_string();
        assert!(error.contains("names no file"), "{error}");
        let error = split_object_url("https://host/a.pth?x=1")
            .unwrap_err()
            .to_string();
        assert!(error.contains("query strings"), "{error}");
    }

    #[tokio::test]
    async fn local_urls_are_rejected() {
        let error = read_object_url("file:///tmp/a.pth").await.unwrap_err();
        assert!(
            error.to_string().contains("Pass the file's path"),
            "{error}"
        );
    }
}
