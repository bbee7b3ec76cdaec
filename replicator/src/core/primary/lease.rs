//! Read leases: a deposed primary must not serve stale reads.
//!
//! Epochs fence a deposed primary's writes (the copies refuse its frames),
//! but not its reads: cut off from the copies, it never hears that a newer
//! primary exists, and a host that still reaches it would read data that
//! primary has since overwritten. With a lease of `L`
//! (`PrimaryLimits::read_lease`):
//!
//! - a primary serves host reads only while a write quorum of copies (its
//!   own included) answered frames or heartbeats it sent less than `L/2`
//!   ago;
//! - a newly elected primary serves (reads and writes) only `L` after its
//!   election was decided.
//!
//! Why that is enough: the old primary's quorum `Q` (W copies) meets the
//! new primary's fence quorum `F` (sync - W + 1 copies) in some copy `r`.
//! `r` answered the old primary's frame sent at `t_s` before it accepted
//! the new epoch at `t_a` (after that it answers nothing of the old epoch),
//! so the old primary serves reads only before `t_s + L/2 < t_a + L/2`;
//! the new one decided after `t_a` and serves from `t_a + L` on. The
//! half-lease between them absorbs clock rate differences and how often
//! the driver looks (a tick). (If `r` is the old primary itself, it took
//! the new epoch and stopped.)

use super::{Phase, Primary};
use crate::core::ids::{LinkId, Time};
use crate::wire::{Epoch, NodeId};

/// The epoch every copy of a new volume starts in; its primary never
/// serves (the first one to serve is promoted to a later one).
const BOOTSTRAP_EPOCH: Epoch = Epoch(1);

impl<P: Clone + PartialEq> Primary<P> {
    /// `peer` answered, on `link`, a heartbeat sent at `sent_at`.
    pub(super) fn answered(&mut self, peer: NodeId, link: LinkId, sent_at: Time) {
        if let Some(l) = self.link_mut(peer).filter(|l| l.id == link) {
            l.answered = l.answered.max(Some(sent_at));
        }
    }

    /// Whether it serves host reads at `now`: serving, and (with leases)
    /// a write quorum answered it recently.
    pub fn serves_reads(&self, now: Time) -> bool {
        self.phase == Phase::Serving && self.holds_lease(now)
    }

    fn holds_lease(&self, now: Time) -> bool {
        let lease = self.limits.read_lease;
        if lease == 0 {
            return true;
        }
        // Per reactor loop in keeld: counted in place, nothing allocated.
        self.quorum.reached_by(|node| {
            self.peers
                .get(&node)
                .and_then(|p| p.link.as_ref())
                .and_then(|l| l.answered)
                .is_some_and(|at| now < at.saturating_add(lease / 2))
        })
    }

    /// Whether some earlier primary may still hold a read lease: one held
    /// in epoch `e` needs a write quorum in `e`, which the fence quorum
    /// meets, so some copy the election heard would report an epoch past
    /// the bootstrap one (1, whose primary never serves). A blank copy
    /// remembers nothing and may have been one of them.
    pub(super) fn a_lease_may_be_held(&self) -> bool {
        self.fenced.iter().any(|node| {
            self.standings
                .get(node)
                .is_none_or(|s| s.epoch > BOOTSTRAP_EPOCH)
        })
    }

    /// Activated: serve once the lease a deposed primary may hold ran out.
    pub(super) fn start_serving_when_due(&mut self, now: Time) {
        if self.phase == Phase::Activating && self.activated && now >= self.serve_from {
            self.phase = Phase::Serving;
        }
    }
}
