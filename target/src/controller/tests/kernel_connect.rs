//! `nvme connect` step by step (KERNEL-HOST-NOTES.md §3 and §5), then I/O
//! and disconnect.

use super::support::*;
use crate::controller::{ByteRange, IoOperation, QueueSession, Reply};
use crate::nvme::admin::{FeatureId, IdentifyCns, LogPageId};
use crate::nvme::command::NumberOfQueues;
use crate::nvme::fabrics::{property, PropertySize};
use crate::nvme::identify::{
    cmic, cntrltype, ctratt, flbas, lpa, oaes, oncs, read_namespace_list, IdentifyController,
    IdentifyNamespace, NamespaceIdDescriptors, IDENTIFY_DATA_LEN,
};
use crate::nvme::opcode::{AdminOpcode, IoOpcode};
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::{Psdt, SubmissionQueueEntry};
use crate::nvme::status::Status;

/// Byte offset of the I/O command entries in the effects log.
const IO_EFFECTS: usize = 1024;

fn page(data: &[u8]) -> &[u8; IDENTIFY_DATA_LEN] {
    data.try_into().unwrap()
}

fn le_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().unwrap())
}

fn le_u128(data: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(data[at..at + 16].try_into().unwrap())
}

fn read_sqe(cid: u16, slba: u64, blocks: u32) -> SubmissionQueueEntry {
    let mut sqe = SubmissionQueueEntry {
        opcode: IoOpcode::Read.as_u8(),
        cid,
        nsid: 1,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: blocks - 1,
        ..Default::default()
    };
    sqe.set_psdt(Psdt::SglMetadataBuffer);
    sqe.set_sgl1(SglDescriptor::TransportDataBlock {
        length: blocks * 4096,
    });
    sqe
}

