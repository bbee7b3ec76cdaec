//! The replica side of a stream: apply in sequence order, acknowledge only
//! what is durable, fence older epochs.
//!
//! Frames from every inbound link go through one queue in arrival order.
//! Writes are issued to the local device as they come (pipelined, but a
//! write never overtakes an overlapping one still in flight, since the device
//! may complete them in any order). Control frames (`EpochChange`, `Resync`)
//! are barriers: they wait for the writes before them, then change the
//! durable standing with a `Persist`.
//!
//! Two acknowledgements, as NVMe has two levels of done for a write with a
//! volatile write cache: `Applied` once the writes up to a frame completed
//! on the device (what a write without FUA needs), and `Ack` once a
//! `Persist` (device flush plus record) covering them finished (what FUA
//! writes and flushes need). A `Persist` is a barrier too, and costs a
//! device flush, so it runs only when asked for — a `Flush` frame, a FUA
//! write, a control frame — or when the unflushed batch grows to
//! [`ReplicaLimits::persist_batch`], or on a `Tick` with nothing to apply.
//! Writes keep applying while a `Persist` runs: it covers (and its record
//! describes) only the frames processed when it started, with no write in
//! flight.

use std::collections::{BTreeMap, VecDeque};

use crate::core::frame::Frame;
use crate::core::geometry::Geometry;
use crate::core::ids::{IoToken, LinkId, Position, Time};
use crate::core::io::{Action, Event, IoError};
use crate::core::membership::Membership;
use crate::core::recent::RecentWrites;
use crate::core::record::{DurableRecord, Standing};
use crate::wire::{ByteRange, Epoch, NackReason, NodeId, ResyncOp, Sequence, MAX_COPIES};

/// Bounds on what one replica holds for its upstream links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaLimits {
    /// Frames received and not yet applied; beyond it the link is refused
    /// with `Busy` and closed (the primary resyncs).
    pub max_queued_frames: usize,
    /// Local writes in flight at once.
    pub max_writes_in_flight: usize,
    /// Frames applied and not yet durable on a link before a `Persist` is
    /// forced (bounds what the primary holds waiting for durability).
    pub persist_batch: u64,
}

impl Default for ReplicaLimits {
    fn default() -> Self {
        Self {
            max_queued_frames: 256,
            max_writes_in_flight: 32,
            persist_batch: 128,
        }
    }
}

#[derive(Debug, Clone)]
struct UpstreamLink {
    peer: NodeId,
    /// Epoch of the last frame applied from it.
    epoch: Epoch,
    /// Next sequence expected on this link.
    expected: Sequence,
    /// Highest sequence applied (issued and, once no write is in flight,
    /// completed).
    processed: Sequence,
    /// Highest sequence acknowledged durable.
    acked: Sequence,
    /// Highest sequence acknowledged applied.
    applied_sent: Sequence,
}

#[derive(Debug, Clone)]
struct QueuedFrame<P> {
    link: LinkId,
    epoch: Epoch,
    frame: Frame<P>,
}

/// A local write in flight, or a local read serving a `ReadRequest`
/// (`read`): both hold their range against later writes, and the
/// frames after them are acknowledged only once they are done.
#[derive(Debug, Clone, Copy)]
struct WriteInFlight {
    link: LinkId,
    seq: Sequence,
    range: ByteRange,
    /// Its position in the stream, counted in the standing once it and
    /// every write issued before it completed.
    position: Option<Position>,
    read: bool,
}

#[derive(Debug, Clone)]
struct PersistInFlight {
    token: IoToken,
    record: DurableRecord,
    /// Per link, the sequence this persist makes durable.
    covers: BTreeMap<LinkId, Sequence>,
    /// An `EpochChange` this persist accepts: its link and the standing to
    /// report in the acknowledgement.
    epoch_ack: Option<(LinkId, Standing)>,
}

/// The replica state machine for one stream.
/// Peers a replica keeps links from at once (each one link at most).
const MAX_UPSTREAM_LINKS: usize = 2 * MAX_COPIES;

#[derive(Debug, Clone)]
pub struct Replica<P> {
    geometry: Geometry,
    limits: ReplicaLimits,
    /// Last record known durable.
    durable: DurableRecord,
    /// The standing as of the frames applied so far (persisted with the next
    /// `Persist`). Its `applied` counts a write once it and every write
    /// issued before it completed: it never claims a write in flight.
    working: Standing,
    /// Positions of writes that completed while an earlier one is still in
    /// flight (by token, which orders writes as issued).
    completed_early: BTreeMap<IoToken, Position>,
    /// The standing last kept with `Action::Note`.
    noted: Standing,
    /// The membership of `working.epoch`.
    membership: Membership,
    links: BTreeMap<LinkId, UpstreamLink>,
    queue: VecDeque<QueuedFrame<P>>,
    writes: BTreeMap<IoToken, WriteInFlight>,
    persist: Option<PersistInFlight>,
    /// A `Persist` must start as soon as the writes in flight are done;
    /// nothing more is applied until it has.
    persist_wanted: bool,
    next_token: u64,
    /// The last writes applied (memory only), for a promotion.
    recent: RecentWrites,
}

impl<P: Clone + PartialEq> Replica<P> {
    /// A replica whose durable record is `record`; its I/O tokens start at
    /// `first_token` (distinct from any still in flight on this node).
    pub fn new(
        geometry: Geometry,
        limits: ReplicaLimits,
        record: DurableRecord,
        first_token: u64,
    ) -> Self {
        let applied = record.standing.applied;
        Self {
            geometry,
            limits,
            working: record.standing,
            completed_early: BTreeMap::new(),
            noted: record.standing,
            membership: record.membership.clone(),
            durable: record,
            links: BTreeMap::new(),
            queue: VecDeque::new(),
            writes: BTreeMap::new(),
            persist: None,
            persist_wanted: false,
            next_token: first_token,
            recent: RecentWrites::starting_at(applied),
        }
    }

    /// The last writes it applied, by position and region.
    pub fn recent_writes(&self) -> &RecentWrites {
        &self.recent
    }

