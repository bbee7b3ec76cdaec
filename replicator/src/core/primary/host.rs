//! Host commands on the primary: admission, ordering, issue, quorum.

use std::collections::BTreeSet;

use super::reconfigure::Quorum;
use super::{HostFlush, HostWrite, IoPurpose, Op, Phase, Primary, Purpose, RegionCopy, WriteStage};
use crate::core::frame::Frame;
use crate::core::ids::{HostOpId, IoToken, Position, Time};
use crate::core::io::{Action, HostStatus};
use crate::wire::{ByteRange, NodeId, RegionIndex};

impl<P: Clone + PartialEq> Primary<P> {
    pub(super) fn admit_write(
        &mut self,
        id: HostOpId,
        range: ByteRange,
        data: P,
        fua: bool,
        out: &mut Vec<Action<P>>,
    ) {
        let Some(region) = self.admit_host_range(id, range, self.refuse_host_op(), out) else {
            return;
        };
        self.reads_overwritten(range);
        let key = self.take_key();
        self.startable += 1;
        self.ops.insert(
            key,
            Op::Write(HostWrite {
                id,
                range,
                region,
                data: Some(data),
                fua,
                stage: WriteStage::Waiting,
                applied_on: BTreeSet::new(),
                durable_on: BTreeSet::new(),
                awaiting: BTreeSet::new(),
                completed: false,
                settled: false,
            }),
        );
    }

    pub(super) fn admit_flush(&mut self, id: HostOpId, out: &mut Vec<Action<P>>) {
        if let Some(status) = self.refuse_host_op() {
            out.push(Action::CompleteHost { id, status });
            return;
        }
        let key = self.take_key();
        self.flushes += 1;
        self.ops.insert(
            key,
            Op::Flush(HostFlush {
                id,
                started: false,
                persist: None,
                local_durable: false,
            }),
        );
    }

    /// The region of a host operation's `range`, unless `refusal` (or a
    /// range outside one region) ends the operation `id` here.
    pub(super) fn admit_host_range(
        &self,
        id: HostOpId,
        range: ByteRange,
        refusal: Option<HostStatus>,
        out: &mut Vec<Action<P>>,
    ) -> Option<RegionIndex> {
        let outcome = match refusal {
            Some(status) => Err(status),
            None => self
                .geometry
                .region_of(range)
                .ok_or(HostStatus::InvalidRange),
        };
        outcome
            .map_err(|status| out.push(Action::CompleteHost { id, status }))
            .ok()
    }

    fn refuse_host_op(&self) -> Option<HostStatus> {
        if self.phase != Phase::Serving {
            return Some(HostStatus::PathError);
        }
        let mut pending = 0;
        let mut writes = self.tail.len();
        for op in self.ops.values() {
            match op {
                Op::Write(w) => {
                    writes += 1;
                    pending += usize::from(!w.completed);
                }
                Op::Flush(_) => pending += 1,
                Op::Copy(_) | Op::Repair(_) | Op::Check(_) => {}
            }
        }
        let full =
            pending >= self.limits.max_host_ops || writes >= self.limits.max_unsettled_writes;
        full.then_some(HostStatus::Busy)
    }

