//! Connects the target must refuse, with the status and DW0 the spec asks
//! for (NVMe Base 2.0 §6.3).

use super::support::*;
use crate::controller::{QueueSession, TargetLimits};
use crate::nvme::fabrics::{ConnectCommand, ConnectInvalidParameter};
use crate::nvme::nqn::DISCOVERY_NQN;
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::status::{Status, StatusCodeType};

fn refused(h: &mut Harness, params: ConnectParams<'_>) -> (Status, ConnectInvalidParameter) {
    let mut session = QueueSession::new();
    let cqe = h.connect(&mut session, params);
    assert!(!session.is_connected());
    (cqe.status, ConnectInvalidParameter::from_dw0(cqe.dw0))
}

fn data_param(offset: u16) -> ConnectInvalidParameter {
    ConnectInvalidParameter {
        in_data: true,
        offset,
    }
}

fn sqe_param(offset: u16) -> ConnectInvalidParameter {
    ConnectInvalidParameter {
        in_data: false,
        offset,
    }
}

#[test]
fn host_not_allowed() {
    let mut h = Harness::new(target());
    h.target.allow_host(SUBNQN, OTHER_HOSTNQN).unwrap();
    let (status, _) = refused(&mut h, ConnectParams::admin(SUBNQN));
    assert_eq!(status, Status::CONNECT_INVALID_HOST);
    assert_eq!(
        (status.sct, status.sc, status.dnr),
        (StatusCodeType::CommandSpecific, 0x84, true)
    );
    assert_eq!(h.target.controller_count(), 0);
    // The allowed host gets in; discovery is open to everyone.
    let mut session = QueueSession::new();
    let params = ConnectParams {
        hostnqn: OTHER_HOSTNQN,
        ..ConnectParams::admin(SUBNQN)
    };
    assert_eq!(h.connect(&mut session, params).status, Status::SUCCESS);
    let mut session = QueueSession::new();
    assert_eq!(
        h.connect(&mut session, ConnectParams::discovery()).status,
        Status::SUCCESS
    );
}

