//! Identify Controller data structure (CNS 01h), NVMe Base 2.0 §5.17.2.1,
//! with the NVMe over Fabrics fields at bytes 1792..2048.

use crate::nvme::identify::IDENTIFY_DATA_LEN;
use crate::nvme::nqn::NQN_FIELD_LEN;
use crate::nvme::text::{
    read_ascii_space_padded, read_nul_padded, write_ascii_space_padded, write_nqn, FieldError,
};
use crate::wire::{array_at, put_bytes, put_u16, put_u32, u16_at, u32_at};

/// Byte offsets of the fields this crate writes.
mod offset {
    pub const VID: usize = 0;
    pub const SSVID: usize = 2;
    pub const SN: usize = 4;
    pub const SN_LEN: usize = 20;
    pub const MN: usize = 24;
    pub const MN_LEN: usize = 40;
    pub const FR: usize = 64;
    pub const FR_LEN: usize = 8;
    pub const RAB: usize = 72;
    pub const IEEE: usize = 73;
    pub const CMIC: usize = 76;
    pub const MDTS: usize = 77;
    pub const CNTLID: usize = 78;
    pub const VER: usize = 80;
    pub const RTD3R: usize = 84;
    pub const RTD3E: usize = 88;
    pub const OAES: usize = 92;
    pub const CTRATT: usize = 96;
    pub const CNTRLTYPE: usize = 111;
    pub const FGUID: usize = 112;
    pub const CRDT1: usize = 128;
    pub const OACS: usize = 256;
    pub const ACL: usize = 258;
    pub const AERL: usize = 259;
    pub const FRMW: usize = 260;
    pub const LPA: usize = 261;
    pub const ELPE: usize = 262;
    pub const NPSS: usize = 263;
    pub const KAS: usize = 320;
    pub const ANATT: usize = 342;
    pub const ANACAP: usize = 343;
    pub const ANAGRPMAX: usize = 344;
    pub const NANAGRPID: usize = 348;
    pub const SQES: usize = 512;
    pub const CQES: usize = 513;
    pub const MAXCMD: usize = 514;
    pub const NN: usize = 516;
    pub const ONCS: usize = 520;
    pub const FUSES: usize = 522;
    pub const FNA: usize = 524;
    pub const VWC: usize = 525;
    pub const AWUN: usize = 526;
    pub const AWUPF: usize = 528;
    pub const ACWU: usize = 532;
    pub const SGLS: usize = 536;
    pub const MNAN: usize = 540;
    pub const SUBNQN: usize = 768;
    pub const IOCCSZ: usize = 1792;
    pub const IORCSZ: usize = 1796;
    pub const ICDOFF: usize = 1800;
    pub const FCATT: usize = 1802;
    pub const MSDBD: usize = 1803;
    pub const OFCS: usize = 1804;
}

/// Controller Multi-Path I/O and Namespace Sharing Capabilities (CMIC).
pub mod cmic {
    /// The subsystem may have more than one port.
    pub const MULTI_PORT: u8 = 1 << 0;
    /// The subsystem may have more than one controller.
    pub const MULTI_CONTROLLER: u8 = 1 << 1;
    /// Asymmetric Namespace Access reporting; makes the host read the ANA log.
    pub const ANA_REPORTING: u8 = 1 << 3;
}

/// Controller Attributes (CTRATT).
pub mod ctratt {
    /// 128-bit Host Identifier supported (required for fabrics).
    pub const HOST_ID_128: u32 = 1 << 0;
    /// Traffic Based Keep Alive: any completed command counts as a keep alive.
    pub const TRAFFIC_BASED_KEEP_ALIVE: u32 = 1 << 6;
}

/// Optional Asynchronous Events Supported (OAES).
pub mod oaes {
    /// Namespace Attribute Notices.
    pub const NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
    /// Asymmetric Namespace Access Change Notices.
    pub const ANA_CHANGE: u32 = 1 << 11;
    /// Discovery Log Page Change Notices (discovery controllers).
    pub const DISCOVERY_LOG_CHANGE: u32 = 1 << 31;
}

