//! Admin command edge cases: ordering, unknown values, limits.

use super::support::*;
use crate::controller::{QueueSession, Reply};
use crate::nvme::admin::{FeatureId, IdentifyCns, LogPageId};
use crate::nvme::fabrics::{
    property, FabricsCommand, PropertyGetCommand, PropertySetCommand, PropertySize,
};
use crate::nvme::identify::IDENTIFY_DATA_LEN;
use crate::nvme::opcode::AdminOpcode;
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::Psdt;
use crate::nvme::status::Status;

#[test]
fn admin_commands_wait_for_enable() {
    let mut h = Harness::new(target());
    let mut session = QueueSession::new();
    h.connect(&mut session, ConnectParams::admin(SUBNQN));
    let sqe = identify_sqe(h.cid(), IdentifyCns::Controller, 0, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::COMMAND_SEQUENCE_ERROR);
    h.enable(&mut session);
    h.ok(&mut session, &sqe);
    // After shutdown (RDY cleared) admin commands stop again.
    h.set_cc(&mut session, 0x464061);
    assert_eq!(h.status(&mut session, &sqe), Status::COMMAND_SEQUENCE_ERROR);
}

#[test]
fn property_errors() {
    let mut h = Harness::new(target());
    let (mut session, _) = h.admin_session(0);
    let get = |offset, size| FabricsCommand::PropertyGet(PropertyGetCommand { size, offset });
    for command in [
        get(property::CAP, PropertySize::Four),
        get(property::CC, PropertySize::Eight),
        get(0x1000, PropertySize::Four),
        get(property::VS, PropertySize::Reserved(5)),
        FabricsCommand::PropertySet(PropertySetCommand {
            size: PropertySize::Four,
            offset: property::VS,
            value: 0,
        }),
        FabricsCommand::Unknown(0x33),
        FabricsCommand::AuthenticationSend,
        FabricsCommand::Disconnect,
    ] {
        let sqe = command.to_sqe(h.cid());
        assert_eq!(
            h.status(&mut session, &sqe),
            Status::INVALID_FIELD,
            "{command:?}"
        );
    }
    // An enable with 128-byte SQEs fails with CSTS.CFS.
    h.set_cc(&mut session, 0x460060);
    h.set_cc(&mut session, 0x470061);
    assert_eq!(
        h.get_property(&mut session, property::CSTS, PropertySize::Four),
        0x2
    );
}

#[test]
fn identify_errors() {
    let mut h = Harness::new(target());
    let (mut session, _) = h.admin_session(0);
    let cases = [
        (IdentifyCns::Namespace, 0, Status::INVALID_NAMESPACE),
        (IdentifyCns::Namespace, u32::MAX, Status::INVALID_NAMESPACE),
        (IdentifyCns::Namespace, 1025, Status::INVALID_NAMESPACE),
        (
            IdentifyCns::NamespaceIdDescriptors,
            2,
            Status::INVALID_NAMESPACE,
        ),
        (
            IdentifyCns::ActiveNamespaceList,
            0xFFFF_FFFE,
            Status::INVALID_NAMESPACE,
        ),
        (IdentifyCns::NvmSetList, 0, Status::INVALID_FIELD),
        (IdentifyCns::Unknown(0x42), 0, Status::INVALID_FIELD),
    ];
    for (cns, nsid, status) in cases {
        let sqe = identify_sqe(h.cid(), cns, nsid, 0);
        assert_eq!(h.status(&mut session, &sqe), status, "{cns:?} nsid {nsid}");
    }
    // An inactive NSID within NN reads as zeros.
    let sqe = identify_sqe(h.cid(), IdentifyCns::Namespace, 7, 0);
    let (_, data) = h.ok(&mut session, &sqe);
    assert!(data.iter().all(|&b| b == 0));
    // The list after NSID 1 is empty.
    let sqe = identify_sqe(h.cid(), IdentifyCns::ActiveNamespaceList, 1, 0);
    assert!(h.ok(&mut session, &sqe).1.iter().all(|&b| b == 0));
    // Data pointer: wrong length, in-capsule, PRPs.
    let mut sqe = identify_sqe(h.cid(), IdentifyCns::Controller, 0, 0);
    sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: 512 });
    assert_eq!(
        h.status(&mut session, &sqe),
        Status::DATA_SGL_LENGTH_INVALID
    );
    sqe.set_sgl1(SglDescriptor::InCapsule {
        offset: 0,
        length: IDENTIFY_DATA_LEN as u32,
    });
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    let mut sqe = identify_sqe(h.cid(), IdentifyCns::Controller, 0, 0);
    sqe.set_psdt(Psdt::Prp);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    // A buffer too small for the data is an internal error, not a panic.
    let sqe = identify_sqe(h.cid(), IdentifyCns::Controller, 0, 0);
    let mut tiny = [0u8; 16];
    match h.target.submit(&mut session, &sqe, &[], &mut tiny, h.now) {
        Reply::Complete(response) => assert_eq!(response.cqe.status, Status::INTERNAL_ERROR),
        other => panic!("{other:?}"),
    }
}

