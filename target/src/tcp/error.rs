//! Errors of the PDU codec and the termination status they map to.
//!
//! A receiver that finds a fatal transport error sends a termination
//! request (H2CTermReq or C2HTermReq) carrying a Fatal Error Status (FES),
//! Fatal Error Information (FEI) and a copy of the offending header, then
//! closes the connection (NVMe/TCP 1.0 §3.6.2.4, §3.6.2.5). Each
//! [`PduError`] knows its FES and FEI, or that no request is to be sent.

use thiserror::Error;

/// Fatal Error Status (FES) of a termination request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FatalErrorStatus {
    /// 01h: invalid PDU header field; FEI is the byte offset of the field.
    InvalidHeaderField,
    /// 02h: PDU sequence error.
    PduSequenceError,
    /// 03h: header digest error.
    HeaderDigestError,
    /// 04h: data transfer out of range.
    DataTransferOutOfRange,
    /// 05h: data transfer limit exceeded (also "R2T limit exceeded").
    DataTransferLimitExceeded,
    /// 06h: unsupported parameter; FEI is the byte offset of the parameter.
    UnsupportedParameter,
    /// Any other value, kept verbatim.
    Unknown(u16),
}

impl FatalErrorStatus {
    /// Decodes an FES value; never fails.
    pub const fn from_u16(value: u16) -> Self {
        match value {
            0x01 => Self::InvalidHeaderField,
            0x02 => Self::PduSequenceError,
            0x03 => Self::HeaderDigestError,
            0x04 => Self::DataTransferOutOfRange,
            0x05 => Self::DataTransferLimitExceeded,
            0x06 => Self::UnsupportedParameter,
            other => Self::Unknown(other),
        }
    }

    /// The FES value on the wire.
    pub const fn as_u16(self) -> u16 {
        match self {
            Self::InvalidHeaderField => 0x01,
            Self::PduSequenceError => 0x02,
            Self::HeaderDigestError => 0x03,
            Self::DataTransferOutOfRange => 0x04,
            Self::DataTransferLimitExceeded => 0x05,
            Self::UnsupportedParameter => 0x06,
            Self::Unknown(other) => other,
        }
    }
}

/// What goes into the termination request for an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatalError {
    /// FES.
    pub status: FatalErrorStatus,
    /// FEI.
    pub info: u32,
}

/// A received PDU that cannot be accepted.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PduError {
    /// A header field has a value the spec forbids.
    #[error("invalid PDU header field {field} at byte {offset}")]
    InvalidHeaderField {
        /// Byte offset of the field from the start of the PDU (the FEI).
        offset: u32,
        /// Field name, for logs.
        field: &'static str,
    },
    /// A PDU that is not allowed at this point of the connection.
    #[error("PDU sequence error: {0}")]
    SequenceError(&'static str),
    /// The header digest does not match the header.
    #[error("header digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    HeaderDigest {
        /// CRC32C of the received header.
        computed: u32,
        /// Digest received.
        received: u32,
    },
    /// Data outside the range the command or R2T allows.
    #[error("data transfer out of range: offset {datao}, length {datal}")]
    DataOutOfRange {
        /// DATAO (or R2TO) received.
        datao: u32,
        /// DATAL (or R2TL) received.
        datal: u32,
    },
    /// More data in one PDU than negotiated (MAXH2CDATA, the in-capsule
    /// data size, or the receiver's configured maximum).
    #[error("data transfer limit exceeded: {length} bytes, at most {limit}")]
    DataLimitExceeded {
        /// Data bytes the PDU announces.
        length: u32,
        /// Largest accepted.
        limit: u32,
    },
    /// An Initialize Connection parameter this side does not support.
    #[error("unsupported parameter {field} at byte {offset}")]
    UnsupportedParameter {
        /// Byte offset of the parameter (the FEI).
        offset: u32,
        /// Parameter name, for logs.
        field: &'static str,
    },
    /// The data digest does not match the data. Not a fatal transport
    /// error: the command that owns the data fails (with Transient
    /// Transport Error, for instance) and the connection may go on.
    #[error("data digest mismatch: computed {computed:#010x}, received {received:#010x}")]
    DataDigest {
        /// CRC32C of the received data.
        computed: u32,
        /// Digest received.
        received: u32,
    },
    /// A malformed termination request: close the connection without
    /// answering (a termination request is never answered).
    #[error("malformed termination request: {0}")]
    MalformedTermReq(&'static str),
}

