//! Scenario tests of the primary alone, its replicas played by hand.

use super::*;
use crate::core::RecentWrites;
use crate::core::{Member, Previous};
use crate::wire::ResyncOp;

type Actions = Vec<Action<u64>>;

const ME: NodeId = NodeId(1);
const R2: NodeId = NodeId(2);
const R3: NodeId = NodeId(3);

fn record() -> DurableRecord {
    let sync = |n| Member {
        node: NodeId(n),
        mode: ReplicationMode::Sync,
    };
    DurableRecord {
        membership: Membership {
            members: vec![sync(1), sync(2), sync(3)],
            primary: ME,
            write_quorum: 2,
            since: Epoch(0),
            previous: None,
        },
        // This node was the primary of epoch 3: it holds everything.
        standing: Standing {
            epoch: Epoch(3),
            synced: Epoch(3),
            applied: Position::all_of(Epoch(3)),
            consistent: true,
            amnesiac: false,
        },
        intent: Vec::new(),
    }
}

struct Harness {
    primary: Primary<u64>,
    out: Actions,
    /// The time every event is handled at.
    now: Time,
}

impl Harness {
    /// A primary of epoch 4 that won its election with R2 and serves, R2
    /// resyncing (so taking writes), R3 down.
    fn serving() -> Self {
        let mut h = Harness::promoted(PrimaryLimits::default(), record());
        h.complete_persists();
        assert!(
            !h.primary.is_serving(),
            "one standing is not a fence quorum"
        );
        h.event(Event::LinkUp {
            peer: R2,
            link: LinkId(1),
            direction: LinkDirection::Outbound,
        });
        assert!(h
            .sent(R2)
            .iter()
            .any(|f| matches!(f, Frame::EpochChange { .. })));
        h.ack(R2, 1, Some(record().standing_of_replica()));
        h.complete_persists();
        assert!(h.primary.is_serving());
        h.ack(R2, 2, None); // Resync(Begin)
        h
    }

    /// A primary promoted to epoch 4 from `record`, its first persist not
    /// done yet.
    fn promoted(limits: PrimaryLimits, record: DurableRecord) -> Self {
        let recent = RecentWrites::starting_at(record.standing.applied);
        Harness::promoted_with(limits, record, recent)
    }

    /// The same, remembering `recent` writes from its time as a replica.
    fn promoted_with(limits: PrimaryLimits, record: DurableRecord, recent: RecentWrites) -> Self {
        let geometry = Geometry::new(4096, 16384, 4).expect("geometry");
        let mut out = Actions::new();
        let from = Promotion {
            record,
            recent,
            epoch: Epoch(4),
        };
        let primary = Primary::promote(ME, geometry, limits, from, 100, &mut out);
        Harness {
            primary,
            out,
            now: 0,
        }
    }

    fn event(&mut self, event: Event<u64>) {
        self.out.clear();
        self.primary.handle(self.now, event, &mut self.out);
    }

    fn ack(&mut self, peer: NodeId, seq: u64, standing: Option<Standing>) {
        self.ack_on(peer, LinkId(1), seq, standing);
    }

    fn ack_on(&mut self, peer: NodeId, link: LinkId, seq: u64, standing: Option<Standing>) {
        self.event(Event::Received {
            peer,
            link,
            epoch: Epoch(4),
            frame: Frame::Ack {
                durable_through: Sequence(seq),
                standing,
            },
        });
    }

    /// An outbound link to `peer` comes up.
    fn link_up(&mut self, peer: NodeId, link: LinkId) {
        self.event(Event::LinkUp {
            peer,
            link,
            direction: LinkDirection::Outbound,
        });
    }

    /// Completes every persist asked for, until none is.
    fn complete_persists(&mut self) {
        while let Some(token) = self.out.iter().find_map(|a| match a {
            Action::Persist { token, .. } => Some(*token),
            _ => None,
        }) {
            self.event(Event::Persisted { token });
        }
    }

    fn sent(&self, peer: NodeId) -> Vec<Frame<u64>> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::Send { peer: p, frame, .. } if *p == peer => Some(frame.clone()),
                _ => None,
            })
            .collect()
    }

    fn local_writes(&self) -> Vec<(IoToken, u64)> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::LocalWrite { token, data, .. } => Some((*token, *data)),
                _ => None,
            })
            .collect()
    }

    fn completions(&self) -> Vec<(HostOpId, HostStatus)> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::CompleteHost { id, status } => Some((*id, *status)),
                _ => None,
            })
            .collect()
    }

    fn write(&mut self, id: u64, block: u64) {
        self.event(Event::HostWrite {
            id: HostOpId(id),
            range: ByteRange::new(block * 4096, 4096),
            data: id,
            fua: false,
        });
        self.complete_persists_keeping_writes();
    }

    /// Completes bitmap persists; keeps the last batch of actions that
    /// issued writes visible.
    fn complete_persists_keeping_writes(&mut self) {
        let mut issued = Actions::new();
        loop {
            issued.extend(
                self.out
                    .iter()
                    .filter(|a| !matches!(a, Action::Persist { .. }))
                    .cloned(),
            );
            let Some(token) = self.out.iter().find_map(|a| match a {
                Action::Persist { token, .. } => Some(*token),
                _ => None,
            }) else {
                break;
            };
            self.event(Event::Persisted { token });
        }
        self.out = issued;
    }
}

impl DurableRecord {
    fn standing_of_replica(&self) -> Standing {
        Standing {
            applied: Position {
                epoch: Epoch(3),
                index: 10,
            },
            ..self.standing
        }
    }
}

