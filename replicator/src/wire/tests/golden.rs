//! Byte-exact encodings, written out by hand from the layout in
//! `docs/replication-protocol.md`. The CRC values were computed with an
//! independent bit-by-bit CRC32C (Castagnoli, reflected, polynomial
//! 0x82F63B78), checked against the standard "123456789" -> 0xE3069283.

use super::{decode_one, encode, envelope};
use crate::wire::{
    Ack, CopyInfo, CopyList, Envelope, Epoch, EpochChange, Hello, Membership, Message, Nack,
    NackReason, NodeId, Nonce, ReplicationMode, Role, Sequence, StreamId, Version, VersionRange,
    VolumeId, Write, HEADER_LEN,
};

/// Checks `message` encodes to `expected` and `expected` decodes back to
/// `message` with the given envelope.
fn assert_golden(message: &Message<'_>, envelope: &Envelope, expected: &[u8]) {
    let encoded = encode(message, envelope);
    assert_eq!(encoded, expected, "encoding differs");
    let frame = decode_one(expected);
    assert_eq!(&frame.message, message);
    assert_eq!(frame.envelope(), *envelope);
}

#[rustfmt::skip]
const WRITE_FRAME: [u8; 68] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x00,                                     // version 1.0
    0x10,                                           // type: Write
    0x01,                                           // flags: FUA
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x04, 0x00, 0x00, 0x00,                         // payload length 4
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch 3
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 42
    0x02, 0x00, 0x00, 0x00,                         // stream 2
    0x04, 0x00, 0x00, 0x00,                         // range length 4 bytes
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset 4096 bytes
    0xc2, 0x27, 0x0d, 0x4c,                         // payload CRC32C 0x4c0d27c2
    0x78, 0x00, 0x76, 0x8e,                         // header CRC32C 0x8e760078
    b'k', b'e', b'e', b'l',                         // payload: the data
];

#[test]
fn write_is_byte_exact() {
    let message = Message::Write(Write {
        stream: StreamId(2),
        sequence: Sequence(42),
        offset: 4096,
        data: b"keel",
        fua: true,
        position: None,
    });
    assert_golden(&message, &envelope(), &WRITE_FRAME);
}

#[test]
fn write_header_only_matches_full_encoding() {
    let write = Write {
        stream: StreamId(2),
        sequence: Sequence(42),
        offset: 4096,
        data: b"keel",
        fua: true,
        position: None,
    };
    let mut header = [0u8; HEADER_LEN];
    write.encode_header(&envelope(), &mut header).unwrap();
    assert_eq!(header[..], WRITE_FRAME[..HEADER_LEN]);
}

#[rustfmt::skip]
const ACK_FRAME: [u8; 64] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x00,                                     // version 1.0
    0x12,                                           // type: Ack
    0x00,                                           // flags
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x00, 0x00, 0x00, 0x00,                         // payload length 0
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch 3
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // durable through sequence 42
    0x02, 0x00, 0x00, 0x00,                         // stream 2
    0x00, 0x00, 0x00, 0x00,                         // range length (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset (unused)
    0x00, 0x00, 0x00, 0x00,                         // payload CRC32C of nothing
    0x89, 0x39, 0x41, 0xa6,                         // header CRC32C 0xa6413989
];

#[test]
fn ack_is_byte_exact() {
    let message = Message::Ack(Ack {
        stream: StreamId(2),
        durable_through: Sequence(42),
        applied_only: false,
        standing: None,
    });
    assert_golden(&message, &envelope(), &ACK_FRAME);
}

#[rustfmt::skip]
const HELLO_FRAME: [u8; 112] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x00,                                     // version 1.0
    0x01,                                           // type: Hello
    0x00,                                           // flags
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x30, 0x00, 0x00, 0x00,                         // payload length 48
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch 3
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence (unused)
    0x00, 0x00, 0x00, 0x00,                         // stream (unused)
    0x00, 0x00, 0x00, 0x00,                         // range length (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset (unused)
    0xae, 0x70, 0x57, 0xe4,                         // payload CRC32C 0xe45770ae
    0x40, 0xd7, 0xa2, 0x02,                         // header CRC32C 0x02a2d740
    // payload
    0x01, 0x00,                                     // min version 1.0
    0x01, 0x00,                                     // max version 1.0
    0x01,                                           // role: primary
    0x00, 0x00, 0x00,                               // reserved
    0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // node 0x11
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, // nonce 00..1f
    0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
    0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];

