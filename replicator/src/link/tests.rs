//! The link mapping: every core frame round-trips through the wire, a write
//! and an acknowledgement with a standing are byte-exact, hostile input
//! never panics; and the handshake over real loopback sockets.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use proptest::collection::{hash_set, vec};
use proptest::prelude::*;

use super::handshake::{accept, connect};
use super::{
    decode, encode, encode_header, encode_heartbeat, AddressBook, Decoded, Envelope, LinkError,
    NoAddresses, Other, LINK_VERSION,
};
use crate::auth::{AuthFailure, PreSharedKey};
use crate::core::{Frame, Member, Membership, Position, Previous, Standing};
use crate::wire::{
    self, ByteRange, DecodeError, Epoch, Message, NackReason, NodeId, RegionIndex, ReplicationMode,
    ResyncOp, Role, Sequence, StreamId, Version, VersionRange, VolumeId, MAX_PAYLOAD_LEN,
};

fn address_of(node: NodeId) -> String {
    format!("10.0.{}.{}:4421", node.0 % 200, node.0 % 250)
}

fn addresses(membership: &Membership) -> HashMap<NodeId, String> {
    let previous = membership.previous.iter().flat_map(|p| &p.members);
    membership
        .members
        .iter()
        .chain(previous)
        .map(|m| (m.node, address_of(m.node)))
        .collect()
}

/// A frame with an owned payload, so a strategy can produce both.
#[derive(Debug, Clone)]
struct Case {
    envelope: Envelope,
    frame: Frame<()>,
    payload: Vec<u8>,
}

fn position() -> impl Strategy<Value = Position> {
    (any::<u64>(), any::<u64>()).prop_map(|(epoch, index)| Position {
        epoch: Epoch(epoch),
        index,
    })
}

