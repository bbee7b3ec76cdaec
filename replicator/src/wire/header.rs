//! The fixed frame header: its layout, its CRC, and the frame-level checks
//! that come before anything about the message type is trusted.
//!
//! Layout of major version 1 (all integers little-endian):
//!
//! | offset | size | field            |
//! |-------:|-----:|------------------|
//! |      0 |    4 | magic `KLRP`     |
//! |      4 |    1 | version major    |
//! |      5 |    1 | version minor    |
//! |      6 |    1 | message type     |
//! |      7 |    1 | flags            |
//! |      8 |    2 | header length    |
//! |     10 |    2 | reserved (0)     |
//! |     12 |    4 | payload length   |
//! |     16 |    8 | volume id        |
//! |     24 |    8 | epoch            |
//! |     32 |    8 | sequence         |
//! |     40 |    4 | stream id        |
//! |     44 |    4 | range length (bytes) |
//! |     48 |    8 | range offset (bytes) |
//! |     56 |    4 | payload CRC32C   |
//! |     60 |    4 | header CRC32C    |
//!
//! A newer minor version may extend the header past byte 64 (header length
//! says by how much); the extension is covered by the header CRC and skipped
//! by older receivers. Version 1.1 defines one extension: a `Write` may carry
//! its [position](WritePosition) in header bytes 64..80 (header length 80).

use crate::wire::bytes::{Reader, Required, Writer};
use crate::wire::error::{DecodeError, EncodeError};
use crate::wire::ids::{ByteRange, Epoch, Sequence, StreamId, VolumeId};
use crate::wire::limits::Limits;
use crate::wire::message_type::MessageType;
use crate::wire::standing::{WritePosition, WRITE_POSITION_LEN};
use crate::wire::tolerance::Tolerance;
use crate::wire::version::{Version, SUPPORTED_MAJOR};

/// First four bytes of every frame ("Keel Replication Protocol").
pub const MAGIC: [u8; 4] = *b"KLRP";

/// Length of the version-1 header, which is also the smallest header.
pub const HEADER_LEN: usize = 64;

/// Header length of a `Write` that carries its position (1.1 on): the base
/// header and the 16-byte position extension.
pub const WRITE_HEADER_LEN: usize = HEADER_LEN + WRITE_POSITION_LEN;

/// Largest header a receiver accepts, extensions from newer minors included.
pub const MAX_HEADER_LEN: usize = 256;

/// Where the header CRC sits; it covers every header byte except itself.
const HEADER_CRC_OFFSET: usize = 60;

/// The flags byte. Bits 0-3 mean something only for particular message
/// types; bits 4-7 mean the same for every type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// `Write`: force unit access. The replica makes this write (and, as
    /// writes apply in order, everything before it) durable and acks it
    /// without waiting to batch.
    pub const WRITE_FUA: Flags = Flags(0x01);
    /// `Ack` (1.2): the frames named are applied (written to the replica's
    /// device, as a completed NVMe write without FUA is), not yet durable.
    pub const ACK_APPLIED: Flags = Flags(0x01);
    /// `Heartbeat`: this heartbeat answers one from the peer.
    pub const HEARTBEAT_REPLY: Flags = Flags(0x01);
    /// Any type: a receiver that does not know this message type (it comes
    /// from a newer minor version) may skip the frame instead of failing.
    pub const IGNORABLE: Flags = Flags(0x80);

    /// Whether every bit of `other` is set in `self`.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A decoded frame header, or the header of a frame about to be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Version the sender encoded this frame with.
    pub version: Version,
    /// Message type code (see [`crate::wire::MessageType`]); kept raw so a
    /// skippable frame of an unknown type can still be described.
    pub message_type: u8,
    /// Flags.
    pub flags: Flags,
    /// Header length in bytes, extension included.
    pub header_len: u16,
    /// Payload length in bytes.
    pub payload_len: u32,
    /// The volume this frame belongs to.
    pub volume: VolumeId,
    /// The sender's epoch of that volume.
    pub epoch: Epoch,
    /// Sequence number (or read tag); 0 where the type has none.
    pub sequence: Sequence,
    /// Stream; 0 where the type has none.
    pub stream: StreamId,
    /// Byte range of the volume; empty where the type has none.
    pub range: ByteRange,
    /// CRC32C of the payload (0 for an empty payload).
    pub payload_crc: u32,
    /// `Write` from 1.1 on: the write's position, carried in the header
    /// extension (bytes 64..80, header length 80). `None` for every other
    /// frame, and for a write sent without one (header length 64).
    pub position: Option<WritePosition>,
}

