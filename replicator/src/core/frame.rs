//! The frames replication state machines exchange, in the vocabulary of the
//! wire protocol (`crate::wire`) with the payload kept abstract.
//!
//! Each variant maps onto one wire message; the transport encodes it with the
//! sender's epoch in the envelope (`crate::link`). Two fields need wire 1.1
//! (see `docs/replication-design.md`, "Wire gaps"): a write's [`Position`]
//! and the [`Standing`] a replica reports when it accepts an epoch.

use crate::core::ids::Position;
use crate::core::membership::Membership;
use crate::core::record::Standing;
use crate::wire::{ByteRange, NackReason, ResyncOp, Sequence};

/// One frame of a replication stream. `P` is the payload handle: a
/// registered buffer in production, per-block content hashes in the
/// simulator. It is cloned once per replica, so it should be cheap to clone
/// (reference counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<P> {
    /// Wire `Write`: a host write, or the data of a region copy.
    Write {
        /// Sequence on this link.
        seq: Sequence,
        /// A host write's place in the stream's total order; for a region
        /// copy, the last position the copy includes. `None` only for data
        /// that is no write of the stream.
        position: Option<Position>,
        /// Bytes written.
        range: ByteRange,
        /// The data.
        data: P,
        /// Make durable and acknowledge without batching delay.
        fua: bool,
    },
    /// Wire `Resync`.
    Resync {
        /// Sequence on this link.
        seq: Sequence,
        /// Begin, Region or End.
        op: ResyncOp,
    },
    /// Wire `Flush`: make every frame before it durable and acknowledge
    /// (with [`Frame::Ack`]) without waiting to batch. The primary sends it
    /// for a host Flush.
    Flush {
        /// Sequence on this link.
        seq: Sequence,
    },
    /// Wire `EpochChange`; the new epoch travels in the envelope.
    EpochChange {
        /// Sequence on this link.
        seq: Sequence,
        /// Membership from the new epoch on.
        membership: Membership,
    },
    /// Wire `Ack`: every sequenced frame up to `durable_through` is durable.
    Ack {
        /// Highest sequence durable (and every one before it).
        durable_through: Sequence,
        /// Only in the acknowledgement of an `EpochChange`: how up to date
        /// the replica was when it accepted the epoch.
        standing: Option<Standing>,
    },
    /// Wire `Ack` with `applied_only` (1.2): every sequenced frame up to
    /// `applied_through` is applied on the replica — its writes completed
    /// on the replica's device, as a completed NVMe write without FUA —
    /// but not necessarily durable. Enough for a write without FUA; FUA
    /// writes and flushes wait for [`Frame::Ack`].
    Applied {
        /// Highest sequence applied (and every one before it).
        applied_through: Sequence,
    },
    /// Wire `ReadRequest`, primary to replica: read `range` of the copy
    /// (a degraded read: the primary's own device failed it). It takes the
    /// link's next sequence as its tag, so the replica serves it in order,
    /// after every write sent before it, and acknowledges it like them.
    ReadRequest {
        /// Sequence on this link (the wire's read tag).
        seq: Sequence,
        /// What to read (within one region).
        range: ByteRange,
    },
    /// Wire `ReadResponse`, replica to primary: the data of the
    /// `ReadRequest` `seq`. A read that fails is refused with a `Nack`.
    ReadResponse {
        /// The request's sequence.
        seq: Sequence,
        /// What was read.
        range: ByteRange,
        /// The data, `range.len` bytes.
        data: P,
    },
    /// Wire `Nack`: the frame `seq` was refused; the link closes.
    Nack {
        /// The refused frame (0 for the link).
        seq: Sequence,
        /// Why.
        reason: NackReason,
    },
}

impl<P> Frame<P> {
    /// The sequence of a sequenced frame (`None` for `Ack`, `Applied`,
    /// `ReadResponse` and `Nack`, which answer one).
    pub fn sequence(&self) -> Option<Sequence> {
        match self {
            Frame::Write { seq, .. }
            | Frame::Flush { seq }
            | Frame::Resync { seq, .. }
            | Frame::EpochChange { seq, .. }
            | Frame::ReadRequest { seq, .. } => Some(*seq),
            Frame::Ack { .. }
            | Frame::Applied { .. }
            | Frame::ReadResponse { .. }
            | Frame::Nack { .. } => None,
        }
    }
}
