//! The shard side of replication: one [`Node`] state machine for the
//! volume, fed with events from the ring and carrying out its actions on
//! the ring (shard 0 only; other shards hand it their writes as
//! `Message::Replicate`).
//!
//! - Peer links: socket, receive buffer (a pool buffer the ring receives
//!   into, copied into a heap buffer where `link::decode` finds whole
//!   frames), send queue (frames encoded straight into a pool buffer, the
//!   header by `link::encode_header` and the data copied after it; what
//!   does not fit waits in a heap backlog). The frames of one reactor loop
//!   leave in one send per link ([`Replicator::flush_sends`], from the
//!   handler's `poll`).
//! - `LocalWrite` / `LocalRead`: the data device through pool buffers,
//!   split at the buffer size.
//! - `Persist`: a flush of the data device, then the record written FUA to
//!   the record device; persists run one at a time, in order.
//! - Host operations come from the NVMe handler ([`Replicator::host_write`],
//!   [`Replicator::host_flush`]); their completions are collected for it
//!   ([`Replicator::take_completed`]).
//!
//! Costs to remove later (per 4 KiB write; see "Overhead (measured)" in
//! docs/replication-keeld.md): on the primary the data is copied from the
//! host's pool buffer into the payload (`Arc<[u8]>`), from there into a pool
//! buffer for the local write and into each replica's send buffer, and its
//! CRC32C is computed once per replica; on a replica a received frame is
//! copied from the pool buffer into the heap buffer, again into its payload
//! (`payload_frame`) and again into a pool buffer for the local write.
//! Decoding straight from the pool buffer when no partial frame waits in
//! the heap buffer, and a payload that holds pool buffers, would remove
//! two of those three.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use keel_engine::{Buf, Completion, DeviceId, IoError as DeviceError, IoOp, NetOp, Shard};
use keel_replicator::core::{
    Action, DurableRecord, Event, Frame, Geometry, HostOpId, HostStatus, IoError, IoToken,
    LinkDirection, LinkId, Membership, Node, PrimaryLimits, ReplicaLimits, ReplicaState,
    ReplicaView, Time,
};
use keel_replicator::link::{self, Decoded, Envelope, Other};
use keel_replicator::wire::{
    ByteRange, Epoch, Heartbeat, NodeId, ReplicationMode, StreamId, VolumeId,
};
use slab::Slab;

/// Appends `frame` of `epoch` to `tx` as the volume's stream sends it (a
/// `Write` with its data), on RDMA links. (TCP links encode the header
/// alone and copy the data once, into the pool buffer they send: `send`.)
#[cfg(feature = "rdma")]
pub(super) fn encode_frame(
    volume: VolumeId,
    addresses: &BTreeMap<NodeId, String>,
    epoch: Epoch,
    frame: &Frame<Payload>,
    tx: &mut Vec<u8>,
) -> Result<usize, link::LinkError> {
    let envelope = Envelope {
        volume,
        stream: STREAM,
        epoch,
    };
    link::encode(&envelope, frame, frame_payload(frame), addresses, tx)
}

/// The data a frame carries (a write's, or a read's answer).
pub(super) fn frame_payload(frame: &Frame<Payload>) -> &[u8] {
    match frame {
        Frame::Write { data, .. } | Frame::ReadResponse { data, .. } => data.as_slice(),
        _ => &[],
    }
}

use crate::daemon::handler::Message;
use crate::daemon::replication::change::{self, ChangeError, ChangeOutcome, MembershipChange};
use crate::daemon::replication::links::LinkDownNotices;
use crate::daemon::replication::liveness::{self, LinkLiveness, Verdict};
use crate::daemon::replication::record::{self, StoredRecord};
use crate::daemon::replication::roster::Roster;
use crate::daemon::replication::MemberAddress;
use crate::daemon::send_queue::{Kick, Part, SendProgress, SendQueue};
use crate::daemon::tags::{Tag, TagKind};

#[cfg(feature = "rdma")]
mod rdma;

/// The stream every frame of the volume travels on (one per volume while
/// replication runs on one shard).
pub(crate) const STREAM: StreamId = StreamId(1);

/// Pool buffers a link's send queue may hold besides the one in flight:
/// the frames of one reactor loop go out in one buffer; a replica that
/// falls behind (its frames pile up until the primary drops it) keeps them
/// on the heap, not in the shard's pool.
const LINK_SEND_BUFFERS: usize = 1;

/// How a host operation ended: its status and, for a degraded read
/// answered by a replica, the data.
pub(crate) struct HostEnd {
    pub id: HostOpId,
    pub status: HostStatus,
    pub data: Option<Payload>,
}

/// Resync and scrub pacing (`--resync-rate-mib`).
#[derive(Debug)]
struct Pacing {
    /// Bytes per second.
    rate: u64,
    /// Bytes earned and not yet granted as whole regions.
    earned: u64,
    since: std::time::Instant,
}

/// A write's data as the state machine passes it around: a shared,
/// immutable byte buffer and the part of it that is this write's. Two
/// payloads are equal when their bytes are (a scrub compares copies).
#[derive(Clone)]
pub(crate) struct Payload {
    bytes: Arc<[u8]>,
    start: usize,
    len: usize,
}

impl Payload {
    pub fn new(bytes: Arc<[u8]>) -> Payload {
        let len = bytes.len();
        Payload {
            bytes,
            start: 0,
            len,
        }
    }

    /// `len` bytes from `start` of the same buffer (no copy).
    pub fn slice(&self, start: usize, len: usize) -> Payload {
        let start = (self.start + start).min(self.bytes.len());
        let len = len.min(self.bytes.len() - start);
        Payload {
            bytes: self.bytes.clone(),
            start,
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.len)
    }
}

/// One other copy's link counters, bumped by shard 0 with relaxed atomic
/// adds (one writer; a scrape may see one counter a frame ahead of
/// another). Cumulative over every link to that node.
#[derive(Debug, Default)]
pub(crate) struct LinkCounters {
    /// Frames encoded onto links to it.
    pub frames_sent: AtomicU64,
    /// Bytes of those frames (headers included).
    pub bytes_sent: AtomicU64,
    /// Sequenced frames it acknowledged durable (`Ack` through S covers
    /// 1..=S of its link).
    pub frames_acked: AtomicU64,
    /// Sequenced frames it acknowledged applied (`Applied` or `Ack`).
    pub frames_applied: AtomicU64,
    /// Links to it that came up (the first included).
    pub connects: AtomicU64,
    /// Links to it the state machine closed: it fell behind (async lag
    /// bound, send queue, ack timeout) or broke the stream; it is resynced
    /// on its next link.
    pub dropped: AtomicU64,
    /// Links to it closed because nothing arrived on them for the link
    /// timeout (see `liveness`).
    pub silent: AtomicU64,
    /// The latest heartbeat round trip to it, in nanoseconds (0: none yet).
    pub round_trip_ns: AtomicU64,
}

/// Another copy of the volume, as the metrics label it.
#[derive(Debug)]
pub(crate) struct PeerMetrics {
    pub node: NodeId,
    pub addr: String,
    pub mode: ReplicationMode,
    /// Shared with the shard's links to it, and kept across refreshes of
    /// the list (a mode change keeps the counts).
    pub counters: Arc<LinkCounters>,
}

/// The membership as shard 0 last saw it, for the control socket and the
/// link threads (refreshed every tick and after every change).
#[derive(Debug, Default, Clone)]
pub(crate) struct MembershipView {
    /// The membership the state machine works with (None before the
    /// shard's first refresh).
    pub membership: Option<Membership>,
    /// The membership a change in progress moves to.
    pub pending: Option<Membership>,
    /// The membership a change in progress started from.
    pub previous: Option<Membership>,
    /// Whether a change is still reaching the copies.
    pub reconfiguring: bool,
    /// The copies a primary wants links to (none on a replica): the
    /// dialers follow this list.
    pub link_targets: Vec<NodeId>,
}

impl MembershipView {
    /// The mode of `node`'s copy in the membership a change in progress
    /// moves to, or else in the one it started from (a copy being removed
    /// is in neither the new nor, once announced, the current membership).
    pub fn changing_mode(&self, node: NodeId) -> Option<ReplicationMode> {
        let to = self.pending.as_ref().and_then(|m| m.mode_of(node));
        to.or_else(|| self.previous.as_ref().and_then(|m| m.mode_of(node)))
    }
}

