//! Identify Namespace data structure for the NVM command set (CNS 00h),
//! defined by the NVM Command Set Specification 1.0 under the Identify
//! command of NVMe Base 2.0 §5.17.

use crate::nvme::identify::IDENTIFY_DATA_LEN;
use crate::nvme::text::FieldError;
use crate::wire::{array_at, put_bytes, put_u128, put_u16, put_u32, put_u64};
use crate::wire::{u128_at, u16_at, u32_at, u64_at};

/// Byte offsets of the fields this crate writes.
mod offset {
    pub const NSZE: usize = 0;
    pub const NCAP: usize = 8;
    pub const NUSE: usize = 16;
    pub const NSFEAT: usize = 24;
    pub const NLBAF: usize = 25;
    pub const FLBAS: usize = 26;
    pub const MC: usize = 27;
    pub const DPC: usize = 28;
    pub const DPS: usize = 29;
    pub const NMIC: usize = 30;
    pub const RESCAP: usize = 31;
    pub const FPI: usize = 32;
    pub const DLFEAT: usize = 33;
    pub const NAWUN: usize = 34;
    pub const NAWUPF: usize = 36;
    pub const NACWU: usize = 38;
    pub const NABSN: usize = 40;
    pub const NABO: usize = 42;
    pub const NABSPF: usize = 44;
    pub const NOIOB: usize = 46;
    pub const NVMCAP: usize = 48;
    pub const NPWG: usize = 64;
    pub const NPWA: usize = 66;
    pub const NPDG: usize = 68;
    pub const NPDA: usize = 70;
    pub const NOWS: usize = 72;
    pub const MSSRL: usize = 74;
    pub const MCL: usize = 76;
    pub const MSRC: usize = 80;
    pub const ANAGRPID: usize = 92;
    pub const NSATTR: usize = 99;
    pub const NVMSETID: usize = 100;
    pub const ENDGID: usize = 102;
    pub const NGUID: usize = 104;
    pub const EUI64: usize = 120;
    pub const LBAF0: usize = 128;
    pub const LBAF_LEN: usize = 4;
}

/// Most LBA formats a namespace can report (LBAF0..=LBAF63).
pub const MAX_LBA_FORMATS: usize = 64;

/// Formatted LBA Size (FLBAS) encoding.
pub mod flbas {
    /// Bit 4: metadata is transferred at the end of each LBA (extended LBA).
    pub const EXTENDED_METADATA: u8 = 1 << 4;

    /// FLBAS selecting LBA format `index` (0..=63): low 4 bits in 3:0, high
    /// 2 bits in 6:5.
    pub const fn for_index(index: u8, extended_metadata: bool) -> u8 {
        (index & 0x0F)
            | ((index >> 4) & 0x3) << 5
            | if extended_metadata {
                EXTENDED_METADATA
            } else {
                0
            }
    }

    /// The LBA format index an FLBAS value selects.
    pub const fn index(flbas: u8) -> u8 {
        (flbas & 0x0F) | ((flbas >> 5) & 0x3) << 4
    }
}

/// One LBA Format descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LbaFormat {
    /// Metadata Size per LBA in bytes (MS).
    pub ms: u16,
    /// LBA Data Size as a power of two (LBADS): 9 for 512 B, 12 for 4 KiB.
    pub lbads: u8,
    /// Relative Performance (RP), 2 bits: 0 best.
    pub rp: u8,
}

impl LbaFormat {
    fn write_into(&self, out: &mut [u8]) {
        put_u16(out, 0, self.ms);
        out[2] = self.lbads;
        out[3] = self.rp & 0x3;
    }

    fn parse(bytes: &[u8]) -> Self {
        Self {
            ms: u16_at(bytes, 0),
            lbads: bytes[2],
            rp: bytes[3] & 0x3,
        }
    }
}