fn standing() -> impl Strategy<Value = Standing> {
    (
        any::<u64>(),
        any::<u64>(),
        position(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(epoch, synced, applied, consistent, amnesiac)| Standing {
            epoch: Epoch(epoch),
            synced: Epoch(synced),
            applied,
            consistent,
            amnesiac,
        })
}

/// A membership, half the time with a previous one (whose copies overlap
/// the current ones when the node ids are small).
fn membership() -> impl Strategy<Value = Membership> {
    let previous = prop_oneof![
        Just(None),
        some_membership().prop_map(|m| Some(Previous {
            members: m.members,
            write_quorum: m.write_quorum,
            primary: m.primary,
        })),
    ];
    (some_membership(), previous).prop_map(|(m, previous)| Membership { previous, ..m })
}

fn some_membership() -> impl Strategy<Value = Membership> {
    prop_oneof![
        hash_set(any::<u64>(), 1..=wire::MAX_COPIES),
        hash_set(0..8u64, 1..=8),
    ]
    .prop_flat_map(|nodes| {
        let nodes: Vec<u64> = nodes.into_iter().collect();
        let n = nodes.len();
        (
            Just(nodes),
            vec(any::<bool>(), n),
            0..n,
            any::<u8>(),
            any::<u64>(),
        )
    })
    .prop_map(|(nodes, sync, primary, w, since)| {
        let members: Vec<Member> = nodes
            .iter()
            .zip(&sync)
            .enumerate()
            .map(|(i, (&node, &sync))| Member {
                node: NodeId(node),
                mode: if sync || i == primary {
                    ReplicationMode::Sync
                } else {
                    ReplicationMode::Async
                },
            })
            .collect();
        let sync_count = members
            .iter()
            .filter(|m| m.mode == ReplicationMode::Sync)
            .count() as u8;
        Membership {
            primary: members[primary].node,
            write_quorum: 1 + w % sync_count,
            members,
            since: Epoch(since),
            previous: None,
        }
    })
}

fn nack_reason() -> impl Strategy<Value = NackReason> {
    prop_oneof![
        any::<u64>().prop_map(|e| NackReason::StaleEpoch { current: Epoch(e) }),
        any::<u64>().prop_map(|e| NackReason::EpochAhead { current: Epoch(e) }),
        any::<u64>().prop_map(|s| NackReason::OutOfOrder {
            expected: Sequence(s)
        }),
        any::<u32>().prop_map(|b| NackReason::Misaligned { block_size: b }),
        Just(NackReason::MediaError),
        Just(NackReason::Busy),
        Just(NackReason::ProtocolViolation),
        Just(NackReason::UnsupportedVersion {
            supported: VersionRange::SUPPORTED
        }),
        (15u16..=u16::MAX, any::<u64>())
            .prop_map(|(code, detail)| NackReason::Unrecognized { code, detail }),
    ]
}

fn resync_op() -> impl Strategy<Value = ResyncOp> {
    prop_oneof![
        (1..=u64::MAX, any::<u64>()).prop_map(|(region_size, region_count)| ResyncOp::Begin {
            region_size,
            region_count
        }),
        any::<u64>().prop_map(|i| ResyncOp::Region {
            index: RegionIndex(i)
        }),
        Just(ResyncOp::End),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let envelope = (any::<u64>(), any::<u32>(), any::<u64>()).prop_map(|(v, s, e)| Envelope {
        volume: VolumeId(v),
        stream: StreamId(s),
        epoch: Epoch(e),
    });
    let seq = any::<u64>().prop_map(Sequence);
    let frame_and_payload = prop_oneof![
        (
            seq.clone(),
            proptest::option::of(position()),
            any::<u64>(),
            vec(any::<u8>(), 1..300),
            any::<bool>()
        )
            .prop_map(|(seq, position, offset, data, fua)| {
                let len = data.len() as u32;
                let frame = Frame::Write {
                    seq,
                    position,
                    range: ByteRange::new(offset.min(u64::MAX - u64::from(len)), len),
                    data: (),
                    fua,
                };
                (frame, data)
            }),
        (seq.clone(), resync_op()).prop_map(|(seq, op)| (Frame::Resync { seq, op }, Vec::new())),
        (seq.clone(), membership())
            .prop_map(|(seq, membership)| (Frame::EpochChange { seq, membership }, Vec::new())),
        (seq.clone(), proptest::option::of(standing())).prop_map(|(seq, standing)| (
            Frame::Ack {
                durable_through: seq,
                standing
            },
            Vec::new()
        )),
        seq.clone().prop_map(|seq| (
            Frame::Applied {
                applied_through: seq
            },
            Vec::new()
        )),
        seq.clone()
            .prop_map(|seq| (Frame::Flush { seq }, Vec::new())),
        (seq.clone(), any::<u64>(), 1..=MAX_PAYLOAD_LEN).prop_map(|(seq, offset, len)| {
            let range = ByteRange::new(offset.min(u64::MAX - u64::from(len)), len);
            (Frame::ReadRequest { seq, range }, Vec::new())
        }),
        (seq.clone(), any::<u64>(), vec(any::<u8>(), 1..300)).prop_map(|(seq, offset, data)| {
            let len = data.len() as u32;
            let range = ByteRange::new(offset.min(u64::MAX - u64::from(len)), len);
            (
                Frame::ReadResponse {
                    seq,
                    range,
                    data: (),
                },
                data,
            )
        }),
        (seq, nack_reason()).prop_map(|(seq, reason)| (Frame::Nack { seq, reason }, Vec::new())),
    ];
    (envelope, frame_and_payload).prop_map(|(envelope, (frame, payload))| Case {
        envelope,
        frame,
        payload,
    })
}

fn book(frame: &Frame<()>) -> HashMap<NodeId, String> {
    match frame {
        Frame::EpochChange { membership, .. } => addresses(membership),
        _ => HashMap::new(),
    }
}

fn encoded(case: &Case) -> Vec<u8> {
    let mut out = Vec::new();
    let len = encode(
        &case.envelope,
        &case.frame,
        &case.payload,
        &book(&case.frame),
        &mut out,
    )
    .expect("encodes");
    assert_eq!(len, out.len());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn every_core_frame_round_trips(case in case(), junk in vec(any::<u8>(), 0..16)) {
        let mut bytes = encoded(&case);
        let frame_len = bytes.len();
        // Header-only encoding, then the data from where it lies, is the
        // same frame.
        let mut split = Vec::new();
        encode_header(&case.envelope, &case.frame, &case.payload, &book(&case.frame), &mut split)
            .unwrap();
        if matches!(case.frame, Frame::Write { .. } | Frame::ReadResponse { .. }) {
            split.extend_from_slice(&case.payload);
        }
        prop_assert_eq!(&split, &bytes);
        // What follows the frame in the buffer is not its concern.
        bytes.extend_from_slice(&junk);
        let Decoded::Frame { envelope, frame, addresses, consumed } = decode(&bytes).unwrap() else {
            panic!("not a core frame");
        };
        prop_assert_eq!(consumed, frame_len);
        prop_assert_eq!(envelope, case.envelope);
        // The payload handle is where the data lies in the buffer.
        let frame = match frame {
            Frame::Write { seq, position, range, data, fua } => {
                prop_assert_eq!(&bytes[data.clone()], &case.payload[..]);
                Frame::Write { seq, position, range, data: (), fua }
            }
            Frame::Resync { seq, op } => Frame::Resync { seq, op },
            Frame::EpochChange { seq, membership } => Frame::EpochChange { seq, membership },
            Frame::Ack { durable_through, standing } => Frame::Ack { durable_through, standing },
            Frame::Applied { applied_through } => Frame::Applied { applied_through },
            Frame::Flush { seq } => Frame::Flush { seq },
            Frame::Nack { seq, reason } => Frame::Nack { seq, reason },
            Frame::ReadRequest { seq, range } => Frame::ReadRequest { seq, range },
            Frame::ReadResponse { seq, range, data } => {
                prop_assert_eq!(&bytes[data.clone()], &case.payload[..]);
                Frame::ReadResponse { seq, range, data: () }
            }
        };
        prop_assert_eq!(&frame, &case.frame);
        let mut expected_addresses: Vec<_> = book(&case.frame).into_iter().collect();
        let mut addresses = addresses;
        expected_addresses.sort();
        addresses.sort();
        prop_assert_eq!(addresses, expected_addresses);
        // Every shorter prefix asks for more.
        for cut in [0, 1, 63, 64, 79, frame_len - 1] {
            if cut < frame_len {
                let more = decode(&bytes[..cut]).unwrap();
                prop_assert!(matches!(more, Decoded::NeedMore(n) if n > 0 && cut + n <= frame_len));
            }
        }
    }

    #[test]
    fn garbage_never_panics(bytes in vec(any::<u8>(), 0..400)) {
        let _ = decode(&bytes);
        let mut sealed = bytes.clone();
        sealed.splice(0..0, *b"KLRP\x01\x01");
        crate::wire::tests::reseal(&mut sealed);
        let _ = decode(&sealed);
    }

    #[test]
    fn mutated_frames_never_panic(case in case(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encoded(&case);
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = decode(&bytes);
        crate::wire::tests::reseal(&mut bytes);
        if let Err(error) = decode(&bytes) {
            prop_assert!(error.closes_link());
        }
        for cut in 0..bytes.len().min(90) {
            let _ = decode(&bytes[..cut]);
        }
    }
}

#[rustfmt::skip]
const WRITE_FRAME: [u8; 84] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x04,                                     // version 1.4
    0x10,                                           // type: Write
    0x01,                                           // flags: FUA
    0x50, 0x00,                                     // header length 80
    0x00, 0x00,                                     // reserved
    0x04, 0x00, 0x00, 0x00,                         // payload length 4
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch 3
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // seq 42
    0x02, 0x00, 0x00, 0x00,                         // stream 2
    0x04, 0x00, 0x00, 0x00,                         // range length 4
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset 4096
    0xc2, 0x27, 0x0d, 0x4c,                         // payload CRC32C 0x4c0d27c2
    0x55, 0x09, 0x98, 0xa5,                         // header CRC32C 0xa5980955
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // position: epoch 3
    0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //           index 17
    b'k', b'e', b'e', b'l',                         // the data
];

#[rustfmt::skip]
const ACK_FRAME: [u8; 104] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x04,                                     // version 1.4
    0x12,                                           // type: Ack
    0x00,                                           // flags
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x28, 0x00, 0x00, 0x00,                         // payload length 40
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch 3
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // durable through 42
    0x02, 0x00, 0x00, 0x00,                         // stream 2
    0x00, 0x00, 0x00, 0x00,                         // range length (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset (unused)
    0x53, 0x4f, 0x62, 0x9d,                         // payload CRC32C 0x9d624f53
    0xe3, 0x66, 0x99, 0x88,                         // header CRC32C 0x889966e3
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // standing: epoch 3
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   synced 2
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   applied epoch 2
    0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   applied index 1000
    0x01,                                           //   consistent
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       //   reserved
];

const ENVELOPE: Envelope = Envelope {
    volume: VolumeId(7),
    stream: StreamId(2),
    epoch: Epoch(3),
};

#[test]
fn a_write_is_byte_exact() {
    let frame: Frame<()> = Frame::Write {
        seq: Sequence(42),
        position: Some(Position {
            epoch: Epoch(3),
            index: 17,
        }),
        range: ByteRange::new(4096, 4),
        data: (),
        fua: true,
    };
    let mut out = b"earlier".to_vec();
    assert_eq!(
        encode(&ENVELOPE, &frame, b"keel", &NoAddresses, &mut out).unwrap(),
        84
    );
    assert_eq!(&out[..7], b"earlier");
    assert_eq!(out[7..], WRITE_FRAME);
    let decoded = decode(&WRITE_FRAME).unwrap();
    assert_eq!(
        decoded,
        Decoded::Frame {
            envelope: ENVELOPE,
            frame: Frame::Write {
                seq: Sequence(42),
                position: Some(Position {
                    epoch: Epoch(3),
                    index: 17
                }),
                range: ByteRange::new(4096, 4),
                data: 80..84,
                fua: true,
            },
            addresses: Vec::new(),
            consumed: 84,
        }
    );
}

#[test]
fn an_ack_with_standing_is_byte_exact() {
    let frame: Frame<()> = Frame::Ack {
        durable_through: Sequence(42),
        standing: Some(Standing {
            epoch: Epoch(3),
            synced: Epoch(2),
            applied: Position {
                epoch: Epoch(2),
                index: 1000,
            },
            consistent: true,
            amnesiac: false,
        }),
    };
    let mut out = Vec::new();
    encode(&ENVELOPE, &frame, &[], &NoAddresses, &mut out).unwrap();
    assert_eq!(out, ACK_FRAME);
    let Decoded::Frame {
        frame: decoded,
        consumed,
        ..
    } = decode(&ACK_FRAME).unwrap()
    else {
        panic!("not a frame");
    };
    assert_eq!(consumed, ACK_FRAME.len());
    assert!(matches!(
        (decoded, frame),
        (Frame::Ack { standing: a, .. }, Frame::Ack { standing: b, .. }) if a == b
    ));
}

#[test]
fn encode_refuses_what_it_cannot_represent_and_appends_nothing() {
    let write: Frame<()> = Frame::Write {
        seq: Sequence(1),
        position: None,
        range: ByteRange::new(0, 8),
        data: (),
        fua: false,
    };
    let mut out = vec![1, 2, 3];
    let error = encode(&ENVELOPE, &write, b"short", &NoAddresses, &mut out).unwrap_err();
    assert!(matches!(
        error,
        LinkError::PayloadMismatch {
            expected: 8,
            got: 5
        }
    ));
    assert!(!error.closes_link());
    let ack: Frame<()> = Frame::Ack {
        durable_through: Sequence(1),
        standing: None,
    };
    assert!(matches!(
        encode(&ENVELOPE, &ack, b"x", &NoAddresses, &mut out),
        Err(LinkError::PayloadMismatch {
            expected: 0,
            got: 1
        })
    ));
    let membership = Membership {
        members: vec![Member {
            node: NodeId(1),
            mode: ReplicationMode::Sync,
        }],
        primary: NodeId(1),
        write_quorum: 1,
        since: Epoch(3),
        previous: None,
    };
    let change: Frame<()> = Frame::EpochChange {
        seq: Sequence(1),
        membership: membership.clone(),
    };
    assert!(matches!(
        encode(&ENVELOPE, &change, &[], &NoAddresses, &mut out),
        Err(LinkError::NoAddress(NodeId(1)))
    ));
    // A membership the wire cannot carry (the primary is no member).
    let bad: Frame<()> = Frame::EpochChange {
        seq: Sequence(1),
        membership: Membership {
            primary: NodeId(9),
            ..membership
        },
    };
    let book = HashMap::from([(NodeId(1), "a:1".to_owned())]);
    assert!(matches!(
        encode(&ENVELOPE, &bad, &[], &book, &mut out),
        Err(LinkError::Encode(_))
    ));
    assert_eq!(out, [1, 2, 3]);
    assert_eq!(book.address(NodeId(1)), Some("a:1"));
}

fn wire_frame(message: &Message<'_>, version: Version) -> Vec<u8> {
    let envelope = wire::Envelope {
        version,
        volume: VolumeId(7),
        epoch: Epoch(3),
    };
    let mut out = vec![0u8; message.encoded_len()];
    message.encode(&envelope, &mut out).unwrap();
    out
}

#[test]
fn wire_messages_the_core_does_not_use_are_handed_over() {
    let heartbeat = wire_frame(
        &Message::Heartbeat(wire::Heartbeat {
            token: 99,
            reply: true,
        }),
        LINK_VERSION,
    );
    assert_eq!(
        decode(&heartbeat).unwrap(),
        Decoded::Other {
            envelope: Envelope {
                stream: StreamId(0),
                ..ENVELOPE
            },
            message: Other::Heartbeat {
                token: 99,
                reply: true
            },
            consumed: heartbeat.len(),
        }
    );
    let response = wire_frame(
        &Message::ReadResponse(wire::ReadResponse {
            stream: StreamId(2),
            tag: wire::ReadTag(5),
            offset: 512,
            data: b"abc",
        }),
        LINK_VERSION,
    );
    assert!(matches!(
        decode(&response).unwrap(),
        Decoded::Frame { frame: Frame::ReadResponse { data, range, seq: Sequence(5) }, .. }
            if response[data.clone()] == *b"abc" && range == ByteRange::new(512, 3)
    ));
    let flush = wire_frame(
        &Message::Flush(wire::Flush {
            stream: StreamId(2),
            sequence: Sequence(4),
        }),
        LINK_VERSION,
    );
    assert!(matches!(
        decode(&flush).unwrap(),
        Decoded::Frame {
            frame: Frame::Flush { seq: Sequence(4) },
            ..
        }
    ));
    let hello = wire_frame(
        &Message::Hello(wire::Hello {
            versions: VersionRange::SUPPORTED,
            role: Role::Primary,
            node: NodeId(1),
            nonce: wire::Nonce([1; 32]),
        }),
        LINK_VERSION,
    );
    assert!(matches!(
        decode(&hello).unwrap(),
        Decoded::Other {
            message: Other::Handshake(wire::MessageType::Hello),
            ..
        }
    ));
}

#[test]
fn frames_of_another_version_close_the_link() {
    let ack = wire_frame(
        &Message::Ack(wire::Ack {
            stream: StreamId(2),
            durable_through: Sequence(1),
            applied_only: false,
            standing: None,
        }),
        Version::V1_0,
    );
    let error = decode(&ack).unwrap_err();
    assert!(matches!(
        error,
        LinkError::VersionMismatch {
            expected: LINK_VERSION,
            got: Version::V1_0
        }
    ));
    assert!(error.closes_link());
    let error = decode(b"GET / HTTP/1.1\r\n").unwrap_err();
    assert!(matches!(
        error,
        LinkError::Decode(DecodeError::BadMagic { .. })
    ));
    assert!(error.closes_link());
}

// ---- the handshake over real sockets ----

const TIMEOUT: Duration = Duration::from_secs(5);

fn key(byte: u8) -> PreSharedKey {
    PreSharedKey::new(&[byte; 32]).unwrap()
}

fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}

