//! Proptest strategies producing every message, valid by construction.
//!
//! Messages borrow their data, so strategies produce an owning [`Spec`] and
//! tests borrow a [`Message`] from it.

use proptest::collection::{hash_set, vec};
use proptest::prelude::*;

use crate::wire::{
    Ack, AuthTag, ByteRange, Challenge, CopyInfo, CopyList, Envelope, Epoch, EpochChange, Flush,
    Heartbeat, Hello, Membership, Message, Nack, NackReason, NodeId, Nonce, PreviousCopies,
    ReadRequest, ReadResponse, ReadTag, RegionIndex, ReplicationMode, Response, Resync, ResyncOp,
    Role, Sequence, StandingReport, StreamId, Version, VersionRange, VolumeId, Write,
    WritePosition, MAX_COPIES, MAX_PAYLOAD_LEN, PROTOCOL_VERSION,
};

/// An owning description of a message.
#[derive(Debug, Clone)]
pub(crate) enum Spec {
    Hello(Hello),
    Challenge(Challenge),
    Response(Response),
    Write {
        stream: StreamId,
        sequence: Sequence,
        offset: u64,
        data: Vec<u8>,
        fua: bool,
        position: Option<WritePosition>,
    },
    Flush(Flush),
    Ack(Ack),
    Nack(Nack),
    ReadRequest(ReadRequest),
    ReadResponse {
        stream: StreamId,
        tag: ReadTag,
        offset: u64,
        data: Vec<u8>,
    },
    Resync(Resync),
    EpochChange {
        stream: StreamId,
        sequence: Sequence,
        write_quorum: u8,
        copies: Vec<(NodeId, Role, ReplicationMode, String)>,
        since: Epoch,
        /// The 1.4 previous membership: write quorum (0 for none) and copies.
        previous: (u8, Vec<CopySpec>),
    },
    Heartbeat(Heartbeat),
}

impl Spec {
    pub(crate) fn message(&self) -> Message<'_> {
        match self {
            Spec::Hello(m) => Message::Hello(*m),
            Spec::Challenge(m) => Message::Challenge(*m),
            Spec::Response(m) => Message::Response(*m),
            Spec::Write {
                stream,
                sequence,
                offset,
                data,
                fua,
                position,
            } => Message::Write(Write {
                stream: *stream,
                sequence: *sequence,
                offset: *offset,
                data,
                fua: *fua,
                position: *position,
            }),
            Spec::Flush(m) => Message::Flush(*m),
            Spec::Ack(m) => Message::Ack(*m),
            Spec::Nack(m) => Message::Nack(*m),
            Spec::ReadRequest(m) => Message::ReadRequest(*m),
            Spec::ReadResponse {
                stream,
                tag,
                offset,
                data,
            } => Message::ReadResponse(ReadResponse {
                stream: *stream,
                tag: *tag,
                offset: *offset,
                data,
            }),
            Spec::Resync(m) => Message::Resync(*m),
            Spec::EpochChange {
                stream,
                sequence,
                write_quorum,
                copies,
                since,
                previous,
            } => Message::EpochChange(EpochChange {
                stream: *stream,
                sequence: *sequence,
                membership: Membership {
                    write_quorum: *write_quorum,
                    copies: CopyList::Owned(
                        copies
                            .iter()
                            .map(|(node, role, mode, address)| CopyInfo {
                                node: *node,
                                role: *role,
                                mode: *mode,
                                address,
                            })
                            .collect(),
                    ),
                    since: Some(*since),
                    previous: Some(PreviousCopies {
                        write_quorum: previous.0,
                        copies: CopyList::Owned(previous.1.iter().map(copy_info).collect()),
                    }),
                },
            }),
            Spec::Heartbeat(m) => Message::Heartbeat(*m),
        }
    }
}

fn version() -> impl Strategy<Value = Version> {
    (any::<u8>(), any::<u8>()).prop_map(|(major, minor)| Version::new(major, minor))
}

fn version_range() -> impl Strategy<Value = VersionRange> {
    (version(), version()).prop_map(|(a, b)| VersionRange::new(a.min(b), a.max(b)).unwrap())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Primary), Just(Role::Replica)]
}

fn mode() -> impl Strategy<Value = ReplicationMode> {
    prop_oneof![Just(ReplicationMode::Sync), Just(ReplicationMode::Async)]
}

fn stream() -> impl Strategy<Value = StreamId> {
    any::<u32>().prop_map(StreamId)
}

fn sequence() -> impl Strategy<Value = Sequence> {
    any::<u64>().prop_map(Sequence)
}

/// Data of 1 byte to a few KiB (large payloads have their own tests), at
/// an offset that does not overflow.
fn data_at_offset() -> impl Strategy<Value = (u64, Vec<u8>)> {
    (any::<u64>(), vec(any::<u8>(), 1..=4096))
        .prop_map(|(offset, data)| (offset.min(u64::MAX - data.len() as u64), data))
}

