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

pub(crate) mod change;
pub(crate) mod driver;
pub(crate) mod links;
pub(crate) mod liveness;
pub(crate) mod note;
pub(crate) mod record;
pub(crate) mod roster;

use std::net::SocketAddr;

use keel_replicator::wire::{NodeId, ReplicationMode, VolumeId, MAX_COPIES};

/// Bytes per write-intent region (one bit of the bitmap, the unit of
/// resync). Host writes are split at region boundaries.
pub const REGION_SIZE: u32 = 1 << 20;

/// Region copies a resync keeps in flight per replica (the core's
/// `PrimaryLimits::resync_regions_in_flight`).
pub const RESYNC_REGIONS_IN_FLIGHT: usize = 4;

/// The smallest async lag bound in bytes: a resync keeps
/// [`RESYNC_REGIONS_IN_FLIGHT`] regions in flight, and an async replica
/// whose bound is below that would be dropped again by every resync and
/// never catch up.
pub const MIN_ASYNC_LAG_BYTES: u64 = RESYNC_REGIONS_IN_FLIGHT as u64 * REGION_SIZE as u64;

/// Default async lag bound in bytes (the core's default).
pub const DEFAULT_ASYNC_LAG_BYTES: u64 = 64 << 20;

/// Default async lag bound in time (the core's default).
pub const DEFAULT_ASYNC_LAG: std::time::Duration = std::time::Duration::from_secs(5);

/// The async lag bound in time must be at least this (two 50 ms ticks, the
/// granularity the driver checks it at) ...
pub const MIN_ASYNC_LAG: std::time::Duration = std::time::Duration::from_millis(100);

/// ... and at most this (a day).
pub const MAX_ASYNC_LAG: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Default link timeout: nothing received on a link for this long closes
/// it, and a replica that acknowledges nothing for this long is dropped
/// (and resynced when it answers again).
pub const DEFAULT_LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The highest `--resync-rate-mib` / `resync_rate_mib` (about 1 TiB/s).
pub const MAX_RESYNC_RATE_MIB: u64 = 1_000_000;

/// The link timeout must be at least this (four heartbeats of two 50 ms
/// ticks each) ...
pub const MIN_LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(400);

/// ... and at most this (ten minutes: TCP itself gives up around then).
pub const MAX_LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

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
    let node: u64 = id
        .parse()
        .map_err(|_| format!("{text:?}: node id {id:?} is not a number"))?;
    let (address, mode) = match rest.rsplit_once(':') {
        Some((address, "sync")) => (address, ReplicationMode::Sync),
        Some((address, "async")) => (address, ReplicationMode::Async),
        _ => (rest, ReplicationMode::Sync),
    };
    let (addr, transport) = parse_address(address).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(MemberAddress {
        node: NodeId(node),
        addr,
        mode,
        transport,
    })
}

/// Parses a copy's replication address, `[tcp://|rdma://]IP:PORT` (TCP by
/// default).
pub fn parse_address(text: &str) -> Result<(SocketAddr, Transport), String> {
    let (transport, rest) = if let Some(rest) = text.strip_prefix("rdma://") {
        (Transport::Rdma, rest)
    } else {
        (Transport::Tcp, text.strip_prefix("tcp://").unwrap_or(text))
    };
    let addr: SocketAddr = rest
        .parse()
        .map_err(|_| format!("{rest:?} is not an IP:PORT address"))?;
    Ok((addr, transport))
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

/// How far behind an async replica may fall before it is marked out of
/// date: its link is closed and it is resynced on the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncLagBound {
    /// Bytes sent or queued to it and not acknowledged
    /// (`--async-max-lag-bytes`, `async_max_lag_bytes`).
    pub bytes: u64,
    /// Age of its oldest unacknowledged frame (`--async-max-lag-ms`,
    /// `async_max_lag_ms`).
    pub time: std::time::Duration,
}

impl Default for AsyncLagBound {
    fn default() -> Self {
        AsyncLagBound {
            bytes: DEFAULT_ASYNC_LAG_BYTES,
            time: DEFAULT_ASYNC_LAG,
        }
    }
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
    /// The async replicas' lag bound.
    pub async_lag: AsyncLagBound,
    /// Silence on a link, or a replica's wait for acknowledgements, beyond
    /// which it is closed (`--link-timeout-ms`, `link_timeout_ms`).
    pub link_timeout: std::time::Duration,
    /// Read leases of one link timeout (`--read-lease`, `read_lease`): a
    /// primary serves only while a write quorum answered it within half
    /// of one, and a promotion waits one out (docs/replication-design.md,
    /// "Read leases").
    pub read_lease: bool,
    /// Bytes per second a primary may read for resyncs and scrubs
    /// (`--resync-rate-mib`, `resync_rate_mib`); `None`: unlimited.
    pub resync_rate: Option<u64>,
}