    pub(super) fn take_key(&mut self) -> u64 {
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1);
        key
    }

    /// Whether an operation before `key` still holds a range overlapping
    /// `range` (a region copy holds its whole region).
    fn is_held(&self, key: u64, range: ByteRange) -> bool {
        self.ops.range(..key).any(|(_, op)| match op {
            Op::Write(w) => {
                matches!(w.stage, WriteStage::Waiting | WriteStage::Issued)
                    && overlap(w.range, range)
            }
            Op::Copy(c) => overlap(self.geometry.region_range(c.region), range),
            Op::Repair(r) => overlap(r.range(), range),
            Op::Check(c) => overlap(self.geometry.region_range(c.region()), range),
            Op::Flush(_) => false,
        })
    }

    /// Starts every waiting operation that ordering and the bitmap allow.
    pub(super) fn start_operations(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        if self.startable == 0 {
            return;
        }
        let waiting: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| match op {
                Op::Write(w) => w.stage == WriteStage::Waiting,
                Op::Copy(c) => !c.reading,
                Op::Repair(r) => r.is_waiting(),
                Op::Check(c) => c.is_waiting(),
                Op::Flush(_) => false,
            })
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            match self.ops.get(&key) {
                Some(Op::Write(w)) => {
                    let (range, region) = (w.range, w.region);
                    if self.is_held(key, range) {
                        continue;
                    }
                    if self.bitmap.may_issue(region) {
                        self.issue_write(now, key, out);
                    } else {
                        self.bitmap.request(region);
                    }
                }
                Some(Op::Copy(c)) => {
                    let range = self.geometry.region_range(c.region);
                    if !self.is_held(key, range) {
                        self.start_copy_read(key, out);
                    }
                }
                Some(Op::Repair(r)) if !self.is_held(key, r.range()) => {
                    self.issue_repair(key, out);
                }
                Some(Op::Check(c)) => {
                    let range = self.geometry.region_range(c.region());
                    if !self.is_held(key, range) {
                        self.start_check(now, key, out);
                    }
                }
                _ => {}
            }
        }
    }

    /// Issues a write locally and to every replica taking writes (FUA
    /// passed on to both); a replica not taking writes now gets the region
    /// marked dirty.
    fn issue_write(&mut self, now: Time, key: u64, out: &mut Vec<Action<P>>) {
        let position = Position {
            epoch: self.epoch,
            index: self.next_index,
        };
        self.next_index = self.next_index.saturating_add(1);
        let token = self.alloc_token(IoPurpose::LocalWrite { key });
        let Some(Op::Write(w)) = self.ops.get_mut(&key) else {
            return;
        };
        let Some(data) = w.data.take() else { return };
        let (range, region, fua) = (w.range, w.region, w.fua);
        if w.stage == WriteStage::Waiting {
            self.startable -= 1;
        }
        w.stage = WriteStage::Issued;
        self.bitmap.begin_write(region);
        let peers: Vec<(NodeId, bool)> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.leaving)
            .map(|(n, p)| (*n, p.link.as_ref().is_some_and(|l| l.takes_writes())))
            .collect();
        for (peer, takes_writes) in peers {
            if !takes_writes {
                self.mark_dirty(peer, region);
                continue;
            }
            let Some(link) = self.link_mut(peer) else {
                continue;
            };
            let seq = link.take_seq();
            if let Some(Op::Write(w)) = self.ops.get_mut(&key) {
                w.awaiting.insert(peer);
            }
            let frame = Frame::Write {
                seq,
                position: Some(position),
                range,
                data: data.clone(),
                fua,
            };
            self.send(
                now,
                peer,
                frame,
                Purpose::HostWrite { key, region },
                u64::from(range.len),
                out,
            );
        }
        out.push(Action::LocalWrite {
            token,
            range,
            data,
            fua,
        });
    }

    /// Starts every flush whose earlier writes all finished locally: a
    /// `Flush` frame to every replica taking writes (so each persists now
    /// instead of at its next batch), and a local persist (`pump`).
    pub(super) fn start_flushes(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        if self.flushes == 0 {
            return;
        }
        let mut local_pending = false;
        let mut ready = Vec::new();
        for (key, op) in self.ops.iter() {
            match op {
                Op::Write(w) => {
                    local_pending |= matches!(w.stage, WriteStage::Waiting | WriteStage::Issued)
                }
                Op::Flush(f) if !f.started && !local_pending => ready.push(*key),
                _ => {}
            }
        }
        if ready.is_empty() {
            return;
        }
        for key in &ready {
            if let Some(Op::Flush(f)) = self.ops.get_mut(key) {
                f.started = true;
            }
        }
        let peers: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.leaving && p.link.as_ref().is_some_and(|l| l.takes_writes()))
            .map(|(n, _)| *n)
            .collect();
        for peer in peers {
            let Some(link) = self.link_mut(peer) else {
                continue;
            };
            let seq = link.take_seq();
            self.send(now, peer, Frame::Flush { seq }, Purpose::Flush, 0, out);
        }
    }

    /// Whether a started flush still needs a local persist to start.
    pub(super) fn flush_wants_persist(&self) -> bool {
        self.flushes > 0
            && self
                .ops
                .values()
                .any(|op| matches!(op, Op::Flush(f) if f.started && f.persist.is_none()))
    }

    /// A persist starts under `token`: it covers every started flush
    /// without one (their writes all completed locally before it).
    pub(super) fn flush_persist_started(&mut self, token: IoToken) {
        for op in self.ops.values_mut() {
            if let Op::Flush(f) = op {
                if f.started && f.persist.is_none() {
                    f.persist = Some(token);
                }
            }
        }
    }

    /// The persist under `token` finished.
    pub(super) fn flush_persisted(&mut self, token: IoToken) {
        for op in self.ops.values_mut() {
            if let Op::Flush(f) = op {
                if f.persist == Some(token) {
                    f.local_durable = true;
                }
            }
        }
    }

    pub(super) fn local_write_done(&mut self, key: u64, ok: bool, out: &mut Vec<Action<P>>) {
        let Some(Op::Write(w)) = self.ops.get_mut(&key) else {
            return;
        };
        let region = w.region;
        if ok {
            w.stage = WriteStage::LocalDone;
            return;
        }
        w.stage = WriteStage::LocalFailed;
        if !w.completed {
            w.completed = true;
            out.push(Action::CompleteHost {
                id: w.id,
                status: HostStatus::MediaError,
            });
        }
        // Replicas may have applied what the local copy lacks: bring them
        // back to the local content.
        let peers = self.member_peers();
        for peer in peers {
            self.mark_dirty(peer, region);
        }
    }

    /// Host write `key`, pending or in the tail.
    pub(super) fn write_mut(&mut self, key: u64) -> Option<&mut HostWrite<P>> {
        match self.ops.get_mut(&key) {
            Some(Op::Write(w)) => Some(w),
            Some(_) => None,
            None => self.tail.get_mut(&key),
        }
    }

    /// `peer` holds host write `key` durably. (Async copies are recorded
    /// too: the quorum counts only sync ones, but a membership change may
    /// make a copy sync while the write is pending.)
    pub(super) fn write_durable_on(&mut self, key: u64, peer: NodeId) {
        if let Some(w) = self.write_mut(key) {
            w.awaiting.remove(&peer);
            w.applied_on.insert(peer);
            w.durable_on.insert(peer);
        }
        self.check_tail(key);
    }

    /// Every pending or tail host write.
    fn writes_mut(&mut self) -> impl Iterator<Item = &mut HostWrite<P>> {
        self.ops
            .values_mut()
            .filter_map(|op| match op {
                Op::Write(w) => Some(w),
                _ => None,
            })
            .chain(self.tail.values_mut())
    }

    /// `peer` may no longer hold what it acknowledged.
    pub(super) fn forget_durability_on(&mut self, peer: NodeId) {
        for w in self.writes_mut() {
            w.applied_on.remove(&peer);
            w.durable_on.remove(&peer);
        }
    }

    /// Settles a tail write once every replica it was sent to answered,
    /// and forgets it once it is also durable on a write quorum.
    pub(super) fn check_tail(&mut self, key: u64) {
        let quorum = &self.quorum;
        let Some(w) = self.tail.get_mut(&key) else {
            return;
        };
        if w.awaiting.is_empty() && !w.settled {
            w.settled = true;
            self.bitmap.end_write(w.region);
        }
        if w.settled && durable_done(w, quorum) {
            self.tail.remove(&key);
        }
    }

    /// Completes host writes that reached their quorum (moving them to the
    /// tail) and flushes whose earlier writes are all durable on a quorum.
    /// A write is kept until it is durable on a quorum (or failed locally),
    /// since a later flush must wait for it.
    pub(super) fn complete_operations(&mut self, out: &mut Vec<Action<P>>) {
        let inheritance_durable = self.flushes == 0 || self.inheritance_is_durable();
        let quorum = &self.quorum;
        let mut undurable_before = false;
        let mut finished = Vec::new();
        let mut to_tail = Vec::new();
        for (key, op) in self.ops.iter_mut() {
            match op {
                Op::Write(w) => {
                    // The local copy always counts and is always required:
                    // reads are served from it.
                    let local_done = w.stage == WriteStage::LocalDone;
                    let durable = local_done && quorum.reached(&w.durable_on);
                    let applied = local_done && quorum.reached(&w.applied_on);
                    if !w.completed && (durable || (applied && !w.fua)) {
                        w.completed = true;
                        out.push(Action::CompleteHost {
                            id: w.id,
                            status: HostStatus::Success,
                        });
                    }
                    undurable_before |= !(durable || w.stage == WriteStage::LocalFailed);
                    let local_finished =
                        matches!(w.stage, WriteStage::LocalDone | WriteStage::LocalFailed);
                    if w.completed && local_finished {
                        to_tail.push(*key);
                    }
                }
                Op::Flush(f) => {
                    // Tail writes wait to settle on every replica they
                    // went to; a flush waits only for their quorum.
                    let tail_before = self
                        .tail
                        .range(..*key)
                        .any(|(_, w)| !durable_done(w, quorum));
                    if f.local_durable && !undurable_before && !tail_before && inheritance_durable {
                        out.push(Action::CompleteHost {
                            id: f.id,
                            status: HostStatus::Success,
                        });
                        finished.push(*key);
                    }
                }
                Op::Copy(_) | Op::Repair(_) | Op::Check(_) => {}
            }
        }
        for key in finished {
            if self.ops.remove(&key).is_some() {
                self.flushes -= 1;
            }
        }
        for key in to_tail {
            if let Some(Op::Write(w)) = self.ops.remove(&key) {
                self.tail.insert(key, w);
                self.check_tail(key);
            }
        }
    }

    /// Host writes in `region` before `key` whose local copy is written
    /// and that still wait for a durable quorum: a copy of the region read
    /// now holds them.
    pub(super) fn writes_covered_by_copy(&self, key: u64, region: RegionIndex) -> Vec<u64> {
        let pending = self.ops.range(..key).filter_map(|(k, op)| match op {
            Op::Write(w) => Some((k, w)),
            _ => None,
        });
        pending
            .chain(self.tail.range(..key))
            .filter(|(_, w)| w.region == region && w.stage == WriteStage::LocalDone)
            .map(|(k, _)| *k)
            .collect()
    }

    pub(super) fn new_copy(&mut self, copy: RegionCopy) {
        let key = self.take_key();
        self.startable += 1;
        self.ops.insert(key, Op::Copy(copy));
    }
}

/// Whether a completed write needs nothing more for a flush: durable on a
/// write quorum, or failed locally.
fn durable_done<P>(w: &HostWrite<P>, quorum: &Quorum) -> bool {
    w.stage == WriteStage::LocalFailed || quorum.reached(&w.durable_on)
}

pub(super) fn overlap(a: ByteRange, b: ByteRange) -> bool {
    let a_end = a.end().unwrap_or(u64::MAX);
    let b_end = b.end().unwrap_or(u64::MAX);
    a.offset < b_end && b.offset < a_end
}
