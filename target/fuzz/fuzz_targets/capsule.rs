//! Capsule / command handling: a scripted host drives a [`Target`] with one
//! subsystem through arbitrary sequences of command capsules on a few
//! queue sessions, interleaved with I/O completions, keep-alive ticks,
//! asynchronous completion draining, connection closes and configuration
//! changes, exactly as the socket layer drives it (see
//! `keel_target::controller`).
//!
//! Input: one configuration byte, then steps.
//! - config bit 0: set up first (admin queue connected on session 0 and
//!   enabled with CC.EN=1, I/O queues 1 and 2 connected on sessions 1
//!   and 2), so every mutation starts from a live controller; without it
//!   the script must Connect and enable by itself (the seeds do).
//! - config bit 1: tight limits (2 controllers, 2 I/O queues, MQES 31,
//!   one AER, 8 KiB MDTS, 4 KiB in-capsule data), so the exhaustion paths
//!   are reachable.
//! - config bit 2: the subsystem only admits the seeds' host NQN.
//!
//! Each step is an op byte: bits 0..3 the action, bits 3..8 its
//! parameter `p` (bits 3..5, `p & 3`, pick one of four sessions):
//! - 0, 1: submit: 64 bytes of SQE, a little-endian u16 length and that
//!   many bytes of in-capsule data (a Connect carries 1024 bytes, more
//!   than a length byte can say), submitted on session `p & 3`;
//! - 2: complete pending I/O command `p % pending` with a status from `p`;
//! - 3: advance the clock by the next byte times 100 ms and `tick`; the
//!   expired controllers' sessions are closed and the controllers torn
//!   down (as the daemon does);
//! - 4: drain `take_async_completions`;
//! - 5: `close_queue` on session `p & 3` (its pending I/O is dropped);
//! - 6: a configuration change on the subsystem (namespace added,
//!   removed, resized, made (not) ready; listener removed or added;
//!   subsystem removed and added back);
//! - 7: `teardown` of the controller of session `p & 3`.
//!
//! Invariants checked besides "no panic": a completion echoes the CID,
//! carries the SQID of its queue and an SQHD inside the queue, and its
//! data fits the output buffer; I/O commands come only from connected
//! I/O queues, echo the CID, stay within the namespace, MDTS and the
//! capsule, and never exceed the queue depth in flight; only AERs on an
//! admin queue are parked, at most AERL + 1 per controller, and every
//! asynchronous completion answers exactly one parked AER on SQID 0;
//! controllers never exceed the limit; `tick` reports each controller
//! once.

#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use keel_target::controller::{
    BlockGeometry, DataSource, IoCommand, IoOperation, Listener, Namespace, QueueSession, Reply,
    Subsystem, Target, TargetLimits, Timestamp,
};
use keel_target::nvme::discovery::AddressFamily;
use keel_target::nvme::fabrics::{
    property, ConnectCommand, ConnectData, FabricsCommand, PropertySetCommand, PropertySize,
    CNTLID_DYNAMIC, CONNECT_DATA_LEN,
};
use keel_target::nvme::sqe::{SubmissionQueueEntry, SQE_LEN};
use keel_target::nvme::status::Status;
use libfuzzer_sys::fuzz_target;

const SUBNQN: &str = "nqn.2024-01.dev.keel:vol0";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
const SESSIONS: usize = 4;
/// Largest in-capsule data fed in one step (the default IOCCSZ's 16 KiB,
/// plus a little to exceed it).
const MAX_CAPSULE_DATA: usize = 16 * 1024 + 64;
/// The largest output buffer any limits give (MDTS is clamped to 12).
const OUT_MAX: usize = 4096 << 12;

/// `CAPSULE_TRACE=1` prints every reply (to see what an input does).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CAPSULE_TRACE").is_some())
}

thread_local! {
    /// One output buffer for all runs: zeroing 1 MiB per input would cost
    /// more than the commands.
    static OUT: RefCell<Vec<u8>> = RefCell::new(vec![0; OUT_MAX]);
}

fn namespace(block_size: u32, blocks: u64, tag: u8) -> Namespace {
    Namespace::new(
        BlockGeometry::new(block_size, blocks).expect("valid geometry"),
        [tag; 16],
        [tag ^ 0xFF; 16],
    )
}

fn subsystem(restricted: bool) -> Subsystem {
    let mut subsystem =
        Subsystem::new(SUBNQN, "KEEL0001", "Keel volume", "1.0").expect("valid subsystem");
    subsystem
        .add_namespace(1, namespace(4096, 256, 0xA5))
        .expect("nsid 1");
    subsystem
        .add_namespace(2, namespace(512, 1 << 20, 0x5A))
        .expect("nsid 2");
    if restricted {
        subsystem.allow_host(HOSTNQN).expect("valid host NQN");
    }
    subsystem
}

