//! One node's copy of a volume stream: a role (replica or primary) over the
//! node's durable record, and the changes between roles.
//!
//! Every node starts as a replica from its durable record, crash or not: a
//! node that was primary must win a new election (`Promote` with a fresh
//! epoch from the control plane) before it serves again, which is also what
//! resyncs the copies from its bitmap. A primary turns back into a replica
//! when it loses its election, is refused with `StaleEpoch`, or sees a frame
//! of a newer epoch on a link a newer primary opened to it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::core::frame::Frame;
use crate::core::geometry::Geometry;
use crate::core::ids::{IoToken, LinkId, Time};
use crate::core::io::{Action, Event, HostStatus, LinkDirection};
use crate::core::primary::{Primary, PrimaryLimits, Promotion};
use crate::core::record::DurableRecord;
use crate::core::replica::{Replica, ReplicaLimits};
use crate::wire::{Epoch, NackReason, NodeId, ReplicationMode, Sequence};

/// Events held while a retired role's I/O drains; beyond, link events are
/// dropped (their links are closed, and resync covers the rest).
const MAX_HELD_EVENTS: usize = 1024;

// One role per node and volume, never moved on a hot path: its size does
// not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Role<P> {
    Replica(Replica<P>),
    Primary(Primary<P>),
}

/// A node's replication state machine for one volume stream.
#[derive(Debug, Clone)]
pub struct Node<P> {
    me: NodeId,
    geometry: Geometry,
    primary_limits: PrimaryLimits,
    replica_limits: ReplicaLimits,
    role: Role<P>,
    /// Links others opened to this node while it was primary, handed to the
    /// replica logic if it steps down.
    inbound: BTreeMap<LinkId, NodeId>,
    /// Local I/O of a retired role still in flight. Until it drains the new
    /// role must not touch the device (a late write of the old role could
    /// land after a newer one), so events wait in `held`.
    draining: BTreeSet<IoToken>,
    held: VecDeque<Event<P>>,
    /// A persist failed: the node stopped (see [`Node::has_failed`]).
    failed: bool,
    /// Degraded reads written back to the local copy by primaries of this
    /// node that stepped down.
    past_read_repairs: u64,
    /// Their scrubs' counts (`next_region` unused).
    past_scrubs: crate::core::ScrubStatus,
}

impl<P: Clone + PartialEq> Node<P> {
    /// A node starting (or restarting) from its durable record, as replica,
    /// with the standing it last noted (`Action::Note`) if that survived.
    pub fn recover(
        me: NodeId,
        geometry: Geometry,
        primary_limits: PrimaryLimits,
        replica_limits: ReplicaLimits,
        record: DurableRecord,
        noted: Option<crate::core::Standing>,
    ) -> Self {
        Self {
            me,
            geometry,
            primary_limits,
            replica_limits,
            role: Role::Replica(Replica::recover(geometry, replica_limits, record, noted, 0)),
            inbound: BTreeMap::new(),
            draining: BTreeSet::new(),
            held: VecDeque::new(),
            failed: false,
            past_read_repairs: 0,
            past_scrubs: crate::core::ScrubStatus::default(),
        }
    }

    /// Whether a persist failed (`Event::PersistFailed`). The node then
    /// stops for good: a primary retires (its host commands complete with
    /// a path error, so hosts go to another copy), every link is closed
    /// and every new one refused, nothing more is written or acknowledged.
    /// Only a restart, from the durable record, brings it back; the
    /// primary then resyncs it like any copy that was away.
    pub fn has_failed(&self) -> bool {
        self.failed
    }

    /// Whether its copy came back from a power loss (or reboot) and no
    /// primary has brought it consistent since (`Standing::amnesiac`).
    pub fn is_amnesiac(&self) -> bool {
        match &self.role {
            Role::Replica(r) => r.standing().amnesiac,
            Role::Primary(p) => !p.is_serving() && p.durable_record().standing.amnesiac,
        }
    }

    /// This node.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// Whether it acts as primary (electing or serving).
    pub fn is_primary(&self) -> bool {
        matches!(&self.role, Role::Primary(p) if !p.is_retired())
    }

    /// Whether it serves host I/O.
    pub fn is_serving(&self) -> bool {
        matches!(&self.role, Role::Primary(p) if p.is_serving())
    }

    /// Whether it serves host reads at `now`: serving, and holding its read
    /// lease when leases are on (`PrimaryLimits::read_lease`).
    pub fn serves_reads(&self, now: Time) -> bool {
        !self.failed && matches!(&self.role, Role::Primary(p) if p.serves_reads(now))
    }

    /// Degraded reads written back to the local copy since it started
    /// (read repair, `core/primary/read.rs`).
    pub fn read_repairs(&self) -> u64 {
        let current = match &self.role {
            Role::Primary(p) => p.read_repairs(),
            Role::Replica(_) => 0,
        };
        self.past_read_repairs + current
    }

