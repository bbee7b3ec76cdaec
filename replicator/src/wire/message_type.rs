//! Message type codes and what each type does with the shared header
//! fields, checked as soon as the header has arrived (before the payload is
//! waited for).

use crate::wire::error::{DecodeError, FieldProblem};
use crate::wire::handshake::{CHALLENGE_BODY_LEN, HELLO_BODY_LEN, RESPONSE_BODY_LEN};
use crate::wire::header::{payload_len_usize, Flags, FrameHeader};
use crate::wire::heartbeat::HEARTBEAT_BODY_LEN;
use crate::wire::membership::{EPOCH_CHANGE_MAX_BODY_LEN, EPOCH_CHANGE_MIN_BODY_LEN};
use crate::wire::nack::NACK_BODY_LEN;
use crate::wire::resync::RESYNC_BODY_LEN;
use crate::wire::standing::STANDING_LEN;
use crate::wire::tolerance::Tolerance;
use crate::wire::version::Version;

/// Every message type of the protocol and its code on the wire. Codes are
/// grouped by purpose: 0x0_ handshake, 0x1_ write path, 0x2_ reads, 0x3_
/// resync, 0x4_ membership, 0x5_ liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// Initiator opens a link: versions, role, node, nonce.
    Hello = 0x01,
    /// Acceptor answers: chosen version, role, node, its nonce.
    Challenge = 0x02,
    /// Either side proves it holds the key (HMAC over both nonces).
    Response = 0x03,
    /// Data to apply at a byte range.
    Write = 0x10,
    /// Everything before this in the stream must be made durable.
    Flush = 0x11,
    /// Everything up to a sequence number is durable.
    Ack = 0x12,
    /// A frame (or the link) is refused, with a typed reason.
    Nack = 0x13,
    /// Read a byte range from the peer's copy.
    ReadRequest = 0x20,
    /// Data answering a read request.
    ReadResponse = 0x21,
    /// Resync control: begin, region done, end.
    Resync = 0x30,
    /// New epoch and the membership that comes with it.
    EpochChange = 0x40,
    /// Liveness probe or its reply.
    Heartbeat = 0x50,
}

impl MessageType {
    /// Every type, in code order.
    pub const ALL: [MessageType; 12] = [
        Self::Hello,
        Self::Challenge,
        Self::Response,
        Self::Write,
        Self::Flush,
        Self::Ack,
        Self::Nack,
        Self::ReadRequest,
        Self::ReadResponse,
        Self::Resync,
        Self::EpochChange,
        Self::Heartbeat,
    ];

    /// The code on the wire.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type with this code, if this version defines one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether frames of this type take a sequence number in their stream
    /// (and so are acknowledged by `Ack`).
    pub fn is_sequenced(self) -> bool {
        matches!(
            self,
            Self::Write | Self::Flush | Self::Resync | Self::EpochChange
        )
    }

    pub(crate) fn shape(self) -> Shape {
        let fixed = |len| PayloadRule::Bounded { min: len, max: len };
        let (stream, sequence, range, flags, payload) = match self {
            Self::Hello => (false, false, false, Flags::NONE, fixed(HELLO_BODY_LEN)),
            Self::Challenge => (false, false, false, Flags::NONE, fixed(CHALLENGE_BODY_LEN)),
            Self::Response => (false, false, false, Flags::NONE, fixed(RESPONSE_BODY_LEN)),
            Self::Write => (true, true, true, Flags::WRITE_FUA, PayloadRule::Data),
            Self::Flush => (true, true, false, Flags::NONE, fixed(0)),
            Self::Ack => (true, true, false, Flags::NONE, fixed(0)),
            Self::Nack => (true, true, false, Flags::NONE, fixed(NACK_BODY_LEN)),
            Self::ReadRequest => (true, true, true, Flags::NONE, fixed(0)),
            Self::ReadResponse => (true, true, true, Flags::NONE, PayloadRule::Data),
            Self::Resync => (true, true, false, Flags::NONE, fixed(RESYNC_BODY_LEN)),
            Self::EpochChange => (
                true,
                true,
                false,
                Flags::NONE,
                PayloadRule::Bounded {
                    min: EPOCH_CHANGE_MIN_BODY_LEN,
                    max: EPOCH_CHANGE_MAX_BODY_LEN,
                },
            ),
            Self::Heartbeat => (
                false,
                false,
                false,
                Flags::HEARTBEAT_REPLY,
                fixed(HEARTBEAT_BODY_LEN),
            ),
        };
        Shape {
            uses_stream: stream,
            uses_sequence: sequence,
            uses_range: range,
            allowed_flags: flags,
            payload,
        }
    }
}

