//! Replication of a keeld volume over TCP: the sans-IO state machines of
//! `keel_replicator::core` driven by shard 0's ring.
//!
//! - [`ReplicationOptions`]: who the copies are (from the quick-start
//!   flags), checked by [`ReplicationOptions::validate`].
//! - `record`: the node's durable record in a sidecar file.
//! - `driver`: the shard side: peer connections (receive, decode, encode,
//!   send on the ring), local writes, reads and persists for the state
//!   machine, and the mapping from NVMe commands to host operations.
//! - `links`: the control threads (plain std threads, blocking I/O) that
//!   open and accept links, run the PSK handshake and hand the sockets to
//!   the shard with [`crate::daemon::Message::PeerLink`].
//!
//! See `docs/replication-keeld.md`.

pub(crate) mod driver;
pub(crate) mod links;
pub(crate) mod record;

use std::net::SocketAddr;

use keel_replicator::wire::{NodeId, ReplicationMode, VolumeId, MAX_COPIES};

/// Bytes per write-intent region (one bit of the bitmap, the unit of
/// resync). Host writes are split at region boundaries.
pub const REGION_SIZE: u32 = 1 << 20;

/// How links to a copy travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// TCP (`ID@IP:PORT`, or `ID@tcp://IP:PORT`).
    #[default]
    Tcp,
    /// RDMA verbs through rdma_cm (`ID@rdma://IP:PORT`, the IP of an RDMA
    /// device's netdev); needs keeld built with the cargo feature `rdma`.
    Rdma,
}

/// One copy of the volume: its node, replication address and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberAddress {
    /// The node holding the copy.
    pub node: NodeId,
    /// Its replication listener.
    pub addr: SocketAddr,
    /// Sync (counts toward the write quorum) or async.
    pub mode: ReplicationMode,
    /// How links to it travel (links to a copy use the copy's transport).
    pub transport: Transport,
}

/// Parses `ID@[tcp://|rdma://]HOST:PORT[:sync|:async]` (TCP and sync by
/// default).
pub fn parse_member(text: &str) -> Result<MemberAddress, String> {
    let (id, rest) = text
        .split_once('@')
        .ok_or_else(|| format!("{text:?}: expected ID@[tcp://|rdma://]HOST:PORT[:sync|:async]"))?;
    let (transport, rest) = if let Some(rest) = rest.strip_prefix("rdma://") {
        (Transport::Rdma, rest)
    } else {
        (Transport::Tcp, rest.strip_prefix("tcp://").unwrap_or(rest))
    };
    let node: u64 = id
        .parse()
        .map_err(|_| format!("{text:?}: node id {id:?} is not a number"))?;
    let (addr, mode) = match rest.rsplit_once(':') {
        Some((addr, "sync")) => (addr, ReplicationMode::Sync),
        Some((addr, "async")) => (addr, ReplicationMode::Async),
        _ => (rest, ReplicationMode::Sync),
    };
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IP:PORT address"))?;
    Ok(MemberAddress {
        node: NodeId(node),
        addr,
        mode,
        transport,
    })
}

/// Epochs a node may take for itself: `e % EPOCH_STRIDE == node %
/// EPOCH_STRIDE`. Two nodes can then never pick the same epoch — a
/// restarted first primary (which takes over again on its own) and a
/// promoted replica each take the next number of their own class.
pub const EPOCH_STRIDE: u64 = 64;

/// The smallest epoch after `current` that `node` may take.
pub fn next_epoch(current: u64, node: NodeId) -> u64 {
    let class = node.0 % EPOCH_STRIDE;
    let base = current - current % EPOCH_STRIDE + class;
    if base > current {
        base
    } else {
        base + EPOCH_STRIDE
    }
}

/// What a replica with no replication record is (a primary with none is
/// always the first primary of a new volume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FreshCopy {
    /// Refuse to start: the operator must say which of the two it is.
    #[default]
    Refuse,
    /// Part of a brand-new volume: every copy starts consistent in epoch 1
    /// and the first primary copies the whole volume to it.
    Bootstrap,
    /// A copy on a new, empty disk joining an existing volume: blank, it
    /// claims nothing and gets a full copy.
    Blank,
}

/// How this keeld replicates its (single) volume.
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// This node.
    pub node: NodeId,
    /// Every copy of the volume, this node's included; the same list on
    /// every node.
    pub members: Vec<MemberAddress>,
    /// The primary of the first epoch (the only one that serves in this
    /// version: no failover yet).
    pub primary: NodeId,
    /// Where this node accepts replication links (its own member address).
    pub listen: SocketAddr,
    /// Copies durable before a write completes, the primary's included.
    pub write_quorum: u8,
    /// The pre-shared key's bytes (at least 16).
    pub psk: Vec<u8>,
    /// The replicated volume's id (the same on every copy).
    pub volume: VolumeId,
    /// What a replica with no record is.
    pub fresh: FreshCopy,
}