/// Identify Namespace fields. NLBAF is derived from `lba_formats`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentifyNamespace {
    /// Namespace Size in logical blocks (NSZE).
    pub nsze: u64,
    /// Namespace Capacity in logical blocks (NCAP).
    pub ncap: u64,
    /// Namespace Utilization in logical blocks (NUSE).
    pub nuse: u64,
    /// Namespace Features (NSFEAT); bit 4 makes NPWG..NOWS valid.
    pub nsfeat: u8,
    /// Formatted LBA Size, see [`flbas`].
    pub flbas: u8,
    /// Metadata Capabilities.
    pub mc: u8,
    /// End-to-end Data Protection Capabilities.
    pub dpc: u8,
    /// End-to-end Data Protection Type Settings.
    pub dps: u8,
    /// Namespace Multi-path I/O and Sharing Capabilities: bit 0 shared.
    pub nmic: u8,
    /// Reservation Capabilities.
    pub rescap: u8,
    /// Format Progress Indicator.
    pub fpi: u8,
    /// Deallocate Logical Block Features: bits 2:0 = 001b reads zeroes.
    pub dlfeat: u8,
    /// Namespace Atomic Write Unit Normal, 0's based.
    pub nawun: u16,
    /// Namespace Atomic Write Unit Power Fail, 0's based.
    pub nawupf: u16,
    /// Namespace Atomic Compare & Write Unit, 0's based.
    pub nacwu: u16,
    /// Namespace Atomic Boundary Size Normal.
    pub nabsn: u16,
    /// Namespace Atomic Boundary Offset.
    pub nabo: u16,
    /// Namespace Atomic Boundary Size Power Fail.
    pub nabspf: u16,
    /// Namespace Optimal I/O Boundary in logical blocks.
    pub noiob: u16,
    /// NVM Capacity in bytes.
    pub nvmcap: u128,
    /// Preferred Write Granularity, 0's based, in logical blocks.
    pub npwg: u16,
    /// Preferred Write Alignment, 0's based.
    pub npwa: u16,
    /// Preferred Deallocate Granularity, 0's based.
    pub npdg: u16,
    /// Preferred Deallocate Alignment, 0's based.
    pub npda: u16,
    /// Optimal Write Size, 0's based, in logical blocks.
    pub nows: u16,
    /// Maximum Single Source Range Length (Copy).
    pub mssrl: u16,
    /// Maximum Copy Length (Copy).
    pub mcl: u32,
    /// Maximum Source Range Count, 0's based (Copy).
    pub msrc: u8,
    /// ANA Group Identifier.
    pub anagrpid: u32,
    /// Namespace Attributes: bit 0 write protected.
    pub nsattr: u8,
    /// NVM Set Identifier.
    pub nvmsetid: u16,
    /// Endurance Group Identifier.
    pub endgid: u16,
    /// Namespace Globally Unique Identifier; the same on every replica.
    pub nguid: [u8; 16],
    /// IEEE Extended Unique Identifier.
    pub eui64: [u8; 8],
    /// LBA formats, 1..=64 of them; FLBAS picks one.
    pub lba_formats: Vec<LbaFormat>,
}

impl IdentifyNamespace {
    /// A plain namespace of `blocks` logical blocks of `1 << lbads` bytes,
    /// fully allocated, with one LBA format and no metadata.
    pub fn new(blocks: u64, lbads: u8) -> Self {
        Self {
            nsze: blocks,
            ncap: blocks,
            nuse: blocks,
            lba_formats: vec![LbaFormat {
                ms: 0,
                lbads,
                rp: 0,
            }],
            ..Default::default()
        }
    }

    /// The LBA format FLBAS selects, if it exists.
    pub fn formatted_lba(&self) -> Option<&LbaFormat> {
        self.lba_formats.get(usize::from(flbas::index(self.flbas)))
    }

    /// Writes the 4096-byte structure. Fails when there are no LBA formats,
    /// more than 64, or FLBAS selects one that does not exist.
    pub fn write_into(&self, out: &mut [u8; IDENTIFY_DATA_LEN]) -> Result<(), FieldError> {
        let count = self.lba_formats.len();
        if count == 0 || count > MAX_LBA_FORMATS {
            return Err(FieldError::Invalid {
                field: "LBAF",
                reason: "between 1 and 64 LBA formats are required",
            });
        }
        if self.formatted_lba().is_none() {
            return Err(FieldError::Invalid {
                field: "FLBAS",
                reason: "selects an LBA format that does not exist",
            });
        }
        out.fill(0);
        put_u64(out, offset::NSZE, self.nsze);
        put_u64(out, offset::NCAP, self.ncap);
        put_u64(out, offset::NUSE, self.nuse);
        out[offset::NSFEAT] = self.nsfeat;
        // NLBAF is 0's based; count is 1..=64 here.
        out[offset::NLBAF] = (count - 1) as u8;
        out[offset::FLBAS] = self.flbas;
        out[offset::MC] = self.mc;
        out[offset::DPC] = self.dpc;
        out[offset::DPS] = self.dps;
        out[offset::NMIC] = self.nmic;
        out[offset::RESCAP] = self.rescap;
        out[offset::FPI] = self.fpi;
        out[offset::DLFEAT] = self.dlfeat;
        put_u16(out, offset::NAWUN, self.nawun);
        put_u16(out, offset::NAWUPF, self.nawupf);
        put_u16(out, offset::NACWU, self.nacwu);
        put_u16(out, offset::NABSN, self.nabsn);
        put_u16(out, offset::NABO, self.nabo);
        put_u16(out, offset::NABSPF, self.nabspf);
        put_u16(out, offset::NOIOB, self.noiob);
        put_u128(out, offset::NVMCAP, self.nvmcap);
        put_u16(out, offset::NPWG, self.npwg);
        put_u16(out, offset::NPWA, self.npwa);
        put_u16(out, offset::NPDG, self.npdg);
        put_u16(out, offset::NPDA, self.npda);
        put_u16(out, offset::NOWS, self.nows);
        put_u16(out, offset::MSSRL, self.mssrl);
        put_u32(out, offset::MCL, self.mcl);
        out[offset::MSRC] = self.msrc;
        put_u32(out, offset::ANAGRPID, self.anagrpid);
        out[offset::NSATTR] = self.nsattr;
        put_u16(out, offset::NVMSETID, self.nvmsetid);
        put_u16(out, offset::ENDGID, self.endgid);
        put_bytes(out, offset::NGUID, &self.nguid);
        put_bytes(out, offset::EUI64, &self.eui64);
        for (index, format) in self.lba_formats.iter().enumerate() {
            let start = offset::LBAF0 + index * offset::LBAF_LEN;
            format.write_into(&mut out[start..start + offset::LBAF_LEN]);
        }
        Ok(())
    }

