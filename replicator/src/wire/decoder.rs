//! The incremental frame decoder.
//!
//! It keeps no buffer of its own: the caller owns the receive buffer, hands
//! the decoder whatever has arrived, and gets back how many more bytes are
//! needed, or a frame borrowing its payload from that buffer (and the
//! number of bytes to discard), or an error.

use crate::wire::error::{DecodeError, FieldProblem};
use crate::wire::header::{self, payload_len_usize, FrameHeader, HeaderProgress};
use crate::wire::limits::Limits;
use crate::wire::message::{Envelope, Message};
use crate::wire::message_type::{check_header, MessageType};

/// A decoded frame: its header, its raw payload, and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The header as received.
    pub header: FrameHeader,
    /// The payload as received (for `Write` and `ReadResponse`, the data).
    pub payload: &'a [u8],
    /// The decoded message.
    pub message: Message<'a>,
}

impl Frame<'_> {
    /// Version, volume and epoch of the sender.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            version: self.header.version,
            volume: self.header.volume,
            epoch: self.header.epoch,
        }
    }

    /// Bytes the frame took on the wire.
    pub fn wire_len(&self) -> usize {
        self.header.frame_len()
    }
}

/// What [`FrameDecoder::decode`] made of the bytes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// The next frame is incomplete: at least this many more bytes must
    /// arrive (exactly this many once its header is in).
    NeedMore(usize),
    /// A complete frame; discard [`Decoded::consumed`] bytes before the
    /// next call.
    Frame(Frame<'a>),
    /// A frame of a type this version does not know, from a newer minor
    /// version, marked ignorable: skip it.
    Skipped(FrameHeader),
}

impl Decoded<'_> {
    /// Bytes to discard from the front of the buffer.
    pub fn consumed(&self) -> usize {
        match self {
            Decoded::NeedMore(_) => 0,
            Decoded::Frame(frame) => frame.wire_len(),
            Decoded::Skipped(header) => header.frame_len(),
        }
    }
}

/// Decodes one connection's byte stream into frames.
///
/// Once it has returned an error it returns that error forever: a stream
/// that produced one bad frame has lost its framing or its peer's trust,
/// and the connection must be closed.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    limits: Limits,
    failure: Option<DecodeError>,
}

impl FrameDecoder {
    /// A decoder applying `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            failure: None,
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The error that stopped it, if any.
    pub fn failure(&self) -> Option<&DecodeError> {
        self.failure.as_ref()
    }

    /// Decodes the frame at the front of `buf`, which holds the bytes
    /// received since the end of the previous frame.
    pub fn decode<'a>(&mut self, buf: &'a [u8]) -> Result<Decoded<'a>, DecodeError> {
        let header = match self.decode_header(buf)? {
            HeaderProgress::NeedMore(n) => return Ok(Decoded::NeedMore(n)),
            HeaderProgress::Complete(header) => header,
        };
        let frame_len = header.frame_len();
        let Some(payload) = buf.get(usize::from(header.header_len)..frame_len) else {
            return Ok(Decoded::NeedMore(frame_len.saturating_sub(buf.len())));
        };
        self.decode_payload(&header, payload)
    }

    /// First half of [`decode`](Self::decode), for callers that receive the
    /// payload straight into a buffer of their own (e.g. a registered,
    /// aligned one): checks the header at the front of `buf` without
    /// looking past it. The payload is `header.payload_len` bytes starting
    /// `header.header_len` bytes into the frame.
    pub fn decode_header(&mut self, buf: &[u8]) -> Result<HeaderProgress, DecodeError> {
        self.guard(|limits| {
            let progress = header::parse(buf, limits)?;
            if let HeaderProgress::Complete(header) = &progress {
                check_header(header)?;
            }
            Ok(progress)
        })
    }

    /// Second half of [`decode`](Self::decode): checks the payload CRC and
    /// decodes the message. `header` must come from
    /// [`decode_header`](Self::decode_header).
    pub fn decode_payload<'a>(
        &mut self,
        header: &FrameHeader,
        payload: &'a [u8],
    ) -> Result<Decoded<'a>, DecodeError> {
        self.guard(|limits| {
            // Re-checked so that a header that did not come from
            // `decode_header` cannot bypass the rules.
            if header.payload_len > limits.max_payload() {
                return Err(DecodeError::PayloadTooLarge {
                    len: header.payload_len,
                    max: limits.max_payload(),
                });
            }
            check_header(header)?;
            if payload.len() != payload_len_usize(header.payload_len) {
                return Err(DecodeError::malformed(
                    "payload",
                    FieldProblem::LengthMismatch,
                ));
            }
            let computed = crc32c::crc32c(payload);
            if computed != header.payload_crc {
                return Err(DecodeError::PayloadCrcMismatch {
                    stream: header.stream,
                    sequence: header.sequence,
                    carried: header.payload_crc,
                    computed,
                });
            }
            let Some(message_type) = MessageType::from_code(header.message_type) else {
                // `check_header` let it through: ignorable, from a newer minor.
                return Ok(Decoded::Skipped(*header));
            };
            Ok(Decoded::Frame(Frame {
                header: *header,
                payload,
                message: Message::decode(message_type, header, payload)?,
            }))
        })
    }

    fn guard<T>(
        &mut self,
        step: impl FnOnce(&Limits) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let result = step(&self.limits);
        if let Err(error) = &result {
            self.failure = Some(error.clone());
        }
        result
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}