#[test]
fn unknown_subsystem() {
    let mut h = Harness::new(target());
    let (status, param) = refused(&mut h, ConnectParams::admin("nqn.2024-01.dev.keel:nope"));
    assert_eq!(status, Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(
        (status.sct, status.sc),
        (StatusCodeType::CommandSpecific, 0x82)
    );
    assert_eq!(param, data_param(256), "IATTR 1, IPO SUBNQN");
}

#[test]
fn admin_parameters() {
    let mut h = Harness::new(target());
    let cases = [
        (
            ConnectParams {
                sqsize: 0,
                ..ConnectParams::admin(SUBNQN)
            },
            sqe_param(44),
        ),
        (
            ConnectParams {
                sqsize: 128,
                ..ConnectParams::admin(SUBNQN)
            },
            sqe_param(44),
        ),
        (
            ConnectParams {
                cntlid: 5,
                ..ConnectParams::admin(SUBNQN)
            },
            data_param(16),
        ),
        (
            ConnectParams {
                host_id: [0; 16],
                ..ConnectParams::admin(SUBNQN)
            },
            data_param(0),
        ),
    ];
    for (params, expected) in cases {
        assert_eq!(
            refused(&mut h, params),
            (Status::CONNECT_INVALID_PARAMETERS, expected),
            "{params:?}"
        );
    }
    let (status, _) = refused(
        &mut h,
        ConnectParams {
            recfmt: 1,
            ..ConnectParams::admin(SUBNQN)
        },
    );
    assert_eq!(status, Status::CONNECT_INCOMPATIBLE_FORMAT);
}

#[test]
fn malformed_connect_data() {
    let mut h = Harness::new(target());
    let mut session = QueueSession::new();
    let (sqe, mut data) = connect_capsule(1, ConnectParams::admin(SUBNQN));
    // SUBNQN without a terminating NUL.
    data[256..512].fill(b'a');
    let cqe = h.complete(&mut session, &sqe, &data).0;
    assert_eq!(cqe.status, Status::CONNECT_INVALID_PARAMETERS);
    assert_eq!(ConnectInvalidParameter::from_dw0(cqe.dw0), data_param(256));
    // Bad HOSTNQN.
    let (sqe, mut data) = connect_capsule(2, ConnectParams::admin(SUBNQN));
    data[512..516].copy_from_slice(b"iqn.");
    let cqe = h.complete(&mut session, &sqe, &data).0;
    assert_eq!(ConnectInvalidParameter::from_dw0(cqe.dw0), data_param(512));
    // Short capsule data, wrong SGL length, wrong SGL type.
    let (sqe, data) = connect_capsule(3, ConnectParams::admin(SUBNQN));
    assert_eq!(
        h.complete(&mut session, &sqe, &data[..512]).0.status,
        Status::SGL_OFFSET_INVALID
    );
    let mut short = sqe;
    short.set_sgl1(SglDescriptor::InCapsule {
        offset: 0,
        length: 512,
    });
    assert_eq!(
        h.complete(&mut session, &short, &data).0.status,
        Status::DATA_SGL_LENGTH_INVALID
    );
    let mut keyed = sqe;
    keyed.set_sgl1(SglDescriptor::TransportDataBlock { length: 1024 });
    assert_eq!(
        h.complete(&mut session, &keyed, &data).0.status,
        Status::SGL_DESCRIPTOR_TYPE_INVALID
    );
    assert!(!session.is_connected());
}

#[test]
fn io_queue_connect_checks() {
    let mut h = Harness::new(target());
    let (_admin, cntlid) = h.admin_session(0);
    let io = ConnectParams::io(cntlid, 1);
    let cases = [
        (
            ConnectParams {
                cntlid: cntlid + 1,
                ..io
            },
            data_param(16),
        ),
        (
            ConnectParams {
                cntlid: 0xFFFF,
                ..io
            },
            data_param(16),
        ),
        (ConnectParams { qid: 65, ..io }, sqe_param(42)),
        (
            ConnectParams {
                hostnqn: OTHER_HOSTNQN,
                ..io
            },
            data_param(512),
        ),
        (
            ConnectParams {
                host_id: [0x22; 16],
                ..io
            },
            data_param(0),
        ),
        (
            ConnectParams {
                subnqn: DISCOVERY_NQN,
                ..io
            },
            data_param(256),
        ),
        (ConnectParams { sqsize: 1024, ..io }, sqe_param(44)),
    ];
    for (params, expected) in cases {
        assert_eq!(
            refused(&mut h, params),
            (Status::CONNECT_INVALID_PARAMETERS, expected),
            "{params:?}"
        );
    }
    // QID in use.
    let _first = h.io_session(cntlid, 1);
    assert_eq!(refused(&mut h, io).0, Status::COMMAND_SEQUENCE_ERROR);
    // Connect twice on one connection.
    let mut session = h.io_session(cntlid, 2);
    assert_eq!(
        h.connect(&mut session, ConnectParams::io(cntlid, 3)).status,
        Status::COMMAND_SEQUENCE_ERROR
    );
    assert_eq!(session.qid(), Some(2));
}

#[test]
fn io_queue_connect_before_enable_and_to_discovery() {
    let mut h = Harness::new(target());
    let mut admin = QueueSession::new();
    let cntlid = h.connect(&mut admin, ConnectParams::admin(SUBNQN)).dw0 as u16;
    assert_eq!(
        refused(&mut h, ConnectParams::io(cntlid, 1)).0,
        Status::COMMAND_SEQUENCE_ERROR
    );

    let mut discovery = QueueSession::new();
    let disc = h.connect(&mut discovery, ConnectParams::discovery()).dw0 as u16;
    h.enable(&mut discovery);
    let params = ConnectParams {
        subnqn: DISCOVERY_NQN,
        ..ConnectParams::io(disc, 1)
    };
    assert_eq!(
        refused(&mut h, params),
        (Status::CONNECT_INVALID_PARAMETERS, sqe_param(42))
    );
}

#[test]
fn controller_ids_run_out_and_come_back() {
    let mut h = Harness::new(target_with(TargetLimits {
        max_controllers: 2,
        ..TargetLimits::default()
    }));
    let mut a = QueueSession::new();
    let mut b = QueueSession::new();
    let first = h.connect(&mut a, ConnectParams::admin(SUBNQN)).dw0;
    let second = h.connect(&mut b, ConnectParams::admin(SUBNQN)).dw0;
    assert_ne!(first, second);
    let (status, _) = refused(&mut h, ConnectParams::admin(SUBNQN));
    assert_eq!(status, Status::CONNECT_CONTROLLER_BUSY);
    assert!(!status.dnr, "retryable");
    h.target.close_queue(&mut a);
    let mut c = QueueSession::new();
    assert_eq!(
        h.connect(&mut c, ConnectParams::admin(SUBNQN)).status,
        Status::SUCCESS
    );
}

#[test]
fn commands_before_connect() {
    let mut h = Harness::new(target());
    let mut session = QueueSession::new();
    let sqe = identify_sqe(0x3001, crate::nvme::admin::IdentifyCns::Controller, 0, 0);
    assert_eq!(h.status(&mut session, &sqe), Status::COMMAND_SEQUENCE_ERROR);
    let connect = ConnectCommand {
        qid: 0,
        sqsize: 31,
        ..Default::default()
    }
    .to_sqe(0x4002);
    assert_eq!(
        h.complete(&mut session, &connect, &[]).0.status,
        Status::SGL_OFFSET_INVALID
    );
}

#[test]
fn controller_ids_stay_in_the_configured_range_and_wrap() {
    let limits = TargetLimits {
        cntlid_min: 0xFFEE,
        cntlid_max: 0xFFFF,
        max_controllers: 100,
        ..TargetLimits::default()
    };
    let mut h = Harness::new(target_with(limits));
    let mut a = QueueSession::new();
    let mut b = QueueSession::new();
    assert_eq!(h.connect(&mut a, ConnectParams::admin(SUBNQN)).dw0, 0xFFEE);
    assert_eq!(h.connect(&mut b, ConnectParams::admin(SUBNQN)).dw0, 0xFFEF);
    assert_eq!(
        refused(&mut h, ConnectParams::admin(SUBNQN)).0,
        Status::CONNECT_CONTROLLER_BUSY
    );
    h.target.close_queue(&mut a);
    let mut c = QueueSession::new();
    assert_eq!(h.connect(&mut c, ConnectParams::admin(SUBNQN)).dw0, 0xFFEE);
    let info = h.target.controller_info(0xFFEE).unwrap();
    assert_eq!(
        (info.subnqn, info.hostnqn, info.io_queues),
        (SUBNQN, HOSTNQN, 0)
    );
}
