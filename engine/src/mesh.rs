//! Bounded lock-free queues between shards, one per (source, destination)
//! pair, plus one per shard for senders outside the engine (control plane).
//!
//! A queue has exactly one producer and one consumer, so no two cores ever
//! contend on one queue's head. A full queue is backpressure: the sender gets
//! its message back and decides (retry later, fail the request); nothing
//! grows without bound.
//!
//! Waking: a shard that found nothing to do for its spin period sleeps in the
//! kernel on its ring, with a read on its eventfd armed. A sender that pushes
//! to a sleeping shard writes that eventfd. The `sleeping` flag and the queue
//! are checked in opposite orders on the two sides (Dekker style, SeqCst), so
//! a message is never left behind a sleeping shard.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use nix::sys::eventfd::{EfdFlags, EventFd};

/// Index of a shard (0..cores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard{}", self.0)
    }
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Shard(ShardId),
    External,
}

/// Wakes a shard that sleeps in the kernel.
pub struct Waker {
    sleeping: AtomicBool,
    eventfd: EventFd,
}

impl Waker {
    fn new() -> std::io::Result<Waker> {
        Ok(Waker {
            sleeping: AtomicBool::new(false),
            // Blocking on purpose: only the ring reads it, and io_uring
            // completes a read on an O_NONBLOCK descriptor at once with
            // EAGAIN instead of waiting for a wake-up.
            eventfd: EventFd::from_flags(EfdFlags::EFD_CLOEXEC)?,
        })
    }

    /// Wakes the shard if it is (about to be) asleep.
    pub fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.wake_now();
        }
    }

    fn wake_now(&self) {
        // Cannot block: the counter would need 2^64-2 unread wakes first.
        let _ = self.eventfd.write(1);
    }

    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_fd().as_raw_fd()
    }

    /// Announces the shard will sleep. The caller must look at its queues
    /// once more after this and before it sleeps.
    pub fn prepare_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }
}

pub(crate) struct MeshShared<M> {
    shards: usize,
    /// `pairs[src * shards + dst]`.
    pairs: Vec<ArrayQueue<M>>,
    external: Vec<ArrayQueue<M>>,
    wakers: Vec<Waker>,
}

impl<M> MeshShared<M> {
    pub(crate) fn new(shards: usize, capacity: usize) -> std::io::Result<Arc<MeshShared<M>>> {
        let capacity = capacity.max(1);
        Ok(Arc::new(MeshShared {
            shards,
            pairs: (0..shards * shards)
                .map(|_| ArrayQueue::new(capacity))
                .collect(),
            external: (0..shards).map(|_| ArrayQueue::new(capacity)).collect(),
            wakers: (0..shards)
                .map(|_| Waker::new())
                .collect::<Result<_, _>>()?,
        }))
    }

    pub(crate) fn waker(&self, shard: ShardId) -> &Waker {
        &self.wakers[shard.0]
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// From outside the engine. Gives the message back if the queue is full
    /// or the shard does not exist.
    pub(crate) fn send_external(&self, dst: ShardId, msg: M) -> Result<(), M> {
        let Some(queue) = self.external.get(dst.0) else {
            return Err(msg);
        };
        queue.push(msg)?;
        self.wakers[dst.0].wake();
        Ok(())
    }

    /// Wakes every shard regardless of its flag (stop requests).
    pub(crate) fn wake_all(&self) {
        for w in &self.wakers {
            w.wake_now();
        }
    }
}

/// One shard's end of the mesh.
pub struct Mailbox<M> {
    me: ShardId,
    shared: Arc<MeshShared<M>>,
}

impl<M> Mailbox<M> {
    pub(crate) fn new(me: ShardId, shared: Arc<MeshShared<M>>) -> Mailbox<M> {
        Mailbox { me, shared }
    }

    pub fn me(&self) -> ShardId {
        self.me
    }

