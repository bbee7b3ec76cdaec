//! Every message survives encode -> decode unchanged, alone and inside a
//! byte stream cut at arbitrary points.

use proptest::collection::vec;
use proptest::prelude::*;

use super::strategies::{envelope, spec};
use super::{decode_one, encode};
use crate::wire::{Decoded, FrameDecoder, Message, HEADER_LEN, MAX_HEADER_LEN, MAX_PAYLOAD_LEN};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn every_message_round_trips(spec in spec(), envelope in envelope()) {
        let message = spec.message();
        let bytes = encode(&message, &envelope);
        prop_assert_eq!(bytes.len(), message.encoded_len());
        let frame = decode_one(&bytes);
        prop_assert_eq!(&frame.message, &message);
        prop_assert_eq!(frame.envelope(), envelope);
        prop_assert_eq!(frame.header.message_type, message.message_type().code());
        prop_assert_eq!(usize::from(frame.header.header_len), message.header_len());
        prop_assert_eq!(frame.payload, &bytes[message.header_len()..]);
        // Only one encoding decodes to a given message.
        prop_assert_eq!(encode(&frame.message, &frame.envelope()), bytes);
    }

    #[test]
    fn header_only_encoding_matches_the_full_frame(spec in spec(), envelope in envelope()) {
        let message = spec.message();
        let mut header = [0u8; HEADER_LEN];
        let mut long_header = [0u8; MAX_HEADER_LEN];
        match &message {
            Message::Write(_) | Message::ReadResponse(_) => {
                let bytes = encode(&message, &envelope);
                let len = message.encode_header_into(&envelope, &mut long_header).unwrap();
                prop_assert_eq!(len, message.header_len());
                prop_assert_eq!(&long_header[..len], &bytes[..len]);
                // The fixed-size API only fits headers without an extension.
                let fits = message.encode_header(&envelope, &mut header).is_ok();
                prop_assert_eq!(fits, len == HEADER_LEN);
                if fits {
                    prop_assert_eq!(&header[..], &bytes[..HEADER_LEN]);
                }
            }
            _ => {
                prop_assert!(message.encode_header(&envelope, &mut header).is_err());
                prop_assert!(message.encode_header_into(&envelope, &mut long_header).is_err());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_stream_decodes_whatever_the_chunking(
        specs in vec(spec(), 1..12),
        envelope in envelope(),
        chunks in vec(1usize..700, 1..32),
    ) {
        let mut wire = Vec::new();
        for spec in &specs {
            wire.extend(encode(&spec.message(), &envelope));
        }
        let mut decoder = FrameDecoder::default();
        let mut buffer = Vec::new();
        let mut expected = specs.iter();
        let mut fed = 0;
        for chunk in chunks.iter().cycle() {
            if fed == wire.len() {
                break;
            }
            let end = (fed + chunk).min(wire.len());
            buffer.extend_from_slice(&wire[fed..end]);
            fed = end;
            loop {
                let consumed = match decoder.decode(&buffer).unwrap() {
                    Decoded::NeedMore(more) => {
                        prop_assert!(more > 0);
                        break;
                    }
                    Decoded::Frame(frame) => {
                        let spec = expected.next().expect("no more frames were sent");
                        prop_assert_eq!(&frame.message, &spec.message());
                        frame.wire_len()
                    }
                    Decoded::Skipped(header) => panic!("skipped {header:?}"),
                };
                buffer.drain(..consumed);
            }
        }
        prop_assert!(expected.next().is_none(), "frames left undecoded");
        prop_assert!(buffer.is_empty());
    }
}

#[test]
fn largest_write_round_trips() {
    let data = vec![0xa5; MAX_PAYLOAD_LEN as usize];
    let message = Message::Write(crate::wire::Write {
        stream: crate::wire::StreamId(1),
        sequence: crate::wire::Sequence(1),
        offset: 0,
        data: &data,
        fua: false,
        position: None,
    });
    let bytes = encode(&message, &super::envelope());
    assert_eq!(bytes.len(), HEADER_LEN + data.len());
    assert_eq!(decode_one(&bytes).message, message);
}
