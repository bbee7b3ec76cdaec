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
    /// The epoch this membership was introduced in (0: the volume's first).
    /// A promotion keeps it; a membership change sets it to its epoch. A
    /// copy refuses an epoch that comes with an older membership than its
    /// own: a candidate that missed a change cannot be elected under the
    /// membership it still holds.
    pub since: Epoch,
}

impl Membership {
    /// Whether the rules hold that the wire's `EpochChange` also checks:
    /// node ids unique, the primary a sync member, 1 <= W <= sync copies.
    pub fn is_valid(&self) -> bool {
        let unique = self
            .members
            .iter()
            .enumerate()
            .all(|(i, m)| !self.members.iter().skip(i + 1).any(|o| o.node == m.node));
        let primary_is_sync = self.mode_of(self.primary) == Some(ReplicationMode::Sync);
        let w = usize::from(self.write_quorum);
        unique
            && primary_is_sync
            && self.members.len() <= MAX_COPIES
            && w >= 1
            && w <= self.sync_count()
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
        let sync = self.sync_count();
        let w = usize::from(self.write_quorum);
        sync.saturating_sub(w).saturating_add(1)
    }

    /// The same membership with `node` as primary.
    pub fn with_primary(&self, node: NodeId) -> Membership {
        Membership {
            primary: node,
            ..self.clone()
        }
    }
}
