//! Frames from other versions: a newer minor is decoded leniently (its
//! additions skipped), an unknown major is refused.

use super::RawFrame;
use crate::wire::{
    DecodeError, Decoded, Flags, FrameDecoder, Message, MessageType, Nack, NackReason, Sequence,
    StreamId, Version, VersionRange, HEADER_LEN,
};

fn hello_payload() -> Vec<u8> {
    let mut payload = vec![1, 0, 1, 5, 1, 0, 0, 0];
    payload.extend_from_slice(&0x11u64.to_le_bytes());
    payload.extend_from_slice(&[0x42; 32]);
    payload
}

#[test]
fn a_newer_minor_may_extend_the_header_and_append_fields() {
    let mut payload = hello_payload();
    payload.extend_from_slice(b"future fields");
    let mut raw = RawFrame::new(MessageType::Hello, &payload);
    raw.minor = 5;
    raw.extension = vec![0xee; 8];
    raw.reserved = 0xffff;
    let bytes = raw.bytes();
    let Decoded::Frame(frame) = FrameDecoder::default().decode(&bytes).unwrap() else {
        panic!("not a frame");
    };
    assert_eq!(frame.header.header_len as usize, HEADER_LEN + 8);
    assert_eq!(frame.wire_len(), bytes.len());
    let Message::Hello(hello) = frame.message else {
        panic!("not a hello");
    };
    assert_eq!(hello.versions.max(), Version::new(1, 5));
    assert_eq!(hello.nonce.0, [0x42; 32]);
}

#[test]
fn the_same_minor_may_not() {
    let mut raw = RawFrame::new(MessageType::Hello, &hello_payload());
    raw.extension = vec![0; 8];
    assert_eq!(
        FrameDecoder::default().decode(&raw.bytes()).unwrap_err(),
        DecodeError::BadHeaderLength { len: 72 }
    );
}

#[test]
fn a_newer_minor_may_set_unknown_flags_and_reserved_bits() {
    let mut raw = RawFrame::new(MessageType::Ack, &[]);
    raw.minor = 5;
    raw.flags = 0x0e;
    raw.stream = 4;
    raw.sequence = 10;
    let bytes = raw.bytes();
    let Decoded::Frame(frame) = FrameDecoder::default().decode(&bytes).unwrap() else {
        panic!("not a frame");
    };
    assert!(matches!(frame.message, Message::Ack(ack) if ack.durable_through == Sequence(10)));
}

#[test]
fn an_unknown_ignorable_type_from_a_newer_minor_is_skipped() {
    let mut raw = RawFrame::new(MessageType::Hello, b"whatever a newer peer says");
    raw.message_type = 0x7f;
    raw.minor = 5;
    raw.flags = Flags::IGNORABLE.0;
    let mut stream = raw.bytes();
    let skipped_len = stream.len();
    let ack = RawFrame {
        stream: 1,
        sequence: 1,
        ..RawFrame::new(MessageType::Ack, &[])
    };
    stream.extend(ack.bytes());

    let mut decoder = FrameDecoder::default();
    let first = decoder.decode(&stream).unwrap();
    assert!(matches!(first, Decoded::Skipped(header) if header.message_type == 0x7f));
    assert_eq!(first.consumed(), skipped_len);
    let second = decoder.decode(&stream[skipped_len..]).unwrap();
    assert!(
        matches!(second, Decoded::Frame(frame) if frame.message.message_type() == MessageType::Ack)
    );
}

#[test]
fn an_unknown_type_must_be_ignorable_and_newer() {
    let mut raw = RawFrame::new(MessageType::Hello, &[]);
    raw.message_type = 0x7f;
    raw.minor = 5;
    assert_eq!(
        FrameDecoder::default().decode(&raw.bytes()).unwrap_err(),
        DecodeError::UnknownMessageType { code: 0x7f }
    );
    raw.minor = 0;
    raw.flags = Flags::IGNORABLE.0;
    assert_eq!(
        FrameDecoder::default().decode(&raw.bytes()).unwrap_err(),
        DecodeError::UnknownMessageType { code: 0x7f }
    );
}

#[test]
fn another_major_is_refused_before_anything_else_is_read() {
    let mut raw = RawFrame::new(MessageType::Hello, &hello_payload());
    raw.major = 2;
    let bytes = raw.bytes();
    assert_eq!(
        FrameDecoder::default().decode(&bytes).unwrap_err(),
        DecodeError::UnsupportedVersion {
            found: Version::new(2, 0)
        }
    );
}

#[test]
fn unknown_nack_codes_survive_for_logging() {
    let mut payload = 200u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&[0; 6]);
    payload.extend_from_slice(&77u64.to_le_bytes());
    let mut raw = RawFrame::new(MessageType::Nack, &payload);
    raw.stream = 3;
    raw.sequence = 5;
    let bytes = raw.bytes();
    let Decoded::Frame(frame) = FrameDecoder::default().decode(&bytes).unwrap() else {
        panic!("not a frame");
    };
    assert_eq!(
        frame.message,
        Message::Nack(Nack {
            stream: StreamId(3),
            sequence: Sequence(5),
            reason: NackReason::Unrecognized {
                code: 200,
                detail: 77
            },
        })
    );
}

#[test]
fn negotiation_picks_the_highest_common_version() {
    let range = |a: (u8, u8), b: (u8, u8)| {
        VersionRange::new(Version::new(a.0, a.1), Version::new(b.0, b.1)).unwrap()
    };
    assert_eq!(
        range((1, 0), (1, 4)).highest_common(&range((1, 2), (1, 9))),
        Some(Version::new(1, 4))
    );
    assert_eq!(
        range((1, 0), (1, 1)).highest_common(&range((1, 2), (1, 9))),
        None
    );
    assert_eq!(
        range((1, 0), (2, 0)).highest_common(&range((1, 0), (1, 0))),
        Some(Version::new(1, 0))
    );
    assert!(VersionRange::new(Version::new(1, 1), Version::new(1, 0)).is_none());
}
