//! What a handler sees of its core: the ring, the buffer pool, attached
//! devices, the mailbox to other shards, and timers.
//!
//! Every operation submitted to the ring is recorded in an in-flight table
//! that also holds its buffer, so a buffer can never be reused (or freed)
//! while the kernel may still be reading or writing it; it comes back to the
//! handler with the completion.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::opcode;
use slab::Slab;

use crate::backend::{self, BlockBackend, FileRef, Geometry, IoError, IoOp, Prepared, Request};
use crate::mesh::{Mailbox, Origin, ShardId};
use crate::sys::dma::{Buf, BufferPool};
use crate::sys::ring::{Ring, RingFeatures};
use crate::timer::{TimerId, Timers, TooManyTimers};

/// user_data values at or above this are the engine's own.
const INTERNAL_BASE: u64 = u64::MAX - 16;
const EVENTFD_TOKEN: u64 = INTERNAL_BASE;
const CANCEL_TOKEN: u64 = INTERNAL_BASE + 1;

/// A backend attached to one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceId(pub u32);

struct Device {
    backend: Arc<dyn BlockBackend>,
    file: Option<FileRef>,
    geometry: Geometry,
}

/// A socket operation on the shard's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetOp {
    /// Accept one connection; it arrives as [`Completion::accepted`].
    Accept,
    /// Receive into the buffer from `offset` to its end.
    Recv { offset: u32 },
    /// Send the buffer from `offset` to its end (may complete short).
    Send { offset: u32 },
    /// Wait until the descriptor is readable (one-shot poll, no buffer);
    /// completes with the poll mask. For descriptors that signal work done
    /// elsewhere, e.g. an RDMA completion channel.
    PollIn,
}

impl NetOp {
    pub fn name(&self) -> &'static str {
        match self {
            NetOp::Accept => "accept",
            NetOp::Recv { .. } => "recv",
            NetOp::Send { .. } => "send",
            NetOp::PollIn => "poll",
        }
    }
}

/// What an in-flight operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Block(IoOp),
    Net(NetOp),
}

/// The outcome of an operation, handed back with its buffer.
#[derive(Debug)]
pub struct Completion {
    pub tag: u64,
    pub op: Op,
    /// Bytes moved (0 at end of stream for a receive), or why not.
    pub result: Result<u32, IoError>,
    pub buf: Option<Buf>,
    /// The new connection, for an accept.
    pub accepted: Option<OwnedFd>,
}

struct InFlight {
    tag: u64,
    op: Op,
    buf: Option<Buf>,
    /// Set when the backend finished the op without the ring.
    done: Option<Result<u32, IoError>>,
    /// A block op's device and the bytes of its buffer already moved by
    /// earlier submissions (a file may complete a read or write short; the
    /// rest is submitted again).
    block: Option<(DeviceId, u32)>,
}

impl InFlight {
    fn finish(self, result: Result<u32, IoError>, accepted: Option<OwnedFd>) -> Completion {
        Completion {
            tag: self.tag,
            op: self.op,
            result,
            buf: self.buf,
            accepted,
        }
    }
}

/// The error for an op on a device the shard does not have.
fn no_device(op: &IoOp) -> IoError {
    IoError::Os {
        op: op.name(),
        errno: libc::ENODEV,
    }
}

/// What became of a block op's completion.
enum Continued {
    /// It completed short and its rest is queued.
    Resubmitted,
    /// It is done, with this outcome.
    Finished(InFlight, Result<u32, IoError>),
}

/// Counters a shard keeps about itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardStats {
    pub loops: u64,
    pub completions: u64,
    pub messages: u64,
    pub sleeps: u64,
    /// Wall time spent asleep in the kernel waiting for work.
    pub slept: Duration,
    /// Block reads and writes that completed short and were continued.
    pub short_transfers: u64,
    /// Buffers asked of the pool while it had none left.
    pub pool_empty: u64,
}

