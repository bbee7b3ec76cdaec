//! An I/O queue with up to `depth` commands in flight. Each command slot
//! owns a data buffer; the command ID is the slot number, so a completion
//! finds its slot without a lookup table.

use super::connection::Connection;
use super::controller::NamespaceInfo;
use super::{InitiatorError, Result};
use crate::nvme::command::ReadWriteCommand;
use crate::nvme::sqe::Psdt;
use crate::nvme::{IoOpcode, SglDescriptor, Status, StatusCodeType, SubmissionQueueEntry};
use crate::tcp::{CapsuleCmd, DataPdu, PduHeader};

/// What a slot's command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// Read into the slot's buffer.
    Read,
    /// Write the slot's buffer; `fua`: durable before completion.
    Write {
        /// Force Unit Access.
        fua: bool,
    },
    /// Flush the namespace (no data; `lba` and `blocks` are ignored).
    Flush,
}

/// A finished command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoDone {
    /// The slot it ran in.
    pub slot: u16,
    /// NVMe status (success or why not).
    pub status: Status,
}

struct Slot {
    busy: bool,
    kind: IoKind,
    len: u32,
    received: u32,
    buf: Vec<u8>,
}

/// An I/O queue on its own connection.
pub struct IoQueue {
    conn: Connection,
    namespace: NamespaceInfo,
    slots: Vec<Slot>,
    max_transfer: u32,
    max_in_capsule: u32,
    busy: usize,
}

impl IoQueue {
    pub(super) fn new(
        conn: Connection,
        namespace: NamespaceInfo,
        depth: u16,
        max_transfer: u32,
        max_in_capsule: u32,
    ) -> IoQueue {
        let slots = (0..depth.max(1))
            .map(|_| Slot {
                busy: false,
                kind: IoKind::Read,
                len: 0,
                received: 0,
                buf: Vec::new(),
            })
            .collect();
        IoQueue {
            conn,
            namespace,
            slots,
            max_transfer,
            max_in_capsule,
            busy: 0,
        }
    }

    /// Commands this queue can have in flight.
    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    /// Commands in flight now.
    pub fn in_flight(&self) -> usize {
        self.busy
    }

    /// Largest transfer of one command.
    pub fn max_transfer(&self) -> u32 {
        self.max_transfer
    }

    /// The namespace this queue does I/O to.
    pub fn namespace(&self) -> NamespaceInfo {
        self.namespace
    }

    /// Busy-poll the connection instead of sleeping (see
    /// [`crate::initiator::Connection::set_busy_poll`]).
    pub fn set_busy_poll(&mut self, on: bool) -> Result<()> {
        self.conn.set_busy_poll(on)
    }

    /// The slot's buffer sized for `len` bytes: fill it before a write, read
    /// it after a read completes.
    pub fn buffer(&mut self, slot: u16, len: usize) -> &mut [u8] {
        let buf = &mut self.slots[slot as usize].buf;
        buf.resize(len, 0);
        buf
    }

    /// Starts `kind` of `blocks` logical blocks at `lba` in `slot` (whose
    /// buffer must hold the data for a write).
    pub fn submit(&mut self, slot: u16, kind: IoKind, lba: u64, blocks: u32) -> Result<()> {
        if kind == IoKind::Flush {
            return self.submit_flush(slot);
        }
        let len = blocks
            .checked_mul(self.namespace.block_size)
            .filter(|&len| len > 0 && len <= self.max_transfer && blocks <= 1 << 16)
            .ok_or_else(|| {
                InitiatorError::Protocol(format!("{blocks} blocks exceed the transfer limit"))
            })?;
        let s = self
            .slots
            .get_mut(slot as usize)
            .ok_or_else(|| InitiatorError::Protocol(format!("no slot {slot}")))?;
        if s.busy {
            return Err(InitiatorError::Protocol(format!("slot {slot} is busy")));
        }
        s.buf.resize(len as usize, 0);
        let (opcode, fua) = match kind {
            IoKind::Read => (IoOpcode::Read, false),
            IoKind::Write { fua } => (IoOpcode::Write, fua),
            IoKind::Flush => (IoOpcode::Flush, false),
        };
        let mut sqe = SubmissionQueueEntry {
            opcode: opcode.as_u8(),
            cid: slot,
            nsid: self.namespace.nsid,
            ..Default::default()
        };
        sqe.set_psdt(Psdt::SglMetadataBuffer);
        ReadWriteCommand {
            slba: lba,
            nlb: (blocks - 1) as u16,
            fua,
            limited_retry: false,
            deallocate: false,
        }
        .write_to(&mut sqe);
        let in_capsule = matches!(kind, IoKind::Write { .. }) && len <= self.max_in_capsule;
        sqe.set_sgl1(if in_capsule {
            SglDescriptor::InCapsule {
                offset: 0,
                length: len,
            }
        } else {
            SglDescriptor::TransportDataBlock { length: len }
        });
        s.busy = true;
        s.kind = kind;
        s.len = len;
        s.received = 0;
        self.busy += 1;
        let data: &[u8] = if in_capsule { &s.buf } else { &[] };
        // Queued: it goes out with the others issued before the next wait.
        self.conn
            .queue(&PduHeader::CapsuleCmd(CapsuleCmd { sqe }), data)
    }