/// What the shard publishes for the control threads and the metrics.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// The node's epoch.
    pub epoch: AtomicU64,
    /// Whether it acts as primary (opens links).
    pub primary: AtomicBool,
    /// Whether it serves host I/O.
    pub serving: AtomicBool,
    /// Whether it serves and every copy is linked and in sync.
    pub in_sync: AtomicBool,
    /// Links up.
    pub links: AtomicUsize,
    /// A persist failed: the node stopped (`Node::has_failed`).
    pub failed: AtomicBool,
    /// Back from a reboot or power loss and not yet brought in sync
    /// (`Node::is_amnesiac`).
    pub amnesiac: AtomicBool,
    /// Host reads the local device failed that went to a replica, and how
    /// many of them no copy could answer.
    pub degraded_reads: AtomicU64,
    pub degraded_reads_failed: AtomicU64,
    /// Replicas' answers to degraded reads written back to the local copy.
    pub read_repairs: AtomicU64,
    /// Scrubbing (`Node::scrub_status`): the region a pass checks next
    /// (`u64::MAX`: no pass), passes, region checks and mismatches since
    /// keeld started.
    pub scrub_next_region: AtomicU64,
    pub scrub_passes: AtomicU64,
    pub scrub_checked: AtomicU64,
    pub scrub_mismatches: AtomicU64,
    /// The replicas as the primary sees them, refreshed every tick (empty
    /// on a replica). Read by the control socket, never on the I/O path.
    pub replicas: std::sync::Mutex<Vec<keel_replicator::core::ReplicaView>>,
    /// Every other copy's link counters, in membership order (copies being
    /// added or removed last).
    pub peers: RwLock<Vec<PeerMetrics>>,
    /// The membership, as shard 0 last saw it.
    pub membership: std::sync::Mutex<MembershipView>,
    /// Where the copies are.
    pub roster: Roster,
    /// Where the shard reports the end of an outbound link to its dialer.
    pub link_down: LinkDownNotices,
}

/// A per-replica counter: name, help, how to read it.
type PeerCounter = (&'static str, &'static str, fn(&LinkCounters) -> u64);

/// The states a replica can be reported in (`ReplicaState::name`).
const REPLICA_STATES: [ReplicaState; 5] = [
    ReplicaState::Down,
    ReplicaState::Connecting,
    ReplicaState::Resyncing,
    ReplicaState::OutOfDate,
    ReplicaState::InSync,
];

impl Published {
    /// Published state for node `me` of a volume whose copies are
    /// `members` (this node's included).
    pub fn new(me: NodeId, members: &[MemberAddress]) -> Published {
        let published = Published {
            roster: Roster::new(members),
            scrub_next_region: AtomicU64::new(u64::MAX),
            ..Published::default()
        };
        published.set_peers(
            members
                .iter()
                .filter(|m| m.node != me)
                .map(|m| (m.node, m.addr.to_string(), m.mode))
                .collect(),
        );
        published
    }

    /// Makes the per-replica series those of `peers` (node, address,
    /// mode); a node listed before keeps its counters.
    pub fn set_peers(&self, peers: Vec<(NodeId, String, ReplicationMode)>) {
        let mut current = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        let same = current.len() == peers.len()
            && current.iter().zip(&peers).all(|(p, (node, addr, mode))| {
                p.node == *node && p.addr == *addr && p.mode == *mode
            });
        if same {
            return;
        }
        let next = peers
            .into_iter()
            .map(|(node, addr, mode)| PeerMetrics {
                node,
                addr,
                mode,
                counters: current
                    .iter()
                    .find(|p| p.node == node)
                    .map(|p| p.counters.clone())
                    .unwrap_or_default(),
            })
            .collect();
        *current = next;
    }

    /// Node `node`'s link counters, if it is another copy.
    pub fn counters(&self, node: NodeId) -> Option<Arc<LinkCounters>> {
        self.peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|p| p.node == node)
            .map(|p| p.counters.clone())
    }

    /// The membership view, copied out of its lock.
    pub fn membership_view(&self) -> MembershipView {
        self.membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Prometheus text for the replication gauges and the per-replica
    /// series (label `replica` = node id, `addr`, `mode`).
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let gauges = [
            (
                "keel_replication_epoch",
                "The node's replication epoch.",
                self.epoch.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_serving",
                "1 if this node serves the replicated volume (primary).",
                u64::from(self.serving.load(Ordering::Relaxed)),
            ),
            (
                "keel_replication_in_sync",
                "1 if this node serves and every copy is linked, in sync and quiet.",
                u64::from(self.in_sync.load(Ordering::Relaxed)),
            ),
            (
                "keel_replication_links",
                "Replication links up.",
                self.links.load(Ordering::Relaxed) as u64,
            ),
            (
                "keel_replication_failed",
                "1 if a persist of the local copy failed and the node stopped (restart it once the device is fixed).",
                u64::from(self.failed.load(Ordering::Relaxed)),
            ),
            (
                "keel_replication_scrubbing",
                "1 while a scrub pass compares the copies.",
                u64::from(self.scrub_next_region.load(Ordering::Relaxed) != u64::MAX),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        let volume_counters = [
            (
                "keel_replication_degraded_reads_total",
                "Host reads the local device failed, sent to a replica (one per region touched).",
                self.degraded_reads.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_degraded_reads_failed_total",
                "Degraded reads no copy could answer (the host got a read error).",
                self.degraded_reads_failed.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_read_repairs_total",
                "Replicas' answers to degraded reads written back to the local copy (a device remaps a bad sector it rewrites).",
                self.read_repairs.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_scrub_passes_total",
                "Scrub passes finished (every region compared with each replica holding it).",
                self.scrub_passes.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_scrub_checks_total",
                "Regions compared with a replica's by scrubs.",
                self.scrub_checked.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_scrub_mismatches_total",
                "Regions a scrub found different on a replica (copied to it again).",
                self.scrub_mismatches.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in volume_counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }

        let labels = |peer: &PeerMetrics| {
            let mode = match peer.mode {
                ReplicationMode::Sync => "sync",
                ReplicationMode::Async => "async",
            };
            format!(
                "replica=\"{}\",addr=\"{}\",mode=\"{mode}\"",
                peer.node.0,
                crate::daemon::metrics::escape(&peer.addr)
            )
        };
        let counters: [PeerCounter; 7] = [
            (
                "keel_replica_frames_sent_total",
                "Frames sent on links to the replica.",
                |c| c.frames_sent.load(Ordering::Relaxed),
            ),
            (
                "keel_replica_bytes_sent_total",
                "Bytes of the frames sent on links to the replica, headers included.",
                |c| c.bytes_sent.load(Ordering::Relaxed),
            ),
            (
                "keel_replica_frames_applied_total",
                "Sequenced frames the replica acknowledged applied (durable ones included).",
                |c| c.frames_applied.load(Ordering::Relaxed),
            ),
            (
                "keel_replica_frames_acked_total",
                "Sequenced frames the replica acknowledged durable.",
                |c| c.frames_acked.load(Ordering::Relaxed),
            ),
            (
                "keel_replica_link_connects_total",
                "Links to the replica that came up (more than one: reconnects).",
                |c| c.connects.load(Ordering::Relaxed),
            ),
            (
                "keel_replica_dropped_total",
                "Links to the replica closed because it fell behind its bound or broke the stream (it is resynced).",
                |c| c.dropped.load(Ordering::Relaxed),
            ),
            (
                "keel_replica_link_timeouts_total",
                "Links to the replica closed because nothing arrived on them for the link timeout.",
                |c| c.silent.load(Ordering::Relaxed),
            ),
        ];
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for peer in peers.iter() {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(peer), value(&peer.counters));
            }
        }

        let name = "keel_replica_round_trip_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} The latest heartbeat round trip on a link to the replica (absent before the first)."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for peer in peers.iter() {
            let ns = peer.counters.round_trip_ns.load(Ordering::Relaxed);
            if ns > 0 {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(peer), ns as f64 / 1e9);
            }
        }

        // The primary's views of its replicas (refreshed every tick; none
        // on a replica).
        let views = self.replicas.lock().map(|v| v.clone()).unwrap_or_default();
        let viewed: Vec<(&PeerMetrics, &ReplicaView)> = peers
            .iter()
            .filter_map(|p| views.iter().find(|v| v.node == p.node).map(|v| (p, v)))
            .collect();
        type ViewGauge = (&'static str, &'static str, fn(&ReplicaView) -> f64);
        let view_gauges: [ViewGauge; 3] = [
            (
                "keel_replica_lag_bytes",
                "Bytes sent or queued to the replica and not acknowledged.",
                |v| v.lag_bytes as f64,
            ),
            (
                "keel_replica_lag_seconds",
                "Age of the replica's oldest unacknowledged frame.",
                |v| v.lag_time as f64 / 1e9,
            ),
            (
                "keel_replica_resync_regions_remaining",
                "Regions the replica may lack (to resync).",
                |v| v.regions_to_resync as f64,
            ),
        ];
        for (name, help, value) in view_gauges {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            for (peer, view) in &viewed {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(peer), value(view));
            }
        }
        let name = "keel_replica_state";
        let _ = writeln!(
            out,
            "# HELP {name} 1 for the replica's state as the primary sees it, 0 for the others."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (peer, view) in &viewed {
            for state in REPLICA_STATES {
                let _ = writeln!(
                    out,
                    "{name}{{{},state=\"{}\"}} {}",
                    labels(peer),
                    state.name(),
                    u8::from(view.state == state)
                );
            }
        }
        out
    }
}

