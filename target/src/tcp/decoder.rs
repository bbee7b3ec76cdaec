//! Incremental PDU decoder for a streaming socket.
//!
//! The decoder never owns bytes and never blocks. The caller keeps a
//! receive buffer, appends whatever the socket delivered, and asks:
//!
//! - [`PduDecoder::decode_header`] needs only the header (plus its digest)
//!   and returns the typed header with the PDU's [`PduLayout`], so a large
//!   H2CData / C2HData payload can be received straight into its final
//!   (registered) buffer and checked with [`crate::tcp::DataDigest`];
//! - [`PduDecoder::decode`] waits for the whole PDU and returns its data
//!   slice, with the data digest verified.
//!
//! Both answer [`Decoded::NeedMore`] with the number of bytes still missing
//! for that step. Validation follows the order of the fields in the header,
//! so the termination request names the first bad field: type
//! (byte 0), flags (1), hlen (2), then — once the header digest has been
//! checked — pdo (3), plen (4) and the type-specific fields. Limits bound
//! every length before any data is awaited: a peer cannot make the receiver
//! buffer more than one header plus the configured maximum data.

use crate::tcp::digest::crc32c;
use crate::tcp::error::PduError;
use crate::tcp::pdu::{
    field_offset, flags, CommonHeader, DataPdu, PduHeader, PduType, TermReq, COMMON_HEADER_LEN,
    DIGEST_LEN, MAX_PDA, MIN_MAXH2CDATA, PFV_1_0, TERM_REQ_HEADER_LEN, TERM_REQ_MAX_LEN,
};
use crate::wire::u32_at;

/// Which end of the connection the decoder serves; it decides which PDU
/// types may be received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A controller (the target) receives host-to-controller PDUs.
    Controller,
    /// A host (the initiator) receives controller-to-host PDUs.
    Host,
}

impl Role {
    /// Whether this side may receive `pdu_type`.
    pub const fn receives(self, pdu_type: PduType) -> bool {
        match self {
            Self::Controller => pdu_type.is_host_to_controller(),
            Self::Host => pdu_type.is_controller_to_host(),
        }
    }

    /// The Initialize Connection PDU this side receives first.
    pub const fn initialize_connection_type(self) -> PduType {
        match self {
            Self::Controller => PduType::IcReq,
            Self::Host => PduType::IcResp,
        }
    }
}

/// Upper bounds on what one received PDU may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Most in-capsule data in one CapsuleCmd (controller: IOCCSZ * 16 - 64,
    /// or 8 KiB on an admin queue).
    pub max_in_capsule_data: u32,
    /// Most data in one H2CData (controller: the MAXH2CDATA it advertised)
    /// or C2HData (host: the largest transfer it issues).
    pub max_data_per_pdu: u32,
}

impl Default for DecoderLimits {
    /// 8 KiB in-capsule (the Linux admin queue capsule size) and 128 KiB
    /// per data PDU.
    fn default() -> Self {
        Self {
            max_in_capsule_data: 8192,
            max_data_per_pdu: 128 * 1024,
        }
    }
}

/// Parameters agreed by the ICReq / ICResp exchange that shape every later
/// PDU this side receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionParams {
    /// Header digests enabled.
    pub header_digest: bool,
    /// Data digests enabled.
    pub data_digest: bool,
    /// The data alignment this side asked for (controller: the CPDA it
    /// sent; host: the HPDA it sent), 0's based dwords, at most 31.
    pub rx_pda: u8,
}

impl ConnectionParams {
    /// Alignment of received PDU data in bytes: (PDA + 1) * 4.
    pub const fn rx_alignment(&self) -> u32 {
        (self.rx_pda as u32 + 1) * 4
    }
}

/// The answer of a decoding step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<T> {
    /// At least this many more bytes are needed; ask again once they arrive.
    NeedMore(usize),
    /// Done.
    Ready(T),
}

