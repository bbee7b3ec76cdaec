//! [`RdmaLink`]: one connected replication link over an RC queue pair, and
//! [`RdmaListener`], which accepts them.

use std::time::{Duration, Instant};

use super::cm::{CmEvent, CmId, CmListener};
use super::credit::Credits;
use super::error::RdmaError;
use super::message::{MessageHeader, HEADER_LEN};
use super::params::{ConnParams, RdmaConfig};
use super::verbs::{Buffers, Completion, Cq, Pd, POLL_BATCH};

/// Least time between two looks at the connection manager's events (a
/// syscall each) while the link is idle: a peer that disconnects or dies
/// leaves a user-space QP as it is, so an idle link learns it only there.
const EVENT_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// Counters of one link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RdmaStats {
    /// SENDs posted carrying stream data.
    pub messages_sent: u64,
    /// Stream bytes sent (frames, without message headers).
    pub bytes_sent: u64,
    /// SENDs posted carrying only credits.
    pub credit_messages_sent: u64,
    /// Messages received (data or credits).
    pub messages_received: u64,
    /// Stream bytes received.
    pub bytes_received: u64,
    /// `send` calls that stopped early for want of credits.
    pub credit_stalls: u64,
}

/// What one [`RdmaLink::poll`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Stream bytes appended to the caller's buffer.
    pub received: usize,
    /// Work completions handled (sends and receives).
    pub completions: usize,
}

/// A connected RDMA replication link: a reliable, ordered byte stream (the
/// wire frames of `crate::link`) carried in SENDs into the peer's posted
/// receive buffers, with credit flow control.
///
/// Nothing here blocks after setup: [`RdmaLink::send`] copies what the
/// credits and free buffers allow and returns; [`RdmaLink::poll`] drains
/// the completion queue. Call `poll` from the owning reactor's loop.
pub struct RdmaLink {
    // Field order is drop order: the id (QP) before the CQ, the buffers
    // (MR) and the PD it uses.
    id: CmId,
    cq: Cq,
    buffers: Buffers,
    /// Kept alive for the QP and the MR; dropped last.
    _pd: Pd,
    /// Slots `0..recv_depth` are receives, the rest sends.
    recv_depth: usize,
    send_depth: usize,
    free_send: Vec<usize>,
    credits: Credits,
    /// Largest stream chunk one SEND may carry to the peer.
    max_payload: usize,
    stats: RdmaStats,
    last_event_check: Instant,
    closed: bool,
}

/// Sets up the verbs objects on `id`, posts every receive buffer, and
/// returns the link before the connection is made.
fn prepare(mut id: CmId, config: &RdmaConfig) -> Result<RdmaLink, RdmaError> {
    config.validate()?;
    let recv = u32::from(config.recv_depth);
    let send = u32::from(config.send_depth);
    let pd = Pd::alloc(id.device()?)?;
    let cq = Cq::create(id.device()?, recv + send)?;
    id.create_qp(&pd, &cq, send, recv)?;
    let slot_size =
        usize::try_from(config.slot_size).map_err(|_| RdmaError::Config("slot size"))?;
    let recv_depth = usize::from(config.recv_depth);
    let send_depth = usize::from(config.send_depth);
    let mut buffers = Buffers::register(&pd, recv_depth + send_depth, slot_size)?;
    let qp = id.qp().ok_or(RdmaError::Config("no queue pair"))?;
    for slot in 0..recv_depth {
        buffers.post_recv(qp, slot)?;
    }
    Ok(RdmaLink {
        id,
        cq,
        buffers,
        _pd: pd,
        recv_depth,
        send_depth,
        free_send: (recv_depth..recv_depth + send_depth).rev().collect(),
        credits: Credits::new(0, config.recv_depth),
        max_payload: 0,
        stats: RdmaStats::default(),
        last_event_check: Instant::now(),
        closed: false,
    })
}

impl RdmaLink {
    /// Connects to the [`RdmaListener`] at `address` (`ip:port`). Blocks
    /// (address and route resolution, connection; at most the config's
    /// `setup_timeout`): run it on a control thread, never on a reactor.
    pub fn connect(address: &str, config: &RdmaConfig) -> Result<Self, RdmaError> {
        config.validate()?;
        let deadline = Instant::now() + config.setup_timeout;
        let id = CmId::resolve(address, deadline)?;
        let mut link = prepare(id, config)?;
        let reply = link.id.connect(&config.params().encode(), deadline)?;
        let peer = ConnParams::decode(&reply)?;
        link.established(peer, config);
        Ok(link)
    }

    fn established(&mut self, peer: ConnParams, config: &RdmaConfig) {
        self.credits = Credits::new(peer.recv_depth, config.recv_depth);
        self.max_payload = peer.max_payload(config.slot_size);
    }

