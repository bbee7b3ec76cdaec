//! `nvme discover` step by step (KERNEL-HOST-NOTES.md §2).

use super::support::*;
use crate::controller::{QueueSession, Reply, Subsystem};
use crate::nvme::admin::{FeatureId, IdentifyCns, LogPageId};
use crate::nvme::discovery::{
    treq, AddressFamily, DiscoveryLogEntry, DiscoveryLogHeader, SubsystemType, TransportType,
    DISCOVERY_RECORD_LEN,
};
use crate::nvme::fabrics::{property, PropertySize};
use crate::nvme::identify::{cntrltype, oaes, IdentifyController, IDENTIFY_DATA_LEN};
use crate::nvme::nqn::DISCOVERY_NQN;
use crate::nvme::opcode::AdminOpcode;
use crate::nvme::status::Status;

fn record(log: &[u8], index: usize) -> &[u8; DISCOVERY_RECORD_LEN] {
    let start = index * DISCOVERY_RECORD_LEN;
    log[start..start + DISCOVERY_RECORD_LEN].try_into().unwrap()
}

#[test]
fn discover_sequence() {
    let mut h = Harness::new(target());
    let mut session = QueueSession::new();

    // 1. Connect QID 0, SQSIZE 31, KATO 0, CNTLID FFFFh, discovery NQN.
    let cqe = h.connect(&mut session, ConnectParams::discovery());
    assert_eq!(cqe.status, Status::SUCCESS);
    let cntlid = cqe.dw0 as u16;
    assert!((1..=0xFFEF).contains(&cntlid));
    assert_eq!(cqe.dw0 >> 16, 0, "AUTHREQ");
    assert_eq!(cqe.sqid, 0);
    assert_eq!(session.cntlid(), Some(cntlid));

    // 2. CAP: MQES, TO, CSS NVM + I/O command sets, MPSMIN 0.
    let cap = h.get_property(&mut session, property::CAP, PropertySize::Eight);
    assert_eq!(cap & 0xFFFF, 127, "MQES");
    assert_eq!((cap >> 24) & 0xFF, 15, "TO");
    assert_eq!((cap >> 37) & 0xFF, 0x41, "CSS");
    assert_eq!((cap >> 48) & 0xF, 0, "MPSMIN");

    // 3-8. CC EN=0, read back, CAP, EN=1, CSTS.RDY, VS.
    h.set_cc(&mut session, 0x460060);
    assert_eq!(
        h.get_property(&mut session, property::CC, PropertySize::Four),
        0x460060
    );
    assert_eq!(
        h.get_property(&mut session, property::CSTS, PropertySize::Four),
        0
    );
    h.get_property(&mut session, property::CAP, PropertySize::Eight);
    h.set_cc(&mut session, 0x460061);
    assert_eq!(
        h.get_property(&mut session, property::CSTS, PropertySize::Four),
        1
    );
    assert_eq!(
        h.get_property(&mut session, property::VS, PropertySize::Four),
        0x10300
    );

    // 9. Identify Controller.
    let sqe = identify_sqe(h.cid(), IdentifyCns::Controller, 0, 0);
    let (_, data) = h.ok(&mut session, &sqe);
    assert_eq!(data.len(), IDENTIFY_DATA_LEN);
    let page: &[u8; IDENTIFY_DATA_LEN] = data.as_slice().try_into().unwrap();
    let id = IdentifyController::parse(page).unwrap();
    assert_eq!(id.cntlid, cntlid);
    assert_eq!(id.subnqn, DISCOVERY_NQN);
    assert_eq!(id.cntrltype, cntrltype::DISCOVERY);
    assert_eq!(id.ver, 0x10300);
    assert_eq!((id.sqes, id.cqes), (0x66, 0x44));
    assert_eq!(id.kas, 10);
    assert_eq!(id.maxcmd, 128);
    assert_eq!(id.oaes, oaes::DISCOVERY_LOG_CHANGE);
    assert_eq!(id.sgls, 0x100001);
    assert_eq!(id.mdts, 8);
    assert_eq!(id.nn, 0);

    // 10. Async event configuration: discovery log change notices.
    let sqe = set_features_sqe(h.cid(), FeatureId::AsyncEventConfiguration, 0x8000_0000);
    h.ok(&mut session, &sqe);

    // 11. AER with CID 31 stays outstanding.
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.submit(&mut session, &aer, &[]), Reply::Deferred);

    // 12. Identify again (libnvme).
    let sqe = identify_sqe(h.cid(), IdentifyCns::Controller, 0, 0);
    h.ok(&mut session, &sqe);

    // 13. Discovery log header, RAE=1, 1024 bytes.
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, true, 1024, 0);
    let (_, header) = h.ok(&mut session, &sqe);
    let header = DiscoveryLogHeader::parse(record(&header, 0));
    assert_eq!(header.numrec, 2);
    assert_eq!(header.genctr, h.target.discovery_generation());
    assert_eq!(header.recfmt, 0);

    // 14. The whole log, RAE=0, 3072 bytes.
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, false, 3072, 0);
    let (_, log) = h.ok(&mut session, &sqe);
    assert_eq!(log.len(), 3072);
    let current = DiscoveryLogEntry::parse(record(&log, 1)).unwrap();
    assert_eq!(current.subtype, SubsystemType::CurrentDiscovery);
    assert_eq!(current.subnqn, DISCOVERY_NQN);
    let nvm = DiscoveryLogEntry::parse(record(&log, 2)).unwrap();
    assert_eq!(nvm.subtype, SubsystemType::Nvm);
    assert_eq!(nvm.subnqn, SUBNQN);
    for entry in [current, nvm] {
        assert_eq!(entry.trtype, TransportType::Tcp);
        assert_eq!(entry.adrfam, AddressFamily::Ipv4);
        assert_eq!(entry.trsvcid, "4420");
        assert_eq!(entry.traddr, "127.0.0.1");
        assert_eq!(entry.portid, 1);
        assert_eq!(entry.cntlid, 0xFFFF);
        assert_ne!(entry.treq & treq::SQ_FLOW_CONTROL_DISABLE_SUPPORTED, 0);
        assert!(entry.asqsz >= 32);
    }

    // Partial reads at offsets see the same bytes; past the end is zero.
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, true, 1024, 2048);
    let (_, window) = h.ok(&mut session, &sqe);
    assert_eq!(window, &log[2048..3072]);
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, true, 2048, 2048);
    let (_, window) = h.ok(&mut session, &sqe);
    assert_eq!(&window[..1024], &log[2048..3072]);
    assert!(window[1024..].iter().all(|&b| b == 0));
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, true, 1024, 2);
    assert_eq!(
        h.status(&mut session, &sqe),
        Status::INVALID_FIELD,
        "unaligned offset"
    );
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, true, 1024, 4096);
    assert_eq!(
        h.status(&mut session, &sqe),
        Status::INVALID_FIELD,
        "offset past the log"
    );
    // Only the discovery log exists on a discovery controller.
    let sqe = log_page_sqe(h.cid(), LogPageId::SmartHealth, u32::MAX, false, 512, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_LOG_PAGE);
    let sqe = identify_sqe(h.cid(), IdentifyCns::Namespace, 1, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::INVALID_FIELD);

    // 15-16. Shutdown: SHN=01b, CSTS.SHST = 10b (nvmet answers 0x8).
    h.set_cc(&mut session, 0x464061);
    assert_eq!(
        h.get_property(&mut session, property::CSTS, PropertySize::Four),
        0x8
    );

    // TCP close: the AER is aborted and the controller freed.
    h.target.close_queue(&mut session);
    let aborted = h.take_async();
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].cntlid, cntlid);
    assert_eq!(aborted[0].cqe.cid, 31);
    assert_eq!(aborted[0].cqe.status, Status::ABORTED_SQ_DELETION);
    assert_eq!(h.target.controller_count(), 0);
}