/// Log Page Attributes (LPA).
pub mod lpa {
    /// SMART / Health log per namespace.
    pub const SMART_PER_NAMESPACE: u8 = 1 << 0;
    /// Commands Supported and Effects log page supported.
    pub const COMMANDS_EFFECTS: u8 = 1 << 1;
    /// Extended data for Get Log Page (NUMDU, LPO).
    pub const EXTENDED_DATA: u8 = 1 << 2;
}

/// Optional NVM Command Support (ONCS).
pub mod oncs {
    /// Compare.
    pub const COMPARE: u16 = 1 << 0;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u16 = 1 << 1;
    /// Dataset Management (deallocate).
    pub const DATASET_MANAGEMENT: u16 = 1 << 2;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u16 = 1 << 3;
    /// Reservations.
    pub const RESERVATIONS: u16 = 1 << 5;
    /// Copy.
    pub const COPY: u16 = 1 << 8;
}

/// SGL Support (SGLS).
pub mod sgls {
    /// SGLs supported, no alignment requirement (bits 1:0 = 01b).
    pub const SUPPORTED: u32 = 0b01;
    /// Keyed SGL Data Block descriptor supported (RDMA).
    pub const KEYED_DATA_BLOCK: u32 = 1 << 2;
    /// Address field may be an offset (in-capsule data).
    pub const OFFSET: u32 = 1 << 20;
    /// Transport SGL Data Block descriptor supported.
    pub const TRANSPORT_DATA_BLOCK: u32 = 1 << 21;
}

/// Controller Type (CNTRLTYPE).
pub mod cntrltype {
    /// I/O controller.
    pub const IO: u8 = 1;
    /// Discovery controller.
    pub const DISCOVERY: u8 = 2;
    /// Administrative controller.
    pub const ADMINISTRATIVE: u8 = 3;
}

/// The VER / VS encoding: major in 31:16, minor in 15:8, tertiary in 7:0.
pub const fn nvme_version(major: u16, minor: u8, tertiary: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | tertiary as u32
}

