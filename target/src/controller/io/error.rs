//! Why an I/O command is refused, and the status the host gets for it.

use thiserror::Error;

use crate::nvme::status::Status;

/// A refused I/O command.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum IoError {
    /// Not an NVM command this target implements (ONCS lists Compare,
    /// Dataset Management and Write Zeroes; Flush because VWC is present).
    #[error("invalid I/O opcode {0:#04x}")]
    InvalidOpcode(u8),
    /// NSID 0, inactive, or broadcast where it is not allowed.
    #[error("invalid namespace {0}")]
    InvalidNamespace(u32),
    /// The namespace exists but may not serve I/O on this path now (a
    /// replica that is not primary: ANA inaccessible); a path error, so a
    /// multipath host retries on another path.
    #[error("namespace {0} is inaccessible on this path")]
    Inaccessible(u32),
    /// The LBA range runs past the namespace.
    #[error("LBA range {slba}+{blocks} is out of range")]
    LbaOutOfRange {
        /// Starting LBA.
        slba: u64,
        /// Number of blocks.
        blocks: u32,
    },
    /// More data than MDTS allows (NVMe Base 2.0 §5.17.2.1, MDTS: the
    /// command is aborted with Invalid Field in Command).
    #[error("transfer of {bytes} bytes exceeds MDTS ({max} bytes)")]
    TransferTooLarge {
        /// Bytes the command would move.
        bytes: u64,
        /// MDTS in bytes.
        max: u64,
    },
    /// A field or flag this target does not support.
    #[error("unsupported field: {0}")]
    UnsupportedField(&'static str),
    /// SGL1 does not describe the data the command moves.
    #[error("data pointer: {0}")]
    DataPointer(Status),
}

impl IoError {
    /// The completion status for the host.
    pub const fn status(&self) -> Status {
        match self {
            Self::InvalidOpcode(_) => Status::INVALID_OPCODE,
            Self::InvalidNamespace(_) => Status::INVALID_NAMESPACE,
            Self::Inaccessible(_) => Status::ANA_INACCESSIBLE,
            Self::LbaOutOfRange { .. } => Status::LBA_OUT_OF_RANGE,
            Self::TransferTooLarge { .. } | Self::UnsupportedField(_) => Status::INVALID_FIELD,
            Self::DataPointer(status) => *status,
        }
    }
}
