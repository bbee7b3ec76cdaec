//! Typed errors of encoding and decoding.
//!
//! Any [`DecodeError`] means the byte stream can no longer be trusted: the
//! connection that produced it is closed (after an optional `Nack`), never
//! the process.

use crate::wire::ids::{Sequence, StreamId};
use crate::wire::version::Version;

/// What is wrong with one field of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldProblem {
    /// The payload ends before the field does.
    Truncated,
    /// Bytes follow the last field (allowed only from a newer minor version).
    TrailingBytes,
    /// A reserved field is not zero.
    ReservedNotZero,
    /// A header field this message type does not use is not zero.
    NotUsedByType,
    /// An enumerated value (role, mode, op, flag bit) that is not defined.
    UnknownValue,
    /// Two lengths that must agree do not (e.g. data length vs LBA range).
    LengthMismatch,
    /// A value is outside its allowed bounds (zero length, too many entries,
    /// address too long, ...).
    OutOfBounds,
    /// Offset plus length runs past the end of the address space.
    Overflow,
    /// Fields are individually valid but contradict each other (e.g. a write
    /// quorum larger than the number of synchronous copies).
    Inconsistent,
    /// Text that is not valid UTF-8.
    NotUtf8,
}

/// Why a byte stream could not be decoded into frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The stream does not start with the frame magic: not a Keel
    /// replication peer, or the stream lost its framing.
    #[error("bad frame magic {found:02x?}")]
    BadMagic {
        /// The bytes found where the magic belongs (zero-padded if fewer
        /// than four had arrived).
        found: [u8; 4],
    },
    /// A major version this implementation does not speak.
    #[error("unsupported protocol version {found}")]
    UnsupportedVersion {
        /// The version in the frame header.
        found: Version,
    },
    /// The header length field is outside the allowed range or not a
    /// multiple of four.
    #[error("bad header length {len}")]
    BadHeaderLength {
        /// The header length field.
        len: u16,
    },
    /// The header CRC32C does not match the header bytes.
    #[error("header CRC mismatch: frame carries {carried:#010x}, computed {computed:#010x}")]
    HeaderCrcMismatch {
        /// CRC carried in the frame.
        carried: u32,
        /// CRC computed over the received header.
        computed: u32,
    },
    /// The payload CRC32C does not match the payload bytes. The header was
    /// intact, so stream and sequence say which frame to `Nack`.
    #[error("payload CRC mismatch on stream {stream} sequence {sequence}: frame carries {carried:#010x}, computed {computed:#010x}")]
    PayloadCrcMismatch {
        /// Stream of the damaged frame.
        stream: StreamId,
        /// Sequence (or read tag) of the damaged frame.
        sequence: Sequence,
        /// CRC carried in the header.
        carried: u32,
        /// CRC computed over the received payload.
        computed: u32,
    },
    /// The payload is longer than the receiver's limit.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// Payload length announced in the header.
        len: u32,
        /// The receiver's limit.
        max: u32,
    },
    /// A message type this node does not know, in a frame it may not skip.
    #[error("unknown message type {code:#04x}")]
    UnknownMessageType {
        /// The message type code.
        code: u8,
    },
    /// A field of a known message is invalid.
    #[error("malformed {field}: {problem:?}")]
    Malformed {
        /// Which field, as `Message.field` or `header.field`.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

impl DecodeError {
    pub(crate) fn malformed(field: &'static str, problem: FieldProblem) -> Self {
        Self::Malformed { field, problem }
    }
}

/// Why a message could not be encoded. Encoding validates the same rules as
/// decoding, so anything that encodes also decodes to the same message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The output buffer is shorter than the frame.
    #[error("output buffer of {available} bytes is too small for a {needed}-byte frame")]
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The payload is longer than the protocol allows.
    #[error("payload of {len} bytes exceeds the protocol limit of {max}")]
    PayloadTooLarge {
        /// Payload length of the message.
        len: usize,
        /// The protocol limit.
        max: u32,
    },
    /// The envelope names a version this implementation cannot encode.
    #[error("cannot encode protocol version {0}")]
    UnsupportedVersion(Version),
    /// A field of the message breaks a protocol rule.
    #[error("invalid {field}: {problem:?}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        problem: FieldProblem,
    },
    /// The message has a field the envelope's version cannot carry (a
    /// `Write` position or an `Ack` standing below 1.1).
    #[error("{field} cannot be encoded in protocol version {version}")]
    NotInVersion {
        /// Which field.
        field: &'static str,
        /// The envelope's version.
        version: Version,
    },
    /// Only messages whose payload is caller data (Write, ReadResponse) can
    /// be encoded header-only.
    #[error("{0:?} has a structured payload and cannot be encoded header-only")]
    NotADataMessage(crate::wire::MessageType),
}

impl EncodeError {
    pub(crate) fn invalid(field: &'static str, problem: FieldProblem) -> Self {
        Self::Invalid { field, problem }
    }
}

/// A broken protocol rule found by a validator shared by the encoder and the
/// decoder: the decoder reports it as [`DecodeError::Malformed`], the encoder
/// as [`EncodeError::Invalid`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Violation {
    pub(crate) field: &'static str,
    pub(crate) problem: FieldProblem,
}

impl Violation {
    pub(crate) fn new(field: &'static str, problem: FieldProblem) -> Self {
        Self { field, problem }
    }
}

impl From<Violation> for DecodeError {
    fn from(v: Violation) -> Self {
        Self::Malformed {
            field: v.field,
            problem: v.problem,
        }
    }
}

impl From<Violation> for EncodeError {
    fn from(v: Violation) -> Self {
        Self::Invalid {
            field: v.field,
            problem: v.problem,
        }
    }
}
