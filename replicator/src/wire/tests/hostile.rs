//! Hostile input: arbitrary bytes, truncation, corruption, fields that
//! break the rules. The decoder must answer with an error or "need more",
//! never panic, and never accept a frame it would not itself produce.

use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies::{envelope, spec};
use super::{encode, envelope as fixed_envelope, reseal, RawFrame};
use crate::wire::{
    DecodeError, Decoded, FieldProblem, FrameDecoder, HeaderProgress, Limits, Message, MessageType,
    Sequence, StreamId, Write, HEADER_LEN, MAGIC, MAX_PAYLOAD_LEN,
};

/// Decodes frames from `bytes` until it runs out or fails; returns the
/// number of frames decoded. Panics only if the decoder does.
fn drain(bytes: &[u8]) -> usize {
    let mut decoder = FrameDecoder::default();
    let mut rest = bytes;
    let mut frames = 0;
    while let Ok(decoded) = decoder.decode(rest) {
        let consumed = decoded.consumed();
        if consumed == 0 {
            break;
        }
        rest = &rest[consumed..];
        frames += 1;
    }
    frames
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..1024)) {
        drain(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(bytes in vec(any::<u8>(), 0..1024)) {
        // Magic and version right, so the decoder gets past the first checks.
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&[1, 0]);
        framed.extend_from_slice(&bytes);
        drain(&framed);
        // And with CRCs that match whatever the fields say.
        reseal(&mut framed);
        drain(&framed);
    }

    /// Mutates a valid frame and fixes its CRCs, so the mutation reaches the
    /// field checks. Whatever still decodes must be canonical: re-encoding
    /// the decoded message gives back exactly the bytes received.
    #[test]
    fn mutated_frames_decode_only_to_their_canonical_encoding(
        spec in spec(),
        envelope in envelope(),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode(&spec.message(), &envelope);
        for (index, value) in &mutations {
            let i = index.index(bytes.len());
            bytes[i] ^= value;
        }
        reseal(&mut bytes);
        let mut decoder = FrameDecoder::default();
        if let Ok(Decoded::Frame(frame)) = decoder.decode(&bytes) {
            if frame.header.version.minor == 0 && frame.wire_len() == bytes.len() {
                prop_assert_eq!(encode(&frame.message, &frame.envelope()), bytes.clone());
            }
        }
    }

    #[test]
    fn every_truncation_asks_for_exactly_the_missing_bytes(
        spec in spec(),
        envelope in envelope(),
    ) {
        let message = spec.message();
        let bytes = encode(&message, &envelope);
        let header_len = message.header_len();
        // Every cut point of the header, and a sample of the payload's.
        let step = (bytes.len() / 512).max(1);
        let cuts = (0..header_len).chain((header_len..bytes.len()).step_by(step));
        for cut in cuts {
            // The base header first; its length field then says how much
            // more header there is (an 80-byte positioned write).
            let missing = if cut < HEADER_LEN {
                HEADER_LEN - cut
            } else if cut < header_len {
                header_len - cut
            } else {
                bytes.len() - cut
            };
            let decoded = FrameDecoder::default().decode(&bytes[..cut]).unwrap();
            prop_assert_eq!(decoded, Decoded::NeedMore(missing), "cut at {}", cut);
        }
    }

    #[test]
    fn any_flipped_payload_bit_is_a_payload_crc_error(
        spec in spec(),
        envelope in envelope(),
        bit in any::<prop::sample::Index>(),
    ) {
        let message = spec.message();
        let mut bytes = encode(&message, &envelope);
        let header_len = message.header_len();
        let payload_bits = (bytes.len() - header_len) * 8;
        if payload_bits == 0 {
            // Flush, Ack, ReadRequest: nothing to flip.
            return Ok(());
        }
        let bit = bit.index(payload_bits);
        bytes[header_len + bit / 8] ^= 1 << (bit % 8);
        let header = match FrameDecoder::default().decode_header(&bytes).unwrap() {
            HeaderProgress::Complete(header) => header,
            other => panic!("{other:?}"),
        };
        let error = FrameDecoder::default().decode(&bytes).unwrap_err();
        let is_payload_crc = matches!(
            error,
            DecodeError::PayloadCrcMismatch { stream, sequence, .. }
                if stream == header.stream && sequence == header.sequence
        );
        prop_assert!(is_payload_crc, "{:?}", error);
    }
}

