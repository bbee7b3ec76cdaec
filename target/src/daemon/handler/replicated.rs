//! The replicated volume's side of a shard: host writes, flushes and
//! zeroing handed to the state machine on shard 0 (one host operation per
//! region touched) and their answers routed back; the ANA state that shard
//! 0 publishes to the target when its node starts or stops serving.

use keel_replicator::core::{HostOpId, HostStatus};

use super::*;
use crate::daemon::replication::driver::Payload as ReplPayload;

/// What a replicated host command asks of the state machine, taken from
/// the command on its own shard (data gathered, ranges parsed), so that
/// shard 0 needs nothing of the connection it came in on.
pub struct ReplWork {
    /// A Write's offset and data.
    write: Option<(u64, Arc<[u8]>)>,
    /// A degraded read: offset and length of a read the local device
    /// failed.
    read: Option<(u64, u32)>,
    fua: bool,
    /// Write Zeroes, or deallocated ranges (they read back as zeroes).
    zeroes: Vec<crate::controller::ByteRange>,
    flush: bool,
}

/// The replicated volume as one shard sees it.
pub(crate) struct ReplicatedVolume {
    /// Its device on this shard.
    pub device: DeviceId,
    /// The state machine's published state (whether it serves reads).
    pub published: Arc<Published>,
    /// The state machine itself (shard 0 only).
    pub replicator: Option<Replicator>,
}

/// A replicated command shard 0 has handed to the state machine as one
/// host operation per region it touches.
pub(super) struct ReplRequest {
    origin: ShardId,
    token: u64,
    /// Host operations not yet ended.
    remaining: usize,
    /// The first failure among them.
    status: Status,
    /// A degraded read: its offset and the data its parts brought so far.
    read: Option<(u64, Vec<u8>)>,
}

/// A command of this shard waiting for shard 0: its connection, command
/// and, for a degraded read, the segment whose buffer the data fills.
pub(super) struct ReplOp {
    conn: usize,
    command: usize,
    segment: Option<usize>,
}

impl ShardHandler {
    /// A write, flush, write zeroes or deallocate on the replicated volume:
    /// its work is taken from the command here and handed to shard 0's state
    /// machine; the command completes when shard 0 answers.
    pub(super) fn replicate(&mut self, shard: &mut Shard<Message>, key: usize, cmd_key: usize) {
        let conn = &mut self.conns[key];
        let command = &mut conn.commands[cmd_key];
        let mut work = ReplWork {
            write: None,
            read: None,
            fua: false,
            zeroes: Vec::new(),
            flush: false,
        };
        match command.io.operation.clone() {
            IoOperation::Write { range, fua, .. } => {
                // NVMe FUA: complete only once durable on the write quorum.
                work.fua = fua;
                // The one copy of the write's data, straight from the pool
                // buffers into the shared payload (a cost to remove: the
                // state machine could hold the pool buffers instead).
                let data = gather(shard, command.data.iter().flatten(), range.len as usize);
                work.write = Some((range.offset, data));
            }
            IoOperation::WriteZeroes { range, .. } => work.zeroes.push(range),
            IoOperation::DatasetManagement(request) => {
                let list = match command.data[0].as_ref() {
                    Some(buf) => request.byte_ranges(shard.buf(buf)),
                    None => request.byte_ranges(&[]),
                };
                match list {
                    // Deallocated blocks read back as zeroes: zero them on
                    // every copy.
                    Ok(ranges) if request.deallocate => work.zeroes = ranges,
                    Ok(_) => {}
                    Err(error) => command.fail(error.status()),
                }
            }
            IoOperation::Flush => work.flush = true,
            IoOperation::Read { .. } | IoOperation::Compare { .. } => {}
        }
        let nothing = work.write.is_none() && work.zeroes.is_empty() && !work.flush;
        if !command.status.is_success() || nothing {
            self.finish(shard, key, cmd_key);
            return;
        }
        // Everything the command needs is in `work` now: its pool buffers go
        // back at once. Held until the quorum answers, they starved the
        // state machine's own local writes of buffers (host writes then
        // failed while a replica was slow: 24 of them with 8 queues of
        // 16 × 1 MiB and one replica frozen for 4 s).
        for buf in command.take_buffers() {
            shard.free(buf);
        }
        let token = self.next_repl_op;
        self.next_repl_op += 1;
        command.disk_pending += 1;
        conn.ops += 1;
        self.repl_ops.insert(
            token,
            ReplOp {
                conn: key,
                command: cmd_key,
                segment: None,
            },
        );
        self.hand_to_replicator(shard, token, work);
    }

