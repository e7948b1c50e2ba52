//! Weights named by URL: downloaded once from an HTTP server on 127.0.0.1 into the cache,
//! and rejected without caching when the digest in the file name does not match.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ssgan_evaluator::{WeightsError, resolve_inception_weights_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &[u8] = b"not really weights, but the bytes must arrive intact";

/// Serves `BODY` for every path under /w/ and 404 elsewhere, one request per connection,
/// counting the GET requests. Returns the base URL.
async fn serve(gets: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, gets.clone()));
        }
    });
    format!("http://{address}")
}

async fn answer(mut stream: TcpStream, gets: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("");
    if head.starts_with("GET ") {
        gets.fetch_add(1, Ordering::SeqCst);
    }
    let (status, body) = if path.starts_with("/w/") {
        ("200 OK", BODY)
    } else {
        ("404 Not Found", &b""[..])
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.write_all(body).await;
}

/// Runs the blocking resolver off the async runtime.
async fn resolve(
    url: String,
    cache: std::path::PathBuf,
) -> Result<std::path::PathBuf, WeightsError> {
    tokio::task::spawn_blocking(move || resolve_inception_weights_in(&url, &cache))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_downloads_once() {
    let gets = Arc::new(AtomicUsize::new(0));
    let base = serve(gets.clone()).await;
    let cache = tempfile::tempdir().unwrap();
    let url = format!("{base}/w/inception_random.pth");

    let path = resolve(url.clone(), cache.path().to_path_buf())
        .await
        .unwrap();
    assert_eq!(path, cache.path().join("inception/inception_random.pth"));
    assert_eq!(std::fs::read(&path).unwrap(), BODY);
    let again = resolve(url, cache.path().to_path_buf()).await.unwrap();
    assert_eq!(again, path);
    assert_eq!(
        gets.load(Ordering::SeqCst),
        1,
        "the second call must use the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_is_rejected() {
    let base = serve(Arc::new(AtomicUsize::new(0))).await;
    let cache = tempfile::tempdir().unwrap();
    let url = format!("{base}/w/pt_inception-2015-12-05-6726825d.pth");

    let error = resolve(url, cache.path().to_path_buf()).await.unwrap_err();
    assert!(
        matches!(error, WeightsError::HashMismatch { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("6726825d"), "{error}");
    let cached = cache
        .path()
        .join("inception/pt_inception-2015-12-05-6726825d.pth");
    assert!(!cached.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_object_names_url() {
    let base = serve(Arc::new(AtomicUsize::new(0))).await;
    let cache = tempfile::tempdir().unwrap();
    let url = format!("{base}/elsewhere/w.pth");

    let error = resolve(url.clone(), cache.path().to_path_buf())
        .await
        .unwrap_err();
    assert!(matches!(error, WeightsError::Download { .. }), "{error}");
    assert!(error.to_string().contains(&url), "{error}");
}
