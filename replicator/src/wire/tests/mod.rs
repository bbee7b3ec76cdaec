//! Tests of the wire protocol. Helpers shared by the test modules live here.

mod encode_errors;
mod golden;
mod hostile;
mod roundtrip;
pub(crate) mod strategies;
mod versioning;

use crate::wire::{Decoded, Envelope, Epoch, Frame, FrameDecoder, Message, Version, VolumeId};

mod v1_1;

/// A 1.0 envelope (the golden frames of 1.0 are written against it).
pub(crate) fn envelope() -> Envelope {
    Envelope {
        version: Version::V1_0,
        ..Envelope::new(VolumeId(7), Epoch(3))
    }
}

/// A 1.1 envelope (the 1.1 layouts are what the byte-exact tests pin;
/// 1.2 changes no layout, only adds a flag).
pub(crate) fn envelope_1_1() -> Envelope {
    Envelope {
        version: crate::wire::Version::V1_1,
        ..Envelope::new(VolumeId(7), Epoch(3))
    }
}

/// Encodes into a fresh buffer of exactly the frame's length.
pub(crate) fn encode(message: &Message<'_>, envelope: &Envelope) -> Vec<u8> {
    let mut out = vec![0u8; message.encoded_len()];
    let len = message.encode(envelope, &mut out).expect("encodes");
    assert_eq!(len, out.len());
    out
}

/// Decodes exactly one complete frame from `bytes`.
pub(crate) fn decode_one(bytes: &[u8]) -> Frame<'_> {
    match FrameDecoder::default().decode(bytes).expect("decodes") {
        Decoded::Frame(frame) => {
            assert_eq!(frame.wire_len(), bytes.len(), "frame length");
            frame
        }
        other => panic!("expected a frame, got {other:?}"),
    }
}

/// Everything a frame header can say, for building frames the encoder would
/// refuse to produce (bad fields, newer versions, unknown types).
#[derive(Debug, Clone)]
pub(crate) struct RawFrame {
    pub(crate) major: u8,
    pub(crate) minor: u8,
    pub(crate) message_type: u8,
    pub(crate) flags: u8,
    pub(crate) reserved: u16,
    pub(crate) volume: u64,
    pub(crate) epoch: u64,
    pub(crate) sequence: u64,
    pub(crate) stream: u32,
    pub(crate) range_len: u32,
    pub(crate) range_offset: u64,
    /// Header bytes after the base 64 (a newer minor's extension).
    pub(crate) extension: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

impl RawFrame {
    pub(crate) fn new(message_type: crate::wire::MessageType, payload: &[u8]) -> Self {
        Self {
            major: 1,
            minor: 0,
            message_type: message_type.code(),
            flags: 0,
            reserved: 0,
            volume: 7,
            epoch: 3,
            sequence: 0,
            stream: 0,
            range_len: 0,
            range_offset: 0,
            extension: Vec::new(),
            payload: payload.to_vec(),
        }
    }

    /// Lays the frame out byte by byte, independently of the encoder, with
    /// correct CRCs.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let header_len = (64 + self.extension.len()) as u16;
        let mut out = Vec::new();
        out.extend_from_slice(b"KLRP");
        out.extend_from_slice(&[self.major, self.minor, self.message_type, self.flags]);
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(&self.reserved.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.volume.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.extend_from_slice(&self.range_len.to_le_bytes());
        out.extend_from_slice(&self.range_offset.to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&self.payload).to_le_bytes());
        let header_crc = crc32c::crc32c_append(crc32c::crc32c(&out), &self.extension);
        out.extend_from_slice(&header_crc.to_le_bytes());
        out.extend_from_slice(&self.extension);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Recomputes both CRCs of a (possibly mutated) single frame so that the
/// field checks behind them get exercised.
pub(crate) fn reseal(frame: &mut [u8]) {
    if frame.len() < 64 {
        return;
    }
    let header_len = usize::from(u16::from_le_bytes([frame[8], frame[9]]));
    if (64..=frame.len()).contains(&header_len) {
        let payload_crc = crc32c::crc32c(&frame[header_len..]);
        frame[56..60].copy_from_slice(&payload_crc.to_le_bytes());
        crate::wire::header::reseal_header(frame);
    }
}