fn listener(port: u16) -> Listener {
    Listener::new(port, AddressFamily::Ipv4, "127.0.0.1", "4420").expect("valid listener")
}

/// An I/O command handed to the data path and not completed yet.
struct Pending {
    session: usize,
    command: IoCommand,
}

struct Host<'a> {
    target: Target,
    sessions: [QueueSession; SESSIONS],
    out: &'a mut [u8],
    now: Timestamp,
    pending: Vec<Pending>,
    /// AERs parked by the target: (cntlid, controller generation, cid).
    parked: Vec<(u16, u32, u16)>,
    /// Admin Connects that returned each CNTLID: tells a controller from
    /// a later one that reuses its ID.
    generations: BTreeMap<u16, u32>,
    restricted: bool,
}

impl Host<'_> {
    fn submit(&mut self, index: usize, sqe: &SubmissionQueueEntry, data: &[u8]) -> Reply {
        let before = self.sessions[index].binding_view();
        let reply = self
            .target
            .submit(&mut self.sessions[index], sqe, data, self.out, self.now);
        let after = self.sessions[index].binding_view();
        if trace() {
            eprintln!(
                "session {index} opcode {:#04x} cid {:#06x}: {reply:?}",
                sqe.opcode, sqe.cid
            );
        }
        match &reply {
            Reply::Complete(response) if before.is_some() && after.is_none() => {
                // An I/O queue's Disconnect: the socket layer sends the CQE
                // and closes the connection; what the data path still has
                // for it completes into the void.
                assert_eq!(response.cqe.cid, sqe.cid, "CID echoed");
                assert_ne!(before.map(|(qid, _, _)| qid), Some(0), "admin queues stay");
                self.close(index);
            }
            Reply::Complete(response) => {
                let cqe = &response.cqe;
                assert_eq!(cqe.cid, sqe.cid, "CID echoed");
                assert!(response.data_len <= self.out.len(), "data fits the buffer");
                // The queue the command completed on: the one bound after
                // it (Connect), or before it (an I/O queue's Disconnect
                // unbinds), else none.
                let queue = after.or(before);
                assert_eq!(cqe.sqid, queue.map_or(0, |(qid, _, _)| qid), "SQID");
                if let Some((_, _, entries)) = queue {
                    assert!(u32::from(cqe.sqhd) < entries, "SQHD within the queue");
                }
                if cqe.status.is_success() {
                    if let Some(FabricsCommand::Connect(connect)) = FabricsCommand::from_sqe(sqe) {
                        assert!(after.is_some(), "a successful Connect binds the queue");
                        if connect.qid == 0 {
                            let cntlid = cqe.dw0 as u16;
                            assert_eq!(after.map(|(_, c, _)| c), Some(cntlid), "CNTLID in DW0");
                            *self.generations.entry(cntlid).or_default() += 1;
                        }
                    }
                }
            }
            Reply::Io(command) => {
                self.check_io(index, sqe, data, command, before);
                self.pending.push(Pending {
                    session: index,
                    command: command.clone(),
                });
            }
            Reply::Deferred => {
                assert_eq!(sqe.opcode, 0x0C, "only AERs are parked");
                let (qid, cntlid, _) = before.expect("parked on a connected queue");
                assert_eq!(qid, 0, "AERs are admin commands");
                // AERs completed since the last drain are parked no more:
                // account for them before counting.
                self.drain();
                let generation = self.generations.get(&cntlid).copied().unwrap_or(0);
                self.parked.push((cntlid, generation, sqe.cid));
                let aerl = usize::from(self.target.limits().aerl);
                let outstanding = self
                    .parked
                    .iter()
                    .filter(|(c, g, _)| (*c, *g) == (cntlid, generation))
                    .count();
                assert!(outstanding <= aerl + 1, "at most AERL + 1 AERs parked");
            }
        }
        assert!(
            self.target.controller_count() <= usize::from(self.target.limits().max_controllers)
        );
        reply
    }

    fn check_io(
        &self,
        index: usize,
        sqe: &SubmissionQueueEntry,
        data: &[u8],
        command: &IoCommand,
        before: Option<(u16, u16, u32)>,
    ) {
        assert_eq!(command.cid, sqe.cid, "CID echoed");
        let (qid, _, entries) = before.expect("I/O only from a connected queue");
        assert_ne!(qid, 0, "I/O only on I/O queues");
        let session = &self.sessions[index];
        assert!(
            session.in_flight() as u32 <= entries,
            "queue depth respected"
        );
        let limits = self.target.limits();
        let mdts = limits.max_transfer_bytes();
        let subsystem = self.target.subsystem(SUBNQN).expect("subsystem hosted");
        let capacity = |nsid: u32| {
            subsystem
                .namespace(nsid)
                .expect("I/O only to an existing namespace")
                .geometry
                .bytes()
        };
        let in_capsule = |source: &DataSource, len: u64| {
            assert_eq!(source.len(), len, "data length matches the range");
            if let DataSource::InCapsule { .. } = source {
                let bytes = source.in_capsule(data).expect("in-capsule data present");
                assert_eq!(bytes.len() as u64, len);
            }
        };
        match &command.operation {
            IoOperation::Read { range, .. } => {
                assert!(range.len <= mdts, "read within MDTS");
                assert!(range.offset + range.len <= capacity(command.nsid));
            }
            IoOperation::Write { range, data, .. } | IoOperation::Compare { range, data } => {
                assert!(range.len <= mdts, "transfer within MDTS");
                assert!(range.offset + range.len <= capacity(command.nsid));
                in_capsule(data, range.len);
            }
            IoOperation::WriteZeroes { range, .. } => {
                assert!(range.offset + range.len <= capacity(command.nsid));
            }
            IoOperation::Flush => {}
            IoOperation::DatasetManagement(_) => {
                let _ = capacity(command.nsid);
            }
        }
    }

    fn complete_io(&mut self, p: u8) {
        if self.pending.is_empty() {
            return;
        }
        let pending = self.pending.remove(usize::from(p) % self.pending.len());
        let status = match p >> 3 {
            0 | 1 => Status::SUCCESS,
            2 => Status::COMPARE_FAILURE,
            3 => Status::INTERNAL_ERROR,
            _ => Status::NAMESPACE_NOT_READY,
        };
        let session = &mut self.sessions[pending.session];
        let in_flight = session.in_flight();
        let qid = session.qid().unwrap_or(0);
        let cqe = self.target.complete_io(session, &pending.command, status);
        assert_eq!(cqe.cid, pending.command.cid, "CID echoed");
        assert_eq!(cqe.status, status);
        assert_eq!(cqe.sqid, qid);
        assert_eq!(session.in_flight() + 1, in_flight, "one command retired");
    }

    fn tick(&mut self, step_100ms: u8) {
        self.now = Timestamp::from_duration(
            self.now.since_origin() + std::time::Duration::from_millis(u64::from(step_100ms) * 100),
        );
        let expired = self.target.tick(self.now);
        let unique: BTreeSet<u16> = expired.iter().copied().collect();
        assert_eq!(unique.len(), expired.len(), "each expiry reported once");
        for cntlid in expired {
            for index in 0..SESSIONS {
                if self.sessions[index].cntlid() == Some(cntlid) {
                    self.close(index);
                }
            }
            self.target.teardown(cntlid);
        }
        // Reported once: an immediate second tick reports nothing.
        assert!(
            self.target.tick(self.now).is_empty(),
            "expiry reported once"
        );
    }

    fn drain(&mut self) {
        for completion in self.target.take_async_completions() {
            assert_eq!(completion.cqe.sqid, 0, "AERs complete on the admin queue");
            let index = self
                .parked
                .iter()
                .position(|(cntlid, _, cid)| {
                    (*cntlid, *cid) == (completion.cntlid, completion.cqe.cid)
                })
                .expect("an asynchronous completion answers a parked AER");
            self.parked.remove(index);
        }
    }

    fn close(&mut self, index: usize) {
        self.target.close_queue(&mut self.sessions[index]);
        assert!(!self.sessions[index].is_connected());
        assert_eq!(self.sessions[index].in_flight(), 0);
        self.pending.retain(|pending| pending.session != index);
        self.sessions[index] = QueueSession::new();
    }

    fn configure(&mut self, p: u8) {
        let target = &mut self.target;
        // Errors (unknown namespace, duplicate listener...) are fine here.
        let _ = match p % 8 {
            0 => target.add_namespace(SUBNQN, 3, namespace(4096, 16, 0x33)),
            1 => target.remove_namespace(SUBNQN, 2).map(|_| ()),
            2 => target.resize_namespace(SUBNQN, 1, 8 << (p >> 3)),
            3 => target.set_namespace_ready(SUBNQN, 1, p & 8 != 0),
            4 => target.remove_listener(1).map(|_| ()),
            5 => target.add_listener(listener(1 + u16::from(p >> 3))),
            6 => target.add_namespace(SUBNQN, 2, namespace(512, 1 << 20, 0x5A)),
            _ => {
                // Tears its controllers down; their sessions go stale.
                let gone = target.remove_subsystem(SUBNQN).unwrap_or_default();
                let added = target.add_subsystem(subsystem(self.restricted));
                assert!(added.is_ok(), "subsystem re-added");
                for cntlid in gone {
                    assert!(target.controller_info(cntlid).is_none());
                }
                Ok(())
            }
        };
    }

    fn teardown(&mut self, index: usize) {
        if let Some(cntlid) = self.sessions[index].cntlid() {
            self.target.teardown(cntlid);
            assert!(self.target.controller_info(cntlid).is_none());
        }
    }

    /// Connect on the admin queue, CC.EN=1, two I/O queues.
    fn set_up(&mut self) {
        let (sqe, data) = connect_capsule(1, 0, CNTLID_DYNAMIC);
        let cntlid = match self.submit(0, &sqe, &data) {
            Reply::Complete(response) if response.cqe.status.is_success() => {
                response.cqe.dw0 as u16
            }
            other => panic!("admin Connect failed: {other:?}"),
        };
        let cc = FabricsCommand::PropertySet(PropertySetCommand {
            size: PropertySize::Four,
            offset: property::CC,
            value: 0x46_0061,
        })
        .to_sqe(2);
        assert!(matches!(self.submit(0, &cc, &[]),
            Reply::Complete(r) if r.cqe.status.is_success()));
        for qid in 1..=2u16 {
            let (sqe, data) = connect_capsule(2 + qid, qid, cntlid);
            assert!(matches!(self.submit(usize::from(qid), &sqe, &data),
                Reply::Complete(r) if r.cqe.status.is_success()));
        }
    }
}

