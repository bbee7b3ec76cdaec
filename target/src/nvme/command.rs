//! Typed views of the command dwords of the commands a target serves.
//!
//! Each view reads its fields out of a [`SubmissionQueueEntry`] (and writes
//! them back, for the initiator), so bit positions live here once.

use crate::nvme::admin::{FeatureId, IdentifyCns, LogPageId};
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::wire::{put_u32, put_u64, u32_at, u64_at};

/// Read, Write, Compare, Write Zeroes and Verify: the LBA range (NVM
/// Command Set Specification 1.0, "Read command" and siblings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWriteCommand {
    /// Starting LBA (CDW10, CDW11).
    pub slba: u64,
    /// Number of logical blocks, 0's based (CDW12 bits 15:0).
    pub nlb: u16,
    /// Force Unit Access (CDW12 bit 30).
    pub fua: bool,
    /// Limited Retry (CDW12 bit 31).
    pub limited_retry: bool,
    /// Write Zeroes: Deallocate (CDW12 bit 25).
    pub deallocate: bool,
}

impl ReadWriteCommand {
    /// Reads the fields from `sqe`.
    pub const fn from_sqe(sqe: &SubmissionQueueEntry) -> Self {
        Self {
            slba: (sqe.cdw10 as u64) | ((sqe.cdw11 as u64) << 32),
            nlb: sqe.cdw12 as u16,
            fua: sqe.cdw12 & (1 << 30) != 0,
            limited_retry: sqe.cdw12 & (1 << 31) != 0,
            deallocate: sqe.cdw12 & (1 << 25) != 0,
        }
    }

    /// Writes the fields into `sqe` (CDW12's other bits are cleared).
    pub fn write_to(&self, sqe: &mut SubmissionQueueEntry) {
        sqe.cdw10 = self.slba as u32;
        sqe.cdw11 = (self.slba >> 32) as u32;
        sqe.cdw12 = u32::from(self.nlb)
            | (u32::from(self.deallocate) << 25)
            | (u32::from(self.fua) << 30)
            | (u32::from(self.limited_retry) << 31);
    }

    /// Number of logical blocks (NLB + 1).
    pub const fn blocks(&self) -> u32 {
        self.nlb as u32 + 1
    }

    /// Whether the range lies within a namespace of `nsze` blocks.
    pub const fn fits_in(&self, nsze: u64) -> bool {
        match self.slba.checked_add(self.blocks() as u64) {
            Some(end) => end <= nsze,
            None => false,
        }
    }
}

/// Dataset Management command fields (NVM Command Set 1.0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetManagementCommand {
    /// Number of ranges, 0's based (CDW10 bits 7:0).
    pub nr: u8,
    /// Attribute – Deallocate (CDW11 bit 2).
    pub deallocate: bool,
    /// Attribute – Integral Dataset for Write (CDW11 bit 1).
    pub integral_write: bool,
    /// Attribute – Integral Dataset for Read (CDW11 bit 0).
    pub integral_read: bool,
}

/// Size of one Dataset Management range.
pub const DSM_RANGE_LEN: usize = 16;

impl DatasetManagementCommand {
    /// Reads the fields from `sqe`.
    pub const fn from_sqe(sqe: &SubmissionQueueEntry) -> Self {
        Self {
            nr: sqe.cdw10 as u8,
            deallocate: sqe.cdw11 & (1 << 2) != 0,
            integral_write: sqe.cdw11 & (1 << 1) != 0,
            integral_read: sqe.cdw11 & 1 != 0,
        }
    }

    /// Number of ranges (NR + 1).
    pub const fn ranges(&self) -> usize {
        self.nr as usize + 1
    }

    /// Bytes of range data the command transfers.
    pub const fn data_len(&self) -> usize {
        self.ranges() * DSM_RANGE_LEN
    }
}

/// One Dataset Management range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsmRange {
    /// Context attributes.
    pub context_attributes: u32,
    /// Length in logical blocks (not 0's based).
    pub blocks: u32,
    /// Starting LBA.
    pub slba: u64,
}

impl DsmRange {
    /// Reads one range.
    pub fn parse(bytes: &[u8; DSM_RANGE_LEN]) -> Self {
        Self {
            context_attributes: u32_at(bytes, 0),
            blocks: u32_at(bytes, 4),
            slba: u64_at(bytes, 8),
        }
    }

    /// Writes one range.
    pub fn write_into(&self, out: &mut [u8; DSM_RANGE_LEN]) {
        put_u32(out, 0, self.context_attributes);
        put_u32(out, 4, self.blocks);
        put_u64(out, 8, self.slba);
    }

    /// The ranges in a Dataset Management data buffer (a trailing partial
    /// range is ignored).
    pub fn parse_all(data: &[u8]) -> impl Iterator<Item = DsmRange> + '_ {
        data.chunks_exact(DSM_RANGE_LEN)
            .filter_map(|chunk| chunk.first_chunk().map(Self::parse))
    }
}

