//! Start-up of a ring: listen, connect to the next rank, accept the previous one, handshake.
//!
//! The connecting side sends a hello (magic, world size, its rank, run attempt token). The
//! accepting side checks it and replies with an acknowledgement that accepts or rejects it. A
//! rejected or silent connection is closed and the listener waits on for the real neighbour, so
//! a stray client or a rank of an older attempt cannot join the ring.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::call::Topology;
use super::{RingConfig, TcpRing};
use crate::CollectiveError;

const MAGIC: [u8; 8] = *b"SSGRING1";
const HELLO_BYTES: usize = 24;
const ACK_BYTES: usize = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(20);
const OPERATION: &str = "bootstrap";

/// Listening addresses of all ranks of a ring, and the run attempt that the ring belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingMembership {
    /// This process's rank, an index into `addresses`.
    pub rank: usize,
    /// Listening address of every rank, ordered by rank. Its length is the world size.
    pub addresses: Vec<SocketAddr>,
    /// Value shared by all ranks of one run attempt and different for every other attempt,
    /// for example a hash of the run id and the attempt number.
    pub token: u64,
}

/// A bound listening socket of a rank that has not joined its ring yet.
pub struct RingListener {
    listener: TcpListener,
    address: SocketAddr,
}

impl RingListener {
    /// Binds the listening socket, typically on port 0 so that the OS picks a free port.
    pub fn bind(address: SocketAddr) -> Result<Self, CollectiveError> {
        let bind_error = |source| CollectiveError::Bind {
            address: address.to_string(),
            source,
        };
        let listener = TcpListener::bind(address).map_err(bind_error)?;
        let address = listener.local_addr().map_err(bind_error)?;
        tracing::debug!(%address, "ring listener bound");
        Ok(Self { listener, address })
    }

    /// Returns the address that the other ranks must connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Connects to both neighbours and returns the ring.
    ///
    /// Every rank of `membership` must call this with the same addresses, token and config. It
    /// fails with [`CollectiveError::Timeout`] naming the missing neighbour when the ring is
    /// not complete within `config.bootstrap_timeout`, and with [`CollectiveError::Rejected`]
    /// when the next rank belongs to another world size or attempt. With one rank it opens no
    /// connection.
    pub fn join(
        self,
        membership: &RingMembership,
        config: &RingConfig,
    ) -> Result<TcpRing, CollectiveError> {
        config.validate()?;
        let topology = topology_of(membership)?;
        if topology.world == 1 {
            return Ok(TcpRing::single(config.clone()));
        }
        let deadline = Instant::now() + config.bootstrap_timeout;
        let handshake = Handshake {
            topology,
            token: membership.token,
            deadline,
            timeout: config.bootstrap_timeout,
            read_limit: config.op_timeout,
        };
        let mut next = handshake.connect_next(membership.addresses[topology.next()])?;
        let prev = handshake.accept_prev_and_read_ack(&self.listener, &mut next)?;
        tracing::debug!(rank = topology.rank, world = topology.world, "ring joined");
        let peer_error = |peer, source| CollectiveError::Peer {
            operation: OPERATION,
            peer,
            source,
        };
        for (stream, peer) in [(&prev, topology.prev()), (&next, topology.next())] {
            configure(stream).map_err(|source| peer_error(peer, source))?;
        }
        TcpRing::connected(topology, config.clone(), prev, next)
            .map_err(|source| peer_error(topology.next(), source))
    }
}

fn topology_of(membership: &RingMembership) -> Result<Topology, CollectiveError> {
    let world = membership.addresses.len();
    if world == 0 || world > u32::MAX as usize || membership.rank >= world {
        return Err(CollectiveError::InvalidCall {
            operation: "join",
            reason: format!(
                "rank {} is not in a ring of {world} addresses; pass one address per rank",
                membership.rank
            ),
        });
    }
    Ok(Topology {
        rank: membership.rank,
        world,
    })
}

fn configure(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(None)?;
    stream.set_write_timeout(None)
}