impl ReplicationOptions {
    /// Checks the options against each other; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.members.len() < 2 {
            return Err("replication needs at least two --member copies".into());
        }
        if self.members.len() > MAX_COPIES {
            return Err(format!("at most {MAX_COPIES} --member copies"));
        }
        for (index, member) in self.members.iter().enumerate() {
            if self.members[index + 1..]
                .iter()
                .any(|other| other.node == member.node)
            {
                return Err(format!("--member node id {} is given twice", member.node));
            }
            if self.members[index + 1..]
                .iter()
                .any(|other| other.addr == member.addr)
            {
                return Err(format!("--member address {} is given twice", member.addr));
            }
        }
        let me = self
            .members
            .iter()
            .find(|m| m.node == self.node)
            .ok_or_else(|| format!("--node-id {} is not one of the --member copies", self.node))?;
        if me.addr != self.listen {
            // Something between the others and this node (a proxy, NAT,
            // a test's delay line) forwards its member address here.
            tracing::warn!(
                listen = %self.listen,
                member = %me.addr,
                "--replica-listen differs from this node's --member address: \
                 the others reach it through whatever forwards the member address"
            );
        }
        let primary = self
            .members
            .iter()
            .find(|m| m.node == self.primary)
            .ok_or_else(|| {
                format!(
                    "--primary {} is not one of the --member copies",
                    self.primary
                )
            })?;
        if !cfg!(feature = "rdma") && self.members.iter().any(|m| m.transport == Transport::Rdma) {
            return Err(
                "an rdma:// --member needs keeld built with the cargo feature `rdma`".into(),
            );
        }
        if primary.mode != ReplicationMode::Sync {
            return Err(format!("--primary {} must be a sync copy", self.primary));
        }
        let sync = self
            .members
            .iter()
            .filter(|m| m.mode == ReplicationMode::Sync)
            .count();
        if self.write_quorum == 0 || usize::from(self.write_quorum) > sync {
            return Err(format!(
                "--write-quorum {} must be between 1 and the {sync} sync copies",
                self.write_quorum
            ));
        }
        if self.psk.len() < keel_replicator::auth::MIN_KEY_LEN {
            return Err(format!(
                "the pre-shared key must be at least {} bytes (it has {})",
                keel_replicator::auth::MIN_KEY_LEN,
                self.psk.len()
            ));
        }
        Ok(())
    }

    /// The core's membership of the first epoch.
    pub(crate) fn membership(&self) -> keel_replicator::core::Membership {
        keel_replicator::core::Membership {
            members: self
                .members
                .iter()
                .map(|m| keel_replicator::core::Member {
                    node: m.node,
                    mode: m.mode,
                })
                .collect(),
            primary: self.primary,
            write_quorum: self.write_quorum,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ReplicationOptions {
        ReplicationOptions {
            node: NodeId(1),
            members: vec![
                parse_member("1@127.0.0.1:7001").expect("member"),
                parse_member("2@127.0.0.1:7002:sync").expect("member"),
                parse_member("3@127.0.0.1:7003:async").expect("member"),
            ],
            primary: NodeId(1),
            listen: "127.0.0.1:7001".parse().expect("addr"),
            write_quorum: 2,
            psk: vec![7; 32],
            volume: VolumeId(1),
            fresh: FreshCopy::Bootstrap,
        }
    }

    #[test]
    fn nodes_never_pick_the_same_epoch() {
        assert_eq!(next_epoch(1, NodeId(1)), 65);
        assert_eq!(next_epoch(1, NodeId(2)), 2);
        assert_eq!(next_epoch(2, NodeId(2)), 66);
        assert_eq!(next_epoch(65, NodeId(1)), 129);
        assert_eq!(next_epoch(66, NodeId(1)), 129);
        for current in 0..300u64 {
            let a = next_epoch(current, NodeId(3));
            let b = next_epoch(current, NodeId(7));
            assert!(a > current && b > current && a != b);
            assert!(a - current <= EPOCH_STRIDE && b - current <= EPOCH_STRIDE);
        }
    }

    #[test]
    fn members_parse() {
        let m = parse_member("3@[::1]:7003:async").expect("member");
        assert_eq!(m.node, NodeId(3));
        assert_eq!(m.mode, ReplicationMode::Async);
        assert_eq!(m.addr, "[::1]:7003".parse().expect("addr"));
        assert!(parse_member("x@127.0.0.1:1").is_err());
        assert!(parse_member("1@nohost").is_err());
        assert!(parse_member("127.0.0.1:1").is_err());
        let m = parse_member("2@rdma://192.0.2.1:4431:async").expect("member");
        assert_eq!(m.transport, Transport::Rdma);
        assert_eq!(m.mode, ReplicationMode::Async);
        assert_eq!(m.addr, "192.0.2.1:4431".parse().expect("addr"));
        let m = parse_member("2@tcp://127.0.0.1:7").expect("member");
        assert_eq!(m.transport, Transport::Tcp);
        assert!(parse_member("2@rdma://nohost").is_err());
    }

    #[test]
    fn options_are_checked() {
        assert_eq!(options().validate(), Ok(()));
        let mut o = options();
        o.write_quorum = 3;
        assert!(o.validate().expect_err("W").contains("--write-quorum"));
        let mut o = options();
        o.primary = NodeId(3);
        assert!(o.validate().expect_err("async primary").contains("sync"));
        // Listening elsewhere than the member address is allowed (something
        // forwards it: a proxy, NAT, a test's delay line) and logged.
        let mut o = options();
        o.listen = "127.0.0.1:9".parse().expect("addr");
        assert_eq!(o.validate(), Ok(()));
        let mut o = options();
        o.node = NodeId(9);
        assert!(o.validate().expect_err("node").contains("--node-id"));
        let mut o = options();
        o.psk = vec![1; 4];
        assert!(o.validate().expect_err("psk").contains("key"));
        let mut o = options();
        o.members[1].node = NodeId(1);
        assert!(o.validate().expect_err("dup").contains("twice"));
    }
}
