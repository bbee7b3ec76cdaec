//! The primary side of a stream: sequencing, ordering, quorum, windows, the
//! write-intent bitmap, resync and elections.
//!
//! Life of a primary (`Phase`): it is created by a promotion, durably takes
//! the new epoch, sends `EpochChange` to every replica it can reach and
//! collects their standings (`election`). Once a fence quorum of sync copies
//! has accepted the epoch, it serves only if its own copy holds every write
//! any of them may hold acknowledged; otherwise it retires. Serving, it runs
//! host writes (`host`) and brings each replica up to date (`resync`). A
//! `StaleEpoch` refusal from any replica deposes it: every host command still
//! pending fails with a path error and the node turns back into a replica.
//!
//! Ordering rules, all enforced in `host`:
//! - an operation never starts while an earlier overlapping one still holds
//!   its range (a host write until its local write completes, a region copy
//!   until its local read completes), so overlapping operations reach the
//!   local device and every stream in admission order;
//! - a write issues only once its region is durable in the bitmap;
//! - a write is acknowledged only when applied locally and on enough sync
//!   replicas to make the write quorum, and with FUA only when durable on
//!   them (the NVMe volatile-write-cache contract, kept for the quorum);
//! - a flush is acknowledged only when every write admitted before it is
//!   durable on a write quorum: the local device flushed after those writes
//!   completed, and durable acks from enough sync replicas; and once a
//!   write quorum holds durably the writes acknowledged before this epoch
//!   (`inheritance`).

mod election;
mod host;
mod inheritance;
mod lease;
mod peer;
mod read;
mod reconfigure;
mod resync;
mod scrub;

pub use reconfigure::ReconfigureRefusal;
pub use scrub::ScrubStatus;
/// A replica as its primary sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView {
    /// The replica's node.
    pub node: NodeId,
    /// Sync (in the quorum) or async.
    pub mode: ReplicationMode,
    /// Where it stands.
    pub state: ReplicaState,
    /// Regions it may lack (its dirty set in the write-intent bitmap).
    pub regions_to_resync: u64,
    /// Regions in the volume.
    pub regions: u64,
    /// Bytes sent or queued to it and not acknowledged.
    pub lag_bytes: u64,
    /// Age of its oldest unacknowledged frame.
    pub lag_time: Time,
}

/// The state of a replica's copy, as reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// No link.
    Down,
    /// Linked, the epoch handshake not finished.
    Connecting,
    /// Being brought up to date region by region.
    Resyncing,
    /// Streaming, but regions it missed are still to copy.
    OutOfDate,
    /// Streaming and lacking nothing.
    InSync,
}

impl ReplicaState {
    /// The name status reports use.
    pub fn name(self) -> &'static str {
        match self {
            ReplicaState::Down => "down",
            ReplicaState::Connecting => "connecting",
            ReplicaState::Resyncing => "resyncing",
            ReplicaState::OutOfDate => "out_of_date",
            ReplicaState::InSync => "in_sync",
        }
    }
}

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use crate::core::bitmap::WriteIntentBitmap;
use crate::core::frame::Frame;
use crate::core::geometry::Geometry;
use crate::core::ids::{HostOpId, IoToken, LinkId, Position, Time};
use crate::core::io::{Action, Event, HostStatus, LinkDirection};
use crate::core::membership::Membership;
use crate::core::recent::RecentWrites;
use crate::core::record::{DurableRecord, Standing};
use crate::wire::{ByteRange, Epoch, NackReason, NodeId, RegionIndex, ReplicationMode, Sequence};

use peer::{Link, LinkPhase, Peer, Purpose, Queued, Sent};
use reconfigure::{Quorum, Transition};

/// Grants of `Event::ResyncCredit` a primary banks at most.
const MAX_BANKED_GRANTS: u32 = 4;

/// Epochs a primary remembers having held (older ones: copies synced in
/// them get a full copy instead of a bitmap resync).
const MAX_HELD_EPOCHS: usize = 64;

