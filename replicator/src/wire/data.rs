//! The data path: `Write`, `Flush`, `Ack`, `ReadRequest`, `ReadResponse`.
//!
//! These are the hot-path messages, so all of them live entirely in the
//! header except the data itself, which is never copied by the codec beyond
//! what the caller asks for: [`Write::encode_header`] leaves the data where
//! it is, and decoding borrows it from the receive buffer.

use crate::wire::bytes::{Reader, Writer};
use crate::wire::error::{DecodeError, EncodeError, FieldProblem, Violation};
use crate::wire::header::{Flags, FrameHeader, HEADER_LEN};
use crate::wire::ids::{ByteRange, ReadTag, Sequence, StreamId};
use crate::wire::limits::MAX_PAYLOAD_LEN;
use crate::wire::message::{Envelope, HeaderFields, Message, WireMessage};
use crate::wire::message_type::MessageType;
use crate::wire::standing::{StandingReport, WritePosition, STANDING_LEN};
use crate::wire::tolerance::Tolerance;
use crate::wire::version::Version;

/// Data of a write or read response: non-empty, at most one payload, and
/// not running past the end of the address space.
fn data_range(offset: u64, data: &[u8], field: &'static str) -> Result<ByteRange, Violation> {
    let len = u32::try_from(data.len())
        .ok()
        .filter(|len| (1..=MAX_PAYLOAD_LEN).contains(len))
        .ok_or(Violation::new(field, FieldProblem::OutOfBounds))?;
    let range = ByteRange::new(offset, len);
    range
        .end()
        .map(|_| range)
        .ok_or(Violation::new(field, FieldProblem::Overflow))
}

/// Primary -> replica: apply `data` at byte `offset` of the volume.
/// Sequenced. Header: stream, sequence, range = (offset, data length),
/// flag `WRITE_FUA`, and from 1.1 on the position in the header extension
/// (header length 80; 64 without a position). Payload: the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write<'a> {
    /// Stream of the shard that owns the range.
    pub stream: StreamId,
    /// Position in the stream.
    pub sequence: Sequence,
    /// Byte offset in the volume.
    pub offset: u64,
    /// The data (1 byte to `MAX_PAYLOAD_LEN`).
    pub data: &'a [u8],
    /// Force unit access: make it durable and ack without batching.
    pub fua: bool,
    /// 1.1: the write's place in the stream's total order (header bytes
    /// 64..80). Needs an envelope of 1.1 or later.
    pub position: Option<WritePosition>,
}

impl Write<'_> {
    /// The byte range this write covers.
    pub fn range(&self) -> ByteRange {
        ByteRange::new(
            self.offset,
            u32::try_from(self.data.len()).unwrap_or(u32::MAX),
        )
    }

    /// Encodes only the header; send it followed by `self.data`. A write
    /// with a position has an 80-byte header and fails here with
    /// `BufferTooSmall`: use [`encode_header_into`](Self::encode_header_into).
    pub fn encode_header(
        &self,
        envelope: &Envelope,
        out: &mut [u8; HEADER_LEN],
    ) -> Result<(), EncodeError> {
        Message::Write(*self).encode_header(envelope, out)
    }

    /// Encodes only the header (64 bytes, or 80 with a position) into the
    /// front of `out` and returns its length; send it followed by
    /// `self.data`.
    pub fn encode_header_into(
        &self,
        envelope: &Envelope,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        Message::Write(*self).encode_header_into(envelope, out)
    }
}

impl<'a> WireMessage<'a> for Write<'a> {
    const TYPE: MessageType = MessageType::Write;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: self.sequence,
            range: self.range(),
            flags: if self.fua {
                Flags::WRITE_FUA
            } else {
                Flags::NONE
            },
            position: self.position,
        }
    }

    fn body_len(&self) -> usize {
        self.data.len()
    }

    fn validate(&self) -> Result<(), Violation> {
        data_range(self.offset, self.data, "Write.data").map(|_| ())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(self.data)
    }

    fn read(header: &FrameHeader, body: &'a [u8], _: Tolerance) -> Result<Self, DecodeError> {
        Ok(Self {
            stream: header.stream,
            sequence: header.sequence,
            offset: header.range.offset,
            data: body,
            fua: header.flags.contains(Flags::WRITE_FUA),
            position: header.position,
        })
    }
}

/// Primary -> replica: make every earlier frame of this stream durable
/// before acknowledging this one. Sequenced. Header: stream, sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flush {
    /// Stream being flushed.
    pub stream: StreamId,
    /// Position in the stream.
    pub sequence: Sequence,
}

impl<'a> WireMessage<'a> for Flush {
    const TYPE: MessageType = MessageType::Flush;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: self.sequence,
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        0
    }

    fn write_body(&self, _: &mut Writer<'_>) -> Result<(), EncodeError> {
        Ok(())
    }

    fn read(header: &FrameHeader, _: &'a [u8], _: Tolerance) -> Result<Self, DecodeError> {
        Ok(Self {
            stream: header.stream,
            sequence: header.sequence,
        })
    }
}

