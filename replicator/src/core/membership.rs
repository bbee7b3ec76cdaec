//! Who holds copies of a volume, who is primary, and the quorums.

use crate::wire::{Epoch, NodeId, ReplicationMode, MAX_COPIES};

/// One copy of the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Node holding the copy.
    pub node: NodeId,
    /// Sync copies count toward the write quorum; async ones never do.
    pub mode: ReplicationMode,
}

/// The membership of one epoch: it travels with the epoch (`EpochChange`),
/// so a promoted replica knows the survivors and the quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Every copy, the primary's included; at most `MAX_COPIES`.
    pub members: Vec<Member>,
    /// The node serving as primary in this epoch.
    pub primary: NodeId,
    /// Copies (the primary's own included) durable before a host write is
    /// acknowledged: 1 to the number of sync copies.
    pub write_quorum: u8,
    /// The latest epoch this membership is known to have been in force in
    /// (0: the volume's first). A membership change sets it to the change's
    /// epoch; a promotion raises it to the epoch of the newest writes the
    /// candidate applied as a replica (made under it). A copy refuses an
    /// epoch that comes with other copies or W and an older `since` than
    /// its own membership's or its own such writes': a candidate that missed a change
    /// cannot be elected under the membership it still holds, and one
    /// holding a change that a later primary superseded (it never reached
    /// a write quorum; that primary was elected under the membership
    /// before it) cannot bring it back.
    pub since: Epoch,
    /// The membership this one replaced, while the change may not have
    /// reached a write quorum of its sync copies yet. Until it has, a copy
    /// that missed the change could still win an election under the old
    /// membership (alone, if its W is its number of sync copies), so every
    /// primary of this membership needs a write quorum of both for each
    /// write. It is durable and travels with the epoch: a node promoted
    /// mid-change inherits the requirement and finishes the change.
    pub previous: Option<Previous>,
}

/// The copies and write quorum of a membership that a change replaced
/// ([`Membership::previous`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// Every copy of the old membership.
    pub members: Vec<Member>,
    /// Its write quorum.
    pub write_quorum: u8,
    /// Its primary, the node that made the change: it wrote the new
    /// membership to its record before any copy heard of it, so it is one
    /// of the old sync copies that hold the change.
    pub primary: NodeId,
}

impl Previous {
    /// The copies and write quorum of `membership`.
    pub fn of(membership: &Membership) -> Previous {
        Previous {
            members: membership.members.clone(),
            write_quorum: membership.write_quorum,
            primary: membership.primary,
        }
    }

    /// The mode of `node`'s copy in the old membership, if it was a member.
    pub fn mode_of(&self, node: NodeId) -> Option<ReplicationMode> {
        self.members.iter().find(|m| m.node == node).map(|m| m.mode)
    }

    /// Ids unique, at most `MAX_COPIES`, 1 <= W <= sync copies, the
    /// primary a sync copy.
    pub fn is_valid(&self) -> bool {
        copies_are_valid(&self.members, self.write_quorum)
            && self.mode_of(self.primary) == Some(ReplicationMode::Sync)
    }

    /// The old membership's sync copies and fence quorum.
    pub fn fence(&self) -> (Vec<NodeId>, usize) {
        fence_of(&self.members, self.write_quorum)
    }
}

/// Node ids unique, at most `MAX_COPIES` copies, 1 <= W <= sync copies.
fn copies_are_valid(members: &[Member], write_quorum: u8) -> bool {
    let unique = members
        .iter()
        .enumerate()
        .all(|(i, m)| !members.iter().skip(i + 1).any(|o| o.node == m.node));
    let sync = members
        .iter()
        .filter(|m| m.mode == ReplicationMode::Sync)
        .count();
    let w = usize::from(write_quorum);
    unique && members.len() <= MAX_COPIES && w >= 1 && w <= sync
}

