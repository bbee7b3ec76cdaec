//! The 16-byte completion queue entry (NVMe Base 2.0 §4.2).
//!
//! | bytes  | field                                                   |
//! |--------|---------------------------------------------------------|
//! | 0..4   | DW0, command specific (Connect: CNTLID; Property Get: value low) |
//! | 4..8   | DW1, command specific (Property Get: value high)        |
//! | 8..10  | SQ head pointer (SQHD)                                  |
//! | 10..12 | SQ identifier (SQID)                                    |
//! | 12..14 | command identifier (CID)                                |
//! | 14..16 | status field: P bit 0, SC 8:1, SCT 11:9, CRD 13:12, M 14, DNR 15 |

use crate::nvme::status::Status;
use crate::wire::{put_u16, put_u32, u16_at, u32_at};

/// Size of a completion queue entry.
pub const CQE_LEN: usize = 16;

/// One completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionQueueEntry {
    /// Dword 0, command specific.
    pub dw0: u32,
    /// Dword 1, command specific.
    pub dw1: u32,
    /// Submission queue head pointer. Over fabrics with SQ flow control
    /// disabled the host ignores it, but targets still advance it.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier of the completed command.
    pub cid: u16,
    /// SCT, SC and DNR.
    pub status: Status,
    /// Phase tag. Meaningless over fabrics (every CQE travels in its own
    /// capsule) and sent as 0.
    pub phase: bool,
    /// Command Retry Delay selector (0 = none, 1..=3 = Identify CRDT1..3).
    pub crd: u8,
    /// More: extra status information in the Error Information log.
    pub more: bool,
}

impl CompletionQueueEntry {
    /// A completion for `cid` with `status`; everything else zero.
    pub const fn new(cid: u16, status: Status) -> Self {
        Self {
            dw0: 0,
            dw1: 0,
            sqhd: 0,
            sqid: 0,
            cid,
            status,
            phase: false,
            crd: 0,
            more: false,
        }
    }

    /// Decodes a CQE; every 16-byte pattern is a valid entry.
    pub fn decode(bytes: &[u8; CQE_LEN]) -> Self {
        let field = u16_at(bytes, 14);
        Self {
            dw0: u32_at(bytes, 0),
            dw1: u32_at(bytes, 4),
            sqhd: u16_at(bytes, 8),
            sqid: u16_at(bytes, 10),
            cid: u16_at(bytes, 12),
            status: Status::from_field_bits(field),
            phase: field & 1 != 0,
            crd: ((field >> 12) & 0x3) as u8,
            more: field & (1 << 14) != 0,
        }
    }

    /// The 16-bit status field at bytes 14..16.
    pub const fn status_field(&self) -> u16 {
        self.status.to_field_bits()
            | (self.phase as u16)
            | (((self.crd & 0x3) as u16) << 12)
            | ((self.more as u16) << 14)
    }

    /// Writes the CQE into `out`. CRD is truncated to its 2 bits.
    pub fn write_into(&self, out: &mut [u8; CQE_LEN]) {
        put_u32(out, 0, self.dw0);
        put_u32(out, 4, self.dw1);
        put_u16(out, 8, self.sqhd);
        put_u16(out, 10, self.sqid);
        put_u16(out, 12, self.cid);
        put_u16(out, 14, self.status_field());
    }

    /// The CQE as bytes.
    pub fn encode(&self) -> [u8; CQE_LEN] {
        let mut out = [0u8; CQE_LEN];
        self.write_into(&mut out);
        out
    }

    /// DW0 and DW1 as one 64-bit value (Property Get of an 8-byte property).
    pub const fn result_u64(&self) -> u64 {
        (self.dw0 as u64) | ((self.dw1 as u64) << 32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::status::StatusCodeType;

    #[test]
    fn fields_sit_at_spec_offsets() {
        let cqe = CompletionQueueEntry {
            dw0: 0x0403_0201,
            dw1: 0x0807_0605,
            sqhd: 0x0A09,
            sqid: 0x0C0B,
            cid: 0x0E0D,
            status: Status::new(StatusCodeType::PathRelated, 0x02, true),
            phase: true,
            crd: 2,
            more: true,
        };
        let bytes = cqe.encode();
        assert_eq!(
            &bytes[..14],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
        );
        // P=1, SC=02h<<1, SCT=3<<9, CRD=2<<12, M<<14, DNR<<15.
        let field: u16 = 1 | (0x02 << 1) | (3 << 9) | (2 << 12) | (1 << 14) | (1 << 15);
        assert_eq!(&bytes[14..16], &field.to_le_bytes());
        assert_eq!(CompletionQueueEntry::decode(&bytes), cqe);
    }

    #[test]
    fn every_status_field_round_trips() {
        for field in 0..=u16::MAX {
            let mut bytes = [0u8; CQE_LEN];
            bytes[14..16].copy_from_slice(&field.to_le_bytes());
            let cqe = CompletionQueueEntry::decode(&bytes);
            assert_eq!(cqe.status_field(), field);
            assert_eq!(cqe.encode(), bytes);
        }
    }

    #[test]
    fn property_value_spans_dw0_dw1() {
        let mut cqe = CompletionQueueEntry::new(7, Status::SUCCESS);
        cqe.dw0 = 0xF000_03FF;
        cqe.dw1 = 0x0000_0820;
        assert_eq!(cqe.result_u64(), 0x0000_0820_F000_03FF);
    }
}
