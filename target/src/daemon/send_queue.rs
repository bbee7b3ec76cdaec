//! The bytes a socket owes its peer, on their way out through pool
//! buffers, for NVMe/TCP connections and replication links alike.
//!
//! One send is in flight at a time; whatever piles up behind it goes out
//! in the next one, so a burst of PDUs or frames costs one submission.
//! The queue is a byte stream: a PDU or frame may span pool buffers.
//!
//! Running out of pool buffers delays a socket, never breaks it: when the
//! pool is dry, or the queue already holds as many pool buffers as it may,
//! the bytes wait on the heap (behind everything queued before them) and
//! move into a pool buffer when one is free. The cap keeps one slow peer
//! (a host that stops reading, a frozen replica) from pinning the shard's
//! pool; the heap it uses instead is bounded by what the peer may have
//! outstanding (a queue's commands, a replica's in-flight bound).

use std::collections::VecDeque;
use std::net::TcpStream;
use std::ops::Range;

use keel_engine::{Buf, Completion, NetOp, Op, Shard};

/// Bytes to append: from the heap or from a pool buffer (read data).
pub(crate) enum Part<'a> {
    Bytes(&'a [u8]),
    Slot(&'a Buf, Range<usize>),
}

impl Part<'_> {
    pub fn len(&self) -> usize {
        match self {
            Part::Bytes(bytes) => bytes.len(),
            Part::Slot(_, range) => range.len(),
        }
    }
}

/// What [`SendQueue::kick`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// A send was already in flight.
    Busy,
    /// Nothing is queued.
    Idle,
    /// Bytes wait but the pool has no buffer for them: kick again once
    /// buffers are freed.
    Starved,
    /// A send was submitted (one more ring operation of the socket).
    Started,
}

/// What became of a completed send of one pool buffer.
pub(crate) enum SendProgress {
    /// Sent short: the rest of the buffer is in flight again (one more
    /// ring operation of the socket).
    Resent,
    /// The whole buffer is out and back in the pool: kick the queue.
    Finished,
    /// The socket is broken; the buffer is back in the pool.
    Failed(String),
}

pub(crate) struct SendQueue {
    /// Pool buffers with the bytes filled in each; the front goes next,
    /// the back takes appends.
    ready: VecDeque<(Buf, usize)>,
    /// Bytes that follow `ready` on the stream, from `overflow_at` on.
    overflow: Vec<u8>,
    overflow_at: usize,
    /// Pool buffers `ready` may hold.
    max_buffers: usize,
    /// A send is in flight (its buffer is with the ring).
    sending: bool,
}

impl SendQueue {
    pub fn new(max_buffers: usize) -> SendQueue {
        assert!(
            max_buffers > 0,
            "a send queue needs a pool buffer to send from"
        );
        SendQueue {
            ready: VecDeque::new(),
            overflow: Vec::new(),
            overflow_at: 0,
            max_buffers,
            sending: false,
        }
    }

    /// Nothing queued and nothing in flight.
    pub fn is_idle(&self) -> bool {
        !self.sending && self.ready.is_empty() && !self.overflowing()
    }

    fn overflowing(&self) -> bool {
        self.overflow_at < self.overflow.len()
    }

