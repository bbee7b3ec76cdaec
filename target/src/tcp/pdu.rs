//! NVMe/TCP PDU headers (NVMe/TCP Transport Specification 1.0 §3.6).
//!
//! Every PDU starts with the 8-byte common header (CH):
//!
//! | byte | field | meaning                                              |
//! |------|-------|------------------------------------------------------|
//! | 0    | type  | PDU type                                             |
//! | 1    | flags | HDGSTF (bit 0), DDGSTF (1), type-specific bits above |
//! | 2    | hlen  | header length, fixed per type, excluding the digest  |
//! | 3    | pdo   | PDU data offset: where data starts (0 if no data)    |
//! | 4..8 | plen  | whole PDU length: header, digests, padding, data     |
//!
//! followed by the type-specific header up to `hlen`, the header digest
//! (CRC32C, when enabled), padding up to `pdo`, the data, and the data
//! digest (when enabled and data is present). This module holds the typed
//! headers and their byte layouts; framing and validation live in
//! [`crate::tcp::decoder`] and [`crate::tcp::encoder`].

use crate::nvme::cqe::{CompletionQueueEntry, CQE_LEN};
use crate::nvme::sqe::{SubmissionQueueEntry, SQE_LEN};
use crate::tcp::error::{FatalErrorStatus, PduError};
use crate::wire::{put_u16, put_u32, u16_at, u32_at};

code_enum! {
    /// PDU type (CH byte 0).
    pub enum PduType {
        /// Initialize Connection Request (host to controller).
        IcReq = 0x00,
        /// Initialize Connection Response (controller to host).
        IcResp = 0x01,
        /// Host to Controller Terminate Connection Request.
        H2cTermReq = 0x02,
        /// Controller to Host Terminate Connection Request.
        C2hTermReq = 0x03,
        /// Command Capsule (host to controller).
        CapsuleCmd = 0x04,
        /// Response Capsule (controller to host).
        CapsuleResp = 0x05,
        /// Host to Controller Data.
        H2cData = 0x06,
        /// Controller to Host Data.
        C2hData = 0x07,
        /// Ready to Transfer (controller to host).
        R2t = 0x09,
    }
}

/// Common header flags (CH byte 1).
pub mod flags {
    /// A header digest follows the header.
    pub const HDGST: u8 = 1 << 0;
    /// A data digest follows the data.
    pub const DDGST: u8 = 1 << 1;
    /// H2CData / C2HData: last data PDU of the transfer (of the R2T for H2C).
    pub const DATA_LAST: u8 = 1 << 2;
    /// C2HData: the command succeeded and no CapsuleResp will follow
    /// (requires DATA_LAST).
    pub const DATA_SUCCESS: u8 = 1 << 3;
}

/// Length of the common header.
pub const COMMON_HEADER_LEN: usize = 8;
/// Length of a header or data digest.
pub const DIGEST_LEN: usize = 4;
/// HLEN and PLEN of ICReq and ICResp.
pub const IC_PDU_LEN: usize = 128;
/// HLEN of H2CTermReq and C2HTermReq.
pub const TERM_REQ_HEADER_LEN: usize = 24;
/// Largest PLEN of a termination request (header plus error data).
pub const TERM_REQ_MAX_LEN: usize = 152;
/// Most bytes of the offending PDU header a termination request carries.
pub const TERM_REQ_MAX_ERROR_DATA: usize = TERM_REQ_MAX_LEN - TERM_REQ_HEADER_LEN;
/// HLEN of CapsuleCmd: common header plus the 64-byte SQE.
pub const CAPSULE_CMD_HEADER_LEN: usize = COMMON_HEADER_LEN + SQE_LEN;
/// HLEN of CapsuleResp: common header plus the 16-byte CQE.
pub const CAPSULE_RESP_HEADER_LEN: usize = COMMON_HEADER_LEN + CQE_LEN;
/// HLEN of H2CData, C2HData and R2T.
pub const DATA_HEADER_LEN: usize = 24;
/// The only PDU format version (PFV) defined: 0.
pub const PFV_1_0: u16 = 0;
/// Largest HPDA / CPDA: alignment of (31 + 1) * 4 = 128 bytes.
pub const MAX_PDA: u8 = 31;
/// Smallest MAXH2CDATA a controller may advertise.
pub const MIN_MAXH2CDATA: u32 = 4096;

