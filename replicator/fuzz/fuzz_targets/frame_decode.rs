//! Feeds arbitrary bytes to the frame decoder, as a hostile peer would.
//!
//! Besides "never panics", it checks what must hold for every input:
//! - "need more" always asks for at least one byte, and a frame never
//!   claims more bytes than it was given;
//! - the two-step API (header, then payload) agrees with the one-step one;
//! - a frame the decoder accepts from this version (or an older one) is
//!   canonical: re-encoding the decoded message reproduces the exact bytes;
//! - the link's mapping onto the state machines' frames (`link::decode`,
//!   what keeld runs on every received byte) never panics either, and a
//!   frame it takes consumes what the wire decoder says and hands out data
//!   ranges inside it.
//!
//! Each input is decoded twice: as given, and with its CRCs recomputed so
//! the mutations reach the field checks behind them instead of dying at the
//! CRC.
#![no_main]

use keel_replicator::wire::{Decoded, FrameDecoder, HeaderProgress, HEADER_LEN, PROTOCOL_VERSION};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    decode_stream(data);
    let mut resealed = data.to_vec();
    reseal_first_frame(&mut resealed);
    decode_stream(&resealed);
});

fn decode_stream(bytes: &[u8]) {
    let mut decoder = FrameDecoder::default();
    let mut rest = bytes;
    loop {
        let decoded = match decoder.decode(rest) {
            Ok(decoded) => decoded,
            Err(error) => {
                // A failed decoder stays failed.
                assert_eq!(decoder.decode(rest), Err(error));
                return;
            }
        };
        check_two_step_agrees(rest, &decoded);
        check_link_decode(rest, &decoded);
        match &decoded {
            Decoded::NeedMore(more) => {
                assert!(*more > 0);
                return;
            }
            Decoded::Frame(frame) => check_canonical(frame, rest),
            Decoded::Skipped(_) => {}
        }
        let consumed = decoded.consumed();
        assert!(consumed >= HEADER_LEN && consumed <= rest.len());
        rest = &rest[consumed..];
    }
}

fn check_link_decode(bytes: &[u8], wire: &Decoded<'_>) {
    use keel_replicator::core::Frame;
    use keel_replicator::link;
    let Ok(decoded) = link::decode(bytes) else {
        return;
    };
    if let link::Decoded::Frame {
        frame, consumed, ..
    } = decoded
    {
        assert_eq!(consumed, wire.consumed());
        if let Frame::Write { data, .. } | Frame::ReadResponse { data, .. } = frame {
            assert!(data.start <= data.end && data.end <= consumed);
        }
    }
}

fn check_two_step_agrees(bytes: &[u8], one_step: &Decoded<'_>) {
    let mut decoder = FrameDecoder::default();
    let header = match decoder.decode_header(bytes) {
        Ok(HeaderProgress::Complete(header)) => header,
        Ok(HeaderProgress::NeedMore(more)) => {
            assert_eq!(one_step, &Decoded::NeedMore(more));
            return;
        }
        Err(error) => panic!("two-step header failed ({error}) where one-step succeeded"),
    };
    let start = usize::from(header.header_len);
    let Some(payload) = bytes.get(start..header.frame_len()) else {
        assert!(matches!(one_step, Decoded::NeedMore(_)));
        return;
    };
    assert_eq!(&decoder.decode_payload(&header, payload).unwrap(), one_step);
}

fn check_canonical(frame: &keel_replicator::wire::Frame<'_>, bytes: &[u8]) {
    if frame.header.version > PROTOCOL_VERSION {
        // A newer minor's additions are skipped, so its bytes can't be
        // reproduced.
        return;
    }
    let mut out = vec![0u8; frame.message.encoded_len()];
    let len = frame
        .message
        .encode(&frame.envelope(), &mut out)
        .expect("an accepted frame re-encodes");
    assert_eq!(&out[..len], &bytes[..frame.wire_len()]);
}

/// Recomputes the payload CRC and header CRC of the frame at the front of
/// `bytes`, as far as its length fields and the input allow.
fn reseal_first_frame(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    if header_len < HEADER_LEN || header_len > bytes.len() {
        return;
    }
    let payload_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
    let payload_end = header_len.saturating_add(payload_len).min(bytes.len());
    let payload_crc = crc32c::crc32c(&bytes[header_len..payload_end]);
    bytes[56..60].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[..60]), &bytes[64..header_len]);
    bytes[60..64].copy_from_slice(&header_crc.to_le_bytes());
}
