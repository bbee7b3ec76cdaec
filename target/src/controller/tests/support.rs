//! A scripted host: builds the SQEs the Linux host sends and runs them
//! through a [`Target`].

use crate::controller::{
    AsyncCompletion, BlockGeometry, IoCommand, Listener, Namespace, QueueSession, Reply, Subsystem,
    Target, TargetLimits, Timestamp,
};
use crate::nvme::admin::{FeatureId, IdentifyCns, LogPageId};
use crate::nvme::command::{FeatureCommand, GetLogPageCommand, IdentifyCommand};
use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::discovery::AddressFamily;
use crate::nvme::fabrics::{
    property, ConnectCommand, ConnectData, FabricsCommand, PropertyGetCommand, PropertySetCommand,
    PropertySize, CNTLID_DYNAMIC, CONNECT_DATA_LEN,
};
use crate::nvme::nqn::DISCOVERY_NQN;
use crate::nvme::opcode::AdminOpcode;
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::{Psdt, SubmissionQueueEntry};
use crate::nvme::status::Status;

pub const SUBNQN: &str = "nqn.2024-01.dev.keel:vol0";
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
pub const OTHER_HOSTNQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:00000000-1111-2222-3333-444444444444";
pub const HOST_ID: [u8; 16] = [0x11; 16];
pub const NGUID: [u8; 16] = [0xA5; 16];
pub const UUID: [u8; 16] = [0x5A; 16];
/// 1 MiB of 4 KiB blocks.
pub const BLOCKS: u64 = 256;

pub fn namespace() -> Namespace {
    Namespace::new(BlockGeometry::new(4096, BLOCKS).unwrap(), NGUID, UUID)
}

pub fn subsystem() -> Subsystem {
    let mut subsystem = Subsystem::new(SUBNQN, "KEEL0001", "Keel volume", "1.0").unwrap();
    subsystem.add_namespace(1, namespace()).unwrap();
    subsystem
}

pub fn target() -> Target {
    target_with(TargetLimits::default())
}

pub fn target_with(limits: TargetLimits) -> Target {
    let mut target = Target::new(limits);
    target
        .add_listener(Listener::new(1, AddressFamily::Ipv4, "127.0.0.1", "4420").unwrap())
        .unwrap();
    target.add_subsystem(subsystem()).unwrap();
    target
}

/// A target plus an output buffer, a clock and a CID counter.
pub struct Harness {
    pub target: Target,
    pub out: Vec<u8>,
    pub now: Timestamp,
    next_cid: u16,
}

impl Harness {
    pub fn new(target: Target) -> Self {
        let out = vec![0; target.output_buffer_len()];
        Self {
            target,
            out,
            now: Timestamp::ZERO,
            // The Linux host keeps a generation counter in CID bits 15:12.
            next_cid: 0x1000,
        }
    }

    pub fn cid(&mut self) -> u16 {
        self.next_cid = self.next_cid.wrapping_add(1);
        self.next_cid
    }

    pub fn submit(
        &mut self,
        session: &mut QueueSession,
        sqe: &SubmissionQueueEntry,
        data: &[u8],
    ) -> Reply {
        self.target
            .submit(session, sqe, data, &mut self.out, self.now)
    }

    /// Submits and expects an immediate completion with CID echoed.
    pub fn complete(
        &mut self,
        session: &mut QueueSession,
        sqe: &SubmissionQueueEntry,
        data: &[u8],
    ) -> (CompletionQueueEntry, usize) {
        match self.submit(session, sqe, data) {
            Reply::Complete(response) => {
                assert_eq!(response.cqe.cid, sqe.cid, "CID echoed verbatim");
                (response.cqe, response.data_len)
            }
            other => panic!("expected a completion, got {other:?}"),
        }
    }

    /// Submits and expects success; returns the CQE and the data.
    pub fn ok(
        &mut self,
        session: &mut QueueSession,
        sqe: &SubmissionQueueEntry,
    ) -> (CompletionQueueEntry, Vec<u8>) {
        let (cqe, len) = self.complete(session, sqe, &[]);
        assert_eq!(
            cqe.status,
            Status::SUCCESS,
            "status of opcode {:#x}",
            sqe.opcode
        );
        (cqe, self.out[..len].to_vec())
    }

    pub fn status(&mut self, session: &mut QueueSession, sqe: &SubmissionQueueEntry) -> Status {
        self.complete(session, sqe, &[]).0.status
    }

    pub fn io(
        &mut self,
        session: &mut QueueSession,
        sqe: &SubmissionQueueEntry,
        data: &[u8],
    ) -> IoCommand {
        match self.submit(session, sqe, data) {
            Reply::Io(command) => command,
            other => panic!("expected an I/O command, got {other:?}"),
        }
    }

    pub fn connect(
        &mut self,
        session: &mut QueueSession,
        params: ConnectParams<'_>,
    ) -> CompletionQueueEntry {
        let (sqe, data) = connect_capsule(self.cid(), params);
        self.complete(session, &sqe, &data).0
    }

    pub fn get_property(
        &mut self,
        session: &mut QueueSession,
        offset: u32,
        size: PropertySize,
    ) -> u64 {
        let sqe =
            FabricsCommand::PropertyGet(PropertyGetCommand { size, offset }).to_sqe(self.cid());
        self.ok(session, &sqe).0.result_u64()
    }

