//! One accepted NVMe/TCP connection on a shard: its socket, PDU decoder,
//! receive buffer, send queue, queue session and commands in flight.
//!
//! Sending batches (see [`SendQueue`]): a burst of completions costs one
//! syscall-free submission, not one each.

use std::net::{SocketAddr, TcpStream};

use keel_engine::{Buf, DeviceId, NetOp, Shard};
use slab::Slab;

use crate::controller::QueueSession;
use crate::daemon::command::{Command, MAX_SEGMENTS};
use crate::daemon::send_queue::{Kick, Part, SendQueue};
use crate::daemon::tags::{Tag, TagKind};
use crate::tcp::{digest_bytes, PduDecoder, PduHeader, TxParams};

/// Largest PDU header prefix: 72-byte header, digest, padding to a 128-byte
/// alignment (PDA 31).
const MAX_PREFIX: usize = 256;

/// Pool buffers a connection's send queue may hold (8 MiB): a host that
/// stops reading its socket pins no more of the shard's pool than this;
/// what it is owed beyond waits on the heap (copied twice). A deep queue of
/// large reads fits: with 2 MiB (16 buffers), 128 KiB reads at QD 32 on
/// tmpfs lost about a fifth of their IOPS to those copies.
const SEND_BUFFERS: usize = 4 * MAX_SEGMENTS;

/// Why a connection is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closing {
    /// Open.
    No,
    /// Finish commands already received and send their completions, take
    /// no new ones (daemon shutdown, I/O queue Disconnect, host hung up).
    Drain,
    /// Drop everything: protocol error, socket error, controller gone.
    Abort,
}

pub(crate) struct Connection {
    pub socket: TcpStream,
    pub peer: Option<SocketAddr>,
    pub decoder: PduDecoder,
    pub tx_params: TxParams,
    pub session: QueueSession,
    /// The connection's namespaces: NSID, device on this shard, metrics
    /// index; set at Connect.
    pub namespaces: Vec<(u32, DeviceId, usize)>,
    /// Receive buffer (None while a receive holds it) and its live bytes.
    pub rx: Option<Buf>,
    pub rx_start: usize,
    pub rx_end: usize,
    /// Waiting for pool buffers before taking the next command.
    pub rx_paused: bool,
    /// PDUs on their way to the host.
    pub tx: SendQueue,
    pub commands: Slab<Command>,
    /// Ring operations in flight for this connection.
    pub ops: usize,
    pub closing: Closing,
    /// The socket's read side is shut (no more PDUs will be taken).
    pub read_shut: bool,
}

impl Connection {
    pub fn new(socket: TcpStream, decoder: PduDecoder) -> Connection {
        let peer = socket.peer_addr().ok();
        Connection {
            socket,
            peer,
            decoder,
            tx_params: TxParams::PLAIN,
            session: QueueSession::new(),
            namespaces: Vec::new(),
            rx: None,
            rx_start: 0,
            rx_end: 0,
            rx_paused: false,
            tx: SendQueue::new(SEND_BUFFERS),
            commands: Slab::new(),
            ops: 0,
            closing: Closing::No,
            read_shut: false,
        }
    }

    pub fn device_of(&self, nsid: u32) -> Option<DeviceId> {
        self.namespaces
            .iter()
            .find(|(id, _, _)| *id == nsid)
            .map(|&(_, dev, _)| dev)
    }

    pub fn volume_of(&self, nsid: u32) -> Option<usize> {
        self.namespaces
            .iter()
            .find(|(id, _, _)| *id == nsid)
            .map(|&(_, _, index)| index)
    }

    /// Appends one PDU carrying `data` (empty for none) to the send queue.
    /// Fails only when the PDU cannot be encoded, which is fatal for the
    /// connection; a dry pool only delays it (see [`SendQueue`]).
    pub fn queue_pdu<M>(
        &mut self,
        shard: &mut Shard<M>,
        header: &PduHeader,
        tx: TxParams,
        data: Part<'_>,
    ) -> Result<(), String> {
        if self.closing == Closing::Abort {
            return Ok(());
        }
        let mut prefix = [0u8; MAX_PREFIX];
        let layout = header
            .encode_header(&tx, data.len(), &mut prefix)
            .map_err(|e| format!("encoding {:?}: {e}", header.pdu_type()))?;
        let digest = layout.data_digest.then(|| match &data {
            Part::Bytes(bytes) => digest_bytes(bytes),
            Part::Slot(src, range) => digest_bytes(&shard.buf(src)[range.clone()]),
        });
        let digest = digest.as_ref().map_or(&[][..], |d| d.as_slice());
        let parts = [
            Part::Bytes(&prefix[..layout.data_offset]),
            data,
            Part::Bytes(digest),
        ];
        self.tx.append(shard, &parts);
        Ok(())
    }

    /// Starts sending what is queued if nothing is in flight.
    pub fn flush<M>(&mut self, shard: &mut Shard<M>, key: usize) -> Result<Kick, String> {
        if self.closing == Closing::Abort {
            return Ok(Kick::Idle);
        }
        let tag = Tag::new(TagKind::Send, key, 0, 0).raw();
        let kick = self.tx.kick(shard, &self.socket, tag)?;
        if kick == Kick::Started {
            self.ops += 1;
        }
        Ok(kick)
    }

    /// Arms a receive into the free end of the receive buffer.
    pub fn arm_recv<M>(&mut self, shard: &mut Shard<M>, key: usize) -> Result<(), String> {
        if self.read_shut || self.rx_paused || self.closing != Closing::No {
            return Ok(());
        }
        let Some(buf) = self.rx.take() else {
            return Ok(()); // already armed
        };
        let tag = Tag::new(TagKind::Recv, key, 0, 0).raw();
        let offset = self.rx_end as u32;
        match shard.submit_net(&self.socket, NetOp::Recv { offset }, Some(buf), tag) {
            Ok(()) => {
                self.ops += 1;
                Ok(())
            }
            Err((error, buf)) => {
                self.rx = buf;
                Err(format!("recv: {error}"))
            }
        }
    }

    /// Moves unconsumed bytes to the front so the next PDU fits.
    pub fn compact_rx<M>(&mut self, shard: &mut Shard<M>) {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
            return;
        }
        if self.rx_start == 0 {
            return;
        }
        if let Some(buf) = &self.rx {
            shard
                .pool_mut()
                .copy(buf, self.rx_start..self.rx_end, buf, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
    }

    /// Whether everything owed to the host has been sent and nothing of
    /// this connection is left with the ring.
    pub fn is_quiescent(&self) -> bool {
        self.ops == 0
            && (self.closing == Closing::Abort || (self.commands.is_empty() && self.tx.is_idle()))
    }
}
