//! Fabrics commands (NVMe Base 2.0 §6): Connect and its 1024-byte data,
//! Property Get and Property Set, read from and written to a
//! [`SubmissionQueueEntry`].
//!
//! A Fabrics SQE (Base 2.0 §4.1.2) reuses the common layout with opcode 7Fh,
//! FCTYPE in byte 4 and command-specific fields in bytes 40..64, i.e. in
//! what the common layout calls CDW10..CDW15.

use thiserror::Error;

use crate::nvme::nqn::{parse_nqn_field, NqnError, NQN_FIELD_LEN};
use crate::nvme::opcode::{FabricsCommandType, FABRICS_OPCODE};
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::{Psdt, SubmissionQueueEntry};
use crate::nvme::status::Status;
use crate::nvme::text::{write_nqn, FieldError};
use crate::wire::{array_at, put_bytes, put_u16, u16_at};

/// Size of the Connect command's data (in-capsule).
pub const CONNECT_DATA_LEN: usize = 1024;
/// The CNTLID a host sends to ask for any controller (dynamic model).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;

/// Byte offsets of the Connect SQE fields, for the IPO of an
/// "invalid parameters" reply.
pub mod connect_sqe_offset {
    /// Record format (RECFMT).
    pub const RECFMT: u16 = 40;
    /// Queue identifier (QID).
    pub const QID: u16 = 42;
    /// Submission queue size (SQSIZE, 0's based).
    pub const SQSIZE: u16 = 44;
    /// Connect attributes (CATTR).
    pub const CATTR: u16 = 46;
    /// Keep alive timeout (KATO, ms).
    pub const KATO: u16 = 48;
}

/// Byte offsets of the Connect data fields (NVMe Base 2.0 §6.3, "Connect
/// Command Data"), also the IPO of an "invalid parameters" reply.
pub mod connect_data_offset {
    /// Host identifier (16 bytes).
    pub const HOSTID: u16 = 0;
    /// Controller ID requested (FFFFh: any, dynamic model).
    pub const CNTLID: u16 = 16;
    /// Subsystem NQN (256 bytes).
    pub const SUBNQN: u16 = 256;
    /// Host NQN (256 bytes).
    pub const HOSTNQN: u16 = 512;
}

/// Offsets of the controller properties a fabrics host reads and writes
/// (NVMe Base 2.0 §3.1.4).
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version (4 bytes).
    pub const VS: u32 = 0x08;
    /// Controller Configuration (4 bytes).
    pub const CC: u32 = 0x14;
    /// Controller Status (4 bytes).
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset (4 bytes).
    pub const NSSR: u32 = 0x20;
}

/// Connect command fields (NVMe Base 2.0 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectCommand {
    /// Record format; 0 is the only one defined.
    pub recfmt: u16,
    /// Queue to create: 0 for the admin queue, 1.. for I/O queues.
    pub qid: u16,
    /// Submission queue size, 0's based (the Linux host sends 31 and 127).
    pub sqsize: u16,
    /// Connect attributes; bit 2 asks to disable SQ flow control.
    pub cattr: u8,
    /// Keep alive timeout in milliseconds (admin queue only; 0 disables).
    pub kato: u32,
}

/// CATTR bit 2: the host asks for SQ flow control to be disabled.
pub const CATTR_DISABLE_SQ_FLOW_CONTROL: u8 = 1 << 2;

impl ConnectCommand {
    /// Reads the Connect fields of `sqe` (whose FCTYPE should be Connect).
    pub const fn from_sqe(sqe: &SubmissionQueueEntry) -> Self {
        Self {
            recfmt: sqe.cdw10 as u16,
            qid: (sqe.cdw10 >> 16) as u16,
            sqsize: sqe.cdw11 as u16,
            cattr: (sqe.cdw11 >> 16) as u8,
            kato: sqe.cdw12,
        }
    }