#[test]
fn discovery_change_completes_the_aer_and_bumps_genctr() {
    let mut h = Harness::new(target());
    let mut session = QueueSession::new();
    let cntlid = h.connect(&mut session, ConnectParams::discovery()).dw0 as u16;
    h.enable(&mut session);
    let sqe = set_features_sqe(h.cid(), FeatureId::AsyncEventConfiguration, 0x8000_0000);
    h.ok(&mut session, &sqe);
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.submit(&mut session, &aer, &[]), Reply::Deferred);
    let before = h.target.discovery_generation();

    let second = Subsystem::new(
        "nqn.2024-01.dev.keel:vol1",
        "KEEL0002",
        "Keel volume",
        "1.0",
    )
    .unwrap();
    h.target.add_subsystem(second).unwrap();
    let events = h.take_async();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].cntlid, cntlid);
    assert_eq!(events[0].cqe.cid, 31);
    assert_eq!(events[0].cqe.status, Status::SUCCESS);
    // Notice (2h), Discovery Log Page Change (F0h), log page 70h.
    assert_eq!(events[0].cqe.dw0, 0x0070_F002);
    assert!(h.target.discovery_generation() > before);

    // Masked until the log is read with RAE=0; then a new AER catches the next change.
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.submit(&mut session, &aer, &[]), Reply::Deferred);
    h.target
        .remove_subsystem("nqn.2024-01.dev.keel:vol1")
        .unwrap();
    assert!(h.take_async().is_empty());
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, false, 1024, 0);
    let (_, header) = h.ok(&mut session, &sqe);
    let header = DiscoveryLogHeader::parse(record(&header, 0));
    assert_eq!(header.genctr, h.target.discovery_generation());
    assert_eq!(header.numrec, 2);
    let third = Subsystem::new(
        "nqn.2024-01.dev.keel:vol2",
        "KEEL0003",
        "Keel volume",
        "1.0",
    )
    .unwrap();
    h.target.add_subsystem(third).unwrap();
    assert_eq!(h.take_async().len(), 1);
}

