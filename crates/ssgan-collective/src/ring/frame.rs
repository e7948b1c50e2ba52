//! Wire format of the ring's data connections.
//!
//! Every message is a 32-byte little-endian header followed by `payload_len` f32 values in
//! little-endian order. The header carries the identity of the collective call, so a rank that
//! issued another call, length or root than its peer fails with a mismatch error instead of
//! summing unrelated data.

use std::io::Read;

pub(crate) const HEADER_BYTES: usize = 32;

const KIND_DATA: u32 = 1;
const KIND_ABORT: u32 = 2;

/// The collective that a data frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpCode {
    AllReduceSum = 1,
    Broadcast = 2,
    Barrier = 3,
}

impl OpCode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpCode::AllReduceSum => "all_reduce_sum",
            OpCode::Broadcast => "broadcast",
            OpCode::Barrier => "barrier",
        }
    }

    fn from_wire(code: u32) -> Option<Self> {
        match code {
            1 => Some(OpCode::AllReduceSum),
            2 => Some(OpCode::Broadcast),
            3 => Some(OpCode::Barrier),
            _ => None,
        }
    }
}

/// Identity of one collective call, equal on every rank that takes part in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CallId {
    pub op: OpCode,
    /// Number of collectives this communicator issued before, counting from 1.
    pub seq: u64,
    /// Element count of the caller's slice.
    pub len: u64,
    /// Root rank of a broadcast, 0 otherwise.
    pub root: u32,
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} #{} of {} elements (root {})",
            self.op.name(),
            self.seq,
            self.len,
            self.root
        )
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    Data {
        call: CallId,
        payload_len: usize,
    },
    Abort {
        failed_rank: usize,
    },
    /// A header whose kind or op code this version does not know.
    Invalid {
        kind: u32,
        op: u32,
    },
}

/// Encodes a data frame of `call` with `values` as payload.
pub(crate) fn encode_data(call: CallId, values: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_BYTES + 4 * values.len());
    bytes.extend_from_slice(&KIND_DATA.to_le_bytes());
    bytes.extend_from_slice(&(call.op as u32).to_le_bytes());
    bytes.extend_from_slice(&call.seq.to_le_bytes());
    bytes.extend_from_slice(&call.len.to_le_bytes());
    bytes.extend_from_slice(&(values.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&call.root.to_le_bytes());
    for value in values {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// Encodes an abort frame that reports `failed_rank` as failed.
pub(crate) fn encode_abort(failed_rank: usize) -> Vec<u8> {
    let mut bytes = vec![0; HEADER_BYTES];
    bytes[0..4].copy_from_slice(&KIND_ABORT.to_le_bytes());
    bytes[28..32].copy_from_slice(&(failed_rank as u32).to_le_bytes());
    bytes
}

/// Reads and decodes one header from `stream`.
pub(crate) fn read_header(stream: &mut impl Read) -> std::io::Result<Header> {
    let mut raw = [0u8; HEADER_BYTES];
    stream.read_exact(&mut raw)?;
    Ok(decode_header(&raw))
}

fn decode_header(raw: &[u8; HEADER_BYTES]) -> Header {
    let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    let long = |at: usize| u64::from(word(at)) | (u64::from(word(at + 4)) << 32);
    let (kind, op) = (word(0), word(4));
    match (kind, OpCode::from_wire(op)) {
        (KIND_ABORT, _) => Header::Abort {
            failed_rank: word(28) as usize,
        },
        (KIND_DATA, Some(op)) => Header::Data {
            call: CallId {
                op,
                seq: long(8),
                len: long(16),
                root: word(28),
            },
            payload_len: word(24) as usize,
        },
        _ => Header::Invalid { kind, op },
    }
}

/// Adds the little-endian f32 values in `bytes` to `target`, element by element.
pub(crate) fn add_into(target: &mut [f32], bytes: &[u8]) {
    for (value, raw) in target.iter_mut().zip(bytes.chunks_exact(4)) {
        *value += f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    }
}

/// Overwrites `target` with the little-endian f32 values in `bytes`.
pub(crate) fn copy_into(target: &mut [f32], bytes: &[u8]) {
    for (value, raw) in target.iter_mut().zip(bytes.chunks_exact(4)) {
        *value = f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> CallId {
        CallId {
            op: OpCode::Broadcast,
            seq: (7 << 32) + 3,
            len: 5_000_000_123,
            root: 2,
        }
    }

    #[test]
    fn data_header_round_trips() {
        let bytes = encode_data(call(), &[1.5, -2.0]);
        let header = read_header(&mut bytes.as_slice()).unwrap();
        let expected = Header::Data {
            call: call(),
            payload_len: 2,
        };
        assert_eq!(header, expected);
        assert_eq!(bytes.len(), HEADER_BYTES + 8);
    }

    #[test]
    fn payload_adds_and_copies() {
        let bytes = encode_data(call(), &[1.5, -2.0]);
        let mut values = [1.0, 1.0];
        add_into(&mut values, &bytes[HEADER_BYTES..]);
        assert_eq!(values, [2.5, -1.0]);
        copy_into(&mut values, &bytes[HEADER_BYTES..]);
        assert_eq!(values, [1.5, -2.0]);
    }

    #[test]
    fn abort_header_names_failed_rank() {
        let bytes = encode_abort(3);
        let header = read_header(&mut bytes.as_slice()).unwrap();
        assert_eq!(header, Header::Abort { failed_rank: 3 });
    }

    #[test]
    fn unknown_kind_is_invalid() {
        let mut bytes = encode_abort(3);
        bytes[0] = 9;
        let header = read_header(&mut bytes.as_slice()).unwrap();
        assert_eq!(header, Header::Invalid { kind: 9, op: 0 });
    }
}