    /// Builds the Connect SQE the host sends, with SGL1 describing the
    /// 1024 bytes of in-capsule Connect data.
    pub fn to_sqe(&self, cid: u16) -> SubmissionQueueEntry {
        let mut sqe = fabrics_sqe(FabricsCommandType::Connect, cid);
        sqe.set_sgl1(SglDescriptor::InCapsule {
            offset: 0,
            length: CONNECT_DATA_LEN as u32,
        });
        sqe.cdw10 = u32::from(self.recfmt) | (u32::from(self.qid) << 16);
        sqe.cdw11 = u32::from(self.sqsize) | (u32::from(self.cattr) << 16);
        sqe.cdw12 = self.kato;
        sqe
    }

    /// Number of entries in the submission queue (SQSIZE is 0's based).
    pub const fn queue_entries(&self) -> u32 {
        self.sqsize as u32 + 1
    }

    /// Whether the host asked to disable SQ flow control (CATTR bit 2).
    pub const fn sq_flow_control_disabled(&self) -> bool {
        self.cattr & CATTR_DISABLE_SQ_FLOW_CONTROL != 0
    }
}

/// DW0 of a successful Connect completion: CNTLID in bits 15:0 and
/// AUTHREQ in bits 31:16.
pub const fn connect_success_dw0(cntlid: u16, authreq: u16) -> u32 {
    (cntlid as u32) | ((authreq as u32) << 16)
}

/// Which Connect parameter is invalid, reported in DW0 of a completion
/// with [`Status::CONNECT_INVALID_PARAMETERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectInvalidParameter {
    /// The parameter is in the Connect data (IATTR bit 0 set) rather than
    /// in the SQE.
    pub in_data: bool,
    /// Byte offset of the parameter (IPO) within the SQE or the data.
    pub offset: u16,
}

impl ConnectInvalidParameter {
    /// Completion DW0: IPO in bits 15:0, IATTR in bits 23:16.
    pub const fn dw0(&self) -> u32 {
        (self.offset as u32) | ((self.in_data as u32) << 16)
    }

    /// Decodes a completion DW0.
    pub const fn from_dw0(dw0: u32) -> Self {
        Self {
            in_data: (dw0 >> 16) & 1 != 0,
            offset: dw0 as u16,
        }
    }
}

/// Size attribute of a property access (ATTRIB bits 2:0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertySize {
    /// 0: a 4-byte property.
    Four,
    /// 1: an 8-byte property.
    Eight,
    /// Any other value (reserved).
    Reserved(u8),
}

impl PropertySize {
    const fn from_attrib(attrib: u8) -> Self {
        match attrib & 0x7 {
            0 => Self::Four,
            1 => Self::Eight,
            other => Self::Reserved(other),
        }
    }

    const fn attrib(self) -> u8 {
        match self {
            Self::Four => 0,
            Self::Eight => 1,
            Self::Reserved(value) => value & 0x7,
        }
    }
}

/// Property Get fields (NVMe Base 2.0 §6.5): value returned in DW0 (and
/// DW1 for 8-byte properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyGetCommand {
    /// Property size.
    pub size: PropertySize,
    /// Property offset, see [`property`].
    pub offset: u32,
}

/// Property Set fields (NVMe Base 2.0 §6.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertySetCommand {
    /// Property size.
    pub size: PropertySize,
    /// Property offset, see [`property`].
    pub offset: u32,
    /// Value to write (only the low 4 bytes for 4-byte properties).
    pub value: u64,
}

/// A Fabrics command read from an SQE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FabricsCommand {
    /// Property Set.
    PropertySet(PropertySetCommand),
    /// Connect.
    Connect(ConnectCommand),
    /// Property Get.
    PropertyGet(PropertyGetCommand),
    /// Authentication Send (fields not decoded).
    AuthenticationSend,
    /// Authentication Receive (fields not decoded).
    AuthenticationReceive,
    /// Disconnect.
    Disconnect,
    /// Unknown FCTYPE: the target answers Invalid Field.
    Unknown(u8),
}