impl Shape {
    /// The flags a frame of `version` may set: an `Ack` may say "applied"
    /// from 1.2 on.
    fn allowed_flags_in(&self, message_type: MessageType, version: Version) -> Flags {
        if message_type == MessageType::Ack && version >= Version::V1_2 {
            Flags(self.allowed_flags.0 | Flags::ACK_APPLIED.0)
        } else {
            self.allowed_flags
        }
    }
}

/// Which shared header fields a message type uses, and its payload rule.
pub(crate) struct Shape {
    uses_stream: bool,
    uses_sequence: bool,
    uses_range: bool,
    allowed_flags: Flags,
    payload: PayloadRule,
}

pub(crate) enum PayloadRule {
    /// A structured body of `min..=max` bytes (a newer minor may append
    /// fields, so only `min` binds such frames).
    Bounded { min: usize, max: usize },
    /// Caller data: exactly the range length, at least one byte.
    Data,
    /// Empty, or a structured body of `len` bytes (a newer minor may append
    /// fields to it, so only `len` binds such frames).
    EmptyOr { len: usize },
}

impl MessageType {
    /// The payload rule of this type in frames of `version`: an `Ack` may
    /// carry a standing from 1.1 on.
    fn payload_rule(self, version: Version, base: PayloadRule) -> PayloadRule {
        if self == Self::Ack && version >= Version::V1_1 {
            PayloadRule::EmptyOr { len: STANDING_LEN }
        } else {
            base
        }
    }
}

/// Checks a header against its message type's shape. An unknown type passes
/// only when it comes from a newer minor and is marked ignorable.
pub(crate) fn check_header(header: &FrameHeader) -> Result<(), DecodeError> {
    let tolerance = header.tolerance();
    let Some(message_type) = MessageType::from_code(header.message_type) else {
        let skippable = tolerance == Tolerance::Lenient && header.flags.contains(Flags::IGNORABLE);
        return if skippable {
            Ok(())
        } else {
            Err(DecodeError::UnknownMessageType {
                code: header.message_type,
            })
        };
    };
    let shape = message_type.shape();
    // Set only by the header parser, for a 1.1+ `Write` with a header of at
    // least 80 bytes; checked again for headers that did not come from it.
    let position_allowed = message_type == MessageType::Write
        && header.version >= Version::V1_1
        && usize::from(header.header_len) >= crate::wire::header::WRITE_HEADER_LEN;
    if header.position.is_some() != position_allowed {
        return Err(DecodeError::malformed(
            "header.position",
            FieldProblem::Inconsistent,
        ));
    }
    if tolerance == Tolerance::Strict {
        let unknown_flags =
            header.flags.0 & !shape.allowed_flags_in(message_type, header.version).0;
        if unknown_flags != 0 {
            return Err(DecodeError::malformed(
                "header.flags",
                FieldProblem::UnknownValue,
            ));
        }
        if !shape.uses_stream && header.stream.0 != 0 {
            return Err(DecodeError::malformed(
                "header.stream",
                FieldProblem::NotUsedByType,
            ));
        }
        if !shape.uses_sequence && header.sequence.0 != 0 {
            return Err(DecodeError::malformed(
                "header.sequence",
                FieldProblem::NotUsedByType,
            ));
        }
        if !shape.uses_range && !header.range.is_none() {
            return Err(DecodeError::malformed(
                "header.range",
                FieldProblem::NotUsedByType,
            ));
        }
    }
    if shape.uses_range && header.range.end().is_none() {
        return Err(DecodeError::malformed(
            "header.range",
            FieldProblem::Overflow,
        ));
    }
    let payload_len = payload_len_usize(header.payload_len);
    match message_type.payload_rule(header.version, shape.payload) {
        PayloadRule::Data => {
            if header.range.len == 0 {
                return Err(DecodeError::malformed(
                    "header.range",
                    FieldProblem::OutOfBounds,
                ));
            }
            if header.payload_len != header.range.len {
                return Err(DecodeError::malformed(
                    "header.payload_len",
                    FieldProblem::LengthMismatch,
                ));
            }
        }
        PayloadRule::Bounded { min, max } => {
            let too_long = payload_len > max && tolerance == Tolerance::Strict;
            if payload_len < min || too_long {
                return Err(DecodeError::malformed(
                    "header.payload_len",
                    FieldProblem::LengthMismatch,
                ));
            }
        }
        PayloadRule::EmptyOr { len } => {
            let appended = payload_len > len && tolerance == Tolerance::Lenient;
            if payload_len != 0 && payload_len != len && !appended {
                return Err(DecodeError::malformed(
                    "header.payload_len",
                    FieldProblem::LengthMismatch,
                ));
            }
        }
    }
    Ok(())
}
