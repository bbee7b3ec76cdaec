//! What a node keeps durably besides the volume data.

use crate::core::ids::Position;
use crate::core::membership::Membership;
use crate::wire::{Epoch, RegionIndex};

/// How up to date a copy is, as it reports itself when it accepts a new
/// epoch. The election compares standings to pick only a copy that holds
/// every acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    /// The epoch the copy had accepted.
    pub epoch: Epoch,
    /// The epoch whose primary last brought this copy to consistency (a
    /// finished resync, or serving as that primary). A primary restarting
    /// after a crash resyncs from its bitmap only the copies it had itself
    /// synced; any other gets a full copy.
    pub synced: Epoch,
    /// If `consistent`: the copy holds every acknowledged write up to here.
    /// Otherwise an upper bound on what it may hold.
    pub applied: Position,
    /// False between a resync's `Begin` and its `End` (and for a copy never
    /// synced): its data is a mixture and it must not be promoted.
    pub consistent: bool,
    /// The copy restarted after a power loss (its note of what it had
    /// acknowledged did not survive) and no primary has brought it
    /// consistent since: it may have acknowledged writes as applied that
    /// it lost, so `applied` may understate them. Its standing does not
    /// count toward a fence quorum unless every sync member reports.
    pub amnesiac: bool,
}

impl Standing {
    /// A copy that has never held data.
    pub const BLANK: Standing = Standing {
        epoch: Epoch(0),
        synced: Epoch(0),
        applied: Position::ZERO,
        consistent: false,
        amnesiac: false,
    };

    /// The latest epoch whose primary's writes this copy applied as a
    /// replica: that primary's membership was in force then (it was
    /// elected, and wrote), and this copy took it, or a later one since.
    /// Its own epochs as a primary do not count (`applied` then claims the
    /// whole epoch, written or not): a candidate whose membership lets it
    /// be elected alone would otherwise outrank every other copy by being
    /// elected, and the copies refuse each other for ever.
    pub fn replicated_epoch(&self) -> Epoch {
        if self.applied.index == u64::MAX {
            Epoch(0)
        } else {
            self.applied.epoch
        }
    }

    /// Whether this is the standing of the primary of its epoch.
    pub fn is_primary_of_own_epoch(&self) -> bool {
        self.consistent && self.applied == Position::all_of(self.epoch)
    }
}

/// A node's durable metadata (its superblock), written whole by
/// [`Action::Persist`](crate::core::Action::Persist) after the data written
/// before it is durable. The state machines never assume it was written
/// until `Persisted` says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableRecord {
    /// Membership of `standing.epoch`.
    pub membership: Membership,
    /// How up to date the local copy is.
    pub standing: Standing,
    /// The write-intent bitmap of a primary: every region some copy may
    /// lack. Empty on a replica.
    pub intent: Vec<RegionIndex>,
}
