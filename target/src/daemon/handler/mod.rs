//! keeld's handler on one shard: accepts connections (shard 0), runs each
//! connection it owns from ICReq to close, and executes I/O commands on the
//! shard's ring with the engine's registered buffers.

mod replicated;

pub use replicated::ReplWork;
pub(crate) use replicated::ReplicatedVolume;
use replicated::{ReplOp, ReplRequest};

use std::collections::{HashMap, VecDeque};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use keel_engine::{Completion, DeviceId, IoError, IoOp, NetOp, Op, Origin, Shard, ShardId};
use slab::Slab;

use crate::controller::io::NSID_BROADCAST;
use crate::controller::{AsyncCompletion, DataSource, IoCommand, IoOperation};
use crate::daemon::command::{disk_status, Command, Phase, MAX_SEGMENTS};
use crate::daemon::connection::{Closing, Connection};
use crate::daemon::metrics::{Metrics, OpClass};
use crate::daemon::replication::change::{
    ChangeError, ChangeErrorKind, ChangeOutcome, MembershipChange,
};
use crate::daemon::replication::driver::{Published, Replicator};
use crate::daemon::send_queue::{Kick, Part, SendProgress};
use crate::daemon::shared::Shared;
use crate::daemon::tags::{Tag, TagKind, MAX_CONNECTIONS_PER_SHARD};
use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::status::Status;
use crate::tcp::pdu::{field_offset, TERM_REQ_MAX_ERROR_DATA};
use crate::tcp::{
    negotiated, CapsuleResp, DataPdu, Decoded, DecoderLimits, IcReq, IcResp, PduDecoder, PduError,
    PduHeader, R2t, Role, TxParams,
};
use keel_replicator::core::LinkDirection;
use keel_replicator::wire::NodeId;

/// Most data keeld takes in one H2CData PDU (MAXH2CDATA) and puts in one
/// C2HData PDU: half a pool buffer, so any PDU fits one receive or send
/// buffer with its header.
pub(crate) const MAX_DATA_PER_PDU: u32 = 64 * 1024;
/// Pool buffers kept free beyond a command's own data buffers when they
/// are taken (compare data, send buffers, replication's copies); a command
/// that would dip into them waits for buffers instead.
const BUFFER_RESERVE: usize = 2 * MAX_SEGMENTS + 4;
/// Commands a shard lets wait for buffers at most; beyond, connections
/// stop being read until some are granted (a host keeping more commands
/// outstanding than its queues allow must not grow this without bound).
const MAX_WAITING_COMMANDS: usize = 4096;
const TIMER_KEEP_ALIVE: u64 = 1;
const TIMER_SHUTDOWN: u64 = 2;
const TIMER_STATS: u64 = 3;
const TIMER_REPL_TICK: u64 = 4;
/// How often the replication state machine gets a `Tick`.
const REPL_TICK: Duration = Duration::from_millis(50);
/// Most host operations (region parts) one replicated command may become.
const MAX_REPL_PARTS: usize = 256;
const STATS_PERIOD: Duration = Duration::from_secs(1);
const KEEP_ALIVE_CHECK: Duration = Duration::from_secs(1);
/// How long a shutdown waits for hosts to take their completions.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Messages between keeld's shards (and from its main thread).
pub enum Message {
    /// A connection accepted elsewhere, now this shard's.
    Adopt(TcpStream),
    /// An AER completion for a controller whose admin queue is here.
    Async(AsyncCompletion),
    /// Controller torn down: close its queues.
    CloseController(u16),
    /// Stop accepting, drain connections, stop the shard.
    Shutdown,
    /// A replication link whose handshake is done (shard 0).
    PeerLink {
        /// The connected socket.
        stream: TcpStream,
        /// The node at the other end.
        peer: NodeId,
        /// Who opened it.
        direction: LinkDirection,
    },
    /// Control plane: this node is to become primary of the replicated
    /// volume (shard 0).
    Promote,
    /// Control plane: the serving primary is to scrub (shard 0).
    Scrub,
    /// Control plane: the serving primary is to change the membership
    /// (shard 0); the outcome goes back on `reply`.
    Reconfigure {
        /// The change.
        change: MembershipChange,
        /// Where the control thread waits for the answer.
        reply: std::sync::mpsc::SyncSender<Result<ChangeOutcome, ChangeError>>,
    },
    /// A replicated command's work, from the shard its host queue is on to
    /// shard 0, which owns the state machine.
    Replicate {
        /// The shard to answer.
        origin: ShardId,
        /// The origin's name for the command.
        token: u64,
        /// What the command asks.
        work: ReplWork,
    },
    /// How shard 0 ended a `Replicate`.
    Replicated {
        /// The origin's name for the command.
        token: u64,
        /// The command's outcome.
        status: Status,
        /// A degraded read's data.
        data: Option<Arc<[u8]>>,
    },
    /// A replication link over RDMA whose handshake is done (shard 0).
    #[cfg(feature = "rdma")]
    RdmaPeerLink {
        /// The connected link.
        link: Box<keel_replicator::rdma::RdmaLink>,
        /// Stream bytes received after the handshake, not yet decoded.
        received: Vec<u8>,
        /// The node at the other end.
        peer: NodeId,
        /// Who opened it.
        direction: LinkDirection,
    },
}

/// A namespace's device on this shard.
pub(crate) struct Volume {
    pub nqn: String,
    pub nsid: u32,
    pub device: DeviceId,
    /// Its index in [`Metrics`].
    pub index: usize,
}

pub(crate) struct ShardHandler {
    me: ShardId,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    listeners: Arc<Vec<TcpListener>>,
    accept_armed: Vec<bool>,
    conns: Slab<Connection>,
    volumes: Vec<Volume>,
    /// Admin command output (Identify, log pages), MDTS bytes.
    out: Vec<u8>,
    outbox: VecDeque<(ShardId, Message)>,
    next_shard: usize,
    stalled: Vec<usize>,
    /// Connections whose queued PDUs wait for a pool buffer to be sent
    /// from; retried, ahead of new commands' buffers, as buffers free up.
    tx_starved: Vec<usize>,
    /// Commands waiting for data buffers, oldest first: (connection,
    /// command key, command id).
    need_buffers: VecDeque<(usize, usize, u16)>,
    decoder_limits: DecoderLimits,
    shutting_down: bool,
    /// The replicated volume's state machine (shard 0, when replicating).
    repl: Option<Replicator>,
    /// The replicated volume's device.
    repl_device: Option<DeviceId>,
    /// Whether the state machine serves host I/O (read by every shard).
    repl_published: Option<Arc<Published>>,
    /// This shard's replicated commands waiting for shard 0: token →
    /// (connection, command).
    repl_ops: HashMap<u64, ReplOp>,
    next_repl_op: u64,
    /// Shard 0: replicated commands in the state machine, from any shard.
    repl_requests: Slab<ReplRequest>,
    /// Shard 0: the state machine's host operation → its request.
    /// Shard 0: the state machine's host operation → its request and, for
    /// a degraded read, the part's byte offset.
    repl_parts: HashMap<u64, (usize, u64)>,
    next_repl_part: u64,
    repl_closed: bool,
    /// Shard 0: the replicated namespace's ANA state last given to the
    /// target (optimized while this node serves), if any yet.
    ana_optimized: Option<bool>,
}

