//! Version 1.1: a `Write`'s position in the header extension and the
//! standing appended to an `Ack`. Byte-exact frames written out by hand from
//! `docs/replication-protocol.md` (CRCs from an independent bit-by-bit
//! CRC32C), round trips, and the decoder's refusals.

use super::{decode_one, encode, envelope, envelope_1_1, RawFrame};
use crate::wire::{
    Ack, DecodeError, Decoded, EncodeError, Epoch, FieldProblem, FrameDecoder, HeaderProgress,
    Message, MessageType, Sequence, StandingReport, StreamId, Version, Write, WritePosition,
    HEADER_LEN, STANDING_LEN, WRITE_HEADER_LEN,
};

fn positioned_write() -> Write<'static> {
    Write {
        stream: StreamId(2),
        sequence: Sequence(42),
        offset: 4096,
        data: b"keel",
        fua: true,
        position: Some(WritePosition {
            epoch: Epoch(3),
            index: 17,
        }),
    }
}

fn standing() -> StandingReport {
    StandingReport {
        epoch: Epoch(3),
        synced: Epoch(2),
        applied: WritePosition {
            epoch: Epoch(2),
            index: 1000,
        },
        consistent: true,
        amnesiac: false,
    }
}

fn ack_with_standing() -> Ack {
    Ack {
        stream: StreamId(2),
        durable_through: Sequence(42),
        applied_only: false,
        standing: Some(standing()),
    }
}

#[rustfmt::skip]
const POSITIONED_WRITE_FRAME: [u8; 84] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x01,                                     // version 1.1
    0x10,                                           // type: Write
    0x01,                                           // flags: FUA
    0x50, 0x00,                                     // header length 80
    0x00, 0x00,                                     // reserved
    0x04, 0x00, 0x00, 0x00,                         // payload length 4
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch 3
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // sequence 42
    0x02, 0x00, 0x00, 0x00,                         // stream 2
    0x04, 0x00, 0x00, 0x00,                         // range length 4 bytes
    0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset 4096 bytes
    0xc2, 0x27, 0x0d, 0x4c,                         // payload CRC32C 0x4c0d27c2
    0x38, 0x76, 0x3f, 0xd6,                         // header CRC32C 0xd63f7638 (bytes 0..60, 64..80)
    // header extension: the position
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // position epoch 3
    0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // position index 17
    b'k', b'e', b'e', b'l',                         // payload: the data
];

#[rustfmt::skip]
const ACK_WITH_STANDING_FRAME: [u8; 104] = [
    b'K', b'L', b'R', b'P',                         // magic
    0x01, 0x01,                                     // version 1.1
    0x12,                                           // type: Ack
    0x00,                                           // flags
    0x40, 0x00,                                     // header length 64
    0x00, 0x00,                                     // reserved
    0x28, 0x00, 0x00, 0x00,                         // payload length 40
    0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // volume 7
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // epoch 3
    0x2a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // durable through sequence 42
    0x02, 0x00, 0x00, 0x00,                         // stream 2
    0x00, 0x00, 0x00, 0x00,                         // range length (unused)
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // range offset (unused)
    0x53, 0x4f, 0x62, 0x9d,                         // payload CRC32C 0x9d624f53
    0x5c, 0x71, 0x90, 0x37,                         // header CRC32C 0x3790715c
    // payload: the standing
    0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // accepted epoch 3
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // synced by epoch 2
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // applied: epoch 2
    0xe8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //          index 1000
    0x01,                                           // flags: consistent
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,       // reserved
];

#[test]
fn positioned_write_is_byte_exact() {
    let message = Message::Write(positioned_write());
    assert_eq!(encode(&message, &envelope_1_1()), POSITIONED_WRITE_FRAME);
    let frame = decode_one(&POSITIONED_WRITE_FRAME);
    assert_eq!(frame.message, message);
    assert_eq!(frame.envelope(), envelope_1_1());
    assert_eq!(usize::from(frame.header.header_len), WRITE_HEADER_LEN);
    assert_eq!(frame.header.position, positioned_write().position);
    assert_eq!(frame.payload, b"keel");
}

#[test]
fn positioned_write_header_only_matches_full_encoding() {
    let mut header = [0u8; 256];
    let len = positioned_write()
        .encode_header_into(&envelope_1_1(), &mut header)
        .unwrap();
    assert_eq!(len, WRITE_HEADER_LEN);
    assert_eq!(header[..len], POSITIONED_WRITE_FRAME[..WRITE_HEADER_LEN]);
    // The fixed 64-byte API cannot hold it.
    let mut short = [0u8; HEADER_LEN];
    assert_eq!(
        positioned_write().encode_header(&envelope_1_1(), &mut short),
        Err(EncodeError::BufferTooSmall {
            needed: WRITE_HEADER_LEN,
            available: HEADER_LEN
        })
    );
}

