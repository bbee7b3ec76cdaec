//! The header every SEND on an RDMA link starts with.
//!
//! ```text
//! 0      2        4              8
//! +------+--------+--------------+----------------------+
//! | magic| credits| length (u32) | length bytes of data |
//! +------+--------+--------------+----------------------+
//! ```
//!
//! All little-endian. `credits` returns that many of the sender's receive
//! buffers (reposted since its last message) to the receiver's send window;
//! `length` bytes of the replication stream follow (0 for a credit-only
//! message). The data is the next piece of the link's byte stream: wire
//! frames encoded by `link::encode`, cut wherever a buffer ends, so one
//! SEND may hold several small frames or part of a large one.

use super::error::RdmaError;

/// Bytes of the message header.
pub const HEADER_LEN: usize = 8;
/// Magic of every message ("KL", Keel link).
const MAGIC: u16 = 0x4c4b;

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHeader {
    /// Receive buffers returned to the receiver of this message.
    pub credits: u16,
    /// Stream bytes that follow.
    pub len: u32,
}

impl MessageHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [m0, m1] = MAGIC.to_le_bytes();
        let [c0, c1] = self.credits.to_le_bytes();
        let [l0, l1, l2, l3] = self.len.to_le_bytes();
        [m0, m1, c0, c1, l0, l1, l2, l3]
    }

    /// Reads the header of a received message of `message.len()` bytes
    /// and returns it with the data that follows. Refuses a message that
    /// is shorter than its header, has another magic, or whose length
    /// disagrees with the bytes received.
    pub fn decode(message: &[u8]) -> Result<(Self, &[u8]), RdmaError> {
        let (header, data) = message
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(RdmaError::Protocol("message shorter than its header"))?;
        let [m0, m1, c0, c1, l0, l1, l2, l3] = *header;
        if u16::from_le_bytes([m0, m1]) != MAGIC {
            return Err(RdmaError::Protocol("bad message magic"));
        }
        let header = MessageHeader {
            credits: u16::from_le_bytes([c0, c1]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
        };
        if usize::try_from(header.len).ok() != Some(data.len()) {
            return Err(RdmaError::Protocol(
                "message length disagrees with the bytes received",
            ));
        }
        Ok((header, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let header = MessageHeader { credits: 7, len: 3 };
        let mut message = header.encode().to_vec();
        message.extend_from_slice(b"abc");
        let (got, data) = MessageHeader::decode(&message).unwrap();
        assert_eq!(got, header);
        assert_eq!(data, b"abc");
    }

    #[test]
    fn refuses_short_foreign_and_inconsistent_messages() {
        assert!(MessageHeader::decode(&[0x4b, 0x4c, 0, 0]).is_err());
        let mut message = MessageHeader { credits: 0, len: 4 }.encode().to_vec();
        message.extend_from_slice(b"abc");
        assert!(MessageHeader::decode(&message).is_err());
        message.push(b'd');
        assert!(MessageHeader::decode(&message).is_ok());
        message[0] = 0;
        assert!(MessageHeader::decode(&message).is_err());
    }
}