impl ShardHandler {
    pub fn new(
        shard: &mut Shard<Message>,
        shared: Arc<Shared>,
        metrics: Arc<Metrics>,
        listeners: Arc<Vec<TcpListener>>,
        volumes: Vec<Volume>,
        repl: Option<ReplicatedVolume>,
    ) -> ShardHandler {
        let (out_len, in_capsule) = {
            let control = shared.lock();
            (
                control.target.output_buffer_len(),
                control.target.limits().in_capsule_data_size,
            )
        };
        let owns_listeners = shard.id() == ShardId(0);
        let mut handler = ShardHandler {
            me: shard.id(),
            shared,
            metrics,
            accept_armed: vec![false; if owns_listeners { listeners.len() } else { 0 }],
            listeners,
            conns: Slab::new(),
            volumes,
            out: vec![0; out_len],
            outbox: VecDeque::new(),
            next_shard: 0,
            stalled: Vec::new(),
            tx_starved: Vec::new(),
            need_buffers: VecDeque::new(),
            decoder_limits: DecoderLimits {
                max_in_capsule_data: in_capsule,
                max_data_per_pdu: MAX_DATA_PER_PDU,
            },
            shutting_down: false,
            repl_device: repl.as_ref().map(|r| r.device),
            repl_published: repl.as_ref().map(|r| r.published.clone()),
            repl: repl.and_then(|r| r.replicator),
            repl_ops: HashMap::new(),
            next_repl_op: 1,
            repl_requests: Slab::new(),
            repl_parts: HashMap::new(),
            next_repl_part: 1,
            ana_optimized: None,
            repl_closed: false,
        };
        if handler.repl.is_some() {
            let _ = shard.add_timer(REPL_TICK, TIMER_REPL_TICK);
            // Before the first host connects: not served until elected.
            handler.publish_ana(shard);
        }
        for index in 0..handler.accept_armed.len() {
            handler.arm_accept(shard, index);
        }
        if owns_listeners {
            let _ = shard.add_timer(KEEP_ALIVE_CHECK, TIMER_KEEP_ALIVE);
        }
        let _ = shard.add_timer(STATS_PERIOD, TIMER_STATS);
        handler
    }

    // ----- accepting and adopting ---------------------------------------

    fn arm_accept(&mut self, shard: &mut Shard<Message>, index: usize) {
        if self.shutting_down || self.accept_armed[index] {
            return;
        }
        let tag = Tag::new(TagKind::Accept, index, 0, 0).raw();
        match shard.submit_net(&self.listeners[index], NetOp::Accept, None, tag) {
            Ok(()) => self.accept_armed[index] = true,
            Err((error, _)) => tracing::error!(%error, "cannot accept connections"),
        }
    }

