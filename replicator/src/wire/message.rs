//! The [`Message`] enum and the machinery shared by every message type:
//! building the header from a message, and encoding a whole frame.

use crate::wire::bytes::Writer;
use crate::wire::data::{Ack, Flush, ReadRequest, ReadResponse, Write};
use crate::wire::error::{DecodeError, EncodeError, Violation};
use crate::wire::handshake::{Challenge, Hello, Response};
use crate::wire::header::{Flags, FrameHeader, HEADER_LEN};
use crate::wire::heartbeat::Heartbeat;
use crate::wire::ids::{ByteRange, Epoch, Sequence, StreamId, VolumeId};
use crate::wire::limits::MAX_PAYLOAD_LEN;
use crate::wire::membership::EpochChange;
use crate::wire::message_type::MessageType;
use crate::wire::nack::Nack;
use crate::wire::resync::Resync;
use crate::wire::standing::WritePosition;
use crate::wire::tolerance::Tolerance;
use crate::wire::version::{Version, PROTOCOL_VERSION, SUPPORTED_MAJOR};

/// The header fields every frame carries whatever its type: who sent it in
/// which version, for which volume, in which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Envelope {
    /// Version to encode with: the negotiated one once the handshake is
    /// done.
    pub version: Version,
    /// Volume of the link.
    pub volume: VolumeId,
    /// The sender's current epoch of that volume (for `EpochChange`, the new
    /// epoch).
    pub epoch: Epoch,
}

impl Envelope {
    /// An envelope in this implementation's [`PROTOCOL_VERSION`].
    pub fn new(volume: VolumeId, epoch: Epoch) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            volume,
            epoch,
        }
    }
}