/// What shard 0 needs to start the state machine.
#[derive(Clone)]
pub(crate) struct ReplicatorSetup {
    pub me: NodeId,
    pub volume: VolumeId,
    pub geometry: Geometry,
    pub stored: StoredRecord,
    /// Where standings are noted (`Action::Note`), and the one noted in
    /// this boot before the restart, if any.
    pub note: Arc<std::sync::Mutex<super::note::NoteFile>>,
    pub noted: Option<keel_replicator::core::Standing>,
    /// Take over as primary: right away for a new volume (`after_ticks`
    /// 0), or after a grace period on a restart.
    pub promote: Option<PendingPromote>,
    pub published: Arc<Published>,
    /// The async replicas' lag bound.
    pub async_lag: super::AsyncLagBound,
    /// A link on which nothing arrives for this long is closed, and a
    /// replica that acknowledges nothing for this long is dropped.
    pub link_timeout: std::time::Duration,
    /// Read leases of one link timeout.
    pub read_lease: bool,
    /// Bytes per second resyncs and scrubs may read (`None`: unlimited).
    pub resync_rate: Option<u64>,
}

struct Peer {
    socket: TcpStream,
    node: NodeId,
    link: LinkId,
    direction: LinkDirection,
    rx: Option<Buf>,
    rx_heap: Vec<u8>,
    /// Frames on their way to the peer.
    tx: SendQueue,
    ops: usize,
    closing: bool,
    close_after_send: bool,
    /// Its counters (shared with `Published::peers`).
    counters: Option<Arc<LinkCounters>>,
    /// Highest sequence it acknowledged on this link.
    acked_through: u64,
    /// Highest sequence it reported applied (or durable) on this link.
    applied_through: u64,
    liveness: LinkLiveness,
}

/// A local read or write waiting for pool buffers.
struct WaitingIo {
    token: IoToken,
    range: ByteRange,
    write: Option<(Payload, bool)>,
}

struct LocalIo {
    token: IoToken,
    /// A write without FUA (durable only after a flush).
    volatile: bool,
    /// The data read, for a read.
    read: Option<Vec<u8>>,
    pending: usize,
    failed: bool,
}

/// A restarted first primary takes over again on its own — unless, during
/// a grace period, it learns that a newer primary exists (its epoch moved
/// past its record's: a promoted replica reached it). Without that check it
/// would depose the replica promoted while it was down.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PendingPromote {
    /// The epoch in its record when it started.
    pub recorded: Epoch,
    /// Ticks (50 ms) to wait first.
    pub after_ticks: u32,
}

/// Ticks (50 ms) a control-plane promotion is retried while the node has
/// local I/O in flight.
const PROMOTE_RETRY_TICKS: u32 = 40;

pub(crate) struct Replicator {
    pending_promote: Option<PendingPromote>,
    /// A control-plane promotion not taken yet: the node's epoch when it
    /// was asked, and the ticks left to retry it.
    promote_retry: Option<(Epoch, u32)>,
    node: Node<Payload>,
    volume: VolumeId,
    geometry: Geometry,
    data_dev: DeviceId,
    record_dev: DeviceId,
    record_block: usize,
    generation: u64,
    /// The roster's addresses, as `EpochChange` frames carry them
    /// (refreshed whenever the roster may have changed).
    addresses: BTreeMap<NodeId, String>,
    /// Where `Action::Note` stores standings.
    note: Arc<std::sync::Mutex<super::note::NoteFile>>,
    /// A change in progress: the membership it started from and the one it
    /// moves to (the core keeps both to itself).
    pending: Option<(Membership, Membership)>,
    peers: Slab<Peer>,
    links: HashMap<LinkId, usize>,
    next_link: u64,
    ios: Slab<LocalIo>,
    /// Local I/O the pool had no buffers for yet, oldest first: it waits
    /// (the writes in it are the state machine's, ordered already) rather
    /// than fail a host write because the pool is busy for a moment.
    local_waiting: VecDeque<WaitingIo>,
    persist_queue: VecDeque<(IoToken, DurableRecord)>,
    persisting: Option<(IoToken, DurableRecord)>,
    persist_failed: bool,
    /// A non-FUA local write completed since the last flush was issued: the
    /// next persist must flush the data device first. (The primary's writes
    /// are all FUA, so its bitmap persists skip the flush.)
    unflushed: bool,
    events: VecDeque<Event<Payload>>,
    actions: Vec<Action<Payload>>,
    /// A frame's header as `send` encodes it (reused).
    header: Vec<u8>,
    /// Links with frames encoded and not yet handed to the ring: sent
    /// together once per reactor loop ([`Replicator::flush_sends`]).
    unsent: Vec<usize>,
    completed: Vec<HostEnd>,
    origin: Instant,
    published: Arc<Published>,
    in_sync: bool,
    serving: bool,
    closing: bool,
    zeroes: Payload,
    /// See [`ReplicatorSetup::link_timeout`].
    link_timeout: std::time::Duration,
    /// Resync and scrub pacing: the rate, and the bytes earned since the
    /// last region's worth was granted, as of when.
    pacing: Option<Pacing>,
    /// Links over RDMA (`driver/rdma.rs`), polled from the handler's loop.
    #[cfg(feature = "rdma")]
    rdma: rdma::RdmaPeers,
}