fn volumes(volume: VolumeId) -> Option<Epoch> {
    (volume == VolumeId(7)).then_some(Epoch(3))
}

#[test]
fn both_ends_authenticate_over_loopback() {
    let (mut client, mut server) = pair();
    let acceptor = thread::spawn(move || {
        let peer = accept(&mut server, &key(1), NodeId(20), &volumes, TIMEOUT);
        (peer, server)
    });
    let initiator = connect(
        &mut client,
        &key(1),
        NodeId(10),
        VolumeId(7),
        Epoch(4),
        TIMEOUT,
    )
    .unwrap();
    let (acceptor, mut server) = acceptor.join().unwrap();
    let acceptor = acceptor.unwrap();
    assert_eq!(initiator.node, NodeId(20));
    assert_eq!(initiator.role, Role::Replica);
    assert_eq!(initiator.epoch, Epoch(3));
    assert_eq!(initiator.version, LINK_VERSION);
    assert_eq!(acceptor.node, NodeId(10));
    assert_eq!(acceptor.role, Role::Primary);
    assert_eq!(acceptor.volume, VolumeId(7));
    assert_eq!(acceptor.epoch, Epoch(4));
    assert_eq!(acceptor.version, LINK_VERSION);
    // The socket's timeouts are back, and the link carries frames.
    assert_eq!(client.read_timeout().unwrap(), None);
    let ack: Frame<()> = Frame::Ack {
        durable_through: Sequence(0),
        standing: None,
    };
    let mut out = Vec::new();
    encode(&ENVELOPE, &ack, &[], &NoAddresses, &mut out).unwrap();
    client.write_all(&out).unwrap();
    let mut received = vec![0u8; out.len()];
    std::io::Read::read_exact(&mut server, &mut received).unwrap();
    assert!(matches!(decode(&received).unwrap(), Decoded::Frame { .. }));
}