/// (QID, CNTLID, entries) of a session, once connected.
trait BindingView {
    fn binding_view(&self) -> Option<(u16, u16, u32)>;
}

impl BindingView for QueueSession {
    fn binding_view(&self) -> Option<(u16, u16, u32)> {
        Some((self.qid()?, self.cntlid()?, self.queue_entries()?))
    }
}

fn connect_capsule(cid: u16, qid: u16, cntlid: u16) -> (SubmissionQueueEntry, Vec<u8>) {
    let sqe = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: 31,
        cattr: 0,
        kato: if qid == 0 { 5000 } else { 0 },
    }
    .to_sqe(cid);
    let mut data = [0u8; CONNECT_DATA_LEN];
    ConnectData {
        host_id: [0x11; 16],
        cntlid,
        subnqn: SUBNQN,
        hostnqn: HOSTNQN,
    }
    .write_into(&mut data)
    .expect("valid Connect data");
    (sqe, data.to_vec())
}

fn limits(tight: bool) -> TargetLimits {
    let mut limits = TargetLimits::default();
    if tight {
        limits.max_controllers = 2;
        limits.cntlid_min = 1;
        limits.cntlid_max = 3;
        limits.max_io_queues = 2;
        limits.mqes = 31;
        limits.aerl = 0;
        limits.mdts = 1;
        limits.in_capsule_data_size = 4096;
    }
    limits
}