#[test]
fn completes_a_write_only_on_a_quorum() {
    let mut h = Harness::serving();
    h.write(1, 0);
    let writes = h.local_writes();
    assert_eq!(writes.len(), 1, "issued once its intent bit is durable");
    let seq = h
        .sent(R2)
        .iter()
        .find_map(|f| match f {
            Frame::Write { seq, data: 1, .. } => Some(*seq),
            _ => None,
        })
        .expect("sent to R2");
    h.event(Event::LocalWriteDone {
        token: writes[0].0,
        result: Ok(()),
    });
    assert!(
        h.completions().is_empty(),
        "the local copy alone is not W = 2"
    );
    h.ack(R2, seq.0, None);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);
}

#[test]
fn holds_back_an_overlapping_write_until_the_first_is_local() {
    let mut h = Harness::serving();
    h.write(1, 0);
    let first = h.local_writes()[0].0;
    h.write(2, 0);
    assert!(h.local_writes().is_empty(), "overlaps write 1 in flight");
    h.write(3, 1);
    assert_eq!(h.local_writes().len(), 1, "no overlap, no wait");
    h.event(Event::LocalWriteDone {
        token: first,
        result: Ok(()),
    });
    assert_eq!(
        h.local_writes().iter().map(|w| w.1).collect::<Vec<_>>(),
        vec![2]
    );
}

#[test]
fn a_deposed_primary_fails_its_writes_with_a_path_error() {
    let mut h = Harness::serving();
    h.write(1, 0);
    h.event(Event::Received {
        peer: R2,
        link: LinkId(1),
        epoch: Epoch(5),
        frame: Frame::Nack {
            seq: Sequence(3),
            reason: NackReason::StaleEpoch { current: Epoch(5) },
        },
    });
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::PathError)]);
    assert!(h.primary.is_retired());
}

#[test]
fn a_lost_link_dirties_what_it_had_not_acknowledged() {
    let mut h = Harness::serving();
    h.write(1, 0);
    h.event(Event::LinkDown {
        peer: R2,
        link: LinkId(1),
    });
    assert!(h.primary.bitmap.dirty_of(R2).any(|r| r == RegionIndex(0)));
    // R3 was down all along: dirty too.
    assert!(h.primary.bitmap.dirty_of(R3).any(|r| r == RegionIndex(0)));
}

/// A candidate's membership is as recent as the newest writes it applied
/// as a replica: a copy that took a change a later primary superseded
/// refuses it (replica test `a_superseded_membership_change_is_refused`),
/// and this one, which applied writes of epoch 3, brings that primary's
/// membership back to it. Its own epochs as a primary do not count.
#[test]
fn a_candidate_campaigns_with_the_membership_of_its_newest_writes() {
    let former = Harness::promoted(PrimaryLimits::default(), record());
    let since = former.out.iter().find_map(|a| match a {
        Action::Persist { record, .. } => Some(record.membership.since),
        _ => None,
    });
    assert_eq!(
        since,
        Some(Epoch(0)),
        "a primary of epoch 3 may have written nothing"
    );

    let mut replica = record();
    replica.standing.applied = Position {
        epoch: Epoch(3),
        index: 7,
    };
    let mut h = Harness::promoted(PrimaryLimits::default(), replica);
    let persisted = h.out.iter().find_map(|a| match a {
        Action::Persist { record, .. } => Some(record.membership.since),
        _ => None,
    });
    assert_eq!(persisted, Some(Epoch(3)));
    h.complete_persists();
    h.link_up(R2, LinkId(1));
    let since = h.sent(R2).iter().find_map(|f| match f {
        Frame::EpochChange { membership, .. } => Some(membership.since),
        _ => None,
    });
    assert_eq!(
        since,
        Some(Epoch(3)),
        "the membership its epoch-3 writes were made under"
    );
}

#[test]
fn a_candidate_behind_a_reported_standing_retires() {
    let mut behind = record();
    behind.standing.applied = Position {
        epoch: Epoch(3),
        index: 5,
    };
    let mut h = Harness::promoted(PrimaryLimits::default(), behind);
    h.complete_persists();
    h.event(Event::LinkUp {
        peer: R2,
        link: LinkId(1),
        direction: LinkDirection::Outbound,
    });
    h.ack(R2, 1, Some(record().standing_of_replica()));
    assert!(
        h.primary.is_retired(),
        "R2 may hold writes up to 10, this copy only to 5"
    );
}

impl Harness {
    fn applied(&mut self, peer: NodeId, seq: u64) {
        self.event(Event::Received {
            peer,
            link: LinkId(1),
            epoch: Epoch(4),
            frame: Frame::Applied {
                applied_through: Sequence(seq),
            },
        });
    }

    /// Write `id` to `block`, done locally and sent to R2 (its sequence).
    fn write_done_locally(&mut self, id: u64, block: u64, fua: bool) -> u64 {
        self.event(Event::HostWrite {
            id: HostOpId(id),
            range: ByteRange::new(block * 4096, 4096),
            data: id,
            fua,
        });
        self.complete_persists_keeping_writes();
        let (token, _) = self.local_writes()[0];
        let seq = self
            .sent(R2)
            .iter()
            .find_map(|f| match f {
                Frame::Write { seq, fua: f, .. } => {
                    assert_eq!(*f, fua, "FUA travels with the frame");
                    Some(seq.0)
                }
                _ => None,
            })
            .expect("sent to R2");
        self.event(Event::LocalWriteDone {
            token,
            result: Ok(()),
        });
        seq
    }
}