    /// Scrubbing since it started: the pass in progress, if it acts as
    /// primary, and the counts of every primary role it had.
    pub fn scrub_status(&self) -> crate::core::ScrubStatus {
        let mut status = self.past_scrubs;
        if let Role::Primary(p) = &self.role {
            let current = p.scrub_status();
            status.next_region = current.next_region.filter(|_| !p.is_retired());
            status.passes += current.passes;
            status.checked += current.checked;
            status.mismatches += current.mismatches;
        }
        status
    }

    /// Whether it serves and its stream is quiet and fully in sync.
    pub fn is_quiet(&self) -> bool {
        matches!(&self.role, Role::Primary(p) if p.is_quiet())
    }

    /// Its replicas as it sees them, when it acts as primary (empty as a
    /// replica).
    pub fn replica_views(&self, now: Time) -> Vec<crate::core::ReplicaView> {
        match &self.role {
            Role::Primary(p) if !p.is_retired() => p.replica_views(now),
            _ => Vec::new(),
        }
    }

    /// Whether, serving as primary, it would take `membership` in `epoch`
    /// now ([`Event::Reconfigure`]).
    pub fn can_reconfigure(
        &self,
        epoch: Epoch,
        membership: &crate::core::Membership,
    ) -> Result<(), crate::core::ReconfigureRefusal> {
        match &self.role {
            Role::Primary(p) => p.check_reconfigure(epoch, membership),
            Role::Replica(_) => Err(crate::core::ReconfigureRefusal::NotServing),
        }
    }

    /// The membership it works with: the primary's current one, or the
    /// one a replica last took.
    pub fn membership(&self) -> &crate::core::Membership {
        match &self.role {
            Role::Replica(r) => r.membership(),
            Role::Primary(p) => p.membership(),
        }
    }