/// Byte offsets of header fields, reported in FEI when a field is invalid.
pub mod field_offset {
    /// CH: PDU type.
    pub const PDU_TYPE: u32 = 0;
    /// CH: flags.
    pub const FLAGS: u32 = 1;
    /// CH: header length.
    pub const HLEN: u32 = 2;
    /// CH: PDU data offset.
    pub const PDO: u32 = 3;
    /// CH: PDU length.
    pub const PLEN: u32 = 4;
    /// ICReq / ICResp: PDU format version.
    pub const PFV: u32 = 8;
    /// ICReq HPDA / ICResp CPDA.
    pub const PDA: u32 = 10;
    /// ICReq / ICResp: digest types.
    pub const DGST: u32 = 11;
    /// ICReq MAXR2T / ICResp MAXH2CDATA.
    pub const MAXR2T_MAXH2CDATA: u32 = 12;
    /// Data PDUs and R2T: command capsule CID.
    pub const CCCID: u32 = 8;
    /// Data PDUs and R2T: transfer tag.
    pub const TTAG: u32 = 10;
    /// Data PDUs: DATAO; R2T: R2TO.
    pub const DATA_OFFSET: u32 = 12;
    /// Data PDUs: DATAL; R2T: R2TL.
    pub const DATA_LENGTH: u32 = 16;
}

impl PduType {
    /// HLEN for this type; `None` for unknown types.
    pub const fn header_len(self) -> Option<usize> {
        match self {
            Self::IcReq | Self::IcResp => Some(IC_PDU_LEN),
            Self::H2cTermReq | Self::C2hTermReq => Some(TERM_REQ_HEADER_LEN),
            Self::CapsuleCmd => Some(CAPSULE_CMD_HEADER_LEN),
            Self::CapsuleResp => Some(CAPSULE_RESP_HEADER_LEN),
            Self::H2cData | Self::C2hData | Self::R2t => Some(DATA_HEADER_LEN),
            Self::Unknown(_) => None,
        }
    }

    /// Whether a host sends this type (a controller receives it).
    pub const fn is_host_to_controller(self) -> bool {
        matches!(
            self,
            Self::IcReq | Self::H2cTermReq | Self::CapsuleCmd | Self::H2cData
        )
    }

    /// Whether a controller sends this type (a host receives it).
    pub const fn is_controller_to_host(self) -> bool {
        matches!(
            self,
            Self::IcResp | Self::C2hTermReq | Self::CapsuleResp | Self::C2hData | Self::R2t
        )
    }

    /// Initialize Connection PDUs, exchanged once before anything else.
    pub const fn is_initialize_connection(self) -> bool {
        matches!(self, Self::IcReq | Self::IcResp)
    }

    /// Termination requests: never digested, may arrive at any time.
    pub const fn is_termination(self) -> bool {
        matches!(self, Self::H2cTermReq | Self::C2hTermReq)
    }

    /// Whether digests, once negotiated, apply to this type: all but the
    /// Initialize Connection and termination PDUs.
    pub const fn uses_digests(self) -> bool {
        !self.is_initialize_connection() && !self.is_termination()
    }

    /// Whether the type may carry PDU data after its header (termination
    /// requests carry error data but are framed on their own).
    pub const fn may_carry_data(self) -> bool {
        matches!(self, Self::CapsuleCmd | Self::H2cData | Self::C2hData)
    }

    /// The flag bits this type may set.
    pub const fn allowed_flags(self) -> u8 {
        match self {
            Self::CapsuleCmd => flags::HDGST | flags::DDGST,
            Self::CapsuleResp | Self::R2t => flags::HDGST,
            Self::H2cData => flags::HDGST | flags::DDGST | flags::DATA_LAST,
            Self::C2hData => flags::HDGST | flags::DDGST | flags::DATA_LAST | flags::DATA_SUCCESS,
            Self::IcReq | Self::IcResp | Self::H2cTermReq | Self::C2hTermReq | Self::Unknown(_) => {
                0
            }
        }
    }
}

/// The common header, fields as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    /// PDU type byte.
    pub pdu_type: u8,
    /// Flags byte.
    pub flags: u8,
    /// Header length.
    pub hlen: u8,
    /// PDU data offset.
    pub pdo: u8,
    /// PDU length.
    pub plen: u32,
}