pub struct Shard<M> {
    id: ShardId,
    pub(crate) ring: Ring,
    pool: BufferPool,
    /// Whether the pool is registered with the ring (fixed-buffer I/O).
    buffers_registered: bool,
    inflight: Slab<InFlight>,
    max_inflight: usize,
    ready: VecDeque<usize>,
    devices: Vec<Device>,
    fixed_files: u32,
    fixed_file_slots: u32,
    pub(crate) mailbox: Mailbox<M>,
    pub(crate) timers: Timers,
    pub(crate) now: Instant,
    pub(crate) stop_requested: bool,
    pub(crate) stats: ShardStats,
    eventfd_buf: Box<[u8; 8]>,
    eventfd_armed: bool,
    scratch: Vec<(u64, i32)>,
}

impl<M> Shard<M> {
    pub(crate) fn new(
        id: ShardId,
        mut ring: Ring,
        mut pool: BufferPool,
        mailbox: Mailbox<M>,
        max_inflight: usize,
        fixed_file_slots: u32,
    ) -> std::io::Result<Shard<M>> {
        let regions = pool.regions();
        // SAFETY: the pool is owned by this shard and declared after the ring
        // is no longer used: the shard drops the ring first (field order), and
        // the kernel keeps the pages pinned until then.
        let registered = match unsafe { ring.register_buffers(&regions) } {
            Ok(()) => true,
            // Pinned pages count against RLIMIT_MEMLOCK (8 MiB by default
            // for a user without CAP_IPC_LOCK): run with plain reads and
            // writes from the same pool rather than not at all.
            Err(err) if err.raw_os_error() == Some(libc::ENOMEM) => {
                let mib: usize = regions.iter().map(|r| r.iov_len).sum::<usize>() >> 20;
                tracing::warn!(
                    shard = id.0,
                    pool_mib = mib,
                    "cannot register the {mib} MiB buffer pool with io_uring (locked-memory \
                     limit, `ulimit -l`): using unregistered buffers, which costs a page walk \
                     per I/O; raise the limit with kernel-setup/memlock.sh"
                );
                false
            }
            Err(err) => return Err(err),
        };
        let fixed_file_slots = match ring.register_file_table(fixed_file_slots) {
            Ok(()) => fixed_file_slots,
            Err(err) => {
                tracing::debug!(%err, "no sparse fixed-file table, using plain descriptors");
                0
            }
        };
        Ok(Shard {
            id,
            ring,
            pool,
            buffers_registered: registered,
            inflight: Slab::with_capacity(max_inflight),
            max_inflight,
            ready: VecDeque::with_capacity(max_inflight),
            devices: Vec::new(),
            fixed_files: 0,
            fixed_file_slots,
            mailbox,
            timers: Timers::new(65536),
            now: Instant::now(),
            stop_requested: false,
            stats: ShardStats::default(),
            eventfd_buf: Box::new([0; 8]),
            eventfd_armed: false,
            scratch: Vec::with_capacity(1024),
        })
    }

    pub fn id(&self) -> ShardId {
        self.id
    }

    pub fn shards(&self) -> usize {
        self.mailbox.shards()
    }

    /// The time at the top of this loop iteration (cheap; no clock read).
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn ring_features(&self) -> RingFeatures {
        self.ring.features()
    }

    pub fn stats(&self) -> ShardStats {
        self.stats
    }

    /// Asks the loop to stop once every in-flight operation has completed.
    pub fn stop(&mut self) {
        self.stop_requested = true;
    }

    /// Makes `backend` usable from this shard. Its descriptor goes into the
    /// ring's fixed-file table while there is room.
    pub fn attach(&mut self, backend: Arc<dyn BlockBackend>) -> std::io::Result<DeviceId> {
        let file = match backend.raw_fd() {
            Some(fd) if self.fixed_files < self.fixed_file_slots => {
                self.ring.set_fixed_file(self.fixed_files, fd)?;
                self.fixed_files += 1;
                Some(FileRef::Fixed(self.fixed_files - 1))
            }
            Some(fd) => Some(FileRef::Raw(fd)),
            None => None,
        };
        let geometry = backend.geometry();
        tracing::debug!(shard = %self.id, backend = %backend.describe(), ?file, "device attached");
        self.devices.push(Device {
            backend,
            file,
            geometry,
        });
        Ok(DeviceId(self.devices.len() as u32 - 1))
    }

    pub fn geometry(&self, dev: DeviceId) -> Option<Geometry> {
        self.devices.get(dev.0 as usize).map(|d| d.geometry)
    }

