//! The mapping between the replication state machines' frames
//! ([`core::Frame`](crate::core::Frame)) and the wire protocol
//! ([`crate::wire`], version 1.2), for the transport that drives the state
//! machines over real sockets.
//!
//! - [`encode`] turns one core frame, stamped with its [`Envelope`] (volume,
//!   stream, epoch), into one wire frame appended to a byte vector;
//!   [`encode_header`] appends only a `Write`'s header, for sending the data
//!   from where it lies.
//! - [`decode`] reads the frame at the front of a receive buffer: a core
//!   frame, a wire message the core has no use for ([`Other`]: heartbeats,
//!   flushes, reads, stray handshake frames), or "need N more bytes". Every
//!   decode error means "close this link" ([`LinkError::closes_link`]).
//! - [`handshake`] runs the authenticated connection setup over a blocking
//!   `TcpStream` before the socket is handed to the reactor.
//!
//! **Why the payload is a range.** The core is generic over its payload
//! handle `P` (a registered, reference-counted buffer in keeld, a content
//! value in the simulator). Decoding hands out a
//! `core::Frame<Range<usize>>` whose handle is the byte range of the write
//! data *inside the caller's receive buffer*: nothing is copied and nothing
//! borrows the buffer, so the driver can keep receiving into it, then turn
//! the range into whatever handle it uses (a slice of the registered buffer
//! it received into) before handing the frame to the state machine.
//!
//! **Which wire fields carry what** (every frame: header volume, epoch and
//! stream from the [`Envelope`], version [`LINK_VERSION`]):
//!
//! | core frame | wire message | fields |
//! |------------|--------------|--------|
//! | `Write { seq, position, range, data, fua }` | `Write` | sequence = `seq`; range = `range` (the payload is the data, exactly `range.len` bytes); flag `FUA` = `fua`; `position` in the 1.1 header extension (header length 80; 64 when `None`) |
//! | `Resync { seq, op }` | `Resync` | sequence = `seq`; body = `op` |
//! | `EpochChange { seq, membership }` | `EpochChange` | sequence = `seq`; the new epoch is the envelope's; body: W, then each member with role primary for `membership.primary` and replica otherwise, its mode, and its address from the caller's [`AddressBook`] |
//! | `Ack { durable_through, standing }` | `Ack` | sequence = `durable_through`; `standing` as the 1.1 `Ack` payload (40 bytes; empty when `None`) |
//! | `Flush { seq }` | `Flush` | sequence = `seq` |
//! | `Applied { applied_through }` | `Ack` with flag `ACK_APPLIED` (1.2) | sequence = `applied_through`; empty payload |
//! | `Nack { seq, reason }` | `Nack` | sequence = `seq` (with stream 0 and sequence 0 it refuses the link); body = `reason` |
//!
//! The core's frames need both 1.1 fields (positions for elections and
//! resync, standings for elections) and 1.2's applied acknowledgement, so
//! a link speaks exactly 1.2: the
//! handshake offers and accepts nothing else, and [`decode`] refuses frames
//! of any other version (after the handshake every frame must carry the
//! negotiated version).

pub mod handshake;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use crate::auth::{AuthFailure, ConfigError};
use crate::core::{Frame, Member, Membership, Position, Previous, Standing};
use crate::wire::{
    self, CopyInfo, CopyList, DecodeError, EncodeError, Epoch, FrameDecoder, Message, MessageType,
    NodeId, PreviousCopies, ReadTag, Role, Sequence, StandingReport, StreamId, Version, VolumeId,
    WritePosition,
};

/// The one wire version a link speaks.
pub const LINK_VERSION: Version = Version::V1_4;

/// Where a frame belongs: the header fields every frame carries besides its
/// message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Envelope {
    /// The link's volume.
    pub volume: VolumeId,
    /// The stream (one per shard of the primary; one core state machine
    /// each). A link-level `Nack` uses stream 0 with sequence 0.
    pub stream: StreamId,
    /// The sender's epoch (for `EpochChange`, the new epoch).
    pub epoch: Epoch,
}

/// Addresses of the copies of a volume, which the wire's `EpochChange`
/// carries and the core's membership does not.
pub trait AddressBook {
    /// The replication listener of `node` (`host:port`), if known.
    fn address(&self, node: NodeId) -> Option<&str>;
}