#[test]
fn ack_with_standing_is_byte_exact() {
    let message = Message::Ack(ack_with_standing());
    assert_eq!(encode(&message, &envelope_1_1()), ACK_WITH_STANDING_FRAME);
    let frame = decode_one(&ACK_WITH_STANDING_FRAME);
    assert_eq!(frame.message, message);
    assert_eq!(frame.envelope(), envelope_1_1());
}

#[test]
fn a_1_1_write_without_position_and_ack_without_standing_keep_the_1_0_layout() {
    let write = Write {
        position: None,
        ..positioned_write()
    };
    let bytes = encode(&Message::Write(write), &envelope_1_1());
    assert_eq!(bytes.len(), HEADER_LEN + 4);
    assert_eq!(&bytes[8..10], &[0x40, 0x00]);
    assert_eq!(decode_one(&bytes).message, Message::Write(write));
    let ack = Ack {
        standing: None,
        ..ack_with_standing()
    };
    let bytes = encode(&Message::Ack(ack), &envelope_1_1());
    assert_eq!(bytes.len(), HEADER_LEN);
    assert_eq!(decode_one(&bytes).message, Message::Ack(ack));
}

#[test]
fn the_new_fields_cannot_be_encoded_in_1_0() {
    let mut out = [0u8; 512];
    assert_eq!(
        Message::Write(positioned_write()).encode(&envelope(), &mut out),
        Err(EncodeError::NotInVersion {
            field: "Write.position",
            version: Version::V1_0
        })
    );
    assert_eq!(
        Message::Ack(ack_with_standing()).encode(&envelope(), &mut out),
        Err(EncodeError::NotInVersion {
            field: "Ack.standing",
            version: Version::V1_0
        })
    );
    let mut header = [0u8; 256];
    assert!(matches!(
        positioned_write().encode_header_into(&envelope(), &mut header),
        Err(EncodeError::NotInVersion { .. })
    ));
}

fn raw_write(minor: u8, extension: Vec<u8>) -> RawFrame {
    RawFrame {
        minor,
        sequence: 42,
        stream: 2,
        range_len: 4,
        range_offset: 4096,
        extension,
        ..RawFrame::new(MessageType::Write, b"keel")
    }
}

fn raw_ack(minor: u8, payload: &[u8]) -> RawFrame {
    RawFrame {
        minor,
        sequence: 42,
        stream: 2,
        ..RawFrame::new(MessageType::Ack, payload)
    }
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    FrameDecoder::default().decode(bytes).unwrap_err()
}

fn standing_bytes() -> Vec<u8> {
    ACK_WITH_STANDING_FRAME[HEADER_LEN..].to_vec()
}

#[test]
fn the_raw_frames_match_the_encoder() {
    let position = [3u64.to_le_bytes(), 17u64.to_le_bytes()].concat();
    let mut raw = raw_write(1, position);
    raw.flags = 1;
    assert_eq!(raw.bytes(), POSITIONED_WRITE_FRAME);
    assert_eq!(
        raw_ack(1, &standing_bytes()).bytes(),
        ACK_WITH_STANDING_FRAME
    );
}

#[test]
fn a_1_0_write_may_not_carry_a_position() {
    assert_eq!(
        decode_err(&raw_write(0, vec![0; 16]).bytes()),
        DecodeError::BadHeaderLength { len: 80 }
    );
}

#[test]
fn a_1_1_write_header_is_64_or_80_bytes() {
    for ext in [4, 8, 12, 20, 32] {
        assert_eq!(
            decode_err(&raw_write(1, vec![0; ext]).bytes()),
            DecodeError::BadHeaderLength {
                len: (HEADER_LEN + ext) as u16
            },
            "extension of {ext} bytes"
        );
    }
}

#[test]
fn only_writes_carry_the_extension() {
    let mut ack = raw_ack(1, &[]);
    ack.extension = vec![0; 16];
    assert_eq!(
        decode_err(&ack.bytes()),
        DecodeError::BadHeaderLength { len: 80 }
    );
}

#[test]
fn an_ack_body_is_empty_or_a_whole_standing() {
    for len in [1, 8, 32, 33, STANDING_LEN - 1, STANDING_LEN + 1, 48] {
        let mut payload = standing_bytes();
        payload.resize(len, 0);
        assert_eq!(
            decode_err(&raw_ack(1, &payload).bytes()),
            DecodeError::Malformed {
                field: "header.payload_len",
                problem: FieldProblem::LengthMismatch
            },
            "payload of {len} bytes"
        );
    }
}