/// One protocol message. Messages that carry data borrow it (`'a`) rather
/// than own it, both when encoding (from the caller's buffer) and when
/// decoding (from the receive buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Challenge`].
    Challenge(Challenge),
    /// See [`Response`].
    Response(Response),
    /// See [`Write`].
    Write(Write<'a>),
    /// See [`Flush`].
    Flush(Flush),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`ReadRequest`].
    ReadRequest(ReadRequest),
    /// See [`ReadResponse`].
    ReadResponse(ReadResponse<'a>),
    /// See [`Resync`].
    Resync(Resync),
    /// See [`EpochChange`].
    EpochChange(EpochChange<'a>),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
}

/// Runs `$body` with `$m` bound to the message inside any variant.
macro_rules! with_each_message {
    ($message:expr, $m:ident => $body:expr) => {
        match $message {
            Message::Hello($m) => $body,
            Message::Challenge($m) => $body,
            Message::Response($m) => $body,
            Message::Write($m) => $body,
            Message::Flush($m) => $body,
            Message::Ack($m) => $body,
            Message::Nack($m) => $body,
            Message::ReadRequest($m) => $body,
            Message::ReadResponse($m) => $body,
            Message::Resync($m) => $body,
            Message::EpochChange($m) => $body,
            Message::Heartbeat($m) => $body,
        }
    };
}

impl<'a> Message<'a> {
    /// The message's type code.
    pub fn message_type(&self) -> MessageType {
        fn type_of<'x, M: WireMessage<'x>>(_: &M) -> MessageType {
            M::TYPE
        }
        with_each_message!(self, m => type_of(m))
    }

    /// Length of the payload this message encodes to.
    pub fn payload_len(&self) -> usize {
        with_each_message!(self, m => m.body_len())
    }

    /// Length of the header this message encodes to: 64 bytes, or
    /// [`WRITE_HEADER_LEN`](crate::wire::WRITE_HEADER_LEN) for a `Write`
    /// with a position.
    pub fn header_len(&self) -> usize {
        match self {
            Message::Write(Write {
                position: Some(_), ..
            }) => crate::wire::header::WRITE_HEADER_LEN,
            _ => HEADER_LEN,
        }
    }

    /// Length of the whole frame this message encodes to.
    pub fn encoded_len(&self) -> usize {
        self.header_len().saturating_add(self.payload_len())
    }

    /// Encodes the whole frame (header and payload) into the front of `out`
    /// and returns its length. Nothing is allocated.
    pub fn encode(&self, envelope: &Envelope, out: &mut [u8]) -> Result<usize, EncodeError> {
        check_encodable(envelope.version)?;
        self.check_fields_in(envelope.version)?;
        with_each_message!(self, m => encode_frame(m, envelope, out))
    }

    /// Fields that only later minor versions can carry.
    fn check_fields_in(&self, version: Version) -> Result<(), EncodeError> {
        let needs_1_1 = match self {
            Message::Write(Write {
                position: Some(_), ..
            }) => Some("Write.position"),
            Message::Ack(Ack {
                standing: Some(_), ..
            }) => Some("Ack.standing"),
            _ => None,
        };
        let needs_1_2 = match self {
            Message::Ack(Ack {
                applied_only: true, ..
            }) => Some("Ack.applied_only"),
            _ => None,
        };
        let needs_1_3 = match self {
            Message::EpochChange(change) if change.membership.since.is_some() => {
                Some("EpochChange.since")
            }
            _ => None,
        };
        if let Some(field) = needs_1_3.filter(|_| version < Version::V1_3) {
            return Err(EncodeError::NotInVersion { field, version });
        }
        let needs_1_4 = match self {
            Message::EpochChange(change) if change.membership.previous.is_some() => {
                Some("EpochChange.previous")
            }
            Message::Ack(Ack {
                standing: Some(standing),
                ..
            }) if standing.amnesiac => Some("Ack.standing.amnesiac"),
            _ => None,
        };
        if let Some(field) = needs_1_4.filter(|_| version < Version::V1_4) {
            return Err(EncodeError::NotInVersion { field, version });
        }
        match (needs_1_1, needs_1_2) {
            (Some(field), _) if version < Version::V1_1 => {
                Err(EncodeError::NotInVersion { field, version })
            }
            (_, Some(field)) if version < Version::V1_2 => {
                Err(EncodeError::NotInVersion { field, version })
            }
            _ => Ok(()),
        }
    }

    /// Encodes only the header of a message whose payload is caller data
    /// (`Write`, `ReadResponse`); the caller then sends `out` followed by
    /// the data from wherever it lies (one vectored send, no copy).
    pub fn encode_header(
        &self,
        envelope: &Envelope,
        out: &mut [u8; HEADER_LEN],
    ) -> Result<(), EncodeError> {
        self.encode_header_into(envelope, out).map(|_| ())
    }

    /// Like [`encode_header`](Self::encode_header), into the front of a
    /// buffer of any size (a `Write` with a position has an 80-byte
    /// header); returns the header's length.
    pub fn encode_header_into(
        &self,
        envelope: &Envelope,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        check_encodable(envelope.version)?;
        self.check_fields_in(envelope.version)?;
        match self {
            Message::Write(m) => encode_data_header(m, m.data, envelope, out),
            Message::ReadResponse(m) => encode_data_header(m, m.data, envelope, out),
            other => Err(EncodeError::NotADataMessage(other.message_type())),
        }
    }

    /// Decodes the payload of a frame whose header passed its checks.
    pub(crate) fn decode(
        message_type: MessageType,
        header: &FrameHeader,
        payload: &'a [u8],
    ) -> Result<Self, DecodeError> {
        let tolerance = header.tolerance();
        Ok(match message_type {
            MessageType::Hello => Message::Hello(Hello::read(header, payload, tolerance)?),
            MessageType::Challenge => {
                Message::Challenge(Challenge::read(header, payload, tolerance)?)
            }
            MessageType::Response => Message::Response(Response::read(header, payload, tolerance)?),
            MessageType::Write => Message::Write(Write::read(header, payload, tolerance)?),
            MessageType::Flush => Message::Flush(Flush::read(header, payload, tolerance)?),
            MessageType::Ack => Message::Ack(Ack::read(header, payload, tolerance)?),
            MessageType::Nack => Message::Nack(Nack::read(header, payload, tolerance)?),
            MessageType::ReadRequest => {
                Message::ReadRequest(ReadRequest::read(header, payload, tolerance)?)
            }
            MessageType::ReadResponse => {
                Message::ReadResponse(ReadResponse::read(header, payload, tolerance)?)
            }
            MessageType::Resync => Message::Resync(Resync::read(header, payload, tolerance)?),
            MessageType::EpochChange => {
                Message::EpochChange(EpochChange::read(header, payload, tolerance)?)
            }
            MessageType::Heartbeat => {
                Message::Heartbeat(Heartbeat::read(header, payload, tolerance)?)
            }
        })
    }
}

/// The header fields a message sets beyond its envelope. Whatever it leaves
/// at the default is zero on the wire.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HeaderFields {
    pub(crate) stream: StreamId,
    pub(crate) sequence: Sequence,
    pub(crate) range: ByteRange,
    pub(crate) flags: Flags,
    pub(crate) position: Option<WritePosition>,
}