impl CommonHeader {
    /// Reads the 8-byte common header.
    pub fn parse(bytes: &[u8; COMMON_HEADER_LEN]) -> Self {
        Self {
            pdu_type: bytes[0],
            flags: bytes[1],
            hlen: bytes[2],
            pdo: bytes[3],
            plen: u32_at(bytes, 4),
        }
    }

    /// Writes the 8-byte common header.
    pub fn write_into(&self, out: &mut [u8; COMMON_HEADER_LEN]) {
        out[0] = self.pdu_type;
        out[1] = self.flags;
        out[2] = self.hlen;
        out[3] = self.pdo;
        put_u32(out, 4, self.plen);
    }
}

/// Digest types requested (ICReq) or granted (ICResp), the DGST byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DigestOptions {
    /// Bit 0: header digests.
    pub header: bool,
    /// Bit 1: data digests.
    pub data: bool,
}

impl DigestOptions {
    /// Reads the DGST byte; reserved bits are ignored.
    pub const fn from_bits(bits: u8) -> Self {
        Self {
            header: bits & 0x1 != 0,
            data: bits & 0x2 != 0,
        }
    }

    /// The DGST byte.
    pub const fn bits(self) -> u8 {
        (self.header as u8) | ((self.data as u8) << 1)
    }
}

/// ICReq: the host's connection parameters (§3.6.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// PDU format version; 0.
    pub pfv: u16,
    /// Host PDU Data Alignment for C2H data, 0's based dwords (0..=31).
    pub hpda: u8,
    /// Digests the host asks for.
    pub digest: DigestOptions,
    /// Maximum outstanding R2Ts per command, 0's based.
    pub maxr2t: u32,
}

/// ICResp: the controller's answer (§3.6.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// PDU format version; 0.
    pub pfv: u16,
    /// Controller PDU Data Alignment for H2C data, 0's based dwords. The
    /// Linux host refuses anything but 0.
    pub cpda: u8,
    /// Digests enabled; must echo the request or the Linux host refuses.
    pub digest: DigestOptions,
    /// Most data bytes per H2CData PDU: a multiple of 4, at least 4096.
    pub maxh2cdata: u32,
}

/// H2CTermReq / C2HTermReq header (§3.6.2.4, §3.6.2.5). The error data
/// (a copy of the offending PDU header) is the PDU's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermReq {
    /// Fatal error status.
    pub fes: FatalErrorStatus,
    /// Fatal error information: the byte offset of the bad field for
    /// "invalid header field" and "unsupported parameter", else 0.
    pub fei: u32,
}

/// CapsuleCmd header: the submission queue entry (§3.6.2.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleCmd {
    /// The command.
    pub sqe: SubmissionQueueEntry,
}

/// CapsuleResp header: the completion queue entry (§3.6.2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleResp {
    /// The completion.
    pub cqe: CompletionQueueEntry,
}

/// H2CData / C2HData header (§3.6.2.8, §3.6.2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPdu {
    /// CID of the command the data belongs to (CCCID).
    pub cccid: u16,
    /// Transfer tag from the R2T (H2CData); reserved in C2HData.
    pub ttag: u16,
    /// Offset of this PDU's data within the command's data (DATAO).
    pub datao: u32,
    /// Data bytes in this PDU (DATAL).
    pub datal: u32,
    /// LAST_PDU flag.
    pub last: bool,
    /// SUCCESS flag (C2HData only; implies `last`).
    pub success: bool,
}

impl DataPdu {
    /// Checks that this PDU's data lies within the `length` bytes starting
    /// at `offset` of the command's data — the R2T window for H2CData, the
    /// whole transfer for C2HData. Outside it is a fatal "data transfer out
    /// of range" error.
    pub const fn check_within(&self, offset: u32, length: u32) -> Result<(), PduError> {
        let start = self.datao as u64;
        let end = start + self.datal as u64;
        if start < offset as u64 || end > offset as u64 + length as u64 {
            return Err(PduError::DataOutOfRange {
                datao: self.datao,
                datal: self.datal,
            });
        }
        Ok(())
    }
}

/// R2T header (§3.6.2.10): the controller is ready for `r2tl` bytes at
/// offset `r2to` of the command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// CID of the command (CCCID).
    pub cccid: u16,
    /// Transfer tag chosen by the controller, echoed in H2CData.
    pub ttag: u16,
    /// R2T offset.
    pub r2to: u32,
    /// R2T length.
    pub r2tl: u32,
}