impl FrameHeader {
    /// Total length of the frame: header plus payload.
    pub fn frame_len(&self) -> usize {
        usize::from(self.header_len).saturating_add(payload_len_usize(self.payload_len))
    }

    pub(crate) fn tolerance(&self) -> Tolerance {
        Tolerance::for_version(self.version)
    }

    /// Length of the header as this implementation encodes it: the base 64
    /// bytes, plus the position extension of a `Write` that has one.
    pub(crate) fn encoded_len(&self) -> usize {
        if self.position.is_some() {
            WRITE_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Writes this header, CRC included, into the front of `out` and
    /// returns its length. Only the base layout and the 1.1 position
    /// extension are ever encoded.
    pub(crate) fn write(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let header_len = self.encoded_len();
        let available = out.len();
        let out = out
            .get_mut(..header_len)
            .ok_or(EncodeError::BufferTooSmall {
                needed: header_len,
                available,
            })?;
        let mut w = Writer::new(&mut *out);
        w.put(&MAGIC)?;
        w.u8(self.version.major)?;
        w.u8(self.version.minor)?;
        w.u8(self.message_type)?;
        w.u8(self.flags.0)?;
        w.u16(u16::try_from(header_len).unwrap_or(u16::MAX))?;
        w.zeros::<2>()?;
        w.u32(self.payload_len)?;
        w.u64(self.volume.0)?;
        w.u64(self.epoch.0)?;
        w.u64(self.sequence.0)?;
        w.u32(self.stream.0)?;
        w.u32(self.range.len)?;
        w.u64(self.range.offset)?;
        w.u32(self.payload_crc)?;
        w.zeros::<4>()?; // the header CRC, computed below
        if let Some(position) = &self.position {
            position.write(&mut w)?;
        }
        let crc = header_crc(out);
        let mut w = Writer::new(
            out.get_mut(HEADER_CRC_OFFSET..HEADER_LEN)
                .unwrap_or_default(),
        );
        w.u32(crc)?;
        Ok(header_len)
    }
}

/// What [`FrameDecoder::decode_header`](crate::wire::FrameDecoder::decode_header)
/// could make of the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProgress {
    /// At least this many more bytes are needed to finish the header.
    NeedMore(usize),
    /// A complete header that passed every frame-level check.
    Complete(FrameHeader),
}

/// Parses and checks the header at the front of `buf`.
///
/// The order of the checks matters: the magic is checked as soon as it has
/// arrived (garbage fails fast), the version before anything whose layout
/// depends on it, the header length before waiting for that many bytes, the
/// CRC before any other field is believed, and the payload length before
/// anyone waits for (or allocates) the payload.
pub(crate) fn parse(buf: &[u8], limits: &Limits) -> Result<HeaderProgress, DecodeError> {
    check_magic(buf)?;
    let Some(base) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(HeaderProgress::NeedMore(
            HEADER_LEN.saturating_sub(buf.len()),
        ));
    };
    let mut r = Reader::new(base);
    r.array::<4>().field("header.magic")?;
    let version = Version::new(
        r.u8().field("header.version")?,
        r.u8().field("header.version")?,
    );
    if version.major != SUPPORTED_MAJOR {
        return Err(DecodeError::UnsupportedVersion { found: version });
    }
    let tolerance = Tolerance::for_version(version);
    let message_type = r.u8().field("header.message_type")?;
    let flags = Flags(r.u8().field("header.flags")?);
    let header_len = r.u16().field("header.header_len")?;
    let reserved = r.u16().field("header.reserved")?;
    let payload_len = r.u32().field("header.payload_len")?;
    let volume = VolumeId(r.u64().field("header.volume")?);
    let epoch = Epoch(r.u64().field("header.epoch")?);
    let sequence = Sequence(r.u64().field("header.sequence")?);
    let stream = StreamId(r.u32().field("header.stream")?);
    let range_len = r.u32().field("header.range")?;
    let range_offset = r.u64().field("header.range")?;
    let payload_crc = r.u32().field("header.payload_crc")?;
    let carried_crc = r.u32().field("header.header_crc")?;

