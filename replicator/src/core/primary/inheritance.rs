//! Writes a primary inherits: those acknowledged to the host before its
//! epoch, by an earlier primary (or by itself in an earlier epoch).
//!
//! The election makes sure the new primary holds each of them, and its
//! activation (a device flush) makes them durable on its own copy. That is
//! one copy. A host flush promises more: every write completed before it is
//! durable on a write quorum, whichever primary completed it (a multipath
//! host flushes through the path it has now, not the one that completed the
//! write). An inherited write acknowledged without FUA may be volatile on
//! every other copy that applied it, or missing there (in flight to a
//! replica when the old primary died), so a flush completes only once a
//! write quorum of copies holds the inheritance durably. A replica counts
//! once it has:
//!
//! - accepted the epoch reporting a consistent standing at or beyond every
//!   standing the election heard: it holds every inherited write, and its
//!   acceptance is acknowledged after a device flush; or
//! - finished a resync in this epoch (`End` acknowledged durably): it holds
//!   everything this copy held.
//!
//! Without the rule a flush through a freshly elected primary completed
//! with the inherited writes durable on that primary alone; a power loss of
//! the former primary then let it win an election over the copies that held
//! them (long sim seed 1219741, docs/replication-design.md).

use super::Primary;
use crate::core::ids::Position;
use crate::core::record::Standing;
use crate::wire::NodeId;

impl<P: Clone> Primary<P> {
    /// The election is won: every write acknowledged before this epoch is
    /// at or below the newest standing heard. Copies that reported a
    /// consistent standing at or beyond it hold the inheritance already.
    pub(super) fn inheritance_bound_decided(&mut self) {
        let bound = self
            .standings
            .values()
            .map(|s| s.applied)
            .max()
            .unwrap_or(Position::ZERO);
        self.inherited_bound = Some(bound);
        let holders: Vec<NodeId> = self
            .standings
            .iter()
            .filter(|(node, s)| **node != self.me && Self::holds_inheritance(s, bound))
            .map(|(node, _)| *node)
            .collect();
        self.inheritance_on.extend(holders);
    }

    /// `peer` accepted the epoch on a new link after the election was
    /// decided: it holds the inheritance if its standing covers the bound.
    /// Otherwise it must earn it again with a resync, whatever it held
    /// before (its device may have been replaced, or a power loss taken
    /// it back into the middle of a resync).
    pub(super) fn inheritance_reported(&mut self, peer: NodeId, standing: Standing) {
        let Some(bound) = self.inherited_bound else {
            return; // The election will look at its standing.
        };
        if Self::holds_inheritance(&standing, bound) {
            self.inheritance_on.insert(peer);
        } else {
            self.inheritance_on.remove(&peer);
        }
    }

    /// `peer` finished a resync in this epoch, durably.
    pub(super) fn inheritance_resynced(&mut self, peer: NodeId) {
        self.inheritance_on.insert(peer);
    }

    /// Whether a write quorum holds every inherited write durably: until
    /// then no host flush completes.
    pub(super) fn inheritance_is_durable(&self) -> bool {
        self.quorum.reached(&self.inheritance_on)
    }

    fn holds_inheritance(standing: &Standing, bound: Position) -> bool {
        standing.consistent && standing.applied >= bound
    }
}