fn nack_reason() -> impl Strategy<Value = NackReason> {
    prop_oneof![
        any::<u64>().prop_map(|e| NackReason::StaleEpoch { current: Epoch(e) }),
        version_range().prop_map(|supported| NackReason::UnsupportedVersion { supported }),
        Just(NackReason::AuthFailed),
        Just(NackReason::UnknownVolume),
        Just(NackReason::WrongRole),
        sequence().prop_map(|expected| NackReason::OutOfOrder { expected }),
        Just(NackReason::PayloadCrcMismatch),
        Just(NackReason::Malformed),
        Just(NackReason::ProtocolViolation),
        Just(NackReason::OutOfRange),
        any::<u32>().prop_map(|block_size| NackReason::Misaligned { block_size }),
        Just(NackReason::MediaError),
        Just(NackReason::Busy),
        any::<u64>().prop_map(|e| NackReason::EpochAhead { current: Epoch(e) }),
        (15..=u16::MAX, any::<u64>())
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

type CopySpec = (NodeId, Role, ReplicationMode, String);

/// A valid membership: unique nodes, one sync primary, quorum within the
/// sync copies.
/// A 1.4 previous membership (one primary, the node that made the
/// change), or none.
fn previous() -> impl Strategy<Value = (u8, Vec<CopySpec>)> {
    prop_oneof![Just((0, Vec::new())), membership()]
}

fn copy_info(copy: &CopySpec) -> CopyInfo<'_> {
    CopyInfo {
        node: copy.0,
        role: copy.1,
        mode: copy.2,
        address: &copy.3,
    }
}

fn membership() -> impl Strategy<Value = (u8, Vec<CopySpec>)> {
    (1..=MAX_COPIES)
        .prop_flat_map(|n| {
            (
                hash_set(any::<u64>(), n),
                vec(mode(), n),
                vec("\\PC{1,64}", n),
                0..n,
            )
        })
        .prop_flat_map(|(nodes, modes, addresses, primary)| {
            let copies: Vec<CopySpec> = nodes
                .into_iter()
                .zip(modes)
                .zip(addresses)
                .enumerate()
                .map(|(i, ((node, mode), address))| {
                    if i == primary {
                        (NodeId(node), Role::Primary, ReplicationMode::Sync, address)
                    } else {
                        (NodeId(node), Role::Replica, mode, address)
                    }
                })
                .collect();
            let sync = copies
                .iter()
                .filter(|c| c.2 == ReplicationMode::Sync)
                .count() as u8;
            (1..=sync, Just(copies))
        })
}

/// Any message.
pub(crate) fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (version_range(), role(), any::<u64>(), any::<[u8; 32]>()).prop_map(
            |(versions, role, node, nonce)| Spec::Hello(Hello {
                versions,
                role,
                node: NodeId(node),
                nonce: Nonce(nonce),
            })
        ),
        (version(), role(), any::<u64>(), any::<[u8; 32]>()).prop_map(
            |(version, role, node, nonce)| Spec::Challenge(Challenge {
                version,
                role,
                node: NodeId(node),
                nonce: Nonce(nonce),
            })
        ),
        any::<[u8; 32]>().prop_map(|tag| Spec::Response(Response { tag: AuthTag(tag) })),
        (
            stream(),
            sequence(),
            data_at_offset(),
            any::<bool>(),
            proptest::option::of(write_position())
        )
            .prop_map(
                |(stream, sequence, (offset, data), fua, position)| Spec::Write {
                    stream,
                    sequence,
                    offset,
                    data,
                    fua,
                    position,
                }
            ),
        (stream(), sequence())
            .prop_map(|(stream, sequence)| Spec::Flush(Flush { stream, sequence })),
        (stream(), sequence(), proptest::option::of(standing())).prop_map(
            |(stream, durable_through, standing)| Spec::Ack(Ack {
                stream,
                durable_through,
                applied_only: false,
                standing,
            })
        ),
        (stream(), sequence()).prop_map(|(stream, durable_through)| Spec::Ack(Ack {
            stream,
            durable_through,
            applied_only: true,
            standing: None,
        })),
        (stream(), sequence(), nack_reason()).prop_map(|(stream, sequence, reason)| {
            Spec::Nack(Nack {
                stream,
                sequence,
                reason,
            })
        }),
        (stream(), any::<u64>(), any::<u64>(), 1..=MAX_PAYLOAD_LEN).prop_map(
            |(stream, tag, offset, len)| Spec::ReadRequest(ReadRequest {
                stream,
                tag: ReadTag(tag),
                range: ByteRange::new(offset.min(u64::MAX - u64::from(len)), len),
            })
        ),
        (stream(), any::<u64>(), data_at_offset()).prop_map(|(stream, tag, (offset, data))| {
            Spec::ReadResponse {
                stream,
                tag: ReadTag(tag),
                offset,
                data,
            }
        }),
        (stream(), sequence(), resync_op()).prop_map(|(stream, sequence, op)| {
            Spec::Resync(Resync {
                stream,
                sequence,
                op,
            })
        }),
        (stream(), sequence(), membership(), any::<u64>(), previous()).prop_map(
            |(stream, sequence, (write_quorum, copies), since, previous)| Spec::EpochChange {
                stream,
                sequence,
                write_quorum,
                copies,
                since: Epoch(since),
                previous,
            }
        ),
        (any::<u64>(), any::<bool>())
            .prop_map(|(token, reply)| Spec::Heartbeat(Heartbeat { token, reply })),
    ]
}

/// Any 1.1 write position.
pub(crate) fn write_position() -> impl Strategy<Value = WritePosition> {
    (any::<u64>(), any::<u64>()).prop_map(|(epoch, index)| WritePosition {
        epoch: Epoch(epoch),
        index,
    })
}

/// Any 1.1 standing.
pub(crate) fn standing() -> impl Strategy<Value = StandingReport> {
    (any::<u64>(), any::<u64>(), write_position(), any::<bool>()).prop_map(
        |(epoch, synced, applied, consistent)| StandingReport {
            epoch: Epoch(epoch),
            synced: Epoch(synced),
            applied,
            consistent,
            amnesiac: false,
        },
    )
}

/// Any envelope this implementation can encode.
pub(crate) fn envelope() -> impl Strategy<Value = Envelope> {
    (any::<u64>(), any::<u64>()).prop_map(|(volume, epoch)| Envelope {
        version: PROTOCOL_VERSION,
        volume: VolumeId(volume),
        epoch: Epoch(epoch),
    })
}
