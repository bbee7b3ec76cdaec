//! KATO enforcement with a fake clock (NVMe Base 2.0 §3.9.5).

use super::support::*;
use crate::controller::{QueueSession, Reply, Timestamp};
use crate::nvme::admin::FeatureId;
use crate::nvme::fabrics::{property, CNTLID_DYNAMIC};
use crate::nvme::opcode::AdminOpcode;
use crate::nvme::status::Status;

#[test]
fn kato_expiry_frees_the_controller() {
    let mut h = Harness::new(target());
    let (mut admin, cntlid) = h.admin_session(5000);
    let mut io = h.io_session(cntlid, 1);
    let aer = admin_sqe(AdminOpcode::AsyncEventRequest, 31, 0, 0);
    assert_eq!(h.submit(&mut admin, &aer, &[]), Reply::Deferred);

    assert!(h.target.tick(Timestamp::from_millis(5000)).is_empty());
    // Keep Alive at 4 s restarts the timer.
    h.now = Timestamp::from_millis(4000);
    let sqe = admin_sqe(AdminOpcode::KeepAlive, h.cid(), 0, 0);
    h.ok(&mut admin, &sqe);
    assert!(h.target.tick(Timestamp::from_millis(8999)).is_empty());
    // Any command counts (traffic based keep alive), I/O queues included.
    h.now = Timestamp::from_millis(8500);
    let sqe = admin_sqe(AdminOpcode::Identify, h.cid(), 0, 1);
    h.submit(&mut io, &sqe, &[]);
    assert!(h.target.tick(Timestamp::from_millis(13_000)).is_empty());

    assert_eq!(h.target.tick(Timestamp::from_millis(13_501)), vec![cntlid]);
    assert!(
        h.target.tick(Timestamp::from_millis(20_000)).is_empty(),
        "reported once"
    );
    // CSTS.CFS is set for anyone still asking.
    let csts = h.get_property(
        &mut admin,
        property::CSTS,
        crate::nvme::fabrics::PropertySize::Four,
    );
    assert_eq!(csts & 0x2, 0x2);

    assert!(h.target.teardown(cntlid));
    assert!(!h.target.teardown(cntlid));
    assert_eq!(h.target.controller_count(), 0);
    let aborted = h.take_async();
    assert_eq!((aborted.len(), aborted[0].cqe.cid), (1, 31));
    // Stale sessions are refused; the ID no longer accepts I/O queues.
    let sqe = admin_sqe(AdminOpcode::KeepAlive, h.cid(), 0, 0);
    assert_eq!(h.status(&mut admin, &sqe), Status::COMMAND_SEQUENCE_ERROR);
    assert_eq!(h.status(&mut io, &sqe), Status::COMMAND_SEQUENCE_ERROR);
    let mut late = QueueSession::new();
    assert_eq!(
        h.connect(&mut late, ConnectParams::io(cntlid, 2)).status,
        Status::CONNECT_INVALID_PARAMETERS
    );
}

#[test]
fn kato_zero_disables_and_set_features_changes_it() {
    let mut h = Harness::new(target());
    let (mut admin, cntlid) = h.admin_session(0);
    assert!(h.target.tick(Timestamp::from_millis(1 << 40)).is_empty());
    let sqe = set_features_sqe(h.cid(), FeatureId::KeepAliveTimer, 1500);
    h.ok(&mut admin, &sqe);
    let sqe = get_features_sqe(h.cid(), FeatureId::KeepAliveTimer, 0, 0);
    assert_eq!(
        h.ok(&mut admin, &sqe).0.dw0,
        2000,
        "rounded up to KAS (1 s)"
    );
    assert!(h.target.tick(Timestamp::from_millis(1999)).is_empty());
    assert_eq!(h.target.tick(Timestamp::from_millis(2001)), vec![cntlid]);
}

#[test]
fn discovery_with_kato_zero_still_expires() {
    let mut h = Harness::new(target());
    let mut session = QueueSession::new();
    let cntlid = h.connect(&mut session, ConnectParams::discovery()).dw0 as u16;
    assert_ne!(cntlid, CNTLID_DYNAMIC);
    assert!(h.target.tick(Timestamp::from_millis(119_999)).is_empty());
    assert_eq!(h.target.tick(Timestamp::from_millis(120_001)), vec![cntlid]);
}

#[test]
fn clock_going_backwards_expires_nothing() {
    let mut h = Harness::new(target());
    h.now = Timestamp::from_millis(10_000);
    let (_admin, _) = h.admin_session(5000);
    assert!(h.target.tick(Timestamp::from_millis(1)).is_empty());
}

#[test]
fn io_queue_connects_count_as_traffic() {
    let mut h = Harness::new(target());
    let (_admin, cntlid) = h.admin_session(5000);
    h.now = Timestamp::from_millis(4000);
    let _io = h.io_session(cntlid, 1);
    assert!(h.target.tick(Timestamp::from_millis(8000)).is_empty());
    assert_eq!(h.target.tick(Timestamp::from_millis(9001)), vec![cntlid]);
}
