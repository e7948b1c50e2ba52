//! All-reduce bandwidth of a [`TcpRing`], next to a plain TCP copy between the same processes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use crate::{CollectiveError, Communicator, TcpRing};

const OPERATION: &str = "bench_all_reduce";

/// Measured rates for one message size. Rates are in GB/s (1e9 bytes per second).
#[derive(Clone, Debug, PartialEq)]
pub struct AllReduceBenchRow {
    /// Message size of the all-reduce and of the copy, in bytes.
    pub bytes: usize,
    /// Bus bandwidth as nccl-tests defines it: bytes / time x 2 (W - 1) / W, the rate at which
    /// each rank's links carry data. With W = 2 it equals bytes / time.
    pub bus_gbps: f64,
    /// Rate of copying `bytes` raw bytes from rank 0 to rank 1 over a separate TCP connection,
    /// including one 1-byte reply per copy.
    pub tcp_copy_gbps: f64,
}

impl AllReduceBenchRow {
    /// Formats the row as one JSON object line, for example
    /// `{"bytes":4096,"bus_gbps":0.512,"tcp_copy_gbps":1.25}`.
    pub fn to_json_line(&self) -> String {
        format!(
            "{{\"bytes\":{},\"bus_gbps\":{},\"tcp_copy_gbps\":{}}}",
            self.bytes, self.bus_gbps, self.tcp_copy_gbps
        )
    }
}

/// Measures all-reduce bus bandwidth and a plain TCP copy rate for each size in `sizes_bytes`.
///
/// Every rank of `ring` must call this with the same sizes and `repeats`. Each size is
/// rounded down to whole f32 values, at least one. Per size, the ranks run one untimed
/// all-reduce, then `repeats` timed ones, then rank 0 copies the same number of bytes to
/// rank 1 `repeats` times over a connection opened for the benchmark. The rows use rank 0's
/// times and are the same on every rank. `ssgan bench allreduce` should start two worker
/// processes on the same ring, call this on both, and print [`AllReduceBenchRow::to_json_line`]
/// of each row on rank 0.
///
/// Fails with [`CollectiveError::InvalidCall`] for world size 1 or zero repeats, and with the
/// ring's errors when a peer fails or times out.
pub fn bench_all_reduce(
    ring: &TcpRing,
    sizes_bytes: &[usize],
    repeats: usize,
) -> Result<Vec<AllReduceBenchRow>, CollectiveError> {
    let world = ring.world_size();
    if world < 2 || repeats == 0 {
        return Err(CollectiveError::InvalidCall {
            operation: OPERATION,
            reason: format!("needs world size >= 2 and repeats >= 1, got {world} and {repeats}"),
        });
    }
    let mut copy = CopyLink::open(ring)?;
    let mut rows = Vec::with_capacity(sizes_bytes.len());
    for &requested in sizes_bytes {
        let len = (requested / 4).max(1);
        let all_reduce_seconds = time_all_reduce(ring, len, repeats)?;
        let copy_seconds = copy.time(ring, 4 * len, repeats)?;
        let mut times = [all_reduce_seconds as f32, copy_seconds as f32];
        ring.broadcast(&mut times, 0)?;
        rows.push(row(4 * len, world, times));
    }
    Ok(rows)
}

fn row(bytes: usize, world: usize, [all_reduce, copy]: [f32; 2]) -> AllReduceBenchRow {
    let gbps = |seconds: f32| bytes as f64 / f64::from(seconds) / 1e9;
    let bus_factor = 2.0 * (world - 1) as f64 / world as f64;
    AllReduceBenchRow {
        bytes,
        bus_gbps: gbps(all_reduce) * bus_factor,
        tcp_copy_gbps: gbps(copy),
    }
}

/// Returns the mean seconds of one all-reduce of `len` values after one untimed call.
fn time_all_reduce(ring: &TcpRing, len: usize, repeats: usize) -> Result<f64, CollectiveError> {
    let mut data = vec![1.0f32; len];
    ring.all_reduce_sum(&mut data)?;
    ring.barrier()?;
    let start = Instant::now();
    for _ in 0..repeats {
        ring.all_reduce_sum(&mut data)?;
    }
    Ok(start.elapsed().as_secs_f64() / repeats as f64)
}

