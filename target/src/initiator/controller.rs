//! The admin queue: connect to a subsystem, enable the controller, learn its
//! limits and namespace, and open I/O queues.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::connection::Connection;
use super::io_queue::IoQueue;
use super::{InitiatorError, Result};
use crate::nvme::admin::{FeatureId, IdentifyCns};
use crate::nvme::command::{FeatureCommand, IdentifyCommand, NumberOfQueues};
use crate::nvme::fabrics::{
    property, ConnectCommand, ConnectData, FabricsCommand, PropertyGetCommand, PropertySetCommand,
    PropertySize, CNTLID_DYNAMIC, CONNECT_DATA_LEN,
};
use crate::nvme::identify::{IdentifyController, IdentifyNamespace, IDENTIFY_DATA_LEN};
use crate::nvme::sqe::Psdt;
use crate::nvme::{AdminOpcode, CompletionQueueEntry, SglDescriptor, Status, SubmissionQueueEntry};
use crate::tcp::{CapsuleCmd, DigestOptions, PduHeader};

/// Who the host is and how it connects.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Host NQN presented at Connect.
    pub hostnqn: String,
    /// Host identifier presented at Connect.
    pub hostid: [u8; 16],
    /// Header and data digests to ask for.
    pub digests: DigestOptions,
    /// Keep-alive timeout asked for, in ms (0: none).
    pub kato_ms: u32,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            hostnqn: "nqn.2014-08.io.keel:host:keel-bench".into(),
            hostid: *b"keel-bench-host\0",
            digests: DigestOptions::default(),
            kato_ms: 0,
        }
    }
}

/// The namespace the host will do I/O to.
#[derive(Debug, Clone, Copy)]
pub struct NamespaceInfo {
    /// Namespace ID.
    pub nsid: u32,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Size in logical blocks.
    pub blocks: u64,
}

/// A connected, enabled controller.
pub struct Controller {
    admin: Connection,
    addr: SocketAddr,
    subnqn: String,
    options: HostOptions,
    cntlid: u16,
    next_cid: u16,
    /// Largest data transfer of one command, in bytes (from MDTS).
    pub max_transfer: u32,
    /// Largest in-capsule data of an I/O command, in bytes (from IOCCSZ).
    pub max_in_capsule: u32,
    /// Most entries of an I/O submission queue (CAP.MQES + 1).
    pub max_queue_entries: u32,
    /// I/O queues granted.
    pub io_queues: u16,
    /// Serial number and model, for reports.
    pub serial_model: (String, String),
}

/// Admin queue depth we ask for (the Linux host uses 32 too).
const ADMIN_QUEUE_ENTRIES: u16 = 32;
/// The data of an admin command we issue fits in one Identify page.
const ADMIN_MAX_DATA: u32 = 8192;

impl Controller {
    /// Connects to `subnqn` at `addr`, enables the controller and asks for
    /// `io_queues` I/O queues.
    pub fn connect(
        addr: SocketAddr,
        subnqn: &str,
        options: &HostOptions,
        io_queues: u16,
    ) -> Result<Controller> {
        let mut admin = Connection::open(addr, options.digests, ADMIN_MAX_DATA)?;
        let cntlid = fabrics_connect(
            &mut admin,
            0,
            ADMIN_QUEUE_ENTRIES,
            CNTLID_DYNAMIC,
            subnqn,
            options,
        )?;
        let mut ctrl = Controller {
            admin,
            addr,
            subnqn: subnqn.to_owned(),
            options: options.clone(),
            cntlid,
            next_cid: 1,
            max_transfer: 0,
            max_in_capsule: 0,
            max_queue_entries: 0,
            io_queues: 0,
            serial_model: Default::default(),
        };
        let cap = ctrl.property_get(property::CAP, PropertySize::Eight)?;
        ctrl.max_queue_entries = (cap & 0xFFFF) as u32 + 1;
        let timeout = Duration::from_millis(500 * ((cap >> 24) & 0xFF).max(1));
        let min_page = 4096u64 << ((cap >> 48) & 0xF);
        // EN=1, CSS=NVM, MPS=0 (4 KiB), IOSQES=6 (64 B), IOCQES=4 (16 B).
        ctrl.property_set(property::CC, (6 << 16) | (4 << 20) | 1)?;
        ctrl.wait_csts(timeout, |csts| csts & 1 == 1, "CSTS.RDY")?;

        let mut page = [0u8; IDENTIFY_DATA_LEN];
        ctrl.identify(IdentifyCns::Controller, 0, &mut page)?;
        let id = IdentifyController::parse(&page)
            .map_err(|e| InitiatorError::Protocol(format!("Identify Controller: {e}")))?;
        ctrl.max_transfer = match id.mdts {
            0 => 1 << 20, // no limit: cap what we issue at 1 MiB
            n => (min_page << n).min(1 << 20) as u32,
        };
        ctrl.max_in_capsule = id.max_in_capsule_data();
        ctrl.serial_model = (
            id.serial_number.trim().to_owned(),
            id.model_number.trim().to_owned(),
        );

        let asked = NumberOfQueues {
            nsqr: io_queues.max(1) - 1,
            ncqr: io_queues.max(1) - 1,
        };
        let cqe = ctrl.set_feature(FeatureId::NumberOfQueues, asked.dword())?;
        let granted = NumberOfQueues::from_dword(cqe.dw0);
        ctrl.io_queues = granted.nsqr.min(granted.ncqr).saturating_add(1);
        Ok(ctrl)
    }

