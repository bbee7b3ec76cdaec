//! The per-connection queue state the socket layer keeps: which queue of
//! which controller a TCP connection carries, its SQ head pointer, and the
//! I/O commands handed to the data path and not completed yet.

use std::collections::BTreeSet;

use crate::controller::response::Completion;
use crate::nvme::cqe::CompletionQueueEntry;

/// Which queue a connection is bound to, fixed by its Connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueBinding {
    pub cntlid: u16,
    pub qid: u16,
    /// The controller instance (see `Controller::instance`).
    pub instance: u64,
    /// For I/O queues, the controller's I/O queue epoch at Connect.
    pub io_epoch: u32,
    /// Submission queue entries (SQSIZE + 1).
    pub entries: u32,
    /// The host asked to disable SQ flow control (Connect CATTR bit 2).
    pub sq_flow_control_disabled: bool,
}

/// One NVMe/TCP connection's queue. Create one per accepted connection
/// (after ICReq/ICResp) and pass it to every
/// [`crate::controller::Target`] call for that connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSession {
    binding: Option<QueueBinding>,
    sqhd: u16,
    /// CIDs of I/O commands with the data path; at most `entries`.
    in_flight: BTreeSet<u16>,
}

impl QueueSession {
    /// A connection that has not sent Connect yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The controller this queue belongs to, once connected.
    pub fn cntlid(&self) -> Option<u16> {
        self.binding.map(|binding| binding.cntlid)
    }

    /// The queue identifier (0 = admin), once connected.
    pub fn qid(&self) -> Option<u16> {
        self.binding.map(|binding| binding.qid)
    }

    /// Whether Connect succeeded on this connection.
    pub fn is_connected(&self) -> bool {
        self.binding.is_some()
    }

    /// Queue depth the host negotiated (SQSIZE + 1), once connected.
    pub fn queue_entries(&self) -> Option<u32> {
        self.binding.map(|binding| binding.entries)
    }

    /// Whether the host disabled SQ flow control at Connect. Only then may
    /// a read complete with the C2HData SUCCESS flag instead of a
    /// CapsuleResp (NVMe/TCP 1.0 §3.3.3.2: the host then needs no SQHD).
    pub fn sq_flow_control_disabled(&self) -> bool {
        self.binding
            .is_some_and(|binding| binding.sq_flow_control_disabled)
    }

    /// I/O commands handed to the data path and not completed yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Records an I/O command going to the data path. A CID already in
    /// flight is a Command ID Conflict; more commands than the queue holds
    /// means the host ignores its queue size, and the command is refused
    /// as interrupted (retryable) rather than letting one connection take
    /// unbounded resources.
    pub(crate) fn start_io(&mut self, cid: u16) -> Result<(), crate::nvme::status::Status> {
        use crate::nvme::status::Status;
        if self.in_flight.contains(&cid) {
            return Err(Status::COMMAND_ID_CONFLICT);
        }
        let entries = self.binding.map_or(0, |binding| binding.entries);
        if self.in_flight.len() >= entries as usize {
            return Err(Status::COMMAND_INTERRUPTED);
        }
        self.in_flight.insert(cid);
        Ok(())
    }

    /// The data path finished command `cid`.
    pub(crate) fn finish_io(&mut self, cid: u16) {
        self.in_flight.remove(&cid);
    }

    pub(crate) fn binding(&self) -> Option<QueueBinding> {
        self.binding
    }

    /// Binds the queue; the Connect itself was the first entry consumed.
    pub(crate) fn bind(&mut self, binding: QueueBinding) {
        self.binding = Some(binding);
        self.sqhd = 0;
        self.advance_head();
    }

    pub(crate) fn unbind(&mut self) {
        self.binding = None;
        self.in_flight.clear();
    }

    /// One command consumed: the head moves on, wrapping at the queue size.
    /// The Linux host ignores SQHD with SQ flow control disabled, but it is
    /// kept right for hosts that do not.
    pub(crate) fn advance_head(&mut self) {
        if let Some(binding) = self.binding {
            let next = (u32::from(self.sqhd) + 1) % binding.entries.max(1);
            // entries <= MQES + 1 <= 65536, so next < 65536.
            self.sqhd = next as u16;
        }
    }

    /// The CQE of command `cid` on this queue.
    pub(crate) fn cqe(&self, cid: u16, completion: &Completion) -> CompletionQueueEntry {
        let mut cqe = CompletionQueueEntry::new(cid, completion.status);
        cqe.dw0 = completion.dw0;
        cqe.dw1 = completion.dw1;
        cqe.sqhd = self.sqhd;
        cqe.sqid = self.qid().unwrap_or(0);
        cqe
    }
}