/// A replication setting, as a flag or as a key of keel.toml's
/// `[replication]` table (error messages name it the way it was given).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// This node's id.
    NodeId,
    /// The copies of the volume.
    Members,
    /// The primary of the first epoch.
    Primary,
    /// Where this node accepts replication links.
    ReplicaListen,
    /// Copies durable before a write completes.
    WriteQuorum,
    /// The pre-shared key (its file).
    Psk,
    /// The async lag bound in bytes.
    AsyncMaxLagBytes,
    /// The async lag bound in time.
    AsyncMaxLagMs,
    /// The link timeout.
    LinkTimeoutMs,
}

impl Setting {
    /// The quick-start flag.
    pub fn flag(self) -> &'static str {
        match self {
            Setting::NodeId => "--node-id",
            Setting::Members => "--member",
            Setting::Primary => "--primary",
            Setting::ReplicaListen => "--replica-listen",
            Setting::WriteQuorum => "--write-quorum",
            Setting::Psk => "--psk-file",
            Setting::AsyncMaxLagBytes => "--async-max-lag-bytes",
            Setting::AsyncMaxLagMs => "--async-max-lag-ms",
            Setting::LinkTimeoutMs => "--link-timeout-ms",
        }
    }

    /// The key in keel.toml's `[replication]` table.
    pub fn key(self) -> &'static str {
        match self {
            Setting::NodeId => "node_id",
            Setting::Members => "members",
            Setting::Primary => "primary",
            Setting::ReplicaListen => "replica_listen",
            Setting::WriteQuorum => "write_quorum",
            Setting::Psk => "psk_file",
            Setting::AsyncMaxLagBytes => "async_max_lag_bytes",
            Setting::AsyncMaxLagMs => "async_max_lag_ms",
            Setting::LinkTimeoutMs => "link_timeout_ms",
        }
    }
}

/// Replication options that do not fit together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionError {
    /// The setting at fault.
    pub setting: Setting,
    /// What is wrong, naming settings as flags or as keys.
    pub message: String,
}

impl ReplicationOptions {
    /// Checks the options against each other; the error names the flags.
    pub fn validate(&self) -> Result<(), String> {
        self.check(false).map_err(|e| e.message)
    }