#[test]
fn a_wrong_key_fails_on_both_sides() {
    let (mut client, mut server) = pair();
    let acceptor =
        thread::spawn(move || accept(&mut server, &key(2), NodeId(20), &volumes, TIMEOUT));
    let initiator = connect(
        &mut client,
        &key(1),
        NodeId(10),
        VolumeId(7),
        Epoch(4),
        TIMEOUT,
    )
    .unwrap_err();
    let acceptor = acceptor.join().unwrap().unwrap_err();
    assert!(
        matches!(acceptor, LinkError::Auth(AuthFailure::BadProof)),
        "{acceptor}"
    );
    assert!(
        matches!(
            initiator,
            LinkError::Auth(AuthFailure::Rejected(NackReason::AuthFailed))
        ),
        "{initiator}"
    );
    assert!(acceptor.closes_link() && initiator.closes_link());
    assert_eq!(
        acceptor.to_string(),
        "handshake failed: peer failed to prove the pre-shared key"
    );
}

#[test]
fn a_peer_that_sends_garbage_is_refused() {
    // Garbage to an acceptor.
    let (mut client, mut server) = pair();
    let acceptor =
        thread::spawn(move || accept(&mut server, &key(1), NodeId(20), &volumes, TIMEOUT));
    client.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").unwrap();
    let error = acceptor.join().unwrap().unwrap_err();
    assert!(
        matches!(error, LinkError::Decode(DecodeError::BadMagic { .. })),
        "{error}"
    );
    // Garbage from an acceptor, after a well-formed start.
    let (mut client, mut server) = pair();
    let garbage = thread::spawn(move || {
        let mut hello = [0u8; 112];
        std::io::Read::read_exact(&mut server, &mut hello).unwrap();
        let mut frame = hello;
        frame[6] = 0x7f; // an unknown message type, CRC now wrong
        server.write_all(&frame).unwrap();
    });
    let error = connect(
        &mut client,
        &key(1),
        NodeId(10),
        VolumeId(7),
        Epoch(4),
        TIMEOUT,
    )
    .unwrap_err();
    garbage.join().unwrap();
    assert!(
        matches!(
            error,
            LinkError::Decode(DecodeError::HeaderCrcMismatch { .. })
        ),
        "{error}"
    );
}