impl<S: AsRef<str>> AddressBook for HashMap<NodeId, S> {
    fn address(&self, node: NodeId) -> Option<&str> {
        self.get(&node).map(AsRef::as_ref)
    }
}

impl<S: AsRef<str>> AddressBook for BTreeMap<NodeId, S> {
    fn address(&self, node: NodeId) -> Option<&str> {
        self.get(&node).map(AsRef::as_ref)
    }
}

/// An address book that knows nobody: enough for every frame but
/// `EpochChange`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoAddresses;

impl AddressBook for NoAddresses {
    fn address(&self, _: NodeId) -> Option<&str> {
        None
    }
}

/// Why a frame could not be encoded or decoded, or a link not set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The bytes received are not a valid frame: the stream is unusable.
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    /// A valid frame of another version than the link's.
    #[error("frame of version {got} on a link that speaks {expected}")]
    VersionMismatch {
        /// The link's version.
        expected: Version,
        /// The frame's.
        got: Version,
    },
    /// The handshake failed (wrong key, no common version, refused by the
    /// peer, ...).
    #[error("handshake failed: {0}")]
    Auth(AuthFailure),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
    /// The peer closed the connection before the handshake finished.
    #[error("peer closed the connection during the handshake")]
    Closed,
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// No random nonce could be drawn for the handshake.
    #[error("no random nonce: {0}")]
    Random(std::io::Error),
    /// The handshake configuration is unusable (a local bug).
    #[error("handshake configuration: {0}")]
    Config(#[from] ConfigError),
    /// The frame breaks a wire rule (a local bug; nothing was encoded).
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// `payload` does not fit the frame: a write's data must be exactly its
    /// range's length, every other frame has none (a local bug).
    #[error("payload of {got} bytes where the frame needs {expected}")]
    PayloadMismatch {
        /// Bytes the frame needs.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// An `EpochChange` names a node the address book does not know (a
    /// local bug or configuration gap; nothing was encoded).
    #[error("no address for node {0}")]
    NoAddress(NodeId),
}

impl LinkError {
    /// Whether the link must be closed. True for every error about what the
    /// peer sent or about the connection (decoding, version, handshake,
    /// I/O); false for encode-side errors, which are the caller's and leave
    /// the link untouched (nothing was produced to send).
    pub fn closes_link(&self) -> bool {
        !matches!(
            self,
            LinkError::Encode(_)
                | LinkError::PayloadMismatch { .. }
                | LinkError::NoAddress(_)
                | LinkError::Config(_)
        )
    }
}

/// A wire message the core state machines do not take, for the driver to
/// handle (heartbeats) or refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Other {
    /// `Heartbeat`: answer with `reply` set and the same token.
    Heartbeat {
        /// Echoed in the reply.
        token: u64,
        /// Whether it is a reply.
        reply: bool,
    },
    /// A handshake frame (`Hello`, `Challenge`, `Response`) after the
    /// handshake: a protocol violation, close the link.
    Handshake(MessageType),
}

/// What [`decode`] found at the front of the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The next frame is incomplete: at least this many more bytes must
    /// arrive.
    NeedMore(usize),
    /// A frame for the core state machine of `envelope.stream`.
    Frame {
        /// Volume, stream and epoch of the frame.
        envelope: Envelope,
        /// The frame; a `Write`'s data is the range of the buffer that
        /// holds it.
        frame: Frame<Range<usize>>,
        /// For an `EpochChange`, each member's address (which the core's
        /// membership does not keep); empty otherwise.
        addresses: Vec<(NodeId, String)>,
        /// Bytes to discard from the front of the buffer.
        consumed: usize,
    },
    /// A wire message the core does not use.
    Other {
        /// Volume, stream (0 for heartbeats) and epoch of the frame.
        envelope: Envelope,
        /// The message.
        message: Other,
        /// Bytes to discard from the front of the buffer.
        consumed: usize,
    },
}

impl Decoded {
    /// Bytes to discard from the front of the buffer (0 for `NeedMore`).
    pub fn consumed(&self) -> usize {
        match self {
            Decoded::NeedMore(_) => 0,
            Decoded::Frame { consumed, .. } | Decoded::Other { consumed, .. } => *consumed,
        }
    }
}