impl Replicator {
    pub fn new(
        shard: &mut Shard<Message>,
        setup: ReplicatorSetup,
        data_dev: DeviceId,
        record_dev: DeviceId,
    ) -> Replicator {
        let record_block = shard
            .geometry(record_dev)
            .map_or(4096, |g| g.block_size as usize);
        let primary_limits = PrimaryLimits {
            max_host_ops: 1024,
            max_queued_frames: 1024,
            async_max_lag_bytes: setup.async_lag.bytes,
            async_max_lag_time: u64::try_from(setup.async_lag.time.as_nanos()).unwrap_or(u64::MAX),
            ack_timeout: u64::try_from(setup.link_timeout.as_nanos()).unwrap_or(u64::MAX),
            // A lease of one link timeout: heartbeats (four per timeout)
            // keep it on idle links, and a promotion waits that long
            // after its election when an earlier primary may hold one.
            read_lease: if setup.read_lease {
                u64::try_from(setup.link_timeout.as_nanos()).unwrap_or(u64::MAX)
            } else {
                0
            },
            resync_regions_in_flight: super::RESYNC_REGIONS_IN_FLIGHT,
            resync_paced: setup.resync_rate.is_some(),
            ..PrimaryLimits::default()
        };
        let node = Node::recover(
            setup.me,
            setup.geometry,
            primary_limits,
            ReplicaLimits::default(),
            setup.stored.record.clone(),
            setup.noted,
        );
        let zeroes = Payload::new(vec![0u8; setup.geometry.region_size() as usize].into());
        let mut replicator = Replicator {
            pending_promote: setup.promote,
            promote_retry: None,
            node,
            volume: setup.volume,
            geometry: setup.geometry,
            data_dev,
            record_dev,
            record_block,
            generation: setup.stored.generation + 1,
            addresses: addresses(&setup.published.roster),
            note: setup.note.clone(),
            pending: None,
            peers: Slab::new(),
            links: HashMap::new(),
            next_link: 1,
            ios: Slab::new(),
            local_waiting: VecDeque::new(),
            persist_queue: VecDeque::new(),
            persisting: None,
            persist_failed: false,
            unflushed: false,
            events: VecDeque::new(),
            actions: Vec::new(),
            header: Vec::new(),
            unsent: Vec::new(),
            completed: Vec::new(),
            origin: shard.now(),
            published: setup.published,
            in_sync: false,
            serving: false,
            closing: false,
            zeroes,
            link_timeout: setup.link_timeout,
            pacing: setup.resync_rate.map(|rate| Pacing {
                rate,
                earned: 0,
                since: shard.now(),
            }),
            #[cfg(feature = "rdma")]
            rdma: rdma::RdmaPeers::default(),
        };
        replicator.run(shard);
        replicator.maybe_take_over(shard);
        replicator.publish_membership();
        replicator
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// A shared buffer of zeroes, one region long.
    pub fn zeroes(&self, len: usize) -> Payload {
        self.zeroes.slice(0, len)
    }

    /// Host completions since the last call.
    pub fn take_completed(&mut self) -> Vec<HostEnd> {
        std::mem::take(&mut self.completed)
    }

    /// The control plane asks for a scrub pass (the state machine ignores
    /// it on a node that does not serve, or while a pass runs).
    pub fn scrub(&mut self, shard: &mut Shard<Message>) {
        tracing::info!("replication: scrub asked");
        self.events.push_back(Event::Scrub);
        self.run(shard);
    }

    /// A host read the local device failed: read `len` bytes at `offset`
    /// (within one region) from a replica.
    pub fn degraded_read(
        &mut self,
        shard: &mut Shard<Message>,
        id: HostOpId,
        offset: u64,
        len: u32,
    ) {
        let range = ByteRange::new(offset, len);
        self.published
            .degraded_reads
            .fetch_add(1, Ordering::Relaxed);
        self.events.push_back(Event::DegradedRead { id, range });
        self.run(shard);
    }

    /// A host write within one region.
    pub fn host_write(
        &mut self,
        shard: &mut Shard<Message>,
        id: HostOpId,
        offset: u64,
        data: Payload,
        fua: bool,
    ) {
        let range = ByteRange::new(offset, data.len as u32);
        self.events.push_back(Event::HostWrite {
            id,
            range,
            data,
            fua,
        });
        self.run(shard);
    }

    pub fn host_flush(&mut self, shard: &mut Shard<Message>, id: HostOpId) {
        self.events.push_back(Event::HostFlush { id });
        self.run(shard);
    }

    /// The control plane asks this node to take over as primary, in the
    /// next epoch of its own class (`next_epoch`). The election decides:
    /// a copy that does not hold everything a quorum acknowledged retires
    /// again and leaves the volume to a better candidate.
    pub fn promote(&mut self, shard: &mut Shard<Message>) {
        self.pending_promote = None;
        if self.node.is_primary() {
            tracing::info!("replication: promote asked, already primary");
            return;
        }
        let epoch = Epoch(super::next_epoch(self.node.epoch().0, self.node.id()));
        tracing::warn!(%epoch, "replication: promoted by the control plane; taking over");
        self.promote_retry = Some((self.node.epoch(), PROMOTE_RETRY_TICKS));
        self.try_promote(shard, epoch);
    }

    /// Asks the node to take `epoch`; a replica with local I/O in flight
    /// (a batch persist, say) refuses for now, and the tick retries.
    fn try_promote(&mut self, shard: &mut Shard<Message>, epoch: Epoch) {
        self.events.push_back(Event::Promote { epoch });
        self.run(shard);
        if self.node.is_primary() {
            self.promote_retry = None;
        }
    }

    /// A control-plane promotion the node could not take yet, again — only
    /// while it has not taken any (its epoch is still the one it had when
    /// asked: a promotion taken and then lost in the election is final).
    fn retry_promote(&mut self, shard: &mut Shard<Message>) {
        let Some((asked_at, ticks)) = self.promote_retry else {
            return;
        };
        if ticks == 0 || self.node.is_primary() || self.node.epoch() != asked_at {
            self.promote_retry = None;
            return;
        }
        self.promote_retry = Some((asked_at, ticks - 1));
        let epoch = Epoch(super::next_epoch(self.node.epoch().0, self.node.id()));
        tracing::debug!(%epoch, "replication: promotion retried (local I/O was in flight)");
        self.try_promote(shard, epoch);
    }

    /// The pending take-over of a (restarted) first primary, when due.
    fn maybe_take_over(&mut self, shard: &mut Shard<Message>) {
        let Some(pending) = self.pending_promote.as_mut() else {
            return;
        };
        if self.node.epoch() > pending.recorded {
            tracing::warn!(
                recorded = %pending.recorded,
                now = %self.node.epoch(),
                "replication: a newer primary took over while this node was away; staying a replica"
            );
            self.pending_promote = None;
            return;
        }
        if pending.after_ticks > 0 {
            pending.after_ticks -= 1;
            return;
        }
        self.pending_promote = None;
        let epoch = Epoch(super::next_epoch(self.node.epoch().0, self.node.id()));
        tracing::info!(%epoch, "replication: taking over as primary");
        self.events.push_back(Event::Promote { epoch });
        self.run(shard);
    }

    pub fn tick(&mut self, shard: &mut Shard<Message>) {
        self.check_liveness(shard);
        self.grant_resync_credits(shard);
        // A persist postponed by a full ring or pool.
        self.start_persist(shard);
        self.events.push_back(Event::Tick);
        self.run(shard);
        self.maybe_take_over(shard);
        self.retry_promote(shard);
        let now = machine_time(self.origin, shard.now());
        let views = self.node.replica_views(now);
        if let Ok(mut published) = self.published.replicas.lock() {
            *published = views;
        }
        self.publish_membership();
    }

    /// Paced: grants the regions that the time since the last grant
    /// earned at the rate (the state machine banks a few grants at most).
    fn grant_resync_credits(&mut self, shard: &Shard<Message>) {
        let Some(pacing) = self.pacing.as_mut() else {
            return;
        };
        let now = shard.now();
        let elapsed = now.saturating_duration_since(pacing.since);
        pacing.since = now;
        let earned = u128::from(pacing.rate) * elapsed.as_nanos() / 1_000_000_000;
        let region = u64::from(self.geometry.region_size());
        // At most a second's worth carried over (a stalled shard does not
        // earn a burst).
        pacing.earned = pacing
            .earned
            .saturating_add(u64::try_from(earned).unwrap_or(u64::MAX))
            .min(pacing.rate.max(region));
        let regions = pacing.earned / region;
        if regions > 0 {
            pacing.earned %= region;
            let regions = u32::try_from(regions).unwrap_or(u32::MAX);
            self.events.push_back(Event::ResyncCredit { regions });
        }
    }

    // ----- membership ---------------------------------------------------

    /// The control plane asks for a membership change: checked against
    /// the membership the node works with, then fed to the node in the next
    /// epoch of this node's class. A copy being added goes into the roster
    /// first, so the dialers and `EpochChange` frames find its address.
    pub fn reconfigure(
        &mut self,
        shard: &mut Shard<Message>,
        change: &MembershipChange,
    ) -> Result<ChangeOutcome, ChangeError> {
        let me = self.node.id();
        let current = self.node.membership().clone();
        if !self.node.is_serving() {
            return Err(ChangeError::from_refusal(
                keel_replicator::core::ReconfigureRefusal::NotServing,
                me,
                current.primary,
            ));
        }
        // One change at a time: say so before judging the change against a
        // membership that is about to be replaced.
        if self.node.is_reconfiguring() {
            return Err(ChangeError::from_refusal(
                keel_replicator::core::ReconfigureRefusal::InProgress,
                me,
                current.primary,
            ));
        }
        let roster = self.published.roster.snapshot();
        let membership = change::plan(me, &current, &roster, change)?;
        let from_epoch = self.node.epoch();
        let to_epoch = Epoch(super::next_epoch(from_epoch.0, me));
        self.node
            .can_reconfigure(to_epoch, &membership)
            .map_err(|refusal| ChangeError::from_refusal(refusal, me, current.primary))?;
        if let MembershipChange::Add(copy) = change {
            self.published.roster.insert(copy.clone());
            self.addresses = addresses(&self.published.roster);
        }
        tracing::warn!(
            from = %from_epoch,
            to = %to_epoch,
            ?change,
            "replication: membership change asked by the control plane"
        );
        self.pending = Some((current, membership.clone()));
        self.events.push_back(Event::Reconfigure {
            epoch: to_epoch,
            membership: membership.clone(),
        });
        self.run(shard);
        self.publish_membership();
        Ok(ChangeOutcome {
            from_epoch,
            to_epoch,
            membership,
        })
    }

    /// Publishes the membership, the copies to link to and the per-replica
    /// series; a serving primary with no change in progress also drops
    /// copies that left the volume from the roster (their links are then
    /// refused).
    fn publish_membership(&mut self) {
        let me = self.node.id();
        let membership = self.node.membership().clone();
        let link_targets = self.node.link_targets();
        let reconfiguring = self.node.is_reconfiguring();
        if !reconfiguring {
            self.pending = None;
        }
        if self.node.is_serving() && !reconfiguring {
            let dropped = self.published.roster.retain(|node| {
                node == me || membership.mode_of(node).is_some() || link_targets.contains(&node)
            });
            if !dropped.is_empty() {
                tracing::info!(?dropped, "replication: copies left the volume");
                self.addresses = addresses(&self.published.roster);
            }
        }
        let mut peers: Vec<(NodeId, ReplicationMode)> = membership
            .members
            .iter()
            .filter(|m| m.node != me)
            .map(|m| (m.node, m.mode))
            .collect();
        let view = MembershipView {
            membership: Some(membership),
            previous: self.pending.as_ref().map(|(from, _)| from.clone()),
            pending: self.pending.as_ref().map(|(_, to)| to.clone()),
            reconfiguring,
            link_targets,
        };
        for node in &view.link_targets {
            if peers.iter().all(|(n, _)| n != node) {
                let mode = view.changing_mode(*node).unwrap_or(ReplicationMode::Sync);
                peers.push((*node, mode));
            }
        }
        let roster = &self.published.roster;
        self.published.set_peers(
            peers
                .into_iter()
                .map(|(node, mode)| {
                    let addr = roster.get(node).map(|m| m.addr.to_string());
                    (node, addr.unwrap_or_default(), mode)
                })
                .collect(),
        );
        *self
            .published
            .membership
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = view;
    }

    /// Addresses of copies an `EpochChange` named that the roster lacks
    /// (copies another primary added): this node needs them should it be
    /// promoted, and to take links from them.
    fn learn_addresses(&mut self, learned: Vec<(NodeId, String)>) {
        let mut changed = false;
        for (node, address) in learned {
            if node == self.node.id() || self.published.roster.contains(node) {
                continue;
            }
            let Ok((addr, transport)) = super::parse_address(&address) else {
                tracing::warn!(%node, address, "replication: an EpochChange named an address that is no IP:PORT");
                continue;
            };
            let member = MemberAddress {
                node,
                addr,
                mode: ReplicationMode::Sync,
                transport,
            };
            if self.published.roster.learn(member) {
                tracing::info!(%node, %addr, "replication: learned a copy's address");
                changed = true;
            }
        }
        if changed {
            self.addresses = addresses(&self.published.roster);
        }
    }

    /// Closes every link (daemon shutdown); new ones are refused.
    pub fn close_all(&mut self, shard: &mut Shard<Message>) {
        self.closing = true;
        let keys: Vec<usize> = self.peers.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_peer(shard, key, "shutting down");
        }
        #[cfg(feature = "rdma")]
        self.close_all_rdma();
        self.run(shard);
    }

