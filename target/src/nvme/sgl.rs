//! Scatter Gather List descriptors (NVMe Base 2.0 §4.3.2).
//!
//! Fabrics commands always describe their data with one SGL descriptor in
//! SQE bytes 24..40 (SGL1). NVMe/TCP uses two kinds: Data Block with the
//! Offset subtype (01h) for in-capsule data, and Transport SGL Data Block
//! (5Ah) for data moved by C2HData, or by R2T and H2CData. Every 16-byte
//! descriptor ends with the SGL Identifier byte: type in bits 7:4, subtype
//! in bits 3:0.

use crate::wire::{put_bytes, put_u32, put_u64, u32_at, u64_at};

/// Size of one SGL descriptor.
pub const SGL_DESCRIPTOR_LEN: usize = 16;

/// SGL descriptor types (identifier bits 7:4).
pub mod sgl_type {
    /// Data Block.
    pub const DATA_BLOCK: u8 = 0x0;
    /// Bit Bucket.
    pub const BIT_BUCKET: u8 = 0x1;
    /// Segment.
    pub const SEGMENT: u8 = 0x2;
    /// Last Segment.
    pub const LAST_SEGMENT: u8 = 0x3;
    /// Keyed Data Block (RDMA).
    pub const KEYED_DATA_BLOCK: u8 = 0x4;
    /// Transport SGL Data Block.
    pub const TRANSPORT_DATA_BLOCK: u8 = 0x5;
}

/// SGL descriptor subtypes (identifier bits 3:0).
pub mod sgl_subtype {
    /// The address field is a host memory address.
    pub const ADDRESS: u8 = 0x0;
    /// The address field is an offset into the capsule (in-capsule data).
    pub const OFFSET: u8 = 0x1;
    /// Transport specific; NVMe/TCP uses Ah with the transport data block.
    pub const TRANSPORT: u8 = 0xA;
    /// Keyed data block: invalidate the key after the transfer (RDMA).
    pub const INVALIDATE_KEY: u8 = 0xF;
}

/// Identifier byte for in-capsule data (Data Block, Offset): 01h.
pub const SGL_ID_IN_CAPSULE: u8 = (sgl_type::DATA_BLOCK << 4) | sgl_subtype::OFFSET;
/// Identifier byte for NVMe/TCP transport data (Transport Data Block, Ah): 5Ah.
pub const SGL_ID_TRANSPORT_DATA_BLOCK: u8 =
    (sgl_type::TRANSPORT_DATA_BLOCK << 4) | sgl_subtype::TRANSPORT;

/// Largest length a keyed data block can carry (24-bit field).
pub const KEYED_LENGTH_MAX: u32 = 0x00FF_FFFF;

/// One SGL descriptor, decoded by its identifier byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SglDescriptor {
    /// Data Block at a host address (00h).
    DataBlock {
        /// Host address.
        address: u64,
        /// Length in bytes.
        length: u32,
    },
    /// Data Block, Offset subtype (01h): the data travels in the command
    /// capsule, `offset` bytes into the in-capsule data area.
    InCapsule {
        /// Offset from the start of the in-capsule data (ICDOFF-relative).
        offset: u64,
        /// Length in bytes.
        length: u32,
    },
    /// Bit Bucket (10h): data to discard (reads only).
    BitBucket {
        /// Length in bytes.
        length: u32,
    },
    /// Segment (20h) or Last Segment (30h) pointing to more descriptors.
    Segment {
        /// Host address of the next segment.
        address: u64,
        /// Length of the next segment in bytes.
        length: u32,
        /// Last Segment (30h) rather than Segment (20h).
        last: bool,
    },
    /// Keyed Data Block (40h, or 4Fh to invalidate the key), used by RDMA.
    KeyedDataBlock {
        /// Remote address.
        address: u64,
        /// Length in bytes (24 bits on the wire).
        length: u32,
        /// Remote key.
        key: u32,
        /// Subtype Fh: invalidate the key after the transfer.
        invalidate: bool,
    },
    /// Transport SGL Data Block, transport-specific subtype (5Ah): NVMe/TCP
    /// moves the data with C2HData or R2T + H2CData PDUs.
    TransportDataBlock {
        /// Length in bytes.
        length: u32,
    },
    /// Any other identifier, kept verbatim so a target can answer "SGL
    /// Descriptor Type Invalid" and re-encoding is lossless.
    Unsupported([u8; SGL_DESCRIPTOR_LEN]),
}

impl SglDescriptor {
    /// Decodes a descriptor. Never fails: unknown identifiers become
    /// [`SglDescriptor::Unsupported`].
    pub fn decode(bytes: &[u8; SGL_DESCRIPTOR_LEN]) -> Self {
        let address = u64_at(bytes, 0);
        let length = u32_at(bytes, 8);
        let identifier = bytes[15];
        let subtype = identifier & 0x0F;
        match (identifier >> 4, subtype) {
            (sgl_type::DATA_BLOCK, sgl_subtype::ADDRESS) => Self::DataBlock { address, length },
            (sgl_type::DATA_BLOCK, sgl_subtype::OFFSET) => Self::InCapsule {
                offset: address,
                length,
            },
            (sgl_type::BIT_BUCKET, sgl_subtype::ADDRESS) => Self::BitBucket { length },
            (sgl_type::SEGMENT, sgl_subtype::ADDRESS) => Self::Segment {
                address,
                length,
                last: false,
            },
            (sgl_type::LAST_SEGMENT, sgl_subtype::ADDRESS) => Self::Segment {
                address,
                length,
                last: true,
            },
            (sgl_type::KEYED_DATA_BLOCK, sgl_subtype::ADDRESS | sgl_subtype::INVALIDATE_KEY) => {
                // Keyed layout: 24-bit length in bytes 8..11, key in 11..15.
                Self::KeyedDataBlock {
                    address,
                    length: length & KEYED_LENGTH_MAX,
                    key: u32_at(bytes, 11),
                    invalidate: subtype == sgl_subtype::INVALIDATE_KEY,
                }
            }
            (sgl_type::TRANSPORT_DATA_BLOCK, sgl_subtype::TRANSPORT) => {
                Self::TransportDataBlock { length }
            }
            _ => Self::Unsupported(*bytes),
        }
    }