    /// A buffer of `len` bytes from the registered pool.
    pub fn alloc(&mut self, len: usize) -> Option<Buf> {
        let buf = self.pool.get(len);
        if buf.is_none() && self.pool.available() == 0 {
            self.stats.pool_empty += 1;
        }
        buf
    }

    pub fn free(&mut self, buf: Buf) {
        self.pool.put(buf)
    }

    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    pub fn pool_mut(&mut self) -> &mut BufferPool {
        &mut self.pool
    }

    pub fn buf(&self, buf: &Buf) -> &[u8] {
        self.pool.bytes(buf)
    }

    pub fn buf_mut(&mut self, buf: &Buf) -> &mut [u8] {
        self.pool.bytes_mut(buf)
    }

    /// Operations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Starts `op` on `dev`. Read and Write move `buf.len()` bytes through
    /// `buf`. The completion (with the buffer) reaches the handler later,
    /// never from inside this call. A request that is invalid or cannot be
    /// queued is refused at once, and the buffer comes back with the error.
    pub fn submit(
        &mut self,
        dev: DeviceId,
        op: IoOp,
        buf: Option<Buf>,
        tag: u64,
    ) -> Result<(), (IoError, Option<Buf>)> {
        let Some(device) = self.devices.get(dev.0 as usize) else {
            return Err((no_device(&op), buf));
        };
        if self.inflight.len() >= self.max_inflight {
            return Err((IoError::Busy, buf));
        }
        let data_len = buf.as_ref().map_or(0, |b| b.len());
        if op.has_data() && buf.is_none() {
            return Err((IoError::NoBuffer { op: op.name() }, buf));
        }
        if let Err(e) = backend::validate(&op, data_len, device.geometry) {
            return Err((e, buf));
        }
        self.start_block(dev, op, buf, tag, 0)
    }

    /// Prepares and queues `op` on `dev` from byte `moved` of `buf` on
    /// (`op`'s offset advanced by as much): the first submission of an
    /// op, or the rest of one that completed short.
    fn start_block(
        &mut self,
        dev: DeviceId,
        op: IoOp,
        buf: Option<Buf>,
        tag: u64,
        moved: u32,
    ) -> Result<(), (IoError, Option<Buf>)> {
        let Some(device) = self.devices.get(dev.0 as usize) else {
            return Err((no_device(&op), buf));
        };
        let backend = device.backend.clone();
        let file = device.file;
        let registered = self.buffers_registered;
        let (data, buf_index): (&mut [u8], Option<u16>) = match &buf {
            Some(b) if op.has_data() => {
                let region = self.pool.region_of(b);
                let bytes = self.pool.bytes_mut(b);
                let rest = bytes.get_mut(moved as usize..).unwrap_or_default();
                (rest, registered.then_some(region))
            }
            _ => (&mut [], None),
        };
        let prepared = backend.prepare(Request {
            op: op.advanced(u64::from(moved)),
            data,
            buf_index,
            file,
        });
        let block = Some((dev, moved));
        match prepared {
            Prepared::Done(result) => {
                let key = self.inflight.insert(InFlight {
                    tag,
                    op: Op::Block(op),
                    buf,
                    done: Some(result),
                    block,
                });
                self.ready.push_back(key);
                Ok(())
            }
            Prepared::Sqe(entry) => {
                let entry_key = self.inflight.vacant_key();
                let entry = entry.user_data(entry_key as u64);
                // SAFETY: the entry points into `buf`, which we keep in the
                // in-flight table until its CQE arrives; the file is kept open
                // by `backend`, held by `self.devices` for the shard's life.
                let pushed = unsafe { self.push_with_retry(&entry) };
                if let Err(e) = pushed {
                    return Err((e, buf));
                }
                let key = self.inflight.insert(InFlight {
                    tag,
                    op: Op::Block(op),
                    buf,
                    done: None,
                    block,
                });
                debug_assert_eq!(key, entry_key);
                Ok(())
            }
        }
    }