/// What each message type implements to be encoded and decoded.
pub(crate) trait WireMessage<'a>: Sized {
    const TYPE: MessageType;

    fn header_fields(&self) -> HeaderFields;

    fn body_len(&self) -> usize;

    /// Rules the type system does not already enforce. The decoder applies
    /// the same rules, so anything that encodes also decodes.
    fn validate(&self) -> Result<(), Violation> {
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;

    /// Builds the message from a checked header and its payload.
    fn read(
        header: &FrameHeader,
        body: &'a [u8],
        tolerance: Tolerance,
    ) -> Result<Self, DecodeError>;
}

/// Only the base layout of major 1, at or below our own minor, can be
/// encoded: a higher minor would promise features this code does not have.
fn check_encodable(version: Version) -> Result<(), EncodeError> {
    if version.major == SUPPORTED_MAJOR && version <= PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(EncodeError::UnsupportedVersion(version))
    }
}

fn checked_payload_len(len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len)
        .ok()
        .filter(|len| *len <= MAX_PAYLOAD_LEN)
        .ok_or(EncodeError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD_LEN,
        })
}

fn frame_header<'a, M: WireMessage<'a>>(
    message: &M,
    envelope: &Envelope,
    payload_len: u32,
    payload_crc: u32,
) -> FrameHeader {
    let fields = message.header_fields();
    let header_len = if fields.position.is_some() {
        crate::wire::header::WRITE_HEADER_LEN
    } else {
        HEADER_LEN
    };
    FrameHeader {
        version: envelope.version,
        message_type: M::TYPE.code(),
        flags: fields.flags,
        header_len: u16::try_from(header_len).unwrap_or(u16::MAX),
        payload_len,
        volume: envelope.volume,
        epoch: envelope.epoch,
        sequence: fields.sequence,
        stream: fields.stream,
        range: fields.range,
        payload_crc,
        position: fields.position,
    }
}

fn encode_frame<'a, M: WireMessage<'a>>(
    message: &M,
    envelope: &Envelope,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    message.validate()?;
    let body_len = message.body_len();
    let payload_len = checked_payload_len(body_len)?;
    // The CRC is filled in below, once the body is written.
    let header = frame_header(message, envelope, payload_len, 0);
    let header_len = header.encoded_len();
    let needed = header_len.saturating_add(body_len);
    let available = out.len();
    let too_small = EncodeError::BufferTooSmall { needed, available };
    let frame = out.get_mut(..needed).ok_or(too_small.clone())?;
    let (header_bytes, body) = frame.split_at_mut_checked(header_len).ok_or(too_small)?;
    let mut w = Writer::new(body);
    message.write_body(&mut w)?;
    debug_assert_eq!(w.written(), body_len, "body_len disagrees with write_body");
    let header = FrameHeader {
        payload_crc: crc32c::crc32c(body),
        ..header
    };
    header.write(header_bytes)?;
    Ok(needed)
}

fn encode_data_header<'a, M: WireMessage<'a>>(
    message: &M,
    data: &[u8],
    envelope: &Envelope,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    message.validate()?;
    let payload_len = checked_payload_len(data.len())?;
    frame_header(message, envelope, payload_len, crc32c::crc32c(data)).write(out)
}
