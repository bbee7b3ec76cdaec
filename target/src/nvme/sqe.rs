//! The 64-byte submission queue entry (NVMe Base 2.0 §4.1).
//!
//! Layout shared by admin, I/O and Fabrics commands:
//!
//! | bytes  | field                                           |
//! |--------|-------------------------------------------------|
//! | 0      | opcode                                          |
//! | 1      | flags: FUSE bits 1:0, PSDT bits 7:6             |
//! | 2..4   | command identifier (CID)                        |
//! | 4..8   | NSID (Fabrics: byte 4 is FCTYPE, rest reserved) |
//! | 8..16  | CDW2, CDW3                                      |
//! | 16..24 | metadata pointer (MPTR)                         |
//! | 24..40 | data pointer (DPTR; SGL1 on fabrics)            |
//! | 40..64 | CDW10 ..= CDW15                                 |
//!
//! The struct keeps every byte, so decode followed by encode is lossless;
//! interpretation (opcode tables, SGL, Fabrics fields) happens in accessors.

use crate::nvme::opcode::{AdminOpcode, FabricsCommandType, IoOpcode, FABRICS_OPCODE};
use crate::nvme::sgl::{SglDescriptor, SGL_DESCRIPTOR_LEN};
use crate::wire::{array_at, put_bytes, put_u16, put_u32, put_u64, u16_at, u32_at, u64_at};

/// Size of a submission queue entry.
pub const SQE_LEN: usize = 64;

/// PRP or SGL Data Transfer (PSDT, flags bits 7:6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Psdt {
    /// 00b: PRPs (PCIe only).
    Prp,
    /// 01b: SGLs, metadata pointer is a contiguous buffer. Fabrics hosts
    /// (Linux included) use this value.
    SglMetadataBuffer,
    /// 10b: SGLs, metadata pointer addresses an SGL segment.
    SglMetadataSegment,
    /// 11b: reserved.
    Reserved,
}

impl Psdt {
    const fn from_bits(bits: u8) -> Self {
        match bits & 0x3 {
            0 => Self::Prp,
            1 => Self::SglMetadataBuffer,
            2 => Self::SglMetadataSegment,
            _ => Self::Reserved,
        }
    }

    const fn bits(self) -> u8 {
        match self {
            Self::Prp => 0,
            Self::SglMetadataBuffer => 1,
            Self::SglMetadataSegment => 2,
            Self::Reserved => 3,
        }
    }
}

/// One submission queue entry, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubmissionQueueEntry {
    /// Opcode; see [`AdminOpcode`] / [`IoOpcode`] depending on the queue.
    pub opcode: u8,
    /// FUSE (bits 1:0) and PSDT (bits 7:6).
    pub flags: u8,
    /// Command identifier, echoed in the completion. The Linux host keeps a
    /// generation counter in bits 15:12, so it must be echoed verbatim.
    pub cid: u16,
    /// Namespace identifier (for Fabrics commands byte 4 is FCTYPE).
    pub nsid: u32,
    /// Command dword 2.
    pub cdw2: u32,
    /// Command dword 3.
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// Data pointer, raw; on fabrics this is SGL1 (see [`Self::sgl1`]).
    pub dptr: [u8; SGL_DESCRIPTOR_LEN],
    /// Command dword 10.
    pub cdw10: u32,
    /// Command dword 11.
    pub cdw11: u32,
    /// Command dword 12.
    pub cdw12: u32,
    /// Command dword 13.
    pub cdw13: u32,
    /// Command dword 14.
    pub cdw14: u32,
    /// Command dword 15.
    pub cdw15: u32,
}

impl SubmissionQueueEntry {
    /// Decodes an SQE; every 64-byte pattern is a valid entry.
    pub fn decode(bytes: &[u8; SQE_LEN]) -> Self {
        Self {
            opcode: bytes[0],
            flags: bytes[1],
            cid: u16_at(bytes, 2),
            nsid: u32_at(bytes, 4),
            cdw2: u32_at(bytes, 8),
            cdw3: u32_at(bytes, 12),
            mptr: u64_at(bytes, 16),
            dptr: array_at(bytes, 24),
            cdw10: u32_at(bytes, 40),
            cdw11: u32_at(bytes, 44),
            cdw12: u32_at(bytes, 48),
            cdw13: u32_at(bytes, 52),
            cdw14: u32_at(bytes, 56),
            cdw15: u32_at(bytes, 60),
        }
    }

    /// Writes the SQE into `out`.
    pub fn write_into(&self, out: &mut [u8; SQE_LEN]) {
        out[0] = self.opcode;
        out[1] = self.flags;
        put_u16(out, 2, self.cid);
        put_u32(out, 4, self.nsid);
        put_u32(out, 8, self.cdw2);
        put_u32(out, 12, self.cdw3);
        put_u64(out, 16, self.mptr);
        put_bytes(out, 24, &self.dptr);
        put_u32(out, 40, self.cdw10);
        put_u32(out, 44, self.cdw11);
        put_u32(out, 48, self.cdw12);
        put_u32(out, 52, self.cdw13);
        put_u32(out, 56, self.cdw14);
        put_u32(out, 60, self.cdw15);
    }