impl Harness {
    /// After a host flush: the sequence of its `Flush` frame to R2 and the
    /// token of the local device flush (persist) it started.
    fn flush_started(&self) -> (u64, IoToken) {
        let seq = self
            .sent(R2)
            .iter()
            .find_map(|f| match f {
                Frame::Flush { seq } => Some(seq.0),
                _ => None,
            })
            .expect("a Flush frame to R2");
        let persist = self
            .out
            .iter()
            .find_map(|a| match a {
                Action::Persist { token, .. } => Some(*token),
                _ => None,
            })
            .expect("a local device flush");
        (seq, persist)
    }
}

#[test]
fn a_write_without_fua_completes_when_applied_on_the_quorum() {
    let mut h = Harness::serving();
    let seq = h.write_done_locally(1, 0, false);
    assert!(h.completions().is_empty());
    h.applied(R2, seq);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);
}

#[test]
fn a_fua_write_waits_for_durable_on_the_quorum() {
    let mut h = Harness::serving();
    let seq = h.write_done_locally(1, 0, true);
    h.applied(R2, seq);
    assert!(h.completions().is_empty(), "applied is not durable");
    h.ack(R2, seq, None);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);
}

/// A flush needs every earlier write durable on the quorum: the replica's
/// durable ack (prompted by a `Flush` frame) and a local device flush
/// (a persist started after the writes completed) — neither alone.
#[test]
fn a_flush_waits_for_the_local_device_flush_and_the_replicas_durable_acks() {
    let mut h = Harness::serving();
    let seq = h.write_done_locally(1, 0, false);
    h.applied(R2, seq);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);

    h.event(Event::HostFlush { id: HostOpId(2) });
    let (flush_seq, persist) = h.flush_started();
    h.ack(R2, flush_seq, None);
    assert!(
        h.completions().is_empty(),
        "durable on R2, not yet on the local device"
    );
    h.event(Event::Persisted { token: persist });
    assert_eq!(h.completions(), vec![(HostOpId(2), HostStatus::Success)]);
}

#[test]
fn a_flush_does_not_wait_for_a_replica_beyond_the_quorum() {
    let mut h = Harness::serving();
    // R3 linked and taking writes too, then it stops answering
    // (partitioned, its connection still open).
    h.event(Event::LinkUp {
        peer: R3,
        link: LinkId(2),
        direction: LinkDirection::Outbound,
    });
    let from_r3 = |seq, standing| Event::Received {
        peer: R3,
        link: LinkId(2),
        epoch: Epoch(4),
        frame: Frame::Ack {
            durable_through: Sequence(seq),
            standing,
        },
    };
    h.event(from_r3(1, Some(record().standing_of_replica())));
    h.complete_persists();
    h.event(from_r3(2, None)); // Resync(Begin)
    assert!(
        h.primary.peers[&R3]
            .link
            .as_ref()
            .is_some_and(|l| l.takes_writes()),
        "R3 takes writes"
    );
    let seq = h.write_done_locally(1, 0, false);
    h.applied(R2, seq);
    h.event(Event::HostFlush { id: HostOpId(2) });
    let (flush_seq, persist) = h.flush_started();
    h.event(Event::Persisted { token: persist });
    h.ack(R2, flush_seq, None);
    assert_eq!(h.completions(), vec![(HostOpId(2), HostStatus::Success)]);
}

/// Which changes are taken (R1..R3 sync, W = 2), and which make an
/// election mid-change hear the old membership's fence quorum too: those
/// where a fence quorum of the new one could miss a write quorum of the
/// old one.
#[test]
fn which_membership_changes_are_taken() {
    use crate::core::ReconfigureRefusal;
    let h = Harness::serving();
    let current = record().membership;
    let check = |m: &Membership| h.primary.check_reconfigure(Epoch(5), m);
    let with = |f: &dyn Fn(&mut Membership)| {
        let mut m = current.clone();
        f(&mut m);
        m
    };
    let r4 = crate::core::Member {
        node: NodeId(4),
        mode: ReplicationMode::Sync,
    };
    // Adding a copy, W unchanged: fine.
    assert_eq!(check(&with(&|m| m.members.push(r4))), Ok(()));
    // Lowering W: fine.
    assert_eq!(check(&with(&|m| m.write_quorum = 1)), Ok(()));
    // Raising W: fine too, but a node promoted mid-change must then hear
    // the old fence quorum as well.
    let raised = with(&|m| m.write_quorum = 3);
    assert_eq!(check(&raised), Ok(()));
    let previous = |m: &Membership| Membership {
        previous: Some(Previous::of(&current)),
        ..m.clone()
    };
    assert!(previous(&raised).needs_previous_fence());
    // Removing a sync copy without lowering W, or making it async: the
    // copy's standing would count in elections it cannot stand in.
    assert_eq!(
        check(&with(&|m| m.members.retain(|c| c.node != R3))),
        Err(ReconfigureRefusal::QuorumTooHigh)
    );
    assert_eq!(
        check(&with(&|m| {
            for c in m.members.iter_mut().filter(|c| c.node == R3) {
                c.mode = ReplicationMode::Async;
            }
        })),
        Err(ReconfigureRefusal::QuorumTooHigh)
    );
    let lowered = with(&|m| m.write_quorum = 1);
    assert!(!previous(&lowered).needs_previous_fence());
    assert!(!previous(&with(&|m| m.members.push(r4))).needs_previous_fence());
    assert_eq!(
        check(&with(&|m| {
            m.members.retain(|c| c.node != R3);
            m.write_quorum = 1;
        })),
        Ok(())
    );
    assert_eq!(check(&current), Err(ReconfigureRefusal::Unchanged));
    assert_eq!(
        h.primary
            .check_reconfigure(Epoch(4), &with(&|m| m.write_quorum = 1)),
        Err(ReconfigureRefusal::StaleEpoch)
    );
}