#[test]
fn hello_is_byte_exact() {
    let mut nonce = [0u8; 32];
    for (i, byte) in nonce.iter_mut().enumerate() {
        *byte = i as u8;
    }
    let message = Message::Hello(Hello {
        versions: VersionRange::new(Version::new(1, 0), Version::new(1, 0)).unwrap(),
        role: Role::Primary,
        node: NodeId(0x11),
        nonce: Nonce(nonce),
    });
    assert_golden(&message, &envelope(), &HELLO_FRAME);
}

#[rustfmt::skip]
const EPOCH_CHANGE_FRAME: [u8; 144] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x00,                                     // version 1.0
    0x40,                                           // type: EpochChange
    0x00,                                           // flags
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x50, 0x00, 0x00, 0x00,                         // payload length 80
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // the new epoch, 4
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 1
    0x00, 0x00, 0x00, 0x00,                         // stream 0
    0x00, 0x00, 0x00, 0x00,                         // range length (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset (unused)
    0xfc, 0x5f, 0x5d, 0x09,                         // payload CRC32C 0x095d5ffc
    0x73, 0xce, 0x54, 0xaf,                         // header CRC32C 0xaf54ce73
    // payload
    0x02,                                           // write quorum 2
    0x03,                                           // 3 copies
    0x00, 0x00,                                     // reserved
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 1: node 1
    0x01, 0x01,                                     //   primary, sync
    0x0d, 0x00,                                     //   address: 13 bytes
    b'1', b'0', b'.', b'0', b'.', b'0', b'.', b'1', b':', b'4', b'4', b'2', b'1',
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 2: node 2
    0x02, 0x01,                                     //   replica, sync
    0x0d, 0x00,                                     //   address: 13 bytes
    b'1', b'0', b'.', b'0', b'.', b'0', b'.', b'2', b':', b'4', b'4', b'2', b'1',
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 3: node 3
    0x02, 0x02,                                     //   replica, async
    0x0e, 0x00,                                     //   address: 14 bytes
    b'[', b'f', b'd', b'0', b'0', b':', b':', b'3', b']', b':', b'4', b'4', b'2', b'1',
];

#[test]
fn epoch_change_is_byte_exact() {
    let copies = [
        CopyInfo {
            node: NodeId(1),
            role: Role::Primary,
            mode: ReplicationMode::Sync,
            address: "10.0.0.1:4421",
        },
        CopyInfo {
            node: NodeId(2),
            role: Role::Replica,
            mode: ReplicationMode::Sync,
            address: "10.0.0.2:4421",
        },
        CopyInfo {
            node: NodeId(3),
            role: Role::Replica,
            mode: ReplicationMode::Async,
            address: "[fd00::3]:4421",
        },
    ];
    let message = Message::EpochChange(EpochChange {
        stream: StreamId(0),
        sequence: Sequence(1),
        membership: Membership {
            write_quorum: 2,
            copies: CopyList::Borrowed(&copies),
            since: None,
            previous: None,
        },
    });
    let envelope = Envelope {
        version: Version::V1_0,
        ..Envelope::new(VolumeId(7), Epoch(4))
    };
    assert_golden(&message, &envelope, &EPOCH_CHANGE_FRAME);
}

#[rustfmt::skip]
const STALE_EPOCH_NACK_FRAME: [u8; 80] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x00,                                     // version 1.0
    0x13,                                           // type: Nack
    0x00,                                           // flags
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x10, 0x00, 0x00, 0x00,                         // payload length 16
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // the replica's epoch, 9
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // refused sequence 42
    0x02, 0x00, 0x00, 0x00,                         // of stream 2
    0x00, 0x00, 0x00, 0x00,                         // range length (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset (unused)
    0xe9, 0xee, 0x7b, 0xbb,                         // payload CRC32C 0xbb7beee9
    0xfd, 0x1c, 0x33, 0xeb,                         // header CRC32C 0xeb331cfd
    // payload
    0x01, 0x00,                                     // reason 1: stale epoch
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00,             // reserved
    0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // detail: current epoch 9
];

#[test]
fn stale_epoch_nack_is_byte_exact() {
    let message = Message::Nack(Nack {
        stream: StreamId(2),
        sequence: Sequence(42),
        reason: NackReason::StaleEpoch { current: Epoch(9) },
    });
    let envelope = Envelope {
        version: Version::V1_0,
        ..Envelope::new(VolumeId(7), Epoch(9))
    };
    assert_golden(&message, &envelope, &STALE_EPOCH_NACK_FRAME);
}
