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
//!
//! Read repair: the answer is then written back to the local copy (a
//! device rewrites, and so remaps, a bad sector), unless a host write to
//! the range was pending when the read was asked or came after it: the
//! answer may then be older than the local copy will be. The repair is an
//! operation in the stream's order like a write: host writes and region
//! copies admitted after it wait for it, it waits for those before it.

use std::collections::BTreeSet;

use super::host::overlap;
use super::{IoPurpose, Op, Peer, Phase, Primary, Purpose};
use crate::core::frame::Frame;
use crate::core::ids::{HostOpId, Time};
use crate::core::io::{Action, HostStatus};
use crate::wire::{ByteRange, NodeId, RegionIndex, ReplicationMode, Sequence};

/// A replica's answer on its way back to the local copy.
#[derive(Debug, Clone)]
pub(super) struct Repair<P> {
    range: ByteRange,
    /// Held until the local write is issued.
    data: Option<P>,
}

impl<P> Repair<P> {
    pub(super) fn range(&self) -> ByteRange {
        self.range
    }

    pub(super) fn is_waiting(&self) -> bool {
        self.data.is_some()
    }
}

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
    /// A host write to the range was pending when the read was asked or
    /// came after it: the answer is not written back.
    overwritten: bool,
}

impl<P: Clone + PartialEq> Primary<P> {
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
        let overwritten = self
            .ops
            .values()
            .any(|op| matches!(op, Op::Write(w) if overlap(w.range, range)));
        let read = DegradedRead {
            range,
            region,
            asked: None,
            tried: BTreeSet::new(),
            overwritten,
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
        let Some(read) = self.reads.remove(&id) else {
            return false;
        };
        let repairs = self
            .ops
            .values()
            .filter(|op| matches!(op, Op::Repair(_)))
            .count();
        if !read.overwritten && repairs < self.limits.max_host_ops {
            let key = self.take_key();
            self.startable += 1;
            let repair = Repair {
                range,
                data: Some(data.clone()),
            };
            self.ops.insert(key, Op::Repair(repair));
        }
        out.push(Action::CompleteRead { id, data });
        true
    }

    /// A host write to `range` was admitted: a degraded read of it still
    /// waiting may come back older than the local copy will be.
    pub(super) fn reads_overwritten(&mut self, range: ByteRange) {
        for read in self.reads.values_mut() {
            read.overwritten |= overlap(read.range, range);
        }
    }

    /// Writes repair `key`'s data to the local copy.
    pub(super) fn issue_repair(&mut self, key: u64, out: &mut Vec<Action<P>>) {
        let token = self.alloc_token(IoPurpose::Repair { key });
        let Some(Op::Repair(repair)) = self.ops.get_mut(&key) else {
            return;
        };
        let Some(data) = repair.data.take() else {
            return;
        };
        self.startable -= 1;
        out.push(Action::LocalWrite {
            token,
            range: repair.range,
            data,
            fua: false,
        });
    }

    /// Repair `key`'s local write finished. A failed one leaves the copy as
    /// it was: the next read of the range is degraded again.
    pub(super) fn repair_done(&mut self, key: u64, ok: bool) {
        if let Some(Op::Repair(_)) = self.ops.remove(&key) {
            if ok {
                self.read_repairs += 1;
            }
        }
    }

    /// Degraded reads written back to the local copy so far.
    pub fn read_repairs(&self) -> u64 {
        self.read_repairs
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