impl FabricsCommand {
    /// Reads a Fabrics command; `None` when the opcode is not 7Fh.
    pub fn from_sqe(sqe: &SubmissionQueueEntry) -> Option<Self> {
        let command = match sqe.fabrics_type()? {
            FabricsCommandType::PropertySet => Self::PropertySet(PropertySetCommand {
                size: PropertySize::from_attrib(sqe.cdw10 as u8),
                offset: sqe.cdw11,
                value: u64::from(sqe.cdw12) | (u64::from(sqe.cdw13) << 32),
            }),
            FabricsCommandType::Connect => Self::Connect(ConnectCommand::from_sqe(sqe)),
            FabricsCommandType::PropertyGet => Self::PropertyGet(PropertyGetCommand {
                size: PropertySize::from_attrib(sqe.cdw10 as u8),
                offset: sqe.cdw11,
            }),
            FabricsCommandType::AuthenticationSend => Self::AuthenticationSend,
            FabricsCommandType::AuthenticationReceive => Self::AuthenticationReceive,
            FabricsCommandType::Disconnect => Self::Disconnect,
            FabricsCommandType::Unknown(fctype) => Self::Unknown(fctype),
        };
        Some(command)
    }

    /// Builds the SQE a host sends for this command. Authentication
    /// commands get only their FCTYPE; callers fill in the rest.
    pub fn to_sqe(&self, cid: u16) -> SubmissionQueueEntry {
        match *self {
            Self::Connect(connect) => connect.to_sqe(cid),
            Self::PropertySet(set) => {
                let mut sqe = fabrics_sqe(FabricsCommandType::PropertySet, cid);
                sqe.cdw10 = u32::from(set.size.attrib());
                sqe.cdw11 = set.offset;
                sqe.cdw12 = set.value as u32;
                sqe.cdw13 = (set.value >> 32) as u32;
                sqe
            }
            Self::PropertyGet(get) => {
                let mut sqe = fabrics_sqe(FabricsCommandType::PropertyGet, cid);
                sqe.cdw10 = u32::from(get.size.attrib());
                sqe.cdw11 = get.offset;
                sqe
            }
            Self::AuthenticationSend => fabrics_sqe(FabricsCommandType::AuthenticationSend, cid),
            Self::AuthenticationReceive => {
                fabrics_sqe(FabricsCommandType::AuthenticationReceive, cid)
            }
            Self::Disconnect => fabrics_sqe(FabricsCommandType::Disconnect, cid),
            Self::Unknown(fctype) => fabrics_sqe(FabricsCommandType::Unknown(fctype), cid),
        }
    }
}

/// A Fabrics SQE with no data: SGLs selected, SGL1 an empty transport data
/// block (what the Linux host sends for data-less commands).
fn fabrics_sqe(fctype: FabricsCommandType, cid: u16) -> SubmissionQueueEntry {
    let mut sqe = SubmissionQueueEntry {
        opcode: FABRICS_OPCODE,
        cid,
        nsid: u32::from(fctype.as_u8()),
        ..Default::default()
    };
    sqe.set_psdt(Psdt::SglMetadataBuffer);
    sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: 0 });
    sqe
}

/// Connect command data (NVMe Base 2.0 §6.3), borrowed from the capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectData<'a> {
    /// Host identifier (HOSTID), 128 bits.
    pub host_id: [u8; 16],
    /// Requested controller ID; [`CNTLID_DYNAMIC`] for "any".
    pub cntlid: u16,
    /// Subsystem NQN to connect to (validated).
    pub subnqn: &'a str,
    /// Host NQN (validated).
    pub hostnqn: &'a str,
}

/// Why Connect data cannot be used.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ConnectDataError {
    /// The data is not exactly 1024 bytes.
    #[error("Connect data is {len} bytes; it must be 1024")]
    Length {
        /// Length received.
        len: usize,
    },
    /// SUBNQN is not a valid NQN.
    #[error("SUBNQN: {0}")]
    SubNqn(NqnError),
    /// HOSTNQN is not a valid NQN.
    #[error("HOSTNQN: {0}")]
    HostNqn(NqnError),
}

impl ConnectDataError {
    /// The completion status a target should return.
    pub const fn status(&self) -> Status {
        match self {
            Self::Length { .. } => Status::DATA_SGL_LENGTH_INVALID,
            Self::SubNqn(_) | Self::HostNqn(_) => Status::CONNECT_INVALID_PARAMETERS,
        }
    }