#[test]
fn connect_sequence() {
    let mut h = Harness::new(target());
    let mut admin = QueueSession::new();

    // 1. Connect with KATO 5000.
    let cqe = h.connect(
        &mut admin,
        ConnectParams {
            kato: 5000,
            ..ConnectParams::admin(SUBNQN)
        },
    );
    assert_eq!(cqe.status, Status::SUCCESS);
    let cntlid = cqe.dw0 as u16;

    // 2-8. Enable handshake; VS.
    h.enable(&mut admin);
    assert_eq!(
        h.get_property(&mut admin, property::VS, PropertySize::Four),
        0x10300
    );

    // 9. Identify Controller: every field the 6.1 host checks.
    let sqe = identify_sqe(h.cid(), IdentifyCns::Controller, 0, 0);
    let (_, data) = h.ok(&mut admin, &sqe);
    let id = IdentifyController::parse(page(&data)).unwrap();
    assert_eq!(id.cntlid, cntlid, "CNTLID equals the Connect DW0");
    assert_eq!(id.subnqn, SUBNQN);
    assert_eq!(id.ver, 0x10300);
    assert_eq!(id.mdts, 8);
    assert_eq!((id.sqes, id.cqes), (0x66, 0x44));
    assert_eq!(id.kas, 10);
    assert_eq!(id.maxcmd, 128);
    assert_eq!(id.nn, 1024);
    assert_eq!(id.oacs, 0);
    assert_eq!(id.aerl, 3);
    assert_ne!(id.lpa & lpa::COMMANDS_EFFECTS, 0);
    assert_eq!(
        id.oncs,
        oncs::COMPARE | oncs::DATASET_MANAGEMENT | oncs::WRITE_ZEROES
    );
    assert_eq!(id.vwc & 1, 1);
    assert_eq!(id.sgls, 0x100001);
    assert_eq!(
        id.ctratt,
        ctratt::HOST_ID_128 | ctratt::TRAFFIC_BASED_KEEP_ALIVE
    );
    assert_ne!(
        id.cmic & cmic::ANA_REPORTING,
        0,
        "ANA: the host reads the ANA log and follows the optimized path"
    );
    assert_eq!(id.oaes, oaes::NAMESPACE_ATTRIBUTE | oaes::ANA_CHANGE);
    assert_eq!((id.anagrpmax, id.nanagrpid, id.mnan), (1024, 1024, 1024));
    assert_eq!(
        id.anacap, 0b0100_0101,
        "optimized, inaccessible, static ANAGRPID"
    );
    assert_eq!(id.anatt, 10);
    assert_eq!(id.ioccsz, 1028);
    assert_eq!(id.iorcsz, 1);
    assert_eq!(id.icdoff, 0);
    assert_eq!(id.fcatt, 0);
    assert_eq!(id.msdbd, 1);
    assert_eq!(id.cntrltype, cntrltype::IO);
    assert_eq!(id.serial_number, "KEEL0001");
    assert_eq!(id.model_number, "Keel volume");

    // 10. Commands Supported and Effects, NSID 0, 4096 bytes.
    let sqe = log_page_sqe(
        h.cid(),
        LogPageId::CommandsSupportedAndEffects,
        0,
        false,
        4096,
        0,
    );
    let (_, effects) = h.ok(&mut admin, &sqe);
    assert_eq!(effects.len(), 4096);
    assert_eq!(le_u32(&effects, 4 * 0x06) & 1, 1, "Identify supported");
    assert_eq!(
        le_u32(
            &effects,
            IO_EFFECTS + 4 * usize::from(IoOpcode::Write.as_u8())
        ),
        0b11,
        "Write: CSUPP | LBCC"
    );
    assert_eq!(
        le_u32(
            &effects,
            IO_EFFECTS + 4 * usize::from(IoOpcode::Read.as_u8())
        ),
        0b01,
        "Read: CSUPP"
    );
    assert_eq!(
        le_u32(
            &effects,
            IO_EFFECTS + 4 * usize::from(IoOpcode::WriteUncorrectable.as_u8())
        ),
        0,
        "Write Uncorrectable not supported"
    );

    // 11. ANA log, sized as the host sizes it (header, NANAGRPID group
    // descriptors, NN NSIDs): one group, optimized.
    let len = 16 + 1024 * 32 + 1024 * 4;
    let sqe = log_page_sqe(
        h.cid(),
        LogPageId::AsymmetricNamespaceAccess,
        u32::MAX,
        false,
        len,
        0,
    );
    let (_, ana) = h.ok(&mut admin, &sqe);
    assert_eq!(ana.len(), len as usize);
    assert_eq!(&ana[8..10], &1u16.to_le_bytes());
    assert_eq!(ana[32], 0x01);

    // 12. SMART / Health, NSID FFFFFFFFh, 512 bytes.
    let sqe = log_page_sqe(h.cid(), LogPageId::SmartHealth, u32::MAX, false, 512, 0);
    let (_, smart) = h.ok(&mut admin, &sqe);
    assert_eq!(smart.len(), 512);
    assert_eq!(le_u128(&smart, 32), 0);

    // 13. Number of Queues: asks 2 (0's based 1/1), granted 2.
    let sqe = set_features_sqe(h.cid(), FeatureId::NumberOfQueues, 0x0001_0001);
    let (cqe, _) = h.ok(&mut admin, &sqe);
    assert_eq!(
        NumberOfQueues::from_dword(cqe.dw0),
        NumberOfQueues { nsqr: 1, ncqr: 1 }
    );

    // I/O queues 1 and 2; 3 is beyond the grant.
    let mut io1 = h.io_session(cntlid, 1);
    let _io2 = h.io_session(cntlid, 2);
    let mut io3 = QueueSession::new();
    let cqe = h.connect(&mut io3, ConnectParams::io(cntlid, 3));
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(cqe.dw0, 42, "IATTR 0 (SQE), IPO 42 (QID)");
    // Number of Queues may not change once I/O queues exist.
    let sqe = set_features_sqe(h.cid(), FeatureId::NumberOfQueues, 0x0003_0003);
    assert_eq!(h.status(&mut admin, &sqe), Status::COMMAND_SEQUENCE_ERROR);

    // 14. AEC 0x900: namespace attribute and ANA change notices.
    let sqe = set_features_sqe(h.cid(), FeatureId::AsyncEventConfiguration, 0x900);
    h.ok(&mut admin, &sqe);
    let sqe = get_features_sqe(h.cid(), FeatureId::AsyncEventConfiguration, 0, 0);
    assert_eq!(h.ok(&mut admin, &sqe).0.dw0, 0x900);

    // 15. AER CID 31.
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.submit(&mut admin, &aer, &[]), Reply::Deferred);

    // 16. Identify CNS 06h, CSI 0.
    let sqe = identify_sqe(h.cid(), IdentifyCns::IoCommandSetController, 0, 0);
    h.ok(&mut admin, &sqe);
    let sqe = identify_sqe(h.cid(), IdentifyCns::IoCommandSetController, 0, 2);
    assert_eq!(
        h.status(&mut admin, &sqe),
        Status::INVALID_FIELD,
        "ZNS is not supported"
    );

    // 17. Active namespace list.
    let sqe = identify_sqe(h.cid(), IdentifyCns::ActiveNamespaceList, 0, 0);
    let (_, list) = h.ok(&mut admin, &sqe);
    assert_eq!(
        read_namespace_list(page(&list)).collect::<Vec<_>>(),
        vec![1]
    );

    // 18. Namespace identification descriptors: NGUID, UUID, CSI.
    let sqe = identify_sqe(h.cid(), IdentifyCns::NamespaceIdDescriptors, 1, 0);
    let (_, descriptors) = h.ok(&mut admin, &sqe);
    let descriptors = NamespaceIdDescriptors::parse(page(&descriptors)).unwrap();
    assert_eq!(descriptors.nguid, Some(NGUID));
    assert_eq!(descriptors.uuid, Some(UUID));
    assert_eq!(descriptors.csi, Some(0), "required with CC.CSS = 110b");
    assert_eq!(descriptors.eui64, None);

    // 19. Identify Namespace, twice.
    for _ in 0..2 {
        let sqe = identify_sqe(h.cid(), IdentifyCns::Namespace, 1, 0);
        let (_, ns) = h.ok(&mut admin, &sqe);
        let ns = IdentifyNamespace::parse(page(&ns));
        assert_eq!((ns.nsze, ns.ncap, ns.nuse), (BLOCKS, BLOCKS, BLOCKS));
        assert_eq!(flbas::index(ns.flbas), 0);
        assert_eq!(ns.lba_formats.len(), 1, "NLBAF 0");
        assert_eq!(ns.formatted_lba().map(|f| (f.lbads, f.ms)), Some((12, 0)));
        assert_eq!(ns.nguid, NGUID);
        assert_eq!(ns.nmic & 1, 1);
    }

    // 20. Reads on an I/O queue: LBA 0, 1, 3.
    for slba in [0u64, 1, 3] {
        let sqe = read_sqe(h.cid(), slba, 1);
        let command = h.io(&mut io1, &sqe, &[]);
        assert_eq!(command.cid, sqe.cid);
        assert_eq!(
            command.operation,
            IoOperation::Read {
                range: ByteRange {
                    offset: slba * 4096,
                    len: 4096
                },
                fua: false
            }
        );
        let cqe = h.target.complete_io(&mut io1, &command, Status::SUCCESS);
        assert_eq!(
            (cqe.cid, cqe.sqid, cqe.status),
            (sqe.cid, 1, Status::SUCCESS)
        );
    }
    let stats = h.target.statistics(SUBNQN).unwrap();
    assert_eq!((stats.host_read_commands, stats.bytes_read), (3, 3 * 4096));
    let sqe = log_page_sqe(h.cid(), LogPageId::SmartHealth, u32::MAX, false, 512, 0);
    let (_, smart) = h.ok(&mut admin, &sqe);
    assert_eq!(
        le_u128(&smart, 32),
        1,
        "data units read: 24 units of 512 B round up to 1"
    );
    assert_eq!(le_u128(&smart, 64), 3, "host read commands");

    // Keep Alive.
    let sqe = admin_sqe(AdminOpcode::KeepAlive, h.cid(), 0, 0);
    h.ok(&mut admin, &sqe);

    // A namespace appears: the AER completes, the changed list names it.
    h.target.add_namespace(SUBNQN, 2, namespace()).unwrap();
    let events = h.take_async();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].cntlid, events[0].cqe.cid, events[0].cqe.dw0),
        (cntlid, 31, 0x0004_0002)
    );
    let sqe = log_page_sqe(h.cid(), LogPageId::ChangedNamespaceList, 0, false, 4096, 0);
    let (_, changed) = h.ok(&mut admin, &sqe);
    assert_eq!((le_u32(&changed, 0), le_u32(&changed, 4)), (2, 0));

    // Disconnect: shutdown handshake, then the sockets close.
    h.set_cc(&mut admin, 0x464061);
    assert_eq!(
        h.get_property(&mut admin, property::CSTS, PropertySize::Four),
        0x8
    );
    h.target.close_queue(&mut io1);
    h.target.close_queue(&mut admin);
    assert_eq!(h.target.controller_count(), 0);
}