#[test]
fn a_silent_or_vanishing_peer_ends_the_handshake() {
    let (mut client, server) = pair();
    let error = connect(
        &mut client,
        &key(1),
        NodeId(10),
        VolumeId(7),
        Epoch(4),
        Duration::from_millis(200),
    )
    .unwrap_err();
    assert!(matches!(error, LinkError::Timeout), "{error}");
    drop(server);
    let (mut client, server) = pair();
    drop(server);
    let error = connect(
        &mut client,
        &key(1),
        NodeId(10),
        VolumeId(7),
        Epoch(4),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(
        matches!(error, LinkError::Closed | LinkError::Io(_)),
        "{error}"
    );
}

#[test]
fn a_stale_primary_is_fenced_in_the_handshake() {
    let (mut client, mut server) = pair();
    let acceptor =
        thread::spawn(move || accept(&mut server, &key(1), NodeId(20), &volumes, TIMEOUT));
    let error = connect(
        &mut client,
        &key(1),
        NodeId(10),
        VolumeId(7),
        Epoch(2),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(matches!(
        error,
        LinkError::Auth(AuthFailure::Rejected(NackReason::StaleEpoch {
            current: Epoch(3)
        }))
    ));
    assert!(matches!(
        acceptor.join().unwrap(),
        Err(LinkError::Auth(AuthFailure::StaleEpoch { .. }))
    ));
}

/// Reads one whole frame (any version) off a socket.
fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let mut frame = vec![0u8; 64];
    std::io::Read::read_exact(stream, &mut frame).unwrap();
    let header_len = usize::from(u16::from_le_bytes([frame[8], frame[9]]));
    let payload_len = u32::from_le_bytes(frame[12..16].try_into().unwrap()) as usize;
    frame.resize(header_len + payload_len, 0);
    std::io::Read::read_exact(stream, &mut frame[64..]).unwrap();
    frame
}

fn only(version: Version) -> VersionRange {
    VersionRange::new(version, version).unwrap()
}

#[test]
fn a_1_0_initiator_is_refused_with_the_versions_spoken_here() {
    let (mut client, mut server) = pair();
    let acceptor =
        thread::spawn(move || accept(&mut server, &key(1), NodeId(20), &volumes, TIMEOUT));
    let config = crate::auth::InitiatorConfig {
        key: key(1),
        node: NodeId(10),
        volume: VolumeId(7),
        epoch: Epoch(4),
        versions: only(Version::V1_0),
    };
    let (_, hello) = crate::auth::Initiator::start(config, wire::Nonce([5; 32])).unwrap();
    let mut bytes = vec![0u8; hello.message.encoded_len()];
    hello.encode(&mut bytes).unwrap();
    client.write_all(&bytes).unwrap();
    let reply = read_frame(&mut client);
    let Ok(wire::Decoded::Frame(frame)) = wire::FrameDecoder::default().decode(&reply) else {
        panic!("no frame");
    };
    assert_eq!(
        frame.message,
        Message::Nack(wire::Nack {
            stream: StreamId(0),
            sequence: Sequence(0),
            reason: NackReason::UnsupportedVersion {
                supported: only(LINK_VERSION)
            },
        })
    );
    assert!(matches!(
        acceptor.join().unwrap(),
        Err(LinkError::Auth(AuthFailure::NoCommonVersion { offered })) if offered == only(Version::V1_0)
    ));
}

#[test]
fn a_1_0_acceptor_refuses_a_link_initiator() {
    let (mut client, mut server) = pair();
    let acceptor = thread::spawn(move || {
        let config = crate::auth::AcceptorConfig {
            key: key(1),
            node: NodeId(20),
            versions: only(Version::V1_0),
        };
        let mut acceptor = crate::auth::Acceptor::new(config, wire::Nonce([6; 32])).unwrap();
        let hello = read_frame(&mut server);
        let Ok(wire::Decoded::Frame(frame)) = wire::FrameDecoder::default().decode(&hello) else {
            panic!("no hello");
        };
        // The Hello is stamped with the one version the link speaks.
        assert_eq!(frame.header.version, LINK_VERSION);
        let step = acceptor.receive(&frame, &volumes);
        let nack = step.send.unwrap();
        let mut bytes = vec![0u8; nack.message.encoded_len()];
        nack.encode(&mut bytes).unwrap();
        server.write_all(&bytes).unwrap();
        step.outcome
    });
    let error = connect(
        &mut client,
        &key(1),
        NodeId(10),
        VolumeId(7),
        Epoch(4),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            LinkError::Auth(AuthFailure::Rejected(NackReason::UnsupportedVersion { supported }))
                if supported == only(Version::V1_0)
        ),
        "{error}"
    );
    assert!(matches!(
        acceptor.join().unwrap(),
        crate::auth::Outcome::Failed(AuthFailure::NoCommonVersion { .. })
    ));
}

