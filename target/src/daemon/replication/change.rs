//! Membership changes asked for on the control socket (`replica_add`,
//! `replica_remove`, `quorum_set`): the new membership built from the one
//! the state machine works with, checked so that every refusal the
//! operator can cause has a message that says what to do.
//!
//! The state machine checks again (`Node::can_reconfigure`): what it
//! refuses that these checks let through (a change still in progress, this
//! node no longer serving) is reported from its refusal.

use keel_replicator::core::{Member, Membership, ReconfigureRefusal};
use keel_replicator::wire::{Epoch, NodeId, ReplicationMode, MAX_COPIES};

use super::MemberAddress;

/// One change to the membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new copy (`replica_add`).
    Add(MemberAddress),
    /// A copy leaves the volume (`replica_remove`).
    Remove(NodeId),
    /// A copy becomes sync or async (`replica_mode`).
    SetMode(NodeId, ReplicationMode),
    /// Copies durable before a write completes (`quorum_set`).
    SetQuorum(u8),
}

/// How a refused change is reported (the JSON-RPC code it maps to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeErrorKind {
    /// An argument out of the range the membership allows (-32602).
    InvalidParams,
    /// The copy named is not a member (-32001).
    NotFound,
    /// The change conflicts with the volume's state (-32002).
    Refused,
}

/// A refused change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeError {
    pub kind: ChangeErrorKind,
    pub message: String,
}

impl ChangeError {
    fn refused(message: String) -> ChangeError {
        ChangeError {
            kind: ChangeErrorKind::Refused,
            message,
        }
    }

    /// The state machine's refusal, in words that say what to do.
    pub fn from_refusal(refusal: ReconfigureRefusal, me: NodeId, primary: NodeId) -> ChangeError {
        let message = match refusal {
            ReconfigureRefusal::NotServing => not_serving(me, primary),
            ReconfigureRefusal::InProgress => "a membership change is still in progress; \
                 retry once volume_status shows reconfiguring: false"
                .to_string(),
            ReconfigureRefusal::Unchanged => "the membership would not change".to_string(),
            ReconfigureRefusal::QuorumTooHigh => "removing sync copies (or making them async) \
                 must lower the write quorum by as many; raise it again in a change of its \
                 own (quorum_set), once the copies are removed"
                .to_string(),
            other => format!("the replication state machine refused the change: {other}"),
        };
        ChangeError::refused(message)
    }
}

/// The refusal for a node that is not the serving primary.
pub(crate) fn not_serving(me: NodeId, primary: NodeId) -> String {
    if me == primary {
        format!("node {me} is not serving (yet): only the serving primary changes the membership")
    } else {
        format!(
            "node {me} is not the serving primary: only the primary changes the membership \
             (the last primary this node knows is node {primary})"
        )
    }
}

/// What a change started: the epoch it comes with and the membership
/// after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeOutcome {
    pub from_epoch: Epoch,
    pub to_epoch: Epoch,
    pub membership: Membership,
}

/// The membership after `change`, applied to `current` by primary `me`;
/// `roster` says which addresses other copies use.
pub(crate) fn plan(
    me: NodeId,
    current: &Membership,
    roster: &[MemberAddress],
    change: &MembershipChange,
) -> Result<Membership, ChangeError> {
    match change {
        MembershipChange::Add(copy) => plan_add(current, roster, copy),
        MembershipChange::Remove(node) => plan_remove(me, current, *node),
        MembershipChange::SetMode(node, mode) => plan_mode(me, current, *node, *mode),
        MembershipChange::SetQuorum(w) => plan_quorum(current, *w),
    }
}

fn plan_add(
    current: &Membership,
    roster: &[MemberAddress],
    copy: &MemberAddress,
) -> Result<Membership, ChangeError> {
    if current.mode_of(copy.node).is_some() {
        return Err(ChangeError::refused(format!(
            "node {} is already a copy of the volume",
            copy.node
        )));
    }
    // Only the addresses of current members count: a copy removed earlier
    // may have left its address behind.
    let taken = roster
        .iter()
        .find(|m| m.addr == copy.addr && current.mode_of(m.node).is_some());
    if let Some(other) = taken {
        return Err(ChangeError::refused(format!(
            "address {} is node {}'s replication address",
            copy.addr, other.node
        )));
    }
    if current.members.len() >= MAX_COPIES {
        return Err(ChangeError::refused(format!(
            "the volume has {} copies, the most the replication protocol carries",
            MAX_COPIES
        )));
    }
    let mut next = current.clone();
    next.members.push(Member {
        node: copy.node,
        mode: copy.mode,
    });
    Ok(next)
}