/// Reasons the accepting side sends back; 0 accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Accepted = 0,
    BadMagic = 1,
    WorldSize = 2,
    Token = 3,
    Rank = 4,
}

impl Verdict {
    fn from_wire(code: u32) -> Option<Self> {
        [
            Verdict::Accepted,
            Verdict::BadMagic,
            Verdict::WorldSize,
            Verdict::Token,
            Verdict::Rank,
        ]
        .into_iter()
        .find(|verdict| *verdict as u32 == code)
    }
}

struct Hello {
    world: u32,
    rank: u32,
    token: u64,
}

struct Handshake {
    topology: Topology,
    token: u64,
    deadline: Instant,
    timeout: Duration,
    /// Maximum wait for one accepted connection's hello, so a silent client cannot hold the
    /// listener until the bootstrap deadline.
    read_limit: Duration,
}

impl Handshake {
    /// Connects to the next rank, retrying until the deadline, and sends the hello.
    fn connect_next(&self, address: SocketAddr) -> Result<TcpStream, CollectiveError> {
        let next = self.topology.next();
        loop {
            let attempt = TcpStream::connect_timeout(&address, self.remaining(next)?)
                .and_then(|mut stream| stream.write_all(&self.hello()).map(|()| stream));
            match attempt {
                Ok(stream) => return Ok(stream),
                Err(error) => tracing::trace!(%address, %error, "ring connect retry"),
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }

    /// Accepts the previous rank while another thread waits for the next rank's reply.
    ///
    /// Both must run at once, because the next rank replies only after it accepted its own
    /// previous rank, and a rejection by the next rank must end the wait for the previous one.
    fn accept_prev_and_read_ack(
        &self,
        listener: &TcpListener,
        next: &mut TcpStream,
    ) -> Result<TcpStream, CollectiveError> {
        let rejected = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let ack = scope.spawn(|| {
                let result = self.read_ack(next);
                rejected.store(result.is_err(), Ordering::SeqCst);
                result
            });
            let prev = self.accept_prev(listener, &rejected);
            let ack = ack
                .join()
                .unwrap_or_else(|_| Err(self.timeout_error(self.topology.next())));
            // The next rank's reply explains a failure better than the cancelled accept.
            ack.and(prev)
        })
    }

