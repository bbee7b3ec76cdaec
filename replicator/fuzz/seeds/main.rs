//! Writes the seed corpus for `frame_decode`: one valid frame of every
//! message type, a multi-frame stream, and frames from a newer minor
//! version, so the fuzzer starts past the magic and the CRCs.
//!
//! Usage: seed_corpus <output directory>

use std::path::PathBuf;

use keel_replicator::wire::{
    Ack, AuthTag, ByteRange, Challenge, CopyInfo, CopyList, Envelope, Epoch, EpochChange, Flush,
    Heartbeat, Hello, Membership, Message, Nack, NackReason, NodeId, Nonce, PreviousCopies,
    ReadRequest, ReadResponse, ReadTag, RegionIndex, ReplicationMode, Response, Resync, ResyncOp,
    Role, Sequence, StandingReport, StreamId, VersionRange, VolumeId, Write, WritePosition,
};

fn encode(message: &Message<'_>) -> Vec<u8> {
    let envelope = Envelope::new(VolumeId(7), Epoch(3));
    let mut out = vec![0u8; message.encoded_len()];
    message.encode(&envelope, &mut out).expect("seed encodes");
    out
}

/// A frame claiming the minor version after ours, with an 8-byte header
/// extension and bytes appended to its body, as a newer peer could send.
fn newer_minor(mut frame: Vec<u8>, message_type: Option<u8>, flags: u8) -> Vec<u8> {
    frame[5] = keel_replicator::wire::PROTOCOL_VERSION.minor + 1;
    if let Some(code) = message_type {
        frame[6] = code;
    }
    frame[7] |= flags;
    frame[8..10].copy_from_slice(&72u16.to_le_bytes());
    frame.splice(64..64, [0xee; 8]);
    frame.extend_from_slice(b"appended");
    let payload_len = (frame.len() - 72) as u32;
    frame[12..16].copy_from_slice(&payload_len.to_le_bytes());
    let payload_crc = crc32c::crc32c(&frame[72..]);
    frame[56..60].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&frame[..60]), &frame[64..72]);
    frame[60..64].copy_from_slice(&header_crc.to_le_bytes());
    frame
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: seed_corpus <dir>"));
    std::fs::create_dir_all(&dir).expect("create corpus directory");

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
    // A membership change in progress: node 4 removed, W lowered.
    let old_copies = [
        copies[0],
        copies[1],
        CopyInfo {
            node: NodeId(4),
            role: Role::Replica,
            mode: ReplicationMode::Sync,
            address: "10.0.0.4:4421",
        },
    ];
    let data = [0x5au8; 512];
    let stream = StreamId(2);
    let messages: Vec<(&str, Message<'_>)> = vec![
        (
            "hello",
            Message::Hello(Hello {
                versions: VersionRange::SUPPORTED,
                role: Role::Primary,
                node: NodeId(1),
                nonce: Nonce([1; 32]),
            }),
        ),
        (
            "challenge",
            Message::Challenge(Challenge {
                version: keel_replicator::wire::PROTOCOL_VERSION,
                role: Role::Replica,
                node: NodeId(2),
                nonce: Nonce([2; 32]),
            }),
        ),
        (
            "response",
            Message::Response(Response {
                tag: AuthTag([3; 32]),
            }),
        ),
        (
            "write",
            Message::Write(Write {
                stream,
                sequence: Sequence(1),
                offset: 4096,
                data: &data,
                fua: true,
                position: None,
            }),
        ),
        (
            "write_positioned",
            Message::Write(Write {
                stream,
                sequence: Sequence(1),
                offset: 4096,
                data: &data,
                fua: false,
                position: Some(WritePosition {
                    epoch: Epoch(3),
                    index: 17,
                }),
            }),
        ),
        (
            "flush",
            Message::Flush(Flush {
                stream,
                sequence: Sequence(2),
            }),
        ),
        (
            "ack",
            Message::Ack(Ack {
                stream,
                durable_through: Sequence(2),
                applied_only: false,
                standing: None,
            }),
        ),
        (
            "ack_applied",
            Message::Ack(Ack {
                stream,
                durable_through: Sequence(3),
                applied_only: true,
                standing: None,
            }),
        ),
        (
            "ack_standing",
            Message::Ack(Ack {
                stream,
                durable_through: Sequence(2),
                applied_only: false,
                standing: Some(StandingReport {
                    epoch: Epoch(3),
                    synced: Epoch(2),
                    applied: WritePosition {
                        epoch: Epoch(2),
                        index: 1000,
                    },
                    consistent: true,
                    amnesiac: false,
                }),
            }),
        ),
        (
            "nack_stale_epoch",
            Message::Nack(Nack {
                stream,
                sequence: Sequence(3),
                reason: NackReason::StaleEpoch { current: Epoch(9) },
            }),
        ),
        (
            "nack_version",
            Message::Nack(Nack {
                stream: StreamId(0),
                sequence: Sequence(0),
                reason: NackReason::UnsupportedVersion {
                    supported: VersionRange::SUPPORTED,
                },
            }),
        ),
        (
            "read_request",
            Message::ReadRequest(ReadRequest {
                stream,
                tag: ReadTag(77),
                range: ByteRange::new(8192, 512),
            }),
        ),
        (
            "read_response",
            Message::ReadResponse(ReadResponse {
                stream,
                tag: ReadTag(77),
                offset: 8192,
                data: &data,
            }),
        ),
        (
            "resync_begin",
            Message::Resync(Resync {
                stream,
                sequence: Sequence(4),
                op: ResyncOp::Begin {
                    region_size: 1 << 20,
                    region_count: 64,
                },
            }),
        ),
        (
            "resync_region",
            Message::Resync(Resync {
                stream,
                sequence: Sequence(5),
                op: ResyncOp::Region {
                    index: RegionIndex(12),
                },
            }),
        ),
        (
            "resync_end",
            Message::Resync(Resync {
                stream,
                sequence: Sequence(6),
                op: ResyncOp::End,
            }),
        ),
        (
            "epoch_change",
            Message::EpochChange(EpochChange {
                stream: StreamId(0),
                sequence: Sequence(1),
                membership: Membership {
                    write_quorum: 2,
                    copies: CopyList::Borrowed(&copies),
                    since: Some(Epoch(4)),
                    previous: Some(PreviousCopies::NONE),
                },
            }),
        ),
        (
            "epoch_change_mid_change",
            Message::EpochChange(EpochChange {
                stream: StreamId(0),
                sequence: Sequence(1),
                membership: Membership {
                    write_quorum: 1,
                    copies: CopyList::Borrowed(&copies),
                    since: Some(Epoch(4)),
                    previous: Some(PreviousCopies {
                        write_quorum: 3,
                        copies: CopyList::Borrowed(&old_copies),
                    }),
                },
            }),
        ),
        (
            "heartbeat",
            Message::Heartbeat(Heartbeat {
                token: 123_456,
                reply: true,
            }),
        ),
    ];

    let mut stream_bytes = Vec::new();
    for (name, message) in &messages {
        let frame = encode(message);
        std::fs::write(dir.join(name), &frame).expect("write seed");
        stream_bytes.extend_from_slice(&frame);
    }
    std::fs::write(dir.join("stream_of_every_type"), &stream_bytes).expect("write seed");

    let hello = encode(&messages[0].1);
    std::fs::write(
        dir.join("newer_minor_hello"),
        newer_minor(hello.clone(), None, 0),
    )
    .expect("write seed");
    std::fs::write(
        dir.join("newer_minor_ignorable_type"),
        newer_minor(hello, Some(0x7f), 0x80),
    )
    .expect("write seed");
}