#[test]
fn reset_ends_io_queues_and_aborts_aers() {
    let mut h = Harness::new(target());
    let (mut admin, cntlid) = h.admin_session(5000);
    let mut io = h.io_session(cntlid, 1);
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.submit(&mut admin, &aer, &[]), Reply::Deferred);

    h.set_cc(&mut admin, 0x460060);
    let aborted = h.take_async();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].cqe.status, Status::ABORTED_SQ_DELETION);
    // The old I/O queue is gone, even after the controller is enabled again.
    h.set_cc(&mut admin, 0x460061);
    let sqe = read_sqe(h.cid(), 0, 1);
    assert_eq!(h.status(&mut io, &sqe), Status::COMMAND_SEQUENCE_ERROR);
    // The host reconnects it.
    let mut again = h.io_session(cntlid, 1);
    let sqe = read_sqe(h.cid(), 0, 1);
    h.io(&mut again, &sqe, &[]);
}

#[test]
fn io_queue_disconnect_frees_the_qid() {
    let mut h = Harness::new(target());
    let (_admin, cntlid) = h.admin_session(0);
    let mut io = h.io_session(cntlid, 1);
    let disconnect = crate::nvme::fabrics::FabricsCommand::Disconnect.to_sqe(h.cid());
    h.ok(&mut io, &disconnect);
    assert!(!io.is_connected());
    let _again = h.io_session(cntlid, 1);
    // Closing a connection frees its QID too.
    let mut two = h.io_session(cntlid, 2);
    h.target.close_queue(&mut two);
    let _two = h.io_session(cntlid, 2);
}

