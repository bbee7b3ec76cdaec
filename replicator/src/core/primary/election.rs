//! Taking over a volume: the new epoch must reach a fence quorum before the
//! promoted node serves, and it serves only if it holds every write any of
//! those copies may hold acknowledged.
//!
//! Why this is enough: a write acknowledged in an earlier epoch is durable
//! on W sync copies, and the fence quorum (`sync - W + 1` copies at least)
//! meets every set of W, so some accepting copy reports a standing at or
//! beyond the write's position (or is the old primary, whose standing claims
//! all of its epoch). A candidate whose own consistent standing is at least
//! every reported one therefore holds the write. And once a fence quorum is
//! in the new epoch, the old primary can no longer gather W acknowledgements
//! from copies still in its epoch.

use super::{Phase, Primary};
use crate::core::ids::Time;
use crate::core::io::Action;
use crate::core::primary::peer::LinkPhase;
use crate::core::record::Standing;
use crate::wire::{Epoch, NodeId};

impl<P: Clone + PartialEq> Primary<P> {
    /// `peer` accepted the epoch, reporting how up to date it was.
    pub(super) fn accepted_epoch(
        &mut self,
        now: Time,
        peer: NodeId,
        standing: Standing,
        out: &mut Vec<Action<P>>,
    ) {
        // Copies this primary (or, as a former primary restarting, its
        // inherited bitmap) tracks keep their dirty sets; any other copy
        // may differ anywhere and gets a full copy.
        // (A copy that accepted any later epoch may have been written by
        // that epoch's primary, whatever its `synced` says.)
        let tracked = (self.held_epochs.contains(&standing.synced)
            && self.held_epochs.contains(&standing.epoch))
            || (self.prior.is_primary_of_own_epoch()
                && standing.synced == self.prior.epoch
                && standing.epoch == self.prior.epoch);
        if !tracked {
            for region in self.geometry.regions() {
                self.mark_dirty(peer, region);
            }
            // Its earlier acknowledgements may be void (a replaced device
            // comes back blank): pending writes must not count on them.
            self.forget_durability_on(peer);
        }
        if let Some(link) = self.link_mut(peer) {
            link.phase = LinkPhase::Accepted;
        }
        self.inheritance_reported(peer, standing);
        // A blank copy (new, or its device replaced) fences the old epoch
        // but remembers nothing it acknowledged: it cannot stand in the
        // quorum whose standings must reveal every acknowledged write.
        let remembers = standing.synced != Epoch(0);
        if self.phase == Phase::Electing
            && self.fences().iter().any(|(sync, _)| sync.contains(&peer))
        {
            self.fenced.insert(peer);
            if remembers {
                self.standings.insert(peer, standing);
            }
            self.decide_election(now, out);
        }
    }

    /// The sets of sync copies whose fence quorums the election must hear,
    /// each with its quorum: the membership's and, during a change that
    /// raised W or removed a sync copy at the same W, the old one's (copies
    /// leaving included; `Membership::needs_previous_fence`). Other changes
    /// need only the new one's: it meets every old write quorum, and a
    /// leaving copy, which cannot be promoted, must not hold up every
    /// candidate with a standing none of them reaches.
    fn fences(&self) -> Vec<(Vec<NodeId>, usize)> {
        let mut fences = vec![self.membership.fence()];
        if let Some(t) = &self.transition {
            if t.new.needs_previous_fence() {
                fences.push(t.old.fence());
            }
        }
        fences
    }

    /// Once a fence quorum of sync copies (this one included) has accepted
    /// the epoch — of each membership, during a change: serve if this copy
    /// holds everything they may hold acknowledged, otherwise retire and
    /// leave the volume to a better candidate.
    pub(super) fn decide_election(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        if self.phase != Phase::Electing {
            return;
        }
        // A copy that lost power may have acknowledged writes as applied
        // and lost them: its standing can understate them, so it does not
        // stand in the fence quorum — unless every sync member reported, in
        // which case no standing is missing (and a write every copy lost to
        // power losses was lost by contract, no flush having covered it).
        let heard = |(sync, quorum): &(Vec<NodeId>, usize)| {
            let remembering = sync
                .iter()
                .filter(|n| self.standings.get(n).is_some_and(|s| !s.amnesiac))
                .count();
            let everyone = sync.iter().all(|n| self.fenced.contains(n));
            remembering >= *quorum || everyone
        };
        if !self.fences().iter().all(heard) {
            return;
        }
        let own = self.prior;
        let holds_everything =
            own.consistent && self.standings.values().all(|s| s.applied <= own.applied);
        if holds_everything {
            self.inheritance_bound_decided();
            // A deposed primary cut off from the copies may serve reads
            // until its lease runs out (`lease`).
            if self.a_lease_may_be_held() {
                self.serve_from = now.saturating_add(self.limits.read_lease);
            }
            self.phase = Phase::Activating;
        } else {
            self.retire(out);
        }
    }
}