/// Identify Controller fields. Anything not listed is written as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyController<'a> {
    /// PCI Vendor ID (VID).
    pub vid: u16,
    /// PCI Subsystem Vendor ID (SSVID).
    pub ssvid: u16,
    /// Serial Number (SN), up to 20 printable ASCII characters.
    pub serial_number: &'a str,
    /// Model Number (MN), up to 40 printable ASCII characters.
    pub model_number: &'a str,
    /// Firmware Revision (FR), up to 8 printable ASCII characters.
    pub firmware_revision: &'a str,
    /// Recommended Arbitration Burst (RAB).
    pub rab: u8,
    /// IEEE OUI Identifier (IEEE), least significant byte first.
    pub ieee_oui: [u8; 3],
    /// Multi-path I/O and namespace sharing capabilities, see [`cmic`].
    pub cmic: u8,
    /// Maximum Data Transfer Size as a power of two of the minimum page
    /// size (0: no limit).
    pub mdts: u8,
    /// Controller ID; must equal DW0 of the Connect completion.
    pub cntlid: u16,
    /// Version (VER), see [`nvme_version`].
    pub ver: u32,
    /// RTD3 Resume Latency (µs).
    pub rtd3r: u32,
    /// RTD3 Entry Latency (µs).
    pub rtd3e: u32,
    /// Optional Asynchronous Events Supported, see [`oaes`].
    pub oaes: u32,
    /// Controller Attributes, see [`ctratt`].
    pub ctratt: u32,
    /// Controller Type, see [`cntrltype`].
    pub cntrltype: u8,
    /// FRU Globally Unique Identifier.
    pub fguid: [u8; 16],
    /// Command Retry Delay Times 1..=3 (units of 100 ms).
    pub crdt: [u16; 3],
    /// Optional Admin Command Support (OACS).
    pub oacs: u16,
    /// Abort Command Limit, 0's based.
    pub acl: u8,
    /// Asynchronous Event Request Limit, 0's based.
    pub aerl: u8,
    /// Firmware Updates.
    pub frmw: u8,
    /// Log Page Attributes, see [`lpa`].
    pub lpa: u8,
    /// Error Log Page Entries, 0's based.
    pub elpe: u8,
    /// Number of Power States Support, 0's based.
    pub npss: u8,
    /// Keep Alive Support: granularity in units of 100 ms (0: unsupported;
    /// fabrics controllers must support keep alive).
    pub kas: u16,
    /// ANA Transition Time (s).
    pub anatt: u8,
    /// Asymmetric Namespace Access Capabilities.
    pub anacap: u8,
    /// ANA Group Identifier Maximum.
    pub anagrpmax: u32,
    /// Number of ANA Group Identifiers.
    pub nanagrpid: u32,
    /// Submission Queue Entry Size: max in 7:4, required in 3:0 (log2);
    /// 0x66 for 64-byte entries.
    pub sqes: u8,
    /// Completion Queue Entry Size; 0x44 for 16-byte entries.
    pub cqes: u8,
    /// Maximum Outstanding Commands per queue.
    pub maxcmd: u16,
    /// Number of Namespaces (largest valid NSID).
    pub nn: u32,
    /// Optional NVM Command Support, see [`oncs`].
    pub oncs: u16,
    /// Fused Operation Support.
    pub fuses: u16,
    /// Format NVM Attributes.
    pub fna: u8,
    /// Volatile Write Cache: bit 0 present (the host then sends Flush).
    pub vwc: u8,
    /// Atomic Write Unit Normal, 0's based, in logical blocks.
    pub awun: u16,
    /// Atomic Write Unit Power Fail, 0's based, in logical blocks.
    pub awupf: u16,
    /// Atomic Compare & Write Unit, 0's based.
    pub acwu: u16,
    /// SGL Support, see [`sgls`].
    pub sgls: u32,
    /// Maximum Number of Allowed Namespaces.
    pub mnan: u32,
    /// NVM Subsystem NQN; must equal the NQN the host connected to.
    pub subnqn: &'a str,
    /// I/O Queue Command Capsule Supported Size in 16-byte units (64-byte
    /// SQE plus in-capsule data).
    pub ioccsz: u32,
    /// I/O Queue Response Capsule Supported Size in 16-byte units.
    pub iorcsz: u32,
    /// In Capsule Data Offset in 16-byte units (0 for NVMe/TCP).
    pub icdoff: u16,
    /// Fabrics Controller Attributes: bit 0 static controller model.
    pub fcatt: u8,
    /// Maximum SGL Data Block Descriptors per command.
    pub msdbd: u8,
    /// Optional Fabric Commands Support.
    pub ofcs: u16,
}

impl Default for IdentifyController<'_> {
    /// Zero everywhere except what every fabrics controller reports:
    /// 64-byte SQEs, 16-byte CQEs, a 64-byte command capsule, a 16-byte
    /// response capsule, one SGL descriptor, NVMe 1.3, an I/O controller.
    fn default() -> Self {
        Self {
            vid: 0,
            ssvid: 0,
            serial_number: "",
            model_number: "",
            firmware_revision: "",
            rab: 0,
            ieee_oui: [0; 3],
            cmic: 0,
            mdts: 0,
            cntlid: 0,
            ver: nvme_version(1, 3, 0),
            rtd3r: 0,
            rtd3e: 0,
            oaes: 0,
            ctratt: 0,
            cntrltype: cntrltype::IO,
            fguid: [0; 16],
            crdt: [0; 3],
            oacs: 0,
            acl: 0,
            aerl: 0,
            frmw: 0,
            lpa: 0,
            elpe: 0,
            npss: 0,
            kas: 0,
            anatt: 0,
            anacap: 0,
            anagrpmax: 0,
            nanagrpid: 0,
            sqes: 0x66,
            cqes: 0x44,
            maxcmd: 0,
            nn: 0,
            oncs: 0,
            fuses: 0,
            fna: 0,
            vwc: 0,
            awun: 0,
            awupf: 0,
            acwu: 0,
            sgls: 0,
            mnan: 0,
            subnqn: "",
            ioccsz: 4,
            iorcsz: 1,
            icdoff: 0,
            fcatt: 0,
            msdbd: 1,
            ofcs: 0,
        }
    }
}

