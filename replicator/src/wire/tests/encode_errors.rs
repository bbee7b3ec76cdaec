//! The encoder refuses what the decoder would refuse.

use proptest::prelude::*;

use super::envelope;
use super::strategies::{envelope as any_envelope, spec};
use crate::wire::{
    ByteRange, CopyInfo, CopyList, EncodeError, Envelope, Epoch, EpochChange, FieldProblem, Flush,
    Membership, Message, MessageType, Nack, NackReason, NodeId, PreviousCopies, ReadRequest,
    ReadTag, ReplicationMode, Resync, ResyncOp, Role, Sequence, StreamId, Version, Write,
    HEADER_LEN, MAX_ADDRESS_LEN, MAX_PAYLOAD_LEN,
};

fn invalid(message: &Message<'_>) -> (&'static str, FieldProblem) {
    let mut out = vec![0u8; message.encoded_len()];
    match message.encode(&envelope(), &mut out) {
        Err(EncodeError::Invalid { field, problem }) => (field, problem),
        other => panic!("expected an invalid-field error, got {other:?}"),
    }
}

proptest! {
    #[test]
    fn a_short_buffer_is_an_error_not_a_panic(spec in spec(), envelope in any_envelope()) {
        let message = spec.message();
        let mut out = vec![0u8; message.encoded_len() - 1];
        let is_too_small = matches!(
            message.encode(&envelope, &mut out),
            Err(EncodeError::BufferTooSmall { .. })
        );
        prop_assert!(is_too_small);
    }
}

#[test]
fn only_versions_this_code_speaks_can_be_encoded() {
    let message = Message::Flush(Flush {
        stream: StreamId(1),
        sequence: Sequence(1),
    });
    let mut out = [0u8; HEADER_LEN];
    for version in [Version::new(2, 0), Version::new(1, 5), Version::new(0, 9)] {
        let envelope = Envelope {
            version,
            ..envelope()
        };
        assert_eq!(
            message.encode(&envelope, &mut out),
            Err(EncodeError::UnsupportedVersion(version))
        );
    }
}

#[test]
fn bad_writes_are_refused() {
    let write = |offset, data| {
        Message::Write(Write {
            stream: StreamId(1),
            sequence: Sequence(1),
            offset,
            data,
            fua: false,
            position: None,
        })
    };
    assert_eq!(
        invalid(&write(0, &[])),
        ("Write.data", FieldProblem::OutOfBounds)
    );
    assert_eq!(
        invalid(&write(u64::MAX, &[1])),
        ("Write.data", FieldProblem::Overflow)
    );
    let too_big = vec![0u8; MAX_PAYLOAD_LEN as usize + 1];
    assert_eq!(
        invalid(&write(0, &too_big)),
        ("Write.data", FieldProblem::OutOfBounds)
    );
    let mut header = [0u8; HEADER_LEN];
    assert!(matches!(
        write(0, &too_big).encode_header(&envelope(), &mut header),
        Err(EncodeError::Invalid { .. })
    ));
}

#[test]
fn header_only_encoding_is_for_data_messages() {
    let mut header = [0u8; HEADER_LEN];
    let flush = Message::Flush(Flush {
        stream: StreamId(1),
        sequence: Sequence(1),
    });
    assert_eq!(
        flush.encode_header(&envelope(), &mut header),
        Err(EncodeError::NotADataMessage(MessageType::Flush))
    );
}

#[test]
fn bad_reads_resyncs_and_nacks_are_refused() {
    let read = |len| {
        Message::ReadRequest(ReadRequest {
            stream: StreamId(1),
            tag: ReadTag(1),
            range: ByteRange::new(0, len),
        })
    };
    assert_eq!(
        invalid(&read(0)),
        ("ReadRequest.range", FieldProblem::OutOfBounds)
    );
    assert_eq!(
        invalid(&read(MAX_PAYLOAD_LEN + 1)),
        ("ReadRequest.range", FieldProblem::OutOfBounds)
    );
    let resync = Message::Resync(Resync {
        stream: StreamId(1),
        sequence: Sequence(1),
        op: ResyncOp::Begin {
            region_size: 0,
            region_count: 1,
        },
    });
    assert_eq!(
        invalid(&resync),
        ("Resync.region_size", FieldProblem::OutOfBounds)
    );
    for code in [0, 1, 14] {
        let nack = Message::Nack(Nack {
            stream: StreamId(0),
            sequence: Sequence(0),
            reason: NackReason::Unrecognized { code, detail: 0 },
        });
        assert_eq!(invalid(&nack), ("Nack.code", FieldProblem::Inconsistent));
    }
}