    /// The SQE as bytes.
    pub fn encode(&self) -> [u8; SQE_LEN] {
        let mut out = [0u8; SQE_LEN];
        self.write_into(&mut out);
        out
    }

    /// Fused operation bits (FUSE, flags bits 1:0): 0 = normal.
    pub const fn fuse(&self) -> u8 {
        self.flags & 0x3
    }

    /// PRP or SGL selection (flags bits 7:6).
    pub const fn psdt(&self) -> Psdt {
        Psdt::from_bits(self.flags >> 6)
    }

    /// Sets PSDT, keeping the other flag bits.
    pub fn set_psdt(&mut self, psdt: Psdt) {
        self.flags = (self.flags & 0x3F) | (psdt.bits() << 6);
    }

    /// The opcode read as an admin command (admin queue).
    pub const fn admin_opcode(&self) -> AdminOpcode {
        AdminOpcode::from_u8(self.opcode)
    }

    /// The opcode read as an NVM I/O command (I/O queues).
    pub const fn io_opcode(&self) -> IoOpcode {
        IoOpcode::from_u8(self.opcode)
    }

    /// Whether this is a Fabrics command (opcode 7Fh).
    pub const fn is_fabrics(&self) -> bool {
        self.opcode == FABRICS_OPCODE
    }

    /// FCTYPE (byte 4) when this is a Fabrics command.
    pub const fn fabrics_type(&self) -> Option<FabricsCommandType> {
        if self.is_fabrics() {
            Some(FabricsCommandType::from_u8(self.nsid.to_le_bytes()[0]))
        } else {
            None
        }
    }

    /// SGL1, the data pointer read as an SGL descriptor.
    pub fn sgl1(&self) -> SglDescriptor {
        SglDescriptor::decode(&self.dptr)
    }

    /// Stores `sgl` as SGL1.
    pub fn set_sgl1(&mut self, sgl: SglDescriptor) {
        self.dptr = sgl.encode();
    }

    /// Command dwords 10..=15 as an array (index 0 is CDW10).
    pub const fn cdw10_15(&self) -> [u32; 6] {
        [
            self.cdw10, self.cdw11, self.cdw12, self.cdw13, self.cdw14, self.cdw15,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_bytes() -> [u8; SQE_LEN] {
        let mut bytes = [0u8; SQE_LEN];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = index as u8;
        }
        bytes
    }

    #[test]
    fn fields_sit_at_spec_offsets() {
        let sqe = SubmissionQueueEntry::decode(&sample_bytes());
        assert_eq!(sqe.opcode, 0x00);
        assert_eq!(sqe.flags, 0x01);
        assert_eq!(sqe.cid, 0x0302);
        assert_eq!(sqe.nsid, 0x0706_0504);
        assert_eq!(sqe.cdw2, 0x0B0A_0908);
        assert_eq!(sqe.cdw3, 0x0F0E_0D0C);
        assert_eq!(sqe.mptr, 0x1716_1514_1312_1110);
        assert_eq!(sqe.dptr[0], 0x18);
        assert_eq!(sqe.dptr[15], 0x27);
        assert_eq!(sqe.cdw10, 0x2B2A_2928);
        assert_eq!(sqe.cdw11, 0x2F2E_2D2C);
        assert_eq!(sqe.cdw12, 0x3332_3130);
        assert_eq!(sqe.cdw13, 0x3736_3534);
        assert_eq!(sqe.cdw14, 0x3B3A_3938);
        assert_eq!(sqe.cdw15, 0x3F3E_3D3C);
        assert_eq!(sqe.encode(), sample_bytes());
    }

    #[test]
    fn flags_and_fabrics_type() {
        let mut sqe = SubmissionQueueEntry {
            opcode: 0x7F,
            nsid: 0x01,
            flags: 0x40,
            ..Default::default()
        };
        assert_eq!(sqe.psdt(), Psdt::SglMetadataBuffer);
        assert_eq!(sqe.fuse(), 0);
        assert_eq!(sqe.fabrics_type(), Some(FabricsCommandType::Connect));
        sqe.set_psdt(Psdt::Prp);
        assert_eq!(sqe.flags, 0);
        sqe.opcode = 0x06;
        assert_eq!(sqe.fabrics_type(), None);
        assert_eq!(sqe.admin_opcode(), AdminOpcode::Identify);
        assert_eq!(sqe.io_opcode(), IoOpcode::Unknown(0x06));
    }

    #[test]
    fn sgl1_lives_in_dptr() {
        let mut sqe = SubmissionQueueEntry::default();
        sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: 4096 });
        let bytes = sqe.encode();
        assert_eq!(bytes[39], 0x5A);
        assert_eq!(&bytes[32..36], &4096u32.to_le_bytes());
        assert_eq!(
            SubmissionQueueEntry::decode(&bytes).sgl1(),
            SglDescriptor::TransportDataBlock { length: 4096 }
        );
    }
}