/// While a membership change is reaching the copies, a write needs a write
/// quorum of the old membership too: a primary elected under the old one
/// (by copies that have not heard of the change) must find it. Once a
/// write quorum of the old sync copies took the new epoch, the new W alone
/// counts.
#[test]
fn during_a_membership_change_writes_need_the_old_quorum_too() {
    let mut h = Harness::serving();
    // R1..R3 sync, W = 2 -> R3 async, W = 1 (allowed: W' <= W - 1).
    let mut next = record().membership;
    for m in next.members.iter_mut().filter(|m| m.node == R3) {
        m.mode = ReplicationMode::Async;
    }
    next.write_quorum = 1;
    h.event(Event::Reconfigure {
        epoch: Epoch(5),
        membership: next,
    });
    assert!(h.primary.is_reconfiguring());
    // Preparing ends at once (the primary alone is a new write quorum); the
    // new membership is recorded, then announced to R2.
    let mut announced = None;
    while let Some(token) = h.out.iter().find_map(|a| match a {
        Action::Persist { token, .. } => Some(*token),
        _ => None,
    }) {
        h.event(Event::Persisted { token });
        announced = announced.or(h.sent(R2).iter().find_map(|f| match f {
            Frame::EpochChange { membership, .. } => Some(membership.since),
            _ => None,
        }));
    }
    assert_eq!(announced, Some(Epoch(5)), "announced with its epoch");
    assert!(h.primary.is_reconfiguring(), "R2 has not taken it yet");

    let seq = h.write_done_locally(1, 0, false);
    assert!(
        h.completions().is_empty(),
        "W' = 1 alone would complete it; the old W = 2 does not"
    );
    h.applied(R2, seq);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);

    // R2 durably took the new epoch (and the write after it).
    h.ack(R2, seq, None);
    assert!(!h.primary.is_reconfiguring(), "the change is done");
    h.write_done_locally(2, 1, false);
    assert_eq!(h.completions(), vec![(HostOpId(2), HostStatus::Success)]);
}

/// A sync replica that stays connected but acknowledges nothing (a stuck
/// disk, a frozen process) is out of date once its oldest frame waited
/// longer than the ack timeout: its link is closed and what it missed is
/// dirty for a resync, instead of it holding the stream for ever.
#[test]
fn a_replica_that_acknowledges_nothing_for_the_ack_timeout_is_dropped() {
    let mut h = Harness::serving();
    let timeout = PrimaryLimits::default().ack_timeout;
    let seq = h.write_done_locally(1, 0, false);
    h.applied(R2, seq);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);

    h.now = 1_000;
    h.write_done_locally(2, 1, false);
    h.now += timeout;
    h.event(Event::Tick);
    assert!(
        !h.out.iter().any(|a| matches!(a, Action::CloseLink { .. })),
        "waited exactly the timeout: still linked"
    );
    h.now += 1;
    h.event(Event::Tick);
    assert!(
        h.out
            .iter()
            .any(|a| matches!(a, Action::CloseLink { peer, .. } if *peer == R2)),
        "stalled past the timeout: dropped"
    );
    let view = h.primary.replica_views(h.now);
    let r2 = view.iter().find(|v| v.node == R2).expect("R2 is a member");
    assert_eq!(r2.state, ReplicaState::Down);
    assert!(r2.regions_to_resync > 0, "what it missed is dirty");
}

/// The ack timeout is for sync replicas: an async one (a distant site) is
/// held to its own lag bound, which the operator may set far higher.
#[test]
fn an_async_replica_is_held_to_its_lag_bound_not_the_ack_timeout() {
    let limits = PrimaryLimits {
        ack_timeout: 1_000_000_000,
        async_max_lag_time: 60_000_000_000,
        ..PrimaryLimits::default()
    };
    let mut record = record();
    record.membership.members = vec![
        Member {
            node: ME,
            mode: ReplicationMode::Sync,
        },
        Member {
            node: R2,
            mode: ReplicationMode::Async,
        },
    ];
    record.membership.write_quorum = 1;
    let mut h = Harness::promoted(limits, record.clone());
    h.complete_persists();
    assert!(
        h.primary.is_serving(),
        "the only sync copy is a fence quorum"
    );
    h.event(Event::LinkUp {
        peer: R2,
        link: LinkId(1),
        direction: LinkDirection::Outbound,
    });
    h.ack(R2, 1, Some(record.standing_of_replica()));
    h.complete_persists();
    h.ack(R2, 2, None); // Resync(Begin)
    h.write_done_locally(1, 0, false);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);

    let closed = |h: &Harness| {
        h.out
            .iter()
            .any(|a| matches!(a, Action::CloseLink { peer, .. } if *peer == R2))
    };
    h.now = 2_000_000_000;
    h.event(Event::Tick);
    assert!(!closed(&h), "past the ack timeout, within the lag bound");
    h.now = 60_000_000_001;
    h.event(Event::Tick);
    assert!(closed(&h), "past its lag bound");
}

