//! Bringing a replica up to date, region by region, while host writes go on.
//!
//! On a link that accepted the epoch, once the primary serves and the
//! regions the replica may lack are durable in the bitmap, the primary sends
//! `Resync(Begin)` (the replica counts itself inconsistent from then on) and
//! from then sends it every host write. Each dirty region is copied as an
//! operation ordered with host writes: it waits for earlier overlapping
//! writes to reach the local copy, reads the region, sends the data as a
//! `Write` and then `Resync(Region)`. The acknowledgement of that marker
//! clears the region's dirty bit, unless the region was dirtied again
//! meanwhile (then it is copied again). With nothing dirty left, `End`; its
//! acknowledgement makes the replica consistent and in sync. A replica in
//! sync that is dirtied again (a local write failed after it applied it)
//! goes through another `Begin`..`End`.

use std::collections::BTreeSet;

use super::{IoPurpose, Op, Primary, Purpose, RegionCopy};
use crate::core::frame::Frame;
use crate::core::ids::{Position, Time};
use crate::core::io::Action;
use crate::core::primary::peer::LinkPhase;
use crate::wire::{NodeId, RegionIndex, ResyncOp};

impl<P: Clone + PartialEq> Primary<P> {
    pub(super) fn drive_resyncs(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        let peers = self.member_peers();
        // Asked only when a copy is ready to start (rare): this runs on
        // every event.
        let mut writable = None;
        for &peer in &peers {
            let Some(phase) = self.link_mut(peer).map(|l| l.phase) else {
                continue;
            };
            match phase {
                LinkPhase::Accepted
                    if self.bitmap.dirty_is_durable(peer)
                        && *writable.get_or_insert_with(|| self.could_complete_writes(&peers)) =>
                {
                    self.begin_resync(now, peer, out);
                }
                LinkPhase::Resyncing => self.schedule_copies(now, peer, out),
                // Dirtied again after its resync ended (a local write
                // failed, say): resync again.
                LinkPhase::Streaming if self.bitmap.has_dirty(peer) => {
                    self.begin_resync(now, peer, out);
                }
                _ => {}
            }
        }
    }

    /// Whether the copies that accepted this epoch, with this one, make the
    /// write quorum. Until they do, no copy starts a resync: a primary that
    /// can acknowledge nothing (one elected under a membership the others
    /// have left, waiting for a copy that is away) would only turn
    /// consistent copies into mixtures whose standings claim its epoch, and
    /// no candidate could then be elected over them (sim seeds 36753,
    /// 81861).
    fn could_complete_writes(&self, peers: &[NodeId]) -> bool {
        let reachable: BTreeSet<NodeId> = peers
            .iter()
            .copied()
            .filter(|peer| {
                self.peers
                    .get(peer)
                    .and_then(|p| p.link.as_ref())
                    .is_some_and(|l| l.phase != LinkPhase::Handshake)
            })
            .collect();
        self.quorum.reached(&reachable)
    }

    fn begin_resync(&mut self, now: Time, peer: NodeId, out: &mut Vec<Action<P>>) {
        let region_size = u64::from(self.geometry.region_size());
        let count = self.bitmap.dirty_of(peer).count() as u64;
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        link.phase = LinkPhase::Resyncing;
        link.resync.end_sent = false;
        let seq = link.take_seq();
        let op = ResyncOp::Begin {
            region_size,
            region_count: count,
        };
        self.send(
            now,
            peer,
            Frame::Resync { seq, op },
            Purpose::ResyncBegin,
            0,
            out,
        );
    }

