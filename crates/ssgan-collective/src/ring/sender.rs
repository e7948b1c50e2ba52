//! The thread that writes frames to the next rank.
//!
//! The caller's thread only reads from the previous rank and queues what it must forward. No
//! rank blocks on a write while its own receive buffer fills, so a ring of any size makes
//! progress even when every socket buffer is full. The queue is unbounded, so in the worst case
//! it contains one encoded copy of what a call sends.

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

/// Error that stopped the sender thread's writes.
#[derive(Clone, Debug)]
pub(crate) struct SendFailure {
    pub timed_out: bool,
    pub kind: std::io::ErrorKind,
    pub message: String,
}

/// Failure of a flush to confirm that every queued frame was written.
pub(crate) enum FlushError {
    Failed(SendFailure),
    TimedOut,
}

enum Outgoing {
    Data { bytes: Vec<u8>, deadline: Instant },
    Abort { bytes: Vec<u8>, deadline: Instant },
    Flush(mpsc::Sender<()>),
}

#[derive(Default)]
struct Shared {
    /// Set once the ring is poisoned: queued data frames are dropped, abort frames still go out.
    aborting: AtomicBool,
    failure: OnceLock<SendFailure>,
}

/// Handle of the writer thread of one ring connection.
pub(crate) struct Sender {
    queue: Option<mpsc::Sender<Outgoing>>,
    shared: Arc<Shared>,
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Starts the writer thread on a clone of `stream`.
    pub(crate) fn spawn(stream: TcpStream) -> std::io::Result<Self> {
        let (queue, receiver) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let thread_stream = stream.try_clone()?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ssgan-ring-send".into())
            .spawn(move || write_loop(thread_stream, receiver, &thread_shared))?;
        Ok(Self {
            queue: Some(queue),
            shared,
            stream,
            thread: Some(thread),
        })
    }

    /// Queues a data frame that must be written by `deadline`.
    pub(crate) fn send(&self, bytes: Vec<u8>, deadline: Instant) {
        self.push(Outgoing::Data { bytes, deadline });
    }

    /// Drops the data frames still queued and queues an abort frame in their place.
    pub(crate) fn abort(&self, bytes: Vec<u8>, deadline: Instant) {
        self.shared.aborting.store(true, Ordering::SeqCst);
        self.push(Outgoing::Abort { bytes, deadline });
    }

    /// Waits until every frame queued so far was written, or `deadline` passes.
    pub(crate) fn flush(&self, deadline: Instant) -> Result<(), FlushError> {
        let (reply, confirmation) = mpsc::channel();
        self.push(Outgoing::Flush(reply));
        let wait = deadline.saturating_duration_since(Instant::now());
        match confirmation.recv_timeout(wait) {
            Ok(()) => self
                .failure()
                .map_or(Ok(()), |f| Err(FlushError::Failed(f))),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(FlushError::TimedOut),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(FlushError::Failed(stopped())),
        }
    }

    /// Returns the error that stopped the writer thread, if any.
    pub(crate) fn failure(&self) -> Option<SendFailure> {
        self.shared.failure.get().cloned()
    }

    fn push(&self, item: Outgoing) {
        let sent = self.queue.as_ref().map(|queue| queue.send(item));
        if !matches!(sent, Some(Ok(()))) {
            // The thread only exits early by panicking; report that as a send failure.
            let _ = self.shared.failure.set(stopped());
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        // Shutting the socket down ends a write blocked on a stuck peer at once.
        let _ = self.stream.shutdown(Shutdown::Both);
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn stopped() -> SendFailure {
    SendFailure {
        timed_out: false,
        kind: std::io::ErrorKind::BrokenPipe,
        message: "the ring's sender thread stopped".into(),
    }
}

fn write_loop(mut stream: TcpStream, receiver: mpsc::Receiver<Outgoing>, shared: &Shared) {
    for item in receiver {
        let healthy = shared.failure.get().is_none();
        let result = match item {
            Outgoing::Data { bytes, deadline } if healthy => {
                if shared.aborting.load(Ordering::SeqCst) {
                    continue;
                }
                write_by(&mut stream, &bytes, deadline)
            }
            Outgoing::Abort { bytes, deadline } if healthy => {
                write_by(&mut stream, &bytes, deadline)
            }
            Outgoing::Flush(reply) => {
                let _ = reply.send(());
                continue;
            }
            _ => continue,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "ring sender stopped");
            let _ = shared.failure.set(failure_of(&error));
        }
    }
}

fn write_by(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> std::io::Result<()> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    stream.set_write_timeout(Some(remaining))?;
    stream.write_all(bytes)
}

fn failure_of(error: &std::io::Error) -> SendFailure {
    SendFailure {
        timed_out: super::is_timeout(error),
        kind: error.kind(),
        message: error.to_string(),
    }
}
