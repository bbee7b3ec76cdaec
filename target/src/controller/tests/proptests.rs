//! Arbitrary SQEs never panic and always get an answer: a CQE with some
//! status, an I/O command (whose completion is a CQE), or a parked AER.

use proptest::prelude::*;

use super::support::*;
use crate::controller::{parse_io_command, IoLimits, QueueSession, Reply, TargetLimits};
use crate::nvme::sqe::{SubmissionQueueEntry, SQE_LEN};
use crate::nvme::status::Status;

fn sqe_bytes() -> impl Strategy<Value = [u8; SQE_LEN]> {
    proptest::collection::vec(any::<u8>(), SQE_LEN).prop_map(|bytes| {
        let mut out = [0u8; SQE_LEN];
        out.copy_from_slice(&bytes);
        out
    })
}

/// SQEs close to real ones: a known opcode byte, SGL identifiers the
/// target sees, small NSIDs, otherwise random.
fn plausible_sqe() -> impl Strategy<Value = SubmissionQueueEntry> {
    (
        sqe_bytes(),
        prop::sample::select(vec![
            0x00u8, 0x01, 0x02, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x18, 0x7F,
        ]),
        prop::sample::select(vec![0x01u8, 0x5A, 0x40, 0x00]),
        0u32..4,
        0u8..9,
        any::<bool>(),
    )
        .prop_map(|(bytes, opcode, sgl_id, nsid, fctype, sgl_flags)| {
            let mut sqe = SubmissionQueueEntry::decode(&bytes);
            sqe.opcode = opcode;
            sqe.dptr[15] = sgl_id;
            if sgl_flags {
                sqe.flags = 0x40;
            }
            sqe.nsid = if opcode == 0x7F {
                u32::from(fctype)
            } else {
                nsid
            };
            sqe
        })
}

/// I/O commands with mostly valid fields, so the data path branch and the
/// DSM range decoding are exercised too.
fn io_sqe() -> impl Strategy<Value = SubmissionQueueEntry> {
    (
        prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x05, 0x08, 0x09]),
        0u32..3,
        0u64..300,
        0u32..300,
        any::<bool>(),
        prop::sample::select(vec![0u32, 1 << 25, 1 << 30, 1 << 31, 1 << 26]),
        0u32..8,
    )
        .prop_map(|(opcode, nsid, slba, nlb, in_capsule, flags, nr)| {
            let mut sqe = SubmissionQueueEntry {
                opcode,
                cid: nlb as u16,
                nsid,
                cdw10: if opcode == 0x09 { nr } else { slba as u32 },
                cdw11: if opcode == 0x09 { 1 << 2 } else { 0 },
                cdw12: nlb | flags,
                ..Default::default()
            };
            let len = match opcode {
                0x09 => (nr + 1) * 16,
                0x00 | 0x08 => 0,
                _ => (nlb + 1) * 4096,
            };
            sqe.set_psdt(crate::nvme::sqe::Psdt::SglMetadataBuffer);
            sqe.set_sgl1(if in_capsule {
                crate::nvme::sgl::SglDescriptor::InCapsule {
                    offset: 0,
                    length: len,
                }
            } else {
                crate::nvme::sgl::SglDescriptor::TransportDataBlock { length: len }
            });
            sqe
        })
}

fn answer(
    h: &mut Harness,
    session: &mut QueueSession,
    sqe: &SubmissionQueueEntry,
    data: &[u8],
) -> Option<Status> {
    match h.submit(session, sqe, data) {
        Reply::Complete(response) => {
            assert_eq!(response.cqe.cid, sqe.cid);
            assert!(response.data_len <= h.out.len());
            Some(response.cqe.status)
        }
        Reply::Io(command) => {
            assert_eq!(command.cid, sqe.cid);
            let cqe = h.target.complete_io(session, &command, Status::SUCCESS);
            assert_eq!(cqe.cid, sqe.cid);
            Some(cqe.status)
        }
        Reply::Deferred => {
            assert_eq!(sqe.opcode, 0x0C, "only AERs are parked");
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn unconnected_queue_answers_everything(
        bytes in sqe_bytes(),
        data in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut h = Harness::new(target());
        let mut session = QueueSession::new();
        let sqe = SubmissionQueueEntry::decode(&bytes);
        prop_assert!(answer(&mut h, &mut session, &sqe, &data).is_some());
    }

    #[test]
    fn admin_queue_answers_everything(
        sqes in proptest::collection::vec(prop_oneof![sqe_bytes().prop_map(|b| SubmissionQueueEntry::decode(&b)), plausible_sqe()], 1..24),
        data in proptest::collection::vec(any::<u8>(), 0..1100),
    ) {
        let mut h = Harness::new(target());
        let (mut session, _) = h.admin_session(5000);
        for sqe in &sqes {
            answer(&mut h, &mut session, sqe, &data);
        }
        h.target.tick(crate::controller::Timestamp::from_millis(60_000));
        h.take_async();
    }

    #[test]
    fn io_queue_answers_everything(
        sqes in proptest::collection::vec(prop_oneof![sqe_bytes().prop_map(|b| SubmissionQueueEntry::decode(&b)), plausible_sqe()], 1..24),
        data in proptest::collection::vec(any::<u8>(), 0..4200),
    ) {
        let mut h = Harness::new(target());
        let (_admin, cntlid) = h.admin_session(0);
        let mut io = h.io_session(cntlid, 1);
        for sqe in &sqes {
            prop_assert!(answer(&mut h, &mut io, sqe, &data).is_some());
        }
    }

    #[test]
    fn plausible_io_commands_are_answered(
        commands in proptest::collection::vec(io_sqe(), 1..32),
        data in proptest::collection::vec(any::<u8>(), 0..8192),
    ) {
        let mut h = Harness::new(target());
        let (_admin, cntlid) = h.admin_session(0);
        let mut io = h.io_session(cntlid, 1);
        for sqe in &commands {
            let reply = h.submit(&mut io, sqe, &data);
            if let Reply::Io(command) = reply {
                if let crate::controller::IoOperation::DatasetManagement(dsm) = &command.operation {
                    let list = dsm.data.in_capsule(&data).unwrap_or(&data);
                    let _ = dsm.byte_ranges(list);
                }
                let cqe = h.target.complete_io(&mut io, &command, Status::SUCCESS);
                prop_assert_eq!(cqe.cid, sqe.cid);
            } else {
                prop_assert!(reply.completion().is_some());
            }
        }
        prop_assert_eq!(io.in_flight(), 0);
    }

    #[test]
    fn io_front_end_is_total(bytes in sqe_bytes(), data in proptest::collection::vec(any::<u8>(), 0..4200)) {
        let subsystem = subsystem();
        let limits = IoLimits::from(&TargetLimits::default());
        let sqe = SubmissionQueueEntry::decode(&bytes);
        if let Ok(command) = parse_io_command(&sqe, &data, &subsystem, &limits) {
            if let crate::controller::IoOperation::DatasetManagement(dsm) = command.operation {
                let _ = dsm.byte_ranges(&data);
            }
        }
    }
}