/// The benchmark's own connection from rank 0 to rank 1; other ranks hold none.
struct CopyLink {
    stream: Option<TcpStream>,
    buffer: Vec<u8>,
}

impl CopyLink {
    /// Opens the connection: rank 1 listens next to its ring connection and broadcasts the
    /// port, and rank 0 connects to rank 1's address.
    fn open(ring: &TcpRing) -> Result<Self, CollectiveError> {
        let addresses = ring.link_addresses().ok_or(CollectiveError::InvalidCall {
            operation: OPERATION,
            reason: "the ring has no connections".into(),
        })?;
        let listener = match ring.rank() {
            1 => Some(bind_near(addresses.prev_local).map_err(|e| peer_error(0, e))?),
            _ => None,
        };
        let port = listener
            .as_ref()
            .map_or(Ok(0), |l| l.local_addr().map(|a| a.port()));
        let mut port = [f32::from(port.map_err(|e| peer_error(0, e))?)];
        ring.broadcast(&mut port, 1)?;
        let stream = match (ring.rank(), listener) {
            (0, _) => Some(connect(addresses.next_peer, port[0] as u16, ring)?),
            (_, Some(listener)) => Some(accept(listener, ring)?),
            _ => None,
        };
        Ok(Self {
            stream,
            buffer: Vec::new(),
        })
    }

    /// Returns rank 0's mean seconds per copy of `bytes` bytes; other ranks return 0.
    fn time(
        &mut self,
        ring: &TcpRing,
        bytes: usize,
        repeats: usize,
    ) -> Result<f64, CollectiveError> {
        self.buffer.resize(bytes, 0x5a);
        ring.barrier()?;
        let peer = 1 - ring.rank().min(1);
        let Some(stream) = self.stream.as_mut() else {
            return Ok(0.0);
        };
        let start = Instant::now();
        for _ in 0..repeats {
            let copied = match ring.rank() {
                0 => send_and_wait(stream, &self.buffer),
                _ => receive_and_reply(stream, &mut self.buffer),
            };
            copied.map_err(|e| peer_error(peer, e))?;
        }
        Ok(start.elapsed().as_secs_f64() / repeats as f64)
    }
}

fn bind_near(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(address.ip(), 0))
}

fn connect(address: SocketAddr, port: u16, ring: &TcpRing) -> Result<TcpStream, CollectiveError> {
    let target = SocketAddr::new(address.ip(), port);
    let timeout = Some(ring.config().op_timeout);
    TcpStream::connect_timeout(&target, ring.config().op_timeout)
        .and_then(|stream| configure(stream, timeout))
        .map_err(|e| peer_error(1, e))
}

/// Accepts rank 0's connection, waiting at most the ring's `op_timeout`.
fn accept(listener: TcpListener, ring: &TcpRing) -> Result<TcpStream, CollectiveError> {
    let timeout = ring.config().op_timeout;
    let deadline = Instant::now() + timeout;
    listener
        .set_nonblocking(true)
        .map_err(|e| peer_error(0, e))?;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let blocking = stream.set_nonblocking(false).map(|()| stream);
                return blocking
                    .and_then(|stream| configure(stream, Some(timeout)))
                    .map_err(|e| peer_error(0, e));
            }
            Err(error) if error.kind() != std::io::ErrorKind::WouldBlock => {
                return Err(peer_error(0, error));
            }
            Err(_) if Instant::now() >= deadline => {
                return Err(CollectiveError::Timeout {
                    operation: OPERATION,
                    peer: 0,
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

fn configure(
    stream: TcpStream,
    timeout: Option<std::time::Duration>,
) -> std::io::Result<TcpStream> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    Ok(stream)
}

fn send_and_wait(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes)?;
    stream.read_exact(&mut [0u8; 1])
}

fn receive_and_reply(stream: &mut TcpStream, buffer: &mut [u8]) -> std::io::Result<()> {
    stream.read_exact(buffer)?;
    stream.write_all(&[1])
}

fn peer_error(peer: usize, source: std::io::Error) -> CollectiveError {
    CollectiveError::Peer {
        operation: OPERATION,
        peer,
        source,
    }
}