#[test]
fn sqhd_advances_and_wraps() {
    let mut h = Harness::new(target());
    let mut session = QueueSession::new();
    let params = ConnectParams {
        sqsize: 1,
        ..ConnectParams::admin(SUBNQN)
    };
    assert_eq!(h.connect(&mut session, params).sqhd, 1);
    let sqe = crate::nvme::fabrics::FabricsCommand::PropertyGet(
        crate::nvme::fabrics::PropertyGetCommand {
            size: PropertySize::Four,
            offset: property::VS,
        },
    )
    .to_sqe(7);
    assert_eq!(h.ok(&mut session, &sqe).0.sqhd, 0);
    assert_eq!(h.ok(&mut session, &sqe).0.sqhd, 1);
}

#[test]
fn in_flight_io_is_bounded_and_cids_unique() {
    let mut h = Harness::new(target());
    let (_admin, cntlid) = h.admin_session(0);
    let mut io = QueueSession::new();
    let params = ConnectParams {
        sqsize: 2,
        ..ConnectParams::io(cntlid, 1)
    };
    assert_eq!(h.connect(&mut io, params).status, Status::SUCCESS);
    let first = h.io(&mut io, &read_sqe(1, 0, 1), &[]);
    assert_eq!(
        h.status(&mut io, &read_sqe(1, 1, 1)),
        Status::COMMAND_ID_CONFLICT
    );
    h.io(&mut io, &read_sqe(2, 0, 1), &[]);
    h.io(&mut io, &read_sqe(3, 0, 1), &[]);
    assert_eq!(io.in_flight(), 3);
    assert_eq!(
        h.status(&mut io, &read_sqe(4, 0, 1)),
        Status::COMMAND_INTERRUPTED
    );
    h.target.complete_io(&mut io, &first, Status::SUCCESS);
    h.io(&mut io, &read_sqe(4, 0, 1), &[]);
}