/// Replica -> primary: every sequenced frame of `stream` up to and including
/// `durable_through` is applied and durable (or, with `applied_only`, 1.2:
/// applied — written to the replica's device the way a completed NVMe write
/// without FUA is — and not necessarily durable yet). Cumulative per kind,
/// so a lost `Ack` is covered by the next one. Header: stream, sequence =
/// `durable_through`, flag `ACK_APPLIED` for `applied_only`. Payload:
/// empty, or (1.1) the replica's standing, 40 bytes (never in an
/// `applied_only` acknowledgement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ack {
    /// Stream acknowledged.
    pub stream: StreamId,
    /// Highest sequence number durable (applied, for `applied_only`) with
    /// all before it.
    pub durable_through: Sequence,
    /// 1.2: only applied, not yet durable.
    pub applied_only: bool,
    /// 1.1, in the `Ack` of an `EpochChange`: how up to date the copy was
    /// when it accepted the epoch. Needs an envelope of 1.1 or later.
    pub standing: Option<StandingReport>,
}

impl<'a> WireMessage<'a> for Ack {
    const TYPE: MessageType = MessageType::Ack;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: self.durable_through,
            flags: if self.applied_only {
                Flags::ACK_APPLIED
            } else {
                Flags::NONE
            },
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        self.standing.map_or(0, |_| STANDING_LEN)
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if self.applied_only && self.standing.is_some() {
            return Err(EncodeError::Invalid {
                field: "Ack.standing",
                problem: FieldProblem::Inconsistent,
            });
        }
        match &self.standing {
            Some(standing) => standing.write(w),
            None => Ok(()),
        }
    }

    fn read(
        header: &FrameHeader,
        body: &'a [u8],
        tolerance: Tolerance,
    ) -> Result<Self, DecodeError> {
        // The header check allowed a body only from 1.1 on, and only
        // empty or a whole standing (plus a newer minor's additions).
        let applied_only = header.flags.contains(Flags::ACK_APPLIED);
        let standing = if body.is_empty() {
            None
        } else if applied_only {
            return Err(DecodeError::malformed(
                "Ack.standing",
                FieldProblem::Inconsistent,
            ));
        } else {
            let mut r = Reader::new(body);
            let standing =
                StandingReport::read(&mut r, tolerance, header.version >= Version::V1_4)?;
            tolerance.end_of_body(&r, "Ack")?;
            Some(standing)
        };
        Ok(Self {
            stream: header.stream,
            durable_through: header.sequence,
            applied_only,
            standing,
        })
    }
}

/// Read `range` from the peer's copy (degraded reads, resync from a
/// replica). Not sequenced, but served in stream order: after every frame
/// that arrived before it on the same stream. Header: stream, sequence =
/// tag, range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReadRequest {
    /// Stream whose order the read follows.
    pub stream: StreamId,
    /// Echoed in the answer.
    pub tag: ReadTag,
    /// What to read (1 byte to `MAX_PAYLOAD_LEN`).
    pub range: ByteRange,
}

impl ReadRequest {
    fn check(range: ByteRange) -> Result<(), Violation> {
        if range.len == 0 || range.len > MAX_PAYLOAD_LEN {
            return Err(Violation::new(
                "ReadRequest.range",
                FieldProblem::OutOfBounds,
            ));
        }
        Ok(())
    }
}

impl<'a> WireMessage<'a> for ReadRequest {
    const TYPE: MessageType = MessageType::ReadRequest;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: Sequence(self.tag.0),
            range: self.range,
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        0
    }

    fn validate(&self) -> Result<(), Violation> {
        Self::check(self.range)?;
        self.range
            .end()
            .map(|_| ())
            .ok_or(Violation::new("ReadRequest.range", FieldProblem::Overflow))
    }

    fn write_body(&self, _: &mut Writer<'_>) -> Result<(), EncodeError> {
        Ok(())
    }

    fn read(header: &FrameHeader, _: &'a [u8], _: Tolerance) -> Result<Self, DecodeError> {
        Self::check(header.range)?;
        Ok(Self {
            stream: header.stream,
            tag: ReadTag(header.sequence.0),
            range: header.range,
        })
    }
}

/// The data answering a `ReadRequest` (a failed read is answered by a `Nack`
/// with the tag instead). Header: stream, sequence = tag, range. Payload:
/// the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadResponse<'a> {
    /// Stream of the request.
    pub stream: StreamId,
    /// Tag of the request.
    pub tag: ReadTag,
    /// Byte offset of the data.
    pub offset: u64,
    /// The data read.
    pub data: &'a [u8],
}

impl ReadResponse<'_> {
    /// The byte range this response covers.
    pub fn range(&self) -> ByteRange {
        ByteRange::new(
            self.offset,
            u32::try_from(self.data.len()).unwrap_or(u32::MAX),
        )
    }

    /// Encodes only the header; send it followed by `self.data`.
    pub fn encode_header(
        &self,
        envelope: &Envelope,
        out: &mut [u8; HEADER_LEN],
    ) -> Result<(), EncodeError> {
        Message::ReadResponse(*self).encode_header(envelope, out)
    }
}

impl<'a> WireMessage<'a> for ReadResponse<'a> {
    const TYPE: MessageType = MessageType::ReadResponse;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: Sequence(self.tag.0),
            range: self.range(),
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        self.data.len()
    }

    fn validate(&self) -> Result<(), Violation> {
        data_range(self.offset, self.data, "ReadResponse.data").map(|_| ())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(self.data)
    }

    fn read(header: &FrameHeader, body: &'a [u8], _: Tolerance) -> Result<Self, DecodeError> {
        Ok(Self {
            stream: header.stream,
            tag: ReadTag(header.sequence.0),
            offset: header.range.offset,
            data: body,
        })
    }
}