    /// Counters so far.
    pub fn stats(&self) -> RdmaStats {
        self.stats
    }

    /// Credits held now (SENDs the peer has buffers for).
    pub fn credits(&self) -> u16 {
        self.credits.available()
    }

    /// Whether every SEND posted has completed.
    pub fn sends_idle(&self) -> bool {
        self.free_send.len() == self.send_depth
    }

    /// A descriptor that becomes readable when a completion arrives after
    /// [`RdmaLink::arm_notification`] (a completion channel's): a reactor
    /// waits for it in its ring instead of polling while idle.
    pub fn notify_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.cq.notify_fd()
    }

    /// Consumes the notifications waiting on [`RdmaLink::notify_fd`];
    /// true if there were any (the arming they answered is used up).
    pub fn take_notifications(&mut self) -> Result<bool, RdmaError> {
        if self.closed {
            return Err(RdmaError::Closed);
        }
        match self.cq.take_events() {
            Ok(n) => Ok(n > 0),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Asks for one notification on [`RdmaLink::notify_fd`] at the next
    /// completion. Completions that arrived before this call produce none:
    /// call [`RdmaLink::poll`] after it.
    pub fn arm_notification(&mut self) -> Result<(), RdmaError> {
        if self.closed {
            return Err(RdmaError::Closed);
        }
        match self.cq.arm() {
            Ok(()) => Ok(()),
            Err(error) => Err(self.fail(error)),
        }
    }

    /// Whether the link is closed (by an error or [`RdmaLink::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Sends as much of `data` (the next bytes of the replication stream)
    /// as the peer's credits and our free send buffers allow, one SEND per
    /// buffer; returns how many bytes were taken (possibly 0: call
    /// [`RdmaLink::poll`] to get credits and buffers back, then retry with
    /// the rest). Never blocks.
    pub fn send(&mut self, data: &[u8]) -> Result<usize, RdmaError> {
        if self.closed {
            return Err(RdmaError::Closed);
        }
        let mut taken = 0;
        while let Some(rest) = data.get(taken..).filter(|rest| !rest.is_empty()) {
            if !self.credits.can_send_data() {
                self.stats.credit_stalls += 1;
                break;
            }
            let Some(slot) = self.free_send.pop() else {
                break;
            };
            let chunk = rest.get(..self.max_payload.min(rest.len())).unwrap_or(rest);
            let Some(carried) = self.credits.take_for_data() else {
                self.free_send.push(slot);
                break;
            };
            if let Err(error) = self.post(slot, carried, chunk) {
                self.credits.untake(carried);
                self.free_send.push(slot);
                return Err(self.fail(error));
            }
            taken += chunk.len();
            self.stats.messages_sent += 1;
            self.stats.bytes_sent += chunk.len() as u64;
        }
        Ok(taken)
    }

    /// Writes a message (header + `data`) into send slot `slot` and posts it.
    fn post(&mut self, slot: usize, credits: u16, data: &[u8]) -> Result<(), RdmaError> {
        let header = MessageHeader {
            credits,
            len: u32::try_from(data.len()).map_err(|_| RdmaError::Config("chunk too large"))?,
        };
        let len = HEADER_LEN + data.len();
        let buffer = self
            .buffers
            .slot_mut(slot)
            .ok_or(RdmaError::Config("send slot busy"))?;
        let (head, body) = buffer
            .split_at_mut_checked(HEADER_LEN)
            .ok_or(RdmaError::Config("slot smaller than a header"))?;
        head.copy_from_slice(&header.encode());
        body.get_mut(..data.len())
            .ok_or(RdmaError::Config("chunk larger than a slot"))?
            .copy_from_slice(data);
        let qp = self.id.qp().ok_or(RdmaError::Closed)?;
        self.buffers.post_send(qp, slot, len)
    }

    /// Drains the completion queue without blocking: appends the stream
    /// bytes received to `received`, reposts their buffers, frees completed
    /// send buffers, takes the credits the peer returned and sends a
    /// credit-only message when one is due. Any error means the link is
    /// down (a failed work completion, a disconnect, a protocol violation);
    /// the link is then closed and every later call fails with `Closed`.
    pub fn poll(&mut self, received: &mut Vec<u8>) -> Result<Progress, RdmaError> {
        if self.closed {
            return Err(RdmaError::Closed);
        }
        match self.poll_inner(received) {
            Ok(progress) => Ok(progress),
            Err(error) => Err(self.fail(error)),
        }
    }

    fn poll_inner(&mut self, received: &mut Vec<u8>) -> Result<Progress, RdmaError> {
        let mut progress = Progress::default();
        let mut batch = [Completion::default(); POLL_BATCH];
        loop {
            let n = self.cq.poll(&mut batch)?;
            for completion in batch.iter().take(n) {
                progress.received += self.complete(completion, received)?;
            }
            progress.completions += n;
            if n < POLL_BATCH {
                break;
            }
        }
        if let Some(carried) = self.credits.take_for_credit_message() {
            match self.free_send.pop() {
                Some(slot) => match self.post(slot, carried, &[]) {
                    Ok(()) => self.stats.credit_messages_sent += 1,
                    Err(error) => {
                        self.free_send.push(slot);
                        return Err(error);
                    }
                },
                // Every send buffer is in flight: their completions will
                // come, and the credits go with the next message.
                None => self.credits.untake(carried),
            }
        }
        if progress.completions == 0 && self.last_event_check.elapsed() >= EVENT_CHECK_INTERVAL {
            self.last_event_check = Instant::now();
            match self.id.poll_event()? {
                Some(CmEvent::Disconnected) => {
                    return Err(RdmaError::Disconnected("peer disconnected"))
                }
                Some(CmEvent::DeviceRemoval) => {
                    return Err(RdmaError::Disconnected("RDMA device removed"))
                }
                Some(CmEvent::Other(event)) => {
                    tracing::debug!(event, "rdma_cm event on an established link");
                }
                None => {}
            }
        }
        Ok(progress)
    }

    /// Handles one work completion; returns the stream bytes it delivered.
    fn complete(
        &mut self,
        completion: &Completion,
        received: &mut Vec<u8>,
    ) -> Result<usize, RdmaError> {
        let slot = usize::try_from(completion.wr_id).unwrap_or(usize::MAX);
        let is_recv = slot < self.recv_depth;
        if !completion.ok() {
            return Err(RdmaError::WorkCompletion {
                kind: if is_recv { "receive" } else { "send" },
                status: completion.status_str(),
                code: completion.status,
                vendor_err: completion.vendor_err,
            });
        }
        if !self.buffers.completed(slot) {
            return Err(RdmaError::Protocol("completion for a buffer never posted"));
        }
        if !is_recv {
            self.free_send.push(slot);
            return Ok(0);
        }
        let len = usize::try_from(completion.byte_len).unwrap_or(usize::MAX);
        let message = self
            .buffers
            .slot(slot, len)
            .ok_or(RdmaError::Protocol("message longer than a buffer"))?;
        let (header, data) = MessageHeader::decode(message)?;
        received.extend_from_slice(data);
        let delivered = data.len();
        self.credits.granted(header.credits)?;
        let qp = self.id.qp().ok_or(RdmaError::Closed)?;
        self.buffers.post_recv(qp, slot)?;
        self.credits.reposted();
        self.stats.messages_received += 1;
        self.stats.bytes_received += delivered as u64;
        Ok(delivered)
    }

    /// Marks the link closed after `error` and starts the disconnect.
    fn fail(&mut self, error: RdmaError) -> RdmaError {
        if error.closes_link() {
            self.close();
        }
        error
    }

    /// Closes the link: disconnects (the peer sees a DISCONNECTED event;
    /// our posted work is flushed). Resources go on drop. Idempotent.
    pub fn close(&mut self) {
        self.closed = true;
        self.id.disconnect();
    }
}

/// Accepts RDMA replication links on one address.
pub struct RdmaListener {
    listener: CmListener,
    config: RdmaConfig,
}

impl RdmaListener {
    /// Listens on `address` (`ip:port`; the IP of a netdev that has an RDMA
    /// device, e.g. rxe0's).
    pub fn bind(address: &str, config: RdmaConfig) -> Result<Self, RdmaError> {
        config.validate()?;
        Ok(RdmaListener {
            listener: CmListener::bind(address, 16)?,
            config,
        })
    }

    /// Waits for the next link and accepts it (polling every 10 ms).
    /// Blocks: run it on a control thread.
    pub fn accept(&self) -> Result<RdmaLink, RdmaError> {
        loop {
            if let Some(link) = self.try_accept()? {
                return Ok(link);
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Accepts the next link if a request waits (`None` at once if not).
    /// Accepting waits (up to the setup timeout) until the connection is
    /// established, so this too belongs on a control thread. A requester that is not a Keel RDMA
    /// link is refused and the error returned (keep accepting).
    pub fn try_accept(&self) -> Result<Option<RdmaLink>, RdmaError> {
        let Some((mut id, private)) = self.listener.get_request()? else {
            return Ok(None);
        };
        let peer = match ConnParams::decode(&private) {
            Ok(peer) => peer,
            Err(error) => {
                id.reject();
                return Err(error);
            }
        };
        let deadline = Instant::now() + self.config.setup_timeout;
        let mut link = prepare(id, &self.config)?;
        link.id.accept(&self.config.params().encode(), deadline)?;
        link.established(peer, &self.config);
        Ok(Some(link))
    }
}