fn wire_position(position: Position) -> WritePosition {
    WritePosition {
        epoch: position.epoch,
        index: position.index,
    }
}

fn core_position(position: WritePosition) -> Position {
    Position {
        epoch: position.epoch,
        index: position.index,
    }
}

fn wire_standing(standing: &Standing) -> StandingReport {
    StandingReport {
        epoch: standing.epoch,
        synced: standing.synced,
        applied: wire_position(standing.applied),
        consistent: standing.consistent,
        amnesiac: standing.amnesiac,
    }
}

fn core_standing(standing: &StandingReport) -> Standing {
    Standing {
        epoch: standing.epoch,
        synced: standing.synced,
        applied: core_position(standing.applied),
        consistent: standing.consistent,
        amnesiac: standing.amnesiac,
    }
}

fn expect_payload(expected: usize, payload: &[u8]) -> Result<(), LinkError> {
    if payload.len() == expected {
        Ok(())
    } else {
        Err(LinkError::PayloadMismatch {
            expected,
            got: payload.len(),
        })
    }
}

/// Appends the wire frame for `frame` to `out` and returns its length.
///
/// `payload` is a `Write`'s data (exactly `range.len` bytes) and empty for
/// every other frame; `addresses` is consulted only for an `EpochChange`.
/// On error nothing is appended.
pub fn encode<P>(
    envelope: &Envelope,
    frame: &Frame<P>,
    payload: &[u8],
    addresses: &impl AddressBook,
    out: &mut Vec<u8>,
) -> Result<usize, LinkError> {
    with_message(envelope, frame, payload, addresses, |message, envelope| {
        append(out, message.encoded_len(), |tail| {
            message.encode(envelope, tail)
        })
    })
}

/// Like [`encode`], but for a `Write` appends only the header (64 bytes, or
/// 80 with a position), so the data can be sent from where it lies (one
/// vectored send of `out` and `payload`); its CRC is computed over
/// `payload`. Every other frame is appended whole.
pub fn encode_header<P>(
    envelope: &Envelope,
    frame: &Frame<P>,
    payload: &[u8],
    addresses: &impl AddressBook,
    out: &mut Vec<u8>,
) -> Result<usize, LinkError> {
    with_message(envelope, frame, payload, addresses, |message, envelope| {
        if let Message::Write(write) = message {
            append(out, message.header_len(), |tail| {
                write.encode_header_into(envelope, tail)
            })
        } else if let Message::ReadResponse(_) = message {
            append(out, message.header_len(), |tail| {
                message.encode_header_into(envelope, tail)
            })
        } else {
            append(out, message.encoded_len(), |tail| {
                message.encode(envelope, tail)
            })
        }
    })
}

/// Appends a `Heartbeat` (or, with `beat.reply`, the answer to one) to
/// `out`; its header carries `envelope`'s volume and epoch (heartbeats
/// travel on stream 0, outside every sequence).
pub fn encode_heartbeat(
    envelope: &Envelope,
    beat: wire::Heartbeat,
    out: &mut Vec<u8>,
) -> Result<usize, LinkError> {
    let message = Message::Heartbeat(beat);
    let wire_envelope = wire::Envelope {
        version: LINK_VERSION,
        volume: envelope.volume,
        epoch: envelope.epoch,
    };
    append(out, message.encoded_len(), |tail| {
        message.encode(&wire_envelope, tail)
    })
    .map_err(LinkError::from)
}

