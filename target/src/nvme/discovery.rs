//! Discovery Log Page (Log Identifier 70h), NVMe Base 2.0 §5.16 (Get Log
//! Page): a 1024-byte header followed by NUMREC 1024-byte entries, one per
//! subsystem port a host may connect to.

use crate::nvme::nqn::NQN_FIELD_LEN;
use crate::nvme::text::{read_nul_padded, write_nqn, write_nul_padded, FieldError};
use crate::wire::{put_u16, put_u64, u16_at, u64_at};

/// Size of the log page header and of each entry.
pub const DISCOVERY_RECORD_LEN: usize = 1024;
/// Size of the TRSVCID field.
pub const TRSVCID_LEN: usize = 32;
/// Size of the TRADDR field.
pub const TRADDR_LEN: usize = 256;

/// Header field offsets.
mod header_offset {
    pub const GENCTR: usize = 0;
    pub const NUMREC: usize = 8;
    pub const RECFMT: usize = 16;
}

/// Entry field offsets.
mod entry_offset {
    pub const TRTYPE: usize = 0;
    pub const ADRFAM: usize = 1;
    pub const SUBTYPE: usize = 2;
    pub const TREQ: usize = 3;
    pub const PORTID: usize = 4;
    pub const CNTLID: usize = 6;
    pub const ASQSZ: usize = 8;
    pub const EFLAGS: usize = 10;
    pub const TRSVCID: usize = 32;
    pub const SUBNQN: usize = 256;
    pub const TRADDR: usize = 512;
    pub const TSAS: usize = 768;
}

code_enum! {
    /// Transport Type (TRTYPE).
    pub enum TransportType {
        /// RDMA.
        Rdma = 1,
        /// Fibre Channel.
        FibreChannel = 2,
        /// TCP.
        Tcp = 3,
        /// Intra-host (loopback).
        IntraHost = 0xFE,
    }
}

code_enum! {
    /// Address Family (ADRFAM).
    pub enum AddressFamily {
        /// IPv4: TRADDR in dotted-decimal form.
        Ipv4 = 1,
        /// IPv6.
        Ipv6 = 2,
        /// InfiniBand.
        InfiniBand = 3,
        /// Fibre Channel.
        FibreChannel = 4,
        /// Intra-host.
        IntraHost = 0xFE,
    }
}

code_enum! {
    /// Subsystem Type (SUBTYPE).
    pub enum SubsystemType {
        /// A referral to another discovery service.
        DiscoveryReferral = 1,
        /// An NVM subsystem (I/O controllers).
        Nvm = 2,
        /// The discovery subsystem being queried ("current discovery subsystem").
        CurrentDiscovery = 3,
    }
}

/// Transport Requirements (TREQ).
pub mod treq {
    /// Secure channel: not specified (bits 1:0 = 00b).
    pub const SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0b00;
    /// Secure channel: required.
    pub const SECURE_CHANNEL_REQUIRED: u8 = 0b01;
    /// Secure channel: not required.
    pub const SECURE_CHANNEL_NOT_REQUIRED: u8 = 0b10;
    /// Bit 2: the controller can disable SQ flow control.
    pub const SQ_FLOW_CONTROL_DISABLE_SUPPORTED: u8 = 1 << 2;
}

/// Entry Flags (EFLAGS).
pub mod eflags {
    /// Duplicate Returned Information.
    pub const DUPLICATE_RETURNED_INFO: u16 = 1 << 0;
    /// Explicit Persistent Connection Support for Discovery.
    pub const EXPLICIT_PERSISTENT_CONNECTION: u16 = 1 << 1;
}

code_enum! {
    /// NVMe/TCP Security Type, byte 0 of the TSAS field for TCP entries.
    pub enum TcpSecurityType {
        /// No security.
        None = 0,
        /// TLS 1.2.
        Tls12 = 1,
        /// TLS 1.3.
        Tls13 = 2,
    }
}

/// Discovery Log Page header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiscoveryLogHeader {
    /// Generation Counter: changes whenever the log changes, so a host that
    /// reads the log in pieces can tell it must start over.
    pub genctr: u64,
    /// Number of Records.
    pub numrec: u64,
    /// Record Format (0).
    pub recfmt: u16,
}

impl DiscoveryLogHeader {
    /// Writes the 1024-byte header.
    pub fn write_into(&self, out: &mut [u8; DISCOVERY_RECORD_LEN]) {
        out.fill(0);
        put_u64(out, header_offset::GENCTR, self.genctr);
        put_u64(out, header_offset::NUMREC, self.numrec);
        put_u16(out, header_offset::RECFMT, self.recfmt);
    }

    /// Reads the header.
    pub fn parse(bytes: &[u8; DISCOVERY_RECORD_LEN]) -> Self {
        Self {
            genctr: u64_at(bytes, header_offset::GENCTR),
            numrec: u64_at(bytes, header_offset::NUMREC),
            recfmt: u16_at(bytes, header_offset::RECFMT),
        }
    }
}