impl<'a> IdentifyController<'a> {
    /// Writes the 4096-byte structure. Fails when a text field does not
    /// fit or the SUBNQN is not a valid NQN; `out` is then unspecified.
    pub fn write_into(&self, out: &mut [u8; IDENTIFY_DATA_LEN]) -> Result<(), FieldError> {
        out.fill(0);
        put_u16(out, offset::VID, self.vid);
        put_u16(out, offset::SSVID, self.ssvid);
        write_ascii_space_padded(
            "SN",
            self.serial_number,
            &mut out[offset::SN..offset::SN + offset::SN_LEN],
        )?;
        write_ascii_space_padded(
            "MN",
            self.model_number,
            &mut out[offset::MN..offset::MN + offset::MN_LEN],
        )?;
        write_ascii_space_padded(
            "FR",
            self.firmware_revision,
            &mut out[offset::FR..offset::FR + offset::FR_LEN],
        )?;
        out[offset::RAB] = self.rab;
        put_bytes(out, offset::IEEE, &self.ieee_oui);
        out[offset::CMIC] = self.cmic;
        out[offset::MDTS] = self.mdts;
        put_u16(out, offset::CNTLID, self.cntlid);
        put_u32(out, offset::VER, self.ver);
        put_u32(out, offset::RTD3R, self.rtd3r);
        put_u32(out, offset::RTD3E, self.rtd3e);
        put_u32(out, offset::OAES, self.oaes);
        put_u32(out, offset::CTRATT, self.ctratt);
        out[offset::CNTRLTYPE] = self.cntrltype;
        put_bytes(out, offset::FGUID, &self.fguid);
        for (index, crdt) in self.crdt.iter().enumerate() {
            put_u16(out, offset::CRDT1 + 2 * index, *crdt);
        }
        put_u16(out, offset::OACS, self.oacs);
        out[offset::ACL] = self.acl;
        out[offset::AERL] = self.aerl;
        out[offset::FRMW] = self.frmw;
        out[offset::LPA] = self.lpa;
        out[offset::ELPE] = self.elpe;
        out[offset::NPSS] = self.npss;
        put_u16(out, offset::KAS, self.kas);
        out[offset::ANATT] = self.anatt;
        out[offset::ANACAP] = self.anacap;
        put_u32(out, offset::ANAGRPMAX, self.anagrpmax);
        put_u32(out, offset::NANAGRPID, self.nanagrpid);
        out[offset::SQES] = self.sqes;
        out[offset::CQES] = self.cqes;
        put_u16(out, offset::MAXCMD, self.maxcmd);
        put_u32(out, offset::NN, self.nn);
        put_u16(out, offset::ONCS, self.oncs);
        put_u16(out, offset::FUSES, self.fuses);
        out[offset::FNA] = self.fna;
        out[offset::VWC] = self.vwc;
        put_u16(out, offset::AWUN, self.awun);
        put_u16(out, offset::AWUPF, self.awupf);
        put_u16(out, offset::ACWU, self.acwu);
        put_u32(out, offset::SGLS, self.sgls);
        put_u32(out, offset::MNAN, self.mnan);
        write_nqn(
            "SUBNQN",
            self.subnqn,
            &mut out[offset::SUBNQN..offset::SUBNQN + NQN_FIELD_LEN],
        )?;
        put_u32(out, offset::IOCCSZ, self.ioccsz);
        put_u32(out, offset::IORCSZ, self.iorcsz);
        put_u16(out, offset::ICDOFF, self.icdoff);
        out[offset::FCATT] = self.fcatt;
        out[offset::MSDBD] = self.msdbd;
        put_u16(out, offset::OFCS, self.ofcs);
        Ok(())
    }