/// A node promoted from a record that holds a change still in progress
/// (the previous membership) finishes it: writes need the old write quorum
/// too until enough old sync copies took its epoch, and copies the change
/// removed are linked so that they learn it. Without this, a primary of
/// the new membership acknowledged writes that a copy which missed the
/// change, elected alone under the old membership, lacked (long seed
/// 1001585).
#[test]
fn a_node_promoted_mid_change_keeps_the_old_write_quorum_until_the_change_is_known() {
    let sync = |n| Member {
        node: NodeId(n),
        mode: ReplicationMode::Sync,
    };
    // The change of epoch 3: R3 removed and W lowered from 3 to 2. Under
    // the old membership any copy can elect itself alone.
    // (Node 2 made it: it holds the change already.)
    let old = Previous {
        members: vec![sync(1), sync(2), sync(3)],
        write_quorum: 3,
        primary: R2,
    };
    let mut mid_change = record();
    mid_change.membership = Membership {
        members: vec![sync(1), sync(2)],
        primary: ME,
        write_quorum: 2,
        since: Epoch(3),
        previous: Some(old.clone()),
    };
    let mut h = Harness::promoted(PrimaryLimits::default(), mid_change);
    h.complete_persists();
    assert!(h.primary.is_serving(), "the new fence quorum is this copy");
    assert!(h.primary.is_reconfiguring(), "the change is not done");
    assert_eq!(
        h.primary.link_targets().collect::<Vec<_>>(),
        vec![R2, R3],
        "the removed copy must take the epoch too"
    );
    h.link_up(R2, LinkId(1));
    let carried = h.sent(R2).iter().find_map(|f| match f {
        Frame::EpochChange { membership, .. } => Some(membership.previous.clone()),
        _ => None,
    });
    assert_eq!(carried, Some(Some(old)), "the epoch carries the change");
    h.ack(R2, 1, Some(record().standing));
    h.write(1, 0);
    let (token, _) = h.local_writes()[0];
    h.event(Event::LocalWriteDone {
        token,
        result: Ok(()),
    });
    assert!(
        h.sent(R2).is_empty(),
        "no resync (nor write) while the old quorum is out of reach"
    );
    assert!(
        h.completions().is_empty(),
        "W = 2 of the new membership could be met, W = 3 of the old cannot"
    );
    // R3 takes the epoch (and learns it left): all three old sync copies
    // now hold the new membership, no election under the old one can
    // succeed, and the change is done.
    h.link_up(R3, LinkId(2));
    assert!(h
        .sent(R3)
        .iter()
        .all(|f| matches!(f, Frame::EpochChange { .. })));
    h.ack_on(R3, LinkId(2), 1, Some(record().standing_of_replica()));
    assert!(!h.primary.is_reconfiguring(), "the change is done");
    assert_eq!(h.primary.membership().previous, None);
    assert_eq!(h.primary.link_targets().collect::<Vec<_>>(), vec![R2]);
    // R2 is resynced now; once it holds the region, write 1 completes.
    let mut acked = 1;
    for _ in 0..16 {
        if !h.completions().is_empty() {
            break;
        }
        let reads: Vec<IoToken> = h
            .out
            .iter()
            .filter_map(|a| match a {
                Action::LocalRead { token, .. } => Some(*token),
                _ => None,
            })
            .collect();
        let last = h.sent(R2).iter().filter_map(|f| f.sequence()).max();
        if let Some(token) = reads.first() {
            h.event(Event::LocalReadDone {
                token: *token,
                result: Ok(1),
            });
        } else if let Some(seq) = last.filter(|s| s.0 > acked) {
            acked = seq.0;
            h.ack(R2, acked, None);
        } else {
            h.event(Event::Tick);
        }
        h.complete_persists_keeping_writes();
    }
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);
}

/// A change that raised W (2 -> 3 of three copies): a fence quorum of the
/// new membership is one copy, which a write quorum of the old one (two
/// copies) can miss. So a node promoted mid-change also needs the old
/// fence quorum (two copies), and serves only if it dominates both.
#[test]
fn a_node_promoted_mid_change_that_raised_w_hears_the_old_fence_quorum() {
    let old = Previous::of(&record().membership);
    let mut mid_change = record();
    mid_change.membership.write_quorum = 3;
    mid_change.membership.since = Epoch(3);
    mid_change.membership.previous = Some(old);
    mid_change.standing = record().standing_of_replica();
    let mut h = Harness::promoted(PrimaryLimits::default(), mid_change.clone());
    h.complete_persists();
    assert!(
        !h.primary.is_serving(),
        "W = 3 alone would let this copy elect itself"
    );
    h.link_up(R2, LinkId(1));
    h.ack(R2, 1, Some(record().standing_of_replica()));
    h.complete_persists();
    assert!(h.primary.is_serving(), "R2 completes the old fence quorum");

    // R3 may hold writes of a primary elected under the old membership
    // with R2 (epoch 5): the old fence quorum reveals them.
    let mut h = Harness::promoted(PrimaryLimits::default(), mid_change);
    h.complete_persists();
    h.link_up(R3, LinkId(2));
    let newer = Standing {
        epoch: Epoch(5),
        applied: Position {
            epoch: Epoch(5),
            index: 2,
        },
        ..record().standing_of_replica()
    };
    h.ack_on(R3, LinkId(2), 1, Some(newer));
    assert!(h.primary.is_retired(), "R3 holds writes this copy lacks");
}