    /// Encodes the descriptor; reserved bytes are zero.
    ///
    /// A keyed length above [`KEYED_LENGTH_MAX`] is truncated to 24 bits.
    pub fn encode(&self) -> [u8; SGL_DESCRIPTOR_LEN] {
        let mut out = [0u8; SGL_DESCRIPTOR_LEN];
        let (address, length, identifier) = match *self {
            Self::DataBlock { address, length } => (address, length, 0x00),
            Self::InCapsule { offset, length } => (offset, length, SGL_ID_IN_CAPSULE),
            Self::BitBucket { length } => (0, length, sgl_type::BIT_BUCKET << 4),
            Self::Segment {
                address,
                length,
                last,
            } => {
                let ty = if last {
                    sgl_type::LAST_SEGMENT
                } else {
                    sgl_type::SEGMENT
                };
                (address, length, ty << 4)
            }
            Self::KeyedDataBlock {
                address,
                length,
                key,
                invalidate,
            } => {
                put_u64(&mut out, 0, address);
                put_bytes(&mut out, 8, &(length & KEYED_LENGTH_MAX).to_le_bytes()[..3]);
                put_u32(&mut out, 11, key);
                let subtype = if invalidate {
                    sgl_subtype::INVALIDATE_KEY
                } else {
                    sgl_subtype::ADDRESS
                };
                out[15] = (sgl_type::KEYED_DATA_BLOCK << 4) | subtype;
                return out;
            }
            Self::TransportDataBlock { length } => (0, length, SGL_ID_TRANSPORT_DATA_BLOCK),
            Self::Unsupported(raw) => return raw,
        };
        put_u64(&mut out, 0, address);
        put_u32(&mut out, 8, length);
        out[15] = identifier;
        out
    }

    /// The SGL identifier byte (type << 4 | subtype).
    pub fn identifier(&self) -> u8 {
        self.encode()[15]
    }

    /// The number of data bytes the descriptor describes, if it describes data.
    pub fn data_length(&self) -> Option<u32> {
        match *self {
            Self::DataBlock { length, .. }
            | Self::InCapsule { length, .. }
            | Self::BitBucket { length }
            | Self::KeyedDataBlock { length, .. }
            | Self::TransportDataBlock { length } => Some(length),
            Self::Segment { .. } | Self::Unsupported(_) => None,
        }
    }

    /// Reads the raw identifier byte of an encoded descriptor.
    pub fn identifier_of(bytes: &[u8; SGL_DESCRIPTOR_LEN]) -> u8 {
        bytes[15]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_capsule_connect_descriptor_bytes() {
        // What the Linux host puts in a Connect capsule: offset 0, 1024 bytes, 01h.
        let sgl = SglDescriptor::InCapsule {
            offset: 0,
            length: 1024,
        };
        let mut expected = [0u8; 16];
        expected[8..12].copy_from_slice(&1024u32.to_le_bytes());
        expected[15] = 0x01;
        assert_eq!(sgl.encode(), expected);
        assert_eq!(SglDescriptor::decode(&expected), sgl);
    }

    #[test]
    fn transport_data_block_bytes() {
        let sgl = SglDescriptor::TransportDataBlock { length: 65536 };
        let bytes = sgl.encode();
        assert_eq!(&bytes[8..12], &[0x00, 0x00, 0x01, 0x00]);
        assert_eq!(bytes[15], 0x5A);
        assert_eq!(sgl.identifier(), SGL_ID_TRANSPORT_DATA_BLOCK);
        assert_eq!(SglDescriptor::decode(&bytes), sgl);
    }

    #[test]
    fn keyed_descriptor_layout() {
        let sgl = SglDescriptor::KeyedDataBlock {
            address: 0x1122_3344_5566_7788,
            length: 0x00AB_CDEF,
            key: 0xDEAD_BEEF,
            invalidate: true,
        };
        let bytes = sgl.encode();
        assert_eq!(&bytes[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&bytes[8..11], &[0xEF, 0xCD, 0xAB]);
        assert_eq!(&bytes[11..15], &0xDEAD_BEEFu32.to_le_bytes());
        assert_eq!(bytes[15], 0x4F);
        assert_eq!(SglDescriptor::decode(&bytes), sgl);
    }

    #[test]
    fn unknown_identifier_is_kept() {
        let mut raw = [7u8; 16];
        raw[15] = 0x21; // Segment with Offset subtype: not supported here.
        let sgl = SglDescriptor::decode(&raw);
        assert_eq!(sgl, SglDescriptor::Unsupported(raw));
        assert_eq!(sgl.encode(), raw);
        assert_eq!(sgl.data_length(), None);
        assert_eq!(SglDescriptor::identifier_of(&raw), 0x21);
    }
}