/// Where the parts of one PDU sit, in bytes from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduLayout {
    /// HLEN plus the header digest, if any.
    pub header_len: usize,
    /// Where the data starts (PDO); equals `header_len` when there is none.
    pub data_offset: usize,
    /// Data bytes.
    pub data_len: usize,
    /// Whether a data digest follows the data.
    pub data_digest: bool,
    /// The whole PDU (PLEN): how many bytes to consume.
    pub pdu_len: usize,
}

impl PduLayout {
    /// Byte range of the data.
    pub const fn data_range(&self) -> std::ops::Range<usize> {
        self.data_offset..self.data_offset + self.data_len
    }

    /// Byte range of the data digest, if present.
    pub const fn data_digest_range(&self) -> Option<std::ops::Range<usize>> {
        if self.data_digest {
            let end = self.data_offset + self.data_len;
            Some(end..end + DIGEST_LEN)
        } else {
            None
        }
    }
}

/// A decoded header and the layout of its PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedHeader {
    /// The typed header.
    pub header: PduHeader,
    /// Where everything is.
    pub layout: PduLayout,
}

/// A whole decoded PDU, borrowing its data from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pdu<'a> {
    header: PduHeader,
    layout: PduLayout,
    data: &'a [u8],
    digest_error: Option<PduError>,
}

impl<'a> Pdu<'a> {
    /// The typed header (always usable, even when the data digest failed,
    /// so the owning command can be failed).
    pub const fn header(&self) -> &PduHeader {
        &self.header
    }

    /// Where everything is.
    pub const fn layout(&self) -> &PduLayout {
        &self.layout
    }

    /// The whole PDU's length on the wire (PLEN): the bytes to consume
    /// from the receive buffer.
    pub const fn wire_len(&self) -> usize {
        self.layout.pdu_len
    }

    /// The data, or [`PduError::DataDigest`] when its digest did not match.
    pub const fn data(&self) -> Result<&'a [u8], PduError> {
        match self.digest_error {
            Some(error) => Err(error),
            None => Ok(self.data),
        }
    }
}

/// Decodes the PDUs one side of a connection receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PduDecoder {
    role: Role,
    limits: DecoderLimits,
    params: Option<ConnectionParams>,
}

impl PduDecoder {
    /// A decoder for a fresh connection, expecting the Initialize
    /// Connection PDU first.
    pub const fn new(role: Role, limits: DecoderLimits) -> Self {
        Self {
            role,
            limits,
            params: None,
        }
    }

    /// Which side this decoder serves.
    pub const fn role(&self) -> Role {
        self.role
    }

    /// The configured limits.
    pub const fn limits(&self) -> DecoderLimits {
        self.limits
    }

    /// Changes the limits (e.g. once the queue type is known from Connect).
    pub fn set_limits(&mut self, limits: DecoderLimits) {
        self.limits = limits;
    }

    /// The negotiated parameters, once established.
    pub const fn params(&self) -> Option<ConnectionParams> {
        self.params
    }

    /// Records the outcome of the ICReq / ICResp exchange; from now on
    /// PDUs are checked for these digests and alignment, and another
    /// Initialize Connection PDU is a sequence error.
    pub fn establish(&mut self, params: ConnectionParams) -> Result<(), PduError> {
        if params.rx_pda > MAX_PDA {
            return Err(PduError::UnsupportedParameter {
                offset: field_offset::PDA,
                field: "PDA",
            });
        }
        self.params = Some(params);
        Ok(())
    }