    /// Nothing of replication is left with the ring.
    pub fn is_idle(&self) -> bool {
        self.peers.is_empty()
            && self.ios.is_empty()
            && self.local_waiting.is_empty()
            && self.persisting.is_none()
    }

    // ----- the state machine --------------------------------------------

    fn run(&mut self, shard: &mut Shard<Message>) {
        while let Some(event) = self.events.pop_front() {
            let now = machine_time(self.origin, shard.now());
            let mut actions = std::mem::take(&mut self.actions);
            self.node.handle(now, event, &mut actions);
            for action in actions.drain(..) {
                self.perform(shard, action);
            }
            self.actions = actions;
        }
        self.publish(machine_time(self.origin, shard.now()));
    }

    fn publish(&mut self, now: Time) {
        let p = &self.published;
        p.epoch.store(self.node.epoch().0, Ordering::SeqCst);
        p.primary.store(self.node.is_primary(), Ordering::SeqCst);
        p.links.store(self.link_count(), Ordering::Relaxed);
        p.failed.store(self.node.has_failed(), Ordering::SeqCst);
        p.amnesiac.store(self.node.is_amnesiac(), Ordering::Relaxed);
        p.read_repairs
            .store(self.node.read_repairs(), Ordering::Relaxed);
        let scrub = self.node.scrub_status();
        p.scrub_next_region
            .store(scrub.next_region.unwrap_or(u64::MAX), Ordering::Relaxed);
        p.scrub_passes.store(scrub.passes, Ordering::Relaxed);
        p.scrub_checked.store(scrub.checked, Ordering::Relaxed);
        p.scrub_mismatches
            .store(scrub.mismatches, Ordering::Relaxed);
        // Serving host reads: with the read lease held (a write quorum
        // answered lately), so a primary cut off from the copies stops.
        let serving = self.node.serves_reads(now);
        if serving != self.serving {
            self.serving = serving;
            p.serving.store(serving, Ordering::SeqCst);
            if serving {
                tracing::info!(epoch = %self.node.epoch(), "replication: serving as primary");
            } else {
                tracing::info!(epoch = %self.node.epoch(), "replication: not serving");
            }
        }
        let in_sync = self.node.is_quiet();
        if in_sync != self.in_sync {
            self.in_sync = in_sync;
            p.in_sync.store(in_sync, Ordering::SeqCst);
            tracing::debug!(in_sync, "replication: sync state changed");
        }
    }

    /// Links up, over every transport.
    fn link_count(&self) -> usize {
        self.peers.len() + self.rdma_link_count()
    }

    #[cfg(not(feature = "rdma"))]
    fn rdma_link_count(&self) -> usize {
        0
    }