    fn on_accept(&mut self, shard: &mut Shard<Message>, index: usize, done: Completion) {
        self.accept_armed[index] = false;
        match (done.result, done.accepted) {
            (Ok(_), Some(fd)) => {
                let stream = TcpStream::from(fd);
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::warn!(%error, "TCP_NODELAY refused");
                }
                let shards = shard.shards();
                let dst = ShardId(self.next_shard % shards);
                self.next_shard = self.next_shard.wrapping_add(1);
                if dst == self.me {
                    self.adopt(shard, stream);
                } else {
                    self.post(shard, dst, Message::Adopt(stream));
                }
            }
            (Err(error), _) if !self.shutting_down => {
                tracing::warn!(%error, "accept failed");
            }
            _ => {}
        }
        self.arm_accept(shard, index);
    }

    fn adopt(&mut self, shard: &mut Shard<Message>, stream: TcpStream) {
        if self.shutting_down || self.conns.len() >= MAX_CONNECTIONS_PER_SHARD {
            tracing::warn!("refusing a connection: shutting down or at the connection limit");
            return;
        }
        let Some(rx) = shard.alloc(shard.pool().slot_size()) else {
            tracing::warn!("refusing a connection: buffer pool exhausted");
            return;
        };
        let decoder = PduDecoder::new(Role::Controller, self.decoder_limits);
        let mut conn = Connection::new(stream, decoder);
        conn.rx = Some(rx);
        tracing::info!(peer = ?conn.peer, shard = self.me.0, "connection accepted");
        let key = self.conns.insert(conn);
        let armed = self.conns[key].arm_recv(shard, key);
        if let Err(error) = armed {
            self.abort(shard, key, &error);
        }
    }

    fn post(&mut self, shard: &mut Shard<Message>, dst: ShardId, msg: Message) {
        if let Err(msg) = shard.send(dst, msg) {
            self.outbox.push_back((dst, msg));
        }
    }

    fn broadcast_close(&mut self, shard: &mut Shard<Message>, cntlid: u16) {
        for index in 0..shard.shards() {
            let dst = ShardId(index);
            if dst == self.me {
                self.close_controller(shard, cntlid);
            } else {
                self.post(shard, dst, Message::CloseController(cntlid));
            }
        }
    }

    fn close_controller(&mut self, shard: &mut Shard<Message>, cntlid: u16) {
        let doomed: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.session.cntlid() == Some(cntlid))
            .map(|(key, _)| key)
            .collect();
        for key in doomed {
            self.abort(shard, key, "controller torn down");
        }
    }

    fn route_async(&mut self, shard: &mut Shard<Message>, routed: Vec<(ShardId, AsyncCompletion)>) {
        for (dst, completion) in routed {
            if dst == self.me {
                self.deliver_async(shard, completion);
            } else {
                self.post(shard, dst, Message::Async(completion));
            }
        }
    }

    fn deliver_async(&mut self, shard: &mut Shard<Message>, completion: AsyncCompletion) {
        let found = self.conns.iter().find(|(_, conn)| {
            conn.session.cntlid() == Some(completion.cntlid) && conn.session.qid() == Some(0)
        });
        if let Some((key, _)) = found {
            self.respond(shard, key, completion.cqe);
            self.flush(shard, key);
        }
    }

    // ----- receiving ----------------------------------------------------

    fn on_recv(&mut self, shard: &mut Shard<Message>, key: usize, done: Completion) {
        let Some(conn) = self.conns.get_mut(key) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        conn.ops -= 1;
        conn.rx = done.buf;
        match done.result {
            Ok(0) => {
                conn.read_shut = true;
                if conn.closing == Closing::No {
                    tracing::info!(peer = ?conn.peer, "host closed the connection");
                }
                self.begin_close(shard, key, Closing::Drain);
            }
            Ok(n) => {
                conn.rx_end += n as usize;
                self.process_rx(shard, key);
            }
            Err(error) => {
                let message = format!("receive failed: {error}");
                self.abort(shard, key, &message);
            }
        }
    }

    /// Takes every whole PDU out of the receive buffer, then re-arms the
    /// receive.
    fn process_rx(&mut self, shard: &mut Shard<Message>, key: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.closing != Closing::No {
                break;
            }
            let Some(rx) = conn.rx.as_ref() else {
                break;
            };
            let bytes = &shard.buf(rx)[conn.rx_start..conn.rx_end];
            let pdu = match conn.decoder.decode(bytes) {
                Ok(Decoded::NeedMore(_)) => break,
                Ok(Decoded::Ready(pdu)) => pdu,
                Err(error) => {
                    let term = conn
                        .decoder
                        .termination_for(&error, bytes)
                        .map(|(header, data)| {
                            let mut copy = [0u8; TERM_REQ_MAX_ERROR_DATA];
                            let len = data.len().min(copy.len());
                            copy[..len].copy_from_slice(&data[..len]);
                            (header, copy, len)
                        });
                    self.fatal(shard, key, &error, term);
                    return;
                }
            };
            let header = *pdu.header();
            let layout = *pdu.layout();
            let digest_error = pdu.data().err();
            let data =
                conn.rx_start + layout.data_range().start..conn.rx_start + layout.data_range().end;
            // The stream is never held back for buffers: host data for
            // commands holding buffers may follow a new command in it, and
            // holding it back left every admitted write waiting for data
            // never read, nothing freeing a buffer again (a deadlock, seen
            // with 64 buffers and 32 writes of 128 KiB in flight). A new
            // command short of buffers waits for them instead
            // (`Phase::NeedBuffers`); only too many waiting ones stop it.
            let too_many_waiting = matches!(header, PduHeader::CapsuleCmd(_))
                && self.need_buffers.len() >= MAX_WAITING_COMMANDS;
            if too_many_waiting {
                conn.rx_paused = true;
                self.stalled.push(key);
                break;
            }
            conn.rx_start += pdu.wire_len();
            self.handle_pdu(shard, key, header, data, digest_error);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let cap = shard.pool().slot_size();
        let max_pdu = MAX_DATA_PER_PDU as usize + 256;
        if conn.rx_start == conn.rx_end || cap - conn.rx_end < max_pdu {
            conn.compact_rx(shard);
        }
        if let Err(error) = conn.arm_recv(shard, key) {
            self.abort(shard, key, &error);
            return;
        }
        self.flush(shard, key);
    }

    fn handle_pdu(
        &mut self,
        shard: &mut Shard<Message>,
        key: usize,
        header: PduHeader,
        data: Range<usize>,
        digest_error: Option<PduError>,
    ) {
        match header {
            PduHeader::IcReq(icreq) => self.on_icreq(shard, key, icreq),
            PduHeader::CapsuleCmd(capsule) => {
                self.on_capsule(shard, key, &capsule.sqe, data, digest_error)
            }
            PduHeader::H2cData(pdu) => self.on_h2c_data(shard, key, pdu, data, digest_error),
            PduHeader::H2cTermReq(term) => {
                let message = format!("host terminated the connection: {:?}", term.fes);
                self.abort(shard, key, &message);
            }
            // The decoder lets through only what a controller receives.
            other => {
                let message = format!("unexpected {:?}", other.pdu_type());
                self.abort(shard, key, &message);
            }
        }
    }

    fn on_icreq(&mut self, shard: &mut Shard<Message>, key: usize, icreq: IcReq) {
        let icresp = IcResp {
            pfv: 0,
            cpda: 0,
            digest: icreq.digest,
            maxh2cdata: MAX_DATA_PER_PDU,
        };
        let conn = &mut self.conns[key];
        let agreed = negotiated(Role::Controller, &icreq, &icresp);
        let queued = conn.queue_pdu(
            shard,
            &PduHeader::IcResp(icresp),
            TxParams::PLAIN,
            Part::Bytes(&[]),
        );
        if let Err(error) = queued {
            self.abort(shard, key, &error);
            return;
        }
        if let Err(error) = conn.decoder.establish(agreed.rx) {
            self.fatal(shard, key, &error, None);
            return;
        }
        conn.tx_params = agreed.tx;
        tracing::debug!(peer = ?conn.peer, digests = ?icreq.digest, hpda = icreq.hpda, "connection initialized");
    }

    fn on_capsule(
        &mut self,
        shard: &mut Shard<Message>,
        key: usize,
        sqe: &crate::nvme::sqe::SubmissionQueueEntry,
        data: Range<usize>,
        digest_error: Option<PduError>,
    ) {
        let now = self.shared.now();
        let conn = &mut self.conns[key];
        if digest_error.is_some() {
            tracing::warn!(peer = ?conn.peer, cid = sqe.cid, "data digest error in a command capsule");
            let mut cqe = CompletionQueueEntry::new(sqe.cid, Status::DATA_TRANSFER_ERROR);
            cqe.sqid = conn.session.qid().unwrap_or(0);
            self.respond(shard, key, cqe);
            return;
        }
        let Some(rx) = conn.rx.as_ref() else {
            return;
        };
        let capsule = &shard.buf(rx)[data.clone()];
        let was_connected = conn.session.is_connected();
        let mut control = self.shared.lock();
        let reply = control
            .target
            .submit(&mut conn.session, sqe, capsule, &mut self.out, now);
        if !was_connected {
            if let (Some(cntlid), Some(qid)) = (conn.session.cntlid(), conn.session.qid()) {
                if qid == 0 {
                    control.admin_shard.insert(cntlid, self.me);
                }
                if let Some(info) = control.target.controller_info(cntlid) {
                    conn.namespaces = self
                        .volumes
                        .iter()
                        .filter(|volume| volume.nqn == info.subnqn)
                        .map(|volume| (volume.nsid, volume.device, volume.index))
                        .collect();
                    tracing::info!(peer = ?conn.peer, cntlid, qid, subnqn = info.subnqn, hostnqn = info.hostnqn, "queue connected");
                }
            }
        }
        let disconnected = was_connected && !conn.session.is_connected();
        let routed = control.routed_async();
        drop(control);
        match reply {
            crate::controller::Reply::Complete(response) => {
                if response.data_len > 0 {
                    self.send_heap_data(shard, key, sqe.cid, response.data_len);
                }
                self.respond(shard, key, response.cqe);
            }
            crate::controller::Reply::Io(io) => self.start_io(shard, key, io, data),
            crate::controller::Reply::Deferred => {}
        }
        self.route_async(shard, routed);
        if disconnected {
            self.flush(shard, key);
            self.begin_close(shard, key, Closing::Drain);
        }
    }

    /// C2HData from the admin output buffer.
    fn send_heap_data(&mut self, shard: &mut Shard<Message>, key: usize, cid: u16, len: usize) {
        let conn = &mut self.conns[key];
        let tx = conn.tx_params;
        let len = len.min(self.out.len());
        let mut offset = 0;
        while offset < len {
            let chunk = (len - offset).min(MAX_DATA_PER_PDU as usize);
            let last = offset + chunk == len;
            let header = PduHeader::C2hData(DataPdu {
                cccid: cid,
                ttag: 0,
                datao: offset as u32,
                datal: chunk as u32,
                last,
                success: false,
            });
            let payload = Part::Bytes(&self.out[offset..offset + chunk]);
            if let Err(error) = conn.queue_pdu(shard, &header, tx, payload) {
                self.abort(shard, key, &error);
                return;
            }
            offset += chunk;
        }
    }

    fn respond(&mut self, shard: &mut Shard<Message>, key: usize, cqe: CompletionQueueEntry) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let tx = conn.tx_params;
        let header = PduHeader::CapsuleResp(CapsuleResp { cqe });
        if let Err(error) = conn.queue_pdu(shard, &header, tx, Part::Bytes(&[])) {
            self.abort(shard, key, &error);
        }
    }

    // ----- I/O commands -------------------------------------------------

    fn start_io(
        &mut self,
        shard: &mut Shard<Message>,
        key: usize,
        io: IoCommand,
        capsule: Range<usize>,
    ) {
        let slot = shard.pool().slot_size();
        let conn = &mut self.conns[key];
        let device = conn.device_of(io.nsid);
        let broadcast_flush = io.nsid == NSID_BROADCAST && io.operation == IoOperation::Flush;
        let volume = conn.volume_of(io.nsid);
        let mut command = Command::new(io, device, volume, shard.now());
        if device.is_none() && !broadcast_flush {
            command.fail(Status::INTERNAL_ERROR);
        }
        // Host data to gather first (in the capsule or through R2T).
        let host_data = host_data_of(&command.io.operation);
        let transfer = transfer_len(&command.io.operation);
        if command.status.is_success() && transfer > 0 {
            let segments = (transfer as usize).div_ceil(slot);
            if segments > MAX_SEGMENTS {
                command.fail(Status::INTERNAL_ERROR);
            } else {
                command.segments = segments;
            }
        }
        let cmd_key = conn.commands.insert(command);
        let command = &mut conn.commands[cmd_key];
        if !command.status.is_success() {
            self.finish(shard, key, cmd_key);
            return;
        }
        if shard.pool().available() < command.segments + BUFFER_RESERVE {
            let in_capsule = match (host_data, conn.rx.as_ref()) {
                (Some(DataSource::InCapsule { offset, len }), Some(rx)) => {
                    let start = capsule.start + offset;
                    shard.buf(rx).get(start..start + len).map(<[u8]>::to_vec)
                }
                _ => None,
            };
            command.phase = Phase::NeedBuffers { in_capsule };
            self.need_buffers.push_back((key, cmd_key, command.io.cid));
            return;
        }
        self.admit(shard, key, cmd_key, host_data, Some(capsule));
    }

    /// Gives the commands waiting for buffers theirs, oldest first, while
    /// the pool has them and its reserve.
    fn grant_buffers(&mut self, shard: &mut Shard<Message>) -> bool {
        let mut granted = false;
        while let Some(&(key, cmd_key, cid)) = self.need_buffers.front() {
            let waiting = self
                .conns
                .get(key)
                .and_then(|conn| conn.commands.get(cmd_key))
                .filter(|c| c.io.cid == cid && matches!(c.phase, Phase::NeedBuffers { .. }));
            let Some(command) = waiting else {
                self.need_buffers.pop_front();
                continue;
            };
            if shard.pool().available() < command.segments + BUFFER_RESERVE {
                break;
            }
            self.need_buffers.pop_front();
            let host_data = host_data_of(&command.io.operation);
            self.admit(shard, key, cmd_key, host_data, None);
            // Out of the receive path, nothing else sends what it queued
            // (its R2T): without this, 8 connections of 32 writes of 1 MiB
            // stopped at the 128th write.
            self.flush(shard, key);
            granted = true;
        }
        granted
    }

    /// Takes the command's data buffers and starts it: its in-capsule data
    /// copied in (from `capsule`, the receive buffer's range, or from what
    /// it kept while waiting), an R2T for data from the host, or the disk
    /// work.
    fn admit(
        &mut self,
        shard: &mut Shard<Message>,
        key: usize,
        cmd_key: usize,
        host_data: Option<DataSource>,
        capsule: Option<Range<usize>>,
    ) {
        let slot = shard.pool().slot_size();
        let conn = &mut self.conns[key];
        let command = &mut conn.commands[cmd_key];
        let kept = match std::mem::replace(&mut command.phase, Phase::Disk) {
            Phase::NeedBuffers { in_capsule } => in_capsule,
            _ => None,
        };
        let transfer = transfer_len(&command.io.operation) as usize;
        for index in 0..command.segments {
            let len = (transfer - index * slot).min(slot);
            match shard.alloc(len) {
                Some(buf) => command.data[index] = Some(buf),
                None => command.fail(Status::COMMAND_INTERRUPTED),
            }
        }
        if !command.status.is_success() {
            self.finish(shard, key, cmd_key);
            return;
        }
        match host_data {
            Some(DataSource::InCapsule { offset, len }) => {
                for index in 0..command.segments {
                    let at = index * slot;
                    let seg_len = (len - at).min(slot);
                    let Some(buf) = &command.data[index] else {
                        continue;
                    };
                    let copied = match (&capsule, &kept, conn.rx.as_ref()) {
                        (Some(capsule), _, Some(rx)) => {
                            let start = capsule.start + offset + at;
                            shard.pool_mut().copy(rx, start..start + seg_len, buf, 0);
                            true
                        }
                        (None, Some(bytes), _) => match bytes.get(at..at + seg_len) {
                            Some(part) => {
                                shard.buf_mut(buf)[..seg_len].copy_from_slice(part);
                                true
                            }
                            None => false,
                        },
                        _ => false,
                    };
                    if !copied {
                        // Never write a buffer's stale bytes as the host's.
                        command.fail(Status::DATA_TRANSFER_ERROR);
                    }
                }
                self.data_arrived(shard, key, cmd_key);
            }
            Some(DataSource::FromHost { len }) => {
                command.phase = Phase::AwaitingHostData {
                    received: 0,
                    expected: len,
                };
                let r2t = PduHeader::R2t(R2t {
                    cccid: command.io.cid,
                    ttag: cmd_key as u16,
                    r2to: 0,
                    r2tl: len as u32,
                });
                let tx = conn.tx_params;
                if let Err(error) = conn.queue_pdu(shard, &r2t, tx, Part::Bytes(&[])) {
                    self.abort(shard, key, &error);
                }
            }
            None => self.data_arrived(shard, key, cmd_key),
        }
    }

    fn on_h2c_data(
        &mut self,
        shard: &mut Shard<Message>,
        key: usize,
        pdu: DataPdu,
        data: Range<usize>,
        digest_error: Option<PduError>,
    ) {
        let slot = shard.pool().slot_size();
        let conn = &mut self.conns[key];
        let cmd_key = usize::from(pdu.ttag);
        let expected = match conn.commands.get(cmd_key) {
            Some(command) if command.io.cid == pdu.cccid => match command.phase {
                Phase::AwaitingHostData { expected, .. } => Some(expected),
                Phase::Disk | Phase::NeedBuffers { .. } => None,
            },
            _ => None,
        };
        let Some(expected) = expected else {
            let error = PduError::InvalidHeaderField {
                offset: field_offset::TTAG,
                field: "TTAG",
            };
            self.fatal(shard, key, &error, None);
            return;
        };
        if let Err(error) = pdu.check_within(0, expected as u32) {
            self.fatal(shard, key, &error, None);
            return;
        }
        let Some(rx) = conn.rx.as_ref() else {
            return;
        };
        let command = &mut conn.commands[cmd_key];
        if digest_error.is_some() {
            tracing::warn!(peer = ?conn.peer, cid = pdu.cccid, "data digest error in H2CData");
            command.fail(Status::DATA_TRANSFER_ERROR);
        }
        // Scatter into the command's buffers (a PDU may straddle two).
        let mut at = pdu.datao as usize;
        let mut src = data.start;
        while src < data.end {
            let index = at / slot;
            let offset = at % slot;
            let len = (data.end - src).min(slot - offset);
            if let Some(buf) = command.data.get(index).and_then(Option::as_ref) {
                if offset + len <= buf.len() {
                    shard.pool_mut().copy(rx, src..src + len, buf, offset);
                }
            }
            at += len;
            src += len;
        }
        let Phase::AwaitingHostData { received, .. } = &mut command.phase else {
            return;
        };
        *received += u64::from(pdu.datal);
        if *received > expected {
            let error = PduError::DataOutOfRange {
                datao: pdu.datao,
                datal: pdu.datal,
            };
            self.fatal(shard, key, &error, None);
        } else if *received == expected {
            command.phase = Phase::Disk;
            self.data_arrived(shard, key, cmd_key);
        }
    }

    /// All host data is in: start the disk work.
    fn data_arrived(&mut self, shard: &mut Shard<Message>, key: usize, cmd_key: usize) {
        let slot = shard.pool().slot_size() as u64;
        let conn = &mut self.conns[key];
        let command = &mut conn.commands[cmd_key];
        command.phase = Phase::Disk;
        if !command.status.is_success() {
            self.finish(shard, key, cmd_key);
            return;
        }
        if command.device.is_some() && command.device == self.repl_device {
            let reads = matches!(
                command.io.operation,
                IoOperation::Read { .. } | IoOperation::Compare { .. }
            );
            if !reads {
                self.replicate(shard, key, cmd_key);
                return;
            }
            // Reads come from the local copy, only while it is the serving
            // primary's (a replica's copy may be stale).
            let serving = self
                .repl_published
                .as_ref()
                .is_some_and(|p| p.serving.load(std::sync::atomic::Ordering::Acquire));
            if !serving {
                command.fail(Status::ANA_INACCESSIBLE);
                self.finish(shard, key, cmd_key);
                return;
            }
        }
        let segments = command.segments;
        match command.io.operation.clone() {
            IoOperation::Read { range, .. } => {
                for index in 0..segments {
                    let offset = range.offset + index as u64 * slot;
                    self.submit_disk(
                        shard,
                        key,
                        cmd_key,
                        TagKind::Disk,
                        index,
                        IoOp::Read { offset },
                    );
                }
            }
            IoOperation::Write { range, fua, .. } => {
                for index in 0..segments {
                    let offset = range.offset + index as u64 * slot;
                    let op = IoOp::Write { offset, fua };
                    self.submit_disk(shard, key, cmd_key, TagKind::Disk, index, op);
                }
            }
            IoOperation::Compare { range, .. } => {
                for index in 0..segments {
                    let command = &mut self.conns[key].commands[cmd_key];
                    let len = command.data[index].as_ref().map_or(0, |b| b.len());
                    match shard.alloc(len) {
                        Some(buf) => command.compare[index] = Some(buf),
                        None => {
                            command.fail(Status::COMMAND_INTERRUPTED);
                            continue;
                        }
                    }
                    let offset = range.offset + index as u64 * slot;
                    let op = IoOp::Read { offset };
                    self.submit_disk(shard, key, cmd_key, TagKind::CompareRead, index, op);
                }
            }
            IoOperation::WriteZeroes {
                range, deallocate, ..
            } => {
                let op = if deallocate {
                    IoOp::Discard {
                        offset: range.offset,
                        len: range.len,
                    }
                } else {
                    IoOp::WriteZeroes {
                        offset: range.offset,
                        len: range.len,
                    }
                };
                self.submit_disk(shard, key, cmd_key, TagKind::Disk, 0, op);
            }
            IoOperation::Flush => {
                self.submit_disk(shard, key, cmd_key, TagKind::Disk, 0, IoOp::Flush)
            }
            IoOperation::DatasetManagement(request) => {
                let command = &mut self.conns[key].commands[cmd_key];
                let list = match command.data[0].as_ref() {
                    Some(buf) => request.byte_ranges(shard.buf(buf)),
                    None => request.byte_ranges(&[]),
                };
                match list {
                    Ok(ranges) if request.deallocate => {
                        for range in &ranges {
                            let op = IoOp::Discard {
                                offset: range.offset,
                                len: range.len,
                            };
                            self.submit_disk(shard, key, cmd_key, TagKind::Disk, 0, op);
                        }
                        self.conns[key].commands[cmd_key].ranges = ranges;
                    }
                    // Hints only: nothing to do.
                    Ok(_) => {}
                    Err(error) => command.fail(error.status()),
                }
            }
        }
        if self.conns[key].commands[cmd_key].disk_pending == 0 {
            self.finish(shard, key, cmd_key);
        }
    }

    /// Submits one disk operation of a command: on its namespace's device,
    /// or for a broadcast Flush on every device of the connection.
    fn submit_disk(
        &mut self,
        shard: &mut Shard<Message>,
        key: usize,
        cmd_key: usize,
        kind: TagKind,
        index: usize,
        op: IoOp,
    ) {
        let conn = &mut self.conns[key];
        let command = &mut conn.commands[cmd_key];
        let tag = Tag::new(kind, key, cmd_key, index).raw();
        let devices = match command.device {
            Some(_) => 1,
            None => conn.namespaces.len(),
        };
        for nth in 0..devices {
            let device = match command.device {
                Some(device) => device,
                None => conn.namespaces[nth].1,
            };
            let buf = match (kind, op.has_data()) {
                (TagKind::CompareRead, _) => command.compare[index].take(),
                (_, true) => command.data[index].take(),
                _ => None,
            };
            match shard.submit(device, op, buf, tag) {
                Ok(()) => {
                    command.disk_pending += 1;
                    conn.ops += 1;
                }
                Err((error, buf)) => {
                    tracing::warn!(%error, "disk submission refused");
                    let reading = command.is_read();
                    command.fail(disk_status(&error, reading));
                    if let Some(buf) = buf {
                        match kind {
                            TagKind::CompareRead => command.compare[index] = Some(buf),
                            _ => command.data[index] = Some(buf),
                        }
                    }
                }
            }
        }
    }

    fn on_disk(&mut self, shard: &mut Shard<Message>, tag: Tag, done: Completion) {
        let Some(conn) = self.conns.get_mut(tag.conn) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        conn.ops -= 1;
        let Some(command) = conn.commands.get_mut(tag.command) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        if let Some(buf) = done.buf {
            let slot = match tag.kind {
                TagKind::CompareRead => command.compare.get_mut(tag.segment),
                _ => command.data.get_mut(tag.segment),
            };
            match slot {
                Some(slot) if slot.is_none() => *slot = Some(buf),
                _ => shard.free(buf),
            }
        }
        if let Err(error) = &done.result {
            tracing::warn!(%error, "disk operation failed");
            let reading = matches!(done.op, Op::Block(IoOp::Read { .. }));
            let media = !matches!(error, IoError::OutOfRange { .. } | IoError::Busy);
            if let (TagKind::Disk, Op::Block(IoOp::Read { offset }), true) =
                (tag.kind, done.op, media)
            {
                if command.device.is_some() && command.device == self.repl_device {
                    // The replicated volume: a replica may hold the range.
                    conn.ops += 1;
                    self.degraded_read(shard, tag, offset);
                    return;
                }
            }
            command.fail(disk_status(error, reading));
        }
        command.disk_pending -= 1;
        if command.disk_pending == 0 {
            self.finish(shard, tag.conn, tag.command);
        }
    }

    /// Sends the command's data (reads) and completion, frees its buffers.
    fn finish(&mut self, shard: &mut Shard<Message>, key: usize, cmd_key: usize) {
        let conn = &mut self.conns[key];
        let mut command = conn.commands.remove(cmd_key);
        if command.status.is_success() {
            if let IoOperation::Compare { .. } = command.io.operation {
                let differs = (0..command.segments).any(|index| {
                    match (&command.data[index], &command.compare[index]) {
                        (Some(a), Some(b)) => shard.buf(a) != shard.buf(b),
                        _ => true,
                    }
                });
                if differs {
                    command.status = Status::COMPARE_FAILURE;
                }
            }
        }
        if let Some(volume) = command.volume {
            let (class, bytes) = match &command.io.operation {
                IoOperation::Read { range, .. } | IoOperation::Compare { range, .. } => {
                    (OpClass::Read, range.len)
                }
                IoOperation::Write { range, .. } => (OpClass::Write, range.len),
                IoOperation::WriteZeroes { range, .. } => (OpClass::Write, range.len),
                IoOperation::Flush | IoOperation::DatasetManagement(_) => (OpClass::Other, 0),
            };
            let latency = shard.now().saturating_duration_since(command.started);
            self.metrics
                .record(volume, class, bytes, command.status.is_success(), latency);
        }
        let mut control = self.shared.lock();
        let cqe = control
            .target
            .complete_io(&mut conn.session, &command.io, command.status);
        let routed = control.routed_async();
        drop(control);
        // A successful read may end with the SUCCESS flag on its last
        // C2HData instead of a CapsuleResp, when the host disabled SQ flow
        // control (it then needs no SQHD): one PDU less per read.
        let mut responded = false;
        if command.status.is_success() && conn.closing != Closing::Abort {
            if let IoOperation::Read { .. } = command.io.operation {
                let success_flag = conn.session.sq_flow_control_disabled();
                let tx = conn.tx_params;
                let chunk = MAX_DATA_PER_PDU as usize;
                let mut datao = 0usize;
                let total: usize = command.data.iter().flatten().map(|b| b.len()).sum();
                'segments: for buf in command.data.iter().flatten() {
                    let mut at = 0;
                    while at < buf.len() {
                        let len = (buf.len() - at).min(chunk);
                        let last = datao + len == total;
                        let header = PduHeader::C2hData(DataPdu {
                            cccid: command.io.cid,
                            ttag: 0,
                            datao: datao as u32,
                            datal: len as u32,
                            last,
                            success: last && success_flag,
                        });
                        if let Err(error) =
                            conn.queue_pdu(shard, &header, tx, Part::Slot(buf, at..at + len))
                        {
                            tracing::warn!(%error, "cannot queue read data");
                            conn.closing = Closing::Abort;
                            break 'segments;
                        }
                        at += len;
                        datao += len;
                    }
                }
                responded = success_flag;
            }
        }
        for buf in command.take_buffers() {
            shard.free(buf);
        }
        if !responded {
            self.respond(shard, key, cqe);
        }
        self.route_async(shard, routed);
        self.flush(shard, key);
    }

    // ----- replicated commands -----------------------------------------

    fn flush(&mut self, shard: &mut Shard<Message>, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.flush(shard, key) {
            Ok(Kick::Starved) if !self.tx_starved.contains(&key) => self.tx_starved.push(key),
            Ok(_) => {}
            Err(error) => {
                self.abort(shard, key, &error);
                return;
            }
        }
        self.maybe_finalize(shard, key);
    }

    fn on_send(&mut self, shard: &mut Shard<Message>, key: usize, done: Completion) {
        let Some(conn) = self.conns.get_mut(key) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        conn.ops -= 1;
        let tag = Tag::new(TagKind::Send, key, 0, 0).raw();
        match conn.tx.on_sent(shard, &conn.socket, done, true, tag) {
            SendProgress::Resent => conn.ops += 1,
            SendProgress::Finished => self.flush(shard, key),
            SendProgress::Failed(why) => self.abort(shard, key, &why),
        }
    }

    /// A protocol error: tell the host with a C2HTermReq (when the error
    /// has one), then close.
    fn fatal(
        &mut self,
        shard: &mut Shard<Message>,
        key: usize,
        error: &PduError,
        term: Option<(PduHeader, [u8; TERM_REQ_MAX_ERROR_DATA], usize)>,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        tracing::warn!(peer = ?conn.peer, %error, "protocol error, terminating the connection");
        let term = term.or_else(|| {
            conn.decoder
                .termination_for(error, &[])
                .map(|(header, _)| (header, [0u8; TERM_REQ_MAX_ERROR_DATA], 0))
        });
        if let Some((header, data, len)) = term {
            let queued = conn.queue_pdu(shard, &header, TxParams::PLAIN, Part::Bytes(&data[..len]));
            if queued.is_err() {
                self.abort(shard, key, "cannot queue the termination request");
                return;
            }
        }
        self.begin_close(shard, key, Closing::Drain);
        self.flush(shard, key);
    }

    fn abort(&mut self, shard: &mut Shard<Message>, key: usize, why: &str) {
        if let Some(conn) = self.conns.get(key) {
            if conn.closing != Closing::Abort {
                tracing::info!(peer = ?conn.peer, why, "closing connection");
            }
        }
        self.begin_close(shard, key, Closing::Abort);
    }

    fn begin_close(&mut self, shard: &mut Shard<Message>, key: usize, mode: Closing) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.closing == Closing::Abort || conn.closing == mode {
            self.maybe_finalize(shard, key);
            return;
        }
        conn.closing = mode;
        let how = match mode {
            Closing::Abort => Shutdown::Both,
            _ => Shutdown::Read,
        };
        // Makes a pending receive (and, for Both, send) complete now.
        let _ = conn.socket.shutdown(how);
        // Commands waiting for host data (or for buffers to ask for it)
        // will never get it.
        let waiting: Vec<usize> = conn
            .commands
            .iter()
            .filter(|(_, c)| {
                matches!(
                    c.phase,
                    Phase::AwaitingHostData { .. } | Phase::NeedBuffers { .. }
                )
            })
            .map(|(k, _)| k)
            .collect();
        for cmd_key in waiting {
            let mut command = conn.commands.remove(cmd_key);
            for buf in command.take_buffers() {
                shard.free(buf);
            }
        }
        if mode == Closing::Abort {
            conn.tx.release(shard);
        }
        self.maybe_finalize(shard, key);
    }

    fn maybe_finalize(&mut self, shard: &mut Shard<Message>, key: usize) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        if conn.closing == Closing::No || !conn.is_quiescent() {
            return;
        }
        let mut conn = self.conns.remove(key);
        if let Some(buf) = conn.rx.take() {
            shard.free(buf);
        }
        conn.tx.release(shard);
        for mut command in conn.commands.drain() {
            for buf in command.take_buffers() {
                shard.free(buf);
            }
        }
        self.stalled.retain(|&k| k != key);
        self.tx_starved.retain(|&k| k != key);
        let admin = conn.session.qid() == Some(0);
        let cntlid = conn.session.cntlid();
        let mut control = self.shared.lock();
        control.target.close_queue(&mut conn.session);
        if let (true, Some(cntlid)) = (admin, cntlid) {
            control.admin_shard.remove(&cntlid);
        }
        let routed = control.routed_async();
        drop(control);
        tracing::info!(peer = ?conn.peer, ?cntlid, "connection closed");
        drop(conn);
        self.route_async(shard, routed);
        if let (true, Some(cntlid)) = (admin, cntlid) {
            // The controller is gone; its I/O queues must not linger.
            self.broadcast_close(shard, cntlid);
        }
    }

    fn start_shutdown(&mut self, shard: &mut Shard<Message>) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        for listener in self.listeners.iter().take(self.accept_armed.len()) {
            shard.cancel_net(listener);
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.begin_close(shard, key, Closing::Drain);
        }
        let _ = shard.add_timer(SHUTDOWN_GRACE, TIMER_SHUTDOWN);
    }
}

