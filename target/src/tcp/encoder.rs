//! PDU encoders that write into caller-provided buffers.
//!
//! Nothing here allocates. [`PduHeader::encode_header`] writes the bytes
//! that precede the data (common header, type-specific header, header
//! digest, padding up to PDO) so the data itself can be sent from where it
//! already is (a registered buffer) with a vectored write, followed by
//! [`crate::tcp::digest_bytes`] of it when data digests are on.
//! [`PduHeader::encode`] writes a whole PDU into one buffer.

use crate::tcp::decoder::PduLayout;
use crate::tcp::digest::{crc32c, digest_bytes};
use crate::tcp::error::EncodeError;
use crate::tcp::pdu::{
    flags, CommonHeader, PduHeader, COMMON_HEADER_LEN, DIGEST_LEN, MAX_PDA, TERM_REQ_MAX_ERROR_DATA,
};

/// How this side sends PDUs, as agreed by ICReq / ICResp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxParams {
    /// Send header digests.
    pub header_digest: bool,
    /// Send data digests.
    pub data_digest: bool,
    /// The data alignment the peer asked for (a controller sends with the
    /// host's HPDA, a host with the controller's CPDA), 0's based dwords.
    pub pda: u8,
}

impl TxParams {
    /// No digests, 4-byte alignment: what Initialize Connection and
    /// termination PDUs always use.
    pub const PLAIN: Self = Self {
        header_digest: false,
        data_digest: false,
        pda: 0,
    };
}

impl PduHeader {
    /// The layout of this PDU when it carries `data_len` bytes of data.
    pub fn layout(&self, tx: &TxParams, data_len: usize) -> Result<PduLayout, EncodeError> {
        if tx.pda > MAX_PDA {
            return Err(EncodeError::InvalidAlignment(tx.pda));
        }
        let pdu_type = self.pdu_type();
        self.check_data(data_len)?;
        let hlen = self.header_len();
        if pdu_type.is_termination() {
            // Error data follows the header directly; no digests, PDO 0.
            return Ok(PduLayout {
                header_len: hlen,
                data_offset: hlen,
                data_len,
                data_digest: false,
                pdu_len: hlen + data_len,
            });
        }
        let digests = pdu_type.uses_digests();
        let header_len = hlen
            + if digests && tx.header_digest {
                DIGEST_LEN
            } else {
                0
            };
        let data_digest = digests && tx.data_digest && data_len > 0;
        let data_offset = if data_len > 0 {
            // PDO: the first offset after the header (and its digest) that
            // is a multiple of the receiver's alignment.
            header_len.next_multiple_of((usize::from(tx.pda) + 1) * 4)
        } else {
            header_len
        };
        let pdu_len = data_offset
            .checked_add(data_len)
            .and_then(|len| len.checked_add(if data_digest { DIGEST_LEN } else { 0 }))
            .filter(|&len| u32::try_from(len).is_ok())
            .ok_or(EncodeError::TooLong)?;
        Ok(PduLayout {
            header_len,
            data_offset,
            data_len,
            data_digest,
            pdu_len,
        })
    }

    /// Writes everything before the data — header, header digest, padding —
    /// into `out` (`layout.data_offset` bytes) for a PDU carrying
    /// `data_len` bytes. The caller sends the data and, if
    /// `layout.data_digest`, its digest next.
    pub fn encode_header(
        &self,
        tx: &TxParams,
        data_len: usize,
        out: &mut [u8],
    ) -> Result<PduLayout, EncodeError> {
        let layout = self.layout(tx, data_len)?;
        let available = out.len();
        let prefix = out
            .get_mut(..layout.data_offset)
            .ok_or(EncodeError::BufferTooSmall {
                needed: layout.data_offset,
                available,
            })?;
        self.write_prefix(&layout, prefix);
        Ok(layout)
    }

    /// Writes the whole PDU — header, digests, padding, `data` — into `out`.
    /// Returns the number of bytes written (PLEN).
    pub fn encode(&self, tx: &TxParams, data: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
        let layout = self.layout(tx, data.len())?;
        let available = out.len();
        let pdu = out
            .get_mut(..layout.pdu_len)
            .ok_or(EncodeError::BufferTooSmall {
                needed: layout.pdu_len,
                available,
            })?;
        let (prefix, rest) = pdu.split_at_mut(layout.data_offset);
        self.write_prefix(&layout, prefix);
        let (data_out, digest_out) = rest.split_at_mut(data.len());
        data_out.copy_from_slice(data);
        if layout.data_digest {
            digest_out.copy_from_slice(&digest_bytes(data));
        }
        Ok(layout.pdu_len)
    }

    /// Writes header, header digest and zero padding; `out` is exactly
    /// `layout.data_offset` bytes.
    fn write_prefix(&self, layout: &PduLayout, out: &mut [u8]) {
        let hlen = self.header_len();
        let mut flag_bits = self.type_flags();
        if layout.header_len > hlen {
            flag_bits |= flags::HDGST;
        }
        if layout.data_digest {
            flag_bits |= flags::DDGST;
        }
        let has_data = layout.data_len > 0 && !self.pdu_type().is_termination();
        let common = CommonHeader {
            pdu_type: self.pdu_type().as_u8(),
            flags: flag_bits,
            // Header lengths are 24, 72 or 128, and PDO at most 76 rounded
            // up to a 128-byte alignment: both fit in a byte.
            hlen: hlen as u8,
            pdo: if has_data {
                layout.data_offset as u8
            } else {
                0
            },
            // `layout` checked that PLEN fits in 32 bits.
            plen: layout.pdu_len as u32,
        };
        let (header, after_header) = out.split_at_mut(hlen);
        let (common_bytes, specific) = header.split_at_mut(COMMON_HEADER_LEN);
        if let Some(common_bytes) = common_bytes.first_chunk_mut() {
            common.write_into(common_bytes);
        }
        specific.fill(0);
        self.write_specific(specific);
        let (digest, padding) = after_header.split_at_mut(layout.header_len - hlen);
        if !digest.is_empty() {
            digest.copy_from_slice(&crc32c(header).to_le_bytes());
        }
        padding.fill(0);
    }

    /// Which PDUs may carry `data_len` bytes of data.
    fn check_data(&self, data_len: usize) -> Result<(), EncodeError> {
        match self {
            Self::IcReq(_) | Self::IcResp(_) | Self::CapsuleResp(_) | Self::R2t(_) => {
                if data_len != 0 {
                    return Err(EncodeError::UnexpectedData);
                }
            }
            Self::H2cTermReq(_) | Self::C2hTermReq(_) => {
                if data_len > TERM_REQ_MAX_ERROR_DATA {
                    return Err(EncodeError::TermReqDataTooLong { len: data_len });
                }
            }
            Self::CapsuleCmd(_) => {}
            Self::H2cData(data) | Self::C2hData(data) => {
                if data.datal as usize != data_len || data_len == 0 {
                    return Err(EncodeError::DataLengthMismatch {
                        datal: data.datal,
                        data_len,
                    });
                }
                let h2c_success = matches!(self, Self::H2cData(_)) && data.success;
                if h2c_success || (data.success && !data.last) {
                    return Err(EncodeError::InvalidDataFlags);
                }
            }
        }
        Ok(())
    }
}