/// A copy back from a power loss may have acknowledged writes as applied
/// and lost them (sim seed 138785: W = all copies, a replica's applied
/// acknowledgement counted after it lost power, then that replica elected
/// itself alone). An amnesiac standing does not stand in the fence quorum:
/// the candidate waits for a copy that remembers, or for every sync member.
#[test]
fn an_amnesiac_standing_does_not_make_a_fence_quorum() {
    // W = 3 of 3: the fence quorum is one copy.
    let mut rec = record();
    rec.membership.write_quorum = 3;
    rec.standing.amnesiac = true;
    let mut h = Harness::promoted(PrimaryLimits::default(), rec.clone());
    h.complete_persists();
    assert!(
        !h.primary.is_serving(),
        "its own amnesiac standing is not enough"
    );
    h.link_up(R2, LinkId(1));
    let amnesiac = Standing {
        amnesiac: true,
        ..record().standing_of_replica()
    };
    h.ack(R2, 1, Some(amnesiac));
    h.complete_persists();
    assert!(!h.primary.is_serving(), "nor two amnesiac ones of three");
    h.link_up(R3, LinkId(2));
    h.ack_on(R3, LinkId(2), 1, Some(amnesiac));
    h.complete_persists();
    assert!(
        h.primary.is_serving(),
        "every sync member reported: no standing is missing"
    );

    // One copy that remembers is a fence quorum of W = 3 again.
    let mut h = Harness::promoted(PrimaryLimits::default(), rec);
    h.complete_persists();
    h.link_up(R2, LinkId(1));
    h.ack(R2, 1, Some(record().standing_of_replica()));
    h.complete_persists();
    assert!(h.primary.is_serving());
}

impl Harness {
    /// A primary of epoch 4 promoted from a replica's standing at index 10
    /// of epoch 3, elected with R2 reporting a consistent standing at
    /// `r2_index`; R2 has taken `Resync(Begin)` (a full copy: this
    /// primary did not sync it).
    fn failed_over_to(r2_index: u64) -> Self {
        let mut replica = record();
        replica.standing = replica.standing_of_replica();
        let recent = RecentWrites::starting_at(replica.standing.applied);
        Harness::failed_over_remembering(r2_index, recent)
    }

    /// The same, the new primary remembering `recent` writes.
    fn failed_over_remembering(r2_index: u64, recent: RecentWrites) -> Self {
        let mut replica = record();
        replica.standing = replica.standing_of_replica();
        let mut h = Harness::promoted_with(PrimaryLimits::default(), replica.clone(), recent);
        h.complete_persists();
        h.link_up(R2, LinkId(1));
        let mut r2 = replica.standing;
        r2.applied.index = r2_index;
        h.ack(R2, 1, Some(r2));
        h.complete_persists();
        assert!(h.primary.is_serving());
        h.ack(R2, 2, None); // Resync(Begin)
        h
    }

    /// A host flush, its local device flush done and its `Flush` frame
    /// acknowledged durably by R2; returns what completed meanwhile and
    /// the local reads of region copies started.
    fn flush_through_r2(&mut self, id: u64) -> (Vec<(HostOpId, HostStatus)>, Vec<IoToken>) {
        self.event(Event::HostFlush { id: HostOpId(id) });
        let mut completed = self.completions();
        let reads = self.local_reads();
        let (flush_seq, persist) = self.flush_started();
        self.event(Event::Persisted { token: persist });
        completed.extend(self.completions());
        self.ack(R2, flush_seq, None);
        completed.extend(self.completions());
        (completed, reads)
    }

    fn local_reads(&self) -> Vec<IoToken> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::LocalRead { token, .. } => Some(*token),
                _ => None,
            })
            .collect()
    }

    /// Answers the local `reads` of R2's region copies and acknowledges
    /// every frame sent to R2 durably, until its `Resync(End)` is; returns
    /// what completed meanwhile.
    fn finish_resync_of_r2(&mut self, mut reads: Vec<IoToken>) -> Vec<(HostOpId, HostStatus)> {
        let mut completed = Vec::new();
        let mut sent = Vec::new();
        for _ in 0..100 {
            for token in std::mem::take(&mut reads) {
                self.event(Event::LocalReadDone {
                    token,
                    result: Ok(0),
                });
                sent.extend(self.sent(R2));
                completed.extend(self.completions());
            }
            let ended = sent.iter().any(|f| {
                matches!(
                    f,
                    Frame::Resync {
                        op: ResyncOp::End,
                        ..
                    }
                )
            });
            if let Some(last) = sent.iter().filter_map(Frame::sequence).max() {
                self.ack(R2, last.0, None);
                completed.extend(self.completions());
                reads = self.local_reads();
                sent = self.sent(R2);
            }
            if ended {
                return completed;
            }
        }
        panic!("R2's resync never ended");
    }
}

/// A flush through a new primary covers the writes completed before its
/// epoch too: they must be durable on a write quorum, not only on this
/// copy. R2 reported less than the election heard (this copy's 10): it
/// may lack writes the old primary completed, so the flush waits for R2's
/// resync to end.
#[test]
fn a_flush_after_a_failover_waits_for_the_inheritance_on_a_write_quorum() {
    let mut h = Harness::failed_over_to(8);
    let (completed, reads) = h.flush_through_r2(1);
    assert!(
        completed.is_empty(),
        "R2 may lack inherited writes until its resync ends"
    );
    assert!(!reads.is_empty(), "R2 gets a full copy");
    let completed = h.finish_resync_of_r2(reads);
    assert_eq!(completed, vec![(HostOpId(1), HostStatus::Success)]);
}

