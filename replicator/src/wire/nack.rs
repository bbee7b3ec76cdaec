//! `Nack`: a refused frame, or a refused link, with a typed reason.

use crate::wire::bytes::{Reader, Required, Writer};
use crate::wire::error::{DecodeError, EncodeError, FieldProblem, Violation};
use crate::wire::header::FrameHeader;
use crate::wire::ids::{Epoch, Sequence, StreamId};
use crate::wire::message::{HeaderFields, WireMessage};
use crate::wire::message_type::MessageType;
use crate::wire::tolerance::Tolerance;
use crate::wire::version::{Version, VersionRange};

pub(crate) const NACK_BODY_LEN: usize = 16;

/// Why a frame or a link was refused. The reason code is a `u16` followed
/// by one `u64` detail whose meaning depends on the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NackReason {
    /// Code 1. The frame's epoch is older than the receiver's; detail: the
    /// receiver's current epoch. The sender has been deposed (or missed an
    /// `EpochChange`) and must stop acting as primary.
    StaleEpoch {
        /// The receiver's epoch.
        current: Epoch,
    },
    /// Code 2. No common protocol version; detail: the receiver's range
    /// (min major, min minor, max major, max minor in the low four bytes).
    UnsupportedVersion {
        /// Versions the receiver speaks.
        supported: VersionRange,
    },
    /// Code 3. The peer's handshake proof did not verify.
    AuthFailed,
    /// Code 4. The receiver holds no copy of the frame's volume.
    UnknownVolume,
    /// Code 5. The peer's role is not one the receiver accepts on this link.
    WrongRole,
    /// Code 6. A sequenced frame arrived out of order; detail: the sequence
    /// number the receiver expected next.
    OutOfOrder {
        /// The next sequence the receiver expected.
        expected: Sequence,
    },
    /// Code 7. The frame's payload failed its CRC.
    PayloadCrcMismatch,
    /// Code 8. The frame could not be decoded.
    Malformed,
    /// Code 9. A well-formed frame that is not allowed here (e.g. a Write
    /// before the handshake).
    ProtocolViolation,
    /// Code 10. The byte range lies beyond the end of the receiver's copy.
    OutOfRange,
    /// Code 11. The byte range is not aligned to the receiver's block size;
    /// detail: that block size.
    Misaligned {
        /// The receiver's block size in bytes.
        block_size: u32,
    },
    /// Code 12. The receiver's storage failed the operation.
    MediaError,
    /// Code 13. The receiver is out of a resource (queue, memory); retry
    /// later.
    Busy,
    /// Code 14. The frame's epoch is newer than the receiver's: it missed
    /// an `EpochChange`. Detail: the receiver's epoch. The sender must bring
    /// it to the new epoch (and resync it) before sending it more.
    EpochAhead {
        /// The receiver's epoch.
        current: Epoch,
    },
    /// A code this version does not define (from a newer peer), kept as is
    /// so it can be logged. Never produced for a code listed above.
    Unrecognized {
        /// The reason code.
        code: u16,
        /// The detail word.
        detail: u64,
    },
}

impl NackReason {
    /// The reason code on the wire.
    pub fn code(&self) -> u16 {
        match self {
            Self::StaleEpoch { .. } => 1,
            Self::UnsupportedVersion { .. } => 2,
            Self::AuthFailed => 3,
            Self::UnknownVolume => 4,
            Self::WrongRole => 5,
            Self::OutOfOrder { .. } => 6,
            Self::PayloadCrcMismatch => 7,
            Self::Malformed => 8,
            Self::ProtocolViolation => 9,
            Self::OutOfRange => 10,
            Self::Misaligned { .. } => 11,
            Self::MediaError => 12,
            Self::Busy => 13,
            Self::EpochAhead { .. } => 14,
            Self::Unrecognized { code, .. } => *code,
        }
    }

    fn detail(&self) -> u64 {
        match self {
            Self::StaleEpoch { current } | Self::EpochAhead { current } => current.0,
            Self::UnsupportedVersion { supported } => {
                let (min, max) = (supported.min(), supported.max());
                u64::from(u32::from_le_bytes([
                    min.major, min.minor, max.major, max.minor,
                ]))
            }
            Self::OutOfOrder { expected } => expected.0,
            Self::Misaligned { block_size } => u64::from(*block_size),
            Self::Unrecognized { detail, .. } => *detail,
            _ => 0,
        }
    }