#[test]
fn log_page_errors_and_firmware_slot() {
    let mut h = Harness::new(target());
    let (mut session, _) = h.admin_session(0);
    let sqe = log_page_sqe(h.cid(), LogPageId::Unknown(0xC0), 0, false, 512, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_LOG_PAGE);
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, false, 1024, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_LOG_PAGE);
    let sqe = log_page_sqe(h.cid(), LogPageId::SmartHealth, 1, false, 512, 0);
    assert_eq!(
        h.status(&mut session, &sqe),
        Status::INVALID_FIELD,
        "no per-namespace SMART"
    );
    // More than MDTS.
    let sqe = log_page_sqe(h.cid(), LogPageId::ErrorInformation, 0, false, 2 << 20, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    let sqe = log_page_sqe(h.cid(), LogPageId::FirmwareSlot, 0, false, 512, 0);
    let (_, slot) = h.ok(&mut session, &sqe);
    assert_eq!(slot[0], 1, "AFI: slot 1 active");
    assert_eq!(&slot[8..16], b"keel-0.1");
    let sqe = log_page_sqe(h.cid(), LogPageId::ErrorInformation, 0, false, 128, 0);
    assert!(h.ok(&mut session, &sqe).1.iter().all(|&b| b == 0));
}

#[test]
fn features() {
    let mut h = Harness::new(target());
    let (mut session, _) = h.admin_session(0);
    let sqe = set_features_sqe(h.cid(), FeatureId::Unknown(0x7E), 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    let sqe = get_features_sqe(h.cid(), FeatureId::InterruptCoalescing, 0, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    let mut sqe = set_features_sqe(h.cid(), FeatureId::Arbitration, 3);
    sqe.cdw10 |= 1 << 31;
    assert_eq!(h.status(&mut session, &sqe), Status::FEATURE_NOT_SAVEABLE);
    let sqe = set_features_sqe(h.cid(), FeatureId::Arbitration, 3);
    h.ok(&mut session, &sqe);
    let sqe = get_features_sqe(h.cid(), FeatureId::Arbitration, 0, 0);
    assert_eq!(h.ok(&mut session, &sqe).0.dw0, 3);
    let sqe = get_features_sqe(h.cid(), FeatureId::Arbitration, 1, 0);
    assert_eq!(h.ok(&mut session, &sqe).0.dw0, 0, "default");
    let sqe = get_features_sqe(h.cid(), FeatureId::Arbitration, 3, 0);
    assert_eq!(
        h.ok(&mut session, &sqe).0.dw0,
        0b100,
        "changeable, not saveable"
    );
    // Power state 1 does not exist.
    let sqe = set_features_sqe(h.cid(), FeatureId::PowerManagement, 1);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    // Volatile write cache.
    let sqe = get_features_sqe(h.cid(), FeatureId::VolatileWriteCache, 0, 0);
    assert_eq!(h.ok(&mut session, &sqe).0.dw0, 1);
    let sqe = set_features_sqe(h.cid(), FeatureId::VolatileWriteCache, 0);
    h.ok(&mut session, &sqe);
    let sqe = get_features_sqe(h.cid(), FeatureId::VolatileWriteCache, 0, 0);
    assert_eq!(h.ok(&mut session, &sqe).0.dw0, 0);
    // Temperature threshold: composite only.
    let sqe = set_features_sqe(h.cid(), FeatureId::TemperatureThreshold, 350);
    h.ok(&mut session, &sqe);
    let sqe = get_features_sqe(h.cid(), FeatureId::TemperatureThreshold, 0, 0);
    assert_eq!(h.ok(&mut session, &sqe).0.dw0, 350);
    let sqe = set_features_sqe(h.cid(), FeatureId::TemperatureThreshold, 1 << 16);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    // Number of queues: capped by the configuration; FFFFh is invalid.
    let sqe = set_features_sqe(h.cid(), FeatureId::NumberOfQueues, 0x0400_0400);
    assert_eq!(h.ok(&mut session, &sqe).0.dw0, 0x003F_003F);
    let sqe = set_features_sqe(h.cid(), FeatureId::NumberOfQueues, 0xFFFF_0000);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    let sqe = get_features_sqe(h.cid(), FeatureId::NumberOfQueues, 0, 0);
    assert_eq!(h.ok(&mut session, &sqe).0.dw0, 0x003F_003F);
    // Host identifier: 16 bytes with EXHID; not settable.
    let mut sqe = get_features_sqe(h.cid(), FeatureId::HostIdentifier, 0, 1);
    sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: 16 });
    assert_eq!(h.ok(&mut session, &sqe).1, HOST_ID.to_vec());
    let sqe = get_features_sqe(h.cid(), FeatureId::HostIdentifier, 0, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);
    let sqe = set_features_sqe(h.cid(), FeatureId::HostIdentifier, 1);
    assert_eq!(h.status(&mut session, &sqe), Status::COMMAND_SEQUENCE_ERROR);
}