impl keel_engine::Handler<Message> for ShardHandler {
    fn on_completion(&mut self, shard: &mut Shard<Message>, done: Completion) {
        let Some(tag) = Tag::parse(done.tag) else {
            if let Some(buf) = done.buf {
                shard.free(buf);
            }
            return;
        };
        if matches!(
            tag.kind,
            TagKind::ReplRecv
                | TagKind::ReplSend
                | TagKind::ReplLocal
                | TagKind::ReplPersist
                | TagKind::ReplWake
        ) {
            match self.repl.as_mut() {
                Some(repl) => repl.on_completion(shard, tag, done),
                None => {
                    if let Some(buf) = done.buf {
                        shard.free(buf);
                    }
                }
            }
            self.repl_completions(shard);
            return;
        }
        match tag.kind {
            TagKind::Accept => self.on_accept(shard, tag.conn, done),
            TagKind::Recv => self.on_recv(shard, tag.conn, done),
            TagKind::Send => self.on_send(shard, tag.conn, done),
            TagKind::Disk | TagKind::CompareRead => self.on_disk(shard, tag, done),
            _ => {}
        }
        self.maybe_finalize(shard, tag.conn);
    }

    fn on_message(&mut self, shard: &mut Shard<Message>, _from: Origin, msg: Message) {
        match msg {
            Message::Adopt(stream) => self.adopt(shard, stream),
            Message::Async(completion) => self.deliver_async(shard, completion),
            Message::CloseController(cntlid) => self.close_controller(shard, cntlid),
            Message::Shutdown => self.start_shutdown(shard),
            Message::Replicate {
                origin,
                token,
                work,
            } => self.submit_replicated(shard, origin, token, work),
            Message::Replicated {
                token,
                status,
                data,
            } => {
                self.complete_repl_op(shard, token, status, data);
            }
            Message::PeerLink {
                stream,
                peer,
                direction,
            } => {
                if let Some(repl) = self.repl.as_mut() {
                    repl.adopt(shard, stream, peer, direction);
                    self.repl_completions(shard);
                }
            }
            Message::Promote => {
                if let Some(repl) = self.repl.as_mut() {
                    repl.promote(shard);
                    self.repl_completions(shard);
                }
            }
            Message::Scrub => {
                if let Some(repl) = self.repl.as_mut() {
                    repl.scrub(shard);
                    self.repl_completions(shard);
                }
            }
            Message::Reconfigure { change, reply } => {
                let outcome = match self.repl.as_mut() {
                    Some(repl) => repl.reconfigure(shard, &change),
                    None => Err(ChangeError {
                        kind: ChangeErrorKind::Refused,
                        message: "this shard replicates no volume".to_string(),
                    }),
                };
                self.repl_completions(shard);
                // The control thread may have given up waiting: nothing to do.
                let _ = reply.send(outcome);
            }
            #[cfg(feature = "rdma")]
            Message::RdmaPeerLink {
                link,
                received,
                peer,
                direction,
            } => {
                if let Some(repl) = self.repl.as_mut() {
                    repl.adopt_rdma(shard, *link, received, peer, direction);
                    self.repl_completions(shard);
                }
            }
        }
    }

