//! Events in, actions out: the whole interface between a state machine and
//! the world.

use crate::core::frame::Frame;
use crate::core::ids::{HostOpId, IoToken, LinkId, Time};
use crate::core::record::{DurableRecord, Standing};
use crate::wire::{ByteRange, Epoch, NodeId};

/// Which end opened a link. Primaries open links to their replicas (the
/// initiator of the wire handshake); a node serves the links others opened
/// to it with its replica logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDirection {
    /// This node opened it (as primary).
    Outbound,
    /// The peer opened it.
    Inbound,
}

/// A local I/O failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoError;

/// How a host command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    /// Done; for a write, applied on a write quorum (durable there too
    /// with FUA); for a flush, every write before it durable on a quorum.
    Success,
    /// This node is not (or no longer) the serving primary: the host must use
    /// another path (NVMe ANA inaccessible). Nothing is promised about the
    /// write's data.
    PathError,
    /// The local device failed the write.
    MediaError,
    /// Too many commands outstanding; retry.
    Busy,
    /// The range is not block aligned, not inside the volume, or spans two
    /// regions (the front end splits commands at chunk boundaries).
    InvalidRange,
}

/// Something that happened, fed to a state machine with the current time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// A host write of `data` to `range` (block aligned, within one region).
    HostWrite {
        /// Echoed in the completion.
        id: HostOpId,
        /// Bytes to write.
        range: ByteRange,
        /// The data.
        data: P,
        /// Force unit access: complete only once durable on a write quorum.
        /// Without it, complete once applied on a write quorum (durable at
        /// the next flush), as NVMe's volatile write cache allows.
        fua: bool,
    },
    /// A host read the local copy failed (a media error): read `range`
    /// (within one region) from a replica that holds it up to date, and
    /// answer with [`Action::CompleteRead`] (or, if no copy can, a
    /// `MediaError`).
    DegradedRead {
        /// Echoed in the completion.
        id: HostOpId,
        /// Bytes to read.
        range: ByteRange,
    },
    /// The peer answered, on `link`, a heartbeat sent at `sent_at` (the
    /// driver's liveness beats): for the read lease on idle links.
    HeartbeatAnswered {
        /// The replica.
        peer: NodeId,
        /// The link.
        link: LinkId,
        /// When the heartbeat was sent.
        sent_at: Time,
    },
    /// A host flush: completes once every write submitted before it is
    /// durable on a write quorum.
    HostFlush {
        /// Echoed in the completion.
        id: HostOpId,
    },
    /// A `LocalWrite` finished; `Ok` means durable if it was FUA.
    LocalWriteDone {
        /// The action's token.
        token: IoToken,
        /// Outcome.
        result: Result<(), IoError>,
    },
    /// A `LocalRead` finished.
    LocalReadDone {
        /// The action's token.
        token: IoToken,
        /// The data read.
        result: Result<P, IoError>,
    },
    /// A `Persist` finished: the data written before it and the record are
    /// durable.
    Persisted {
        /// The action's token.
        token: IoToken,
    },
    /// A `Persist` failed: the device would not flush, or the record
    /// would not be written. What the node's durable state is can no longer
    /// be known, so the node stops (see [`Node::has_failed`]).
    ///
    /// [`Node::has_failed`]: crate::core::Node::has_failed
    PersistFailed {
        /// The action's token.
        token: IoToken,
    },
    /// A link (handshake done) to `peer` is open.
    LinkUp {
        /// The other end.
        peer: NodeId,
        /// The connection.
        link: LinkId,
        /// Who opened it.
        direction: LinkDirection,
    },
    /// A link died (reset, timeout, closed by either side).
    LinkDown {
        /// The other end.
        peer: NodeId,
        /// The connection.
        link: LinkId,
    },
    /// A frame arrived on `link`, sent in `epoch`.
    Received {
        /// The sender.
        peer: NodeId,
        /// The connection.
        link: LinkId,
        /// The sender's epoch (the envelope).
        epoch: Epoch,
        /// The frame.
        frame: Frame<P>,
    },
    /// The control plane asks this node to become primary in `epoch`, a
    /// number it has never handed out before.
    Promote {
        /// The new epoch.
        epoch: Epoch,
    },
    /// The control plane asks the serving primary to change the membership
    /// (add or remove a copy, change a copy's mode or the write quorum) in
    /// `epoch`, a number it has never handed out before. Ignored unless
    /// [`Node::can_reconfigure`](crate::core::Node::can_reconfigure) says
    /// it may be taken.
    Reconfigure {
        /// The new epoch the membership comes with.
        epoch: Epoch,
        /// The new membership (this node still its primary).
        membership: crate::core::Membership,
    },
    /// The control plane asks the serving primary to scrub: compare every
    /// region of its copy with each replica's (a pass; ignored while one
    /// runs, and by a node that does not serve).
    Scrub,
    /// Time passed (lag deadlines are checked on every event anyway).
    Tick,
    /// Rate-limit hook: the driver grants this many more resync regions.
    /// Only read when [`PrimaryLimits::resync_paced`](crate::core::PrimaryLimits) is set.
    ResyncCredit {
        /// Regions that may start.
        regions: u32,
    },
}

/// Something a state machine asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Write `data` at `range` of the local copy; answer with
    /// `LocalWriteDone`. `fua`: durable before completion.
    LocalWrite {
        /// Echo in the completion.
        token: IoToken,
        /// Where.
        range: ByteRange,
        /// What.
        data: P,
        /// Force unit access.
        fua: bool,
    },
    /// Read `range` of the local copy; answer with `LocalReadDone`.
    LocalRead {
        /// Echo in the completion.
        token: IoToken,
        /// Where.
        range: ByteRange,
    },
    /// Make every completed local write durable (a device flush), then write
    /// `record` durably; answer with `Persisted`. Nothing that depends on it
    /// happens before.
    Persist {
        /// Echo in the completion.
        token: IoToken,
        /// The whole durable record.
        record: DurableRecord,
    },
    /// Keep `standing` where the next start of this process finds it
    /// (`Node::recover`'s `noted`) before carrying out any later action. It
    /// must survive the process (a kill), not a power loss, and cost next to
    /// nothing: keeld stores it in a memory-mapped file (the page cache
    /// outlives the process). A replica notes what it reports as applied
    /// before acknowledging it: its record, written only at each persist,
    /// would under-report writes it acknowledged, and an election that
    /// trusted the record after a kill could overlook them.
    Note {
        /// The standing to keep.
        standing: Standing,
    },
    /// Send `frame` on `link`, stamped with `epoch`.
    Send {
        /// The receiver.
        peer: NodeId,
        /// The connection.
        link: LinkId,
        /// The envelope's epoch.
        epoch: Epoch,
        /// The frame.
        frame: Frame<P>,
    },
    /// Close `link` (after the frames already sent on it).
    CloseLink {
        /// The other end.
        peer: NodeId,
        /// The connection.
        link: LinkId,
    },
    /// Finish a host command.
    CompleteHost {
        /// The command.
        id: HostOpId,
        /// How it ended.
        status: HostStatus,
    },
    /// Finish a degraded read with its data (read from a replica).
    CompleteRead {
        /// The command.
        id: HostOpId,
        /// The range's bytes.
        data: P,
    },
}