#[test]
fn bad_memberships_are_refused() {
    let copy = |node, role, mode, address| CopyInfo {
        node: NodeId(node),
        role,
        mode,
        address,
    };
    let change = |write_quorum, copies: &[CopyInfo<'_>]| {
        invalid(&Message::EpochChange(EpochChange {
            stream: StreamId(0),
            sequence: Sequence(1),
            membership: Membership {
                write_quorum,
                copies: CopyList::Owned(copies.to_vec()),
                since: None,
                previous: None,
            },
        }))
    };
    let primary = copy(1, Role::Primary, ReplicationMode::Sync, "a:1");
    let replica = copy(2, Role::Replica, ReplicationMode::Sync, "b:1");
    assert_eq!(
        change(0, &[primary, replica]),
        ("EpochChange.write_quorum", FieldProblem::Inconsistent)
    );
    assert_eq!(
        change(3, &[primary, replica]),
        ("EpochChange.write_quorum", FieldProblem::Inconsistent)
    );
    assert_eq!(
        change(1, &[replica]),
        ("EpochChange.role", FieldProblem::Inconsistent)
    );
    assert_eq!(
        change(
            1,
            &[
                primary,
                copy(1, Role::Replica, ReplicationMode::Sync, "b:1")
            ]
        ),
        ("EpochChange.node", FieldProblem::Inconsistent)
    );
    let long = "x".repeat(MAX_ADDRESS_LEN + 1);
    assert_eq!(
        change(
            1,
            &[
                primary,
                copy(2, Role::Replica, ReplicationMode::Sync, &long)
            ]
        ),
        ("EpochChange.address", FieldProblem::OutOfBounds)
    );
    let many: Vec<_> = (0..17)
        .map(|n| {
            let role = if n == 0 { Role::Primary } else { Role::Replica };
            copy(n, role, ReplicationMode::Sync, "h:1")
        })
        .collect();
    assert_eq!(
        change(1, &many),
        ("EpochChange.copies", FieldProblem::OutOfBounds)
    );
    assert_eq!(
        change(1, &[]),
        ("EpochChange.copies", FieldProblem::OutOfBounds)
    );
}

#[test]
fn bad_previous_memberships_are_refused() {
    let copy = |node, role, mode| CopyInfo {
        node: NodeId(node),
        role,
        mode,
        address: "h:1",
    };
    let current = [
        copy(1, Role::Primary, ReplicationMode::Sync),
        copy(2, Role::Replica, ReplicationMode::Sync),
    ];
    // Encodes an EpochChange carrying `previous` at `version`.
    let encode_at = |version, previous: PreviousCopies<'_>| {
        let message = Message::EpochChange(EpochChange {
            stream: StreamId(0),
            sequence: Sequence(1),
            membership: Membership {
                write_quorum: 1,
                copies: CopyList::Borrowed(&current),
                since: Some(Epoch(3)),
                previous: Some(previous),
            },
        });
        let envelope = Envelope {
            version,
            ..envelope()
        };
        let mut out = vec![0u8; message.encoded_len()];
        message.encode(&envelope, &mut out)
    };
    let change = |write_quorum, copies: &[CopyInfo<'_>]| {
        let previous = PreviousCopies {
            write_quorum,
            copies: CopyList::Owned(copies.to_vec()),
        };
        match encode_at(Version::V1_4, previous) {
            Err(EncodeError::Invalid { field, problem }) => Some((field, problem)),
            Ok(_) => None,
            other => panic!("expected an invalid-field error, got {other:?}"),
        }
    };
    let old = [
        copy(1, Role::Primary, ReplicationMode::Sync),
        copy(3, Role::Replica, ReplicationMode::Sync),
        copy(4, Role::Replica, ReplicationMode::Async),
    ];
    assert_eq!(change(2, &old), None);
    assert_eq!(change(0, &[]), None, "no previous membership");
    let w = (
        "EpochChange.previous_write_quorum",
        FieldProblem::Inconsistent,
    );
    assert_eq!(change(1, &[]), Some(w), "a quorum without copies");
    assert_eq!(change(0, &old), Some(w));
    assert_eq!(change(3, &old), Some(w), "above the old sync copies");
    let role = Some(("EpochChange.previous_role", FieldProblem::Inconsistent));
    let no_primary = [copy(1, Role::Replica, ReplicationMode::Sync)];
    assert_eq!(change(1, &no_primary), role, "who made the change?");
    let two = [old[0], copy(3, Role::Primary, ReplicationMode::Sync)];
    assert_eq!(change(1, &two), role);
    let async_primary = [
        copy(1, Role::Primary, ReplicationMode::Async),
        copy(3, Role::Replica, ReplicationMode::Sync),
    ];
    assert_eq!(change(1, &async_primary), role);
    let twice = [old[0], old[0]];
    assert_eq!(
        change(1, &twice),
        Some(("EpochChange.node", FieldProblem::Inconsistent))
    );
    // The field needs 1.4.
    assert_eq!(
        encode_at(Version::V1_3, PreviousCopies::NONE),
        Err(EncodeError::NotInVersion {
            field: "EpochChange.previous",
            version: Version::V1_3
        })
    );
}