/// Bounds on what one primary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryLimits {
    /// Host commands admitted and not yet finished; beyond, `Busy`.
    pub max_host_ops: usize,
    /// Sequenced frames sent and not yet applied, per replica.
    pub window_frames: usize,
    /// Sequenced frames sent and not yet durable, per replica; beyond, the
    /// window waits (the replica persists at least every
    /// `ReplicaLimits::persist_batch` frames).
    pub max_unsynced_frames: usize,
    /// Host writes admitted and not yet durable on a write quorum (a later
    /// flush must find them); beyond, `Busy`.
    pub max_unsettled_writes: usize,
    /// Frames waiting for window room per replica; beyond, the replica is
    /// out of date: its link is closed and it is resynced later.
    pub max_queued_frames: usize,
    /// An async replica further behind than this many bytes is out of date.
    pub async_max_lag_bytes: u64,
    /// An async replica whose oldest unacknowledged frame is older than this
    /// is out of date.
    pub async_max_lag_time: Time,
    /// A sync replica whose oldest frame not yet applied is older than
    /// this is out of date: a copy that is connected but acknowledges
    /// nothing (a stuck disk, a frozen process) must not hold writes that
    /// need it, or the bitmap's resync, for ever. (Async replicas have
    /// their own bound, `async_max_lag_time`, which an operator may set far
    /// higher for a distant site.)
    pub ack_timeout: Time,
    /// Region copies in flight per resyncing replica.
    pub resync_regions_in_flight: usize,
    /// How long a write-intent bit stays set after its region's last write
    /// settled (each set costs a persist in a write's path).
    pub bitmap_hold: Time,
    /// When set, a region copy, or a scrub's check of a region on one
    /// replica, starts only with a credit granted by `Event::ResyncCredit`
    /// (the driver's rate limiter); credits bank for a few grants at most.
    pub resync_paced: bool,
    /// How long a read lease lasts (0: no leases). With leases, a primary
    /// serves host reads only while a write quorum of copies answered it
    /// within half of this, and a newly elected primary serves only this
    /// long after its election: a deposed primary cut off from the copies
    /// has stopped serving reads by then (`lease`).
    pub read_lease: Time,
    /// Test-only mutation: complete host writes once the local copy is
    /// durable, ignoring the quorum. The simulation must catch it.
    #[cfg(test)]
    pub(crate) mutation_ack_after_local_only: bool,
}

impl Default for PrimaryLimits {
    fn default() -> Self {
        Self {
            max_host_ops: 128,
            window_frames: 32,
            max_unsynced_frames: 1024,
            max_unsettled_writes: 4096,
            max_queued_frames: 256,
            async_max_lag_bytes: 64 << 20,
            async_max_lag_time: 5_000_000_000,
            ack_timeout: 10_000_000_000,
            resync_regions_in_flight: 4,
            bitmap_hold: 2_000_000_000,
            resync_paced: false,
            read_lease: 0,
            #[cfg(test)]
            mutation_ack_after_local_only: false,
        }
    }
}

/// What a node brings to its promotion.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// Its durable record (with the standing it would report).
    pub record: DurableRecord,
    /// The writes it applied last as a replica.
    pub recent: RecentWrites,
    /// The epoch it is promoted to.
    pub epoch: Epoch,
}

/// Where the primary stands in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Writing the record that takes the new epoch.
    TakingEpoch,
    /// Collecting standings from the replicas.
    Electing,
    /// Won; writing the record that makes it primary.
    Activating,
    /// Serving host I/O.
    Serving,
    /// Lost the election or deposed: the node becomes a replica.
    Retired,
}

/// What an outstanding local I/O is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoPurpose {
    LocalWrite { key: u64 },
    CopyRead { key: u64 },
    CheckRead { key: u64 },
    Repair { key: u64 },
    Persist,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteStage {
    /// Admitted, not issued (ordering or bitmap).
    Waiting,
    /// Local write and replica frames issued.
    Issued,
    /// Local copy written (durable too, for FUA).
    LocalDone,
    /// Local device failed it.
    LocalFailed,
}

#[derive(Debug, Clone)]
struct HostWrite<P> {
    id: HostOpId,
    range: ByteRange,
    region: RegionIndex,
    /// Held until issued.
    data: Option<P>,
    /// Force unit access: complete only once durable on the quorum.
    fua: bool,
    stage: WriteStage,
    /// Sync replicas that applied it (durably or not).
    applied_on: BTreeSet<NodeId>,
    /// Sync replicas holding it durably.
    durable_on: BTreeSet<NodeId>,
    /// Replicas it was sent to that have not acknowledged it yet.
    awaiting: BTreeSet<NodeId>,
    completed: bool,
    settled: bool,
}

#[derive(Debug, Clone, Copy)]
struct RegionCopy {
    peer: NodeId,
    link: LinkId,
    region: RegionIndex,
    reading: bool,
}

/// A host flush: every write admitted before it must become durable on a
/// write quorum.
#[derive(Debug, Clone, Copy)]
struct HostFlush {
    id: HostOpId,
    /// `Flush` frames sent (once every earlier write finished locally).
    started: bool,
    /// The local persist (device flush) that covers the earlier writes.
    persist: Option<IoToken>,
    local_durable: bool,
}

#[derive(Debug, Clone)]
enum Op<P> {
    Write(HostWrite<P>),
    Copy(RegionCopy),
    Flush(HostFlush),
    Repair(read::Repair<P>),
    Check(scrub::RegionCheck<P>),
}