    let full_len = usize::from(header_len);
    // From 1.1 on, header bytes 64..80 of a `Write` are its position: such a
    // header is 64 bytes (no position) or at least 80.
    let positioned = message_type == MessageType::Write.code() && version >= Version::V1_1;
    let extension_ok = match tolerance {
        Tolerance::Strict => full_len == HEADER_LEN || (positioned && full_len == WRITE_HEADER_LEN),
        Tolerance::Lenient => !positioned || full_len == HEADER_LEN || full_len >= WRITE_HEADER_LEN,
    };
    if !(HEADER_LEN..=MAX_HEADER_LEN).contains(&full_len) || full_len % 4 != 0 || !extension_ok {
        return Err(DecodeError::BadHeaderLength { len: header_len });
    }
    let Some(full) = buf.get(..full_len) else {
        return Ok(HeaderProgress::NeedMore(full_len.saturating_sub(buf.len())));
    };
    let computed = header_crc(full);
    if computed != carried_crc {
        return Err(DecodeError::HeaderCrcMismatch {
            carried: carried_crc,
            computed,
        });
    }
    tolerance.reserved_zero(reserved == 0, "header.reserved")?;
    let position = if positioned && full_len >= WRITE_HEADER_LEN {
        let mut r = Reader::new(full.get(HEADER_LEN..).unwrap_or_default());
        Some(WritePosition::read(&mut r, "header.position")?)
    } else {
        None
    };
    if payload_len > limits.max_payload() {
        return Err(DecodeError::PayloadTooLarge {
            len: payload_len,
            max: limits.max_payload(),
        });
    }
    Ok(HeaderProgress::Complete(FrameHeader {
        version,
        message_type,
        flags,
        header_len,
        payload_len,
        volume,
        epoch,
        sequence,
        stream,
        range: ByteRange::new(range_offset, range_len),
        payload_crc,
        position,
    }))
}

/// Fails as soon as the received prefix differs from the magic, even before
/// all four bytes are in.
fn check_magic(buf: &[u8]) -> Result<(), DecodeError> {
    let received = buf.get(..MAGIC.len()).unwrap_or(buf);
    if MAGIC.starts_with(received) {
        return Ok(());
    }
    let mut found = [0u8; 4];
    for (slot, byte) in found.iter_mut().zip(received) {
        *slot = *byte;
    }
    Err(DecodeError::BadMagic { found })
}

/// CRC32C over the whole header except the CRC field itself: bytes 0..60,
/// then any extension from byte 64 on.
fn header_crc(header: &[u8]) -> u32 {
    let before = header.get(..HEADER_CRC_OFFSET).unwrap_or(header);
    let extension = header.get(HEADER_LEN..).unwrap_or_default();
    crc32c::crc32c_append(crc32c::crc32c(before), extension)
}

/// Payload lengths are `u32` on the wire and at most [`MAX_PAYLOAD_LEN`]
/// once checked; this widens one without a lossy cast.
///
/// [`MAX_PAYLOAD_LEN`]: crate::wire::MAX_PAYLOAD_LEN
pub(crate) fn payload_len_usize(len: u32) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// Recomputes the header CRC of an encoded frame in place; tests use it to
/// build frames a real encoder would refuse to produce (newer minors,
/// reserved bits) and still get them past the CRC check.
#[cfg(test)]
pub(crate) fn reseal_header(frame: &mut [u8]) {
    let header_len = usize::from(u16::from_le_bytes([frame[8], frame[9]]));
    let crc = header_crc(&frame[..header_len]);
    frame[HEADER_CRC_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}
