//! A CPU communicator over TCP: every rank talks only to its two neighbours in a ring.
//!
//! Start-up: each rank binds a [`RingListener`] and reports [`RingListener::local_addr`] to
//! the coordinator, which hands every rank the full ordered address list. [`RingListener::join`]
//! then connects rank r to rank r + 1 and accepts rank r - 1 (modulo the world size).
//!
//! Failure: a call that fails (a timeout, a closed connection, a mismatched call) poisons the
//! ring, because the ranks may now disagree on what was summed. The failing rank sends an abort
//! message that names the failed rank to the next rank, which forwards it, so the other ranks
//! report the same failed rank instead of waiting for their own timeouts. Every later call
//! fails at once with [`CollectiveError::Poisoned`].
//!
//! NOTE: a peer that stops responding but keeps its connections open is found only by
//! timeouts. With more than two ranks, the others then time out at about the same moment, and
//! a rank may name its own waiting neighbour instead of the rank that stopped. Only the
//! two-rank case of a silent peer is tested.

mod algorithm;
mod bootstrap;
mod call;
mod frame;
mod sender;

use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use bootstrap::{RingListener, RingMembership};
use call::{Call, Topology};
use frame::{CallId, OpCode};
use sender::Sender;

use crate::{CollectiveError, Communicator};

/// How long a failing rank waits for its abort message to reach the next rank.
const ABORT_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Timeouts and framing of a [`TcpRing`]. Every rank of a ring must use the same values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Maximum time [`RingListener::join`] waits for both neighbours. It covers the start-up
    /// of the slowest rank, so it is long.
    pub bootstrap_timeout: Duration,
    /// Maximum duration of one collective call, from entry to return. It must exceed the time
    /// the largest all-reduce takes, plus the time by which ranks reach a call apart. A call
    /// that fails may return up to 1 s later, while its abort message goes out.
    pub op_timeout: Duration,
    /// Maximum payload of one frame in bytes (a multiple of 4 is used, at least 4). Smaller
    /// segments let a rank forward data sooner; larger ones cost fewer headers.
    pub segment_bytes: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            bootstrap_timeout: Duration::from_secs(300),
            op_timeout: Duration::from_secs(60),
            segment_bytes: 256 * 1024,
        }
    }
}

impl RingConfig {
    fn validate(&self) -> Result<(), CollectiveError> {
        let invalid = |reason: String| CollectiveError::InvalidCall {
            operation: "join",
            reason,
        };
        if self.bootstrap_timeout.is_zero() || self.op_timeout.is_zero() {
            return Err(invalid(format!(
                "timeouts must be positive, got bootstrap {:?} and op {:?}",
                self.bootstrap_timeout, self.op_timeout
            )));
        }
        if !(4..=u32::MAX as usize).contains(&self.segment_bytes) {
            return Err(invalid(format!(
                "segment_bytes must be in 4..=4294967295, got {}",
                self.segment_bytes
            )));
        }
        Ok(())
    }

    fn segment_len(&self) -> usize {
        self.segment_bytes / 4
    }
}

/// A [`Communicator`] whose ranks are processes connected in a TCP ring.
///
/// Calls from several threads are serialized, but every rank must still issue the same calls
/// in the same order, so a ring is normally used from one thread. With world size 1 no
/// socket is opened and every collective returns its input unchanged.
pub struct TcpRing {
    topology: Topology,
    config: RingConfig,
    addresses: Option<LinkAddresses>,
    links: Option<Mutex<Links>>,
}

/// Addresses of a ring's two connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkAddresses {
    /// Address of the next rank's listener.
    pub next_peer: SocketAddr,
    /// This rank's end of the connection from the previous rank, which that rank can reach.
    pub prev_local: SocketAddr,
}

struct Links {
    prev: TcpStream,
    sender: Sender,
    /// Number of calls issued so far; peers compare it to detect a skipped call.
    seq: u64,
    /// Message of the error that poisoned the ring.
    poisoned: Option<String>,
    buffer: Vec<u8>,
}

impl TcpRing {
    fn single(config: RingConfig) -> Self {
        Self {
            topology: Topology { rank: 0, world: 1 },
            config,
            addresses: None,
            links: None,
        }
    }

    fn connected(
        topology: Topology,
        config: RingConfig,
        prev: TcpStream,
        next: TcpStream,
    ) -> std::io::Result<Self> {
        let addresses = LinkAddresses {
            next_peer: next.peer_addr()?,
            prev_local: prev.local_addr()?,
        };
        let links = Links {
            prev,
            sender: Sender::spawn(next)?,
            seq: 0,
            poisoned: None,
            buffer: Vec::new(),
        };
        Ok(Self {
            topology,
            config,
            addresses: Some(addresses),
            links: Some(Mutex::new(links)),
        })
    }

    /// Returns the socket addresses of the ring's connections, None with world size 1.
    pub(crate) fn link_addresses(&self) -> Option<LinkAddresses> {
        self.addresses
    }

    pub(crate) fn config(&self) -> &RingConfig {
        &self.config
    }