    /// Accepts connections until one carries the hello of the previous rank, and accepts it.
    ///
    /// Gives up early, with an error the caller replaces, once `cancelled` is set.
    fn accept_prev(
        &self,
        listener: &TcpListener,
        cancelled: &AtomicBool,
    ) -> Result<TcpStream, CollectiveError> {
        let prev = self.topology.prev();
        let peer_error = |source| CollectiveError::Peer {
            operation: OPERATION,
            peer: prev,
            source,
        };
        listener.set_nonblocking(true).map_err(peer_error)?;
        loop {
            let remaining = self.remaining(prev)?;
            if cancelled.load(Ordering::SeqCst) {
                return Err(self.timeout_error(prev));
            }
            match listener.accept() {
                Ok((stream, address)) => match self.screen(stream, remaining) {
                    Ok(Some(stream)) => return Ok(stream),
                    Ok(None) => tracing::debug!(%address, "ring rejected a connection"),
                    Err(error) => tracing::debug!(%address, %error, "ring handshake failed"),
                },
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(RETRY_PAUSE)
                }
                Err(error) => return Err(peer_error(error)),
            }
        }
    }

    /// Reads a hello from `stream` and replies to it. Returns the stream when it is accepted.
    fn screen(
        &self,
        mut stream: TcpStream,
        remaining: Duration,
    ) -> std::io::Result<Option<TcpStream>> {
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(remaining.min(self.read_limit)))?;
        let mut raw = [0u8; HELLO_BYTES];
        stream.read_exact(&mut raw)?;
        let verdict = self.judge(&raw);
        stream.write_all(&self.ack(verdict))?;
        Ok((verdict == Verdict::Accepted).then_some(stream))
    }

    fn judge(&self, raw: &[u8; HELLO_BYTES]) -> Verdict {
        let Some(hello) = parse_hello(raw) else {
            return Verdict::BadMagic;
        };
        if hello.world as usize != self.topology.world {
            Verdict::WorldSize
        } else if hello.token != self.token {
            Verdict::Token
        } else if hello.rank as usize != self.topology.prev() {
            Verdict::Rank
        } else {
            Verdict::Accepted
        }
    }

    /// Waits for the next rank's reply to this rank's hello.
    fn read_ack(&self, stream: &mut TcpStream) -> Result<(), CollectiveError> {
        let next = self.topology.next();
        let mut raw = [0u8; ACK_BYTES];
        let read = stream
            .set_read_timeout(Some(self.remaining(next)?))
            .and_then(|()| stream.read_exact(&mut raw));
        match read {
            Ok(()) => self.check_ack(&raw),
            Err(error) if super::is_timeout(&error) => Err(self.timeout_error(next)),
            Err(source) => Err(CollectiveError::Peer {
                operation: OPERATION,
                peer: next,
                source,
            }),
        }
    }

    fn check_ack(&self, raw: &[u8; ACK_BYTES]) -> Result<(), CollectiveError> {
        let next = self.topology.next();
        let (rank, world) = (word(raw, 12) as usize, word(raw, 16) as usize);
        let reason = match Verdict::from_wire(word(raw, 8)) {
            _ if raw[..8] != MAGIC => "the reply is not an ssgan ring handshake".to_string(),
            Some(Verdict::Accepted) if rank == next => return Ok(()),
            Some(Verdict::Accepted) => format!("the listener is rank {rank}, expected {next}"),
            Some(Verdict::BadMagic) => "the hello was not understood".to_string(),
            Some(Verdict::WorldSize) => format!(
                "the listener runs with world size {world}, this rank with {}",
                self.topology.world
            ),
            Some(Verdict::Token) => "the run attempt tokens differ".to_string(),
            Some(Verdict::Rank) => format!(
                "the listener expected rank {}, this rank is {}; the address lists differ",
                (rank + world - 1) % world.max(1),
                self.topology.rank
            ),
            None => format!("unknown verdict code {}", word(raw, 8)),
        };
        Err(CollectiveError::Rejected { peer: next, reason })
    }

    fn hello(&self) -> [u8; HELLO_BYTES] {
        let mut raw = [0u8; HELLO_BYTES];
        raw[..8].copy_from_slice(&MAGIC);
        raw[8..12].copy_from_slice(&(self.topology.world as u32).to_le_bytes());
        raw[12..16].copy_from_slice(&(self.topology.rank as u32).to_le_bytes());
        raw[16..24].copy_from_slice(&self.token.to_le_bytes());
        raw
    }

    fn ack(&self, verdict: Verdict) -> [u8; ACK_BYTES] {
        let mut raw = [0u8; ACK_BYTES];
        raw[..8].copy_from_slice(&MAGIC);
        raw[8..12].copy_from_slice(&(verdict as u32).to_le_bytes());
        raw[12..16].copy_from_slice(&(self.topology.rank as u32).to_le_bytes());
        raw[16..20].copy_from_slice(&(self.topology.world as u32).to_le_bytes());
        raw
    }

    /// Returns the time left before the deadline, or the timeout error naming `peer`.
    fn remaining(&self, peer: usize) -> Result<Duration, CollectiveError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(self.timeout_error(peer));
        }
        Ok(remaining)
    }

    fn timeout_error(&self, peer: usize) -> CollectiveError {
        CollectiveError::Timeout {
            operation: OPERATION,
            peer,
            timeout_ms: self.timeout.as_millis() as u64,
        }
    }
}

fn parse_hello(raw: &[u8; HELLO_BYTES]) -> Option<Hello> {
    if raw[..8] != MAGIC {
        return None;
    }
    let token = u64::from(word(raw, 16)) | (u64::from(word(raw, 20)) << 32);
    Some(Hello {
        world: word(raw, 8),
        rank: word(raw, 12),
        token,
    })
}

fn word(raw: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]])
}
