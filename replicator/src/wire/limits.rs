//! Hard limits of the protocol. Every length read from the wire is checked
//! against one of these before it is trusted, so a peer can never make a
//! receiver wait for, or reserve, more than a bounded amount of memory.

use crate::wire::header::MAX_HEADER_LEN;

/// Largest payload of any frame: 1 MiB, the size of a volume chunk (writes
/// are split at chunk boundaries before they reach a replication stream).
pub const MAX_PAYLOAD_LEN: u32 = 1 << 20;

/// Largest frame on the wire: the largest header plus the largest payload.
pub const MAX_FRAME_LEN: usize = MAX_HEADER_LEN + MAX_PAYLOAD_LEN as usize;

/// Most copies (primary included) a volume's membership may list.
pub const MAX_COPIES: usize = 16;

/// Longest address of a copy in a membership list, in bytes of UTF-8
/// (`host:port`, `[v6]:port`, or a DNS name with a port).
pub const MAX_ADDRESS_LEN: usize = 256;

/// Limits a receiver applies on top of the protocol's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_payload: u32,
}

impl Limits {
    /// Limits with a payload cap of `max_payload` bytes, clamped to
    /// [`MAX_PAYLOAD_LEN`] (a receiver may accept less, never more).
    pub fn with_max_payload(max_payload: u32) -> Self {
        Self {
            max_payload: max_payload.min(MAX_PAYLOAD_LEN),
        }
    }

    /// The payload cap in bytes.
    pub fn max_payload(&self) -> u32 {
        self.max_payload
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::with_max_payload(MAX_PAYLOAD_LEN)
    }
}