/// R2 reported a consistent standing at the newest the election heard: it
/// held every inherited write, durably since it accepted the epoch; a
/// flush need not wait for its resync.
#[test]
fn a_flush_after_a_failover_counts_a_replica_that_held_the_inheritance() {
    let mut h = Harness::failed_over_to(10);
    let (completed, _) = h.flush_through_r2(1);
    assert_eq!(completed, vec![(HostOpId(1), HostStatus::Success)]);
}

impl Harness {
    fn read_request_to(&self, peer: NodeId) -> Option<(Sequence, ByteRange)> {
        self.sent(peer).iter().find_map(|f| match f {
            Frame::ReadRequest { seq, range } => Some((*seq, *range)),
            _ => None,
        })
    }

    fn read_answers(&self) -> Vec<(HostOpId, u64)> {
        self.out
            .iter()
            .filter_map(|a| match a {
                Action::CompleteRead { id, data } => Some((*id, *data)),
                _ => None,
            })
            .collect()
    }
}

/// A host read the local device failed goes to a replica taking writes
/// with the region clean; its answer completes the read. When that link
/// dies first and no other copy can answer, the host gets a media error.
#[test]
fn a_degraded_read_is_answered_by_an_up_to_date_replica() {
    let mut h = Harness::serving();
    let range = ByteRange::new(4096, 4096);
    h.event(Event::DegradedRead {
        id: HostOpId(7),
        range,
    });
    let (seq, asked) = h.read_request_to(R2).expect("asked R2");
    assert_eq!(asked, range);
    h.event(Event::Received {
        peer: R2,
        link: LinkId(1),
        epoch: Epoch(4),
        frame: Frame::ReadResponse {
            seq,
            range,
            data: 99,
        },
    });
    assert_eq!(h.read_answers(), vec![(HostOpId(7), 99)]);

    // An answer nobody asked for breaks the stream.
    h.event(Event::Received {
        peer: R2,
        link: LinkId(1),
        epoch: Epoch(4),
        frame: Frame::ReadResponse {
            seq,
            range,
            data: 99,
        },
    });
    assert!(h
        .out
        .iter()
        .any(|a| matches!(a, Action::CloseLink { peer: R2, .. })));

    let mut h = Harness::serving();
    h.event(Event::DegradedRead {
        id: HostOpId(8),
        range,
    });
    assert!(h.read_request_to(R2).is_some());
    h.event(Event::LinkDown {
        peer: R2,
        link: LinkId(1),
    });
    assert_eq!(
        h.completions(),
        vec![(HostOpId(8), HostStatus::MediaError)],
        "R3 is down: no copy left to ask"
    );
}

impl Harness {
    /// A degraded read of `range` answered by R2 with `data`.
    fn degraded_read_answered(&mut self, id: u64, range: ByteRange, data: u64) {
        self.event(Event::DegradedRead {
            id: HostOpId(id),
            range,
        });
        let (seq, _) = self.read_request_to(R2).expect("asked R2");
        self.answer_read(seq, range, data);
    }

    fn answer_read(&mut self, seq: Sequence, range: ByteRange, data: u64) {
        self.event(Event::Received {
            peer: R2,
            link: LinkId(1),
            epoch: Epoch(4),
            frame: Frame::ReadResponse { seq, range, data },
        });
    }
}

/// A replica's answer to a degraded read is written back to the local
/// copy, in the stream's order: a host write to the range admitted after
/// it waits for it. An answer to a read that a host write to the range
/// came after is not written back (it may be older than the local copy).
#[test]
fn a_degraded_read_is_written_back_unless_a_write_to_the_range_came_after_it() {
    let mut h = Harness::serving();
    let range = ByteRange::new(4096, 4096);
    h.degraded_read_answered(7, range, 99);
    assert_eq!(h.read_answers(), vec![(HostOpId(7), 99)]);
    let repair = h.local_writes();
    assert!(
        matches!(repair.as_slice(), [(_, 99)]),
        "the answer goes to the local copy: {repair:?}"
    );
    h.write(20, 1);
    assert!(
        h.local_writes().is_empty(),
        "a write to the range waits for the repair"
    );
    h.event(Event::LocalWriteDone {
        token: repair[0].0,
        result: Ok(()),
    });
    h.complete_persists_keeping_writes();
    assert_eq!(h.local_writes().len(), 1, "then it is issued");
    assert_eq!(h.primary.read_repairs(), 1);

    // A write to the range admitted while the read is out: no repair.
    let mut h = Harness::serving();
    h.event(Event::DegradedRead {
        id: HostOpId(8),
        range,
    });
    let (seq, _) = h.read_request_to(R2).expect("asked R2");
    h.write(21, 1);
    h.answer_read(seq, range, 98);
    assert_eq!(h.read_answers(), vec![(HostOpId(8), 98)]);
    assert!(h.local_writes().is_empty(), "not written back");

    // One pending when the read is asked: no repair either.
    let mut h = Harness::serving();
    h.write(22, 1);
    h.degraded_read_answered(9, range, 97);
    assert_eq!(h.read_answers(), vec![(HostOpId(9), 97)]);
    assert!(h.local_writes().is_empty(), "not written back");
    assert_eq!(h.primary.read_repairs(), 0);
}