fn plan_remove(me: NodeId, current: &Membership, node: NodeId) -> Result<Membership, ChangeError> {
    if node == me {
        return Err(ChangeError::refused(format!(
            "node {node} is this node, the primary: it cannot remove itself \
             (promote another copy first, then remove this one there)"
        )));
    }
    if current.mode_of(node).is_none() {
        return Err(ChangeError {
            kind: ChangeErrorKind::NotFound,
            message: format!("node {node} is not a copy of the volume"),
        });
    }
    let mut next = current.clone();
    next.members.retain(|m| m.node != node);
    if current.mode_of(node) == Some(ReplicationMode::Sync) {
        // An election under the new membership must still see every write
        // a write quorum of the old one acknowledged: without a sync copy,
        // that takes a write quorum one smaller (the core refuses anything
        // else; raising it again needs joint memberships, not kept yet).
        if current.write_quorum <= 1 {
            return Err(ChangeError::refused(format!(
                "node {node} is a sync copy and the write quorum is 1 already: removing it \
                 would need a write quorum of 0"
            )));
        }
        next.write_quorum = current.write_quorum - 1;
    }
    Ok(next)
}

fn plan_mode(
    me: NodeId,
    current: &Membership,
    node: NodeId,
    mode: ReplicationMode,
) -> Result<Membership, ChangeError> {
    if node == me {
        return Err(ChangeError::refused(format!(
            "node {node} is this node, the primary: the primary's copy is always sync"
        )));
    }
    let Some(was) = current.mode_of(node) else {
        return Err(ChangeError {
            kind: ChangeErrorKind::NotFound,
            message: format!("node {node} is not a copy of the volume"),
        });
    };
    if was == mode {
        return Err(ChangeError::refused(format!(
            "node {node} is {} already",
            mode_name(mode)
        )));
    }
    let mut next = current.clone();
    for m in next.members.iter_mut().filter(|m| m.node == node) {
        m.mode = mode;
    }
    if mode == ReplicationMode::Async {
        // As for a removal: one sync copy fewer takes a write quorum one
        // smaller, so that an election under the new membership still sees
        // every write the old one acknowledged.
        if current.write_quorum <= 1 {
            return Err(ChangeError::refused(format!(
                "node {node} is a sync copy and the write quorum is 1 already: making it \
                 async would need a write quorum of 0"
            )));
        }
        next.write_quorum = current.write_quorum - 1;
    }
    Ok(next)
}

fn plan_quorum(current: &Membership, w: u8) -> Result<Membership, ChangeError> {
    let sync = current.sync_count();
    if w == 0 || usize::from(w) > sync {
        return Err(ChangeError {
            kind: ChangeErrorKind::InvalidParams,
            message: format!(
                "parameter \"write_quorum\" must be in 1..={sync} (the volume's sync copies), \
                 got {w}"
            ),
        });
    }
    if w == current.write_quorum {
        return Err(ChangeError::refused(format!(
            "the write quorum is {w} already"
        )));
    }
    Ok(Membership {
        write_quorum: w,
        ..current.clone()
    })
}