    /// The DW0 parameter pointer for an invalid-parameters completion.
    pub const fn invalid_parameter(&self) -> Option<ConnectInvalidParameter> {
        let offset = match self {
            Self::Length { .. } => return None,
            Self::SubNqn(_) => connect_data_offset::SUBNQN,
            Self::HostNqn(_) => connect_data_offset::HOSTNQN,
        };
        Some(ConnectInvalidParameter {
            in_data: true,
            offset,
        })
    }
}

impl<'a> ConnectData<'a> {
    /// Parses and validates Connect data.
    pub fn parse(data: &'a [u8]) -> Result<Self, ConnectDataError> {
        let data: &'a [u8; CONNECT_DATA_LEN] = data
            .try_into()
            .map_err(|_| ConnectDataError::Length { len: data.len() })?;
        let subnqn = nqn_field(data, connect_data_offset::SUBNQN)
            .and_then(parse_nqn_field)
            .map_err(ConnectDataError::SubNqn)?;
        let hostnqn = nqn_field(data, connect_data_offset::HOSTNQN)
            .and_then(parse_nqn_field)
            .map_err(ConnectDataError::HostNqn)?;
        Ok(Self {
            host_id: array_at(data, usize::from(connect_data_offset::HOSTID)),
            cntlid: u16_at(data, usize::from(connect_data_offset::CNTLID)),
            subnqn,
            hostnqn,
        })
    }

    /// Writes the Connect data (reserved bytes zero).
    pub fn write_into(&self, out: &mut [u8; CONNECT_DATA_LEN]) -> Result<(), FieldError> {
        out.fill(0);
        put_bytes(out, usize::from(connect_data_offset::HOSTID), &self.host_id);
        put_u16(out, usize::from(connect_data_offset::CNTLID), self.cntlid);
        let subnqn = usize::from(connect_data_offset::SUBNQN);
        write_nqn(
            "SUBNQN",
            self.subnqn,
            &mut out[subnqn..subnqn + NQN_FIELD_LEN],
        )?;
        let hostnqn = usize::from(connect_data_offset::HOSTNQN);
        write_nqn(
            "HOSTNQN",
            self.hostnqn,
            &mut out[hostnqn..hostnqn + NQN_FIELD_LEN],
        )
    }
}