    /// Decodes the header of the PDU at the start of `buf`.
    pub fn decode_header(&self, buf: &[u8]) -> Result<Decoded<ReceivedHeader>, PduError> {
        let Some(common) = buf.first_chunk::<COMMON_HEADER_LEN>() else {
            return Ok(Decoded::NeedMore(COMMON_HEADER_LEN - buf.len()));
        };
        let common = CommonHeader::parse(common);
        let pdu_type = self.check_type(common.pdu_type)?;
        if pdu_type.is_termination() {
            return decode_term_req_header(pdu_type, &common, buf);
        }
        let header_digest = self.check_flags(pdu_type, common.flags)?;
        let hlen = usize::from(common.hlen);
        if Some(hlen) != pdu_type.header_len() {
            return Err(invalid(field_offset::HLEN, "HLEN"));
        }
        let header_len = hlen + if header_digest { DIGEST_LEN } else { 0 };
        let Some(header_bytes) = buf.get(..header_len) else {
            return Ok(Decoded::NeedMore(header_len - buf.len()));
        };
        if header_digest {
            verify_header_digest(header_bytes, hlen)?;
        }
        let layout = self.check_layout(pdu_type, &common, header_len)?;
        let header = PduHeader::parse(pdu_type, common.flags, header_bytes)?;
        check_specific_fields(&header, &layout)?;
        Ok(Decoded::Ready(ReceivedHeader { header, layout }))
    }

    /// Decodes the whole PDU at the start of `buf`; consume
    /// [`Pdu::wire_len`] bytes afterwards.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Pdu<'a>>, PduError> {
        let ReceivedHeader { header, layout } = match self.decode_header(buf)? {
            Decoded::NeedMore(needed) => return Ok(Decoded::NeedMore(needed)),
            Decoded::Ready(received) => received,
        };
        let Some(pdu) = buf.get(..layout.pdu_len) else {
            return Ok(Decoded::NeedMore(layout.pdu_len - buf.len()));
        };
        // The layout was validated against PLEN, so these ranges lie in `pdu`.
        let data = pdu.get(layout.data_range()).unwrap_or_default();
        let received_digest = layout
            .data_digest_range()
            .and_then(|range| pdu.get(range))
            .and_then(<[u8]>::first_chunk::<DIGEST_LEN>);
        let digest_error =
            received_digest.and_then(|digest| check_data_digest(data, *digest).err());
        Ok(Decoded::Ready(Pdu {
            header,
            layout,
            data,
            digest_error,
        }))
    }

    /// The termination request to send for `error`, with its error data
    /// (the start of the offending header in `received`, at most 128
    /// bytes); `None` when the connection is to be closed without one.
    /// Encode the result with [`PduHeader::encode`] and no digests.
    pub fn termination_for<'a>(
        &self,
        error: &PduError,
        received: &'a [u8],
    ) -> Option<(PduHeader, &'a [u8])> {
        let fatal = error.fatal_error()?;
        let term = TermReq {
            fes: fatal.status,
            fei: fatal.info,
        };
        let header = match self.role {
            Role::Controller => PduHeader::C2hTermReq(term),
            Role::Host => PduHeader::H2cTermReq(term),
        };
        Some((header, offending_header(received)))
    }

    /// Byte 0: a known type, sent in the right direction, at the right time.
    fn check_type(&self, pdu_type: u8) -> Result<PduType, PduError> {
        let pdu_type = PduType::from_u8(pdu_type);
        if !self.role.receives(pdu_type) {
            return Err(invalid(field_offset::PDU_TYPE, "PDU-Type"));
        }
        if pdu_type.is_termination() {
            return Ok(pdu_type);
        }
        match (self.params.is_some(), pdu_type.is_initialize_connection()) {
            (false, false) => Err(PduError::SequenceError(
                "PDU received before connection initialization",
            )),
            (true, true) => Err(PduError::SequenceError(
                "Initialize Connection PDU on an established connection",
            )),
            _ => Ok(pdu_type),
        }
    }

    /// Byte 1: only the type's flags, HDGSTF exactly when header digests
    /// are on, SUCCESS only with LAST_PDU. Returns whether a header digest
    /// follows.
    fn check_flags(&self, pdu_type: PduType, flag_bits: u8) -> Result<bool, PduError> {
        let bad_flags = invalid(field_offset::FLAGS, "FLAGS");
        if flag_bits & !pdu_type.allowed_flags() != 0 {
            return Err(bad_flags);
        }
        let header_digest =
            pdu_type.uses_digests() && self.params.is_some_and(|params| params.header_digest);
        if (flag_bits & flags::HDGST != 0) != header_digest {
            return Err(bad_flags);
        }
        if flag_bits & (flags::DATA_SUCCESS | flags::DATA_LAST) == flags::DATA_SUCCESS {
            return Err(bad_flags);
        }
        Ok(header_digest)
    }

    /// Bytes 3 and 4, and DDGSTF: where the data is and how long it is.
    fn check_layout(
        &self,
        pdu_type: PduType,
        common: &CommonHeader,
        header_len: usize,
    ) -> Result<PduLayout, PduError> {
        let plen = common.plen as usize;
        let pdo = usize::from(common.pdo);
        if plen < header_len {
            return Err(invalid(field_offset::PLEN, "PLEN"));
        }
        let data_digest_flag = common.flags & flags::DDGST != 0;
        if plen == header_len {
            // No data: PDO is meaningless; accept the two values senders use.
            if pdo != 0 && pdo != header_len {
                return Err(invalid(field_offset::PDO, "PDO"));
            }
            if data_digest_flag {
                return Err(invalid(field_offset::FLAGS, "FLAGS"));
            }
            return Ok(PduLayout {
                header_len,
                data_offset: header_len,
                data_len: 0,
                data_digest: false,
                pdu_len: plen,
            });
        }
        // Only CapsuleCmd, H2CData and C2HData carry data, and only once
        // the connection is established (IC PDUs are exactly 128 bytes).
        let params = match self.params {
            Some(params) if pdu_type.may_carry_data() => params,
            _ => return Err(invalid(field_offset::PLEN, "PLEN")),
        };
        let alignment = params.rx_alignment() as usize;
        if pdo < header_len || pdo >= plen || pdo % alignment != 0 {
            return Err(invalid(field_offset::PDO, "PDO"));
        }
        if data_digest_flag != params.data_digest {
            return Err(invalid(field_offset::FLAGS, "FLAGS"));
        }
        let after_pdo = plen - pdo;
        let data_len = if params.data_digest {
            if after_pdo <= DIGEST_LEN {
                return Err(invalid(field_offset::PLEN, "PLEN"));
            }
            after_pdo - DIGEST_LEN
        } else {
            after_pdo
        };
        let limit = match pdu_type {
            PduType::CapsuleCmd => self.limits.max_in_capsule_data,
            _ => self.limits.max_data_per_pdu,
        };
        if data_len > limit as usize {
            return Err(PduError::DataLimitExceeded {
                // data_len < PLEN, a u32.
                length: data_len as u32,
                limit,
            });
        }
        Ok(PduLayout {
            header_len,
            data_offset: pdo,
            data_len,
            data_digest: params.data_digest,
            pdu_len: plen,
        })
    }
}