    /// The controller ID the target assigned.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }

    /// Identify Namespace `nsid`.
    pub fn namespace(&mut self, nsid: u32) -> Result<NamespaceInfo> {
        let mut page = [0u8; IDENTIFY_DATA_LEN];
        self.identify(IdentifyCns::Namespace, nsid, &mut page)?;
        let ns = IdentifyNamespace::parse(&page);
        let lbads = ns.formatted_lba().map(|f| f.lbads).ok_or_else(|| {
            InitiatorError::Protocol("namespace has no formatted LBA size".into())
        })?;
        if !(9..=16).contains(&lbads) || ns.nsze == 0 {
            return Err(InitiatorError::Protocol(format!(
                "namespace {nsid}: LBADS {lbads}, NSZE {} is not usable",
                ns.nsze
            )));
        }
        Ok(NamespaceInfo {
            nsid,
            block_size: 1 << lbads,
            blocks: ns.nsze,
        })
    }

    /// Opens I/O queue `qid` with `depth` commands in flight at most.
    pub fn io_queue(&self, qid: u16, depth: u16, namespace: NamespaceInfo) -> Result<IoQueue> {
        if qid == 0 || qid > self.io_queues {
            return Err(InitiatorError::Protocol(format!(
                "queue {qid} asked, {} granted",
                self.io_queues
            )));
        }
        // One entry stays free: a full SQ is head == tail + 1.
        let entries = (depth as u32 + 1).min(self.max_queue_entries).max(2) as u16;
        let mut conn = Connection::open(self.addr, self.options.digests, self.max_transfer)?;
        fabrics_connect(
            &mut conn,
            qid,
            entries,
            self.cntlid,
            &self.subnqn,
            &self.options,
        )?;
        Ok(IoQueue::new(
            conn,
            namespace,
            (entries - 1).min(depth),
            self.max_transfer,
            self.max_in_capsule,
        ))
    }

    /// Normal shutdown (CC.SHN = 01b) and wait for CSTS.SHST = 10b.
    pub fn shutdown(mut self) -> Result<()> {
        let cc = self.property_get(property::CC, PropertySize::Four)?;
        self.property_set(property::CC, (cc & !(0b11 << 14)) | (0b01 << 14))?;
        self.wait_csts(
            Duration::from_secs(10),
            |csts| (csts >> 2) & 0b11 == 0b10,
            "CSTS.SHST",
        )
    }

    fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1) & 0x0FFF;
        self.next_cid
    }

    fn property_get(&mut self, offset: u32, size: PropertySize) -> Result<u64> {
        let sqe =
            FabricsCommand::PropertyGet(PropertyGetCommand { size, offset }).to_sqe(self.cid());
        let cqe = admin_command(&mut self.admin, sqe, &[], None, "Property Get")?;
        Ok(cqe.result_u64())
    }

    fn property_set(&mut self, offset: u32, value: u64) -> Result<()> {
        let sqe = FabricsCommand::PropertySet(PropertySetCommand {
            size: PropertySize::Four,
            offset,
            value,
        })
        .to_sqe(self.cid());
        admin_command(&mut self.admin, sqe, &[], None, "Property Set").map(|_| ())
    }

    fn wait_csts(
        &mut self,
        timeout: Duration,
        done: impl Fn(u64) -> bool,
        what: &str,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let csts = self.property_get(property::CSTS, PropertySize::Four)?;
            if csts & 0b10 != 0 {
                return Err(InitiatorError::Protocol(
                    "controller fatal status (CSTS.CFS)".into(),
                ));
            }
            if done(csts) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(InitiatorError::Protocol(format!(
                    "timed out waiting for {what}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn identify(
        &mut self,
        cns: IdentifyCns,
        nsid: u32,
        out: &mut [u8; IDENTIFY_DATA_LEN],
    ) -> Result<()> {
        let mut sqe = admin_sqe(
            AdminOpcode::Identify,
            self.cid(),
            nsid,
            IDENTIFY_DATA_LEN as u32,
        );
        IdentifyCommand {
            cns,
            cntid: 0,
            cns_specific_id: 0,
            csi: 0,
        }
        .write_to(&mut sqe);
        admin_command(&mut self.admin, sqe, &[], Some(out), "Identify").map(|_| ())
    }

    fn set_feature(&mut self, fid: FeatureId, value: u32) -> Result<CompletionQueueEntry> {
        let mut sqe = admin_sqe(AdminOpcode::SetFeatures, self.cid(), 0, 0);
        FeatureCommand {
            fid,
            save: false,
            select: 0,
            value,
        }
        .write_to(&mut sqe);
        admin_command(&mut self.admin, sqe, &[], None, "Set Features")
    }
}

fn admin_sqe(opcode: AdminOpcode, cid: u16, nsid: u32, data_len: u32) -> SubmissionQueueEntry {
    let mut sqe = SubmissionQueueEntry {
        opcode: opcode.as_u8(),
        cid,
        nsid,
        ..Default::default()
    };
    sqe.set_psdt(Psdt::SglMetadataBuffer);
    sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: data_len });
    sqe
}

/// Fabrics Connect on a fresh connection; returns the controller ID.
fn fabrics_connect(
    conn: &mut Connection,
    qid: u16,
    entries: u16,
    cntlid: u16,
    subnqn: &str,
    options: &HostOptions,
) -> Result<u16> {
    let sqe = ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: entries - 1,
        // As the Linux host: SQHD is never needed, and reads may then
        // complete with the C2HData SUCCESS flag.
        cattr: crate::nvme::fabrics::CATTR_DISABLE_SQ_FLOW_CONTROL,
        kato: if qid == 0 { options.kato_ms } else { 0 },
    }
    .to_sqe(0);
    let mut data = [0u8; CONNECT_DATA_LEN];
    ConnectData {
        host_id: options.hostid,
        cntlid,
        subnqn,
        hostnqn: &options.hostnqn,
    }
    .write_into(&mut data)
    .map_err(|e| InitiatorError::Protocol(format!("Connect data: {e}")))?;
    let cqe = admin_command(conn, sqe, &data, None, "Connect")?;
    Ok(cqe.dw0 as u16)
}

/// Sends one command and waits for its completion, collecting C2H data.
fn admin_command(
    conn: &mut Connection,
    sqe: SubmissionQueueEntry,
    in_capsule: &[u8],
    mut data_in: Option<&mut [u8; IDENTIFY_DATA_LEN]>,
    command: &'static str,
) -> Result<CompletionQueueEntry> {
    conn.send(&PduHeader::CapsuleCmd(CapsuleCmd { sqe }), in_capsule)?;
    loop {
        let (header, data) = conn.recv()?;
        match header {
            PduHeader::C2hData(pdu) if pdu.cccid == sqe.cid => {
                let out = data_in.as_deref_mut().ok_or_else(|| {
                    InitiatorError::Protocol(format!("{command}: unexpected data"))
                })?;
                pdu.check_within(0, out.len() as u32)?;
                out[pdu.datao as usize..][..data.len()].copy_from_slice(data);
                if pdu.success {
                    return Ok(CompletionQueueEntry::new(sqe.cid, Status::SUCCESS));
                }
            }
            PduHeader::CapsuleResp(resp) if resp.cqe.cid == sqe.cid => {
                if resp.cqe.status != Status::SUCCESS {
                    return Err(InitiatorError::Command {
                        command,
                        status: resp.cqe.status,
                    });
                }
                return Ok(resp.cqe);
            }
            other => {
                return Err(InitiatorError::Protocol(format!(
                    "{command}: unexpected {:?}",
                    other.pdu_type()
                )))
            }
        }
    }
}