#[test]
fn a_heartbeat_encodes_to_what_decode_hands_over() {
    let mut out = b"earlier".to_vec();
    for reply in [false, true] {
        out.truncate(7);
        let beat = wire::Heartbeat { token: 7, reply };
        let len = encode_heartbeat(&ENVELOPE, beat, &mut out).unwrap();
        assert_eq!(out.len(), 7 + len);
        assert_eq!(
            decode(&out[7..]).unwrap(),
            Decoded::Other {
                envelope: Envelope {
                    stream: StreamId(0),
                    ..ENVELOPE
                },
                message: Other::Heartbeat { token: 7, reply },
                consumed: len,
            }
        );
        assert_eq!(&out[..7], b"earlier", "appended, not overwritten");
    }
}

/// A 1.4 `EpochChange` in the middle of a membership change: node 3
/// removed and W lowered from 3 to 2, the old membership carried along.
#[rustfmt::skip]
const EPOCH_CHANGE_FRAME: [u8; 155] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x04,                                     // version 1.4
    0x40,                                           // type: EpochChange
    0x00,                                           // flags
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x5b, 0x00, 0x00, 0x00,                         // payload length 91
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // the new epoch, 3
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 1
    0x02, 0x00, 0x00, 0x00,                         // stream 2
    0x00, 0x00, 0x00, 0x00,                         // range length (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset (unused)
    0x46, 0xda, 0xf7, 0x26,                         // payload CRC32C 0x26f7da46
    0xec, 0x6d, 0xb0, 0x2f,                         // header CRC32C 0x2fb06dec
    // payload
    0x02,                                           // write quorum 2
    0x02,                                           // 2 copies
    0x00, 0x00,                                     // reserved
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 1: node 1
    0x01, 0x01,                                     //   primary, sync
    0x03, 0x00, b'a', b':', b'1',                   //   address "a:1"
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 2: node 2
    0x02, 0x01,                                     //   replica, sync
    0x03, 0x00, b'b', b':', b'2',                   //   address "b:2"
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // since: epoch 3
    0x03,                                           // previous write quorum 3
    0x03,                                           // 3 previous copies
    0x00, 0x00,                                     // reserved
    0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 1: node 1
    0x01, 0x01,                                     //   primary (made the change), sync
    0x03, 0x00, b'a', b':', b'1',                   //   address "a:1"
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 2: node 2
    0x02, 0x01,                                     //   replica, sync
    0x03, 0x00, b'b', b':', b'2',                   //   address "b:2"
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // copy 3: node 3
    0x02, 0x01,                                     //   replica, sync
    0x03, 0x00, b'c', b':', b'3',                   //   address "c:3"
];