    pub fn shards(&self) -> usize {
        self.shared.shards
    }

    /// Sends to `dst` (which may be this shard). Gives the message back when
    /// that queue is full or `dst` does not exist.
    pub fn send(&self, dst: ShardId, msg: M) -> Result<(), M> {
        if dst.0 >= self.shared.shards {
            return Err(msg);
        }
        self.shared.pairs[self.me.0 * self.shared.shards + dst.0].push(msg)?;
        if dst != self.me {
            self.shared.wakers[dst.0].wake();
        }
        Ok(())
    }

    /// Takes up to `limit` messages addressed to this shard, fairly from each
    /// source, so one busy sender cannot starve the others.
    pub fn drain(&self, limit: usize, mut each: impl FnMut(Origin, M)) -> usize {
        let n = self.shared.shards;
        let per_source = (limit / (n + 1)).max(1);
        let mut taken = 0;
        for src in 0..n {
            let queue = &self.shared.pairs[src * n + self.me.0];
            for _ in 0..per_source {
                match queue.pop() {
                    Some(msg) => {
                        each(Origin::Shard(ShardId(src)), msg);
                        taken += 1;
                    }
                    None => break,
                }
            }
        }
        let external = &self.shared.external[self.me.0];
        for _ in 0..per_source {
            match external.pop() {
                Some(msg) => {
                    each(Origin::External, msg);
                    taken += 1;
                }
                None => break,
            }
        }
        taken
    }

    /// Whether anything waits for this shard.
    pub fn has_mail(&self) -> bool {
        let n = self.shared.shards;
        (0..n).any(|src| !self.shared.pairs[src * n + self.me.0].is_empty())
            || !self.shared.external[self.me.0].is_empty()
    }

    pub fn waker(&self) -> &Waker {
        self.shared.waker(self.me)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_gives_the_message_back() {
        let shared = MeshShared::<u32>::new(2, 2).unwrap();
        let a = Mailbox::new(ShardId(0), shared.clone());
        a.send(ShardId(1), 1).unwrap();
        a.send(ShardId(1), 2).unwrap();
        assert_eq!(a.send(ShardId(1), 3), Err(3));
        assert_eq!(a.send(ShardId(7), 4), Err(4));
        let b = Mailbox::new(ShardId(1), shared);
        let mut got = vec![];
        b.drain(64, |o, m| got.push((o, m)));
        assert_eq!(
            got,
            vec![
                (Origin::Shard(ShardId(0)), 1),
                (Origin::Shard(ShardId(0)), 2)
            ]
        );
        a.send(ShardId(1), 3).unwrap();
    }

    #[test]
    fn drain_is_fair_across_sources() {
        let shared = MeshShared::<usize>::new(3, 64).unwrap();
        for src in 0..2 {
            let m = Mailbox::new(ShardId(src), shared.clone());
            for i in 0..64 {
                m.send(ShardId(2), src * 100 + i).unwrap();
            }
        }
        let dst = Mailbox::new(ShardId(2), shared);
        let mut from = [0usize; 2];
        dst.drain(16, |o, _| {
            if let Origin::Shard(s) = o {
                from[s.0] += 1;
            }
        });
        assert_eq!(from, [4, 4]);
    }

    #[test]
    fn wake_reaches_a_sleeping_shard_only() {
        let shared = MeshShared::<u8>::new(2, 4).unwrap();
        let a = Mailbox::new(ShardId(0), shared.clone());
        let b = Mailbox::new(ShardId(1), shared.clone());
        a.send(ShardId(1), 1).unwrap();
        let signalled = || {
            use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
            // SAFETY: the eventfd outlives this poll call.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(b.waker().eventfd()) };
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
        };
        assert!(!signalled(), "awake shard was signalled");
        b.waker().prepare_sleep();
        a.send(ShardId(1), 2).unwrap();
        assert!(signalled());
        b.waker().awake();
        assert!(b.has_mail());
    }
}