/// Termination requests are framed on their own: no digests, fixed HLEN,
/// PLEN at most 152. Anything else about them is malformed, and a
/// malformed termination request only ends the connection — it is never
/// answered with another one. PDO is ignored (senders differ).
fn decode_term_req_header(
    pdu_type: PduType,
    common: &CommonHeader,
    buf: &[u8],
) -> Result<Decoded<ReceivedHeader>, PduError> {
    if common.flags != 0 {
        return Err(PduError::MalformedTermReq("flags set"));
    }
    if usize::from(common.hlen) != TERM_REQ_HEADER_LEN {
        return Err(PduError::MalformedTermReq("HLEN is not 24"));
    }
    let plen = common.plen as usize;
    if !(TERM_REQ_HEADER_LEN..=TERM_REQ_MAX_LEN).contains(&plen) {
        return Err(PduError::MalformedTermReq("PLEN outside 24..=152"));
    }
    let Some(header_bytes) = buf.get(..TERM_REQ_HEADER_LEN) else {
        return Ok(Decoded::NeedMore(TERM_REQ_HEADER_LEN - buf.len()));
    };
    let header = PduHeader::parse(pdu_type, 0, header_bytes)?;
    Ok(Decoded::Ready(ReceivedHeader {
        header,
        layout: PduLayout {
            header_len: TERM_REQ_HEADER_LEN,
            data_offset: TERM_REQ_HEADER_LEN,
            data_len: plen - TERM_REQ_HEADER_LEN,
            data_digest: false,
            pdu_len: plen,
        },
    }))
}