    /// Appends `parts`, in order, to the stream.
    pub fn append<M>(&mut self, shard: &mut Shard<M>, parts: &[Part<'_>]) {
        let slot = shard.pool().slot_size();
        for part in parts {
            let mut done = 0;
            let len = part.len();
            while done < len && !self.overflowing() {
                let room = self.ready.back().map_or(0, |(_, filled)| slot - filled);
                if room == 0 {
                    if self.ready.len() >= self.max_buffers {
                        break;
                    }
                    match shard.alloc(slot) {
                        Some(buf) => self.ready.push_back((buf, 0)),
                        None => break,
                    }
                    continue;
                }
                let take = room.min(len - done);
                let Some((buf, filled)) = self.ready.back_mut() else {
                    break;
                };
                match part {
                    Part::Bytes(bytes) => shard.buf_mut(buf)[*filled..*filled + take]
                        .copy_from_slice(&bytes[done..done + take]),
                    Part::Slot(src, range) => {
                        let from = range.start + done;
                        shard.pool_mut().copy(src, from..from + take, buf, *filled);
                    }
                }
                *filled += take;
                done += take;
            }
            if done < len {
                match part {
                    Part::Bytes(bytes) => self.overflow.extend_from_slice(&bytes[done..]),
                    Part::Slot(src, range) => self
                        .overflow
                        .extend_from_slice(&shard.buf(src)[range.start + done..range.end]),
                }
            }
        }
    }

    /// Submits the next buffer's send unless one is in flight.
    pub fn kick<M>(
        &mut self,
        shard: &mut Shard<M>,
        socket: &TcpStream,
        tag: u64,
    ) -> Result<Kick, String> {
        if self.sending {
            return Ok(Kick::Busy);
        }
        let buf = match self.next_buffer(shard) {
            Ok(Some(buf)) => buf,
            Ok(None) if self.overflowing() => return Ok(Kick::Starved),
            Ok(None) => return Ok(Kick::Idle),
            Err(error) => return Err(error),
        };
        match shard.submit_net(socket, NetOp::Send { offset: 0 }, Some(buf), tag) {
            Ok(()) => {
                self.sending = true;
                Ok(Kick::Started)
            }
            Err((error, buf)) => {
                if let Some(buf) = buf {
                    shard.free(buf);
                }
                Err(format!("send: {error}"))
            }
        }
    }

    /// The front pool buffer, its length set to the bytes filled; else a
    /// buffer filled from the overflow, if the pool has one.
    fn next_buffer<M>(&mut self, shard: &mut Shard<M>) -> Result<Option<Buf>, String> {
        while let Some((mut buf, filled)) = self.ready.pop_front() {
            if filled == 0 {
                shard.free(buf);
                continue;
            }
            if let Err(error) = shard.pool().set_len(&mut buf, filled) {
                shard.free(buf);
                return Err(error.to_string());
            }
            return Ok(Some(buf));
        }
        if !self.overflowing() {
            return Ok(None);
        }
        // Asked again every loop while it waits: ask only when the pool
        // has a buffer (an empty pool counts each refusal).
        if shard.pool().available() == 0 {
            return Ok(None);
        }
        let len = (self.overflow.len() - self.overflow_at).min(shard.pool().slot_size());
        let Some(buf) = shard.alloc(len) else {
            return Ok(None);
        };
        shard.buf_mut(&buf)[..len]
            .copy_from_slice(&self.overflow[self.overflow_at..self.overflow_at + len]);
        self.overflow_at += len;
        if !self.overflowing() {
            self.overflow.clear();
            self.overflow_at = 0;
        }
        Ok(Some(buf))
    }

    /// Carries the completion of this queue's send forward: the unsent
    /// rest of the buffer goes out again (unless `resend` is false, when
    /// the socket is closing), a finished or failed buffer goes back to
    /// the pool.
    pub fn on_sent<M>(
        &mut self,
        shard: &mut Shard<M>,
        socket: &TcpStream,
        done: Completion,
        resend: bool,
        tag: u64,
    ) -> SendProgress {
        self.sending = false;
        let Some(buf) = done.buf else {
            return SendProgress::Failed("send completed without its buffer".into());
        };
        let offset = match done.op {
            Op::Net(NetOp::Send { offset }) => offset as usize,
            _ => 0,
        };
        match done.result {
            Ok(sent) if sent > 0 && offset + (sent as usize) < buf.len() && resend => {
                let next = NetOp::Send {
                    offset: (offset + sent as usize) as u32,
                };
                match shard.submit_net(socket, next, Some(buf), tag) {
                    Ok(()) => {
                        self.sending = true;
                        SendProgress::Resent
                    }
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

    /// Drops everything queued (the socket is going away); a send in
    /// flight keeps its buffer until it completes.
    pub fn release<M>(&mut self, shard: &mut Shard<M>) {
        for (buf, _) in self.ready.drain(..) {
            shard.free(buf);
        }
        self.overflow = Vec::new();
        self.overflow_at = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Duration;

    use keel_engine::{Engine, EngineConfig, Handler, PoolConfig};

    use super::*;

    const SLOT: usize = 4096;
    const SLOTS: usize = 8;
    const MAX_BUFFERS: usize = 2;

    /// Sends a script of appends through a queue on a real socket: the
    /// first ones while the pool is dry, the rest while sends are in flight.
    struct Script {
        socket: TcpStream,
        queue: SendQueue,
        source: Option<Buf>,
        appends: VecDeque<Vec<u8>>,
        started: bool,
        report: mpsc::Sender<String>,
    }

    impl Script {
        fn check(&self, ok: bool, what: &str) {
            if !ok {
                let _ = self.report.send(what.to_string());
            }
        }

        fn kick(&mut self, shard: &mut Shard<()>) -> Kick {
            let kick = self.queue.kick(shard, &self.socket, 0);
            self.check(kick.is_ok(), "kick failed");
            kick.unwrap_or(Kick::Idle)
        }
    }

    impl Handler<()> for Script {
        fn poll(&mut self, shard: &mut Shard<()>) -> bool {
            if !self.started {
                self.started = true;
                // A pool buffer to copy read-like data from, then the pool
                // drained: everything appended now waits on the heap.
                let source = shard.alloc(SLOT).expect("a buffer");
                shard.buf_mut(&source).fill(0xAB);
                let mut hog = Vec::new();
                while let Some(buf) = shard.alloc(SLOT) {
                    hog.push(buf);
                }
                let empty = shard.stats().pool_empty;
                let first = self.appends.pop_front().unwrap_or_default();
                let parts = [
                    Part::Bytes(&first),
                    Part::Slot(&source, 100..3000),
                    Part::Bytes(b"tail"),
                ];
                self.queue.append(shard, &parts);
                self.check(
                    shard.stats().pool_empty == empty + 1,
                    "the empty pool is counted once",
                );
                let kick = self.kick(shard);
                self.check(kick == Kick::Starved, "a dry pool starves the queue");
                self.source = Some(source);
                for buf in hog {
                    shard.free(buf);
                }
                return true;
            }
            if let Some(next) = self.appends.pop_front() {
                self.queue.append(shard, &[Part::Bytes(&next)]);
                // The source, the send in flight and the queue's own.
                let held = SLOTS - shard.pool().available();
                self.check(
                    held <= 1 + 1 + MAX_BUFFERS,
                    "the queue holds no more than its cap",
                );
                self.kick(shard);
            } else if self.queue.is_idle() {
                if let Some(source) = self.source.take() {
                    shard.free(source);
                }
            }
            !self.appends.is_empty()
        }

        fn on_completion(&mut self, shard: &mut Shard<()>, done: Completion) {
            match self.queue.on_sent(shard, &self.socket, done, true, 0) {
                SendProgress::Resent => {}
                SendProgress::Finished => {
                    self.kick(shard);
                }
                SendProgress::Failed(why) => self.check(false, &why),
            }
        }
    }

    #[test]
    fn bytes_queued_while_the_pool_is_dry_or_past_the_cap_go_out_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("dial");
        let (server, _) = listener.accept().expect("accept");
        let appends: Vec<Vec<u8>> = (0..40u32)
            .map(|i| {
                let len = 1 + (i as usize * 997) % (3 * SLOT);
                (0..len).map(|b| (b as u32 ^ i) as u8).collect()
            })
            .collect();
        let mut expected = appends[0].clone();
        expected.extend(std::iter::repeat_n(0xAB, 2900));
        expected.extend_from_slice(b"tail");
        for next in &appends[1..] {
            expected.extend_from_slice(next);
        }
        let (report, failures) = mpsc::channel();
        let script = std::sync::Mutex::new(Some((server, appends, report)));
        let config = EngineConfig {
            pin: false,
            pool: PoolConfig {
                slot_size: SLOT,
                slots: SLOTS,
                hugepages: false,
            },
            ..Default::default()
        };
        let engine = Engine::start(config, move |_| {
            let (socket, appends, report) = script.lock().expect("lock").take().expect("one shard");
            Ok(Script {
                socket,
                queue: SendQueue::new(MAX_BUFFERS),
                source: None,
                appends: appends.into(),
                started: false,
                report,
            })
        })
        .expect("engine");
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut received = vec![0u8; expected.len()];
        client
            .read_exact(&mut received)
            .expect("every byte arrives");
        engine.stop().expect("stop");
        let failures: Vec<String> = failures.try_iter().collect();
        assert!(failures.is_empty(), "{failures:?}");
        assert!(received == expected, "the stream arrived out of order");
    }
}
