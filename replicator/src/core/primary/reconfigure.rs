//! Changing the membership while serving: add or remove a copy, change a
//! copy's mode or the write quorum.
//!
//! A membership belongs to an epoch, so a change takes a new epoch, and it
//! must stay safe whichever membership a later election runs under: an
//! election under membership M hears from M's fence quorum, which reveals
//! every write on a write quorum of M. So, in two stages:
//!
//! 1. Preparing (nothing on the wire changes yet): host writes need a write
//!    quorum of the old and of the new membership (joint quorum, as Raft
//!    does for its configuration changes); added copies are linked in the
//!    old epoch and copied in full. It ends when enough sync copies of the
//!    new membership are complete (streaming, lacking no region, every
//!    frame from before the change durable) to make a write quorum of it
//!    with this one: every write acknowledged so far is then on a write
//!    quorum of the new membership too.
//! 2. Recording: the primary writes the new epoch and membership to its
//!    record first (a copy that took them must never find the primary,
//!    which holds every write, with only the older ones).
//! 3. Announced: it sends `EpochChange` in sequence on every link (removed
//!    copies included). A membership carries the epoch it was introduced in
//!    (`Membership::since`) and a copy refuses an epoch that comes with an
//!    older membership than its own, so a candidate that missed the change
//!    cannot be elected under the old membership once enough copies took
//!    the new one. Writes still need the joint quorum until a write quorum
//!    of the old sync copies took it: every old fence quorum then includes
//!    one of them. Meanwhile a node promoted from a record holding the
//!    change elects itself under both memberships when the change raised W
//!    (`Membership::needs_previous_fence`; `election.rs`).

use std::collections::{BTreeMap, BTreeSet};

use super::{Phase, Primary};
use crate::core::ids::{LinkId, Position, Time};
use crate::core::io::Action;
use crate::core::membership::{Member, Membership, Previous};
use crate::core::primary::peer::{LinkPhase, Peer};
use crate::core::record::Standing;
use crate::wire::{Epoch, NodeId, ReplicationMode, Sequence};

/// A membership change in progress.
#[derive(Debug, Clone)]
pub(super) struct Transition {
    /// The copies and write quorum before the change.
    pub(super) old: Previous,
    /// The membership after it.
    pub(super) new: Membership,
    /// The epoch the new membership comes with.
    pub(super) epoch: Epoch,
    pub(super) stage: Stage,
}

#[derive(Debug, Clone)]
pub(super) enum Stage {
    /// Bringing the new membership's sync copies up to date. Per copy
    /// linked when the change began: that link and the last sequence sent
    /// or queued on it, which must become durable.
    Preparing {
        marks: BTreeMap<NodeId, (LinkId, Sequence)>,
    },
    /// Writing the new epoch and membership to this node's record before
    /// any copy hears of them: a copy that took them must never find this
    /// node, the one that holds every write, with only the older ones.
    Recording,
    /// The new epoch is sent; copies that took it durably.
    Announced { accepted: BTreeSet<NodeId> },
}

/// Why a primary refuses a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReconfigureRefusal {
    /// Only a serving primary changes the membership.
    #[error("this node is not the serving primary")]
    NotServing,
    /// The new epoch must be later than the current one.
    #[error("the new epoch is not later than the current one")]
    StaleEpoch,
    /// A previous change has not reached enough copies yet.
    #[error("a membership change is still in progress")]
    InProgress,
    /// The primary must stay the primary (and a sync copy).
    #[error("the primary must stay the primary and a sync copy")]
    PrimaryChanged,
    /// Duplicate copies, too many copies, or a write quorum outside 1..=sync.
    #[error("invalid membership (duplicate node, too many copies, or a write quorum outside 1 to the sync copies)")]
    Invalid,
    /// Nothing would change.
    #[error("the membership is unchanged")]
    Unchanged,
    /// Sync copies removed or made async without lowering W by as many:
    /// such a change must not raise W as well (see `check_reconfigure`).
    #[error("removing sync copies (or making them async) must lower the write quorum by as many; raise it in a separate change")]
    QuorumTooHigh,
}

/// Host writes need a write quorum of the current membership and, during a
/// transition, of the old one too. The local copy counts where it is a sync
/// copy (always in the current membership; a node promoted mid-change may
/// not have been one in the old).
#[derive(Debug, Clone)]
pub(super) struct Quorum {
    /// Per membership: its sync replicas (the primary excluded), W, and
    /// whether the local copy is one of its sync copies.
    rules: Vec<(Vec<NodeId>, usize, bool)>,
    /// Test-only mutation: the local copy alone is a quorum.
    local_only: bool,
}