    fn submit_flush(&mut self, slot: u16) -> Result<()> {
        let s = self
            .slots
            .get_mut(slot as usize)
            .ok_or_else(|| InitiatorError::Protocol(format!("no slot {slot}")))?;
        if s.busy {
            return Err(InitiatorError::Protocol(format!("slot {slot} is busy")));
        }
        let mut sqe = SubmissionQueueEntry {
            opcode: IoOpcode::Flush.as_u8(),
            cid: slot,
            nsid: self.namespace.nsid,
            ..Default::default()
        };
        sqe.set_psdt(Psdt::SglMetadataBuffer);
        s.busy = true;
        s.kind = IoKind::Flush;
        s.len = 0;
        s.received = 0;
        self.busy += 1;
        self.conn
            .queue(&PduHeader::CapsuleCmd(CapsuleCmd { sqe }), &[])
    }

    /// Sends the commands submitted so far without waiting for anything
    /// (`wait` sends them too; this lets a caller put several queues'
    /// commands on the wire before it waits on any).
    pub fn send(&mut self) -> Result<()> {
        self.conn.flush()
    }

    /// Bounds how long [`wait`](Self::wait) may go without receiving
    /// anything; past it, `wait` fails instead of blocking for ever (a test
    /// against a target that stopped answering ends with an error).
    pub fn set_timeout(&mut self, timeout: Option<std::time::Duration>) -> Result<()> {
        self.conn.set_timeout(timeout)
    }

    /// Waits for at least one completion and appends every completion that
    /// is ready to `done`.
    pub fn wait(&mut self, done: &mut Vec<IoDone>) -> Result<()> {
        if self.busy == 0 {
            return Ok(());
        }
        let before = done.len();
        while done.len() == before || self.conn.has_buffered_pdu() {
            self.handle_one(done)?;
        }
        // H2CData queued for R2Ts answered above must not wait for the
        // caller's next call.
        self.conn.flush()
    }

    fn handle_one(&mut self, done: &mut Vec<IoDone>) -> Result<()> {
        let maxh2c = self.conn.maxh2cdata().max(4096);
        let (header, data) = self.conn.recv()?;
        match header {
            PduHeader::C2hData(pdu) => {
                let slot = busy_slot(&mut self.slots, pdu.cccid)?;
                if slot.kind != IoKind::Read {
                    return Err(InitiatorError::Protocol(format!(
                        "C2HData for write command {}",
                        pdu.cccid
                    )));
                }
                pdu.check_within(0, slot.len)?;
                slot.buf[pdu.datao as usize..][..data.len()].copy_from_slice(data);
                slot.received += data.len() as u32;
                if pdu.success {
                    if slot.received != slot.len {
                        return Err(InitiatorError::Protocol("SUCCESS before all data".into()));
                    }
                    self.complete(pdu.cccid, Status::SUCCESS, done);
                }
            }
            PduHeader::R2t(r2t) => {
                let slot = busy_slot(&mut self.slots, r2t.cccid)?;
                let end = r2t.r2to as u64 + r2t.r2tl as u64;
                if !matches!(slot.kind, IoKind::Write { .. }) || end > slot.len as u64 {
                    return Err(InitiatorError::Protocol(format!(
                        "bad R2T for command {}",
                        r2t.cccid
                    )));
                }
                // The R2T window goes out in PDUs of at most MAXH2CDATA.
                let buf = std::mem::take(&mut slot.buf);
                let mut offset = r2t.r2to;
                let result = loop {
                    if offset as u64 >= end {
                        break Ok(());
                    }
                    let n = (end - offset as u64).min(maxh2c as u64) as u32;
                    let pdu = DataPdu {
                        cccid: r2t.cccid,
                        ttag: r2t.ttag,
                        datao: offset,
                        datal: n,
                        last: offset as u64 + n as u64 == end,
                        success: false,
                    };
                    if let Err(e) = self.conn.queue(
                        &PduHeader::H2cData(pdu),
                        &buf[offset as usize..(offset + n) as usize],
                    ) {
                        break Err(e);
                    }
                    offset += n;
                };
                self.slots[r2t.cccid as usize].buf = buf;
                result?;
            }
            PduHeader::CapsuleResp(resp) => {
                busy_slot(&mut self.slots, resp.cqe.cid)?;
                self.complete(resp.cqe.cid, resp.cqe.status, done);
            }
            other => {
                return Err(InitiatorError::Protocol(format!(
                    "unexpected {:?} on an I/O queue",
                    other.pdu_type()
                )))
            }
        }
        Ok(())
    }

    fn complete(&mut self, slot: u16, status: Status, done: &mut Vec<IoDone>) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.busy = false;
        }
        self.busy -= 1;
        done.push(IoDone { slot, status });
    }
}

fn busy_slot(slots: &mut [Slot], cid: u16) -> Result<&mut Slot> {
    match slots.get_mut(cid as usize) {
        Some(slot) if slot.busy => Ok(slot),
        _ => Err(InitiatorError::Protocol(format!(
            "PDU for unknown command {cid}"
        ))),
    }
}

/// Whether `status` is success.
pub fn is_success(status: Status) -> bool {
    status.sct == StatusCodeType::Generic && status.sc == 0
}