    /// Hands `work` to shard 0's state machine (this shard's, on shard 0).
    fn hand_to_replicator(&mut self, shard: &mut Shard<Message>, token: u64, work: ReplWork) {
        if self.repl.is_some() {
            self.submit_replicated(shard, self.me, token, work);
        } else {
            let origin = self.me;
            self.post(
                shard,
                ShardId(0),
                Message::Replicate {
                    origin,
                    token,
                    work,
                },
            );
        }
    }

    /// The local device failed segment `tag.segment` of a read (at byte
    /// `offset`) on the replicated volume: the state machine reads it from
    /// a replica, into the segment's buffer. The command stays pending
    /// meanwhile (its disk count is unchanged).
    pub(super) fn degraded_read(&mut self, shard: &mut Shard<Message>, tag: Tag, offset: u64) {
        let Some(command) = self
            .conns
            .get(tag.conn)
            .and_then(|c| c.commands.get(tag.command))
        else {
            return;
        };
        let len = command
            .data
            .get(tag.segment)
            .and_then(|b| b.as_ref())
            .map_or(0, |b| b.len());
        let token = self.next_repl_op;
        self.next_repl_op += 1;
        self.repl_ops.insert(
            token,
            ReplOp {
                conn: tag.conn,
                command: tag.command,
                segment: Some(tag.segment),
            },
        );
        let work = ReplWork {
            write: None,
            read: Some((offset, u32::try_from(len).unwrap_or(u32::MAX))),
            fua: false,
            zeroes: Vec::new(),
            flush: false,
        };
        tracing::warn!(offset, len, "local read failed: reading from a replica");
        self.hand_to_replicator(shard, token, work);
    }

    /// Shard 0: hands a replicated command to the state machine, one host
    /// operation per region it touches (the state machine wants each within
    /// one region).
    pub(super) fn submit_replicated(
        &mut self,
        shard: &mut Shard<Message>,
        origin: ShardId,
        token: u64,
        work: ReplWork,
    ) {
        let Some(repl) = self.repl.as_ref() else {
            // Not the owner (misrouted): nothing here can write it.
            self.answer_replicated(shard, origin, token, Status::NAMESPACE_NOT_READY, None);
            return;
        };
        if let Some((offset, len)) = work.read {
            self.submit_degraded_read(shard, origin, token, offset, len);
            return;
        }
        let region = u64::from(repl.geometry().region_size());
        let mut parts: Vec<(u64, ReplPayload)> = Vec::new();
        if let Some((offset, data)) = work.write {
            let data = ReplPayload::new(data);
            let len = data.as_slice().len() as u64;
            for (at, part) in region_parts(offset, len, region) {
                let start = (at - offset) as usize;
                parts.push((at, data.slice(start, part as usize)));
            }
        }
        for range in work.zeroes {
            let room = (MAX_REPL_PARTS + 1).saturating_sub(parts.len());
            for (at, part) in region_parts(range.offset, range.len, region).take(room) {
                parts.push((at, repl.zeroes(part as usize)));
            }
        }
        if parts.len() > MAX_REPL_PARTS {
            tracing::warn!(
                "a replicated write zeroes or deallocate larger than {MAX_REPL_PARTS} regions is refused"
            );
            self.answer_replicated(shard, origin, token, Status::INVALID_FIELD, None);
            return;
        }
        let request = self.repl_requests.insert(ReplRequest {
            origin,
            token,
            remaining: parts.len() + usize::from(work.flush),
            status: Status::SUCCESS,
            read: None,
        });
        let first = self.next_repl_part;
        self.next_repl_part += (parts.len() + usize::from(work.flush)) as u64;
        for id in first..self.next_repl_part {
            self.repl_parts.insert(id, (request, 0));
        }
        let Some(repl) = self.repl.as_mut() else {
            return;
        };
        if work.flush {
            repl.host_flush(shard, HostOpId(first));
        }
        for (index, (offset, data)) in parts.into_iter().enumerate() {
            let id = first + u64::from(work.flush) + index as u64;
            repl.host_write(shard, HostOpId(id), offset, data, work.fua);
        }
        self.repl_completions(shard);
    }