#[test]
fn a_1_0_ack_has_no_body() {
    assert_eq!(
        decode_err(&raw_ack(0, &standing_bytes()).bytes()),
        DecodeError::Malformed {
            field: "header.payload_len",
            problem: FieldProblem::LengthMismatch
        }
    );
}

#[test]
fn standing_flags_and_reserved_bytes_are_checked() {
    let mut payload = standing_bytes();
    payload[32] = 0x03;
    assert_eq!(
        decode_err(&raw_ack(1, &payload).bytes()),
        DecodeError::Malformed {
            field: "Ack.standing.flags",
            problem: FieldProblem::ReservedNotZero
        }
    );
    let mut payload = standing_bytes();
    payload[39] = 1;
    assert_eq!(
        decode_err(&raw_ack(1, &payload).bytes()),
        DecodeError::Malformed {
            field: "Ack.standing.reserved",
            problem: FieldProblem::ReservedNotZero
        }
    );
    let mut payload = standing_bytes();
    payload[32] = 0;
    let bytes = raw_ack(1, &payload).bytes();
    let Decoded::Frame(frame) = FrameDecoder::default().decode(&bytes).unwrap() else {
        panic!("not a frame");
    };
    assert!(matches!(
        frame.message,
        Message::Ack(Ack { standing: Some(s), .. }) if !s.consistent
    ));
}

#[test]
fn a_newer_minor_keeps_the_1_1_fields_and_may_add_more() {
    // Header extension beyond the position, skipped.
    let mut ext = [3u64.to_le_bytes(), 17u64.to_le_bytes()].concat();
    ext.extend_from_slice(&[0xee; 8]);
    let bytes = raw_write(5, ext).bytes();
    let frame = decode_one(&bytes);
    assert_eq!(usize::from(frame.header.header_len), WRITE_HEADER_LEN + 8);
    assert!(matches!(
        frame.message,
        Message::Write(Write { position: Some(p), data: b"keel", .. })
            if p == WritePosition { epoch: Epoch(3), index: 17 }
    ));
    // A newer minor's header shorter than the position is not one.
    assert_eq!(
        decode_err(&raw_write(5, vec![0; 8]).bytes()),
        DecodeError::BadHeaderLength { len: 72 }
    );
    // Fields appended to the standing, skipped; a partial standing refused.
    let mut payload = standing_bytes();
    payload.extend_from_slice(b"newer!!!");
    let bytes = raw_ack(5, &payload).bytes();
    let frame = decode_one(&bytes).message;
    assert!(matches!(frame, Message::Ack(Ack { standing: Some(s), .. }) if s == standing()));
    assert!(matches!(
        decode_err(&raw_ack(5, &payload[..20]).bytes()),
        DecodeError::Malformed {
            field: "header.payload_len",
            ..
        }
    ));
}

#[test]
fn the_extension_is_covered_by_the_header_crc() {
    let mut bytes = POSITIONED_WRITE_FRAME;
    bytes[70] ^= 0x01;
    assert!(matches!(
        decode_err(&bytes),
        DecodeError::HeaderCrcMismatch { .. }
    ));
}

#[test]
fn a_partial_extended_header_asks_for_the_rest() {
    for cut in [HEADER_LEN, 70, WRITE_HEADER_LEN - 1] {
        assert_eq!(
            FrameDecoder::default()
                .decode(&POSITIONED_WRITE_FRAME[..cut])
                .unwrap(),
            Decoded::NeedMore(WRITE_HEADER_LEN - cut)
        );
    }
    assert_eq!(
        FrameDecoder::default()
            .decode(&POSITIONED_WRITE_FRAME[..WRITE_HEADER_LEN])
            .unwrap(),
        Decoded::NeedMore(4)
    );
}

#[test]
fn a_hand_built_header_cannot_smuggle_a_position() {
    let mut decoder = FrameDecoder::default();
    let HeaderProgress::Complete(header) = decoder.decode_header(&ACK_WITH_STANDING_FRAME).unwrap()
    else {
        panic!("incomplete");
    };
    let forged = crate::wire::FrameHeader {
        position: Some(WritePosition::default()),
        ..header
    };
    assert_eq!(
        FrameDecoder::default()
            .decode_payload(&forged, &ACK_WITH_STANDING_FRAME[HEADER_LEN..])
            .unwrap_err(),
        DecodeError::Malformed {
            field: "header.position",
            problem: FieldProblem::Inconsistent
        }
    );
    // And a write header claiming an 80-byte header without its position.
    let mut decoder = FrameDecoder::default();
    let HeaderProgress::Complete(header) = decoder.decode_header(&POSITIONED_WRITE_FRAME).unwrap()
    else {
        panic!("incomplete");
    };
    let forged = crate::wire::FrameHeader {
        position: None,
        ..header
    };
    assert!(FrameDecoder::default()
        .decode_payload(&forged, b"keel")
        .is_err());
}