    fn perform(&mut self, shard: &mut Shard<Message>, action: Action<Payload>) {
        match action {
            Action::LocalWrite {
                token,
                range,
                data,
                fua,
            } => self.local_io(shard, token, range, Some((data, fua))),
            Action::LocalRead { token, range } => self.local_io(shard, token, range, None),
            Action::Persist { token, record } => {
                self.persist_queue.push_back((token, record));
                self.start_persist(shard);
            }
            Action::Send {
                peer: _,
                link,
                epoch,
                frame,
            } => self.send(shard, link, epoch, &frame),
            Action::CloseLink { peer, link } => {
                #[cfg(feature = "rdma")]
                if self.close_rdma_link(link) {
                    return;
                }
                // A serving primary closes a link only to drop a replica
                // (behind its bound, or a broken stream) or to let a
                // removed copy go; a retiring one closes them all. Only
                // the first is a drop.
                let member = self.node.membership().mode_of(peer).is_some();
                if self.node.is_serving() && member {
                    if let Some(c) = self.published.counters(peer) {
                        c.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if let Some(&key) = self.links.get(&link) {
                    let peer = &mut self.peers[key];
                    if !peer.tx.is_idle() {
                        peer.close_after_send = true;
                    } else {
                        self.close_peer(shard, key, "closed by the state machine");
                    }
                }
            }
            Action::CompleteHost { id, status } => self.completed.push(HostEnd {
                id,
                status,
                data: None,
            }),
            Action::CompleteRead { id, data } => self.completed.push(HostEnd {
                id,
                status: HostStatus::Success,
                data: Some(data),
            }),
            Action::Note { standing } => {
                // A poisoned lock still holds a whole note file: a panic
                // elsewhere cannot tear a store that runs under it.
                let mut note = self.note.lock().unwrap_or_else(|p| p.into_inner());
                note.note(&standing);
            }
        }
    }

    // ----- local I/O ----------------------------------------------------

    /// Starts a local read or write, or queues it until the pool has the
    /// buffers for all of it.
    fn local_io(
        &mut self,
        shard: &mut Shard<Message>,
        token: IoToken,
        range: ByteRange,
        write: Option<(Payload, bool)>,
    ) {
        let waiting = WaitingIo {
            token,
            range,
            write,
        };
        let needed = (range.len as usize).div_ceil(shard.pool().slot_size());
        if !self.local_waiting.is_empty() || shard.pool().available() < needed {
            if needed > shard.pool().capacity() {
                tracing::warn!(
                    needed,
                    "replication: a local I/O larger than the buffer pool"
                );
            } else {
                self.local_waiting.push_back(waiting);
                return;
            }
        }
        self.start_local_io(shard, waiting);
    }

    /// Starts the local I/O that waited for buffers, oldest first, while the
    /// pool has them. Returns whether it started any.
    pub fn start_waiting_io(&mut self, shard: &mut Shard<Message>) -> bool {
        let slot = shard.pool().slot_size();
        let mut started = false;
        while let Some(front) = self.local_waiting.front() {
            if shard.pool().available() < (front.range.len as usize).div_ceil(slot) {
                break;
            }
            if let Some(waiting) = self.local_waiting.pop_front() {
                self.start_local_io(shard, waiting);
                started = true;
            }
        }
        if started {
            // An I/O refused at once ends in an event for the state machine.
            self.run(shard);
        }
        started
    }

    fn start_local_io(&mut self, shard: &mut Shard<Message>, waiting: WaitingIo) {
        let WaitingIo {
            token,
            range,
            write,
        } = waiting;
        let slot = shard.pool().slot_size();
        let total = range.len as usize;
        let key = self.ios.insert(LocalIo {
            token,
            read: write.is_none().then(|| vec![0u8; total]),
            volatile: matches!(write, Some((_, false))),
            pending: 0,
            failed: false,
        });
        let segments = total.div_ceil(slot);
        for index in 0..segments {
            let at = index * slot;
            let len = (total - at).min(slot);
            let Some(buf) = shard.alloc(len) else {
                tracing::warn!("replication: buffer pool exhausted for a local I/O");
                self.ios[key].failed = true;
                break;
            };
            let offset = range.offset + at as u64;
            let op = match &write {
                Some((data, fua)) => {
                    shard.buf_mut(&buf)[..len].copy_from_slice(&data.as_slice()[at..at + len]);
                    IoOp::Write { offset, fua: *fua }
                }
                None => IoOp::Read { offset },
            };
            let tag = Tag::new(TagKind::ReplLocal, key, 0, index).raw();
            match shard.submit(self.data_dev, op, Some(buf), tag) {
                Ok(()) => self.ios[key].pending += 1,
                Err((error, buf)) => {
                    tracing::warn!(%error, "replication: local I/O refused");
                    if let Some(buf) = buf {
                        shard.free(buf);
                    }
                    self.ios[key].failed = true;
                    break;
                }
            }
        }
        if self.ios[key].pending == 0 {
            self.finish_io(key);
        }
    }

    fn finish_io(&mut self, key: usize) {
        let io = self.ios.remove(key);
        if io.volatile {
            // Even a failed one may have written part of its data.
            self.unflushed = true;
        }
        let event = match io.read {
            Some(data) => Event::LocalReadDone {
                token: io.token,
                result: if io.failed {
                    Err(IoError)
                } else {
                    Ok(Payload::new(data.into()))
                },
            },
            None => Event::LocalWriteDone {
                token: io.token,
                result: if io.failed { Err(IoError) } else { Ok(()) },
            },
        };
        self.events.push_back(event);
    }

    fn on_local(&mut self, shard: &mut Shard<Message>, tag: Tag, done: Completion) {
        let slot = shard.pool().slot_size();
        let Some(io) = self.ios.get_mut(tag.conn) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        io.pending -= 1;
        match &done.result {
            Ok(_) => {
                if let (Some(data), Some(buf)) = (io.read.as_mut(), done.buf.as_ref()) {
                    let at = tag.segment * slot;
                    let bytes = shard.buf(buf);
                    data[at..at + bytes.len()].copy_from_slice(bytes);
                }
            }
            Err(error) => {
                tracing::warn!(%error, "replication: local I/O failed");
                io.failed = true;
            }
        }
        if let Some(buf) = done.buf {
            shard.free(buf);
        }
        if io.pending == 0 {
            self.finish_io(tag.conn);
        }
    }

    // ----- the durable record --------------------------------------------

    fn start_persist(&mut self, shard: &mut Shard<Message>) {
        if self.persisting.is_some() || self.persist_failed {
            return;
        }
        let Some(next) = self.persist_queue.pop_front() else {
            return;
        };
        self.persisting = Some(next);
        if !self.unflushed {
            // Every local write completed so far was FUA: already durable.
            self.write_record(shard);
            return;
        }
        let tag = Tag::new(TagKind::ReplPersist, 0, 0, 0).raw();
        match shard.submit(self.data_dev, IoOp::Flush, None, tag) {
            Ok(()) => self.unflushed = false,
            Err((error, _)) => self.persist_error(&error),
        }
    }

    /// A persist could not go on. A full ring or buffer pool passes: the
    /// persist goes back to the front of the queue for the next tick. A
    /// device error does not: nothing this node says about its copy can be
    /// trusted any more, and the state machine stops the node
    /// (`Event::PersistFailed`).
    fn persist_error(&mut self, error: &DeviceError) {
        if matches!(error, DeviceError::Busy | DeviceError::NoBuffer { .. }) {
            tracing::warn!(%error, "replication: persist postponed to the next tick");
            if let Some(persist) = self.persisting.take() {
                self.persist_queue.push_front(persist);
            }
            return;
        }
        tracing::error!(
            %error,
            "replication: cannot persist the durable record: this node stops serving and \
             replicating; restart keeld once the device is fixed"
        );
        self.persist_failed = true;
        self.persist_queue.clear();
        if let Some((token, _)) = self.persisting.take() {
            self.events.push_back(Event::PersistFailed { token });
        }
    }

    fn on_persist(&mut self, shard: &mut Shard<Message>, tag: Tag, done: Completion) {
        if let Some(buf) = done.buf {
            shard.free(buf);
        }
        if let Err(error) = &done.result {
            self.persist_error(error);
            return;
        }
        if tag.segment == 0 {
            // The data is durable: write the record.
            self.write_record(shard);
        } else if let Some((token, _)) = self.persisting.take() {
            self.generation += 1;
            self.events.push_back(Event::Persisted { token });
            self.start_persist(shard);
        }
    }

    /// The second step of a persist: the record, FUA, to its next slot.
    fn write_record(&mut self, shard: &mut Shard<Message>) {
        let Some((_, record)) = self.persisting.clone() else {
            return;
        };
        {
            let roster = &self.published.roster;
            // The copies of a change in progress too: a node promoted
            // from this record must reach them to finish it.
            let previous = record.membership.previous.iter().flat_map(|p| &p.members);
            let mut nodes: Vec<NodeId> = record
                .membership
                .members
                .iter()
                .chain(previous)
                .map(|m| m.node)
                .collect();
            nodes.sort_unstable();
            nodes.dedup();
            let addresses = nodes
                .into_iter()
                .filter_map(|node| roster.get(node))
                .map(|m| record::CopyAddress {
                    node: m.node,
                    addr: m.addr,
                    transport: m.transport,
                })
                .collect();
            let stored = StoredRecord {
                generation: self.generation,
                volume: self.volume,
                region_size: self.geometry.region_size(),
                region_count: self.geometry.region_count(),
                record,
                addresses,
            };
            let bytes = match record::encode(&stored) {
                Ok(bytes) => bytes,
                Err(error) => {
                    // A record it cannot encode is a bug, not a passing
                    // condition: stop rather than write a torn one.
                    tracing::error!(%error, "replication: cannot encode the durable record");
                    self.persist_error(&DeviceError::Os {
                        op: "record",
                        errno: nix::libc::EINVAL,
                    });
                    return;
                }
            };
            let len = bytes.len().div_ceil(self.record_block) * self.record_block;
            let Some(buf) = shard.alloc(len) else {
                self.persist_error(&DeviceError::NoBuffer { op: "record" });
                return;
            };
            let target = shard.buf_mut(&buf);
            target.fill(0);
            target[..bytes.len()].copy_from_slice(&bytes);
            let op = IoOp::Write {
                offset: record::slot_offset(self.generation),
                fua: true,
            };
            let tag = Tag::new(TagKind::ReplPersist, 0, 0, 1).raw();
            if let Err((error, buf)) = shard.submit(self.record_dev, op, Some(buf), tag) {
                if let Some(buf) = buf {
                    shard.free(buf);
                }
                self.persist_error(&error);
            }
        }
    }

    // ----- links --------------------------------------------------------

    /// A link whose handshake the control threads finished.
    pub fn adopt(
        &mut self,
        shard: &mut Shard<Message>,
        socket: TcpStream,
        node: NodeId,
        direction: LinkDirection,
    ) {
        let rx = if self.closing {
            None
        } else {
            shard.alloc(shard.pool().slot_size())
        };
        let Some(rx) = rx else {
            tracing::warn!(peer = %node, "replication link dropped: shutting down or out of buffers");
            self.notify_down(node, direction);
            return;
        };
        let link = LinkId(self.next_link);
        self.next_link += 1;
        let counters = self.counters(node);
        let key = self.peers.insert(Peer {
            socket,
            node,
            link,
            direction,
            rx: Some(rx),
            rx_heap: Vec::new(),
            tx: SendQueue::new(LINK_SEND_BUFFERS),
            ops: 0,
            closing: false,
            close_after_send: false,
            counters,
            acked_through: 0,
            applied_through: 0,
            liveness: LinkLiveness::new(shard.now()),
        });
        if let Some(c) = &self.peers[key].counters {
            c.connects.fetch_add(1, Ordering::Relaxed);
        }
        self.links.insert(link, key);
        tracing::info!(peer = %node, link = link.0, ?direction, "replication link up");
        self.arm_recv(shard, key);
        self.events.push_back(Event::LinkUp {
            peer: node,
            link,
            direction,
        });
        self.run(shard);
    }

    /// Node `node`'s link counters, if it is another copy. The list may
    /// not have it yet (a link from a copy added since the last tick):
    /// refresh it first.
    fn counters(&mut self, node: NodeId) -> Option<Arc<LinkCounters>> {
        if let Some(counters) = self.published.counters(node) {
            return Some(counters);
        }
        self.publish_membership();
        self.published.counters(node)
    }

    fn notify_down(&self, node: NodeId, direction: LinkDirection) {
        if direction == LinkDirection::Outbound {
            self.published.link_down.notify(node);
        }
    }

    fn arm_recv(&mut self, shard: &mut Shard<Message>, key: usize) {
        let peer = &mut self.peers[key];
        if peer.closing {
            return;
        }
        let Some(buf) = peer.rx.take() else {
            return;
        };
        let tag = Tag::new(TagKind::ReplRecv, key, 0, 0).raw();
        match shard.submit_net(&peer.socket, NetOp::Recv { offset: 0 }, Some(buf), tag) {
            Ok(()) => peer.ops += 1,
            Err((error, buf)) => {
                peer.rx = buf;
                let why = format!("recv: {error}");
                self.close_peer(shard, key, &why);
            }
        }
    }

    fn on_recv(&mut self, shard: &mut Shard<Message>, key: usize, done: Completion) {
        let Some(peer) = self.peers.get_mut(key) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        peer.ops -= 1;
        let Some(buf) = done.buf else {
            return;
        };
        match done.result {
            Ok(n) if n > 0 => {
                peer.rx_heap
                    .extend_from_slice(&shard.buf(&buf)[..n as usize]);
                peer.rx = Some(buf);
                peer.liveness.heard(shard.now());
                match self.take_frames(key) {
                    Err(why) => self.close_peer(shard, key, &why),
                    Ok(beats) => {
                        self.on_heartbeats(shard, key, beats);
                        self.arm_recv(shard, key);
                    }
                }
            }
            Ok(_) => {
                peer.rx = Some(buf);
                self.close_peer(shard, key, "closed by the peer");
            }
            Err(error) => {
                peer.rx = Some(buf);
                let why = format!("recv failed: {error}");
                self.close_peer(shard, key, &why);
            }
        }
        self.run(shard);
    }

    /// Decodes every whole frame received on `key` into events; returns
    /// the heartbeats among them.
    fn take_frames(&mut self, key: usize) -> Result<Vec<Heartbeat>, String> {
        let peer = &mut self.peers[key];
        if peer.closing {
            return Ok(Vec::new());
        }
        let counters = peer.counters.as_deref();
        let (applied_through, acked_through) = (&mut peer.applied_through, &mut peer.acked_through);
        let decoded = decode_frames(
            &mut peer.rx_heap,
            (self.volume, self.node.epoch()),
            peer.node,
            peer.link,
            &mut self.events,
            |frame| {
                // Acknowledgements move the link's counters: durable
                // through S (an `Ack`) also means applied through S.
                let (applied, durable) = match frame {
                    Frame::Ack {
                        durable_through, ..
                    } => (durable_through.0, durable_through.0),
                    Frame::Applied { applied_through } => (applied_through.0, 0),
                    _ => (0, 0),
                };
                if let Some(c) = counters {
                    if applied > *applied_through {
                        c.frames_applied
                            .fetch_add(applied - *applied_through, Ordering::Relaxed);
                    }
                    if durable > *acked_through {
                        c.frames_acked
                            .fetch_add(durable - *acked_through, Ordering::Relaxed);
                    }
                }
                *applied_through = (*applied_through).max(applied);
                *acked_through = (*acked_through).max(durable);
            },
        );
        let extras = decoded?;
        self.learn_addresses(extras.learned);
        Ok(extras.heartbeats)
    }

    // ----- liveness -------------------------------------------------------

    /// Heartbeats on quiet links, and links silent past the link timeout
    /// closed (see `liveness`); every tick.
    fn check_liveness(&mut self, shard: &mut Shard<Message>) {
        let now = shard.now();
        let mut beats = Vec::new();
        let mut silent = Vec::new();
        for (key, peer) in self.peers.iter_mut().filter(|(_, p)| !p.closing) {
            match peer.liveness.check(now, self.link_timeout) {
                Verdict::Alive => {}
                Verdict::Beat(token) => beats.push((key, token)),
                Verdict::Silent(quiet) => silent.push((key, quiet)),
            }
        }
        for (key, token) in beats {
            self.send_heartbeat(
                shard,
                key,
                Heartbeat {
                    token,
                    reply: false,
                },
            );
        }
        for (key, quiet) in silent {
            if let Some(c) = &self.peers[key].counters {
                c.silent.fetch_add(1, Ordering::Relaxed);
            }
            self.close_peer(shard, key, &liveness::silence(quiet));
        }
        #[cfg(feature = "rdma")]
        self.check_rdma_liveness(now);
    }

    /// Answers the heartbeats received on `key` and takes the round trip
    /// of a reply.
    fn on_heartbeats(&mut self, shard: &mut Shard<Message>, key: usize, beats: Vec<Heartbeat>) {
        let peer = &mut self.peers[key];
        let (reply, answer) = peer.liveness.take(&beats, shard.now());
        if let Some(reply) = reply {
            if let Some(c) = &peer.counters {
                let ns = u64::try_from(reply.round_trip.as_nanos()).unwrap_or(u64::MAX);
                c.round_trip_ns.store(ns.max(1), Ordering::Relaxed);
            }
            self.events.push_back(Event::HeartbeatAnswered {
                peer: peer.node,
                link: peer.link,
                sent_at: machine_time(self.origin, reply.sent),
            });
        }
        if let Some(answer) = answer {
            self.send_heartbeat(shard, key, answer);
        }
    }

    fn send_heartbeat(&mut self, shard: &mut Shard<Message>, key: usize, beat: Heartbeat) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if peer.closing {
            return;
        }
        let envelope = heartbeat_envelope(self.volume, self.node.epoch());
        self.header.clear();
        if let Err(error) = link::encode_heartbeat(&envelope, beat, &mut self.header) {
            tracing::error!(%error, "replication: cannot encode a heartbeat");
            return;
        }
        // In the stream's order, sent with the loop's other frames.
        peer.tx.append(shard, &[Part::Bytes(&self.header)]);
        if !self.unsent.contains(&key) {
            self.unsent.push(key);
        }
    }

    fn send(
        &mut self,
        shard: &mut Shard<Message>,
        link: LinkId,
        epoch: Epoch,
        frame: &Frame<Payload>,
    ) {
        #[cfg(feature = "rdma")]
        if self.send_rdma(link, epoch, frame) {
            return;
        }
        let Some(&key) = self.links.get(&link) else {
            return;
        };
        let peer = &mut self.peers[key];
        if peer.closing {
            return;
        }
        let envelope = Envelope {
            volume: self.volume,
            stream: STREAM,
            epoch,
        };
        let payload = frame_payload(frame);
        // The header alone, the data copied once, from its payload into
        // the pool buffer that is sent.
        self.header.clear();
        let encoded =
            link::encode_header(&envelope, frame, payload, &self.addresses, &mut self.header);
        if let Err(error) = encoded {
            tracing::error!(%error, "replication: cannot encode a frame");
            if error.closes_link() {
                self.close_peer(shard, key, "encode failed");
            }
            return;
        }
        let bytes = self.header.len() + payload.len();
        if let Some(c) = &peer.counters {
            c.frames_sent.fetch_add(1, Ordering::Relaxed);
            c.bytes_sent.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let parts = [Part::Bytes(&self.header), Part::Bytes(payload)];
        peer.tx.append(shard, &parts);
        if !self.unsent.contains(&key) {
            self.unsent.push(key);
        }
    }

    /// Hands every link's frames encoded since the last call to the ring:
    /// once per reactor loop, so the frames of one loop leave in one send
    /// per link (one TCP segment train and one wake-up of the peer, not one
    /// per frame). A link whose frames wait for a pool buffer is tried
    /// again in the next loop.
    pub fn flush_sends(&mut self, shard: &mut Shard<Message>) {
        for key in std::mem::take(&mut self.unsent) {
            if self.peers.contains(key) {
                self.kick_send(shard, key);
            }
        }
    }

    fn kick_send(&mut self, shard: &mut Shard<Message>, key: usize) {
        let peer = &mut self.peers[key];
        if peer.closing {
            return;
        }
        let tag = Tag::new(TagKind::ReplSend, key, 0, 0).raw();
        match peer.tx.kick(shard, &peer.socket, tag) {
            Ok(Kick::Started) => peer.ops += 1,
            Ok(Kick::Busy) => {}
            // Tried again in the next loop, when buffers may be free.
            Ok(Kick::Starved) => {
                if !self.unsent.contains(&key) {
                    self.unsent.push(key);
                }
            }
            Ok(Kick::Idle) => {
                if peer.close_after_send {
                    self.close_peer(shard, key, "closed by the state machine");
                }
            }
            Err(why) => self.close_peer(shard, key, &why),
        }
    }

    fn on_send(&mut self, shard: &mut Shard<Message>, key: usize, done: Completion) {
        let Some(peer) = self.peers.get_mut(key) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        peer.ops -= 1;
        let tag = Tag::new(TagKind::ReplSend, key, 0, 0).raw();
        let resend = !peer.closing;
        match peer.tx.on_sent(shard, &peer.socket, done, resend, tag) {
            SendProgress::Resent => peer.ops += 1,
            SendProgress::Finished => self.kick_send(shard, key),
            SendProgress::Failed(why) => self.close_peer(shard, key, &why),
        }
        self.run(shard);
    }

    fn close_peer(&mut self, shard: &mut Shard<Message>, key: usize, why: &str) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if !peer.closing {
            peer.closing = true;
            tracing::info!(peer = %peer.node, link = peer.link.0, why, "replication link closing");
            // Makes a pending receive or send complete now.
            let _ = peer.socket.shutdown(Shutdown::Both);
        }
        if peer.ops > 0 {
            return;
        }
        let mut peer = self.peers.remove(key);
        if let Some(buf) = peer.rx.take() {
            shard.free(buf);
        }
        peer.tx.release(shard);
        self.links.remove(&peer.link);
        tracing::info!(peer = %peer.node, link = peer.link.0, "replication link down");
        self.events.push_back(Event::LinkDown {
            peer: peer.node,
            link: peer.link,
        });
        self.notify_down(peer.node, peer.direction);
    }

    /// A completion of one of replication's ring operations.
    pub fn on_completion(&mut self, shard: &mut Shard<Message>, tag: Tag, done: Completion) {
        match tag.kind {
            TagKind::ReplRecv => self.on_recv(shard, tag.conn, done),
            TagKind::ReplSend => self.on_send(shard, tag.conn, done),
            TagKind::ReplLocal => {
                self.on_local(shard, tag, done);
                self.run(shard);
            }
            TagKind::ReplPersist => {
                self.on_persist(shard, tag, done);
                self.run(shard);
            }
            #[cfg(feature = "rdma")]
            TagKind::ReplWake => self.on_rdma_wake(tag),
            _ => {
                if let Some(buf) = done.buf {
                    shard.free(buf);
                }
            }
        }
        // A closing peer whose last operation just came back.
        let closing: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| p.closing && p.ops == 0)
            .map(|(k, _)| k)
            .collect();
        if !closing.is_empty() {
            for key in closing {
                self.close_peer(shard, key, "closed");
            }
            self.run(shard);
        }
    }
}