    /// Starts a socket operation on `fd`. Receives and sends move bytes
    /// between the socket and `buf[offset..]`. The caller keeps `fd` open
    /// until the completion arrives (closing early is safe, the kernel holds
    /// its own reference, but the operation then fails or is lost).
    pub fn submit_net(
        &mut self,
        fd: &impl AsRawFd,
        op: NetOp,
        buf: Option<Buf>,
        tag: u64,
    ) -> Result<(), (IoError, Option<Buf>)> {
        if self.inflight.len() >= self.max_inflight {
            return Err((IoError::Busy, buf));
        }
        let raw: RawFd = fd.as_raw_fd();
        let fd_ref = io_uring::types::Fd(raw);
        let entry = match (op, &buf) {
            (NetOp::Accept, _) => {
                opcode::Accept::new(fd_ref, std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            }
            (NetOp::PollIn, _) => opcode::PollAdd::new(fd_ref, libc::POLLIN as u32).build(),
            (NetOp::Recv { offset }, Some(b)) | (NetOp::Send { offset }, Some(b)) => {
                let offset = offset as usize;
                if offset >= b.len() {
                    return Err((IoError::EmptyTransfer { op: op.name() }, buf));
                }
                let len = (b.len() - offset) as u32;
                // SAFETY: offset < len of the slot, so the pointer stays in it.
                let ptr = unsafe { self.pool.as_ptr(b).add(offset) };
                match op {
                    NetOp::Recv { .. } => opcode::Recv::new(fd_ref, ptr, len).build(),
                    _ => opcode::Send::new(fd_ref, ptr, len)
                        .flags(libc::MSG_NOSIGNAL)
                        .build(),
                }
            }
            (_, None) => return Err((IoError::NoBuffer { op: op.name() }, buf)),
        };
        let key = self.inflight.vacant_key();
        let entry = entry.user_data(key as u64);
        // SAFETY: the entry points into `buf`, which the in-flight table keeps
        // until the CQE arrives; accept writes no address (null pointers).
        if let Err(e) = unsafe { self.push_with_retry(&entry) } {
            return Err((e, buf));
        }
        self.inflight.insert(InFlight {
            tag,
            op: Op::Net(op),
            buf,
            done: None,
            block: None,
        });
        Ok(())
    }

    /// # Safety
    /// Same contract as [`Ring::push`].
    unsafe fn push_with_retry(&mut self, entry: &io_uring::squeue::Entry) -> Result<(), IoError> {
        // SAFETY: forwarded.
        if unsafe { self.ring.push(entry) }.is_ok() {
            return Ok(());
        }
        // SQ full: hand what is queued to the kernel and try once more.
        self.ring.submit_nowait().map_err(|e| IoError::Os {
            op: "submit",
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
        // SAFETY: forwarded.
        unsafe { self.ring.push(entry) }.map_err(|_| IoError::Busy)
    }

    /// Cancels every operation in flight on `fd` (before closing a
    /// connection, say). Each still completes, with `ECANCELED`.
    pub fn cancel_net(&mut self, fd: &impl AsRawFd) {
        let entry = opcode::AsyncCancel2::new(
            io_uring::types::CancelBuilder::fd(io_uring::types::Fd(fd.as_raw_fd())).all(),
        )
        .build()
        .user_data(CANCEL_TOKEN);
        // SAFETY: a cancel request refers to no memory.
        let _ = unsafe { self.push_with_retry(&entry) };
    }

    /// Cancels everything in flight that can be cancelled (sockets waiting
    /// for data; disk I/O already issued simply finishes).
    pub(crate) fn cancel_all(&mut self) {
        let entry = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
            .build()
            .user_data(CANCEL_TOKEN);
        // SAFETY: a cancel request refers to no memory.
        let _ = unsafe { self.push_with_retry(&entry) };
    }

    /// Sends a message to another shard (or this one). Gives it back when the
    /// destination's queue is full.
    pub fn send(&self, dst: ShardId, msg: M) -> Result<(), M> {
        self.mailbox.send(dst, msg)
    }

    /// Fires `on_timer(tag)` after `delay`.
    pub fn add_timer(&mut self, delay: Duration, tag: u64) -> Result<TimerId, TooManyTimers> {
        self.timers.add(self.now + delay, tag)
    }

    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    /// Moves finished operations out: ring completions and backend-finished
    /// ones. Returns how many.
    pub(crate) fn reap(&mut self, out: &mut Vec<Completion>) -> usize {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.ring
            .drain_completions(|cqe| scratch.push((cqe.user_data(), cqe.result())));
        let mut n = 0;
        for &(token, result) in &scratch {
            if token >= INTERNAL_BASE {
                if token == EVENTFD_TOKEN {
                    self.eventfd_armed = false;
                }
                continue;
            }
            let Some(flight) = self.inflight.try_remove(token as usize) else {
                tracing::error!(token, "completion for an unknown operation");
                continue;
            };
            let (result, accepted) = match flight.op {
                Op::Block(op) => match self.continue_block(op, flight, result) {
                    Continued::Resubmitted => continue,
                    Continued::Finished(flight, result) => {
                        out.push(flight.finish(result, None));
                        n += 1;
                        continue;
                    }
                },
                Op::Net(op) if result < 0 => (
                    Err(IoError::Os {
                        op: op.name(),
                        errno: -result,
                    }),
                    None,
                ),
                // SAFETY: a successful accept returns a new descriptor that
                // nobody else owns; wrapping it makes us its only owner.
                Op::Net(NetOp::Accept) => (Ok(0), Some(unsafe { OwnedFd::from_raw_fd(result) })),
                Op::Net(_) => (Ok(result as u32), None),
            };
            out.push(flight.finish(result, accepted));
            n += 1;
        }
        self.scratch = scratch;
        while let Some(key) = self.ready.pop_front() {
            let Some(mut flight) = self.inflight.try_remove(key) else {
                continue;
            };
            let (flight, result) = match (flight.op, flight.done.take()) {
                (Op::Block(op), Some(Ok(moved))) => {
                    let moved = i32::try_from(moved).unwrap_or(i32::MAX);
                    match self.continue_block(op, flight, moved) {
                        Continued::Resubmitted => continue,
                        Continued::Finished(flight, result) => (flight, result),
                    }
                }
                (_, done) => (flight, done.unwrap_or(Ok(0))),
            };
            out.push(flight.finish(result, None));
            n += 1;
        }
        self.stats.completions += n as u64;
        n
    }

    /// A block op's CQE arrived. A read or write that moved some bytes but
    /// not all (a file may do that: a signal, a direct write partly falling
    /// back to buffered) continues from where it stopped; anything else
    /// finishes, a transfer of nothing more being an error.
    fn continue_block(&mut self, op: IoOp, flight: InFlight, result: i32) -> Continued {
        let wanted = flight.buf.as_ref().map_or(0, |b| b.len());
        let (dev, moved) = flight.block.unwrap_or((DeviceId(0), 0));
        let remaining = wanted.saturating_sub(moved as usize);
        let partial = op.has_data() && result > 0 && (result as usize) < remaining;
        if !partial {
            let outcome = backend::complete(&op, remaining, result).map(|_| wanted as u32);
            return Continued::Finished(flight, outcome);
        }
        let moved = moved + result as u32;
        self.stats.short_transfers += 1;
        match self.start_block(dev, op, flight.buf, flight.tag, moved) {
            Ok(()) => Continued::Resubmitted,
            Err((e, buf)) => Continued::Finished(InFlight { buf, ..flight }, Err(e)),
        }
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Takes messages for this shard.
    pub(crate) fn drain_mail(&mut self, limit: usize, out: &mut Vec<(Origin, M)>) -> usize {
        let n = self.mailbox.drain(limit, |o, m| out.push((o, m)));
        self.stats.messages += n as u64;
        n
    }

    /// Makes sure a read on our eventfd is waiting in the ring, so a sender
    /// can wake us while we sleep.
    pub(crate) fn arm_wakeup(&mut self) -> std::io::Result<()> {
        if self.eventfd_armed {
            return Ok(());
        }
        let fd = self.mailbox.waker().eventfd();
        let entry = opcode::Read::new(io_uring::types::Fd(fd), self.eventfd_buf.as_mut_ptr(), 8)
            .build()
            .user_data(EVENTFD_TOKEN);
        // SAFETY: the 8-byte buffer is boxed (stable address) and owned by the
        // shard, as is the eventfd (via the mailbox), for the ring's lifetime.
        match unsafe { self.ring.push(&entry) } {
            Ok(()) => {
                self.eventfd_armed = true;
                Ok(())
            }
            Err(_) => {
                // SQ full: submitting makes room; the caller retries next time.
                self.ring.submit_nowait().map(|_| ())
            }
        }
    }
}