/// The primary state machine for one stream of a volume.
#[derive(Debug, Clone)]
pub struct Primary<P> {
    me: NodeId,
    geometry: Geometry,
    limits: PrimaryLimits,
    epoch: Epoch,
    /// The epochs this primary has held: the one it was promoted in and
    /// those its membership changes took (at most `MAX_HELD_EPOCHS`, the
    /// latest). A copy it synced in any of them is tracked by its bitmap.
    /// (Not a range: another node may have taken an epoch in between.)
    held_epochs: Vec<Epoch>,
    membership: Membership,
    /// A membership change still reaching the copies.
    transition: Option<Transition>,
    /// What host writes need (from the membership and the transition).
    quorum: Quorum,
    /// The record being persisted, durable once `Persisted` says so.
    persisting: Option<DurableRecord>,
    /// This copy's standing before the promotion.
    prior: Standing,
    phase: Phase,
    /// Standings of the copies that accepted the epoch (the election).
    standings: BTreeMap<NodeId, Standing>,
    /// Sync members that accepted the epoch, blank ones included (this
    /// one too): when all have, no standing is missing.
    fenced: BTreeSet<NodeId>,
    /// The newest standing the election heard (this copy's included),
    /// once won: every write acknowledged before this epoch lies at or
    /// below it.
    inherited_bound: Option<Position>,
    /// Replicas known to hold durably every write acknowledged before this
    /// epoch (`inheritance`). Its own copy does since its activation.
    inheritance_on: BTreeSet<NodeId>,
    /// Replicas that will hold the inheritance once these regions are
    /// copied to them (`inheritance`).
    inheritance_regions: BTreeMap<NodeId, BTreeSet<RegionIndex>>,
    /// The writes this copy applied last as a replica (`inheritance`).
    recent: RecentWrites,
    activation: Option<IoToken>,
    /// The activation record is durable.
    activated: bool,
    /// When it may start serving, once won (`lease`).
    serve_from: Time,
    /// Last record known durable.
    durable: DurableRecord,
    next_index: u64,
    next_key: u64,
    next_token: u64,
    ops: BTreeMap<u64, Op<P>>,
    /// Host flushes among `ops`: the passes that look for flushes are
    /// skipped on every event while there are none (the common case).
    flushes: usize,
    /// Waiting host writes and region copies among `ops`: the pass that
    /// starts operations is skipped on every event while there are none.
    startable: usize,
    /// Host writes completed to the host and not yet durable on a write
    /// quorum or not yet settled in the bitmap: out of `ops`, so the
    /// per-event passes over `ops` stay as short as the host's queue.
    tail: BTreeMap<u64, HostWrite<P>>,
    io: BTreeMap<IoToken, IoPurpose>,
    /// Degraded reads waiting for a replica's answer.
    reads: BTreeMap<HostOpId, read::DegradedRead>,
    /// Degraded reads written back to the local copy.
    read_repairs: u64,
    /// Scrubbing (`scrub.rs`).
    scrub: ScrubStatus,
    peers: BTreeMap<NodeId, Peer<P>>,
    bitmap: WriteIntentBitmap,
    resync_credits: u32,
    /// Credits a scrub region took beyond those it had (its checks start
    /// together): paid from the next grants.
    resync_debt: u32,
}