#[test]
fn discovery_log_hides_subsystems_from_disallowed_hosts() {
    let mut h = Harness::new(target());
    h.target.allow_host(SUBNQN, OTHER_HOSTNQN).unwrap();
    let mut session = QueueSession::new();
    h.connect(&mut session, ConnectParams::discovery());
    h.enable(&mut session);
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, false, 1024, 0);
    let (_, header) = h.ok(&mut session, &sqe);
    assert_eq!(DiscoveryLogHeader::parse(record(&header, 0)).numrec, 1);
}

#[test]
fn listeners_come_and_go() {
    use crate::controller::{ConfigError, Listener};
    let mut h = Harness::new(target());
    let second = Listener::new(2, AddressFamily::Ipv4, "10.0.0.1", "4420").unwrap();
    h.target.add_listener(second.clone()).unwrap();
    assert_eq!(
        h.target.add_listener(second),
        Err(ConfigError::DuplicateListener(2))
    );
    let mut session = QueueSession::new();
    h.connect(&mut session, ConnectParams::discovery());
    h.enable(&mut session);
    let sqe = log_page_sqe(h.cid(), LogPageId::Discovery, 0, false, 1024, 0);
    let (_, header) = h.ok(&mut session, &sqe);
    assert_eq!(DiscoveryLogHeader::parse(record(&header, 0)).numrec, 4);
    assert_eq!(h.target.remove_listener(2).unwrap().traddr(), "10.0.0.1");
    assert_eq!(
        h.target.remove_listener(2),
        Err(ConfigError::UnknownListener(2))
    );
    let (_, header) = h.ok(&mut session, &sqe);
    assert_eq!(DiscoveryLogHeader::parse(record(&header, 0)).numrec, 2);
}