impl Quorum {
    /// A placeholder until `refresh_quorum` runs.
    pub(super) fn none() -> Quorum {
        Quorum {
            rules: Vec::new(),
            local_only: false,
        }
    }

    fn rule(members: &[Member], write_quorum: u8, me: NodeId) -> (Vec<NodeId>, usize, bool) {
        let is_sync = |m: &&Member| m.mode == ReplicationMode::Sync;
        let sync = members
            .iter()
            .filter(is_sync)
            .filter(|m| m.node != me)
            .map(|m| m.node)
            .collect();
        let local = members.iter().filter(is_sync).any(|m| m.node == me);
        (sync, usize::from(write_quorum), local)
    }

    /// Whether the local copy and the replicas in `on` make a quorum.
    pub(super) fn reached(&self, on: &BTreeSet<NodeId>) -> bool {
        self.reached_by(|n| on.contains(&n))
    }

    /// Whether the local copy and the replicas for which `counts` holds
    /// make a quorum.
    pub(super) fn reached_by(&self, counts: impl Fn(NodeId) -> bool) -> bool {
        self.local_only
            || self.rules.iter().all(|(sync, w, local)| {
                let replicas = sync.iter().filter(|n| counts(**n)).count();
                usize::from(*local) + replicas >= *w
            })
    }
}

impl<P: Clone + PartialEq> Primary<P> {
    /// The write quorum host writes need now (kept in `self.quorum`, off
    /// the per-acknowledgement path).
    pub(super) fn refresh_quorum(&mut self) {
        // During a change the current membership is the old one until it is
        // announced and the new one after: the two rules cover it.
        let rules = match &self.transition {
            Some(t) => {
                debug_assert!(
                    self.membership.same_as(&t.new)
                        || (self.membership.members == t.old.members
                            && self.membership.write_quorum == t.old.write_quorum),
                    "the current membership is the old or the new one of its change"
                );
                vec![
                    Quorum::rule(&t.old.members, t.old.write_quorum, self.me),
                    Quorum::rule(&t.new.members, t.new.write_quorum, self.me),
                ]
            }
            None => {
                let m = &self.membership;
                vec![Quorum::rule(&m.members, m.write_quorum, self.me)]
            }
        };
        #[cfg(test)]
        let local_only = self.limits.mutation_ack_after_local_only;
        #[cfg(not(test))]
        let local_only = false;
        self.quorum = Quorum { rules, local_only };
    }

    /// Whether this primary would take `membership` in `epoch` now.
    pub fn check_reconfigure(
        &self,
        epoch: Epoch,
        membership: &Membership,
    ) -> Result<(), ReconfigureRefusal> {
        if self.phase != Phase::Serving {
            return Err(ReconfigureRefusal::NotServing);
        }
        if epoch <= self.epoch {
            return Err(ReconfigureRefusal::StaleEpoch);
        }
        if self.transition.is_some() {
            return Err(ReconfigureRefusal::InProgress);
        }
        if membership.primary != self.me
            || membership.mode_of(self.me) != Some(ReplicationMode::Sync)
        {
            return Err(ReconfigureRefusal::PrimaryChanged);
        }
        if !membership.is_valid() {
            return Err(ReconfigureRefusal::Invalid);
        }
        let same = |a: &Membership, b: &Membership| {
            a.write_quorum == b.write_quorum
                && a.members.len() == b.members.len()
                && a.members.iter().all(|m| b.mode_of(m.node) == Some(m.mode))
        };
        if same(membership, &self.membership) {
            return Err(ReconfigureRefusal::Unchanged);
        }
        // A change that raises W makes an election mid-change hear the old
        // fence quorum too (`Membership::needs_previous_fence`). One that
        // also drops a sync copy would make that copy's standing count in
        // elections it cannot stand in: if it holds the newest writes (of
        // a primary elected under the old membership meanwhile), no
        // candidate could ever be elected. So sync copies leave only with
        // W lowered by as many, and W rises in a change of its own.
        let old = Previous::of(&self.membership);
        let dropped = membership.sync_dropped_from(&old);
        let w = usize::from(membership.write_quorum);
        if dropped > 0 && w + dropped > usize::from(old.write_quorum) {
            return Err(ReconfigureRefusal::QuorumTooHigh);
        }
        Ok(())
    }

