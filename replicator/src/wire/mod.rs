//! The replication wire protocol: framed, versioned messages between a
//! primary and its replicas.
//!
//! Every frame is a 64-byte [header](FrameHeader) (80 bytes for a 1.1
//! `Write` that carries its [position](WritePosition)) followed by a payload
//! of `payload_len` bytes. The header is protected by its own CRC32C and the
//! payload by another; see `docs/replication-protocol.md` for the byte layout
//! and the rules (versioning, limits, ordering, acknowledgements, epochs).
//!
//! - Encoding: [`Message::encode`] writes a whole frame into a caller-provided
//!   buffer; [`Write::encode_header_into`] (and `encode_header` for 64-byte
//!   headers) and [`ReadResponse::encode_header`] write only the header so
//!   the data can be sent from where it already is.
//! - Decoding: [`FrameDecoder`] takes the bytes received so far and answers
//!   "need N more bytes", a [`Frame`] borrowing its payload from the input,
//!   or a typed [`DecodeError`]. Nothing in decoding allocates, except the
//!   membership list of a (rare) `EpochChange`.

mod bytes;
mod data;
mod decoder;
mod error;
mod handshake;
mod header;
mod heartbeat;
mod ids;
mod limits;
mod membership;
mod message;
mod message_type;
mod nack;
mod resync;
mod standing;
mod tolerance;
mod version;

#[cfg(test)]
pub(crate) mod tests;

pub use data::{Ack, Flush, ReadRequest, ReadResponse, Write};
pub use decoder::{Decoded, Frame, FrameDecoder};
pub use error::{DecodeError, EncodeError, FieldProblem};
pub use handshake::{AuthTag, Challenge, Hello, Nonce, Response, Role, AUTH_TAG_LEN, NONCE_LEN};
pub use header::{
    Flags, FrameHeader, HeaderProgress, HEADER_LEN, MAGIC, MAX_HEADER_LEN, WRITE_HEADER_LEN,
};
pub use heartbeat::Heartbeat;
pub use ids::{ByteRange, Epoch, NodeId, ReadTag, RegionIndex, Sequence, StreamId, VolumeId};
pub use limits::{Limits, MAX_ADDRESS_LEN, MAX_COPIES, MAX_FRAME_LEN, MAX_PAYLOAD_LEN};
pub use membership::{
    CopyInfo, CopyList, EpochChange, Membership, PreviousCopies, ReplicationMode,
};
pub use message::{Envelope, Message};
pub use message_type::MessageType;
pub use nack::{Nack, NackReason};
pub use resync::{Resync, ResyncOp};
pub use standing::{StandingReport, WritePosition, STANDING_LEN, WRITE_POSITION_LEN};
pub use version::{Version, VersionRange, PROTOCOL_VERSION};