    /// Runs `body` as the next call, and poisons the ring when it fails.
    fn run(
        &self,
        op: OpCode,
        (len, root): (usize, usize),
        body: impl FnOnce(&mut Call) -> Result<(), CollectiveError>,
    ) -> Result<(), CollectiveError> {
        let Some(links) = &self.links else {
            return Ok(());
        };
        let mut links = links.lock().unwrap_or_else(|panicked| {
            // A call that panicked may have left a frame half read or half queued.
            let mut links = panicked.into_inner();
            let cause = "an earlier call panicked".to_string();
            links.poisoned.get_or_insert(cause);
            links
        });
        if let Some(cause) = &links.poisoned {
            return Err(CollectiveError::Poisoned {
                operation: op.name(),
                cause: cause.clone(),
            });
        }
        links.seq += 1;
        let id = CallId {
            op,
            seq: links.seq,
            len: len as u64,
            root: root as u32,
        };
        tracing::trace!(rank = self.topology.rank, call = %id, "collective starts");
        let result = body(&mut self.call(id, &mut links));
        if let Err(error) = &result {
            self.poison(&mut links, error);
        }
        result
    }

    fn call<'a>(&self, id: CallId, links: &'a mut Links) -> Call<'a> {
        Call {
            id,
            topology: self.topology,
            segment_len: self.config.segment_len(),
            deadline: Instant::now() + self.config.op_timeout,
            timeout: self.config.op_timeout,
            prev: &mut links.prev,
            sender: &links.sender,
            buffer: &mut links.buffer,
        }
    }

    /// Marks the ring failed and sends the next rank an abort that names the failed rank.
    fn poison(&self, links: &mut Links, error: &CollectiveError) {
        tracing::debug!(rank = self.topology.rank, %error, "ring poisoned");
        links.poisoned = Some(error.to_string());
        let deadline = Instant::now() + ABORT_SEND_TIMEOUT;
        // An abort that blames the next rank itself would not help it. It gets the frames
        // already queued instead, so it can detect a mismatch on its own.
        let blamed = error
            .blamed_rank()
            .filter(|&rank| rank != self.topology.next());
        if let Some(failed_rank) = blamed {
            links
                .sender
                .abort(frame::encode_abort(failed_rank), deadline);
        }
        if links.sender.flush(deadline).is_err() {
            tracing::debug!(rank = self.topology.rank, "abort message not delivered");
        }
    }

    fn check_root(&self, root: usize) -> Result<(), CollectiveError> {
        if root >= self.topology.world {
            return Err(CollectiveError::InvalidCall {
                operation: "broadcast",
                reason: format!(
                    "root rank {root} does not exist in a group of {}",
                    self.topology.world
                ),
            });
        }
        Ok(())
    }
}

impl Communicator for TcpRing {
    fn rank(&self) -> usize {
        self.topology.rank
    }

    fn world_size(&self) -> usize {
        self.topology.world
    }

    /// Sums `data` over all ranks in place, with a ring reduce-scatter then all-gather.
    ///
    /// Every rank must reach this call with a slice of the same length. The call fails with
    /// [`CollectiveError::Timeout`] when it has not finished within `op_timeout`, and with
    /// another error as soon as a neighbour's connection closes or an abort arrives. On any
    /// failure `data` is left partly summed and the ring is poisoned.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        self.run(OpCode::AllReduceSum, (data.len(), 0), |call| {
            algorithm::all_reduce_sum(call, data)
        })
    }

    /// Copies `data` of rank `root` to every rank, forwarded along the ring in segments.
    ///
    /// Every rank must reach this call with a slice of the same length and the same `root`.
    /// Timeouts and failures behave as in [`Communicator::all_reduce_sum`]; on failure `data`
    /// of a non-root rank is left partly overwritten.
    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<(), CollectiveError> {
        self.check_root(root)?;
        self.run(OpCode::Broadcast, (data.len(), root), |call| {
            algorithm::broadcast(call, data, root)
        })
    }

    /// Returns once every rank has reached the barrier: an all-reduce of one value.
    ///
    /// Every rank must reach this call. A rank that does not arrive within `op_timeout` makes
    /// the others fail with a timeout or an abort, and poisons the ring.
    fn barrier(&self) -> Result<(), CollectiveError> {
        let mut token = [1.0f32];
        self.run(OpCode::Barrier, (1, 0), |call| {
            algorithm::all_reduce_sum(call, &mut token)
        })
    }
}

impl Drop for TcpRing {
    /// Closes both connections. After a failure the ring first reads and discards what the
    /// previous rank still sends, for up to [`ABORT_SEND_TIMEOUT`], so that the previous rank
    /// does not fail on this rank's closed connection before the abort message reaches it.
    fn drop(&mut self) {
        let Some(links) = self.links.take() else {
            return;
        };
        let mut links = links.into_inner().unwrap_or_else(PoisonError::into_inner);
        if links.poisoned.is_some() {
            drain(&mut links.prev, Instant::now() + ABORT_SEND_TIMEOUT);
        }
        let _ = links.prev.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads from `stream` until it closes, fails or `deadline` passes.
fn drain(stream: &mut TcpStream, deadline: Instant) {
    let mut sink = [0u8; 64 * 1024];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match std::io::Read::read(stream, &mut sink) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}