    /// A replica starting from its record after the process ended (a crash
    /// included), with the standing it last noted (`Action::Note`) if that
    /// survived: it may have acknowledged writes as applied after its last
    /// record, and their data survives a killed process.
    pub fn recover(
        geometry: Geometry,
        limits: ReplicaLimits,
        record: DurableRecord,
        noted: Option<Standing>,
        first_token: u64,
    ) -> Self {
        let recorded = record.standing.epoch;
        let recorded_synced = record.standing.synced;
        let mut replica = Self::new(geometry, limits, record, first_token);
        // A note is taken before every persist, so it is never older than
        // the record (one that is cannot be this record's). One epoch newer:
        // the persist taking that epoch did not finish, and the membership
        // of that epoch is not in the record; the note's other fields are as
        // before the change (it applies after every earlier write), except
        // `synced` where a membership change moved it along.
        let standing = match noted {
            Some(n) if n.epoch == recorded => Some(n),
            Some(n) if n.epoch > recorded => Some(Standing {
                epoch: recorded,
                synced: n.synced.min(recorded),
                ..n
            }),
            _ => None,
        };
        match standing {
            Some(standing) => {
                replica.working = standing;
                replica.noted = standing;
            }
            // No note from this boot: a power loss (or a reboot) may have
            // taken writes it acknowledged as applied after its record.
            None if recorded_synced != Epoch(0) => {
                replica.working.amnesiac = true;
                replica.noted.amnesiac = true;
            }
            None => {}
        }
        replica.recent = RecentWrites::starting_at(replica.working.applied);
        replica
    }

    /// The last record known durable.
    pub fn durable_record(&self) -> &DurableRecord {
        &self.durable
    }

    /// Its standing as of the frames applied so far: what it reports when
    /// it accepts an epoch (applied writes count, durable or not).
    pub fn standing(&self) -> Standing {
        self.working
    }

    /// The membership of the epoch it has accepted.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The epoch this replica has accepted (durably or about to be).
    pub fn epoch(&self) -> Epoch {
        self.working.epoch
    }

    /// The next I/O token this replica would use.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }

    /// Whether no local I/O is in flight and nothing waits to be applied:
    /// the durable record then describes the local copy.
    pub fn is_idle(&self) -> bool {
        self.writes.is_empty() && self.persist.is_none() && self.queue.is_empty()
    }