    fn from_wire(code: u16, detail: u64, tolerance: Tolerance) -> Result<Self, DecodeError> {
        // Codes without a detail must carry zero there, unless a newer minor
        // gave them one.
        let no_detail = |reason: NackReason| {
            tolerance
                .reserved_zero(detail == 0, "Nack.detail")
                .map(|()| reason)
        };
        match code {
            1 => Ok(Self::StaleEpoch {
                current: Epoch(detail),
            }),
            2 => {
                let [min_major, min_minor, max_major, max_minor, high @ ..] = detail.to_le_bytes();
                tolerance.reserved_zero(high == [0; 4], "Nack.detail")?;
                let supported = VersionRange::new(
                    Version::new(min_major, min_minor),
                    Version::new(max_major, max_minor),
                )
                .ok_or(DecodeError::malformed(
                    "Nack.detail",
                    FieldProblem::Inconsistent,
                ))?;
                Ok(Self::UnsupportedVersion { supported })
            }
            3 => no_detail(Self::AuthFailed),
            4 => no_detail(Self::UnknownVolume),
            5 => no_detail(Self::WrongRole),
            6 => Ok(Self::OutOfOrder {
                expected: Sequence(detail),
            }),
            7 => no_detail(Self::PayloadCrcMismatch),
            8 => no_detail(Self::Malformed),
            9 => no_detail(Self::ProtocolViolation),
            10 => no_detail(Self::OutOfRange),
            11 => {
                let block_size = u32::try_from(detail).map_err(|_| {
                    DecodeError::malformed("Nack.detail", FieldProblem::OutOfBounds)
                })?;
                Ok(Self::Misaligned { block_size })
            }
            12 => no_detail(Self::MediaError),
            13 => no_detail(Self::Busy),
            14 => Ok(Self::EpochAhead {
                current: Epoch(detail),
            }),
            0 => Err(DecodeError::malformed(
                "Nack.code",
                FieldProblem::UnknownValue,
            )),
            // Accepted at any version: failing to decode an error report would
            // only hide why the peer gave up.
            code => Ok(Self::Unrecognized { code, detail }),
        }
    }
}

/// Refuses a frame (stream and sequence or read tag name it) or, with
/// stream and sequence 0, the link itself. The sender closes the link after
/// a `Nack` unless the reason says otherwise (`Busy`, `OutOfRange`,
/// `Misaligned`, `MediaError` on a read).
///
/// Body (16 bytes): reason code (2) | reserved (6) | detail (8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nack {
    /// Stream of the refused frame (0 for the link).
    pub stream: StreamId,
    /// Sequence number or read tag of the refused frame (0 for the link).
    pub sequence: Sequence,
    /// Why.
    pub reason: NackReason,
}

impl<'a> WireMessage<'a> for Nack {
    const TYPE: MessageType = MessageType::Nack;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: self.sequence,
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        NACK_BODY_LEN
    }

    fn validate(&self) -> Result<(), Violation> {
        if let NackReason::Unrecognized { code, detail } = self.reason {
            // An `Unrecognized` with a defined code would decode as that
            // code's variant; one with code 0 would not decode at all.
            if NackReason::from_wire(code, detail, Tolerance::Lenient)
                .map_or(true, |r| !matches!(r, NackReason::Unrecognized { .. }))
            {
                return Err(Violation::new("Nack.code", FieldProblem::Inconsistent));
            }
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(self.reason.code())?;
        w.zeros::<6>()?;
        w.u64(self.reason.detail())
    }

    fn read(
        header: &FrameHeader,
        body: &'a [u8],
        tolerance: Tolerance,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let code = r.u16().field("Nack.code")?;
        let reserved = r.array::<6>().field("Nack.reserved")?;
        tolerance.reserved_zero(reserved == [0; 6], "Nack.reserved")?;
        let detail = r.u64().field("Nack.detail")?;
        tolerance.end_of_body(&r, "Nack")?;
        Ok(Self {
            stream: header.stream,
            sequence: header.sequence,
            reason: NackReason::from_wire(code, detail, tolerance)?,
        })
    }
}