    pub fn set_cc(&mut self, session: &mut QueueSession, value: u32) {
        let sqe = FabricsCommand::PropertySet(PropertySetCommand {
            size: PropertySize::Four,
            offset: property::CC,
            value: u64::from(value),
        })
        .to_sqe(self.cid());
        self.ok(session, &sqe);
    }

    /// Steps 2-8 of the kernel's controller enable.
    pub fn enable(&mut self, session: &mut QueueSession) {
        self.get_property(session, property::CAP, PropertySize::Eight);
        self.set_cc(session, 0x460060);
        assert_eq!(
            self.get_property(session, property::CC, PropertySize::Four),
            0x460060
        );
        self.get_property(session, property::CAP, PropertySize::Eight);
        self.set_cc(session, 0x460061);
        assert_eq!(
            self.get_property(session, property::CSTS, PropertySize::Four) & 1,
            1
        );
    }

    /// An enabled NVM controller's admin queue.
    pub fn admin_session(&mut self, kato: u32) -> (QueueSession, u16) {
        let mut session = QueueSession::new();
        let cqe = self.connect(
            &mut session,
            ConnectParams {
                kato,
                ..ConnectParams::admin(SUBNQN)
            },
        );
        assert_eq!(cqe.status, Status::SUCCESS);
        self.enable(&mut session);
        (session, cqe.dw0 as u16)
    }

    /// A connected I/O queue of controller `cntlid`.
    pub fn io_session(&mut self, cntlid: u16, qid: u16) -> QueueSession {
        let mut session = QueueSession::new();
        let cqe = self.connect(&mut session, ConnectParams::io(cntlid, qid));
        assert_eq!(cqe.status, Status::SUCCESS);
        session
    }

    pub fn take_async(&mut self) -> Vec<AsyncCompletion> {
        self.target.take_async_completions()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ConnectParams<'a> {
    pub qid: u16,
    pub sqsize: u16,
    pub kato: u32,
    pub recfmt: u16,
    pub cntlid: u16,
    pub subnqn: &'a str,
    pub hostnqn: &'a str,
    pub host_id: [u8; 16],
}

impl<'a> ConnectParams<'a> {
    pub fn admin(subnqn: &'a str) -> Self {
        Self {
            qid: 0,
            sqsize: 31,
            kato: 0,
            recfmt: 0,
            cntlid: CNTLID_DYNAMIC,
            subnqn,
            hostnqn: HOSTNQN,
            host_id: HOST_ID,
        }
    }

    pub fn discovery() -> Self {
        Self::admin(DISCOVERY_NQN)
    }

    pub fn io(cntlid: u16, qid: u16) -> Self {
        Self {
            qid,
            sqsize: 127,
            cntlid,
            ..Self::admin(SUBNQN)
        }
    }
}

/// The Connect SQE and its 1024 bytes of in-capsule data.
pub fn connect_capsule(cid: u16, params: ConnectParams<'_>) -> (SubmissionQueueEntry, Vec<u8>) {
    let sqe = ConnectCommand {
        recfmt: params.recfmt,
        qid: params.qid,
        sqsize: params.sqsize,
        cattr: 0,
        kato: params.kato,
    }
    .to_sqe(cid);
    let mut data = [0u8; CONNECT_DATA_LEN];
    ConnectData {
        host_id: params.host_id,
        cntlid: params.cntlid,
        subnqn: params.subnqn,
        hostnqn: params.hostnqn,
    }
    .write_into(&mut data)
    .unwrap();
    (sqe, data.to_vec())
}

/// An admin SQE with SGLs selected and a transport data block of `len`.
pub fn admin_sqe(opcode: AdminOpcode, cid: u16, nsid: u32, len: u32) -> SubmissionQueueEntry {
    let mut sqe = SubmissionQueueEntry {
        opcode: opcode.as_u8(),
        cid,
        nsid,
        ..Default::default()
    };
    sqe.set_psdt(Psdt::SglMetadataBuffer);
    sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: len });
    sqe
}

pub fn identify_sqe(cid: u16, cns: IdentifyCns, nsid: u32, csi: u8) -> SubmissionQueueEntry {
    let mut sqe = admin_sqe(AdminOpcode::Identify, cid, nsid, 4096);
    IdentifyCommand {
        cns,
        cntid: 0,
        cns_specific_id: 0,
        csi,
    }
    .write_to(&mut sqe);
    sqe
}

pub fn log_page_sqe(
    cid: u16,
    lid: LogPageId,
    nsid: u32,
    rae: bool,
    len: u32,
    offset: u64,
) -> SubmissionQueueEntry {
    let mut sqe = admin_sqe(AdminOpcode::GetLogPage, cid, nsid, len);
    GetLogPageCommand {
        lid,
        lsp: 0,
        rae,
        numd: len / 4 - 1,
        lsi: 0,
        lpo: offset,
        csi: 0,
    }
    .write_to(&mut sqe);
    sqe
}

pub fn set_features_sqe(cid: u16, fid: FeatureId, value: u32) -> SubmissionQueueEntry {
    let mut sqe = admin_sqe(AdminOpcode::SetFeatures, cid, 0, 0);
    FeatureCommand {
        fid,
        save: false,
        select: 0,
        value,
    }
    .write_to(&mut sqe);
    sqe
}

pub fn get_features_sqe(cid: u16, fid: FeatureId, select: u8, value: u32) -> SubmissionQueueEntry {
    let mut sqe = admin_sqe(AdminOpcode::GetFeatures, cid, 0, 0);
    FeatureCommand {
        fid,
        save: false,
        select,
        value,
    }
    .write_to(&mut sqe);
    sqe
}