/// A typed PDU header: everything but the common header's framing fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduHeader {
    /// ICReq.
    IcReq(IcReq),
    /// ICResp.
    IcResp(IcResp),
    /// H2CTermReq.
    H2cTermReq(TermReq),
    /// C2HTermReq.
    C2hTermReq(TermReq),
    /// CapsuleCmd.
    CapsuleCmd(CapsuleCmd),
    /// CapsuleResp.
    CapsuleResp(CapsuleResp),
    /// H2CData.
    H2cData(DataPdu),
    /// C2HData.
    C2hData(DataPdu),
    /// R2T.
    R2t(R2t),
}

impl PduHeader {
    /// The PDU type.
    pub const fn pdu_type(&self) -> PduType {
        match self {
            Self::IcReq(_) => PduType::IcReq,
            Self::IcResp(_) => PduType::IcResp,
            Self::H2cTermReq(_) => PduType::H2cTermReq,
            Self::C2hTermReq(_) => PduType::C2hTermReq,
            Self::CapsuleCmd(_) => PduType::CapsuleCmd,
            Self::CapsuleResp(_) => PduType::CapsuleResp,
            Self::H2cData(_) => PduType::H2cData,
            Self::C2hData(_) => PduType::C2hData,
            Self::R2t(_) => PduType::R2t,
        }
    }

    /// HLEN of this header.
    pub const fn header_len(&self) -> usize {
        match self {
            Self::IcReq(_) | Self::IcResp(_) => IC_PDU_LEN,
            Self::H2cTermReq(_) | Self::C2hTermReq(_) => TERM_REQ_HEADER_LEN,
            Self::CapsuleCmd(_) => CAPSULE_CMD_HEADER_LEN,
            Self::CapsuleResp(_) => CAPSULE_RESP_HEADER_LEN,
            Self::H2cData(_) | Self::C2hData(_) | Self::R2t(_) => DATA_HEADER_LEN,
        }
    }

    /// Type-specific flag bits (LAST_PDU, SUCCESS).
    pub(crate) const fn type_flags(&self) -> u8 {
        match self {
            Self::H2cData(data) | Self::C2hData(data) => {
                (if data.last { flags::DATA_LAST } else { 0 })
                    | (if data.success { flags::DATA_SUCCESS } else { 0 })
            }
            _ => 0,
        }
    }

    /// Writes bytes 8..hlen (everything after the common header). `out`
    /// must be exactly `header_len() - 8` bytes long.
    pub(crate) fn write_specific(&self, out: &mut [u8]) {
        // `out` starts at header byte 8; field offsets below are relative
        // to it, so byte 8 of the header is index 0 here.
        match self {
            Self::IcReq(req) => {
                put_u16(out, 0, req.pfv);
                out[2] = req.hpda;
                out[3] = req.digest.bits();
                put_u32(out, 4, req.maxr2t);
            }
            Self::IcResp(resp) => {
                put_u16(out, 0, resp.pfv);
                out[2] = resp.cpda;
                out[3] = resp.digest.bits();
                put_u32(out, 4, resp.maxh2cdata);
            }
            Self::H2cTermReq(term) | Self::C2hTermReq(term) => {
                put_u16(out, 0, term.fes.as_u16());
                put_u32(out, 2, term.fei);
            }
            Self::CapsuleCmd(cmd) => {
                if let Some(sqe) = out.first_chunk_mut::<SQE_LEN>() {
                    cmd.sqe.write_into(sqe);
                }
            }
            Self::CapsuleResp(resp) => {
                if let Some(cqe) = out.first_chunk_mut::<CQE_LEN>() {
                    resp.cqe.write_into(cqe);
                }
            }
            Self::H2cData(data) | Self::C2hData(data) => {
                put_u16(out, 0, data.cccid);
                put_u16(out, 2, data.ttag);
                put_u32(out, 4, data.datao);
                put_u32(out, 8, data.datal);
            }
            Self::R2t(r2t) => {
                put_u16(out, 0, r2t.cccid);
                put_u16(out, 2, r2t.ttag);
                put_u32(out, 4, r2t.r2to);
                put_u32(out, 8, r2t.r2tl);
            }
        }
    }