/// `mode` as the control socket and the flags spell it.
pub(crate) fn mode_name(mode: ReplicationMode) -> &'static str {
    match mode {
        ReplicationMode::Sync => "sync",
        ReplicationMode::Async => "async",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::replication::parse_member;

    fn current() -> (Membership, Vec<MemberAddress>) {
        let roster: Vec<MemberAddress> =
            ["1@127.0.0.1:7001", "2@127.0.0.1:7002", "9@127.0.0.1:7009"]
                .iter()
                .map(|m| parse_member(m).expect("member"))
                .collect();
        let membership = Membership {
            members: roster[..2]
                .iter()
                .map(|m| Member {
                    node: m.node,
                    mode: m.mode,
                })
                .collect(),
            primary: NodeId(1),
            write_quorum: 2,
            since: keel_replicator::wire::Epoch(0),
            previous: None,
        };
        (membership, roster)
    }

    fn add(text: &str) -> MembershipChange {
        MembershipChange::Add(parse_member(text).expect("member"))
    }

    #[test]
    fn an_added_copy_needs_a_new_node_and_a_free_address() {
        let (m, roster) = current();
        let me = NodeId(1);
        let next = plan(me, &m, &roster, &add("3@127.0.0.1:7003:async")).expect("add");
        assert_eq!(next.members.len(), 3);
        assert_eq!(next.mode_of(NodeId(3)), Some(ReplicationMode::Async));
        assert_eq!(next.write_quorum, 2);
        let error = plan(me, &m, &roster, &add("2@127.0.0.1:7003")).expect_err("dup node");
        assert_eq!(error.kind, ChangeErrorKind::Refused);
        assert!(error.message.contains("already a copy"), "{error:?}");
        let error = plan(me, &m, &roster, &add("3@127.0.0.1:7002")).expect_err("dup addr");
        assert!(error.message.contains("node 2's"), "{error:?}");
        // Node 9 is in the roster but no member: its address is free.
        assert!(plan(me, &m, &roster, &add("3@127.0.0.1:7009")).is_ok());
        let mut full = m.clone();
        full.members = (1..=MAX_COPIES as u64)
            .map(|n| Member {
                node: NodeId(n),
                mode: ReplicationMode::Sync,
            })
            .collect();
        let error = plan(me, &full, &roster, &add("99@127.0.0.1:9999")).expect_err("full");
        assert!(error.message.contains("16 copies"), "{error:?}");
    }

    #[test]
    fn a_removal_keeps_the_primary_and_lowers_the_quorum_with_a_sync_copy() {
        let (m, roster) = current();
        let me = NodeId(1);
        let error = plan(me, &m, &roster, &MembershipChange::Remove(NodeId(1))).expect_err("me");
        assert!(error.message.contains("primary"), "{error:?}");
        let error = plan(me, &m, &roster, &MembershipChange::Remove(NodeId(7))).expect_err("who");
        assert_eq!(error.kind, ChangeErrorKind::NotFound);
        // W = 2 of 2 sync copies: without node 2, W = 1 (what the core
        // allows: an election under the new membership sees every write).
        let next = plan(me, &m, &roster, &MembershipChange::Remove(NodeId(2))).expect("remove");
        assert_eq!(next.members.len(), 1);
        assert_eq!(next.write_quorum, 1);
        assert!(next.is_valid());
        let w1 = Membership {
            write_quorum: 1,
            ..m.clone()
        };
        let error = plan(me, &w1, &roster, &MembershipChange::Remove(NodeId(2))).expect_err("W=0");
        assert_eq!(error.kind, ChangeErrorKind::Refused);
        assert!(error.message.contains("quorum is 1 already"), "{error:?}");
    }

    #[test]
    fn a_mode_change_keeps_the_primary_sync_and_lowers_w_with_a_sync_copy() {
        let (m, roster) = current();
        let me = NodeId(1);
        let to = |node, mode| MembershipChange::SetMode(NodeId(node), mode);
        let error = plan(me, &m, &roster, &to(1, ReplicationMode::Async)).expect_err("me");
        assert!(error.message.contains("always sync"), "{error:?}");
        let error = plan(me, &m, &roster, &to(7, ReplicationMode::Async)).expect_err("who");
        assert_eq!(error.kind, ChangeErrorKind::NotFound);
        let error = plan(me, &m, &roster, &to(2, ReplicationMode::Sync)).expect_err("same");
        assert!(error.message.contains("sync already"), "{error:?}");
        let next = plan(me, &m, &roster, &to(2, ReplicationMode::Async)).expect("async");
        assert_eq!(next.mode_of(NodeId(2)), Some(ReplicationMode::Async));
        assert_eq!(next.write_quorum, 1);
        assert!(next.is_valid());
        let back = plan(me, &next, &roster, &to(2, ReplicationMode::Sync)).expect("sync");
        assert_eq!(back.mode_of(NodeId(2)), Some(ReplicationMode::Sync));
        assert_eq!(back.write_quorum, 1, "W stays: raising it is refused");
    }

    #[test]
    fn the_quorum_stays_within_the_sync_copies() {
        let (m, roster) = current();
        let me = NodeId(1);
        for w in [0, 3] {
            let error = plan(me, &m, &roster, &MembershipChange::SetQuorum(w)).expect_err("W");
            assert_eq!(error.kind, ChangeErrorKind::InvalidParams);
            assert!(error.message.contains("1..=2"), "{error:?}");
        }
        let error = plan(me, &m, &roster, &MembershipChange::SetQuorum(2)).expect_err("same");
        assert!(error.message.contains("already"), "{error:?}");
        let next = plan(me, &m, &roster, &MembershipChange::SetQuorum(1)).expect("W=1");
        assert_eq!(next.write_quorum, 1);
        let w1 = Membership {
            write_quorum: 1,
            ..m.clone()
        };
        let raised = plan(me, &w1, &roster, &MembershipChange::SetQuorum(2)).expect("raise");
        assert_eq!(raised.write_quorum, 2);
    }
}