    fn on_timer(&mut self, shard: &mut Shard<Message>, tag: u64) {
        match tag {
            TIMER_KEEP_ALIVE => {
                let now = self.shared.now();
                let mut control = self.shared.lock();
                let expired = control.target.tick(now);
                for &cntlid in &expired {
                    tracing::warn!(cntlid, "keep alive timeout: tearing the controller down");
                    control.target.teardown(cntlid);
                }
                let routed = control.routed_async();
                drop(control);
                self.route_async(shard, routed);
                for cntlid in expired {
                    self.broadcast_close(shard, cntlid);
                }
                if !self.shutting_down {
                    let _ = shard.add_timer(KEEP_ALIVE_CHECK, TIMER_KEEP_ALIVE);
                }
            }
            TIMER_STATS => {
                self.metrics
                    .publish_shard(self.me.0, shard.stats(), self.conns.len());
                if !self.shutting_down {
                    let _ = shard.add_timer(STATS_PERIOD, TIMER_STATS);
                }
            }
            TIMER_REPL_TICK => {
                if let Some(repl) = self.repl.as_mut() {
                    repl.tick(shard);
                    self.repl_completions(shard);
                }
                if !self.repl_closed {
                    let _ = shard.add_timer(REPL_TICK, TIMER_REPL_TICK);
                }
            }
            TIMER_SHUTDOWN => {
                self.fail_repl_ops(shard);
                let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
                for key in keys {
                    self.abort(shard, key, "shutdown grace period over");
                }
            }
            _ => {}
        }
    }