#[test]
fn aer_limit_abort_and_unknown_opcodes() {
    let mut h = Harness::new(target());
    let (mut session, _) = h.admin_session(0);
    for cid in 28..32 {
        let aer = admin_sqe(AdminOpcode::AsyncEventRequest, cid, 0, 0);
        assert_eq!(h.submit(&mut session, &aer, &[]), Reply::Deferred);
    }
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 27, 0, 0);
    assert_eq!(
        h.status(&mut session, &aer),
        Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED
    );

    let mut abort = admin_sqe(AdminOpcode::Abort, h.cid(), 0, 0);
    abort.cdw10 = 31 << 16;
    let (cqe, _) = h.ok(&mut session, &abort);
    assert_eq!(cqe.dw0 & 1, 1, "not aborted");

    for opcode in [
        AdminOpcode::FormatNvm,
        AdminOpcode::NamespaceManagement,
        AdminOpcode::Unknown(0xEE),
    ] {
        let sqe = admin_sqe(opcode, h.cid(), 0, 0);
        assert_eq!(
            h.status(&mut session, &sqe),
            Status::INVALID_OPCODE,
            "{opcode:?}"
        );
    }
    let mut fused = admin_sqe(AdminOpcode::KeepAlive, h.cid(), 0, 0);
    fused.flags |= 1;
    assert_eq!(h.status(&mut session, &fused), Status::INVALID_FIELD);
}

#[test]
fn namespace_events_coalesce_until_the_log_is_read() {
    let mut h = Harness::new(target());
    let (mut session, _) = h.admin_session(0);
    let sqe = set_features_sqe(h.cid(), FeatureId::AsyncEventConfiguration, 0x100);
    h.ok(&mut session, &sqe);
    // Events before any AER wait for it.
    h.target.add_namespace(SUBNQN, 2, namespace()).unwrap();
    h.target.remove_namespace(SUBNQN, 1).unwrap();
    assert!(h.take_async().is_empty());
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    let (cqe, _) = h.ok(&mut session, &aer);
    assert_eq!(cqe.dw0, 0x0004_0002);
    let sqe = log_page_sqe(h.cid(), LogPageId::ChangedNamespaceList, 0, false, 4096, 0);
    let (_, changed) = h.ok(&mut session, &sqe);
    assert_eq!(&changed[..12], &[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    // A resize is an attribute change too, once the list was read.
    h.target.resize_namespace(SUBNQN, 2, 512).unwrap();
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.ok(&mut session, &aer).0.dw0, 0x0004_0002);
    let sqe = identify_sqe(h.cid(), IdentifyCns::Namespace, 2, 0);
    assert_eq!(&h.ok(&mut session, &sqe).1[..8], &512u64.to_le_bytes());
    assert!(h.target.resize_namespace(SUBNQN, 2, 0).is_err());
    h.target.set_namespace_ready(SUBNQN, 2, false).unwrap();
    assert!(h.target.add_namespace(SUBNQN, 2, namespace()).is_err());
    assert!(h.target.add_namespace(SUBNQN, 1025, namespace()).is_err());
}

/// A replica promoted (or deposed) changes its namespace's ANA state on
/// this path: the host gets an ANA Change notice, the ANA log shows the new
/// state with a new change count, I/O on an inaccessible path fails with a
/// path error, and Identify Namespace names the group.
#[test]
fn an_ana_state_change_is_noticed_and_logged() {
    let mut h = Harness::new(target());
    let (mut session, _) = h.admin_session(0);
    let enable = set_features_sqe(h.cid(), FeatureId::AsyncEventConfiguration, 1 << 11);
    h.ok(&mut session, &enable);
    let read_log = |h: &mut Harness, session: &mut _| {
        let sqe = log_page_sqe(
            h.cid(),
            LogPageId::AsymmetricNamespaceAccess,
            u32::MAX,
            false,
            52,
            0,
        );
        h.ok(session, &sqe).1
    };
    let page = read_log(&mut h, &mut session);
    assert_eq!(&page[..8], &0u64.to_le_bytes(), "change count");
    assert_eq!(&page[8..10], &1u16.to_le_bytes(), "one group");
    assert_eq!(&page[16..20], &1u32.to_le_bytes(), "ANAGRPID");
    assert_eq!(page[32], 0x01, "optimized");
    assert_eq!(&page[48..52], &1u32.to_le_bytes(), "NSID");

    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.submit(&mut session, &aer, &[]), Reply::Deferred);
    h.target.set_namespace_ready(SUBNQN, 1, false).unwrap();
    let notices = h.take_async();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].cqe.dw0, 0x000C_0302, "ANA change, log 0Ch");
    // The same state again raises nothing.
    h.target.set_namespace_ready(SUBNQN, 1, false).unwrap();
    assert!(h.take_async().is_empty());
    let page = read_log(&mut h, &mut session);
    assert_eq!(&page[..8], &1u64.to_le_bytes());
    assert_eq!(page[32], 0x03, "inaccessible");

    let identify = identify_sqe(h.cid(), IdentifyCns::Namespace, 1, 0);
    let data = h.ok(&mut session, &identify).1;
    assert_eq!(&data[92..96], &1u32.to_le_bytes(), "ANAGRPID");
}