    /// The copies it wants links to, as primary (none as a replica).
    pub fn link_targets(&self) -> Vec<NodeId> {
        match &self.role {
            Role::Primary(p) if !p.is_retired() => p.link_targets().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether, as primary, a membership change is still reaching the
    /// copies.
    pub fn is_reconfiguring(&self) -> bool {
        matches!(&self.role, Role::Primary(p) if p.is_reconfiguring())
    }

    /// The epoch it is in.
    pub fn epoch(&self) -> Epoch {
        match &self.role {
            Role::Replica(r) => r.epoch(),
            Role::Primary(p) => p.epoch(),
        }
    }

    /// Its last record known durable.
    pub fn durable_record(&self) -> &DurableRecord {
        match &self.role {
            Role::Replica(r) => r.durable_record(),
            Role::Primary(p) => p.durable_record(),
        }
    }

    /// Handles one event at time `now`; appends what to do to `out`.
    pub fn handle(&mut self, now: Time, event: Event<P>, out: &mut Vec<Action<P>>) {
        if self.failed {
            Self::refuse(event, out);
            return;
        }
        if let Event::PersistFailed { .. } = event {
            self.fail(out);
            return;
        }
        let token = match &event {
            Event::LocalWriteDone { token, .. }
            | Event::LocalReadDone { token, .. }
            | Event::Persisted { token } => Some(*token),
            _ => None,
        };
        if let Some(token) = token {
            if self.draining.remove(&token) {
                if self.draining.is_empty() {
                    let held: Vec<Event<P>> = self.held.drain(..).collect();
                    for event in held {
                        self.handle(now, event, out);
                    }
                }
                return;
            }
        }
        if !self.draining.is_empty() {
            self.hold(event, out);
            return;
        }
        self.dispatch(now, event, out);
        let retired = matches!(&self.role, Role::Primary(p) if p.is_retired());
        if retired {
            self.step_down(now, out);
        }
    }

    /// Stops for good after a failed persist (see [`Node::has_failed`]).
    fn fail(&mut self, out: &mut Vec<Action<P>>) {
        self.failed = true;
        match &mut self.role {
            // Retiring fails its host commands and closes its links.
            Role::Primary(primary) => primary.step_down(out),
            Role::Replica(replica) => {
                for (link, peer) in replica.links() {
                    out.push(Action::CloseLink { peer, link });
                }
            }
        }
        for (link, peer) in std::mem::take(&mut self.inbound) {
            out.push(Action::CloseLink { peer, link });
        }
        self.held.clear();
        self.draining.clear();
    }

    /// What a failed node does with an event: host commands fail with a
    /// path error, new links are closed, the rest is dropped.
    fn refuse(event: Event<P>, out: &mut Vec<Action<P>>) {
        match event {
            Event::HostWrite { id, .. }
            | Event::HostFlush { id }
            | Event::DegradedRead { id, .. } => out.push(Action::CompleteHost {
                id,
                status: HostStatus::PathError,
            }),
            Event::LinkUp { peer, link, .. } => out.push(Action::CloseLink { peer, link }),
            _ => {}
        }
    }

    fn hold(&mut self, event: Event<P>, out: &mut Vec<Action<P>>) {
        match event {
            Event::HostWrite { id, .. }
            | Event::HostFlush { id }
            | Event::DegradedRead { id, .. } => out.push(Action::CompleteHost {
                id,
                status: HostStatus::PathError,
            }),
            Event::Received { peer, link, .. } if self.held.len() >= MAX_HELD_EVENTS => {
                out.push(Action::CloseLink { peer, link });
            }
            event => self.held.push_back(event),
        }
    }

    fn dispatch(&mut self, now: Time, event: Event<P>, out: &mut Vec<Action<P>>) {
        match &mut self.role {
            Role::Replica(replica) => match event {
                Event::HostWrite { id, .. }
                | Event::HostFlush { id }
                | Event::DegradedRead { id, .. } => {
                    out.push(Action::CompleteHost {
                        id,
                        status: HostStatus::PathError,
                    });
                }
                Event::Promote { epoch } => self.promote(epoch, out),
                Event::LinkUp {
                    peer,
                    link,
                    direction: LinkDirection::Outbound,
                } => out.push(Action::CloseLink { peer, link }),
                event => replica.handle(now, event, out),
            },
            Role::Primary(primary) => match event {
                Event::LinkUp {
                    peer,
                    link,
                    direction: LinkDirection::Inbound,
                } => {
                    self.inbound.insert(link, peer);
                }
                Event::LinkDown { link, .. } if self.inbound.contains_key(&link) => {
                    self.inbound.remove(&link);
                }
                Event::Received {
                    peer,
                    link,
                    epoch,
                    frame,
                } if self.inbound.contains_key(&link) => {
                    if epoch > primary.epoch() {
                        // A newer primary: this one is deposed. Step down,
                        // then let the replica logic take the frame.
                        primary.step_down(out);
                        self.step_down(now, out);
                        let event = Event::Received {
                            peer,
                            link,
                            epoch,
                            frame,
                        };
                        self.handle(now, event, out);
                    } else {
                        let seq = frame.sequence().unwrap_or(Sequence(0));
                        let current = primary.epoch();
                        out.push(Action::Send {
                            peer,
                            link,
                            epoch: current,
                            frame: Frame::Nack {
                                seq,
                                reason: NackReason::StaleEpoch { current },
                            },
                        });
                        out.push(Action::CloseLink { peer, link });
                        self.inbound.remove(&link);
                    }
                }
                Event::Promote { .. } => {}
                event => primary.handle(now, event, out),
            },
        }
    }

    /// Becomes primary of `epoch` if the control plane's request makes
    /// sense: a newer epoch, a sync member, and no local I/O in flight (the
    /// durable record must describe the local copy; the control plane
    /// retries otherwise).
    fn promote(&mut self, epoch: Epoch, out: &mut Vec<Action<P>>) {
        let Role::Replica(replica) = &self.role else {
            return;
        };
        // The standing it would report, not only what its last persist
        // recorded: writes applied since count (it acknowledged them as
        // applied), and the promotion's first persist flushes them. Should
        // it lose the election, it must not forget them either.
        let record = DurableRecord {
            standing: replica.standing(),
            ..replica.durable_record().clone()
        };
        let is_sync = record.membership.mode_of(self.me) == Some(ReplicationMode::Sync);
        if !replica.is_idle() || epoch <= replica.epoch() || !is_sync {
            return;
        }
        for (link, peer) in replica.links() {
            out.push(Action::CloseLink { peer, link });
        }
        let from = Promotion {
            record: record.clone(),
            recent: replica.recent_writes().clone(),
            epoch,
        };
        let primary = Primary::promote(
            self.me,
            self.geometry,
            self.primary_limits,
            from,
            replica.next_token(),
            out,
        );
        self.role = Role::Primary(primary);
    }

    /// The primary retired: keep its durable record, wait for its I/O, and
    /// continue as replica.
    fn step_down(&mut self, now: Time, out: &mut Vec<Action<P>>) {
        let Role::Primary(primary) = &self.role else {
            return;
        };
        self.draining = primary.outstanding_io().collect();
        self.past_read_repairs += primary.read_repairs();
        let scrub = primary.scrub_status();
        self.past_scrubs.passes += scrub.passes;
        self.past_scrubs.checked += scrub.checked;
        self.past_scrubs.mismatches += scrub.mismatches;
        let replica = Replica::new(
            self.geometry,
            self.replica_limits,
            primary.durable_record().clone(),
            primary.next_token(),
        );
        self.role = Role::Replica(replica);
        let inbound: Vec<(LinkId, NodeId)> =
            std::mem::take(&mut self.inbound).into_iter().collect();
        for (link, peer) in inbound {
            let event = Event::LinkUp {
                peer,
                link,
                direction: LinkDirection::Inbound,
            };
            self.handle(now, event, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{HostOpId, Member, Membership, Position, Standing};
    use crate::wire::ByteRange;

    type Actions = Vec<Action<u64>>;

    const ME: NodeId = NodeId(1);
    const OTHER: NodeId = NodeId(2);

    /// A node of a volume whose only sync copy it is (W = 1) and whose
    /// second copy is async: promoted, it serves at once.
    fn node() -> Node<u64> {
        let member = |n, mode| Member {
            node: NodeId(n),
            mode,
        };
        let record = DurableRecord {
            membership: Membership {
                members: vec![
                    member(1, ReplicationMode::Sync),
                    member(2, ReplicationMode::Async),
                ],
                primary: ME,
                write_quorum: 1,
                since: Epoch(0),
                previous: None,
            },
            standing: Standing {
                epoch: Epoch(1),
                synced: Epoch(1),
                applied: Position::all_of(Epoch(1)),
                consistent: true,
                amnesiac: false,
            },
            intent: Vec::new(),
        };
        let geometry = Geometry::new(4096, 16384, 4).expect("geometry");
        let limits = PrimaryLimits::default();
        Node::recover(ME, geometry, limits, ReplicaLimits::default(), record, None)
    }

    fn persists(out: &Actions) -> Vec<IoToken> {
        out.iter()
            .filter_map(|a| match a {
                Action::Persist { token, .. } => Some(*token),
                _ => None,
            })
            .collect()
    }

    fn handle(node: &mut Node<u64>, event: Event<u64>) -> Actions {
        let mut out = Actions::new();
        node.handle(0, event, &mut out);
        out
    }

    fn serving() -> Node<u64> {
        let mut n = node();
        let mut out = handle(&mut n, Event::Promote { epoch: Epoch(2) });
        while let Some(token) = persists(&out).first().copied() {
            out = handle(&mut n, Event::Persisted { token });
        }
        assert!(n.is_serving());
        n
    }

    fn host_write(id: u64) -> Event<u64> {
        Event::HostWrite {
            id: HostOpId(id),
            range: ByteRange::new(0, 4096),
            data: id,
            fua: false,
        }
    }

    fn path_errors(out: &Actions) -> Vec<HostOpId> {
        out.iter()
            .filter_map(|a| match a {
                Action::CompleteHost {
                    id,
                    status: HostStatus::PathError,
                } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// A primary whose persist fails retires with its host commands failed
    /// over (path error) and then refuses everything: it can no longer say
    /// what its copy holds.
    #[test]
    fn a_failed_persist_stops_a_primary_for_good() {
        let mut n = serving();
        let out = handle(&mut n, host_write(7));
        let token = *persists(&out)
            .first()
            .expect("the write's intent bit persists first");
        let out = handle(&mut n, Event::PersistFailed { token });
        assert_eq!(path_errors(&out), vec![HostOpId(7)]);
        assert!(n.has_failed() && !n.is_serving() && !n.is_primary());

        let out = handle(&mut n, host_write(8));
        assert_eq!(path_errors(&out), vec![HostOpId(8)]);
        let up = Event::LinkUp {
            peer: OTHER,
            link: LinkId(5),
            direction: LinkDirection::Inbound,
        };
        let out = handle(&mut n, up);
        assert!(matches!(
            out[..],
            [Action::CloseLink {
                peer: OTHER,
                link: LinkId(5)
            }]
        ));
        assert!(handle(&mut n, Event::Promote { epoch: Epoch(9) }).is_empty());
        assert!(handle(&mut n, Event::Tick).is_empty());
        assert!(!n.is_primary(), "a failed node takes no promotion");
    }

    /// A replica whose persist fails closes its links and acknowledges
    /// nothing more.
    #[test]
    fn a_failed_persist_stops_a_replica() {
        let mut n = node();
        let up = Event::LinkUp {
            peer: OTHER,
            link: LinkId(3),
            direction: LinkDirection::Inbound,
        };
        handle(&mut n, up);
        let out = handle(&mut n, Event::PersistFailed { token: IoToken(0) });
        assert!(matches!(
            out[..],
            [Action::CloseLink {
                peer: OTHER,
                link: LinkId(3)
            }]
        ));
        let frame = Event::Received {
            peer: OTHER,
            link: LinkId(3),
            epoch: Epoch(3),
            frame: Frame::Flush { seq: Sequence(1) },
        };
        assert!(handle(&mut n, frame).is_empty(), "nothing acknowledged");
    }
}
