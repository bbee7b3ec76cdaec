//! The link's configuration and the connection parameters both ends trade in
//! the rdma_cm private data of the connect request and of the accept.

use super::error::RdmaError;
use super::message::HEADER_LEN;

/// Magic of Keel's connection parameters ("KRDM").
const MAGIC: u32 = 0x4b52_444d;
/// Version of the RDMA link protocol (message header and credits).
pub const RDMA_LINK_VERSION: u16 = 1;
/// Encoded length of [`ConnParams`].
pub const PARAMS_LEN: usize = 12;

/// Smallest receive ring: fewer than 4 buffers leaves no room for the
/// credit reserve and a useful window (see `credit.rs`).
pub const MIN_DEPTH: u16 = 4;
/// Largest ring a link asks for (bounded so one link cannot pin unbounded
/// memory; 1024 x 64 KiB = 64 MiB).
pub const MAX_DEPTH: u16 = 1024;
/// Smallest buffer: room for a message header and a frame header.
pub const MIN_SLOT: u32 = 4096;
/// Largest buffer (one SEND of 1 MiB; frames larger than a buffer travel in
/// several SENDs anyway).
pub const MAX_SLOT: u32 = 1 << 20;

/// How a link sizes its registered buffers. Both ends may differ: each
/// tells the other its receive depth (the sender's initial credits) and
/// buffer size (the largest SEND it accepts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RdmaConfig {
    /// Receive buffers kept posted: the most SENDs the peer may have in
    /// flight to us (its credit window).
    pub recv_depth: u16,
    /// Send buffers: the most SENDs of ours in flight at once.
    pub send_depth: u16,
    /// Size of every buffer, message header included.
    pub slot_size: u32,
    /// Longest connection setup (resolve, connect or accept; not the PSK
    /// handshake, which has its own).
    pub setup_timeout: std::time::Duration,
}

impl Default for RdmaConfig {
    /// 16 receive and 16 send buffers of 64 KiB (2 MiB registered per
    /// link), 5 s to connect.
    fn default() -> Self {
        RdmaConfig {
            recv_depth: 16,
            send_depth: 16,
            slot_size: 64 * 1024,
            setup_timeout: std::time::Duration::from_secs(5),
        }
    }
}

impl RdmaConfig {
    /// Checks the bounds above.
    pub fn validate(&self) -> Result<(), RdmaError> {
        if !(MIN_DEPTH..=MAX_DEPTH).contains(&self.recv_depth) {
            return Err(RdmaError::Config("recv_depth must be 4..=1024"));
        }
        if !(1..=MAX_DEPTH).contains(&self.send_depth) {
            return Err(RdmaError::Config("send_depth must be 1..=1024"));
        }
        if !(MIN_SLOT..=MAX_SLOT).contains(&self.slot_size) {
            return Err(RdmaError::Config("slot_size must be 4 KiB..=1 MiB"));
        }
        if self.setup_timeout.is_zero() {
            return Err(RdmaError::Config("setup_timeout must not be zero"));
        }
        Ok(())
    }

    /// What this end tells its peer.
    pub fn params(&self) -> ConnParams {
        ConnParams {
            version: RDMA_LINK_VERSION,
            recv_depth: self.recv_depth,
            slot_size: self.slot_size,
        }
    }
}

/// One end's connection parameters, as carried in rdma_cm private data:
/// magic (u32), version (u16), receive depth (u16), buffer size (u32), all
/// little-endian. The connection manager may pad private data with zeros,
/// so a longer blob is fine; the first 12 bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnParams {
    /// Link protocol version.
    pub version: u16,
    /// Receive buffers the sender of these parameters keeps posted.
    pub recv_depth: u16,
    /// Size of each of them.
    pub slot_size: u32,
}

impl ConnParams {
    /// The 12 bytes of private data.
    pub fn encode(&self) -> [u8; PARAMS_LEN] {
        let mut out = [0u8; PARAMS_LEN];
        let (magic, rest) = out.split_at_mut(4);
        magic.copy_from_slice(&MAGIC.to_le_bytes());
        let (version, rest) = rest.split_at_mut(2);
        version.copy_from_slice(&self.version.to_le_bytes());
        let (depth, slot) = rest.split_at_mut(2);
        depth.copy_from_slice(&self.recv_depth.to_le_bytes());
        slot.copy_from_slice(&self.slot_size.to_le_bytes());
        out
    }

    /// Reads and checks a peer's private data.
    pub fn decode(data: &[u8]) -> Result<Self, RdmaError> {
        let bytes: &[u8; PARAMS_LEN] = data
            .get(..PARAMS_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(RdmaError::Handshake("private data shorter than 12 bytes"))?;
        let [m0, m1, m2, m3, v0, v1, d0, d1, s0, s1, s2, s3] = *bytes;
        if u32::from_le_bytes([m0, m1, m2, m3]) != MAGIC {
            return Err(RdmaError::Handshake("not a Keel RDMA link (bad magic)"));
        }
        let params = ConnParams {
            version: u16::from_le_bytes([v0, v1]),
            recv_depth: u16::from_le_bytes([d0, d1]),
            slot_size: u32::from_le_bytes([s0, s1, s2, s3]),
        };
        if params.version != RDMA_LINK_VERSION {
            return Err(RdmaError::Handshake("unsupported RDMA link version"));
        }
        if !(MIN_DEPTH..=MAX_DEPTH).contains(&params.recv_depth) {
            return Err(RdmaError::Handshake("peer's receive depth out of range"));
        }
        if !(MIN_SLOT..=MAX_SLOT).contains(&params.slot_size) {
            return Err(RdmaError::Handshake("peer's buffer size out of range"));
        }
        Ok(params)
    }

    /// Largest payload of one SEND to the end that sent these parameters
    /// when ours are `own_slot`-sized: the smaller buffer, less the header.
    pub fn max_payload(&self, own_slot: u32) -> usize {
        let slot = self.slot_size.min(own_slot);
        usize::try_from(slot)
            .unwrap_or(usize::MAX)
            .saturating_sub(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_tolerate_padding() {
        let params = RdmaConfig::default().params();
        let mut blob = params.encode().to_vec();
        blob.extend_from_slice(&[0; 44]);
        assert_eq!(ConnParams::decode(&blob).unwrap(), params);
        assert_eq!(params.max_payload(8192), 8192 - HEADER_LEN);
    }

    #[test]
    fn foreign_or_short_private_data_is_refused() {
        assert!(ConnParams::decode(&[0; 11]).is_err());
        assert!(ConnParams::decode(&[0; 56]).is_err());
        let mut blob = RdmaConfig::default().params().encode();
        blob[6] = 1; // depth 1 (little-endian low byte), high byte 0
        blob[7] = 0;
        assert!(ConnParams::decode(&blob).is_err());
    }

    #[test]
    fn config_bounds() {
        assert!(RdmaConfig::default().validate().is_ok());
        let small = RdmaConfig {
            recv_depth: 2,
            ..RdmaConfig::default()
        };
        assert!(small.validate().is_err());
        let big = RdmaConfig {
            slot_size: 2 << 20,
            ..RdmaConfig::default()
        };
        assert!(big.validate().is_err());
    }
}