    /// Inbound links currently open.
    pub fn links(&self) -> impl Iterator<Item = (LinkId, NodeId)> + '_ {
        self.links.iter().map(|(id, l)| (*id, l.peer))
    }

    /// Handles one event; appends what to do to `out`.
    pub fn handle(&mut self, _now: Time, event: Event<P>, out: &mut Vec<Action<P>>) {
        match event {
            Event::LinkUp { peer, link, .. }
                if self.links.len() >= MAX_UPSTREAM_LINKS
                    && !self.links.values().any(|l| l.peer == peer) =>
            {
                // Links stay bounded: one per peer, and a bounded number
                // of peers. (Not only members: a copy removed from the
                // volume may win an election under the membership it
                // still holds, and then needs this copy's standing.)
                out.push(Action::CloseLink { peer, link });
            }
            Event::LinkUp { peer, link, .. } => {
                // A primary opens a new link only after giving up the old
                // one, but the old one's last frames may still be on their
                // way: they must not be applied after the new link's.
                let older: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|(_, l)| l.peer == peer)
                    .map(|(id, _)| *id)
                    .collect();
                for old in older {
                    out.push(Action::CloseLink { peer, link: old });
                    self.forget_link(old);
                }
                self.links.insert(
                    link,
                    UpstreamLink {
                        peer,
                        epoch: Epoch(0),
                        expected: Sequence(1),
                        processed: Sequence(0),
                        acked: Sequence(0),
                        applied_sent: Sequence(0),
                    },
                );
            }
            Event::LinkDown { link, .. } => self.forget_link(link),
            Event::Received {
                link, epoch, frame, ..
            } => self.receive(link, epoch, frame, out),
            Event::LocalWriteDone { token, result } => self.write_done(token, result, out),
            Event::LocalReadDone { token, result } => self.read_done(token, result, out),
            Event::Persisted { token } => self.persisted(token, out),
            // Quiet for a tick with writes not yet durable: make them so
            // (the primary's bitmap clears only on durable acks).
            Event::Tick => {
                if self.queue.is_empty() && self.has_unacked() {
                    self.persist_wanted = true;
                }
            }
            // A replica serves no host I/O; the node answers those.
            Event::HostWrite { .. }
            | Event::HostFlush { .. }
            | Event::DegradedRead { .. }
            | Event::HeartbeatAnswered { .. }
            | Event::Promote { .. }
            | Event::Reconfigure { .. }
            | Event::ResyncCredit { .. }
            | Event::Scrub
            // The node stops on a failed persist before the role sees it.
            | Event::PersistFailed { .. } => {}
        }
        self.pump(out);
        self.send_applied(out);
    }

    /// Whether a link of the current epoch has frames applied and not yet
    /// acknowledged durable (older epochs' links get no acks: see
    /// `EpochChange`; counting them would persist on every tick for ever).
    fn has_unacked(&self) -> bool {
        let current = self.working.epoch;
        self.links
            .values()
            .any(|l| l.epoch >= current && l.processed > l.acked)
    }

    /// Acknowledges, per link, the frames whose writes all completed.
    fn send_applied(&mut self, out: &mut Vec<Action<P>>) {
        let current = self.working.epoch;
        let first_send = out.len();
        for (id, link) in self.links.iter_mut() {
            if link.epoch < current {
                continue; // Deposed primary: see `EpochChange`.
            }
            let oldest_in_flight = self
                .writes
                .values()
                .filter(|w| w.link == *id)
                .map(|w| w.seq)
                .min();
            let through = match oldest_in_flight {
                Some(seq) => Sequence(seq.0.saturating_sub(1)),
                None => link.processed,
            };
            if through > link.applied_sent && through > link.acked {
                link.applied_sent = through;
                out.push(Action::Send {
                    peer: link.peer,
                    link: *id,
                    epoch: current,
                    frame: Frame::Applied {
                        applied_through: through,
                    },
                });
            }
        }
        // What it acknowledges applied outlives the process first.
        if out.len() > first_send {
            if let Some(note) = self.note() {
                out.insert(first_send, note);
            }
        }
    }

    /// The action that keeps the working standing for a restart, if it
    /// changed since the last one.
    fn note(&mut self) -> Option<Action<P>> {
        (self.noted != self.working).then(|| {
            self.noted = self.working;
            Action::Note {
                standing: self.working,
            }
        })
    }

    fn receive(&mut self, link: LinkId, epoch: Epoch, frame: Frame<P>, out: &mut Vec<Action<P>>) {
        if !self.links.contains_key(&link) {
            return; // A frame of a link already closed.
        }
        if frame.sequence().is_none() {
            // Only sequenced frames flow to a replica.
            self.refuse(link, Sequence(0), NackReason::ProtocolViolation, out);
            return;
        }
        if self.queue.len() >= self.limits.max_queued_frames {
            let seq = frame.sequence().unwrap_or_default();
            self.refuse(link, seq, NackReason::Busy, out);
            return;
        }
        self.queue.push_back(QueuedFrame { link, epoch, frame });
    }

    fn forget_link(&mut self, link: LinkId) {
        self.links.remove(&link);
        self.queue.retain(|q| q.link != link);
    }

    /// Nacks frame `seq` of `link` and closes the link.
    fn refuse(
        &mut self,
        link: LinkId,
        seq: Sequence,
        reason: NackReason,
        out: &mut Vec<Action<P>>,
    ) {
        if let Some(l) = self.links.get(&link) {
            let peer = l.peer;
            out.push(Action::Send {
                peer,
                link,
                epoch: self.working.epoch,
                frame: Frame::Nack { seq, reason },
            });
            out.push(Action::CloseLink { peer, link });
        }
        self.forget_link(link);
    }

    fn alloc_token(&mut self) -> IoToken {
        let token = IoToken(self.next_token);
        self.next_token = self.next_token.wrapping_add(1);
        token
    }

    /// Applies queued frames as far as ordering and barriers allow, then
    /// starts a wanted `Persist` once the writes before it are done.
    fn pump(&mut self, out: &mut Vec<Action<P>>) {
        // Writes keep applying while a persist runs (it covers only what
        // completed before it started); barriers wait for it.
        while !self.holds_for_persist() {
            let Some(front) = self.queue.front() else {
                break;
            };
            let link = front.link;
            let epoch = front.epoch;
            let Some(seq) = front.frame.sequence() else {
                break;
            };
            let Some(expected) = self.links.get(&link).map(|l| l.expected) else {
                self.queue.pop_front();
                continue;
            };
            if seq != expected {
                self.refuse(link, seq, NackReason::OutOfOrder { expected }, out);
                continue;
            }
            let is_epoch_change = matches!(front.frame, Frame::EpochChange { .. });
            if epoch < self.working.epoch {
                let current = self.working.epoch;
                self.refuse(link, seq, NackReason::StaleEpoch { current }, out);
                continue;
            }
            if epoch > self.working.epoch && !is_epoch_change {
                let current = self.working.epoch;
                self.refuse(link, seq, NackReason::EpochAhead { current }, out);
                continue;
            }
            if !self.apply_front(out) {
                break;
            }
        }
        self.start_wanted_persist(out);
    }

    /// Applies the frame at the front of the queue (epoch and sequence
    /// already checked). Returns false if it must wait.
    fn apply_front(&mut self, out: &mut Vec<Action<P>>) -> bool {
        let Some(front) = self.queue.front() else {
            return false;
        };
        let link = front.link;
        let epoch = front.epoch;
        match &front.frame {
            Frame::Write {
                seq,
                position,
                range,
                ..
            } => {
                let (seq, position, range) = (*seq, *position, *range);
                if let Err(progressed) = self.admit_io(link, seq, range, out) {
                    return progressed;
                }
                let popped = self.queue.pop_front();
                let Some(QueuedFrame {
                    frame: Frame::Write { data, fua, .. },
                    ..
                }) = popped
                else {
                    return false;
                };
                let token = self.alloc_token();
                if let (Some(position), Some(region)) = (position, self.geometry.region_of(range)) {
                    self.recent.record(position, region);
                }
                let write = WriteInFlight {
                    link,
                    seq,
                    range,
                    position,
                    read: false,
                };
                self.writes.insert(token, write);
                self.advance(link, epoch, seq);
                // Never FUA on the device: a `Persist` (one flush for the
                // batch) makes it durable, and only then is it acknowledged
                // durable. A FUA frame asks for that `Persist` at once.
                out.push(Action::LocalWrite {
                    token,
                    range,
                    data,
                    fua: false,
                });
                let batch_full = self.links.get(&link).is_some_and(|l| {
                    l.processed.0.saturating_sub(l.acked.0) >= self.limits.persist_batch
                });
                if fua || batch_full {
                    self.persist_wanted = true;
                }
                true
            }
            Frame::Flush { seq } => {
                let seq = *seq;
                if !self.writes.is_empty() || self.persist.is_some() {
                    return false; // Barrier: the writes before it first.
                }
                self.queue.pop_front();
                self.advance(link, epoch, seq);
                self.start_persist(None, out);
                true
            }
            Frame::Resync { seq, op } => {
                let (seq, op) = (*seq, *op);
                if !self.writes.is_empty() || self.persist.is_some() {
                    return false; // Barrier: the copies before it first.
                }
                self.queue.pop_front();
                match op {
                    ResyncOp::Begin { .. } => self.working.consistent = false,
                    ResyncOp::Region { .. } => {}
                    ResyncOp::End => {
                        self.working.consistent = true;
                        self.working.amnesiac = false;
                        self.working.synced = epoch;
                    }
                }
                self.advance(link, epoch, seq);
                self.start_persist(None, out);
                true
            }
            Frame::EpochChange { seq, membership } => {
                let (seq, membership) = (*seq, membership.clone());
                if !self.writes.is_empty() || self.persist.is_some() {
                    return false;
                }
                self.queue.pop_front();
                let before = self.working;
                // The same epoch again (a new link of the same primary) may
                // come without the previous membership once its change
                // reached enough copies; never the other way round.
                let repeat = epoch == self.working.epoch
                    && membership.same_copies(&self.membership)
                    && membership.primary == self.membership.primary;
                if epoch == self.working.epoch && !repeat {
                    let current = self.working.epoch;
                    self.refuse(link, seq, NackReason::StaleEpoch { current }, out);
                    return true;
                }
                if !membership.is_valid() {
                    self.refuse(link, seq, NackReason::ProtocolViolation, out);
                    return true;
                }
                let known = self.membership.since.max(self.working.replicated_epoch());
                if membership.since < known && !membership.same_copies(&self.membership) {
                    // A candidate that missed a membership change this copy
                    // took, or holds one that a later primary superseded:
                    // it must not be elected under that membership.
                    let current = self.working.epoch;
                    self.refuse(link, seq, NackReason::StaleEpoch { current }, out);
                    return true;
                }
                // A membership change on the link of the primary that last
                // synced this copy: that primary goes on tracking it in its
                // bitmap, in the new epoch too.
                // (Not on a link's opening frame: a new link's epoch is
                // still unknown.)
                let synced_by_sender = seq > Sequence(1)
                    && self.working.synced != Epoch(0)
                    && self.links.get(&link).is_some_and(|l| {
                        l.epoch == self.working.synced && l.epoch == self.working.epoch
                    });
                if synced_by_sender {
                    self.working.synced = epoch;
                }
                self.working.epoch = epoch;
                let cleared = repeat && self.membership.previous.is_none();
                if membership.since < self.membership.since {
                    // The same copies and W from a candidate that did not
                    // take their latest introduction: this copy's record of
                    // it (and of any change it finishes) stays.
                    self.membership.primary = membership.primary;
                } else {
                    self.membership = membership;
                }
                if cleared {
                    self.membership.previous = None;
                }
                self.advance(link, epoch, seq);
                // Links of older epochs get nothing more acknowledged, not
                // even writes already applied: their primary is deposed and
                // must not complete them on this copy's word (the standing
                // reported below accounts for them).
                let stale: Vec<LinkId> = self
                    .links
                    .iter()
                    .filter(|(id, l)| **id != link && l.epoch < epoch)
                    .map(|(id, _)| *id)
                    .collect();
                for l in stale {
                    self.refuse(
                        l,
                        Sequence(0),
                        NackReason::StaleEpoch { current: epoch },
                        out,
                    );
                }
                self.start_persist(Some((link, before)), out);
                true
            }
            Frame::ReadRequest { seq, range } => {
                let (seq, range) = (*seq, *range);
                // After every write before it (the device may reorder
                // overlapping ones), and before any after it.
                if let Err(progressed) = self.admit_io(link, seq, range, out) {
                    return progressed;
                }
                self.queue.pop_front();
                let token = self.alloc_token();
                self.writes.insert(
                    token,
                    WriteInFlight {
                        link,
                        seq,
                        range,
                        position: None,
                        read: true,
                    },
                );
                self.advance(link, epoch, seq);
                out.push(Action::LocalRead { token, range });
                true
            }
            Frame::Ack { .. }
            | Frame::Applied { .. }
            | Frame::ReadResponse { .. }
            | Frame::Nack { .. } => {
                self.queue.pop_front();
                true
            }
        }
    }

    /// A local read for a `ReadRequest` ended: the data goes back to the
    /// primary; a failed read refuses the request (the primary tries
    /// another copy) and closes the link. The copy is unchanged, so it
    /// stays consistent.
    fn read_done(&mut self, token: IoToken, result: Result<P, IoError>, out: &mut Vec<Action<P>>) {
        let Some(read) = self.writes.remove(&token).filter(|w| w.read) else {
            return;
        };
        self.settle_positions();
        match result {
            Ok(data) => {
                if let Some(l) = self.links.get(&read.link) {
                    out.push(Action::Send {
                        peer: l.peer,
                        link: read.link,
                        epoch: self.working.epoch,
                        frame: Frame::ReadResponse {
                            seq: read.seq,
                            range: read.range,
                            data,
                        },
                    });
                }
            }
            Err(_) => self.refuse(read.link, read.seq, NackReason::MediaError, out),
        }
    }

    /// Whether the local write or read of frame `seq` (on `range`) may
    /// start now: none in flight overlaps it and there is room. `Err`
    /// tells `apply_front` what to return instead: false to wait, true
    /// once a range not within one region has been refused.
    fn admit_io(
        &mut self,
        link: LinkId,
        seq: Sequence,
        range: ByteRange,
        out: &mut Vec<Action<P>>,
    ) -> Result<(), bool> {
        if self.geometry.region_of(range).is_none() {
            self.refuse(link, seq, NackReason::OutOfRange, out);
            return Err(true);
        }
        let overlaps = self.writes.values().any(|w| ranges_overlap(w.range, range));
        if overlaps || self.writes.len() >= self.limits.max_writes_in_flight {
            return Err(false);
        }
        Ok(())
    }

    /// Whether applying must pause so the writes in flight drain for a
    /// wanted `Persist`: at once when none is running, otherwise only past
    /// four batches unflushed (the next one starts when it ends).
    fn holds_for_persist(&self) -> bool {
        if !self.persist_wanted {
            return false;
        }
        let cap = self.limits.persist_batch.saturating_mul(4);
        self.persist.is_none()
            || self
                .links
                .values()
                .any(|l| l.processed.0.saturating_sub(l.acked.0) >= cap)
    }

    fn advance(&mut self, link: LinkId, epoch: Epoch, seq: Sequence) {
        if let Some(l) = self.links.get_mut(&link) {
            l.epoch = epoch;
            l.expected = seq.next().unwrap_or(seq);
            l.processed = seq;
        }
    }

    fn start_persist(&mut self, epoch_ack: Option<(LinkId, Standing)>, out: &mut Vec<Action<P>>) {
        debug_assert!(self.persist.is_none() && self.writes.is_empty());
        self.persist_wanted = false;
        out.extend(self.note());
        let token = self.alloc_token();
        let record = DurableRecord {
            membership: self.membership.clone(),
            standing: self.working,
            intent: Vec::new(),
        };
        let covers = self
            .links
            .iter()
            .map(|(id, l)| (*id, l.processed))
            .collect();
        out.push(Action::Persist {
            token,
            record: record.clone(),
        });
        self.persist = Some(PersistInFlight {
            token,
            record,
            covers,
            epoch_ack,
        });
    }

    /// Starts the `Persist` asked for once the writes before it are done
    /// (one flush acknowledges the whole batch).
    fn start_wanted_persist(&mut self, out: &mut Vec<Action<P>>) {
        if !self.persist_wanted || self.persist.is_some() || !self.writes.is_empty() {
            return;
        }
        if self.has_unacked() {
            self.start_persist(None, out);
        } else {
            self.persist_wanted = false;
        }
    }

    fn write_done(
        &mut self,
        token: IoToken,
        result: Result<(), IoError>,
        out: &mut Vec<Action<P>>,
    ) {
        let Some(write) = self.writes.remove(&token).filter(|w| !w.read) else {
            return;
        };
        let oldest_in_flight = self.writes.keys().next().copied();
        if let Some(p) = write.position {
            if oldest_in_flight.is_some_and(|oldest| oldest < token) {
                // An earlier write is still in flight: this one counts
                // once it is done.
                self.completed_early.insert(token, p);
            } else {
                self.working.applied = self.working.applied.max(p);
            }
        }
        self.settle_positions();
        if result.is_err() {
            // The range now holds unknown data: not consistent until a
            // resync, and this link's stream is broken.
            self.working.consistent = false;
            let seq = self
                .links
                .get(&write.link)
                .map(|l| l.processed)
                .unwrap_or_default();
            self.refuse(write.link, seq, NackReason::MediaError, out);
        }
    }

    /// Counts in the standing the writes that completed early, as far as
    /// nothing issued before them is still in flight.
    fn settle_positions(&mut self) {
        let oldest_in_flight = self.writes.keys().next().copied();
        while let Some(entry) = self.completed_early.first_entry() {
            if oldest_in_flight.is_some_and(|oldest| *entry.key() > oldest) {
                break;
            }
            let p = entry.remove();
            self.working.applied = self.working.applied.max(p);
        }
    }

    fn persisted(&mut self, token: IoToken, out: &mut Vec<Action<P>>) {
        let Some(persist) = self.persist.take_if(|p| p.token == token) else {
            return;
        };
        self.durable = persist.record;
        for (link_id, seq) in persist.covers {
            let Some(link) = self.links.get_mut(&link_id) else {
                continue;
            };
            if link.epoch < self.working.epoch {
                continue; // Refused already; see `EpochChange`.
            }
            let standing = match persist.epoch_ack {
                Some((l, standing)) if l == link_id => Some(standing),
                _ => None,
            };
            debug_assert!(seq <= link.processed, "acknowledging what was not applied");
            if seq > link.acked || standing.is_some() {
                link.acked = link.acked.max(seq);
                out.push(Action::Send {
                    peer: link.peer,
                    link: link_id,
                    epoch: self.working.epoch,
                    frame: Frame::Ack {
                        durable_through: seq,
                        standing,
                    },
                });
            }
        }
    }
}