/// The sync copies of `members` and how many of them a fence quorum takes
/// (`sync - W + 1`): every such set meets every write quorum.
fn fence_of(members: &[Member], write_quorum: u8) -> (Vec<NodeId>, usize) {
    let sync: Vec<NodeId> = members
        .iter()
        .filter(|m| m.mode == ReplicationMode::Sync)
        .map(|m| m.node)
        .collect();
    let quorum = sync
        .len()
        .saturating_sub(usize::from(write_quorum))
        .saturating_add(1);
    (sync, quorum)
}

impl Membership {
    /// Whether the rules hold that the wire's `EpochChange` also checks:
    /// node ids unique, the primary a sync member, 1 <= W <= sync copies
    /// (in the previous membership too, if any).
    pub fn is_valid(&self) -> bool {
        let primary_is_sync = self.mode_of(self.primary) == Some(ReplicationMode::Sync);
        copies_are_valid(&self.members, self.write_quorum)
            && primary_is_sync
            && self.previous.as_ref().is_none_or(Previous::is_valid)
    }

    /// Whether `other` has the same copies, modes, primary, W and `since`,
    /// whatever either's previous membership: the same epoch's membership
    /// before and after its change reached enough copies.
    pub fn same_as(&self, other: &Membership) -> bool {
        self.same_copies(other) && self.primary == other.primary && self.since == other.since
    }

    /// Whether `other` has the same copies, modes and W, whichever node is
    /// its primary, since when, and whatever either's previous membership:
    /// an election under either hears the same fence quorums.
    pub fn same_copies(&self, other: &Membership) -> bool {
        self.members == other.members && self.write_quorum == other.write_quorum
    }

    /// The mode of `node`'s copy, if it is a member.
    pub fn mode_of(&self, node: NodeId) -> Option<ReplicationMode> {
        self.members.iter().find(|m| m.node == node).map(|m| m.mode)
    }

    /// Number of sync copies.
    pub fn sync_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.mode == ReplicationMode::Sync)
            .count()
    }

    /// Sync copies that must accept a new epoch, and report a standing,
    /// before its primary serves: `sync - W + 1`, so that this set meets
    /// every set of W sync copies. Then a deposed primary cannot gather W
    /// acknowledgements from copies still in its epoch, and the standings
    /// reveal every acknowledged write. (More is not needed for safety: the
    /// new primary needs W copies for each write anyway.)
    pub fn fence_quorum(&self) -> usize {
        self.fence().1
    }

    /// Its sync copies and fence quorum.
    pub fn fence(&self) -> (Vec<NodeId>, usize) {
        fence_of(&self.members, self.write_quorum)
    }

    /// Whether an election under this membership must also hear a fence
    /// quorum of the previous one. A fence quorum of the new membership
    /// meets every write quorum of the old one when W' <= W - (old sync
    /// copies removed or made async): a write quorum of the old one avoids
    /// the new sync copies as far as it can by taking the old sync copies
    /// that are no longer sync, and what is left of it must still be W'.
    /// Raising W breaks that, and a primary elected under the old
    /// membership while the change was reaching copies may have written
    /// where the new fence does not look.
    pub fn needs_previous_fence(&self) -> bool {
        self.previous.as_ref().is_some_and(|old| {
            usize::from(self.write_quorum) + self.sync_dropped_from(old)
                > usize::from(old.write_quorum)
        })
    }

    /// How many of `old`'s sync copies this membership removed or made
    /// async.
    pub fn sync_dropped_from(&self, old: &Previous) -> usize {
        let still_sync = |n: NodeId| self.mode_of(n) == Some(ReplicationMode::Sync);
        old.members
            .iter()
            .filter(|m| m.mode == ReplicationMode::Sync && !still_sync(m.node))
            .count()
    }

    /// The same membership with `node` as primary.
    pub fn with_primary(&self, node: NodeId) -> Membership {
        Membership {
            primary: node,
            ..self.clone()
        }
    }
}
