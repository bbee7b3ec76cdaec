//! The roster: where every copy of the volume is reached (node, address,
//! transport, mode), shared by the control socket, the link threads and
//! shard 0.
//!
//! It starts from the `--member` flags (or keel.toml's `members`) and
//! changes at run time: `replica_add` puts a copy in, a copy's address
//! learned from an `EpochChange` another primary sent is added, and the
//! serving primary drops copies that left the volume. Who is a member, and
//! in which mode, is the state machine's business (`Node::membership`);
//! the roster only answers "where is node N" and "may node N open a link".
//!
//! Reads happen on connects, accepts and control calls, never on the I/O
//! path, so one lock is enough.

use std::net::SocketAddr;
use std::sync::{PoisonError, RwLock};

use keel_replicator::wire::{NodeId, MAX_COPIES};

use super::{MemberAddress, Transport};

/// Copies the roster learns from other nodes' `EpochChange` frames at most
/// holds in all: each frame names at most `MAX_COPIES`, but a peer sending
/// one new membership after another must not grow it without bound.
const MAX_LEARNED_ROSTER: usize = 2 * MAX_COPIES;

/// The shared address book of the volume's copies.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    copies: RwLock<Vec<MemberAddress>>,
}

impl Roster {
    /// A roster of `members` (the configured copies).
    pub fn new(members: &[MemberAddress]) -> Roster {
        Roster {
            copies: RwLock::new(members.to_vec()),
        }
    }

    /// Every copy known, in the order they were added.
    pub fn snapshot(&self) -> Vec<MemberAddress> {
        self.copies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Node `node`'s entry.
    pub fn get(&self, node: NodeId) -> Option<MemberAddress> {
        self.copies
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|m| m.node == node)
            .cloned()
    }

    /// Where links to `node` go.
    pub fn address(&self, node: NodeId) -> Option<(SocketAddr, Transport)> {
        self.get(node).map(|m| (m.addr, m.transport))
    }

    /// Whether `node` is a known copy (links from others are refused).
    pub fn contains(&self, node: NodeId) -> bool {
        self.get(node).is_some()
    }

    /// Adds `member`, or replaces the entry of the same node (a copy added
    /// again at another address).
    pub fn insert(&self, member: MemberAddress) {
        let mut copies = self.copies.write().unwrap_or_else(PoisonError::into_inner);
        match copies.iter_mut().find(|m| m.node == member.node) {
            Some(entry) => *entry = member,
            None => copies.push(member),
        }
    }

    /// Adds `member` unless its node is known already (an address learned
    /// from another node never overrides the local configuration) or the
    /// roster holds [`MAX_LEARNED_ROSTER`] copies already.
    pub fn learn(&self, member: MemberAddress) -> bool {
        let mut copies = self.copies.write().unwrap_or_else(PoisonError::into_inner);
        if copies.iter().any(|m| m.node == member.node) {
            return false;
        }
        if copies.len() >= MAX_LEARNED_ROSTER {
            tracing::warn!(node = %member.node, "replication: the roster is full; an address learned from an EpochChange is dropped");
            return false;
        }
        copies.push(member);
        true
    }

    /// Keeps only the copies `keep` accepts; the nodes dropped.
    pub fn retain(&self, keep: impl Fn(NodeId) -> bool) -> Vec<NodeId> {
        let mut copies = self.copies.write().unwrap_or_else(PoisonError::into_inner);
        let dropped = copies
            .iter()
            .filter(|m| !keep(m.node))
            .map(|m| m.node)
            .collect();
        copies.retain(|m| keep(m.node));
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::replication::parse_member;

    #[test]
    fn copies_are_added_replaced_learned_and_dropped() {
        let roster = Roster::new(&[
            parse_member("1@127.0.0.1:7001").expect("member"),
            parse_member("2@127.0.0.1:7002").expect("member"),
        ]);
        assert!(roster.contains(NodeId(2)));
        assert!(!roster.contains(NodeId(3)));
        roster.insert(parse_member("3@127.0.0.1:7003:async").expect("member"));
        assert_eq!(
            roster.address(NodeId(3)),
            Some(("127.0.0.1:7003".parse().expect("addr"), Transport::Tcp))
        );
        roster.insert(parse_member("3@127.0.0.1:7013").expect("member"));
        assert_eq!(roster.snapshot().len(), 3);
        assert_eq!(
            roster.get(NodeId(3)).map(|m| m.addr.port()),
            Some(7013),
            "replaced"
        );
        assert!(!roster.learn(parse_member("3@127.0.0.1:9").expect("member")));
        assert!(roster.learn(parse_member("4@127.0.0.1:7004").expect("member")));
        assert_eq!(roster.retain(|n| n != NodeId(2)), vec![NodeId(2)]);
        assert!(!roster.contains(NodeId(2)));
        assert_eq!(roster.snapshot().len(), 3);
    }

    #[test]
    fn learned_addresses_are_bounded() {
        let roster = Roster::new(&[]);
        for node in 0..100 {
            let member =
                parse_member(&format!("{node}@127.0.0.1:{}", 7000 + node)).expect("member");
            let learned = roster.learn(member);
            assert_eq!(learned, (node as usize) < MAX_LEARNED_ROSTER, "node {node}");
        }
        assert_eq!(roster.snapshot().len(), MAX_LEARNED_ROSTER);
    }
}