fn nqn_field(data: &[u8; CONNECT_DATA_LEN], offset: u16) -> Result<&[u8; NQN_FIELD_LEN], NqnError> {
    // Never fails: both NQN fields end at or before byte 768 of 1024.
    data.get(usize::from(offset)..)
        .and_then(<[u8]>::first_chunk)
        .ok_or(NqnError::NotTerminated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvme::nqn::DISCOVERY_NQN;

    const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";

    fn linux_connect_data() -> [u8; CONNECT_DATA_LEN] {
        let mut data = [0u8; CONNECT_DATA_LEN];
        data[..16].copy_from_slice(&[0x11; 16]);
        data[16..18].copy_from_slice(&0xFFFFu16.to_le_bytes());
        data[256..256 + DISCOVERY_NQN.len()].copy_from_slice(DISCOVERY_NQN.as_bytes());
        data[512..512 + HOSTNQN.len()].copy_from_slice(HOSTNQN.as_bytes());
        data
    }

    #[test]
    fn parses_connect_data_at_spec_offsets() {
        let bytes = linux_connect_data();
        let data = ConnectData::parse(&bytes).unwrap();
        assert_eq!(data.host_id, [0x11; 16]);
        assert_eq!(data.cntlid, CNTLID_DYNAMIC);
        assert_eq!(data.subnqn, DISCOVERY_NQN);
        assert_eq!(data.hostnqn, HOSTNQN);

        let mut written = [0xEEu8; CONNECT_DATA_LEN];
        data.write_into(&mut written).unwrap();
        assert_eq!(written, bytes);
    }

    #[test]
    fn connect_data_errors_point_at_the_field() {
        assert_eq!(
            ConnectData::parse(&[0u8; 1023]),
            Err(ConnectDataError::Length { len: 1023 })
        );
        let mut bytes = linux_connect_data();
        bytes[256..256 + 4].copy_from_slice(b"iqn.");
        let error = ConnectData::parse(&bytes).unwrap_err();
        assert_eq!(error, ConnectDataError::SubNqn(NqnError::MissingPrefix));
        assert_eq!(error.status(), Status::CONNECT_INVALID_PARAMETERS);
        // IATTR=1 (in data), IPO=256: what nvmet reports for a bad SUBNQN.
        assert_eq!(error.invalid_parameter().unwrap().dw0(), 0x0001_0100);

        let mut bytes = linux_connect_data();
        bytes[512..768].fill(b'x');
        let error = ConnectData::parse(&bytes).unwrap_err();
        assert_eq!(error, ConnectDataError::HostNqn(NqnError::NotTerminated));
        assert_eq!(error.invalid_parameter().unwrap().offset, 512);
        assert_eq!(
            ConnectDataError::Length { len: 0 }.status(),
            Status::DATA_SGL_LENGTH_INVALID
        );
    }

    #[test]
    fn connect_sqe_fields() {
        // Admin-queue Connect as the Linux host sends it for `nvme connect`.
        let connect = ConnectCommand {
            recfmt: 0,
            qid: 0,
            sqsize: 31,
            cattr: 0,
            kato: 5000,
        };
        let sqe = connect.to_sqe(0x1000);
        let bytes = sqe.encode();
        assert_eq!(bytes[0], 0x7F);
        assert_eq!(bytes[1], 0x40); // PSDT = 01b
        assert_eq!(&bytes[2..4], &[0x00, 0x10]);
        assert_eq!(bytes[4], 0x01); // FCTYPE Connect
        assert_eq!(&bytes[32..36], &1024u32.to_le_bytes()); // SGL1 length
        assert_eq!(bytes[39], 0x01); // SGL1 in-capsule (data block, offset)
        assert_eq!(&bytes[40..42], &[0, 0]); // RECFMT
        assert_eq!(&bytes[42..44], &[0, 0]); // QID
        assert_eq!(&bytes[44..46], &[31, 0]); // SQSIZE
        assert_eq!(bytes[46], 0); // CATTR
        assert_eq!(&bytes[48..52], &5000u32.to_le_bytes()); // KATO
        assert_eq!(
            FabricsCommand::from_sqe(&sqe),
            Some(FabricsCommand::Connect(connect))
        );
        assert_eq!(connect.queue_entries(), 32);
        assert_eq!(connect_success_dw0(1, 0), 1);
    }

    #[test]
    fn property_commands() {
        // Property Set CC = 0x460061 (EN=1), as sent during controller enable.
        let set = FabricsCommand::PropertySet(PropertySetCommand {
            size: PropertySize::Four,
            offset: property::CC,
            value: 0x0046_0061,
        });
        let bytes = set.to_sqe(3).encode();
        assert_eq!(bytes[4], 0x00);
        assert_eq!(bytes[40], 0); // ATTRIB: 4 bytes
        assert_eq!(&bytes[44..48], &0x14u32.to_le_bytes()); // OFST
        assert_eq!(&bytes[48..56], &0x0046_0061u64.to_le_bytes()); // VALUE
        assert_eq!(bytes[39], 0x5A);
        assert_eq!(
            FabricsCommand::from_sqe(&SubmissionQueueEntry::decode(&bytes)),
            Some(set)
        );

        // Property Get CAP, 8 bytes.
        let get = FabricsCommand::PropertyGet(PropertyGetCommand {
            size: PropertySize::Eight,
            offset: property::CAP,
        });
        let bytes = get.to_sqe(4).encode();
        assert_eq!(bytes[4], 0x04);
        assert_eq!(bytes[40], 1);
        assert_eq!(
            FabricsCommand::from_sqe(&SubmissionQueueEntry::decode(&bytes)),
            Some(get)
        );
        assert_eq!(
            FabricsCommand::from_sqe(&SubmissionQueueEntry::default()),
            None
        );
    }
}