impl PduError {
    /// The FES and FEI to report, or `None` when no termination request is
    /// to be sent (a data digest error, which is not fatal, or a malformed
    /// termination request, after which the connection is just closed).
    pub const fn fatal_error(&self) -> Option<FatalError> {
        let (status, info) = match *self {
            Self::InvalidHeaderField { offset, .. } => {
                (FatalErrorStatus::InvalidHeaderField, offset)
            }
            Self::SequenceError(_) => (FatalErrorStatus::PduSequenceError, 0),
            Self::HeaderDigest { .. } => (FatalErrorStatus::HeaderDigestError, 0),
            Self::DataOutOfRange { .. } => (FatalErrorStatus::DataTransferOutOfRange, 0),
            Self::DataLimitExceeded { .. } => (FatalErrorStatus::DataTransferLimitExceeded, 0),
            Self::UnsupportedParameter { offset, .. } => {
                (FatalErrorStatus::UnsupportedParameter, offset)
            }
            Self::DataDigest { .. } | Self::MalformedTermReq(_) => return None,
        };
        Some(FatalError { status, info })
    }

    /// Whether the connection must end.
    pub const fn is_fatal(&self) -> bool {
        !matches!(self, Self::DataDigest { .. })
    }
}

/// A PDU that cannot be encoded as asked.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is too small.
    #[error("output buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// Data given to a PDU type that carries none.
    #[error("this PDU type carries no data")]
    UnexpectedData,
    /// A data PDU without data, or whose DATAL differs from the data given.
    #[error("DATAL {datal} does not match {data_len} data bytes")]
    DataLengthMismatch {
        /// DATAL in the header.
        datal: u32,
        /// Data bytes given.
        data_len: usize,
    },
    /// SUCCESS set without LAST_PDU, or on H2CData.
    #[error("SUCCESS is only valid on the last C2HData PDU")]
    InvalidDataFlags,
    /// A termination request carries at most 128 bytes of error data.
    #[error("termination request error data is {len} bytes; at most 128 allowed")]
    TermReqDataTooLong {
        /// Bytes given.
        len: usize,
    },
    /// PDU data alignment above 31.
    #[error("PDU data alignment {0} out of range 0..=31")]
    InvalidAlignment(u8),
    /// The PDU would be longer than PLEN can express.
    #[error("PDU length does not fit in 32 bits")]
    TooLong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fes_values() {
        for value in 0..=0x10u16 {
            assert_eq!(FatalErrorStatus::from_u16(value).as_u16(), value);
        }
        assert_eq!(
            FatalErrorStatus::from_u16(5),
            FatalErrorStatus::DataTransferLimitExceeded
        );
    }

    #[test]
    fn errors_map_to_fes_and_fei() {
        let invalid = PduError::InvalidHeaderField {
            offset: 3,
            field: "PDO",
        };
        assert_eq!(
            invalid.fatal_error(),
            Some(FatalError {
                status: FatalErrorStatus::InvalidHeaderField,
                info: 3
            })
        );
        let unsupported = PduError::UnsupportedParameter {
            offset: 8,
            field: "PFV",
        };
        assert_eq!(
            unsupported
                .fatal_error()
                .map(|f| (f.status.as_u16(), f.info)),
            Some((6, 8))
        );
        assert_eq!(
            PduError::SequenceError("x")
                .fatal_error()
                .map(|f| f.status.as_u16()),
            Some(2)
        );
        assert_eq!(
            PduError::HeaderDigest {
                computed: 1,
                received: 2
            }
            .fatal_error()
            .map(|f| f.status.as_u16()),
            Some(3)
        );
        assert_eq!(
            PduError::DataOutOfRange { datao: 0, datal: 1 }
                .fatal_error()
                .map(|f| f.status.as_u16()),
            Some(4)
        );
        assert_eq!(
            PduError::DataLimitExceeded {
                length: 2,
                limit: 1
            }
            .fatal_error()
            .map(|f| f.status.as_u16()),
            Some(5)
        );
        let digest = PduError::DataDigest {
            computed: 1,
            received: 2,
        };
        assert_eq!(digest.fatal_error(), None);
        assert!(!digest.is_fatal());
        assert_eq!(PduError::MalformedTermReq("x").fatal_error(), None);
        assert!(PduError::MalformedTermReq("x").is_fatal());
    }
}
