//! Scrubbing: every region of the local copy compared with each replica
//! that holds it, while host I/O goes on (`Event::Scrub` starts a pass).
//!
//! Copies can differ without anyone having been told: a replica's disk
//! returns bits it was never given, a bug. Nothing else would notice until
//! the replica is promoted. A pass takes the regions in order, one at a
//! time; for each, every replica whose link streams and for which the
//! region is clean gets a check: an operation in the stream's order, like a
//! region copy, that reads the region locally and asks the replica for it
//! with a `ReadRequest` on its link at the same point of the stream (after
//! every write to the region issued before it; writes admitted after it
//! wait). Both answers then hold the same writes. Paced like resync
//! (`PrimaryLimits::resync_paced`): a check costs a region's credit. A replica whose answer
//! differs has the region marked dirty and copied again from the primary,
//! whose copy is the one hosts read.

use super::{IoPurpose, Op, Phase, Primary, Purpose};
use crate::core::frame::Frame;
use crate::core::ids::{LinkId, Time};
use crate::core::io::Action;
use crate::core::primary::peer::LinkPhase;
use crate::wire::{NodeId, RegionIndex, Sequence};

/// One region of one replica compared with the local copy.
#[derive(Debug, Clone)]
pub(super) struct RegionCheck<P> {
    peer: NodeId,
    link: LinkId,
    region: RegionIndex,
    /// The `ReadRequest`'s sequence, once the check started.
    asked: Option<Sequence>,
    /// The local read is with the device.
    reading: bool,
    /// The local read's result (`Some(None)`: it failed).
    local: Option<Option<P>>,
    remote: Option<P>,
}

impl<P> RegionCheck<P> {
    pub(super) fn region(&self) -> RegionIndex {
        self.region
    }

    pub(super) fn is_waiting(&self) -> bool {
        self.asked.is_none()
    }

    /// Whether it goes when `link` is lost: a local read in progress
    /// finishes first (its buffer is with the device).
    pub(super) fn dies_with(&self, link: LinkId) -> bool {
        self.link == link && !self.reading
    }
}

/// Where scrubbing stands, for status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubStatus {
    /// The region a pass in progress checks next (`None`: no pass).
    pub next_region: Option<u64>,
    /// Passes finished.
    pub passes: u64,
    /// Region checks finished (one region of one replica each).
    pub checked: u64,
    /// Checks that found the replica different (its region was copied
    /// again).
    pub mismatches: u64,
}

impl<P: Clone + PartialEq> Primary<P> {
    /// Starts a pass from the first region, unless one is in progress.
    pub(super) fn start_scrub(&mut self) {
        if self.scrub.next_region.is_none() {
            self.scrub.next_region = Some(0);
        }
    }

    /// Where scrubbing stands.
    pub fn scrub_status(&self) -> ScrubStatus {
        self.scrub
    }

    /// Creates the next region's checks once the last region's finished
    /// (and, paced, with a credit: each check costs one, as a region copy
    /// does).
    pub(super) fn drive_scrub(&mut self) {
        if self.ops.values().any(|op| matches!(op, Op::Check(_))) {
            return;
        }
        let paced = self.limits.resync_paced;
        if paced && (self.resync_credits == 0 || self.resync_debt > 0) {
            return;
        }
        let regions = self.geometry.region_count();
        while let Some(next) = self.scrub.next_region {
            if next >= regions {
                self.scrub.next_region = None;
                self.scrub.passes += 1;
                return;
            }
            self.scrub.next_region = Some(next + 1);
            let region = RegionIndex(next);
            let checks: Vec<(NodeId, LinkId)> = self
                .peers
                .keys()
                .filter_map(|&node| Some((node, self.checkable(node, region)?)))
                .collect();
            if checks.is_empty() {
                continue;
            }
            if paced {
                // The region's checks start together; what the credits
                // do not cover is owed.
                let cost = u32::try_from(checks.len()).unwrap_or(u32::MAX);
                let covered = cost.min(self.resync_credits);
                self.resync_credits -= covered;
                self.resync_debt = self.resync_debt.saturating_add(cost - covered);
            }
            for (peer, link) in checks {
                let key = self.take_key();
                self.startable += 1;
                let check = RegionCheck {
                    peer,
                    link,
                    region,
                    asked: None,
                    reading: false,
                    local: None,
                    remote: None,
                };
                self.ops.insert(key, Op::Check(check));
            }
            return;
        }
    }