    /// Reads the typed header from the first `hlen` bytes of a PDU whose
    /// common header has already been validated for `pdu_type`.
    pub(crate) fn parse(pdu_type: PduType, flag_bits: u8, header: &[u8]) -> Result<Self, PduError> {
        let wrong_length = PduError::InvalidHeaderField {
            offset: field_offset::HLEN,
            field: "HLEN",
        };
        let header = match pdu_type.header_len() {
            Some(len) => header.get(COMMON_HEADER_LEN..len).ok_or(wrong_length)?,
            None => {
                return Err(PduError::InvalidHeaderField {
                    offset: field_offset::PDU_TYPE,
                    field: "PDU-Type",
                })
            }
        };
        let parsed = match pdu_type {
            PduType::IcReq => Self::IcReq(IcReq {
                pfv: u16_at(header, 0),
                hpda: header[2],
                digest: DigestOptions::from_bits(header[3]),
                maxr2t: u32_at(header, 4),
            }),
            PduType::IcResp => Self::IcResp(IcResp {
                pfv: u16_at(header, 0),
                cpda: header[2],
                digest: DigestOptions::from_bits(header[3]),
                maxh2cdata: u32_at(header, 4),
            }),
            PduType::H2cTermReq | PduType::C2hTermReq => {
                let term = TermReq {
                    fes: FatalErrorStatus::from_u16(u16_at(header, 0)),
                    fei: u32_at(header, 2),
                };
                if pdu_type == PduType::H2cTermReq {
                    Self::H2cTermReq(term)
                } else {
                    Self::C2hTermReq(term)
                }
            }
            PduType::CapsuleCmd => Self::CapsuleCmd(CapsuleCmd {
                sqe: SubmissionQueueEntry::decode(header.first_chunk().ok_or(wrong_length)?),
            }),
            PduType::CapsuleResp => Self::CapsuleResp(CapsuleResp {
                cqe: CompletionQueueEntry::decode(header.first_chunk().ok_or(wrong_length)?),
            }),
            PduType::H2cData | PduType::C2hData => {
                let data = DataPdu {
                    cccid: u16_at(header, 0),
                    ttag: u16_at(header, 2),
                    datao: u32_at(header, 4),
                    datal: u32_at(header, 8),
                    last: flag_bits & flags::DATA_LAST != 0,
                    success: flag_bits & flags::DATA_SUCCESS != 0,
                };
                if pdu_type == PduType::H2cData {
                    Self::H2cData(data)
                } else {
                    Self::C2hData(data)
                }
            }
            PduType::R2t => Self::R2t(R2t {
                cccid: u16_at(header, 0),
                ttag: u16_at(header, 2),
                r2to: u32_at(header, 4),
                r2tl: u32_at(header, 8),
            }),
            PduType::Unknown(_) => {
                return Err(PduError::InvalidHeaderField {
                    offset: field_offset::PDU_TYPE,
                    field: "PDU-Type",
                })
            }
        };
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_table() {
        for byte in 0..=u8::MAX {
            let pdu_type = PduType::from_u8(byte);
            assert_eq!(pdu_type.as_u8(), byte);
            // Every known type has exactly one direction.
            if pdu_type.header_len().is_some() {
                assert_ne!(
                    pdu_type.is_host_to_controller(),
                    pdu_type.is_controller_to_host()
                );
            }
        }
        assert_eq!(PduType::from_u8(0x08), PduType::Unknown(0x08));
        assert_eq!(PduType::CapsuleCmd.header_len(), Some(72));
        assert_eq!(PduType::IcReq.header_len(), Some(128));
        assert_eq!(PduType::R2t.header_len(), Some(24));
    }

    #[test]
    fn data_window_check() {
        let data = DataPdu {
            cccid: 1,
            ttag: 2,
            datao: 4096,
            datal: 4096,
            last: true,
            success: false,
        };
        assert_eq!(data.check_within(4096, 4096), Ok(()));
        assert_eq!(data.check_within(0, 8192), Ok(()));
        assert!(data.check_within(0, 8191).is_err());
        assert!(data.check_within(4097, 8192).is_err());
        let huge = DataPdu {
            datao: u32::MAX,
            datal: u32::MAX,
            ..data
        };
        assert!(huge.check_within(0, u32::MAX).is_err());
    }

    #[test]
    fn digest_options_bits() {
        assert_eq!(DigestOptions::from_bits(0x3).bits(), 0x3);
        assert_eq!(DigestOptions::from_bits(0xFC), DigestOptions::default());
        assert_eq!(
            DigestOptions {
                header: false,
                data: true
            }
            .bits(),
            0x2
        );
    }
}
