//! Header and data digests: CRC32C (Castagnoli), sent little-endian
//! (NVMe/TCP 1.0 §3.6, "PDU digests").
//!
//! The header digest covers the `hlen` header bytes; the data digest
//! covers the data only, not the padding before it.

use crate::tcp::pdu::DIGEST_LEN;

/// CRC32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// A data digest computed over data that arrives or leaves in pieces, e.g.
/// straight from the socket into a registered buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataDigest {
    crc: u32,
}

impl DataDigest {
    /// Starts an empty digest.
    pub const fn new() -> Self {
        Self { crc: 0 }
    }

    /// Adds the next piece of data.
    pub fn update(&mut self, bytes: &[u8]) {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
    }

    /// The CRC32C of everything added.
    pub const fn value(&self) -> u32 {
        self.crc
    }

    /// The digest as it goes on the wire.
    pub const fn to_bytes(&self) -> [u8; DIGEST_LEN] {
        self.crc.to_le_bytes()
    }
}

/// The wire form of the digest of `bytes`.
pub fn digest_bytes(bytes: &[u8]) -> [u8; DIGEST_LEN] {
    crc32c(bytes).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector() {
        // The standard CRC32C check value (RFC 3720 appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(digest_bytes(b"123456789"), [0x83, 0x92, 0x06, 0xE3]);
    }

    #[test]
    fn incremental_matches_one_shot() {
        let data: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut digest = DataDigest::new();
        for piece in data.chunks(333) {
            digest.update(piece);
        }
        assert_eq!(digest.value(), crc32c(&data));
        assert_eq!(digest.to_bytes(), digest_bytes(&data));
    }
}
