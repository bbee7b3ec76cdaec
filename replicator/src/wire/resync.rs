//! `Resync`: control frames that bracket the copy of regions to a replica
//! that may lack them.

use crate::wire::bytes::{Reader, Required, Writer};
use crate::wire::error::{DecodeError, EncodeError, FieldProblem, Violation};
use crate::wire::header::FrameHeader;
use crate::wire::ids::{RegionIndex, Sequence, StreamId};
use crate::wire::message::{HeaderFields, WireMessage};
use crate::wire::message_type::MessageType;
use crate::wire::tolerance::Tolerance;

pub(crate) const RESYNC_BODY_LEN: usize = 24;

/// The step of a resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResyncOp {
    /// Op 1. A resync starts. Until the matching `End` is acknowledged the
    /// replica's copy is inconsistent: it must not serve reads nor be
    /// promoted.
    Begin {
        /// Bytes per region (one bit of the write-intent bitmap); not 0.
        region_size: u64,
        /// Number of regions the primary will send.
        region_count: u64,
    },
    /// Op 2. Every write copying region `index` precedes this frame in the
    /// stream; once it is acknowledged the region is durable on the
    /// replica and the primary may clear its bit.
    Region {
        /// The region just copied.
        index: RegionIndex,
    },
    /// Op 3. The resync is complete; the copy is consistent again once
    /// this frame is acknowledged.
    End,
}

/// A sequenced resync control frame. Header: stream, sequence.
///
/// Body (24 bytes): op (1) | reserved (7) | a (8) | b (8), where Begin puts
/// region size in `a` and region count in `b`, Region puts the index in
/// `a`, and unused words are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resync {
    /// Stream carrying the resync (ordered with that stream's writes).
    pub stream: StreamId,
    /// Position in the stream.
    pub sequence: Sequence,
    /// What step this is.
    pub op: ResyncOp,
}

impl Resync {
    fn check(op: &ResyncOp) -> Result<(), Violation> {
        match op {
            ResyncOp::Begin { region_size: 0, .. } => Err(Violation::new(
                "Resync.region_size",
                FieldProblem::OutOfBounds,
            )),
            _ => Ok(()),
        }
    }
}

impl<'a> WireMessage<'a> for Resync {
    const TYPE: MessageType = MessageType::Resync;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: self.sequence,
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        RESYNC_BODY_LEN
    }

    fn validate(&self) -> Result<(), Violation> {
        Self::check(&self.op)
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let (op, a, b) = match self.op {
            ResyncOp::Begin {
                region_size,
                region_count,
            } => (1, region_size, region_count),
            ResyncOp::Region { index } => (2, index.0, 0),
            ResyncOp::End => (3, 0, 0),
        };
        w.u8(op)?;
        w.zeros::<7>()?;
        w.u64(a)?;
        w.u64(b)
    }

    fn read(
        header: &FrameHeader,
        body: &'a [u8],
        tolerance: Tolerance,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let op = r.u8().field("Resync.op")?;
        let reserved = r.array::<7>().field("Resync.reserved")?;
        tolerance.reserved_zero(reserved == [0; 7], "Resync.reserved")?;
        let a = r.u64().field("Resync.a")?;
        let b = r.u64().field("Resync.b")?;
        tolerance.end_of_body(&r, "Resync")?;
        let op = match op {
            1 => ResyncOp::Begin {
                region_size: a,
                region_count: b,
            },
            2 => {
                tolerance.reserved_zero(b == 0, "Resync.b")?;
                ResyncOp::Region {
                    index: RegionIndex(a),
                }
            }
            3 => {
                tolerance.reserved_zero(a == 0 && b == 0, "Resync.a")?;
                ResyncOp::End
            }
            _ => {
                return Err(DecodeError::malformed(
                    "Resync.op",
                    FieldProblem::UnknownValue,
                ))
            }
        };
        Self::check(&op)?;
        Ok(Self {
            stream: header.stream,
            sequence: header.sequence,
            op,
        })
    }
}