    /// The link on which `peer` can be compared for `region`: a member
    /// that stays, streaming, the region clean for it (it got every write
    /// to the region, in order).
    fn checkable(&self, peer: NodeId, region: RegionIndex) -> Option<LinkId> {
        let p = self.peers.get(&peer).filter(|p| !p.leaving)?;
        let link = p
            .link
            .as_ref()
            .filter(|l| l.phase == LinkPhase::Streaming)?;
        (!self.bitmap.is_dirty(peer, region)).then_some(link.id)
    }

    /// Check `key`'s turn came (every earlier operation on its region is
    /// done locally): the local read and the replica's, at once.
    pub(super) fn start_check(&mut self, now: Time, key: u64, out: &mut Vec<Action<P>>) {
        let Some(Op::Check(check)) = self.ops.get(&key) else {
            return;
        };
        let (peer, link_id, region) = (check.peer, check.link, check.region);
        // Dirtied since (a lost link, a failed local write; the copy that
        // follows compares nothing), or leaving the volume (it gets no
        // more writes).
        let still = self.phase == Phase::Serving && self.checkable(peer, region) == Some(link_id);
        if !still {
            self.ops.remove(&key);
            self.startable -= 1;
            return;
        }
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        let seq = link.take_seq();
        let token = self.alloc_token(IoPurpose::CheckRead { key });
        if let Some(Op::Check(check)) = self.ops.get_mut(&key) {
            check.asked = Some(seq);
            check.reading = true;
        }
        self.startable -= 1;
        let range = self.geometry.region_range(region);
        out.push(Action::LocalRead { token, range });
        let frame = Frame::ReadRequest { seq, range };
        self.send(now, peer, frame, Purpose::Read, 0, out);
    }

    /// The local read of check `key` finished.
    pub(super) fn check_read_done(&mut self, key: u64, data: Option<P>) {
        if let Some(Op::Check(check)) = self.ops.get_mut(&key) {
            check.reading = false;
            check.local = Some(data);
        }
        self.finish_check(key);
    }

    /// `peer` answered a `ReadRequest` on its current link; false if no
    /// check asked it there (a check of a lost link, still reading locally,
    /// may hold the same sequence of the old link).
    pub(super) fn check_answered(&mut self, peer: NodeId, seq: Sequence, data: &P) -> bool {
        let Some(link) = self.link_id(peer) else {
            return false;
        };
        let found = self.ops.iter_mut().find_map(|(key, op)| match op {
            Op::Check(c)
                if c.peer == peer
                    && c.link == link
                    && c.asked == Some(seq)
                    && c.remote.is_none() =>
            {
                c.remote = Some(data.clone());
                Some(*key)
            }
            _ => None,
        });
        let Some(key) = found else {
            return false;
        };
        self.finish_check(key);
        true
    }

    /// Compares once both reads are back. A check whose link died meanwhile
    /// compares nothing (the replica is resynced anyway).
    fn finish_check(&mut self, key: u64) {
        let Some(Op::Check(c)) = self.ops.get(&key) else {
            return;
        };
        let linked = self
            .peers
            .get(&c.peer)
            .and_then(|p| p.link.as_ref())
            .is_some_and(|l| l.id == c.link);
        // Both reads, unless the link died: its answer never comes.
        if c.local.is_none() || (linked && c.remote.is_none()) {
            return;
        }
        let Some(Op::Check(check)) = self.ops.remove(&key) else {
            return;
        };
        let (Some(Some(local)), Some(remote), true) = (check.local, check.remote, linked) else {
            return;
        };
        self.scrub.checked += 1;
        // Dirtied while the check was out (a copy follows anyway), or
        // leaving since (it gets no more writes): nothing to compare.
        if local != remote && self.checkable(check.peer, check.region) == Some(check.link) {
            self.scrub.mismatches += 1;
            self.mark_dirty(check.peer, check.region);
        }
    }
}