    /// Checks the options against each other; the error names the setting
    /// at fault and, in its message, the settings as keys of keel.toml's
    /// `[replication]` table (`as_keys`) or as flags.
    pub fn check(&self, as_keys: bool) -> Result<(), OptionError> {
        let n = |s: Setting| if as_keys { s.key() } else { s.flag() };
        let fail = |setting: Setting, message: String| Err(OptionError { setting, message });
        let members = n(Setting::Members);
        if self.members.len() < 2 {
            return fail(
                Setting::Members,
                format!("replication needs at least two {members} copies"),
            );
        }
        if self.members.len() > MAX_COPIES {
            return fail(
                Setting::Members,
                format!("at most {MAX_COPIES} {members} copies"),
            );
        }
        for (index, member) in self.members.iter().enumerate() {
            if self.members[index + 1..]
                .iter()
                .any(|other| other.node == member.node)
            {
                return fail(
                    Setting::Members,
                    format!("{members} node id {} is given twice", member.node),
                );
            }
            if self.members[index + 1..]
                .iter()
                .any(|other| other.addr == member.addr)
            {
                return fail(
                    Setting::Members,
                    format!("{members} address {} is given twice", member.addr),
                );
            }
        }
        let Some(me) = self.members.iter().find(|m| m.node == self.node) else {
            return fail(
                Setting::NodeId,
                format!(
                    "{} {} is not one of the {members} copies",
                    n(Setting::NodeId),
                    self.node
                ),
            );
        };
        if me.addr != self.listen {
            // Something between the others and this node (a proxy, NAT,
            // a test's delay line) forwards its member address here.
            tracing::warn!(
                listen = %self.listen,
                member = %me.addr,
                "{} differs from this node's {members} address: \
                 the others reach it through whatever forwards the member address",
                n(Setting::ReplicaListen)
            );
        }
        let Some(primary) = self.members.iter().find(|m| m.node == self.primary) else {
            return fail(
                Setting::Primary,
                format!(
                    "{} {} is not one of the {members} copies",
                    n(Setting::Primary),
                    self.primary
                ),
            );
        };
        if !cfg!(feature = "rdma") && self.members.iter().any(|m| m.transport == Transport::Rdma) {
            return fail(
                Setting::Members,
                format!("an rdma:// {members} needs keeld built with the cargo feature `rdma`"),
            );
        }
        if primary.mode != ReplicationMode::Sync {
            return fail(
                Setting::Primary,
                format!(
                    "{} {} must be a sync copy",
                    n(Setting::Primary),
                    self.primary
                ),
            );
        }
        let sync = self
            .members
            .iter()
            .filter(|m| m.mode == ReplicationMode::Sync)
            .count();
        if self.write_quorum == 0 || usize::from(self.write_quorum) > sync {
            return fail(
                Setting::WriteQuorum,
                format!(
                    "{} {} must be between 1 and the {sync} sync copies",
                    n(Setting::WriteQuorum),
                    self.write_quorum
                ),
            );
        }
        if self.async_lag.bytes < MIN_ASYNC_LAG_BYTES {
            return fail(
                Setting::AsyncMaxLagBytes,
                format!(
                    "{} {} is below {MIN_ASYNC_LAG_BYTES} bytes ({} MiB): a resync keeps \
                     {RESYNC_REGIONS_IN_FLIGHT} regions of {} MiB in flight, so an async replica \
                     with a smaller bound could never finish one",
                    n(Setting::AsyncMaxLagBytes),
                    self.async_lag.bytes,
                    MIN_ASYNC_LAG_BYTES >> 20,
                    REGION_SIZE >> 20
                ),
            );
        }
        if self.async_lag.time < MIN_ASYNC_LAG || self.async_lag.time > MAX_ASYNC_LAG {
            return fail(
                Setting::AsyncMaxLagMs,
                format!(
                    "{} {} must be between {} and {} (milliseconds)",
                    n(Setting::AsyncMaxLagMs),
                    self.async_lag.time.as_millis(),
                    MIN_ASYNC_LAG.as_millis(),
                    MAX_ASYNC_LAG.as_millis()
                ),
            );
        }
        if self.link_timeout < MIN_LINK_TIMEOUT || self.link_timeout > MAX_LINK_TIMEOUT {
            return fail(
                Setting::LinkTimeoutMs,
                format!(
                    "{} {} must be between {} and {} (milliseconds)",
                    n(Setting::LinkTimeoutMs),
                    self.link_timeout.as_millis(),
                    MIN_LINK_TIMEOUT.as_millis(),
                    MAX_LINK_TIMEOUT.as_millis()
                ),
            );
        }
        if self.psk.len() < keel_replicator::auth::MIN_KEY_LEN {
            return fail(
                Setting::Psk,
                format!(
                    "the pre-shared key must be at least {} bytes (it has {})",
                    keel_replicator::auth::MIN_KEY_LEN,
                    self.psk.len()
                ),
            );
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
            since: keel_replicator::wire::Epoch(0),
            previous: None,
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
            async_lag: AsyncLagBound::default(),
            link_timeout: DEFAULT_LINK_TIMEOUT,
            read_lease: false,
            resync_rate: None,
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
        let mut o = options();
        o.async_lag.bytes = MIN_ASYNC_LAG_BYTES - 1;
        let error = o.validate().expect_err("lag bytes");
        assert!(error.contains("--async-max-lag-bytes"), "{error}");
        let mut o = options();
        o.async_lag.bytes = MIN_ASYNC_LAG_BYTES;
        assert_eq!(o.validate(), Ok(()));
        let mut o = options();
        o.async_lag.time = std::time::Duration::from_millis(99);
        let error = o.validate().expect_err("lag time");
        assert!(error.contains("--async-max-lag-ms"), "{error}");
        let mut o = options();
        o.async_lag.time = MAX_ASYNC_LAG + std::time::Duration::from_millis(1);
        assert!(o.validate().is_err());
        for (timeout, ok) in [
            (
                MIN_LINK_TIMEOUT - std::time::Duration::from_millis(1),
                false,
            ),
            (MIN_LINK_TIMEOUT, true),
            (MAX_LINK_TIMEOUT, true),
            (
                MAX_LINK_TIMEOUT + std::time::Duration::from_millis(1),
                false,
            ),
        ] {
            let mut o = options();
            o.link_timeout = timeout;
            match o.check(true) {
                Ok(()) => assert!(ok, "{timeout:?} taken"),
                Err(error) => {
                    assert!(!ok, "{timeout:?} refused: {error:?}");
                    assert_eq!(error.setting, Setting::LinkTimeoutMs);
                    assert!(error.message.starts_with("link_timeout_ms "), "{error:?}");
                }
            }
        }
        // As keel.toml keys: the setting at fault, and keys in the text.
        let mut o = options();
        o.write_quorum = 3;
        let error = o.check(true).expect_err("W");
        assert_eq!(error.setting, Setting::WriteQuorum);
        assert!(error.message.starts_with("write_quorum 3"), "{error:?}");
        let mut o = options();
        o.members[2].addr = o.members[1].addr;
        let error = o.check(true).expect_err("dup");
        assert_eq!(error.setting, Setting::Members);
        assert!(error.message.contains("members address"), "{error:?}");
    }
}