/// One Discovery Log Page entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryLogEntry<'a> {
    /// Transport type.
    pub trtype: TransportType,
    /// Address family.
    pub adrfam: AddressFamily,
    /// Subsystem type.
    pub subtype: SubsystemType,
    /// Transport requirements, see [`treq`].
    pub treq: u8,
    /// NVM subsystem port ID.
    pub portid: u16,
    /// Controller ID: FFFFh for the dynamic controller model.
    pub cntlid: u16,
    /// Admin Max SQ Size (entries, at least 32).
    pub asqsz: u16,
    /// Entry flags, see [`eflags`].
    pub eflags: u16,
    /// Transport service identifier: the TCP port as text, e.g. "4420".
    pub trsvcid: &'a str,
    /// Subsystem NQN.
    pub subnqn: &'a str,
    /// Transport address, e.g. "127.0.0.1".
    pub traddr: &'a str,
    /// TCP security type (TSAS byte 0).
    pub tcp_security: TcpSecurityType,
}

impl<'a> DiscoveryLogEntry<'a> {
    /// Writes the 1024-byte entry. TRSVCID and TRADDR are NUL-padded, as
    /// the Linux target sends them.
    pub fn write_into(&self, out: &mut [u8; DISCOVERY_RECORD_LEN]) -> Result<(), FieldError> {
        out.fill(0);
        out[entry_offset::TRTYPE] = self.trtype.as_u8();
        out[entry_offset::ADRFAM] = self.adrfam.as_u8();
        out[entry_offset::SUBTYPE] = self.subtype.as_u8();
        out[entry_offset::TREQ] = self.treq;
        put_u16(out, entry_offset::PORTID, self.portid);
        put_u16(out, entry_offset::CNTLID, self.cntlid);
        put_u16(out, entry_offset::ASQSZ, self.asqsz);
        put_u16(out, entry_offset::EFLAGS, self.eflags);
        write_nul_padded(
            "TRSVCID",
            self.trsvcid,
            &mut out[entry_offset::TRSVCID..entry_offset::TRSVCID + TRSVCID_LEN],
        )?;
        write_nqn(
            "SUBNQN",
            self.subnqn,
            &mut out[entry_offset::SUBNQN..entry_offset::SUBNQN + NQN_FIELD_LEN],
        )?;
        write_nul_padded(
            "TRADDR",
            self.traddr,
            &mut out[entry_offset::TRADDR..entry_offset::TRADDR + TRADDR_LEN],
        )?;
        if self.trtype == TransportType::Tcp {
            out[entry_offset::TSAS] = self.tcp_security.as_u8();
        }
        Ok(())
    }

    /// Reads an entry (for the initiator). Trailing spaces in TRSVCID and
    /// TRADDR are trimmed, since some targets pad them with spaces.
    pub fn parse(bytes: &'a [u8; DISCOVERY_RECORD_LEN]) -> Result<Self, FieldError> {
        let text = |field: &'static str, start: usize, len: usize| {
            read_nul_padded(&bytes[start..start + len])
                .map(|text| text.trim_end_matches(' '))
                .ok_or(FieldError::Invalid {
                    field,
                    reason: "not UTF-8",
                })
        };
        Ok(Self {
            trtype: TransportType::from_u8(bytes[entry_offset::TRTYPE]),
            adrfam: AddressFamily::from_u8(bytes[entry_offset::ADRFAM]),
            subtype: SubsystemType::from_u8(bytes[entry_offset::SUBTYPE]),
            treq: bytes[entry_offset::TREQ],
            portid: u16_at(bytes, entry_offset::PORTID),
            cntlid: u16_at(bytes, entry_offset::CNTLID),
            asqsz: u16_at(bytes, entry_offset::ASQSZ),
            eflags: u16_at(bytes, entry_offset::EFLAGS),
            trsvcid: text("TRSVCID", entry_offset::TRSVCID, TRSVCID_LEN)?,
            subnqn: text("SUBNQN", entry_offset::SUBNQN, NQN_FIELD_LEN)?,
            traddr: text("TRADDR", entry_offset::TRADDR, TRADDR_LEN)?,
            tcp_security: TcpSecurityType::from_u8(bytes[entry_offset::TSAS]),
        })
    }
}

/// Length of a discovery log page with `records` entries.
pub const fn discovery_log_len(records: usize) -> usize {
    DISCOVERY_RECORD_LEN * (1 + records)
}