    /// Reads the structure (for the initiator). Text fields are trimmed of
    /// their padding; the SUBNQN is returned as sent, not validated.
    pub fn parse(bytes: &'a [u8; IDENTIFY_DATA_LEN]) -> Result<Self, FieldError> {
        let ascii = |field: &'static str, start: usize, len: usize| {
            read_ascii_space_padded(&bytes[start..start + len])
                .ok_or(FieldError::NotPrintableAscii { field })
        };
        let subnqn = read_nul_padded(&bytes[offset::SUBNQN..offset::SUBNQN + NQN_FIELD_LEN])
            .ok_or(FieldError::Invalid {
                field: "SUBNQN",
                reason: "not UTF-8",
            })?;
        Ok(Self {
            vid: u16_at(bytes, offset::VID),
            ssvid: u16_at(bytes, offset::SSVID),
            serial_number: ascii("SN", offset::SN, offset::SN_LEN)?,
            model_number: ascii("MN", offset::MN, offset::MN_LEN)?,
            firmware_revision: ascii("FR", offset::FR, offset::FR_LEN)?,
            rab: bytes[offset::RAB],
            ieee_oui: array_at(bytes, offset::IEEE),
            cmic: bytes[offset::CMIC],
            mdts: bytes[offset::MDTS],
            cntlid: u16_at(bytes, offset::CNTLID),
            ver: u32_at(bytes, offset::VER),
            rtd3r: u32_at(bytes, offset::RTD3R),
            rtd3e: u32_at(bytes, offset::RTD3E),
            oaes: u32_at(bytes, offset::OAES),
            ctratt: u32_at(bytes, offset::CTRATT),
            cntrltype: bytes[offset::CNTRLTYPE],
            fguid: array_at(bytes, offset::FGUID),
            crdt: [
                u16_at(bytes, offset::CRDT1),
                u16_at(bytes, offset::CRDT1 + 2),
                u16_at(bytes, offset::CRDT1 + 4),
            ],
            oacs: u16_at(bytes, offset::OACS),
            acl: bytes[offset::ACL],
            aerl: bytes[offset::AERL],
            frmw: bytes[offset::FRMW],
            lpa: bytes[offset::LPA],
            elpe: bytes[offset::ELPE],
            npss: bytes[offset::NPSS],
            kas: u16_at(bytes, offset::KAS),
            anatt: bytes[offset::ANATT],
            anacap: bytes[offset::ANACAP],
            anagrpmax: u32_at(bytes, offset::ANAGRPMAX),
            nanagrpid: u32_at(bytes, offset::NANAGRPID),
            sqes: bytes[offset::SQES],
            cqes: bytes[offset::CQES],
            maxcmd: u16_at(bytes, offset::MAXCMD),
            nn: u32_at(bytes, offset::NN),
            oncs: u16_at(bytes, offset::ONCS),
            fuses: u16_at(bytes, offset::FUSES),
            fna: bytes[offset::FNA],
            vwc: bytes[offset::VWC],
            awun: u16_at(bytes, offset::AWUN),
            awupf: u16_at(bytes, offset::AWUPF),
            acwu: u16_at(bytes, offset::ACWU),
            sgls: u32_at(bytes, offset::SGLS),
            mnan: u32_at(bytes, offset::MNAN),
            subnqn,
            ioccsz: u32_at(bytes, offset::IOCCSZ),
            iorcsz: u32_at(bytes, offset::IORCSZ),
            icdoff: u16_at(bytes, offset::ICDOFF),
            fcatt: bytes[offset::FCATT],
            msdbd: bytes[offset::MSDBD],
            ofcs: u16_at(bytes, offset::OFCS),
        })
    }

    /// Largest in-capsule data an I/O command may carry: IOCCSZ * 16 minus
    /// the 64-byte SQE (saturating at 0).
    pub const fn max_in_capsule_data(&self) -> u32 {
        self.ioccsz.saturating_mul(16).saturating_sub(64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::nqn::DISCOVERY_NQN;

    const SUBNQN: &str = "nqn.2024-01.dev.keel:vol0";

    /// The values nvmet reported to the Linux 6.1 host (KERNEL-HOST-NOTES §5),
    /// each distinct enough to be found at exactly one offset.
    fn nvmet_like() -> IdentifyController<'static> {
        IdentifyController {
            vid: 0x1AF4,
            ssvid: 0x1AF5,
            serial_number: "KEEL0001",
            model_number: "Keel",
            firmware_revision: "0.1.0",
            ieee_oui: [0x11, 0x22, 0x33],
            cmic: cmic::MULTI_CONTROLLER | cmic::ANA_REPORTING,
            mdts: 5,
            cntlid: 0x0102,
            ver: nvme_version(1, 3, 0),
            oaes: oaes::NAMESPACE_ATTRIBUTE | oaes::ANA_CHANGE,
            ctratt: ctratt::HOST_ID_128 | ctratt::TRAFFIC_BASED_KEEP_ALIVE,
            cntrltype: cntrltype::IO,
            oacs: 0x0203,
            aerl: 3,
            lpa: lpa::SMART_PER_NAMESPACE | lpa::COMMANDS_EFFECTS | lpa::EXTENDED_DATA,
            elpe: 127,
            kas: 10,
            anatt: 10,
            anacap: 0x47,
            anagrpmax: 0x0405_0607,
            nanagrpid: 0x0809_0A0B,
            maxcmd: 1024,
            nn: 0x0C0D_0E0F,
            oncs: oncs::DATASET_MANAGEMENT | oncs::WRITE_ZEROES,
            vwc: 1,
            sgls: sgls::SUPPORTED | sgls::OFFSET,
            subnqn: SUBNQN,
            ioccsz: 1028,
            iorcsz: 1,
            icdoff: 0,
            fcatt: 0,
            msdbd: 1,
            ..Default::default()
        }
    }

    fn written(identify: &IdentifyController<'_>) -> Box<[u8; IDENTIFY_DATA_LEN]> {
        let mut out = Box::new([0xA5u8; IDENTIFY_DATA_LEN]);
        identify.write_into(&mut out).unwrap();
        out
    }

    fn le16(bytes: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }

    fn le32(bytes: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    }

    #[test]
    fn fields_linux_reads_are_at_spec_offsets() {
        let b = written(&nvmet_like());
        assert_eq!(le16(&b[..], 0), 0x1AF4, "VID");
        assert_eq!(le16(&b[..], 2), 0x1AF5, "SSVID");
        assert_eq!(&b[4..24], b"KEEL0001            ", "SN");
        assert_eq!(&b[24..28], b"Keel", "MN");
        assert!(b[28..64].iter().all(|&c| c == b' '), "MN padding");
        assert_eq!(&b[64..72], b"0.1.0   ", "FR");
        assert_eq!(&b[73..76], &[0x11, 0x22, 0x33], "IEEE");
        assert_eq!(b[76], 0x0A, "CMIC");
        assert_eq!(b[77], 5, "MDTS");
        assert_eq!(le16(&b[..], 78), 0x0102, "CNTLID");
        assert_eq!(le32(&b[..], 80), 0x0001_0300, "VER");
        assert_eq!(le32(&b[..], 92), 0x0900, "OAES");
        assert_eq!(le32(&b[..], 96), 0x41, "CTRATT");
        assert_eq!(b[111], 1, "CNTRLTYPE");
        assert_eq!(le16(&b[..], 256), 0x0203, "OACS");
        assert_eq!(b[259], 3, "AERL");
        assert_eq!(b[261], 0x7, "LPA");
        assert_eq!(b[262], 127, "ELPE");
        assert_eq!(le16(&b[..], 320), 10, "KAS");
        assert_eq!(b[342], 10, "ANATT");
        assert_eq!(b[343], 0x47, "ANACAP");
        assert_eq!(le32(&b[..], 344), 0x0405_0607, "ANAGRPMAX");
        assert_eq!(le32(&b[..], 348), 0x0809_0A0B, "NANAGRPID");
        assert_eq!(b[512], 0x66, "SQES");
        assert_eq!(b[513], 0x44, "CQES");
        assert_eq!(le16(&b[..], 514), 1024, "MAXCMD");
        assert_eq!(le32(&b[..], 516), 0x0C0D_0E0F, "NN");
        assert_eq!(le16(&b[..], 520), 0xC, "ONCS");
        assert_eq!(b[525], 1, "VWC");
        assert_eq!(le32(&b[..], 536), 0x0010_0001, "SGLS");
        assert_eq!(&b[768..768 + SUBNQN.len()], SUBNQN.as_bytes(), "SUBNQN");
        assert!(
            b[768 + SUBNQN.len()..1024].iter().all(|&c| c == 0),
            "SUBNQN padding"
        );
        assert_eq!(le32(&b[..], 1792), 1028, "IOCCSZ");
        assert_eq!(le32(&b[..], 1796), 1, "IORCSZ");
        assert_eq!(le16(&b[..], 1800), 0, "ICDOFF");
        assert_eq!(b[1802], 0, "FCATT");
        assert_eq!(b[1803], 1, "MSDBD");
    }

    #[test]
    fn every_other_byte_is_zero() {
        let identify = nvmet_like();
        let b = written(&identify);
        // Everything past the fabrics fields (power states, vendor area) is zero.
        assert!(b[1806..].iter().all(|&c| c == 0));
        // Reserved ranges between the fields are zero.
        assert!(b[134..256].iter().all(|&c| c == 0));
        assert!(b[544..768].iter().all(|&c| c == 0));
        assert!(b[1024..1792].iter().all(|&c| c == 0));
    }

    #[test]
    fn parse_reads_back_what_was_written() {
        let identify = IdentifyController {
            rab: 6,
            rtd3r: 1,
            rtd3e: 2,
            fguid: [9; 16],
            crdt: [1, 2, 3],
            acl: 4,
            frmw: 5,
            npss: 6,
            fuses: 7,
            fna: 8,
            awun: 9,
            awupf: 10,
            acwu: 11,
            mnan: 12,
            ofcs: 13,
            ..nvmet_like()
        };
        let b = written(&identify);
        assert_eq!(IdentifyController::parse(&b), Ok(identify));
        assert_eq!(identify.max_in_capsule_data(), 16384);
    }

    #[test]
    fn rejects_fields_that_do_not_fit() {
        let mut out = Box::new([0u8; IDENTIFY_DATA_LEN]);
        let long_serial = IdentifyController {
            serial_number: "123456789012345678901",
            ..nvmet_like()
        };
        assert!(matches!(
            long_serial.write_into(&mut out),
            Err(FieldError::TooLong { field: "SN", .. })
        ));
        let bad_nqn = IdentifyController {
            subnqn: "not-an-nqn",
            ..nvmet_like()
        };
        assert!(matches!(
            bad_nqn.write_into(&mut out),
            Err(FieldError::Nqn {
                field: "SUBNQN",
                ..
            })
        ));
        let discovery = IdentifyController {
            subnqn: DISCOVERY_NQN,
            cntrltype: cntrltype::DISCOVERY,
            ..Default::default()
        };
        assert_eq!(discovery.write_into(&mut out), Ok(()));
    }
}