    /// Shard 0: a degraded read, one state machine read per region it
    /// touches; the parts' data is assembled in the request.
    fn submit_degraded_read(
        &mut self,
        shard: &mut Shard<Message>,
        origin: ShardId,
        token: u64,
        offset: u64,
        len: u32,
    ) {
        let Some(region) = self.repl.as_ref().map(|r| r.geometry().region_size()) else {
            self.answer_replicated(shard, origin, token, Status::NAMESPACE_NOT_READY, None);
            return;
        };
        let region = u64::from(region);
        let parts: Vec<(u64, u64)> = region_parts(offset, u64::from(len), region).collect();
        if parts.is_empty() {
            // A segment without a buffer: nothing to read, nothing would
            // ever answer it.
            self.answer_replicated(shard, origin, token, Status::UNRECOVERED_READ_ERROR, None);
            return;
        }
        let request = self.repl_requests.insert(ReplRequest {
            origin,
            token,
            remaining: parts.len(),
            status: Status::SUCCESS,
            read: Some((offset, vec![0; len as usize])),
        });
        let first = self.next_repl_part;
        self.next_repl_part += parts.len() as u64;
        for (id, (at, _)) in (first..).zip(&parts) {
            self.repl_parts.insert(id, (request, *at));
        }
        let Some(repl) = self.repl.as_mut() else {
            return;
        };
        for (id, (at, part)) in (first..).zip(parts) {
            repl.degraded_read(shard, HostOpId(id), at, part as u32);
        }
        self.repl_completions(shard);
    }

    /// Shard 0, every reactor loop: tells the target whether the replicated
    /// namespace is ANA optimized (this node serves it) or inaccessible on
    /// this path, once per change, so that multipath hosts get an ANA
    /// Change notice and move their I/O. (An atomic load when nothing
    /// changed. Commands reaching a node that does not serve are refused
    /// with Asymmetric Access Inaccessible by `data_arrived` meanwhile.)
    pub(super) fn publish_ana(&mut self, shard: &mut Shard<Message>) {
        let Some(published) = self.repl_published.as_ref() else {
            return;
        };
        let serving = published.serving.load(std::sync::atomic::Ordering::Acquire);
        if self.ana_optimized == Some(serving) {
            return;
        }
        let Some(volume) = self
            .volumes
            .iter()
            .find(|v| Some(v.device) == self.repl_device)
        else {
            return;
        };
        let mut control = self.shared.lock();
        if let Err(error) = control
            .target
            .set_namespace_ready(&volume.nqn, volume.nsid, serving)
        {
            tracing::warn!(%error, nqn = volume.nqn, nsid = volume.nsid, "ANA state not set");
        }
        let routed = control.routed_async();
        drop(control);
        tracing::info!(
            nqn = volume.nqn,
            nsid = volume.nsid,
            state = crate::controller::ana::AnaState::of_serving(serving).name(),
            "ANA state"
        );
        self.ana_optimized = Some(serving);
        self.route_async(shard, routed);
    }