    /// Starts region copies up to the per-replica limit (and the driver's
    /// credits when paced); ends the resync when nothing is dirty.
    fn schedule_copies(&mut self, now: Time, peer: NodeId, out: &mut Vec<Action<P>>) {
        let limit = self.limits.resync_regions_in_flight;
        let paced = self.limits.resync_paced;
        // Regions a host flush waits for first (`inheritance`).
        let mut dirty: Vec<RegionIndex> = self.bitmap.dirty_of(peer).collect();
        if let Some(first) = self.inheritance_regions_of(peer) {
            dirty.sort_by_key(|r| !first.contains(r));
        }
        let Some(link) = self.peers.get_mut(&peer).and_then(|p| p.link.as_mut()) else {
            return;
        };
        let link_id = link.id;
        let mut starts = Vec::new();
        for region in dirty {
            if link.resync.started.len() >= limit || (paced && self.resync_credits == 0) {
                break;
            }
            if link.resync.started.insert(region) {
                if paced {
                    self.resync_credits -= 1;
                }
                starts.push(region);
            }
        }
        let finished = link.resync.started.is_empty() && !self.bitmap.has_dirty(peer);
        let send_end = finished && !link.resync.end_sent;
        if send_end {
            link.resync.end_sent = true;
        }
        for region in starts {
            self.new_copy(RegionCopy {
                peer,
                link: link_id,
                region,
                reading: false,
            });
        }
        if send_end {
            let Some(link) = self.link_mut(peer) else {
                return;
            };
            let seq = link.take_seq();
            let frame = Frame::Resync {
                seq,
                op: ResyncOp::End,
            };
            self.send(now, peer, frame, Purpose::ResyncEnd, 0, out);
        }
    }

    pub(super) fn start_copy_read(&mut self, key: u64, out: &mut Vec<Action<P>>) {
        let token = self.alloc_token(IoPurpose::CopyRead { key });
        let Some(Op::Copy(copy)) = self.ops.get_mut(&key) else {
            return;
        };
        copy.reading = true;
        let range = self.geometry.region_range(copy.region);
        out.push(Action::LocalRead { token, range });
    }

    pub(super) fn copy_read_done(
        &mut self,
        now: Time,
        key: u64,
        data: Option<P>,
        out: &mut Vec<Action<P>>,
    ) {
        let covers = match self.ops.get(&key) {
            Some(Op::Copy(c)) => self.writes_covered_by_copy(key, c.region),
            _ => return,
        };
        let Some(Op::Copy(copy)) = self.ops.remove(&key) else {
            return;
        };
        self.startable -= 1;
        let range = self.geometry.region_range(copy.region);
        let Some(link) = self.link_mut(copy.peer).filter(|l| l.id == copy.link) else {
            return; // The link died meanwhile.
        };
        let Some(data) = data else {
            // The read failed: let the scheduler try the region again.
            link.resync.started.remove(&copy.region);
            return;
        };
        let data_seq = link.take_seq();
        let marker_seq = link.take_seq();
        // The copy holds every write to the region up to the last position
        // issued: a replica's standing must not claim less than that, or an
        // election could overlook a write acknowledged through this copy.
        let position = Position {
            epoch: self.epoch,
            index: self.next_index.saturating_sub(1),
        };
        let write = Frame::Write {
            seq: data_seq,
            position: Some(position),
            range,
            data,
            fua: false,
        };
        self.send(
            now,
            copy.peer,
            write,
            Purpose::ResyncData,
            u64::from(range.len),
            out,
        );
        let marker = Frame::Resync {
            seq: marker_seq,
            op: ResyncOp::Region { index: copy.region },
        };
        let purpose = Purpose::ResyncRegion {
            region: copy.region,
            covers,
        };
        self.send(now, copy.peer, marker, purpose, 0, out);
    }

    /// The replica acknowledged region `region`'s marker: it holds the
    /// region as the local copy was when read, host writes `covers`
    /// included.
    pub(super) fn region_copied(&mut self, peer: NodeId, region: RegionIndex, covers: &[u64]) {
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        link.resync.started.remove(&region);
        if !link.resync.redo.remove(&region) {
            self.bitmap.clear_dirty(peer, region);
        }
        for key in covers {
            self.write_durable_on(*key, peer);
        }
        // The copy was read after this primary's activation: it holds
        // every inherited write to the region.
        self.inheritance_region_copied(peer, region);
    }
}