#[test]
fn every_single_bit_flip_in_the_header_is_caught() {
    let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let message = Message::Write(Write {
        stream: StreamId(5),
        sequence: Sequence(9),
        offset: 512,
        data: &data,
        fua: false,
        position: None,
    });
    let bytes = encode(&message, &fixed_envelope());
    for bit in 0..HEADER_LEN * 8 {
        let mut corrupted = bytes.clone();
        corrupted[bit / 8] ^= 1 << (bit % 8);
        let error = FrameDecoder::default()
            .decode(&corrupted)
            .expect_err("corruption went unnoticed");
        let byte = bit / 8;
        let expected = match byte {
            0..=3 => matches!(error, DecodeError::BadMagic { .. }),
            4 => matches!(error, DecodeError::UnsupportedVersion { .. }),
            8 | 9 => matches!(error, DecodeError::BadHeaderLength { .. }),
            _ => matches!(error, DecodeError::HeaderCrcMismatch { .. }),
        };
        assert!(expected, "bit {bit}: {error:?}");
    }
}

#[test]
fn garbage_fails_on_the_first_wrong_byte() {
    let error = FrameDecoder::default().decode(b"KX").unwrap_err();
    assert_eq!(
        error,
        DecodeError::BadMagic {
            found: [b'K', b'X', 0, 0]
        }
    );
    // A correct prefix just waits for the rest of the header.
    assert_eq!(
        FrameDecoder::default().decode(b"KL").unwrap(),
        Decoded::NeedMore(HEADER_LEN - 2)
    );
}

#[test]
fn a_failed_decoder_stays_failed() {
    let mut decoder = FrameDecoder::default();
    let error = decoder.decode(b"HTTP/1.1 200 OK").unwrap_err();
    let valid = encode(
        &Message::Ack(crate::wire::Ack {
            stream: StreamId(1),
            durable_through: Sequence(1),
            applied_only: false,
            standing: None,
        }),
        &fixed_envelope(),
    );
    assert_eq!(decoder.decode(&valid).unwrap_err(), error);
    assert_eq!(decoder.failure(), Some(&error));
}

#[test]
fn an_oversized_payload_is_refused_before_it_arrives() {
    let mut raw = RawFrame::new(MessageType::Write, &[0; 17]);
    raw.range_len = 17;
    raw.stream = 1;
    raw.sequence = 1;
    let bytes = raw.bytes();
    let mut decoder = FrameDecoder::new(Limits::with_max_payload(16));
    // Only the header has arrived.
    assert_eq!(
        decoder.decode(&bytes[..HEADER_LEN]).unwrap_err(),
        DecodeError::PayloadTooLarge { len: 17, max: 16 }
    );
    // The protocol ceiling binds even a receiver configured above it.
    assert_eq!(
        Limits::with_max_payload(u32::MAX).max_payload(),
        MAX_PAYLOAD_LEN
    );
    let mut raw = RawFrame::new(MessageType::Write, &[]);
    raw.range_len = MAX_PAYLOAD_LEN + 1;
    let mut header = raw.bytes();
    header[12..16].copy_from_slice(&(MAX_PAYLOAD_LEN + 1).to_le_bytes());
    reseal(&mut header);
    assert!(matches!(
        FrameDecoder::default().decode(&header[..HEADER_LEN]),
        Err(DecodeError::PayloadTooLarge { .. })
    ));
}

fn malformed(bytes: &[u8]) -> (&'static str, FieldProblem) {
    match FrameDecoder::default().decode(bytes) {
        Err(DecodeError::Malformed { field, problem }) => (field, problem),
        other => panic!("expected a malformed-field error, got {other:?}"),
    }
}

fn valid_hello_payload() -> Vec<u8> {
    let mut payload = vec![1, 0, 1, 0, 1, 0, 0, 0];
    payload.extend_from_slice(&0x11u64.to_le_bytes());
    payload.extend_from_slice(&[0x42; 32]);
    payload
}

