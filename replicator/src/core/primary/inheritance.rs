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
//! - accepted the epoch with a consistent standing below the bound, when
//!   this copy (promoted from a replica without a restart) still remembers
//!   the regions of every write it applied above that standing
//!   (`RecentWrites`): once those regions' copies are acknowledged durably
//!   (the resync copies them first), it holds every inherited write; or
//! - finished a resync in this epoch (`End` acknowledged durably): it holds
//!   everything this copy held.
//!
//! The third way is what keeps flushes moving after a failover: the copy
//! that lost the election is usually a few writes behind the winner, and a
//! copy this primary did not track gets a full resync, which on a large
//! volume takes long.
//!
//! Without the rule a flush through a freshly elected primary completed
//! with the inherited writes durable on that primary alone; a power loss of
//! the former primary then let it win an election over the copies that held
//! them (long sim seed 1219741, docs/replication-design.md).

use std::collections::BTreeSet;

use super::Primary;
use crate::core::ids::Position;
use crate::core::record::Standing;
use crate::wire::{NodeId, RegionIndex};

/// What a copy lacks of the inheritance, as far as this primary can tell.
enum Lacks {
    Nothing,
    /// At most these regions' inherited writes.
    Regions(BTreeSet<RegionIndex>),
    /// Anything: it must finish a resync.
    Unknown,
}

impl<P: Clone + PartialEq> Primary<P> {
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
        let reported: Vec<(NodeId, Standing)> = self
            .standings
            .iter()
            .filter(|(node, _)| **node != self.me)
            .map(|(node, s)| (*node, *s))
            .collect();
        for (peer, standing) in reported {
            self.inheritance_reported(peer, standing);
        }
    }

    /// `peer` accepted the epoch with `standing` (during the election, or
    /// on a new link after it was decided): whether it holds the
    /// inheritance, or which regions it still needs, is judged again from
    /// that standing, whatever it held before (its device may have been
    /// replaced, or a power loss taken it back into the middle of a
    /// resync).
    pub(super) fn inheritance_reported(&mut self, peer: NodeId, standing: Standing) {
        let Some(bound) = self.inherited_bound else {
            return; // The election will look at its standing.
        };
        self.inheritance_on.remove(&peer);
        self.inheritance_regions.remove(&peer);
        match self.lacks(&standing, bound) {
            Lacks::Nothing => {
                self.inheritance_on.insert(peer);
            }
            Lacks::Regions(regions) => {
                self.inheritance_regions.insert(peer, regions);
            }
            Lacks::Unknown => {}
        }
    }

    /// Regions the inheritance needs on `peer`, to copy before the others.
    pub(super) fn inheritance_regions_of(&self, peer: NodeId) -> Option<&BTreeSet<RegionIndex>> {
        self.inheritance_regions.get(&peer)
    }

    /// A copy of `region` to `peer` was acknowledged durably.
    pub(super) fn inheritance_region_copied(&mut self, peer: NodeId, region: RegionIndex) {
        let Some(regions) = self.inheritance_regions.get_mut(&peer) else {
            return;
        };
        regions.remove(&region);
        if regions.is_empty() {
            self.inheritance_regions.remove(&peer);
            self.inheritance_on.insert(peer);
        }
    }

    /// `peer` finished a resync in this epoch, durably.
    pub(super) fn inheritance_resynced(&mut self, peer: NodeId) {
        self.inheritance_regions.remove(&peer);
        self.inheritance_on.insert(peer);
    }

    /// Whether a write quorum holds every inherited write durably: until
    /// then no host flush completes.
    pub(super) fn inheritance_is_durable(&self) -> bool {
        self.quorum.reached(&self.inheritance_on)
    }

    /// What a copy reporting `standing` lacks of the writes up to `bound`:
    /// a consistent copy holds every acknowledged write up to its
    /// standing; above it, this copy's recent writes name the regions.
    fn lacks(&self, standing: &Standing, bound: Position) -> Lacks {
        if !standing.consistent {
            return Lacks::Unknown;
        }
        if standing.applied >= bound {
            return Lacks::Nothing;
        }
        match self.recent.regions_after(standing.applied) {
            Some(regions) if regions.is_empty() => Lacks::Nothing,
            Some(regions) => Lacks::Regions(regions),
            None => Lacks::Unknown,
        }
    }
}