    /// Shard 0: applies the state machine's ended host operations to their
    /// requests, answering each request once all its parts have ended.
    pub(super) fn repl_completions(&mut self, shard: &mut Shard<Message>) {
        let Some(repl) = self.repl.as_mut() else {
            return;
        };
        for end in repl.take_completed() {
            let Some((request, at)) = self.repl_parts.remove(&end.id.0) else {
                continue; // its request was failed at shutdown
            };
            let Some(pending) = self.repl_requests.get_mut(request) else {
                continue;
            };
            let status = match (end.status, &mut pending.read) {
                // No copy could answer: the read's own error stands.
                (HostStatus::MediaError, Some(_)) => {
                    if let Some(published) = &self.repl_published {
                        let failed = &published.degraded_reads_failed;
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Status::UNRECOVERED_READ_ERROR
                }
                (status, Some((offset, bytes))) => {
                    if let Some(data) = &end.data {
                        let data = data.as_slice();
                        let start = usize::try_from(at.saturating_sub(*offset)).unwrap_or(0);
                        if let Some(target) = bytes.get_mut(start..start + data.len()) {
                            target.copy_from_slice(data);
                        }
                    }
                    host_status(status)
                }
                (status, None) => host_status(status),
            };
            if pending.status.is_success() {
                pending.status = status;
            }
            pending.remaining -= 1;
            if pending.remaining == 0 {
                let done = self.repl_requests.remove(request);
                let data = done
                    .read
                    .filter(|_| done.status.is_success())
                    .map(|(_, bytes)| Arc::from(bytes));
                self.answer_replicated(shard, done.origin, done.token, done.status, data);
            }
        }
    }

    /// Shard 0: how a replicated command ended, to the shard it came from.
    pub(super) fn answer_replicated(
        &mut self,
        shard: &mut Shard<Message>,
        origin: ShardId,
        token: u64,
        status: Status,
        data: Option<Arc<[u8]>>,
    ) {
        if origin == self.me {
            self.complete_repl_op(shard, token, status, data);
        } else {
            let message = Message::Replicated {
                token,
                status,
                data,
            };
            self.post(shard, origin, message);
        }
    }

    pub(super) fn complete_repl_op(
        &mut self,
        shard: &mut Shard<Message>,
        token: u64,
        status: Status,
        data: Option<Arc<[u8]>>,
    ) {
        let Some(op) = self.repl_ops.remove(&token) else {
            return;
        };
        let (key, cmd_key) = (op.conn, op.command);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.ops -= 1;
        if let Some(command) = conn.commands.get_mut(cmd_key) {
            // A degraded read's data lands in the segment's buffer.
            let buf = op
                .segment
                .and_then(|s| command.data.get(s))
                .and_then(|b| b.as_ref());
            if let (Some(buf), Some(data)) = (buf, &data) {
                let target = shard.buf_mut(buf);
                let n = target.len().min(data.len());
                target[..n].copy_from_slice(&data[..n]);
            }
            command.fail(status);
            command.disk_pending -= 1;
            if command.disk_pending == 0 {
                self.finish(shard, key, cmd_key);
            }
        }
        self.maybe_finalize(shard, key);
    }

    /// Shutdown grace is over: what the state machine still holds fails
    /// (shard 0 answers every shard), then what this shard still waits for.
    pub(super) fn fail_repl_ops(&mut self, shard: &mut Shard<Message>) {
        self.repl_parts.clear();
        let requests: Vec<ReplRequest> = self.repl_requests.drain().collect();
        for request in requests {
            self.answer_replicated(
                shard,
                request.origin,
                request.token,
                Status::NAMESPACE_NOT_READY,
                None,
            );
        }
        let tokens: Vec<u64> = self.repl_ops.keys().copied().collect();
        for token in tokens {
            self.complete_repl_op(shard, token, Status::NAMESPACE_NOT_READY, None);
        }
    }

    // ----- sending and closing ------------------------------------------
}

/// The first `len` bytes of `bufs` as one shared buffer, copied once
/// (straight from one pool buffer for every write up to a buffer's size; a
/// larger one fills a zeroed allocation, never a `Vec` copied again).
fn gather<'a>(
    shard: &Shard<Message>,
    mut bufs: impl Iterator<Item = &'a keel_engine::Buf>,
    len: usize,
) -> Arc<[u8]> {
    let Some(first) = bufs.next() else {
        return Arc::from(&[][..]);
    };
    let first = shard.buf(first);
    if first.len() >= len {
        return Arc::from(&first[..len]);
    }
    let mut bytes: Arc<[u8]> = std::iter::repeat_n(0u8, len).collect();
    let target = Arc::get_mut(&mut bytes).expect("a fresh Arc has one owner");
    let mut at = 0;
    for part in std::iter::once(first).chain(bufs.map(|b| shard.buf(b))) {
        let n = part.len().min(len - at);
        target[at..at + n].copy_from_slice(&part[..n]);
        at += n;
        if at == len {
            break;
        }
    }
    // `admit` gave the command buffers for all of its data.
    debug_assert_eq!(at, len, "the command's buffers hold its data");
    bytes
}

/// `len` bytes from `offset` cut at region boundaries: (offset, length) of
/// each part (the state machine takes each host operation within one
/// region).
fn region_parts(offset: u64, len: u64, region: u64) -> impl Iterator<Item = (u64, u64)> {
    let end = offset.saturating_add(len);
    std::iter::successors(Some(offset), move |&at| {
        let next = (at / region + 1).saturating_mul(region);
        (next < end).then_some(next)
    })
    .filter(move |&at| at < end)
    .map(move |at| (at, (region - at % region).min(end - at)))
}

/// The NVMe status for how the state machine ended a host operation.
pub(super) fn host_status(status: HostStatus) -> Status {
    match status {
        HostStatus::Success => Status::SUCCESS,
        // Not (or no longer) the serving primary: the host must use another
        // path, which the ANA log names.
        HostStatus::PathError => Status::ANA_INACCESSIBLE,
        HostStatus::MediaError => Status::WRITE_FAULT,
        HostStatus::Busy => Status::COMMAND_INTERRUPTED,
        HostStatus::InvalidRange => Status::LBA_OUT_OF_RANGE,
    }
}

#[cfg(test)]
mod tests {
    use super::region_parts;

    #[test]
    fn a_range_is_cut_at_region_boundaries() {
        let parts = |offset, len| region_parts(offset, len, 100).collect::<Vec<_>>();
        assert_eq!(parts(0, 100), [(0, 100)]);
        assert_eq!(parts(50, 100), [(50, 50), (100, 50)]);
        assert_eq!(
            parts(250, 260),
            [(250, 50), (300, 100), (400, 100), (500, 10)]
        );
        assert!(parts(70, 0).is_empty());
    }
}