/// A scrub compares each region with every in-sync replica, reading both
/// at the same point of the stream: a write to the region admitted after
/// the check waits for it. A replica whose region differs has it copied
/// again; one that matches does not.
#[test]
fn a_scrub_recopies_a_region_a_replica_holds_differently() {
    let mut h = Harness::failed_over_to(10);
    h.event(Event::Tick);
    h.complete_persists_keeping_writes();
    let reads = h.local_reads();
    assert!(!reads.is_empty(), "R2's full copy");
    h.finish_resync_of_r2(reads);
    h.event(Event::Scrub);
    let check_read = h.local_reads();
    let (seq, range) = h.read_request_to(R2).expect("R2's region 0 asked");
    assert_eq!((check_read.len(), range), (1, ByteRange::new(0, 16384)));
    h.write(20, 1);
    assert!(h.local_writes().is_empty(), "a write to the region waits");
    h.event(Event::LocalReadDone {
        token: check_read[0],
        result: Ok(5),
    });
    h.answer_read(seq, range, 5);
    h.complete_persists_keeping_writes();
    assert_eq!(h.local_writes().len(), 1, "then it goes");
    assert_eq!(h.primary.scrub_status().mismatches, 0);

    // Region 1 next: R2 answers something else.
    let check_read = h.local_reads();
    let (seq, range) = h.read_request_to(R2).expect("R2's region 1 asked");
    assert_eq!(range, ByteRange::new(16384, 16384));
    h.event(Event::LocalReadDone {
        token: check_read[0],
        result: Ok(5),
    });
    h.answer_read(seq, range, 6);
    let status = h.primary.scrub_status();
    assert_eq!((status.checked, status.mismatches), (2, 1));
    assert!(
        h.sent(R2).iter().any(|f| matches!(
            f,
            Frame::Resync {
                op: ResyncOp::Begin { .. },
                ..
            }
        )),
        "R2 is resynced: {:?}",
        h.sent(R2)
    );
}

/// A replica being fully copied may lack anything: it is never asked.
#[test]
fn a_degraded_read_never_goes_to_a_replica_that_may_lack_the_region() {
    let mut h = Harness::failed_over_to(10);
    h.event(Event::DegradedRead {
        id: HostOpId(1),
        range: ByteRange::new(0, 4096),
    });
    assert!(h.read_request_to(R2).is_none());
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::MediaError)]);
}

/// The new primary remembers the writes it applied above R2's standing (9
/// and 10, both in region 2): a flush waits for region 2's copy to R2,
/// copied first, not for R2's whole resync.
#[test]
fn a_flush_after_a_failover_waits_only_for_the_regions_a_replica_lacks() {
    let at = |index| Position {
        epoch: Epoch(3),
        index,
    };
    let mut recent = RecentWrites::starting_at(at(6));
    for (index, region) in [(7, 0), (8, 1), (9, 2), (10, 2)] {
        recent.record(at(index), RegionIndex(region));
    }
    let mut h = Harness::failed_over_remembering(8, recent);
    h.event(Event::HostFlush { id: HostOpId(1) });
    let reads = h.local_reads();
    let copies: Vec<IoToken> = reads.clone();
    let (flush_seq, persist) = h.flush_started();
    h.event(Event::Persisted { token: persist });
    h.ack(R2, flush_seq, None);
    assert!(h.completions().is_empty(), "region 2 not copied yet");
    // The first copy read is region 2's.
    let first = h.primary.io.get(&copies[0]).copied();
    let Some(IoPurpose::CopyRead { key }) = first else {
        panic!("a copy read first: {first:?}");
    };
    let Some(Op::Copy(copy)) = h.primary.ops.get(&key) else {
        panic!("no copy");
    };
    assert_eq!(
        copy.region,
        RegionIndex(2),
        "the region the flush waits for first"
    );
    // Region 2 copied and acknowledged durably: the flush completes while
    // the rest of the resync goes on.
    h.event(Event::LocalReadDone {
        token: copies[0],
        result: Ok(0),
    });
    let marker = h
        .sent(R2)
        .iter()
        .filter_map(Frame::sequence)
        .max()
        .expect("region 2's data and marker");
    h.ack(R2, marker.0, None);
    assert_eq!(h.completions(), vec![(HostOpId(1), HostStatus::Success)]);
    assert!(
        h.primary.peers[&R2]
            .link
            .as_ref()
            .is_some_and(|l| l.phase == LinkPhase::Resyncing),
        "the resync is not over"
    );
}

/// With read leases a primary serves reads only while a write quorum
/// answered it within half the lease, and a newly elected one serves only
/// a lease after its election.
#[test]
fn a_read_lease_holds_while_a_quorum_answers_and_delays_a_new_primary() {
    const LEASE: Time = 1_000_000;
    let limits = PrimaryLimits {
        read_lease: LEASE,
        ..PrimaryLimits::default()
    };
    let mut h = Harness::promoted(limits, record());
    h.complete_persists();
    h.link_up(R2, LinkId(1));
    h.ack(R2, 1, Some(record().standing_of_replica()));
    h.complete_persists();
    assert!(!h.primary.is_serving(), "waits out a lease first");
    h.now = LEASE - 1;
    h.event(Event::Tick);
    assert!(!h.primary.is_serving());
    h.now = LEASE;
    h.event(Event::Tick);
    assert!(h.primary.is_serving());
    // R2 answered the EpochChange sent at time 0: that was long ago.
    assert!(!h.primary.serves_reads(h.now));
    h.event(Event::HeartbeatAnswered {
        peer: R2,
        link: LinkId(1),
        sent_at: LEASE,
    });
    assert!(h.primary.serves_reads(LEASE + LEASE / 2 - 1));
    assert!(!h.primary.serves_reads(LEASE + LEASE / 2));
    // An answer on another link does not count.
    h.event(Event::HeartbeatAnswered {
        peer: R2,
        link: LinkId(9),
        sent_at: 2 * LEASE,
    });
    assert!(!h.primary.serves_reads(2 * LEASE));
}