    /// Starts changing to `membership` in `epoch` (see the module
    /// comment); does nothing if [`Self::check_reconfigure`] refuses it.
    pub(super) fn reconfigure(
        &mut self,
        epoch: Epoch,
        mut membership: Membership,
        out: &mut Vec<Action<P>>,
    ) {
        if self.check_reconfigure(epoch, &membership).is_err() {
            return;
        }
        membership.since = epoch;
        debug_assert!(
            self.membership.previous.is_none(),
            "a previous membership is kept only while a change is in progress"
        );
        membership.previous = Some(Previous::of(&self.membership));
        // A copy added back while it is still leaving (linked, not yet
        // through the epoch that removed it) starts over as a new one.
        let returning: Vec<NodeId> = membership
            .members
            .iter()
            .filter(|m| self.peers.get(&m.node).is_some_and(|p| p.leaving))
            .map(|m| m.node)
            .collect();
        for node in returning {
            self.forget_peer(node, out);
        }
        // Added copies get a full copy: whatever they hold, nothing tracked
        // what they missed (a copy removed and added again included). They
        // are linked in the old epoch meanwhile.
        let added: Vec<(NodeId, ReplicationMode)> = membership
            .members
            .iter()
            .filter(|m| m.node != self.me && !self.peers.contains_key(&m.node))
            .map(|m| (m.node, m.mode))
            .collect();
        for (node, mode) in added {
            for region in self.geometry.regions() {
                self.mark_dirty(node, region);
            }
            let peer = Peer {
                mode,
                link: None,
                leaving: false,
            };
            self.peers.insert(node, peer);
        }
        let marks = self
            .peers
            .iter()
            .filter_map(|(n, p)| {
                let link = p.link.as_ref()?;
                let last = Sequence(link.next_seq.0.saturating_sub(1));
                Some((*n, (link.id, last)))
            })
            .collect();
        self.transition = Some(Transition {
            old: Previous::of(&self.membership),
            new: membership,
            epoch,
            stage: Stage::Preparing { marks },
        });
        self.refresh_quorum();
    }

    /// Whether `peer` holds, durably, every write acknowledged before the
    /// change began and every one since: streaming, lacking no region, and
    /// everything sent on its link before the change is durable.
    fn is_complete(&self, peer: NodeId, marks: &BTreeMap<NodeId, (LinkId, Sequence)>) -> bool {
        let Some(link) = self.peers.get(&peer).and_then(|p| p.link.as_ref()) else {
            return false;
        };
        if link.phase != LinkPhase::Streaming || self.bitmap.has_dirty(peer) {
            return false;
        }
        match marks.get(&peer) {
            // A link opened since: whatever it missed is dirty.
            Some((id, _)) if *id != link.id => true,
            None => true,
            Some((_, last)) => {
                let pending = |seq: Sequence| seq <= *last;
                !link.in_flight.iter().any(|s| pending(s.seq))
                    && !link
                        .queued
                        .iter()
                        .any(|q| q.frame.sequence().is_some_and(pending))
            }
        }
    }

    /// The membership and standing the next persist writes: the new ones
    /// once the change is being recorded.
    pub(super) fn record_to_persist(&self) -> (Membership, Standing) {
        match &self.transition {
            Some(t) if matches!(t.stage, Stage::Recording) => {
                let standing = Standing {
                    epoch: t.epoch,
                    synced: t.epoch,
                    applied: Position::all_of(t.epoch),
                    consistent: true,
                    amnesiac: false,
                };
                (t.new.clone(), standing)
            }
            _ => (self.membership.clone(), self.standing()),
        }
    }

    /// Once the record holds the new epoch: announce it.
    pub(super) fn announce_if_durable(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        let recorded = self.transition.as_ref().is_some_and(|t| {
            matches!(t.stage, Stage::Recording) && self.durable.standing.epoch == t.epoch
        });
        if recorded {
            self.announce(now, out);
        }
    }

