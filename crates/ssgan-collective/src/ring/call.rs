//! One collective call in flight: frame exchange with the two neighbours under one deadline.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::frame::{self, CallId, Header};
use super::sender::{FlushError, SendFailure, Sender};
use crate::CollectiveError;

/// Position of this rank in the ring.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Topology {
    pub rank: usize,
    pub world: usize,
}

impl Topology {
    pub(crate) fn next(self) -> usize {
        (self.rank + 1) % self.world
    }

    pub(crate) fn prev(self) -> usize {
        (self.rank + self.world - 1) % self.world
    }
}

/// The state that one call borrows from the ring.
pub(crate) struct Call<'a> {
    pub id: CallId,
    pub topology: Topology,
    pub segment_len: usize,
    pub deadline: Instant,
    pub timeout: Duration,
    pub prev: &'a mut TcpStream,
    pub sender: &'a Sender,
    pub buffer: &'a mut Vec<u8>,
}

impl Call<'_> {
    fn operation(&self) -> &'static str {
        self.id.op.name()
    }

    /// Queues `values` as the next data frame to the next rank.
    pub(crate) fn send(&self, values: &[f32]) {
        let bytes = frame::encode_data(self.id, values);
        self.sender.send(bytes, self.deadline);
    }

    /// Reads the next data frame from the previous rank and returns its payload bytes.
    ///
    /// The frame must belong to this call and carry `expected_len` values.
    pub(crate) fn receive(&mut self, expected_len: usize) -> Result<&[u8], CollectiveError> {
        let header = self.read(frame::read_header)?;
        self.check_header(header, expected_len)?;
        self.buffer.resize(4 * expected_len, 0);
        let mut buffer = std::mem::take(self.buffer);
        let read = self.read(|stream| stream.read_exact(&mut buffer));
        *self.buffer = buffer;
        read?;
        self.check_sender()?;
        Ok(self.buffer.as_slice())
    }

    /// Waits until the next rank has been sent everything this call queued.
    pub(crate) fn finish(&self) -> Result<(), CollectiveError> {
        match self.sender.flush(self.deadline) {
            Ok(()) => Ok(()),
            Err(FlushError::Failed(failure)) => Err(self.send_error(failure)),
            Err(FlushError::TimedOut) => Err(self.timeout_error(self.topology.next())),
        }
    }

    fn read<T>(
        &mut self,
        step: impl FnOnce(&mut TcpStream) -> std::io::Result<T>,
    ) -> Result<T, CollectiveError> {
        let prev = self.topology.prev();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timeout_error(prev));
        }
        let result = self
            .prev
            .set_read_timeout(Some(remaining))
            .and_then(|()| step(self.prev));
        result.map_err(|error| self.read_error(error))
    }

    fn check_header(&self, header: Header, expected_len: usize) -> Result<(), CollectiveError> {
        let peer = self.topology.prev();
        let mismatch = |reason: String| CollectiveError::Mismatch {
            operation: self.operation(),
            peer,
            reason,
        };
        match header {
            Header::Abort { failed_rank } => Err(CollectiveError::PeerFailed {
                operation: self.operation(),
                failed_rank,
                reporter: peer,
            }),
            Header::Invalid { kind, op } => Err(mismatch(format!(
                "received a frame of unknown kind {kind} and op code {op}; \
                 every rank must run the same ssgan version"
            ))),
            Header::Data { call, .. } if call != self.id => Err(mismatch(format!(
                "rank {peer} sent {call}, this rank expected {}",
                self.id
            ))),
            Header::Data { payload_len, .. } if payload_len != expected_len => {
                Err(mismatch(format!(
                    "received a segment of {payload_len} elements, expected {expected_len}; \
                     every rank must use the same segment_bytes"
                )))
            }
            Header::Data { .. } => Ok(()),
        }
    }

    fn check_sender(&self) -> Result<(), CollectiveError> {
        match self.sender.failure() {
            Some(failure) => Err(self.send_error(failure)),
            None => Ok(()),
        }
    }

    fn read_error(&self, error: std::io::Error) -> CollectiveError {
        let prev = self.topology.prev();
        if super::is_timeout(&error) {
            return self.timeout_error(prev);
        }
        let source = if error.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(error.kind(), "connection closed by the peer")
        } else {
            error
        };
        CollectiveError::Peer {
            operation: self.operation(),
            peer: prev,
            source,
        }
    }

    fn send_error(&self, failure: SendFailure) -> CollectiveError {
        let next = self.topology.next();
        if failure.timed_out {
            return self.timeout_error(next);
        }
        CollectiveError::Peer {
            operation: self.operation(),
            peer: next,
            source: std::io::Error::new(failure.kind, failure.message),
        }
    }

    fn timeout_error(&self, peer: usize) -> CollectiveError {
        CollectiveError::Timeout {
            operation: self.operation(),
            peer,
            timeout_ms: self.timeout.as_millis() as u64,
        }
    }
}