/// What received bytes carried besides the state machine's frames.
#[derive(Debug, Default)]
struct LinkExtras {
    /// The addresses `EpochChange` frames carry.
    learned: Vec<(NodeId, String)>,
    heartbeats: Vec<Heartbeat>,
}

/// Decodes every whole frame at the front of `rx` (the bytes received on
/// `node`'s link `link`, TCP or RDMA) into `Received` events and drops the
/// bytes decoded. An error closes the link.
fn decode_frames(
    rx: &mut Vec<u8>,
    (volume, current): (VolumeId, Epoch),
    node: NodeId,
    link: LinkId,
    events: &mut VecDeque<Event<Payload>>,
    mut on_frame: impl FnMut(&Frame<Range<usize>>),
) -> Result<LinkExtras, String> {
    let mut extras = LinkExtras::default();
    let mut pos = 0;
    let result = loop {
        let decoded = match link::decode(&rx[pos..]) {
            Ok(decoded) => decoded,
            Err(error) => break Err(format!("bad frame: {error}")),
        };
        match decoded {
            Decoded::NeedMore(_) => break Ok(()),
            Decoded::Frame {
                envelope,
                frame,
                addresses,
                consumed,
            } => {
                if envelope.volume != volume || envelope.stream != STREAM {
                    break Err(format!(
                        "frame of volume {} stream {} on a link of volume {}",
                        envelope.volume, envelope.stream, volume
                    ));
                }
                on_frame(&frame);
                extras.learned.extend(addresses);
                let frame = payload_frame(frame, &rx[pos..pos + consumed]);
                events.push_back(Event::Received {
                    peer: node,
                    link,
                    epoch: envelope.epoch,
                    frame,
                });
                pos += consumed;
            }
            Decoded::Other {
                envelope,
                message,
                consumed,
            } => {
                match message {
                    Other::Handshake(kind) => {
                        break Err(format!("handshake frame {kind:?} after the handshake"));
                    }
                    // A primary of an older epoch gets no answer: its read
                    // lease must not outlive this copy's move to a newer
                    // epoch (`core::primary::lease`).
                    Other::Heartbeat { reply: false, .. } if envelope.epoch < current => {}
                    Other::Heartbeat { token, reply } => {
                        extras.heartbeats.push(Heartbeat { token, reply });
                    }
                }
                pos += consumed;
            }
        }
    };
    rx.drain(..pos);
    result.map(|()| extras)
}

