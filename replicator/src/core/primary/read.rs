//! Degraded reads: the local device failed a host read, so the range is
//! read from a replica instead.
//!
//! A replica can answer for a region if its link takes writes and the
//! region is not dirty for it: every write to the region that this primary
//! issued was sent to it on that link, in order. The `ReadRequest` takes
//! the link's next sequence, so the replica serves it after those writes
//! (and before any later one), and the answer holds every write the host
//! saw completed before it asked. Sync copies are asked first. If the link
//! dies before the answer, or the replica's device fails the read too, the
//! next copy is tried; with none left the host gets a media error, as
//! without replication.

use std::collections::BTreeSet;

use super::{Peer, Phase, Primary, Purpose};
use crate::core::frame::Frame;
use crate::core::ids::{HostOpId, Time};
use crate::core::io::{Action, HostStatus};
use crate::wire::{ByteRange, NodeId, RegionIndex, ReplicationMode, Sequence};

/// A degraded read waiting for a replica's answer.
#[derive(Debug, Clone)]
pub(super) struct DegradedRead {
    range: ByteRange,
    region: RegionIndex,
    /// The replica asked, and the request's sequence on its link; `None`
    /// while a copy is to be (re)chosen.
    asked: Option<(NodeId, Sequence)>,
    /// Replicas asked already (each at most once).
    tried: BTreeSet<NodeId>,
}

impl<P: Clone> Primary<P> {
    /// The host read `id` of `range` failed on the local device.
    pub(super) fn admit_degraded_read(
        &mut self,
        now: Time,
        id: HostOpId,
        range: ByteRange,
        out: &mut Vec<Action<P>>,
    ) {
        let refusal = if self.phase != Phase::Serving {
            Some(HostStatus::PathError)
        } else if self.reads.len() >= self.limits.max_host_ops {
            Some(HostStatus::Busy)
        } else {
            None
        };
        let Some(region) = self.admit_host_range(id, range, refusal, out) else {
            return;
        };
        let read = DegradedRead {
            range,
            region,
            asked: None,
            tried: BTreeSet::new(),
        };
        self.reads.insert(id, read);
        self.ask_for_read(now, id, out);
    }

    /// Sends read `id` to the next copy that can answer it, or fails it.
    fn ask_for_read(&mut self, now: Time, id: HostOpId, out: &mut Vec<Action<P>>) {
        let Some(read) = self.reads.get(&id) else {
            return;
        };
        let (range, region) = (read.range, read.region);
        let able = |node: &NodeId, peer: &Peer<P>| {
            !peer.leaving
                && !read.tried.contains(node)
                && peer.link.as_ref().is_some_and(|l| l.takes_writes())
                && !self.bitmap.is_dirty(*node, region)
        };
        let chosen = self
            .peers
            .iter()
            .filter(|(node, peer)| able(node, peer))
            .min_by_key(|(node, peer)| (peer.mode != ReplicationMode::Sync, **node))
            .map(|(node, _)| *node);
        let Some(peer) = chosen else {
            self.reads.remove(&id);
            out.push(Action::CompleteHost {
                id,
                status: HostStatus::MediaError,
            });
            return;
        };
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        let seq = link.take_seq();
        if let Some(read) = self.reads.get_mut(&id) {
            read.asked = Some((peer, seq));
            read.tried.insert(peer);
        }
        let frame = Frame::ReadRequest { seq, range };
        self.send(now, peer, frame, Purpose::Read, 0, out);
    }

    /// `peer` answered the `ReadRequest` `seq` with `data`. Returns false
    /// for an answer nobody asked for (the stream is broken).
    pub(super) fn read_answered(
        &mut self,
        peer: NodeId,
        seq: Sequence,
        range: ByteRange,
        data: P,
        out: &mut Vec<Action<P>>,
    ) -> bool {
        let found = self
            .reads
            .iter()
            .find(|(_, r)| r.asked == Some((peer, seq)) && r.range == range)
            .map(|(id, _)| *id);
        let Some(id) = found else {
            return false;
        };
        self.reads.remove(&id);
        out.push(Action::CompleteRead { id, data });
        true
    }

    /// `peer`'s link is gone: its unanswered reads go to another copy.
    pub(super) fn reads_lost_on(&mut self, peer: NodeId) {
        for read in self.reads.values_mut() {
            if read.asked.is_some_and(|(p, _)| p == peer) {
                read.asked = None;
            }
        }
    }

    /// Asks another copy for every read whose copy went away.
    pub(super) fn retry_reads(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        let orphans: Vec<HostOpId> = self
            .reads
            .iter()
            .filter(|(_, r)| r.asked.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in orphans {
            self.ask_for_read(now, id, out);
        }
    }

    /// Retiring: every read waiting fails over to the host's next path.
    pub(super) fn fail_reads(&mut self, out: &mut Vec<Action<P>>) {
        for id in std::mem::take(&mut self.reads).into_keys() {
            out.push(Action::CompleteHost {
                id,
                status: HostStatus::PathError,
            });
        }
    }
}