    /// Takes the new epoch and membership and sends them to every linked
    /// copy, after whatever was sent to it in the old epoch (links opened
    /// from now on get them first).
    fn announce(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        let Some(t) = self.transition.as_mut() else {
            return;
        };
        t.stage = Stage::Announced {
            accepted: BTreeSet::new(),
        };
        let (epoch, membership) = (t.epoch, t.new.clone());
        self.membership = membership;
        self.epoch = epoch;
        self.refresh_quorum();
        if self.held_epochs.len() >= super::MAX_HELD_EPOCHS {
            self.held_epochs.remove(0);
        }
        self.held_epochs.push(epoch);
        let nodes: Vec<NodeId> = self.peers.keys().copied().collect();
        for node in nodes {
            let mode = self.membership.mode_of(node);
            if mode.is_none() {
                // Removed: it only gets the new epoch, then is forgotten.
                self.bitmap.forget(node);
            }
            if let Some(peer) = self.peers.get_mut(&node) {
                match mode {
                    Some(mode) => peer.mode = mode,
                    None => peer.leaving = true,
                }
            }
        }
        let linked: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.link.as_ref().is_some_and(|l| l.next_seq > Sequence(1)))
            .map(|(n, _)| *n)
            .collect();
        for peer in linked {
            self.send_epoch_change(now, peer, false, out);
        }
    }

    /// `peer` durably took the membership of `epoch` (a mid-stream change,
    /// or the `EpochChange` opening a link). A copy leaving the volume is
    /// done.
    pub(super) fn reconfigure_accepted(
        &mut self,
        peer: NodeId,
        epoch: Epoch,
        out: &mut Vec<Action<P>>,
    ) {
        if let Some(t) = self.transition.as_mut() {
            if let (true, Stage::Announced { accepted }) = (epoch == t.epoch, &mut t.stage) {
                accepted.insert(peer);
            }
        }
        // The change may have ended already (it waits only for the old
        // write quorum); a leaving copy is done once it took this epoch.
        if epoch == self.epoch && self.peers.get(&peer).is_some_and(|p| p.leaving) {
            self.forget_peer(peer, out);
        }
    }

    /// Drops a copy that left the volume, closing its link.
    pub(super) fn forget_peer(&mut self, peer: NodeId, out: &mut Vec<Action<P>>) {
        self.out_of_date(peer, out);
        self.peers.remove(&peer);
        self.bitmap.forget(peer);
    }

    /// Whether the persist of the record that takes the new epoch is due.
    pub(super) fn reconfigure_wants_persist(&self) -> bool {
        self.phase == Phase::Serving
            && self.transition.as_ref().is_some_and(|t| {
                matches!(t.stage, Stage::Recording) && self.durable.standing.epoch != t.epoch
            })
    }

    /// Moves the change on: records it once enough new sync copies are
    /// complete (`announce_if_durable` announces it once recorded); ends it
    /// once a write quorum of the old sync copies (this one included) took
    /// the new epoch.
    pub(super) fn check_transition(&mut self, out: &mut Vec<Action<P>>) {
        if self.phase != Phase::Serving {
            return;
        }
        let Some(t) = &self.transition else {
            return;
        };
        match &t.stage {
            Stage::Preparing { marks } => {
                let complete = t
                    .new
                    .members
                    .iter()
                    .filter(|m| m.node != self.me && m.mode == ReplicationMode::Sync)
                    .filter(|m| self.is_complete(m.node, marks))
                    .count();
                if 1 + complete >= usize::from(t.new.write_quorum) {
                    if let Some(t) = self.transition.as_mut() {
                        t.stage = Stage::Recording;
                    }
                }
            }
            Stage::Recording => {}
            Stage::Announced { accepted } => {
                let old_sync = |n: &NodeId| t.old.mode_of(*n) == Some(ReplicationMode::Sync);
                let local = usize::from(old_sync(&self.me));
                let taken = local + accepted.iter().filter(|n| old_sync(n)).count();
                if taken >= usize::from(t.old.write_quorum) {
                    self.end_transition(out);
                }
            }
        }
    }

    fn end_transition(&mut self, out: &mut Vec<Action<P>>) {
        self.transition = None;
        // From now on no election under the old membership can succeed:
        // the next persist and every `EpochChange` carry the new one alone.
        // (Copies that took it with the old one keep that until a later
        // epoch: a node promoted from such a record only waits, needlessly
        // but safely, for the old write quorum again.)
        self.membership.previous = None;
        self.refresh_quorum();
        // A leaving copy still linked keeps its link until it takes the epoch
        // that removed it (`reconfigure_accepted`) or the link goes: forgotten
        // now, it might never learn it left, and would start again as a
        // member (with W = 1 the change ends as soon as it is announced).
        let leaving: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.leaving && p.link.is_none())
            .map(|(n, _)| *n)
            .collect();
        for peer in leaving {
            self.forget_peer(peer, out);
        }
        // Writes that waited for the old quorum may be done now.
        let tail: Vec<u64> = self.tail.keys().copied().collect();
        for key in tail {
            self.check_tail(key);
        }
    }
}