impl<P: Clone + PartialEq> Primary<P> {
    /// Starts a promotion of this node to primary of `epoch`, from its
    /// durable `record` and the writes it applied last as a replica
    /// (`recent`; the node must be idle). I/O tokens start at
    /// `first_token`.
    pub fn promote(
        me: NodeId,
        geometry: Geometry,
        limits: PrimaryLimits,
        from: Promotion,
        first_token: u64,
        out: &mut Vec<Action<P>>,
    ) -> Self {
        let Promotion {
            record,
            recent,
            epoch,
        } = from;
        debug_assert!(
            epoch > record.standing.epoch,
            "a promotion must raise the epoch"
        );
        let prior = record.standing;
        let mut membership = record.membership.with_primary(me);
        // The newest writes this copy applied as a replica were made under
        // its membership: a change made earlier, that some copy holds and
        // this one never took, was superseded (see `Membership::since`).
        membership.since = membership.since.max(prior.replicated_epoch());
        debug_assert!(membership.is_valid(), "promoted with an invalid membership");
        // A former primary of its epoch inherits its bitmap: the regions
        // every copy it synced may lack. Anyone else will copy everything to
        // everyone (`election`).
        let inherited: Vec<RegionIndex> = if prior.is_primary_of_own_epoch() {
            record.intent.clone()
        } else {
            Vec::new()
        };
        let mut bitmap = WriteIntentBitmap::new(record.intent.iter().copied(), limits.bitmap_hold);
        let mut peers = BTreeMap::new();
        for member in membership.members.iter().filter(|m| m.node != me) {
            for region in &inherited {
                bitmap.mark_dirty(member.node, *region);
            }
            peers.insert(
                member.node,
                Peer {
                    mode: member.mode,
                    link: None,
                    leaving: false,
                },
            );
        }
        // A membership change that may not have reached a write quorum of
        // the old copies yet: this primary finishes it. Its epoch carries
        // the new membership to the old copies too (those removed take it
        // and leave), and writes need both write quorums until enough old
        // sync copies took it.
        let transition = membership.previous.clone().map(|old| {
            for member in old.members.iter().filter(|m| m.node != me) {
                peers.entry(member.node).or_insert(Peer {
                    mode: member.mode,
                    link: None,
                    leaving: true,
                });
            }
            // The node that made the change recorded it before announcing
            // it: it holds the change already.
            // (This node, if it was that one, counts as the local copy.)
            let accepted = (old.primary != me)
                .then_some(old.primary)
                .into_iter()
                .collect();
            Transition {
                old,
                new: membership.clone(),
                epoch,
                stage: reconfigure::Stage::Announced { accepted },
            }
        });
        let mut primary = Self {
            me,
            geometry,
            limits,
            epoch,
            held_epochs: vec![epoch],
            membership,
            transition,
            quorum: Quorum::none(),
            persisting: None,
            prior,
            phase: Phase::TakingEpoch,
            standings: BTreeMap::new(),
            fenced: BTreeSet::new(),
            inherited_bound: None,
            inheritance_on: BTreeSet::new(),
            inheritance_regions: BTreeMap::new(),
            recent,
            activation: None,
            activated: false,
            serve_from: 0,
            durable: record,
            next_index: 1,
            next_key: 0,
            next_token: first_token,
            ops: BTreeMap::new(),
            flushes: 0,
            startable: 0,
            tail: BTreeMap::new(),
            io: BTreeMap::new(),
            reads: BTreeMap::new(),
            read_repairs: 0,
            scrub: ScrubStatus::default(),
            peers,
            bitmap,
            resync_credits: 0,
            resync_debt: 0,
        };
        primary.refresh_quorum();
        primary.persist(out);
        primary
    }

    /// This primary's epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The membership of its epoch.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The copies it wants links to: the members and, during a membership
    /// change, the copies leaving (they must take the new epoch).
    pub fn link_targets(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.peers.keys().copied()
    }

    /// Whether a membership change is still reaching the copies (writes
    /// need the old write quorum as well meanwhile).
    pub fn is_reconfiguring(&self) -> bool {
        self.transition.is_some()
    }

    /// Whether it serves host I/O.
    pub fn is_serving(&self) -> bool {
        self.phase == Phase::Serving
    }

    /// Whether it lost its election or was deposed; the node must turn back
    /// into a replica.
    pub fn is_retired(&self) -> bool {
        self.phase == Phase::Retired
    }

    /// Last record known durable.
    pub fn durable_record(&self) -> &DurableRecord {
        &self.durable
    }

