//! One accepted NVMe/TCP connection on a shard: its socket, PDU decoder,
//! receive buffer, send queue, queue session and commands in flight.
//!
//! Sending batches: PDUs are appended to the back buffer of a queue of
//! pool buffers; one send is in flight at a time, and whatever piles up
//! behind it goes out in the next send, so a burst of completions costs
//! one syscall-free submission, not one each.

use std::collections::VecDeque;
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;

use keel_engine::{Buf, DeviceId, NetOp, Shard};
use slab::Slab;

use crate::controller::QueueSession;
use crate::daemon::command::Command;
use crate::daemon::tags::{Tag, TagKind};
use crate::tcp::{digest_bytes, PduDecoder, PduHeader, TxParams};

/// Largest PDU header prefix: 72-byte header, digest, padding to a 128-byte
/// alignment (PDA 31).
const MAX_PREFIX: usize = 256;

/// Data a PDU carries.
pub(crate) enum Payload<'a> {
    None,
    Heap(&'a [u8]),
    Slot(&'a Buf, Range<usize>),
}

impl Payload<'_> {
    fn len(&self) -> usize {
        match self {
            Payload::None => 0,
            Payload::Heap(bytes) => bytes.len(),
            Payload::Slot(_, range) => range.len(),
        }
    }
}

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
    /// Filled send buffers with their lengths; the front one is next.
    pub tx_queue: VecDeque<(Buf, usize)>,
    /// A send is in flight (its buffer is with the ring).
    pub sending: bool,
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
            tx_queue: VecDeque::new(),
            sending: false,
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

    /// Appends one PDU to the send queue. Fails only when the pool has no
    /// buffer left or the PDU cannot be encoded, both fatal for the
    /// connection.
    pub fn queue_pdu<M>(
        &mut self,
        shard: &mut Shard<M>,
        header: &PduHeader,
        tx: TxParams,
        payload: Payload<'_>,
    ) -> Result<(), String> {
        if self.closing == Closing::Abort {
            return Ok(());
        }
        let data_len = payload.len();
        let mut prefix = [0u8; MAX_PREFIX];
        let layout = header
            .encode_header(&tx, data_len, &mut prefix)
            .map_err(|e| format!("encoding {:?}: {e}", header.pdu_type()))?;
        let slot_size = shard.pool().slot_size();
        if layout.pdu_len > slot_size {
            return Err(format!("PDU of {} bytes exceeds a buffer", layout.pdu_len));
        }
        let room = self
            .tx_queue
            .back()
            .is_some_and(|(_, filled)| filled + layout.pdu_len <= slot_size);
        if !room {
            let buf = shard
                .alloc(slot_size)
                .ok_or_else(|| "buffer pool exhausted".to_string())?;
            self.tx_queue.push_back((buf, 0));
        }
        let Some((buf, filled)) = self.tx_queue.back_mut() else {
            return Err("send queue empty after push".into());
        };
        let at = *filled;
        let prefix_len = layout.data_offset;
        shard.buf_mut(buf)[at..at + prefix_len].copy_from_slice(&prefix[..prefix_len]);
        let data_at = at + prefix_len;
        let digest = match payload {
            Payload::None => None,
            Payload::Heap(bytes) => {
                shard.buf_mut(buf)[data_at..data_at + bytes.len()].copy_from_slice(bytes);
                layout.data_digest.then(|| digest_bytes(bytes))
            }
            Payload::Slot(src, range) => {
                let digest = layout
                    .data_digest
                    .then(|| digest_bytes(&shard.buf(src)[range.clone()]));
                shard.pool_mut().copy(src, range, buf, data_at);
                digest
            }
        };
        if let Some(digest) = digest {
            let end = data_at + data_len;
            shard.buf_mut(buf)[end..end + digest.len()].copy_from_slice(&digest);
        }
        *filled += layout.pdu_len;
        Ok(())
    }

    /// Starts sending the front of the queue if nothing is in flight.
    pub fn flush<M>(&mut self, shard: &mut Shard<M>, key: usize) -> Result<(), String> {
        if self.sending || self.closing == Closing::Abort {
            return Ok(());
        }
        let Some((mut buf, filled)) = self.tx_queue.pop_front() else {
            return Ok(());
        };
        if filled == 0 {
            shard.free(buf);
            return Ok(());
        }
        if let Err(e) = shard.pool().set_len(&mut buf, filled) {
            shard.free(buf);
            return Err(e.to_string());
        }
        let tag = Tag::new(TagKind::Send, key, 0, 0).raw();
        match shard.submit_net(&self.socket, NetOp::Send { offset: 0 }, Some(buf), tag) {
            Ok(()) => {
                self.sending = true;
                self.ops += 1;
                Ok(())
            }
            Err((error, buf)) => {
                if let Some(buf) = buf {
                    shard.free(buf);
                }
                Err(format!("send: {error}"))
            }
        }
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
            && (self.closing == Closing::Abort
                || (self.commands.is_empty() && self.tx_queue.is_empty() && !self.sending))
    }
}

/// What became of a completed send of one pool buffer.
pub(crate) enum SendProgress {
    /// Sent short: the rest of the buffer is in flight again (one more
    /// ring operation of the connection).
    Resent,
    /// The whole buffer is out and back in the pool: send what is next.
    Finished,
    /// The connection is broken; the buffer is back in the pool.
    Failed(String),
}

/// Carries a send completion forward, for NVMe/TCP connections and
/// replication links alike: the unsent rest of `buf` goes out again
/// (unless `resend` is false, when the link is closing), a finished or
/// failed buffer goes back to the pool.
pub(crate) fn continue_send<M>(
    shard: &mut Shard<M>,
    socket: &TcpStream,
    done: keel_engine::Completion,
    resend: bool,
    tag: u64,
) -> SendProgress {
    let Some(buf) = done.buf else {
        return SendProgress::Failed("send completed without its buffer".into());
    };
    let offset = match done.op {
        keel_engine::Op::Net(NetOp::Send { offset }) => offset as usize,
        _ => 0,
    };
    match done.result {
        Ok(sent) if sent > 0 && offset + (sent as usize) < buf.len() && resend => {
            let next = NetOp::Send {
                offset: (offset + sent as usize) as u32,
            };
            match shard.submit_net(socket, next, Some(buf), tag) {
                Ok(()) => SendProgress::Resent,
                Err((error, buf)) => {
                    if let Some(buf) = buf {
                        shard.free(buf);
                    }
                    SendProgress::Failed(format!("send: {error}"))
                }
            }
        }
        Ok(sent) if sent > 0 => {
            shard.free(buf);
            SendProgress::Finished
        }
        Ok(_) => {
            shard.free(buf);
            SendProgress::Failed("send made no progress".into())
        }
        Err(error) => {
            shard.free(buf);
            SendProgress::Failed(format!("send failed: {error}"))
        }
    }
}