/// Appends `len` bytes written by `write` to `out`; on error, nothing.
fn append(
    out: &mut Vec<u8>,
    len: usize,
    write: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<usize, EncodeError> {
    let start = out.len();
    out.resize(start.saturating_add(len), 0);
    let written = write(out.get_mut(start..).unwrap_or_default());
    match written {
        Ok(len) => {
            out.truncate(start.saturating_add(len));
            Ok(len)
        }
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

/// Builds the wire message for `frame` and hands it to `f` with the wire
/// envelope to encode it with.
fn with_message<P, R>(
    envelope: &Envelope,
    frame: &Frame<P>,
    payload: &[u8],
    addresses: &impl AddressBook,
    f: impl FnOnce(&Message<'_>, &wire::Envelope) -> Result<R, EncodeError>,
) -> Result<R, LinkError> {
    let stream = envelope.stream;
    let copies: Vec<CopyInfo<'_>>;
    let previous_copies: Vec<CopyInfo<'_>>;
    let message = match frame {
        Frame::Write {
            seq,
            position,
            range,
            fua,
            ..
        } => {
            expect_payload(usize::try_from(range.len).unwrap_or(usize::MAX), payload)?;
            Message::Write(wire::Write {
                stream,
                sequence: *seq,
                offset: range.offset,
                data: payload,
                fua: *fua,
                position: position.map(wire_position),
            })
        }
        Frame::Resync { seq, op } => {
            expect_payload(0, payload)?;
            Message::Resync(wire::Resync {
                stream,
                sequence: *seq,
                op: *op,
            })
        }
        Frame::EpochChange { seq, membership } => {
            expect_payload(0, payload)?;
            // A membership's copies with their addresses, `primary` marked.
            let listed = |members: &[Member], primary: NodeId| {
                members
                    .iter()
                    .map(|member| {
                        Ok(CopyInfo {
                            node: member.node,
                            role: if member.node == primary {
                                Role::Primary
                            } else {
                                Role::Replica
                            },
                            mode: member.mode,
                            address: addresses
                                .address(member.node)
                                .ok_or(LinkError::NoAddress(member.node))?,
                        })
                    })
                    .collect::<Result<Vec<_>, LinkError>>()
            };
            copies = listed(&membership.members, membership.primary)?;
            let old = membership.previous.as_ref();
            previous_copies = match old {
                Some(p) => listed(&p.members, p.primary)?,
                None => Vec::new(),
            };
            let previous = match old {
                Some(p) => PreviousCopies {
                    write_quorum: p.write_quorum,
                    copies: CopyList::Borrowed(&previous_copies),
                },
                None => PreviousCopies::NONE,
            };
            Message::EpochChange(wire::EpochChange {
                stream,
                sequence: *seq,
                membership: wire::Membership {
                    write_quorum: membership.write_quorum,
                    copies: CopyList::Borrowed(&copies),
                    since: Some(membership.since),
                    previous: Some(previous),
                },
            })
        }
        Frame::Ack {
            durable_through,
            standing,
        } => {
            expect_payload(0, payload)?;
            Message::Ack(wire::Ack {
                stream,
                durable_through: *durable_through,
                applied_only: false,
                standing: standing.as_ref().map(wire_standing),
            })
        }
        Frame::Flush { seq } => {
            expect_payload(0, payload)?;
            Message::Flush(wire::Flush {
                stream,
                sequence: *seq,
            })
        }
        Frame::Applied { applied_through } => {
            expect_payload(0, payload)?;
            Message::Ack(wire::Ack {
                stream,
                durable_through: *applied_through,
                applied_only: true,
                standing: None,
            })
        }
        Frame::ReadRequest { seq, range } => {
            expect_payload(0, payload)?;
            Message::ReadRequest(wire::ReadRequest {
                stream,
                tag: ReadTag(seq.0),
                range: *range,
            })
        }
        Frame::ReadResponse { seq, range, .. } => {
            expect_payload(usize::try_from(range.len).unwrap_or(usize::MAX), payload)?;
            Message::ReadResponse(wire::ReadResponse {
                stream,
                tag: ReadTag(seq.0),
                offset: range.offset,
                data: payload,
            })
        }
        Frame::Nack { seq, reason } => {
            expect_payload(0, payload)?;
            Message::Nack(wire::Nack {
                stream,
                sequence: *seq,
                reason: *reason,
            })
        }
    };
    let wire_envelope = wire::Envelope {
        version: LINK_VERSION,
        volume: envelope.volume,
        epoch: envelope.epoch,
    };
    f(&message, &wire_envelope).map_err(LinkError::from)
}

/// Decodes the frame at the front of `buf` (the bytes received since the
/// end of the previous frame). Any error is final for the link: close it.
pub fn decode(buf: &[u8]) -> Result<Decoded, LinkError> {
    let frame = match FrameDecoder::default().decode(buf)? {
        wire::Decoded::NeedMore(n) => return Ok(Decoded::NeedMore(n)),
        // Only frames of a newer minor are skipped, and the link speaks
        // exactly its own version.
        wire::Decoded::Skipped(header) => {
            return Err(LinkError::VersionMismatch {
                expected: LINK_VERSION,
                got: header.version,
            })
        }
        wire::Decoded::Frame(frame) => frame,
    };
    let header = frame.header;
    if header.version != LINK_VERSION {
        return Err(LinkError::VersionMismatch {
            expected: LINK_VERSION,
            got: header.version,
        });
    }
    let envelope = Envelope {
        volume: header.volume,
        stream: header.stream,
        epoch: header.epoch,
    };
    let consumed = frame.wire_len();
    let data_start = usize::from(header.header_len);
    let data = data_start..data_start.saturating_add(frame.payload.len());
    let other = |message| {
        Ok(Decoded::Other {
            envelope,
            message,
            consumed,
        })
    };
    let mut addresses = Vec::new();
    let core_frame = match frame.message {
        Message::Write(write) => Frame::Write {
            seq: write.sequence,
            position: write.position.map(core_position),
            range: write.range(),
            data,
            fua: write.fua,
        },
        Message::Resync(resync) => Frame::Resync {
            seq: resync.sequence,
            op: resync.op,
        },
        Message::EpochChange(change) => {
            let membership = &change.membership;
            let primary =
                membership
                    .primary()
                    .map(|copy| copy.node)
                    .ok_or(DecodeError::Malformed {
                        field: "EpochChange.copies",
                        problem: wire::FieldProblem::Inconsistent,
                    })?;
            let previous = membership
                .previous
                .as_ref()
                .filter(|p| !p.copies.is_empty());
            let previous_copies = previous.map(|p| &p.copies[..]).unwrap_or_default();
            addresses = membership
                .copies
                .iter()
                .chain(
                    previous_copies
                        .iter()
                        .filter(|old| !membership.copies.iter().any(|c| c.node == old.node)),
                )
                .map(|copy| (copy.node, copy.address.to_owned()))
                .collect();
            let members = |copies: &[CopyInfo<'_>]| {
                copies
                    .iter()
                    .map(|copy| Member {
                        node: copy.node,
                        mode: copy.mode,
                    })
                    .collect()
            };
            Frame::EpochChange {
                seq: change.sequence,
                membership: Membership {
                    members: members(&membership.copies),
                    primary,
                    write_quorum: membership.write_quorum,
                    since: membership.since.unwrap_or_default(),
                    previous: previous
                        .map(|p| -> Result<Previous, DecodeError> {
                            let primary = p
                                .copies
                                .iter()
                                .find(|c| c.role == Role::Primary)
                                .map(|c| c.node)
                                .ok_or(DecodeError::Malformed {
                                    field: "EpochChange.previous_copies",
                                    problem: wire::FieldProblem::Inconsistent,
                                })?;
                            Ok(Previous {
                                members: members(&p.copies),
                                write_quorum: p.write_quorum,
                                primary,
                            })
                        })
                        .transpose()?,
                },
            }
        }
        Message::Ack(ack) if ack.applied_only => Frame::Applied {
            applied_through: ack.durable_through,
        },
        Message::Ack(ack) => Frame::Ack {
            durable_through: ack.durable_through,
            standing: ack.standing.as_ref().map(core_standing),
        },
        Message::Nack(nack) => Frame::Nack {
            seq: nack.sequence,
            reason: nack.reason,
        },
        Message::Flush(flush) => Frame::Flush {
            seq: flush.sequence,
        },
        Message::Heartbeat(beat) => {
            return other(Other::Heartbeat {
                token: beat.token,
                reply: beat.reply,
            })
        }
        Message::ReadRequest(read) => Frame::ReadRequest {
            seq: Sequence(read.tag.0),
            range: read.range,
        },
        Message::ReadResponse(read) => Frame::ReadResponse {
            seq: Sequence(read.tag.0),
            range: read.range(),
            data,
        },
        message @ (Message::Hello(_) | Message::Challenge(_) | Message::Response(_)) => {
            return other(Other::Handshake(message.message_type()))
        }
    };
    Ok(Decoded::Frame {
        envelope,
        frame: core_frame,
        addresses,
        consumed,
    })
}