    /// Local I/O still outstanding (a retiring node waits for it).
    pub fn outstanding_io(&self) -> impl Iterator<Item = IoToken> + '_ {
        self.io.keys().copied()
    }

    /// The next I/O token it would use.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }

    /// What the primary knows of each replica now, for status reports
    /// (`keelctl volume status`). `now` ages the oldest unacknowledged frame.
    pub fn replica_views(&self, now: Time) -> Vec<ReplicaView> {
        self.peers
            .iter()
            .filter(|(_, peer)| !peer.leaving)
            .map(|(&node, peer)| {
                let dirty = self.bitmap.dirty_of(node).count() as u64;
                let (state, lag_bytes, lag_time) = match &peer.link {
                    None => (ReplicaState::Down, 0, 0),
                    Some(link) => {
                        let state = match link.phase {
                            LinkPhase::Handshake | LinkPhase::Accepted => ReplicaState::Connecting,
                            LinkPhase::Resyncing => ReplicaState::Resyncing,
                            LinkPhase::Streaming if dirty > 0 => ReplicaState::OutOfDate,
                            LinkPhase::Streaming => ReplicaState::InSync,
                        };
                        let age = link.oldest_unacked().map_or(0, |at| now.saturating_sub(at));
                        (state, link.unacked_bytes(), age)
                    }
                };
                ReplicaView {
                    node,
                    mode: peer.mode,
                    state,
                    regions_to_resync: dirty,
                    regions: self.geometry.region_count(),
                    lag_bytes,
                    lag_time,
                }
            })
            .collect()
    }

    /// Whether it serves, every replica is linked and in sync, nothing is
    /// dirty or set in the bitmap and no operation is pending: the stream
    /// is quiet.
    pub fn is_quiet(&self) -> bool {
        self.is_serving()
            && self.transition.is_none()
            && self.ops.is_empty()
            && self.tail.is_empty()
            && self.bitmap.is_clear()
            && self.peers.iter().all(|(node, peer)| {
                !self.bitmap.has_dirty(*node)
                    && peer
                        .link
                        .as_ref()
                        .is_some_and(|l| l.phase == LinkPhase::Streaming && l.in_flight.is_empty())
            })
    }

    /// Handles one event at time `now`; appends what to do to `out`.
    pub fn handle(&mut self, now: Time, event: Event<P>, out: &mut Vec<Action<P>>) {
        self.bitmap.advance(now);
        match event {
            Event::HostWrite {
                id,
                range,
                data,
                fua,
            } => self.admit_write(id, range, data, fua, out),
            Event::HostFlush { id } => self.admit_flush(id, out),
            Event::DegradedRead { id, range } => self.admit_degraded_read(now, id, range, out),
            Event::LocalWriteDone { token, result } => match self.io.remove(&token) {
                Some(IoPurpose::LocalWrite { key }) => {
                    self.local_write_done(key, result.is_ok(), out)
                }
                Some(IoPurpose::Repair { key }) => self.repair_done(key, result.is_ok()),
                _ => {}
            },
            Event::LocalReadDone { token, result } => match self.io.remove(&token) {
                Some(IoPurpose::CopyRead { key }) => {
                    self.copy_read_done(now, key, result.ok(), out)
                }
                Some(IoPurpose::CheckRead { key }) => self.check_read_done(key, result.ok()),
                _ => {}
            },
            Event::Persisted { token } => {
                if self.io.remove(&token) == Some(IoPurpose::Persist) {
                    self.persisted(token, now, out);
                }
            }
            Event::LinkUp {
                peer,
                link,
                direction: LinkDirection::Outbound,
            } => self.link_up(now, peer, link, out),
            Event::LinkUp { .. } => {}
            Event::LinkDown { peer, link } => {
                if self.link_id(peer) == Some(link) {
                    self.link_lost(peer);
                    // A copy that left the volume is not dialled again.
                    if self.transition.is_none() && self.peers.get(&peer).is_some_and(|p| p.leaving)
                    {
                        self.forget_peer(peer, out);
                    }
                }
            }
            Event::Received {
                peer,
                link,
                epoch,
                frame,
            } => {
                if self.link_id(peer) == Some(link) {
                    self.received(now, peer, epoch, frame, out);
                }
            }
            Event::Reconfigure { epoch, membership } => self.reconfigure(epoch, membership, out),
            // Banked for a few grants at most: a pace held while nothing
            // was copied does not turn into a burst.
            Event::ResyncCredit { regions } => {
                let paid = regions.min(self.resync_debt);
                self.resync_debt -= paid;
                let bank = regions.saturating_mul(MAX_BANKED_GRANTS).max(1);
                self.resync_credits = self.resync_credits.saturating_add(regions - paid).min(bank);
            }
            Event::HeartbeatAnswered {
                peer,
                link,
                sent_at,
            } => self.answered(peer, link, sent_at),
            Event::Scrub => {
                if self.phase == Phase::Serving {
                    self.start_scrub();
                }
            }
            // The node stops on a failed persist before the role sees it.
            Event::Promote { .. } | Event::Tick | Event::PersistFailed { .. } => {}
        }
        self.pump(now, out);
    }

    /// The replicas that are members (not leaving the volume).
    fn member_peers(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| !p.leaving)
            .map(|(n, _)| *n)
            .collect()
    }

    fn link_id(&self, peer: NodeId) -> Option<LinkId> {
        self.peers.get(&peer)?.link.as_ref().map(|l| l.id)
    }

    fn alloc_token(&mut self, purpose: IoPurpose) -> IoToken {
        let token = IoToken(self.next_token);
        self.next_token = self.next_token.wrapping_add(1);
        self.io.insert(token, purpose);
        token
    }

    /// The standing this copy has durably once the current phase's record
    /// is written.
    fn standing(&self) -> Standing {
        match self.phase {
            // Serving, it holds every write: whatever it forgot in a power
            // loss, the election made sure no acknowledged write was lost.
            Phase::Activating | Phase::Serving => Standing {
                epoch: self.epoch,
                synced: self.epoch,
                applied: Position::all_of(self.epoch),
                consistent: true,
                amnesiac: false,
            },
            Phase::TakingEpoch | Phase::Electing | Phase::Retired => Standing {
                epoch: self.epoch,
                ..self.prior
            },
        }
    }

    /// Writes the record with a fresh bitmap snapshot (after a device
    /// flush: it also makes every completed local write durable, which
    /// started flushes wait for).
    fn persist(&mut self, out: &mut Vec<Action<P>>) {
        let token = self.alloc_token(IoPurpose::Persist);
        self.flush_persist_started(token);
        let intent = self.bitmap.start_persist(token);
        let (membership, standing) = self.record_to_persist();
        let record = DurableRecord {
            membership,
            standing,
            intent,
        };
        if self.phase == Phase::Activating {
            self.activation = Some(token);
        }
        self.persisting = Some(record.clone());
        out.push(Action::Note {
            standing: record.standing,
        });
        out.push(Action::Persist { token, record });
    }

    fn persisted(&mut self, token: IoToken, now: Time, out: &mut Vec<Action<P>>) {
        if !self.bitmap.finish_persist(token) {
            return;
        }
        self.flush_persisted(token);
        if let Some(record) = self.persisting.take() {
            self.durable = DurableRecord {
                intent: self.bitmap.persisted().collect(),
                ..record
            };
        }
        match self.phase {
            Phase::TakingEpoch => {
                self.phase = Phase::Electing;
                let me = self.me;
                self.standings.insert(me, self.prior);
                self.fenced.insert(me);
                // Links that came up meanwhile now get the epoch.
                let linked: Vec<NodeId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.link.is_some())
                    .map(|(n, _)| *n)
                    .collect();
                for node in linked {
                    self.send_epoch_change(now, node, true, out);
                }
                self.decide_election(now, out);
            }
            Phase::Activating if self.activation == Some(token) => {
                self.activated = true;
                self.start_serving_when_due(now);
            }
            Phase::Serving => self.announce_if_durable(now, out),
            _ => {}
        }
    }

    fn link_up(&mut self, now: Time, peer: NodeId, link: LinkId, out: &mut Vec<Action<P>>) {
        if !self.peers.contains_key(&peer) || self.phase == Phase::Retired {
            out.push(Action::CloseLink { peer, link });
            return;
        }
        if self.link_id(peer).is_some() {
            self.link_lost(peer);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.link = Some(Link::new(link));
        }
        if self.phase != Phase::TakingEpoch {
            self.send_epoch_change(now, peer, true, out);
        }
    }

    /// Sends this epoch and membership to `peer`: as its link's opening
    /// frame (`opening`; nothing if the link carried anything already), or
    /// in sequence after what the link carried (a membership change).
    fn send_epoch_change(
        &mut self,
        now: Time,
        peer: NodeId,
        opening: bool,
        out: &mut Vec<Action<P>>,
    ) {
        let membership = self.membership.clone();
        let epoch = self.epoch;
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        if opening && link.next_seq != Sequence(1) {
            return; // Already sent on this link.
        }
        let seq = link.take_seq();
        let purpose = if opening {
            Purpose::EpochChange { epoch }
        } else {
            Purpose::Reconfigure { epoch }
        };
        self.send(
            now,
            peer,
            Frame::EpochChange { seq, membership },
            purpose,
            0,
            out,
        );
    }

    fn link_mut(&mut self, peer: NodeId) -> Option<&mut Link<P>> {
        self.peers.get_mut(&peer)?.link.as_mut()
    }

    /// Sends (or queues behind the window) a sequenced frame whose sequence
    /// the caller took from the link.
    fn send(
        &mut self,
        now: Time,
        peer: NodeId,
        frame: Frame<P>,
        purpose: Purpose,
        bytes: u64,
        out: &mut Vec<Action<P>>,
    ) {
        let limits = self.limits;
        let epoch = self.epoch;
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        link.queued.push_back(Queued {
            frame,
            epoch,
            purpose,
            bytes,
        });
        let overflow = link.queued.len() > limits.max_queued_frames;
        Self::fill_window(now, peer, &limits, link, out);
        if overflow {
            self.out_of_date(peer, out);
        }
    }

    fn fill_window(
        now: Time,
        peer: NodeId,
        limits: &PrimaryLimits,
        link: &mut Link<P>,
        out: &mut Vec<Action<P>>,
    ) {
        while link.unapplied_frames() < limits.window_frames
            && link.in_flight.len() < limits.max_unsynced_frames
        {
            let Some(q) = link.queued.pop_front() else {
                break;
            };
            let seq = q.frame.sequence().unwrap_or_default();
            link.in_flight.push_back(Sent {
                seq,
                purpose: q.purpose,
                bytes: q.bytes,
                at: now,
            });
            out.push(Action::Send {
                peer,
                link: link.id,
                epoch: q.epoch,
                frame: q.frame,
            });
        }
    }

    fn received(
        &mut self,
        now: Time,
        peer: NodeId,
        _epoch: Epoch,
        frame: Frame<P>,
        out: &mut Vec<Action<P>>,
    ) {
        match frame {
            Frame::Ack {
                durable_through,
                standing,
            } => self.acked(now, peer, durable_through, standing, out),
            Frame::Applied { applied_through } => self.applied(now, peer, applied_through, out),
            Frame::ReadResponse { seq, range, data } => {
                let answered = self.check_answered(peer, seq, &data)
                    || self.read_answered(peer, seq, range, data, out);
                if !answered {
                    self.out_of_date(peer, out);
                }
            }
            // A copy will not follow this primary: it is in a newer epoch,
            // or it holds a newer membership than this node's (a change this
            // node missed). Either way the volume goes to a better
            // candidate; retiring is always safe.
            Frame::Nack {
                reason: NackReason::StaleEpoch { .. },
                ..
            } => self.retire(out),
            // Any other refusal, or a frame a replica must not send: the
            // stream is broken; the replica is resynced on a new link.
            _ => self.out_of_date(peer, out),
        }
    }

    fn acked(
        &mut self,
        now: Time,
        peer: NodeId,
        through: Sequence,
        standing: Option<Standing>,
        out: &mut Vec<Action<P>>,
    ) {
        let limits = self.limits;
        let Some(link) = self.link_mut(peer) else {
            return;
        };
        if through >= link.next_seq {
            self.out_of_date(peer, out); // Acknowledges what was never sent.
            return;
        }
        link.answered_through(through);
        let mut done = Vec::new();
        while link.in_flight.front().is_some_and(|s| s.seq <= through) {
            if let Some(sent) = link.in_flight.pop_front() {
                done.push(sent.purpose);
            }
        }
        link.applied = link.applied.max(through);
        Self::fill_window(now, peer, &limits, link, out);
        for purpose in done {
            match purpose {
                Purpose::EpochChange { epoch } => match standing {
                    Some(s) => {
                        self.accepted_epoch(now, peer, s, out);
                        self.reconfigure_accepted(peer, epoch, out);
                    }
                    None => return self.out_of_date(peer, out),
                },
                Purpose::Reconfigure { epoch } => self.reconfigure_accepted(peer, epoch, out),
                Purpose::HostWrite { key, .. } => self.write_durable_on(key, peer),
                Purpose::ResyncRegion { region, covers } => {
                    self.region_copied(peer, region, &covers)
                }
                Purpose::ResyncEnd => {
                    if let Some(link) = self.link_mut(peer) {
                        link.phase = LinkPhase::Streaming;
                    }
                    self.inheritance_resynced(peer);
                }
                Purpose::ResyncBegin | Purpose::ResyncData | Purpose::Flush | Purpose::Read => {}
            }
        }
    }

    /// `peer` applied every frame up to `through` (not yet durably): host
    /// writes among them count toward their quorum unless FUA.
    fn applied(&mut self, now: Time, peer: NodeId, through: Sequence, out: &mut Vec<Action<P>>) {
        let limits = self.limits;
        let Some(link) = self.peers.get_mut(&peer).and_then(|p| p.link.as_mut()) else {
            return;
        };
        if through >= link.next_seq {
            self.out_of_date(peer, out); // Acknowledges what was never sent.
            return;
        }
        if through <= link.applied {
            return;
        }
        link.answered_through(through);
        // Each host write among them was applied on `peer`, not yet
        // durably (`write_mut` on the fields it needs: `link` borrows the
        // peers, and no list of keys is built per acknowledgement).
        for key in link.newly_applied(through) {
            let write = match self.ops.get_mut(&key) {
                Some(Op::Write(w)) => Some(w),
                Some(_) => None,
                None => self.tail.get_mut(&key),
            };
            if let Some(w) = write {
                w.applied_on.insert(peer);
            }
        }
        link.applied = through;
        Self::fill_window(now, peer, &limits, link, out);
    }

    /// Marks `region` as possibly missing on `peer`, and makes a region copy
    /// in progress for it start over.
    fn mark_dirty(&mut self, peer: NodeId, region: RegionIndex) {
        self.bitmap.mark_dirty(peer, region);
        if let Some(link) = self.link_mut(peer) {
            if link.resync.started.contains(&region) {
                link.resync.redo.insert(region);
            }
        }
    }

    /// The link to `peer` is gone: whatever it had not acknowledged it may
    /// lack.
    fn link_lost(&mut self, peer: NodeId) {
        let Some(link) = self.peers.get_mut(&peer).and_then(|p| p.link.take()) else {
            return;
        };
        self.reads_lost_on(peer);
        let mut settle = Vec::new();
        for purpose in link.unacked_purposes() {
            if let Purpose::HostWrite { key, region } = purpose {
                self.bitmap.mark_dirty(peer, *region);
                if let Some(w) = self.write_mut(*key) {
                    w.awaiting.remove(&peer);
                    // Applied but not durable: the copy may lose it (a
                    // power loss there) before anyone can tell.
                    w.applied_on.remove(&peer);
                }
                settle.push(*key);
            }
        }
        for key in settle {
            self.check_tail(key);
        }
        // Copies for that link that have not read yet are dropped; a read in
        // progress finishes and is discarded.
        // So are checks (`scrub.rs`) that have not started reading.
        let mut dropped_startable = 0;
        self.ops.retain(|_, op| {
            let (dies, was_startable) = match op {
                Op::Copy(c) => (c.link == link.id && !c.reading, true),
                Op::Check(c) => (c.dies_with(link.id), c.is_waiting()),
                _ => (false, false),
            };
            dropped_startable += usize::from(dies && was_startable);
            !dies
        });
        self.startable -= dropped_startable;
    }

    /// Closes the link to a replica that fell too far behind or broke the
    /// stream; it will be resynced on its next link.
    fn out_of_date(&mut self, peer: NodeId, out: &mut Vec<Action<P>>) {
        if let Some(link) = self.link_id(peer) {
            out.push(Action::CloseLink { peer, link });
            self.link_lost(peer);
        }
    }

    /// A newer primary exists: stop (see `retire`).
    pub fn step_down(&mut self, out: &mut Vec<Action<P>>) {
        self.retire(out);
    }

    /// Deposed, or lost the election: fail every pending host command with
    /// a path error (the host retries on the new primary) and stop.
    fn retire(&mut self, out: &mut Vec<Action<P>>) {
        self.phase = Phase::Retired;
        for op in self.ops.values_mut() {
            match op {
                Op::Write(w) if !w.completed => {
                    w.completed = true;
                    out.push(Action::CompleteHost {
                        id: w.id,
                        status: HostStatus::PathError,
                    });
                }
                Op::Flush(f) => out.push(Action::CompleteHost {
                    id: f.id,
                    status: HostStatus::PathError,
                }),
                _ => {}
            }
        }
        self.fail_reads(out);
        self.ops.clear();
        self.flushes = 0;
        self.startable = 0;
        self.tail.clear();
        let links: Vec<(NodeId, LinkId)> = self
            .peers
            .iter()
            .filter_map(|(n, p)| p.link.as_ref().map(|l| (*n, l.id)))
            .collect();
        for (peer, link) in links {
            out.push(Action::CloseLink { peer, link });
            if let Some(p) = self.peers.get_mut(&peer) {
                p.link = None;
            }
        }
    }

    /// Everything that may proceed after an event.
    fn pump(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        if self.phase == Phase::Retired {
            return;
        }
        #[cfg(test)]
        assert_eq!(
            self.flushes,
            self.ops
                .values()
                .filter(|op| matches!(op, Op::Flush(_)))
                .count(),
            "flush count out of step with the operations"
        );
        #[cfg(test)]
        assert_eq!(
            self.startable,
            self.ops
                .values()
                .filter(|op| match op {
                    Op::Write(w) => w.stage == WriteStage::Waiting,
                    Op::Copy(_) => true,
                    Op::Repair(r) => r.is_waiting(),
                    Op::Check(c) => c.is_waiting(),
                    Op::Flush(_) => false,
                })
                .count(),
            "startable count out of step with the operations"
        );
        if self.phase == Phase::Activating {
            self.start_serving_when_due(now);
        }
        // First: a change that ends relaxes the quorum writes wait for.
        self.check_transition(out);
        if self.phase == Phase::Serving {
            self.start_operations(now, out);
            self.start_flushes(now, out);
            self.complete_operations(out);
            self.drive_resyncs(now, out);
            if self.scrub.next_region.is_some() {
                self.drive_scrub();
                self.start_operations(now, out);
            }
        }
        if !self.bitmap.is_persisting() {
            let activate = self.phase == Phase::Activating && self.activation.is_none();
            let flush = self.flush_wants_persist();
            let reconfigure = self.reconfigure_wants_persist();
            if activate || flush || reconfigure || self.bitmap.needs_persist() {
                self.persist(out);
            }
        }
        self.check_lag(now, out);
        if !self.reads.is_empty() {
            self.retry_reads(now, out);
        }
    }

    /// Async replicas get a bounded lag, sync ones a bounded wait for their
    /// acknowledgements; beyond it a replica is out of date.
    fn check_lag(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        let limits = &self.limits;
        let lagging: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.leaving)
            .filter_map(|(n, p)| {
                let link = p.link.as_ref()?;
                let waited = link.oldest_unacked().map(|t| now.saturating_sub(t));
                let stalled = p.mode == ReplicationMode::Sync
                    && waited.is_some_and(|w| w > limits.ack_timeout);
                let lags = p.mode == ReplicationMode::Async
                    && (waited.is_some_and(|w| w > limits.async_max_lag_time)
                        || link.unacked_bytes() > limits.async_max_lag_bytes);
                (stalled || lags).then_some(*n)
            })
            .collect();
        for peer in lagging {
            self.out_of_date(peer, out);
        }
    }
}