/// Identify command fields (NVMe Base 2.0 §5.17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyCommand {
    /// Which structure (CDW10 bits 7:0).
    pub cns: IdentifyCns,
    /// Controller identifier (CDW10 bits 31:16).
    pub cntid: u16,
    /// CNS specific identifier (CDW11 bits 15:0).
    pub cns_specific_id: u16,
    /// Command set identifier (CDW11 bits 31:24).
    pub csi: u8,
}

impl IdentifyCommand {
    /// Reads the fields from `sqe`.
    pub const fn from_sqe(sqe: &SubmissionQueueEntry) -> Self {
        Self {
            cns: IdentifyCns::from_u8(sqe.cdw10 as u8),
            cntid: (sqe.cdw10 >> 16) as u16,
            cns_specific_id: sqe.cdw11 as u16,
            csi: (sqe.cdw11 >> 24) as u8,
        }
    }

    /// Writes the fields into `sqe`.
    pub fn write_to(&self, sqe: &mut SubmissionQueueEntry) {
        sqe.cdw10 = u32::from(self.cns.as_u8()) | (u32::from(self.cntid) << 16);
        sqe.cdw11 = u32::from(self.cns_specific_id) | (u32::from(self.csi) << 24);
    }
}

/// Get Log Page command fields (NVMe Base 2.0 §5.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLogPageCommand {
    /// Log page (CDW10 bits 7:0).
    pub lid: LogPageId,
    /// Log specific field (CDW10 bits 14:8).
    pub lsp: u8,
    /// Retain Asynchronous Event (CDW10 bit 15).
    pub rae: bool,
    /// Number of dwords to return, 0's based (NUMDU:NUMDL).
    pub numd: u32,
    /// Log specific identifier (CDW11 bits 31:16).
    pub lsi: u16,
    /// Log page offset in bytes (CDW12, CDW13).
    pub lpo: u64,
    /// Command set identifier (CDW14 bits 31:24).
    pub csi: u8,
}

impl GetLogPageCommand {
    /// Reads the fields from `sqe`.
    pub const fn from_sqe(sqe: &SubmissionQueueEntry) -> Self {
        Self {
            lid: LogPageId::from_u8(sqe.cdw10 as u8),
            lsp: ((sqe.cdw10 >> 8) & 0x7F) as u8,
            rae: sqe.cdw10 & (1 << 15) != 0,
            numd: (sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xFFFF) << 16),
            lsi: (sqe.cdw11 >> 16) as u16,
            lpo: (sqe.cdw12 as u64) | ((sqe.cdw13 as u64) << 32),
            csi: (sqe.cdw14 >> 24) as u8,
        }
    }

    /// Writes the fields into `sqe`.
    pub fn write_to(&self, sqe: &mut SubmissionQueueEntry) {
        sqe.cdw10 = u32::from(self.lid.as_u8())
            | (u32::from(self.lsp & 0x7F) << 8)
            | (u32::from(self.rae) << 15)
            | ((self.numd & 0xFFFF) << 16);
        sqe.cdw11 = (self.numd >> 16) | (u32::from(self.lsi) << 16);
        sqe.cdw12 = self.lpo as u32;
        sqe.cdw13 = (self.lpo >> 32) as u32;
        sqe.cdw14 = u32::from(self.csi) << 24;
    }

    /// Bytes requested: (NUMD + 1) * 4.
    pub const fn data_len(&self) -> u64 {
        (self.numd as u64 + 1) * 4
    }
}

/// Set Features / Get Features command fields (NVMe Base 2.0 §5.27, §5.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureCommand {
    /// Feature (CDW10 bits 7:0).
    pub fid: FeatureId,
    /// Set Features: Save (CDW10 bit 31).
    pub save: bool,
    /// Get Features: Select (CDW10 bits 10:8).
    pub select: u8,
    /// Feature specific value (CDW11).
    pub value: u32,
}

impl FeatureCommand {
    /// Reads the fields from `sqe`.
    pub const fn from_sqe(sqe: &SubmissionQueueEntry) -> Self {
        Self {
            fid: FeatureId::from_u8(sqe.cdw10 as u8),
            save: sqe.cdw10 & (1 << 31) != 0,
            select: ((sqe.cdw10 >> 8) & 0x7) as u8,
            value: sqe.cdw11,
        }
    }

    /// Writes the fields into `sqe`.
    pub fn write_to(&self, sqe: &mut SubmissionQueueEntry) {
        sqe.cdw10 = u32::from(self.fid.as_u8())
            | (u32::from(self.select & 0x7) << 8)
            | (u32::from(self.save) << 31);
        sqe.cdw11 = self.value;
    }
}

/// Number of Queues feature value (CDW11 of Set Features, DW0 of its
/// completion): submission and completion queue counts, both 0's based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberOfQueues {
    /// I/O submission queues, 0's based (bits 15:0).
    pub nsqr: u16,
    /// I/O completion queues, 0's based (bits 31:16).
    pub ncqr: u16,
}