    fn poll(&mut self, shard: &mut Shard<Message>) -> bool {
        let mut worked = false;
        // RDMA replication links: drain their completion queues here, in
        // the reactor's loop (no threads, no blocking).
        #[cfg(feature = "rdma")]
        if let Some(repl) = self.repl.as_mut() {
            if repl.poll_rdma(shard) {
                worked = true;
                self.repl_completions(shard);
            }
        }
        if let Some(repl) = self.repl.as_mut() {
            // Local I/O that waited for buffers (freed by this loop's
            // completions), then the replication frames of this loop, one
            // send per link (the ring submits right after this).
            let started = repl.start_waiting_io(shard);
            repl.flush_sends(shard);
            if started {
                worked = true;
                self.repl_completions(shard);
            }
            // A promotion or a deposition of this loop reaches the target
            // (and the hosts) before the next command is parsed.
            self.publish_ana(shard);
        }
        while let Some((dst, msg)) = self.outbox.pop_front() {
            if let Err(msg) = shard.send(dst, msg) {
                if !self.shutting_down {
                    self.outbox.push_front((dst, msg));
                }
                worked = true;
                break;
            }
            worked = true;
        }
        // What hosts are owed goes out before new commands take buffers.
        if !self.tx_starved.is_empty() && shard.pool().available() > 0 {
            for key in std::mem::take(&mut self.tx_starved) {
                self.flush(shard, key);
            }
            worked = true;
        }
        if self.grant_buffers(shard) {
            worked = true;
        }
        if !self.stalled.is_empty() && self.need_buffers.len() < MAX_WAITING_COMMANDS {
            let stalled = std::mem::take(&mut self.stalled);
            for key in stalled {
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.rx_paused = false;
                    self.process_rx(shard, key);
                }
            }
            worked = true;
        }
        if self.shutting_down
            && self.conns.is_empty()
            && self.outbox.is_empty()
            && self.repl_requests.is_empty()
            && !self.accept_armed.iter().any(|&armed| armed)
        {
            if let Some(repl) = self.repl.as_mut() {
                if !self.repl_closed {
                    self.repl_closed = true;
                    repl.close_all(shard);
                    worked = true;
                }
                if !repl.is_idle() {
                    return worked;
                }
            }
            shard.stop();
        }
        worked
    }
}

/// Bytes an I/O command moves through its data buffers: what it reads, or
/// the host data it brings.
fn transfer_len(operation: &IoOperation) -> u64 {
    match operation {
        IoOperation::Read { range, .. } => range.len,
        _ => host_data_of(operation).map_or(0, |data| data.len()),
    }
}

/// Where an I/O command's host data comes from (in the capsule or through
/// R2T), if it has any.
fn host_data_of(operation: &IoOperation) -> Option<DataSource> {
    match operation {
        IoOperation::Write { data, .. } | IoOperation::Compare { data, .. } => Some(*data),
        IoOperation::DatasetManagement(request) => Some(request.data),
        _ => None,
    }
}