#[test]
fn an_epoch_change_with_its_previous_membership_is_byte_exact() {
    let sync = |node| Member {
        node: NodeId(node),
        mode: ReplicationMode::Sync,
    };
    let membership = Membership {
        members: vec![sync(1), sync(2)],
        primary: NodeId(1),
        write_quorum: 2,
        since: Epoch(3),
        previous: Some(Previous {
            members: vec![sync(1), sync(2), sync(3)],
            write_quorum: 3,
            primary: NodeId(1),
        }),
    };
    let frame: Frame<()> = Frame::EpochChange {
        seq: Sequence(1),
        membership: membership.clone(),
    };
    let book = HashMap::from([
        (NodeId(1), "a:1".to_owned()),
        (NodeId(2), "b:2".to_owned()),
        (NodeId(3), "c:3".to_owned()),
    ]);
    let mut out = Vec::new();
    encode(&ENVELOPE, &frame, &[], &book, &mut out).unwrap();
    assert_eq!(out, EPOCH_CHANGE_FRAME);
    let Decoded::Frame {
        frame: decoded,
        addresses,
        consumed,
        ..
    } = decode(&EPOCH_CHANGE_FRAME).unwrap()
    else {
        panic!("not a core frame");
    };
    assert_eq!(consumed, EPOCH_CHANGE_FRAME.len());
    assert_eq!(
        decoded,
        Frame::EpochChange {
            seq: Sequence(1),
            membership
        }
    );
    // A removed copy's address travels too: a node promoted mid-change
    // must reach it to finish the change.
    let mut addresses = addresses;
    addresses.sort();
    let mut expected: Vec<_> = book.into_iter().collect();
    expected.sort();
    assert_eq!(addresses, expected);
}