fn ranges_overlap(a: ByteRange, b: ByteRange) -> bool {
    let a_end = a.end().unwrap_or(u64::MAX);
    let b_end = b.end().unwrap_or(u64::MAX);
    a.offset < b_end && b.offset < a_end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{LinkDirection, Member, Position, Previous};
    use crate::wire::ReplicationMode;

    type Actions = Vec<Action<u64>>;

    const PRIMARY: NodeId = NodeId(1);
    const LINK: LinkId = LinkId(7);

    fn membership() -> Membership {
        let sync = |n| Member {
            node: NodeId(n),
            mode: ReplicationMode::Sync,
        };
        Membership {
            members: vec![sync(1), sync(2)],
            primary: PRIMARY,
            write_quorum: 2,
            since: Epoch(0),
            previous: None,
        }
    }

    /// A replica in epoch 3 with a link from the primary.
    fn replica() -> Replica<u64> {
        replica_standing(Standing {
            epoch: Epoch(3),
            synced: Epoch(3),
            applied: Position::ZERO,
            consistent: true,
            amnesiac: false,
        })
    }

    /// A replica of `membership()` with `standing` and a link from the
    /// primary.
    fn replica_standing(standing: Standing) -> Replica<u64> {
        let geometry = Geometry::new(4096, 16384, 4).expect("geometry");
        let record = DurableRecord {
            membership: membership(),
            standing,
            intent: Vec::new(),
        };
        let mut r = Replica::new(geometry, ReplicaLimits::default(), record, 0);
        let up = Event::LinkUp {
            peer: PRIMARY,
            link: LINK,
            direction: LinkDirection::Inbound,
        };
        r.handle(0, up, &mut Actions::new());
        r
    }

    fn handle(r: &mut Replica<u64>, event: Event<u64>) -> Actions {
        let mut out = Actions::new();
        r.handle(0, event, &mut out);
        out
    }

    fn receive(r: &mut Replica<u64>, epoch: u64, frame: Frame<u64>) -> Actions {
        let event = Event::Received {
            peer: PRIMARY,
            link: LINK,
            epoch: Epoch(epoch),
            frame,
        };
        handle(r, event)
    }

    fn persist(out: &Actions) -> (IoToken, DurableRecord) {
        out.iter()
            .find_map(|a| match a {
                Action::Persist { token, record } => Some((*token, record.clone())),
                _ => None,
            })
            .expect("a persist")
    }

    fn local_write(out: &Actions) -> IoToken {
        out.iter()
            .find_map(|a| match a {
                Action::LocalWrite { token, .. } => Some(*token),
                _ => None,
            })
            .expect("a local write")
    }

    fn acks(out: &Actions) -> Vec<(Sequence, Option<Standing>)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send {
                    frame:
                        Frame::Ack {
                            durable_through,
                            standing,
                        },
                    ..
                } => Some((*durable_through, *standing)),
                _ => None,
            })
            .collect()
    }

    fn nack(out: &Actions) -> Option<NackReason> {
        out.iter().find_map(|a| match a {
            Action::Send {
                frame: Frame::Nack { reason, .. },
                ..
            } => Some(*reason),
            _ => None,
        })
    }

    fn epoch_change(seq: u64) -> Frame<u64> {
        Frame::EpochChange {
            seq: Sequence(seq),
            membership: membership(),
        }
    }

    fn write(seq: u64, index: u64) -> Frame<u64> {
        Frame::Write {
            seq: Sequence(seq),
            position: Some(Position {
                epoch: Epoch(4),
                index,
            }),
            range: ByteRange::new(0, 4096),
            data: index,
            fua: false,
        }
    }

    fn resync(seq: u64, op: ResyncOp) -> Frame<u64> {
        Frame::Resync {
            seq: Sequence(seq),
            op,
        }
    }

    #[test]
    fn acknowledges_only_what_a_persist_made_durable() {
        let mut r = replica();
        let out = receive(&mut r, 4, epoch_change(1));
        assert!(acks(&out).is_empty(), "no ack before the epoch is durable");
        let (token, record) = persist(&out);
        assert_eq!(record.standing.epoch, Epoch(4));
        let out = handle(&mut r, Event::Persisted { token });
        let reported = acks(&out);
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].0, Sequence(1));
        assert_eq!(
            reported[0].1.map(|s| s.epoch),
            Some(Epoch(3)),
            "the standing before"
        );

        let out = receive(&mut r, 4, write(2, 1));
        let written = local_write(&out);
        assert!(acks(&out).is_empty());
        let out = handle(
            &mut r,
            Event::LocalWriteDone {
                token: written,
                result: Ok(()),
            },
        );
        assert!(acks(&out).is_empty(), "written is not durable");
        assert_eq!(applied(&out), vec![Sequence(2)], "but it is applied");
        assert!(!out.iter().any(|a| matches!(a, Action::Persist { .. })));
        // Quiet for a tick: the batch is made durable.
        let (token, record) = persist(&handle(&mut r, Event::Tick));
        assert_eq!(record.standing.applied.index, 1);
        let out = handle(&mut r, Event::Persisted { token });
        assert_eq!(acks(&out), vec![(Sequence(2), None)]);
    }

    fn applied(out: &Actions) -> Vec<Sequence> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send {
                    frame: Frame::Applied { applied_through },
                    ..
                } => Some(*applied_through),
                _ => None,
            })
            .collect()
    }

    /// A replica in epoch 4 with the epoch change acknowledged.
    fn accepted() -> Replica<u64> {
        let mut r = replica();
        let (token, _) = persist(&receive(&mut r, 4, epoch_change(1)));
        handle(&mut r, Event::Persisted { token });
        r
    }

    /// Killed after acknowledging a write applied, before any persist, a
    /// replica must come back claiming it: the standing noted before the
    /// acknowledgement (its record alone would under-report it, and an
    /// election could overlook the write).
    #[test]
    fn what_it_acknowledges_applied_is_noted_first_and_recovered() {
        let mut r = accepted();
        let token = local_write(&receive(&mut r, 4, write(2, 1)));
        let out = handle(
            &mut r,
            Event::LocalWriteDone {
                token,
                result: Ok(()),
            },
        );
        let note = out.iter().position(|a| matches!(a, Action::Note { .. }));
        let ack = out.iter().position(|a| {
            matches!(
                a,
                Action::Send {
                    frame: Frame::Applied { .. },
                    ..
                }
            )
        });
        assert!(note.is_some() && ack.is_some() && note < ack, "{out:?}");
        let Some(Action::Note { standing }) = note.map(|i| out[i].clone()) else {
            unreachable!()
        };
        let applied = Position {
            epoch: Epoch(4),
            index: 1,
        };
        assert_eq!(standing.applied, applied);

        let record = r.durable_record().clone();
        assert!(record.standing.applied < applied, "not persisted yet");
        let geometry = Geometry::new(4096, 16384, 4).expect("geometry");
        let limits = ReplicaLimits::default();
        let back = Replica::<u64>::recover(geometry, limits, record.clone(), Some(standing), 0);
        assert_eq!(back.standing().applied, applied);
        let lost = Replica::<u64>::recover(geometry, limits, record, None, 0);
        assert!(
            lost.standing().applied < applied,
            "a power loss loses the note"
        );
    }

    /// Node 2 campaigns in `epoch` with `membership`; the outcome.
    fn campaign(r: &mut Replica<u64>, epoch: u64, membership: Membership) -> Actions {
        let other = LinkId(8);
        let up = Event::LinkUp {
            peer: NodeId(2),
            link: other,
            direction: LinkDirection::Inbound,
        };
        handle(r, up);
        let frame = Frame::EpochChange {
            seq: Sequence(1),
            membership: Membership {
                primary: NodeId(2),
                ..membership
            },
        };
        let received = Event::Received {
            peer: NodeId(2),
            link: other,
            epoch: Epoch(epoch),
            frame,
        };
        handle(r, received)
    }

    /// Whether `out` refuses node 2's epoch as stale.
    fn refused_candidate(out: &Actions) -> bool {
        out.iter().any(|a| {
            matches!(
                a,
                Action::Send {
                    peer: NodeId(2),
                    frame: Frame::Nack {
                        reason: NackReason::StaleEpoch { .. },
                        ..
                    },
                    ..
                }
            )
        })
    }

    /// W lowered to 1 in `since`.
    fn lowered(since: u64) -> Membership {
        Membership {
            write_quorum: 1,
            since: Epoch(since),
            ..membership()
        }
    }

    /// A candidate that missed a membership change this copy took is
    /// refused: it must not be elected under the membership it still holds.
    /// With the same copies and W it may campaign, whatever its `since`;
    /// this copy keeps its own record of them.
    #[test]
    fn an_epoch_with_an_older_membership_is_refused() {
        let mut r = replica();
        let previous = Previous {
            members: membership().members,
            write_quorum: 2,
            primary: PRIMARY,
        };
        let change = Frame::EpochChange {
            seq: Sequence(1),
            membership: Membership {
                previous: Some(previous.clone()),
                ..lowered(4)
            },
        };
        let (token, _) = persist(&receive(&mut r, 4, change));
        handle(&mut r, Event::Persisted { token });
        let out = campaign(&mut r, 5, membership());
        assert!(refused_candidate(&out), "{out:?}");
        assert_eq!(r.epoch(), Epoch(4));

        let same = Membership {
            since: Epoch(2),
            ..lowered(0)
        };
        let out = campaign(&mut r, 6, same);
        assert!(!refused_candidate(&out), "{out:?}");
        let (token, record) = persist(&out);
        assert_eq!(record.standing.epoch, Epoch(6));
        assert_eq!(record.membership.since, Epoch(4), "the later since stays");
        assert_eq!(
            record.membership.previous,
            Some(previous),
            "and so does the change it may have to finish"
        );
        assert_eq!(record.membership.primary, NodeId(2));
        handle(&mut r, Event::Persisted { token });
    }

    /// Seed 262951 of the simulation: a change made in epoch 3 that only
    /// its primary took, superseded by a primary of epoch 5 elected under
    /// the membership before it. This copy holds that primary's writes:
    /// the change must not come back with its maker, or no candidate can
    /// be elected again (the newest copy may be async under it).
    #[test]
    fn a_superseded_membership_change_is_refused() {
        let mut r = replica_standing(Standing {
            epoch: Epoch(5),
            synced: Epoch(3),
            applied: Position {
                epoch: Epoch(5),
                index: 4,
            },
            consistent: true,
            amnesiac: false,
        });
        let out = campaign(&mut r, 9, lowered(3));
        assert!(refused_candidate(&out), "{out:?}");
        assert_eq!(r.epoch(), Epoch(5));
        // From the epoch its data was written in on, the change is news.
        let out = campaign(&mut r, 10, lowered(5));
        assert!(!refused_candidate(&out), "{out:?}");
        assert_eq!(persist(&out).1.standing.epoch, Epoch(10));
    }

    #[test]
    fn a_fua_write_is_made_durable_at_once() {
        let mut r = accepted();
        let fua = Frame::Write {
            seq: Sequence(2),
            position: Some(Position {
                epoch: Epoch(4),
                index: 1,
            }),
            range: ByteRange::new(0, 4096),
            data: 1,
            fua: true,
        };
        let written = local_write(&receive(&mut r, 4, fua));
        // Nothing more is applied until the persist has started.
        assert!(receive(&mut r, 4, write(3, 2)).is_empty());
        let done = Event::LocalWriteDone {
            token: written,
            result: Ok(()),
        };
        let (token, _) = persist(&handle(&mut r, done));
        let out = handle(&mut r, Event::Persisted { token });
        assert_eq!(acks(&out), vec![(Sequence(2), None)]);
        local_write(&out);
    }

    #[test]
    fn a_flush_waits_for_the_writes_before_it_then_persists() {
        let mut r = accepted();
        let written = local_write(&receive(&mut r, 4, write(2, 1)));
        let out = receive(&mut r, 4, Frame::Flush { seq: Sequence(3) });
        assert!(!out.iter().any(|a| matches!(a, Action::Persist { .. })));
        let done = Event::LocalWriteDone {
            token: written,
            result: Ok(()),
        };
        let (token, _) = persist(&handle(&mut r, done));
        let out = handle(&mut r, Event::Persisted { token });
        assert_eq!(acks(&out), vec![(Sequence(3), None)]);
    }

    #[test]
    fn applied_counts_only_writes_done_in_order() {
        let mut r = accepted();
        let first = local_write(&receive(&mut r, 4, write(2, 1)));
        let other_block = Frame::Write {
            seq: Sequence(3),
            position: Some(Position {
                epoch: Epoch(4),
                index: 2,
            }),
            range: ByteRange::new(4096, 4096),
            data: 2,
            fua: false,
        };
        let second = local_write(&receive(&mut r, 4, other_block));
        let done = |token| Event::LocalWriteDone {
            token,
            result: Ok(()),
        };
        assert!(
            applied(&handle(&mut r, done(second))).is_empty(),
            "seq 2 is not done"
        );
        assert_eq!(applied(&handle(&mut r, done(first))), vec![Sequence(3)]);
    }

    #[test]
    fn a_full_batch_forces_a_persist() {
        let mut r = accepted();
        let batch = ReplicaLimits::default().persist_batch;
        let mut persisted = false;
        for i in 0..batch {
            let frame = Frame::Write {
                seq: Sequence(2 + i),
                position: Some(Position {
                    epoch: Epoch(4),
                    index: 1 + i,
                }),
                range: ByteRange::new(0, 4096),
                data: i,
                fua: false,
            };
            let token = local_write(&receive(&mut r, 4, frame));
            let out = handle(
                &mut r,
                Event::LocalWriteDone {
                    token,
                    result: Ok(()),
                },
            );
            persisted |= out.iter().any(|a| matches!(a, Action::Persist { .. }));
        }
        assert!(persisted, "{batch} frames applied and none persisted");
    }

    #[test]
    fn refuses_an_older_epoch_with_its_own() {
        let mut r = replica();
        let out = receive(&mut r, 2, write(1, 1));
        assert_eq!(
            nack(&out),
            Some(NackReason::StaleEpoch { current: Epoch(3) })
        );
        assert!(out.iter().any(|a| matches!(a, Action::CloseLink { .. })));
        assert!(!out.iter().any(|a| matches!(a, Action::LocalWrite { .. })));
    }

    #[test]
    fn refuses_a_newer_epoch_it_was_not_told_about() {
        let mut r = replica();
        let out = receive(&mut r, 5, write(1, 1));
        assert_eq!(
            nack(&out),
            Some(NackReason::EpochAhead { current: Epoch(3) })
        );
    }

    #[test]
    fn refuses_a_gap_or_a_repeat() {
        let mut r = replica();
        let out = receive(&mut r, 3, write(2, 1));
        assert_eq!(
            nack(&out),
            Some(NackReason::OutOfOrder {
                expected: Sequence(1)
            })
        );
    }

    #[test]
    fn a_write_waits_for_an_overlapping_one_in_flight() {
        let mut r = replica();
        let (token, _) = persist(&receive(&mut r, 4, epoch_change(1)));
        handle(&mut r, Event::Persisted { token });
        let first = local_write(&receive(&mut r, 4, write(2, 1)));
        let out = receive(&mut r, 4, write(3, 2));
        assert!(out.is_empty(), "the overlapping write must wait");
        let out = handle(
            &mut r,
            Event::LocalWriteDone {
                token: first,
                result: Ok(()),
            },
        );
        local_write(&out);
    }

    /// Back without a note from this boot (a power loss), a copy that held
    /// data may have acknowledged writes as applied that it lost: it says
    /// so in the standing it reports, durably, until a primary brought it
    /// consistent again. Killed (its note survives), it is not amnesiac.
    #[test]
    fn a_copy_back_from_a_power_loss_is_amnesiac_until_resynced() {
        let geometry = Geometry::new(4096, 16384, 4).expect("geometry");
        let record = replica().durable_record().clone();
        let killed = Replica::<u64>::recover(
            geometry,
            ReplicaLimits::default(),
            record.clone(),
            Some(record.standing),
            0,
        );
        assert!(!killed.standing().amnesiac);
        let blank = DurableRecord {
            standing: Standing::BLANK,
            ..record.clone()
        };
        let new = Replica::<u64>::recover(geometry, ReplicaLimits::default(), blank, None, 0);
        assert!(
            !new.standing().amnesiac,
            "a blank copy acknowledged nothing"
        );

        let mut r = Replica::recover(geometry, ReplicaLimits::default(), record, None, 0);
        assert!(r.standing().amnesiac);
        let up = Event::LinkUp {
            peer: PRIMARY,
            link: LINK,
            direction: LinkDirection::Inbound,
        };
        handle(&mut r, up);
        let (token, recorded) = persist(&receive(&mut r, 4, epoch_change(1)));
        assert!(recorded.standing.amnesiac, "kept in the record");
        let reported = acks(&handle(&mut r, Event::Persisted { token }));
        assert!(
            matches!(reported[..], [(_, Some(s))] if s.amnesiac),
            "reported to the candidate: {reported:?}"
        );
        let begin = ResyncOp::Begin {
            region_size: 16384,
            region_count: 0,
        };
        let (token, _) = persist(&receive(&mut r, 4, resync(2, begin)));
        handle(&mut r, Event::Persisted { token });
        let (token, recorded) = persist(&receive(&mut r, 4, resync(3, ResyncOp::End)));
        assert!(!recorded.standing.amnesiac, "consistent again");
        handle(&mut r, Event::Persisted { token });
        assert!(!r.standing().amnesiac);
    }

    #[test]
    fn is_inconsistent_durably_from_begin_to_end() {
        let mut r = replica();
        let (token, _) = persist(&receive(&mut r, 4, epoch_change(1)));
        handle(&mut r, Event::Persisted { token });
        let begin = ResyncOp::Begin {
            region_size: 16384,
            region_count: 1,
        };
        let (token, record) = persist(&receive(&mut r, 4, resync(2, begin)));
        assert!(!record.standing.consistent);
        assert_eq!(acks(&handle(&mut r, Event::Persisted { token })).len(), 1);
        let (token, record) = persist(&receive(&mut r, 4, resync(3, ResyncOp::End)));
        assert!(record.standing.consistent);
        assert_eq!(record.standing.synced, Epoch(4));
        assert_eq!(acks(&handle(&mut r, Event::Persisted { token })).len(), 1);
    }

    fn local_read(out: &Actions) -> Option<(IoToken, ByteRange)> {
        out.iter().find_map(|a| match a {
            Action::LocalRead { token, range } => Some((*token, *range)),
            _ => None,
        })
    }

    fn read_response(out: &Actions) -> Option<(Sequence, ByteRange, u64)> {
        out.iter().find_map(|a| match a {
            Action::Send {
                frame: Frame::ReadResponse { seq, range, data },
                ..
            } => Some((*seq, *range, *data)),
            _ => None,
        })
    }

    /// A degraded read is served in stream order: after the overlapping
    /// write before it completed on the device, never before it.
    #[test]
    fn a_read_request_is_served_after_the_writes_before_it() {
        let mut r = accepted();
        let written = local_write(&receive(&mut r, 4, write(2, 1)));
        let request = Frame::ReadRequest {
            seq: Sequence(3),
            range: ByteRange::new(0, 8192),
        };
        let out = receive(&mut r, 4, request);
        assert!(
            local_read(&out).is_none(),
            "the write to block 0 is in flight"
        );
        let out = handle(
            &mut r,
            Event::LocalWriteDone {
                token: written,
                result: Ok(()),
            },
        );
        let (token, range) = local_read(&out).expect("read once the write is done");
        assert_eq!(range, ByteRange::new(0, 8192));
        assert_eq!(
            applied(&out),
            vec![Sequence(2)],
            "the read is not answered yet"
        );
        // A later write to the range waits for the read.
        assert!(!receive(&mut r, 4, write(4, 2))
            .iter()
            .any(|a| matches!(a, Action::LocalWrite { .. })));
        let out = handle(
            &mut r,
            Event::LocalReadDone {
                token,
                result: Ok(42),
            },
        );
        assert_eq!(
            read_response(&out),
            Some((Sequence(3), ByteRange::new(0, 8192), 42))
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::LocalWrite { .. })),
            "the write after the read goes on"
        );
    }

    /// A read its device fails is refused (the primary asks another copy)
    /// and closes the link; the copy stays consistent, since nothing in it
    /// changed.
    #[test]
    fn a_failed_read_is_refused_and_leaves_the_copy_consistent() {
        let mut r = accepted();
        let request = Frame::ReadRequest {
            seq: Sequence(2),
            range: ByteRange::new(4096, 4096),
        };
        let (token, _) = local_read(&receive(&mut r, 4, request)).expect("a read");
        let out = handle(
            &mut r,
            Event::LocalReadDone {
                token,
                result: Err(IoError),
            },
        );
        assert_eq!(nack(&out), Some(NackReason::MediaError));
        assert!(read_response(&out).is_none());
        assert!(r.standing().consistent);
        // A read across two regions is refused outright.
        let mut r = accepted();
        let across = Frame::ReadRequest {
            seq: Sequence(2),
            range: ByteRange::new(12288, 8192),
        };
        assert_eq!(
            nack(&receive(&mut r, 4, across)),
            Some(NackReason::OutOfRange)
        );
    }
}