#[test]
fn rule_breaking_headers_are_refused() {
    let hello = RawFrame::new(MessageType::Hello, &valid_hello_payload());
    assert!(matches!(
        FrameDecoder::default().decode(&hello.bytes()),
        Ok(Decoded::Frame(_))
    ));

    let mut raw = hello.clone();
    raw.reserved = 1;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.reserved", FieldProblem::ReservedNotZero)
    );

    let mut raw = hello.clone();
    raw.stream = 1;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.stream", FieldProblem::NotUsedByType)
    );

    let mut raw = hello.clone();
    raw.sequence = 1;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.sequence", FieldProblem::NotUsedByType)
    );

    let mut raw = hello.clone();
    raw.range_offset = 1;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.range", FieldProblem::NotUsedByType)
    );

    let mut raw = hello.clone();
    raw.flags = 0x01;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.flags", FieldProblem::UnknownValue)
    );

    let mut raw = hello.clone();
    raw.payload.push(0);
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.payload_len", FieldProblem::LengthMismatch)
    );

    let mut raw = hello.clone();
    raw.payload.pop();
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.payload_len", FieldProblem::LengthMismatch)
    );
}

#[test]
fn rule_breaking_data_frames_are_refused() {
    let mut write = RawFrame::new(MessageType::Write, b"data");
    write.stream = 1;
    write.sequence = 1;
    write.range_len = 4;

    let mut raw = write.clone();
    raw.range_len = 5;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.payload_len", FieldProblem::LengthMismatch)
    );

    let mut raw = write.clone();
    raw.range_offset = u64::MAX - 2;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.range", FieldProblem::Overflow)
    );

    let mut raw = write.clone();
    raw.payload.clear();
    raw.range_len = 0;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.range", FieldProblem::OutOfBounds)
    );

    let mut raw = write.clone();
    raw.flags = 0x02;
    assert_eq!(
        malformed(&raw.bytes()),
        ("header.flags", FieldProblem::UnknownValue)
    );

    let mut read = RawFrame::new(MessageType::ReadRequest, &[]);
    read.range_len = MAX_PAYLOAD_LEN + 1;
    assert_eq!(
        malformed(&read.bytes()),
        ("ReadRequest.range", FieldProblem::OutOfBounds)
    );
    read.range_len = 0;
    assert_eq!(
        malformed(&read.bytes()),
        ("ReadRequest.range", FieldProblem::OutOfBounds)
    );
}

#[test]
fn rule_breaking_bodies_are_refused() {
    let mut payload = valid_hello_payload();
    payload[4] = 3; // no such role
    let raw = RawFrame::new(MessageType::Hello, &payload);
    assert_eq!(
        malformed(&raw.bytes()),
        ("Hello.role", FieldProblem::UnknownValue)
    );

    let mut payload = valid_hello_payload();
    payload[5] = 1; // reserved
    let raw = RawFrame::new(MessageType::Hello, &payload);
    assert_eq!(
        malformed(&raw.bytes()),
        ("Hello.reserved", FieldProblem::ReservedNotZero)
    );

    let mut payload = valid_hello_payload();
    payload[0] = 2; // min 2.0 > max 1.0
    let raw = RawFrame::new(MessageType::Hello, &payload);
    assert_eq!(
        malformed(&raw.bytes()),
        ("Hello.versions", FieldProblem::Inconsistent)
    );

    let nack = |code: u16, detail: u64| {
        let mut payload = code.to_le_bytes().to_vec();
        payload.extend_from_slice(&[0; 6]);
        payload.extend_from_slice(&detail.to_le_bytes());
        RawFrame::new(MessageType::Nack, &payload).bytes()
    };
    assert_eq!(
        malformed(&nack(0, 0)),
        ("Nack.code", FieldProblem::UnknownValue)
    );
    assert_eq!(
        malformed(&nack(3, 1)),
        ("Nack.detail", FieldProblem::ReservedNotZero)
    );
    assert_eq!(
        malformed(&nack(11, u64::from(u32::MAX) + 1)),
        ("Nack.detail", FieldProblem::OutOfBounds)
    );

    let resync = |op: u8, a: u64, b: u64| {
        let mut payload = vec![op, 0, 0, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&a.to_le_bytes());
        payload.extend_from_slice(&b.to_le_bytes());
        RawFrame::new(MessageType::Resync, &payload).bytes()
    };
    assert_eq!(
        malformed(&resync(4, 0, 0)),
        ("Resync.op", FieldProblem::UnknownValue)
    );
    assert_eq!(
        malformed(&resync(1, 0, 9)),
        ("Resync.region_size", FieldProblem::OutOfBounds)
    );
    assert_eq!(
        malformed(&resync(3, 1, 0)),
        ("Resync.a", FieldProblem::ReservedNotZero)
    );
}