/// Writes a whole discovery log page (header with NUMREC = number of
/// entries, then the entries) into `out`, which must hold
/// [`discovery_log_len`] bytes. Returns the bytes written. A Get Log Page
/// with an offset and length is then served from a slice of it.
pub fn write_discovery_log(
    genctr: u64,
    entries: &[DiscoveryLogEntry<'_>],
    out: &mut [u8],
) -> Result<usize, FieldError> {
    let len = discovery_log_len(entries.len());
    let have = out.len();
    let out = out.get_mut(..len).ok_or(FieldError::TooLong {
        field: "discovery log",
        len,
        max: have,
    })?;
    let mut records = out.chunks_exact_mut(DISCOVERY_RECORD_LEN);
    let header = DiscoveryLogHeader {
        genctr,
        numrec: entries.len() as u64,
        recfmt: 0,
    };
    for (index, record) in records.by_ref().enumerate() {
        // chunks_exact_mut yields exactly DISCOVERY_RECORD_LEN-byte chunks.
        let Ok(record) = <&mut [u8; DISCOVERY_RECORD_LEN]>::try_from(record) else {
            continue;
        };
        match index.checked_sub(1) {
            None => header.write_into(record),
            Some(entry) => {
                if let Some(entry) = entries.get(entry) {
                    entry.write_into(record)?;
                }
            }
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::nqn::DISCOVERY_NQN;

    const SUBNQN: &str = "nqn.2024-01.dev.keel:vol0";

    fn nvm_entry() -> DiscoveryLogEntry<'static> {
        DiscoveryLogEntry {
            trtype: TransportType::Tcp,
            adrfam: AddressFamily::Ipv4,
            subtype: SubsystemType::Nvm,
            treq: treq::SECURE_CHANNEL_NOT_REQUIRED | treq::SQ_FLOW_CONTROL_DISABLE_SUPPORTED,
            portid: 0x0102,
            cntlid: 0xFFFF,
            asqsz: 32,
            eflags: 0,
            trsvcid: "4420",
            subnqn: SUBNQN,
            traddr: "127.0.0.1",
            tcp_security: TcpSecurityType::None,
        }
    }

    #[test]
    fn entry_fields_at_spec_offsets() {
        let mut b = Box::new([0xAAu8; DISCOVERY_RECORD_LEN]);
        nvm_entry().write_into(&mut b).unwrap();
        assert_eq!(b[0], 3, "TRTYPE tcp");
        assert_eq!(b[1], 1, "ADRFAM ipv4");
        assert_eq!(b[2], 2, "SUBTYPE nvm");
        assert_eq!(b[3], 0x06, "TREQ");
        assert_eq!(&b[4..6], &[0x02, 0x01], "PORTID");
        assert_eq!(&b[6..8], &[0xFF, 0xFF], "CNTLID");
        assert_eq!(&b[8..10], &[32, 0], "ASQSZ");
        assert_eq!(&b[10..12], &[0, 0], "EFLAGS");
        assert!(b[12..32].iter().all(|&c| c == 0), "reserved");
        assert_eq!(&b[32..37], b"4420\0", "TRSVCID");
        assert!(
            b[36..256].iter().all(|&c| c == 0),
            "TRSVCID padding, reserved"
        );
        assert_eq!(&b[256..256 + SUBNQN.len()], SUBNQN.as_bytes(), "SUBNQN");
        assert!(b[256 + SUBNQN.len()..512].iter().all(|&c| c == 0));
        assert_eq!(&b[512..522], b"127.0.0.1\0", "TRADDR");
        assert!(b[521..].iter().all(|&c| c == 0), "TRADDR padding, TSAS");
        assert_eq!(DiscoveryLogEntry::parse(&b), Ok(nvm_entry()));
    }

    #[test]
    fn header_and_whole_log() {
        let current = DiscoveryLogEntry {
            subtype: SubsystemType::CurrentDiscovery,
            subnqn: DISCOVERY_NQN,
            ..nvm_entry()
        };
        let entries = [current, nvm_entry()];
        let mut page = vec![0xEEu8; discovery_log_len(2) + 10];
        assert_eq!(write_discovery_log(5, &entries, &mut page), Ok(3072));
        assert_eq!(&page[0..8], &5u64.to_le_bytes(), "GENCTR");
        assert_eq!(&page[8..16], &2u64.to_le_bytes(), "NUMREC");
        assert_eq!(&page[16..18], &[0, 0], "RECFMT");
        assert!(page[18..1024].iter().all(|&c| c == 0));
        assert_eq!(
            page[1024 + 2],
            3,
            "first entry: current discovery subsystem"
        );
        assert_eq!(page[2048 + 2], 2, "second entry: NVM subsystem");
        assert_eq!(&page[3072..], &[0xEE; 10], "nothing written past the log");

        let header: &[u8; DISCOVERY_RECORD_LEN] = page[..1024].try_into().unwrap();
        assert_eq!(
            DiscoveryLogHeader::parse(header),
            DiscoveryLogHeader {
                genctr: 5,
                numrec: 2,
                recfmt: 0
            }
        );

        let mut short = vec![0u8; 2048];
        assert!(write_discovery_log(5, &entries, &mut short).is_err());
    }

    #[test]
    fn parse_trims_space_padding() {
        let mut b = Box::new([0u8; DISCOVERY_RECORD_LEN]);
        nvm_entry().write_into(&mut b).unwrap();
        b[32..64].copy_from_slice(b"4420                            ");
        assert_eq!(DiscoveryLogEntry::parse(&b).unwrap().trsvcid, "4420");
    }
}