impl NumberOfQueues {
    /// Decodes the dword.
    pub const fn from_dword(value: u32) -> Self {
        Self {
            nsqr: value as u16,
            ncqr: (value >> 16) as u16,
        }
    }

    /// Encodes the dword.
    pub const fn dword(&self) -> u32 {
        (self.nsqr as u32) | ((self.ncqr as u32) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_fields() {
        let mut sqe = SubmissionQueueEntry {
            cdw10: 0x0000_0003,
            cdw11: 0x0000_0001,
            cdw12: (1 << 30) | 7,
            ..Default::default()
        };
        let rw = ReadWriteCommand::from_sqe(&sqe);
        assert_eq!(rw.slba, 0x1_0000_0003);
        assert_eq!(rw.blocks(), 8);
        assert!(rw.fua && !rw.limited_retry && !rw.deallocate);
        assert!(rw.fits_in(0x1_0000_000B));
        assert!(!rw.fits_in(0x1_0000_000A));
        let far = ReadWriteCommand {
            slba: u64::MAX,
            ..rw
        };
        assert!(!far.fits_in(u64::MAX));
        let mut other = SubmissionQueueEntry::default();
        rw.write_to(&mut other);
        assert_eq!(
            (other.cdw10, other.cdw11, other.cdw12),
            (sqe.cdw10, sqe.cdw11, sqe.cdw12)
        );
        sqe.cdw12 = 1 << 25;
        assert!(ReadWriteCommand::from_sqe(&sqe).deallocate);
    }

    #[test]
    fn dataset_management_ranges() {
        let sqe = SubmissionQueueEntry {
            cdw10: 1,
            cdw11: 0x4,
            ..Default::default()
        };
        let dsm = DatasetManagementCommand::from_sqe(&sqe);
        assert!(dsm.deallocate);
        assert_eq!(dsm.ranges(), 2);
        assert_eq!(dsm.data_len(), 32);
        let range = DsmRange {
            context_attributes: 0,
            blocks: 256,
            slba: 0x1000,
        };
        let mut bytes = [0u8; 33];
        let (first, _) = bytes.split_at_mut(16);
        range.write_into(first.try_into().unwrap());
        assert_eq!(&bytes[4..8], &256u32.to_le_bytes());
        assert_eq!(&bytes[8..16], &0x1000u64.to_le_bytes());
        let ranges: Vec<_> = DsmRange::parse_all(&bytes).collect();
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0], range);
    }

    #[test]
    fn identify_and_log_page_fields() {
        // Identify CNS 06h, CSI 0 as the Linux host sends it.
        let mut sqe = SubmissionQueueEntry::default();
        let identify = IdentifyCommand {
            cns: IdentifyCns::IoCommandSetController,
            cntid: 0,
            cns_specific_id: 0,
            csi: 0,
        };
        identify.write_to(&mut sqe);
        assert_eq!(sqe.cdw10, 0x06);
        assert_eq!(IdentifyCommand::from_sqe(&sqe), identify);

        // Discovery log, RAE=1, NUMDL=0xFF: 1024 bytes.
        let sqe = SubmissionQueueEntry {
            cdw10: 0x00FF_8070,
            ..Default::default()
        };
        let log = GetLogPageCommand::from_sqe(&sqe);
        assert_eq!(log.lid, LogPageId::Discovery);
        assert!(log.rae);
        assert_eq!(log.data_len(), 1024);
        let mut again = SubmissionQueueEntry::default();
        log.write_to(&mut again);
        assert_eq!(GetLogPageCommand::from_sqe(&again), log);

        // ANA log, 8208 bytes: NUMD = 2051 (0's based).
        let big = GetLogPageCommand {
            lid: LogPageId::AsymmetricNamespaceAccess,
            lsp: 0,
            rae: false,
            numd: 8208 / 4 - 1,
            lsi: 0,
            lpo: 0x1_0000_0000,
            csi: 0,
        };
        let mut sqe = SubmissionQueueEntry::default();
        big.write_to(&mut sqe);
        assert_eq!(GetLogPageCommand::from_sqe(&sqe), big);
        assert_eq!(big.data_len(), 8208);
    }

    #[test]
    fn feature_fields() {
        // Set Features Number of Queues, CDW11 0x00010001 from the Linux host.
        let sqe = SubmissionQueueEntry {
            cdw10: 0x07,
            cdw11: 0x0001_0001,
            ..Default::default()
        };
        let feature = FeatureCommand::from_sqe(&sqe);
        assert_eq!(feature.fid, FeatureId::NumberOfQueues);
        let queues = NumberOfQueues::from_dword(feature.value);
        assert_eq!((queues.nsqr, queues.ncqr), (1, 1));
        assert_eq!(
            NumberOfQueues {
                nsqr: 0x7F,
                ncqr: 0x7F
            }
            .dword(),
            0x007F_007F
        );
        let mut again = SubmissionQueueEntry::default();
        feature.write_to(&mut again);
        assert_eq!(FeatureCommand::from_sqe(&again), feature);
    }
}