/// Fields after the common header whose values the spec constrains.
fn check_specific_fields(header: &PduHeader, layout: &PduLayout) -> Result<(), PduError> {
    match header {
        PduHeader::IcReq(req) => {
            if req.pfv != PFV_1_0 {
                return Err(unsupported(field_offset::PFV, "PFV"));
            }
            if req.hpda > MAX_PDA {
                return Err(unsupported(field_offset::PDA, "HPDA"));
            }
        }
        PduHeader::IcResp(resp) => {
            if resp.pfv != PFV_1_0 {
                return Err(unsupported(field_offset::PFV, "PFV"));
            }
            if resp.cpda > MAX_PDA {
                return Err(unsupported(field_offset::PDA, "CPDA"));
            }
            // §3.6.2.3: a multiple of 4, at least 4096.
            if resp.maxh2cdata < MIN_MAXH2CDATA || resp.maxh2cdata % 4 != 0 {
                return Err(unsupported(field_offset::MAXR2T_MAXH2CDATA, "MAXH2CDATA"));
            }
        }
        PduHeader::H2cData(data) | PduHeader::C2hData(data) => check_data_header(data, layout)?,
        PduHeader::R2t(r2t) => {
            if r2t.r2tl == 0 {
                return Err(invalid(field_offset::DATA_LENGTH, "R2TL"));
            }
            if r2t.r2to.checked_add(r2t.r2tl).is_none() {
                return Err(PduError::DataOutOfRange {
                    datao: r2t.r2to,
                    datal: r2t.r2tl,
                });
            }
        }
        PduHeader::H2cTermReq(_)
        | PduHeader::C2hTermReq(_)
        | PduHeader::CapsuleCmd(_)
        | PduHeader::CapsuleResp(_) => {}
    }
    Ok(())
}

/// DATAL must describe exactly the data the PDU carries, and be non-zero.
fn check_data_header(data: &DataPdu, layout: &PduLayout) -> Result<(), PduError> {
    if data.datal == 0 || data.datal as usize != layout.data_len {
        return Err(invalid(field_offset::DATA_LENGTH, "DATAL"));
    }
    if data.datao.checked_add(data.datal).is_none() {
        return Err(PduError::DataOutOfRange {
            datao: data.datao,
            datal: data.datal,
        });
    }
    Ok(())
}

fn verify_header_digest(header_bytes: &[u8], hlen: usize) -> Result<(), PduError> {
    let (header, digest) = header_bytes.split_at(hlen);
    let computed = crc32c(header);
    let received = u32_at(digest, 0);
    if computed != received {
        return Err(PduError::HeaderDigest { computed, received });
    }
    Ok(())
}

/// Checks the data digest of data received in one piece. For data received
/// in pieces, accumulate a [`crate::tcp::DataDigest`] and compare its value.
pub fn check_data_digest(data: &[u8], received: [u8; DIGEST_LEN]) -> Result<(), PduError> {
    let computed = crc32c(data);
    let received = u32::from_le_bytes(received);
    if computed != received {
        return Err(PduError::DataDigest { computed, received });
    }
    Ok(())
}

/// The part of a received PDU to echo in a termination request: its header
/// (HLEN bytes when HLEN is plausible, else the common header), capped at
/// 128 bytes and at what was received.
fn offending_header(received: &[u8]) -> &[u8] {
    let hlen = received
        .get(2)
        .map_or(0, |&hlen| usize::from(hlen))
        .max(COMMON_HEADER_LEN);
    let len = hlen
        .min(crate::tcp::pdu::TERM_REQ_MAX_ERROR_DATA)
        .min(received.len());
    &received[..len]
}

const fn invalid(offset: u32, field: &'static str) -> PduError {
    PduError::InvalidHeaderField { offset, field }
}

const fn unsupported(offset: u32, field: &'static str) -> PduError {
    PduError::UnsupportedParameter { offset, field }
}