    /// Reads the structure (for the initiator).
    pub fn parse(bytes: &[u8; IDENTIFY_DATA_LEN]) -> Self {
        // NLBAF is 0's based; 64 formats is the most the layout holds.
        let count = (usize::from(bytes[offset::NLBAF]) + 1).min(MAX_LBA_FORMATS);
        let lba_formats = (0..count)
            .map(|index| {
                let start = offset::LBAF0 + index * offset::LBAF_LEN;
                LbaFormat::parse(&bytes[start..start + offset::LBAF_LEN])
            })
            .collect();
        Self {
            nsze: u64_at(bytes, offset::NSZE),
            ncap: u64_at(bytes, offset::NCAP),
            nuse: u64_at(bytes, offset::NUSE),
            nsfeat: bytes[offset::NSFEAT],
            flbas: bytes[offset::FLBAS],
            mc: bytes[offset::MC],
            dpc: bytes[offset::DPC],
            dps: bytes[offset::DPS],
            nmic: bytes[offset::NMIC],
            rescap: bytes[offset::RESCAP],
            fpi: bytes[offset::FPI],
            dlfeat: bytes[offset::DLFEAT],
            nawun: u16_at(bytes, offset::NAWUN),
            nawupf: u16_at(bytes, offset::NAWUPF),
            nacwu: u16_at(bytes, offset::NACWU),
            nabsn: u16_at(bytes, offset::NABSN),
            nabo: u16_at(bytes, offset::NABO),
            nabspf: u16_at(bytes, offset::NABSPF),
            noiob: u16_at(bytes, offset::NOIOB),
            nvmcap: u128_at(bytes, offset::NVMCAP),
            npwg: u16_at(bytes, offset::NPWG),
            npwa: u16_at(bytes, offset::NPWA),
            npdg: u16_at(bytes, offset::NPDG),
            npda: u16_at(bytes, offset::NPDA),
            nows: u16_at(bytes, offset::NOWS),
            mssrl: u16_at(bytes, offset::MSSRL),
            mcl: u32_at(bytes, offset::MCL),
            msrc: bytes[offset::MSRC],
            anagrpid: u32_at(bytes, offset::ANAGRPID),
            nsattr: bytes[offset::NSATTR],
            nvmsetid: u16_at(bytes, offset::NVMSETID),
            endgid: u16_at(bytes, offset::ENDGID),
            nguid: array_at(bytes, offset::NGUID),
            eui64: array_at(bytes, offset::EUI64),
            lba_formats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le16(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn le32(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    fn le64(bytes: &[u8], at: usize) -> u64 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    }

    fn sample() -> IdentifyNamespace {
        IdentifyNamespace {
            nsze: 0x0102_0304_0506_0708,
            ncap: 0x1112_1314_1516_1718,
            nuse: 0x2122_2324_2526_2728,
            nsfeat: 0x10,
            flbas: flbas::for_index(1, false),
            nmic: 1,
            dlfeat: 0x01,
            nawupf: 0x3132,
            nabo: 0x3334,
            noiob: 0x3536,
            npwg: 0x4142,
            npwa: 0x4344,
            npdg: 0x4546,
            npda: 0x4748,
            nows: 0x494A,
            anagrpid: 0x5152_5354,
            nsattr: 1,
            nguid: [
                0xA0, 0xA1, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAC, 0xAD,
                0xAE, 0xAF,
            ],
            eui64: [0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7],
            lba_formats: vec![
                LbaFormat {
                    ms: 0,
                    lbads: 9,
                    rp: 2,
                },
                LbaFormat {
                    ms: 8,
                    lbads: 12,
                    rp: 0,
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn fields_linux_reads_are_at_spec_offsets() {
        let mut b = Box::new([0xA5u8; IDENTIFY_DATA_LEN]);
        sample().write_into(&mut b).unwrap();
        assert_eq!(le64(&b[..], 0), 0x0102_0304_0506_0708, "NSZE");
        assert_eq!(le64(&b[..], 8), 0x1112_1314_1516_1718, "NCAP");
        assert_eq!(le64(&b[..], 16), 0x2122_2324_2526_2728, "NUSE");
        assert_eq!(b[24], 0x10, "NSFEAT");
        assert_eq!(b[25], 1, "NLBAF (0's based)");
        assert_eq!(b[26], 1, "FLBAS");
        assert_eq!(b[30], 1, "NMIC");
        assert_eq!(b[33], 1, "DLFEAT");
        assert_eq!(le16(&b[..], 36), 0x3132, "NAWUPF");
        assert_eq!(le16(&b[..], 42), 0x3334, "NABO");
        assert_eq!(le16(&b[..], 46), 0x3536, "NOIOB");
        assert_eq!(le16(&b[..], 64), 0x4142, "NPWG");
        assert_eq!(le16(&b[..], 66), 0x4344, "NPWA");
        assert_eq!(le16(&b[..], 68), 0x4546, "NPDG");
        assert_eq!(le16(&b[..], 70), 0x4748, "NPDA");
        assert_eq!(le16(&b[..], 72), 0x494A, "NOWS");
        assert_eq!(le32(&b[..], 92), 0x5152_5354, "ANAGRPID");
        assert_eq!(b[99], 1, "NSATTR");
        assert_eq!(b[104], 0xA0, "NGUID first byte");
        assert_eq!(b[119], 0xAF, "NGUID last byte");
        assert_eq!(
            &b[120..128],
            &[0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7],
            "EUI64"
        );
        assert_eq!(&b[128..132], &[0, 0, 9, 2], "LBAF0: MS, LBADS=9, RP");
        assert_eq!(&b[132..136], &[8, 0, 12, 0], "LBAF1: MS=8, LBADS=12");
        assert!(b[136..].iter().all(|&c| c == 0), "rest zero");
    }

    #[test]
    fn parse_reads_back_what_was_written() {
        let mut identify = sample();
        identify.nvmcap = 0x0102_0304_0506_0708_090A_0B0C_0D0E_0F10;
        identify.mssrl = 7;
        identify.mcl = 8;
        identify.msrc = 9;
        identify.endgid = 10;
        identify.nvmsetid = 11;
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        identify.write_into(&mut b).unwrap();
        assert_eq!(IdentifyNamespace::parse(&b), identify);
        assert_eq!(identify.formatted_lba().map(|f| f.lbads), Some(12));
    }

    #[test]
    fn simple_namespace_for_a_4k_file() {
        let identify = IdentifyNamespace::new(1 << 20, 12);
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        identify.write_into(&mut b).unwrap();
        assert_eq!(le64(&b[..], 0), 1 << 20);
        assert_eq!(le64(&b[..], 8), 1 << 20);
        assert_eq!(b[25], 0);
        assert_eq!(b[26], 0);
        assert_eq!(b[130], 12);
    }

    #[test]
    fn flbas_encoding() {
        assert_eq!(flbas::for_index(0, false), 0);
        assert_eq!(flbas::for_index(15, true), 0x1F);
        assert_eq!(flbas::for_index(16, false), 0x20);
        assert_eq!(flbas::for_index(63, false), 0x6F);
        for index in 0..64 {
            assert_eq!(flbas::index(flbas::for_index(index, true)), index);
        }
    }

    #[test]
    fn rejects_inconsistent_formats() {
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        let none = IdentifyNamespace::default();
        assert!(none.write_into(&mut b).is_err());
        let mut wrong_index = IdentifyNamespace::new(8, 9);
        wrong_index.flbas = 1;
        assert!(wrong_index.write_into(&mut b).is_err());
        let mut too_many = IdentifyNamespace::new(8, 9);
        too_many.lba_formats = vec![LbaFormat::default(); 65];
        assert!(too_many.write_into(&mut b).is_err());
    }
}