/// The state machines' time at `at`: nanoseconds since `origin`.
pub(super) fn machine_time(origin: Instant, at: Instant) -> Time {
    u64::try_from(at.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX)
}

/// The envelope of a heartbeat: stream 0, outside every sequence.
fn heartbeat_envelope(volume: VolumeId, epoch: Epoch) -> Envelope {
    Envelope {
        volume,
        stream: StreamId(0),
        epoch,
    }
}

/// A decoded frame with its write data copied out of the receive buffer
/// (`frame_bytes`: the frame's bytes, which the ranges index).
fn payload_frame(frame: Frame<Range<usize>>, frame_bytes: &[u8]) -> Frame<Payload> {
    match frame {
        Frame::Write {
            seq,
            position,
            range,
            data,
            fua,
        } => {
            let bytes = frame_bytes.get(data).unwrap_or(&[]);
            Frame::Write {
                seq,
                position,
                range,
                data: Payload::new(bytes.into()),
                fua,
            }
        }
        Frame::Resync { seq, op } => Frame::Resync { seq, op },
        Frame::EpochChange { seq, membership } => Frame::EpochChange { seq, membership },
        Frame::Ack {
            durable_through,
            standing,
        } => Frame::Ack {
            durable_through,
            standing,
        },
        Frame::Applied { applied_through } => Frame::Applied { applied_through },
        Frame::Flush { seq } => Frame::Flush { seq },
        Frame::Nack { seq, reason } => Frame::Nack { seq, reason },
        Frame::ReadRequest { seq, range } => Frame::ReadRequest { seq, range },
        Frame::ReadResponse { seq, range, data } => {
            let bytes = frame_bytes.get(data).unwrap_or(&[]);
            Frame::ReadResponse {
                seq,
                range,
                data: Payload::new(bytes.into()),
            }
        }
    }
}

/// The roster's addresses as `EpochChange` frames carry them.
fn addresses(roster: &Roster) -> BTreeMap<NodeId, String> {
    roster
        .snapshot()
        .into_iter()
        .map(|m| (m.node, m.addr.to_string()))
        .collect()
}