/// Builds an EpochChange body from (node, role, mode, address) entries.
fn membership_body(quorum: u8, copies: &[(u64, u8, u8, &[u8])]) -> Vec<u8> {
    let mut body = vec![quorum, copies.len() as u8, 0, 0];
    for (node, role, mode, address) in copies {
        body.extend_from_slice(&node.to_le_bytes());
        body.extend_from_slice(&[*role, *mode]);
        body.extend_from_slice(&(address.len() as u16).to_le_bytes());
        body.extend_from_slice(address);
    }
    body
}

#[test]
fn invalid_memberships_are_refused() {
    let frame = |body: Vec<u8>| {
        let mut raw = RawFrame::new(MessageType::EpochChange, &body);
        raw.sequence = 1;
        raw.bytes()
    };
    let primary = (1, 1, 1, &b"a:1"[..]);
    let replica = (2, 2, 1, &b"b:1"[..]);
    let valid = frame(membership_body(2, &[primary, replica]));
    assert!(matches!(
        FrameDecoder::default().decode(&valid),
        Ok(Decoded::Frame(_))
    ));

    let cases: Vec<(Vec<u8>, (&str, FieldProblem))> = vec![
        (
            membership_body(0, &[primary, replica]),
            ("EpochChange.write_quorum", FieldProblem::Inconsistent),
        ),
        (
            membership_body(3, &[primary, replica]),
            ("EpochChange.write_quorum", FieldProblem::Inconsistent),
        ),
        (
            membership_body(2, &[primary, (2, 2, 2, b"b:1")]),
            ("EpochChange.write_quorum", FieldProblem::Inconsistent),
        ),
        (
            membership_body(1, &[replica]),
            ("EpochChange.role", FieldProblem::Inconsistent),
        ),
        (
            membership_body(1, &[primary, (2, 1, 1, b"b:1")]),
            ("EpochChange.role", FieldProblem::Inconsistent),
        ),
        (
            membership_body(1, &[(1, 1, 2, b"a:1"), replica]),
            ("EpochChange.role", FieldProblem::Inconsistent),
        ),
        (
            membership_body(1, &[primary, (1, 2, 1, b"b:1")]),
            ("EpochChange.node", FieldProblem::Inconsistent),
        ),
        (
            membership_body(1, &[primary, (2, 2, 1, b"")]),
            ("EpochChange.address", FieldProblem::OutOfBounds),
        ),
        (
            membership_body(1, &[primary, (2, 2, 1, &[0xff, 0xfe])]),
            ("EpochChange.address", FieldProblem::NotUtf8),
        ),
        (
            membership_body(1, &[primary, (2, 3, 1, b"b:1")]),
            ("EpochChange.role", FieldProblem::UnknownValue),
        ),
        (
            membership_body(1, &[primary, (2, 2, 0, b"b:1")]),
            ("EpochChange.mode", FieldProblem::UnknownValue),
        ),
        (
            membership_body(1, &[]),
            ("EpochChange.copies", FieldProblem::OutOfBounds),
        ),
        (
            vec![1, 17, 0, 0],
            ("EpochChange.copies", FieldProblem::OutOfBounds),
        ),
        (
            // Claims two copies, carries one.
            {
                let mut body = membership_body(1, &[primary]);
                body[1] = 2;
                body
            },
            ("EpochChange.node", FieldProblem::Truncated),
        ),
        (
            {
                let mut body = membership_body(1, &[primary]);
                body.push(0);
                body
            },
            ("EpochChange", FieldProblem::TrailingBytes),
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(malformed(&frame(body.clone())), expected, "body {body:?}");
    }

    // Address length is checked before the address is read.
    let mut body = membership_body(1, &[primary]);
    body[14..16].copy_from_slice(&257u16.to_le_bytes());
    body.extend_from_slice(&[b'x'; 254]);
    assert_eq!(
        malformed(&frame(body)),
        ("EpochChange.address", FieldProblem::OutOfBounds)
    );
}