fn run(input: &[u8], out: &mut [u8]) {
    let Some((&config, mut rest)) = input.split_first() else {
        return;
    };
    let restricted = config & 4 != 0;
    let mut target = Target::new(limits(config & 2 != 0));
    target.add_listener(listener(1)).expect("listener");
    target
        .add_subsystem(subsystem(restricted))
        .expect("subsystem");
    let out_len = target.output_buffer_len();
    let mut host = Host {
        target,
        sessions: Default::default(),
        out: &mut out[..out_len],
        now: Timestamp::ZERO,
        pending: Vec::new(),
        parked: Vec::new(),
        generations: BTreeMap::new(),
        restricted,
    };
    if config & 1 != 0 {
        host.set_up();
    }
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let p = op >> 3;
        let index = usize::from(p & 3);
        match op & 7 {
            0 | 1 => {
                if rest.len() < SQE_LEN {
                    break;
                }
                let (sqe, tail) = rest.split_at(SQE_LEN);
                let sqe = SubmissionQueueEntry::decode(sqe.try_into().expect("64 bytes"));
                let (len, tail) = match tail {
                    [lo, hi, tail @ ..] => (usize::from(u16::from_le_bytes([*lo, *hi])), tail),
                    _ => (0, &[][..]),
                };
                let len = len.min(tail.len()).min(MAX_CAPSULE_DATA);
                let (data, tail) = tail.split_at(len);
                rest = tail;
                host.submit(index, &sqe, data);
            }
            2 => host.complete_io(p),
            3 => {
                let Some((&step, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                host.tick(step);
            }
            4 => host.drain(),
            5 => host.close(index),
            6 => host.configure(p),
            _ => host.teardown(index),
        }
    }
    // The socket layer's end: every connection closes, then everything
    // parked must have been answered.
    for index in 0..SESSIONS {
        host.close(index);
    }
    host.drain();
    assert_eq!(
        host.target.controller_count(),
        0,
        "no controller outlives its admin queue"
    );
    assert!(
        host.parked.is_empty(),
        "every parked AER answered: {:?}",
        host.parked
    );
}

fuzz_target!(|input: &[u8]| {
    OUT.with(|out| run(input, &mut out.borrow_mut()));
});
