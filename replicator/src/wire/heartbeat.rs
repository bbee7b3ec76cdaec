//! `Heartbeat`: liveness in both directions.

use crate::wire::bytes::{Reader, Required, Writer};
use crate::wire::error::{DecodeError, EncodeError};
use crate::wire::header::{Flags, FrameHeader};
use crate::wire::message::{HeaderFields, WireMessage};
use crate::wire::message_type::MessageType;
use crate::wire::tolerance::Tolerance;

pub(crate) const HEARTBEAT_BODY_LEN: usize = 8;

/// Either side may send one; the peer answers with `reply` set and the same
/// token. The token is opaque to the peer: the sender typically puts its
/// own monotonic send time there to measure round trips without the peer's
/// clock. Not sequenced; the header epoch lets each side notice a newer
/// epoch even on an idle link.
///
/// Body (8 bytes): token. Flag `HEARTBEAT_REPLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Heartbeat {
    /// Opaque to the receiver; echoed in the reply.
    pub token: u64,
    /// Whether this answers a heartbeat.
    pub reply: bool,
}

impl<'a> WireMessage<'a> for Heartbeat {
    const TYPE: MessageType = MessageType::Heartbeat;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            flags: if self.reply {
                Flags::HEARTBEAT_REPLY
            } else {
                Flags::NONE
            },
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        HEARTBEAT_BODY_LEN
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.token)
    }

    fn read(
        header: &FrameHeader,
        body: &'a [u8],
        tolerance: Tolerance,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let token = r.u64().field("Heartbeat.token")?;
        tolerance.end_of_body(&r, "Heartbeat")?;
        Ok(Self {
            token,
            reply: header.flags.contains(Flags::HEARTBEAT_REPLY),
        })
    }
}
