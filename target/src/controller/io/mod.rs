//! I/O command front end: turns an NVM command set SQE into a typed
//! [`IoCommand`] (byte ranges on a namespace) for the data path, or into
//! the NVMe status the host must get instead.
//!
//! Pure functions of the SQE, the in-capsule data and the namespace table;
//! nothing here touches data. Checks follow the NVM Command Set
//! Specification 1.0 (§3.2 "I/O Commands") and NVMe Base 2.0 §4.3 (SGLs).

mod dsm;
mod error;

pub use dsm::DsmRequest;
pub use error::IoError;

use crate::controller::config::TargetLimits;
use crate::controller::subsystem::{BlockGeometry, Subsystem};
use crate::controller::transfer::{
    check_psdt, expect_data_from_host, expect_data_from_host_within, expect_data_to_host,
    expect_no_data, DataSource,
};
use crate::nvme::command::{DatasetManagementCommand, ReadWriteCommand};
use crate::nvme::opcode::IoOpcode;
use crate::nvme::sqe::SubmissionQueueEntry;

/// The broadcast NSID: Flush applies to every namespace.
pub const NSID_BROADCAST: u32 = u32::MAX;

/// CDW12 bits 29:26: Protection Information field (PRACT, PRCHK). No
/// namespace is formatted with protection information.
const CDW12_PRINFO: u32 = 0xF << 26;
/// CDW12 bit 24: Storage Tag Check (needs extended LBA formats).
const CDW12_STC: u32 = 1 << 24;
/// CDW12 bits 23:20: Directive Type (directives are not supported).
const CDW12_DTYPE: u32 = 0xF << 20;
/// DSM attributes defined in CDW11 (IDR, IDW, AD); the rest is reserved.
const DSM_ATTRIBUTES: u32 = 0x7;

/// A byte range on a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// Offset from the start of the namespace.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl ByteRange {
    fn of_blocks(slba: u64, blocks: u64, geometry: &BlockGeometry) -> Self {
        // Callers check slba + blocks <= capacity, and capacity in bytes
        // fits in a u64 (BlockGeometry::new), so these shifts cannot wrap.
        let shift = u32::from(geometry.block_size_shift());
        Self {
            offset: slba << shift,
            len: blocks << shift,
        }
    }
}

/// What the data path must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOperation {
    /// Read `range` and send it to the host (C2HData).
    Read {
        /// Bytes to read.
        range: ByteRange,
        /// Force Unit Access: read from non-volatile media.
        fua: bool,
    },
    /// Write the host's data to `range`.
    Write {
        /// Bytes to write.
        range: ByteRange,
        /// Force Unit Access: durable before completion.
        fua: bool,
        /// Where the data is.
        data: DataSource,
    },
    /// Compare the host's data with `range`; Compare Failure on mismatch.
    Compare {
        /// Bytes to compare.
        range: ByteRange,
        /// Where the host's data is.
        data: DataSource,
    },
    /// Write zeroes to `range`.
    WriteZeroes {
        /// Bytes to zero.
        range: ByteRange,
        /// The host allows deallocating instead (DEAC).
        deallocate: bool,
        /// Force Unit Access.
        fua: bool,
    },
    /// Make completed writes durable (the namespace, or all of them when
    /// the command's NSID is [`NSID_BROADCAST`]).
    Flush,
    /// Dataset Management; the range list is in `DsmRequest::data`.
    DatasetManagement(DsmRequest),
}

/// A validated I/O command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoCommand {
    /// Command identifier to echo in the completion.
    pub cid: u16,
    /// Namespace ([`NSID_BROADCAST`] only for Flush).
    pub nsid: u32,
    /// What to do.
    pub operation: IoOperation,
}

/// The limits the front end enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLimits {
    /// MDTS in bytes.
    pub max_transfer_bytes: u64,
    /// Largest in-capsule data (IOCCSZ * 16 - 64).
    pub in_capsule_data_size: u32,
}

impl From<&TargetLimits> for IoLimits {
    fn from(limits: &TargetLimits) -> Self {
        Self {
            max_transfer_bytes: limits.max_transfer_bytes(),
            in_capsule_data_size: limits.in_capsule_data_size,
        }
    }
}

/// Parses and validates one I/O command. `capsule_data` is the in-capsule
/// data that came with it (possibly empty).
pub fn parse_io_command(
    sqe: &SubmissionQueueEntry,
    capsule_data: &[u8],
    subsystem: &Subsystem,
    limits: &IoLimits,
) -> Result<IoCommand, IoError> {
    let opcode = sqe.io_opcode();
    if !matches!(
        opcode,
        IoOpcode::Read
            | IoOpcode::Write
            | IoOpcode::Compare
            | IoOpcode::WriteZeroes
            | IoOpcode::Flush
            | IoOpcode::DatasetManagement
    ) {
        return Err(IoError::InvalidOpcode(sqe.opcode));
    }
    // Fused operations are not supported (Identify FUSES = 0).
    if sqe.fuse() != 0 {
        return Err(IoError::UnsupportedField("FUSE"));
    }
    check_psdt(sqe).map_err(|_| IoError::UnsupportedField("PSDT"))?;

    if opcode == IoOpcode::Flush && sqe.nsid == NSID_BROADCAST {
        expect_no_data(sqe).map_err(IoError::DataPointer)?;
        return Ok(command(sqe, IoOperation::Flush));
    }
    let namespace = subsystem
        .namespace(sqe.nsid)
        .ok_or(IoError::InvalidNamespace(sqe.nsid))?;
    if !namespace.ready {
        return Err(IoError::Inaccessible(sqe.nsid));
    }
    let geometry = namespace.geometry;
    let operation = match opcode {
        IoOpcode::Flush => {
            expect_no_data(sqe).map_err(IoError::DataPointer)?;
            IoOperation::Flush
        }
        IoOpcode::DatasetManagement => {
            IoOperation::DatasetManagement(parse_dsm(sqe, capsule_data, geometry, limits)?)
        }
        _ => parse_block_command(opcode, sqe, capsule_data, &geometry, limits)?,
    };
    Ok(command(sqe, operation))
}

fn command(sqe: &SubmissionQueueEntry, operation: IoOperation) -> IoCommand {
    IoCommand {
        cid: sqe.cid,
        nsid: sqe.nsid,
        operation,
    }
}

/// Read, Write, Compare and Write Zeroes: an LBA range.
fn parse_block_command(
    opcode: IoOpcode,
    sqe: &SubmissionQueueEntry,
    capsule_data: &[u8],
    geometry: &BlockGeometry,
    limits: &IoLimits,
) -> Result<IoOperation, IoError> {
    let rw = ReadWriteCommand::from_sqe(sqe);
    if sqe.cdw12 & (CDW12_PRINFO | CDW12_STC) != 0 {
        return Err(IoError::UnsupportedField("PRINFO/STC"));
    }
    if opcode != IoOpcode::WriteZeroes && sqe.cdw12 & CDW12_DTYPE != 0 {
        return Err(IoError::UnsupportedField("DTYPE"));
    }
    if !rw.fits_in(geometry.blocks()) {
        return Err(IoError::LbaOutOfRange {
            slba: rw.slba,
            blocks: rw.blocks(),
        });
    }
    let range = ByteRange::of_blocks(rw.slba, u64::from(rw.blocks()), geometry);
    if opcode == IoOpcode::WriteZeroes {
        // No data moves, so MDTS does not apply (WZSL = 0: no limit).
        expect_no_data(sqe).map_err(IoError::DataPointer)?;
        return Ok(IoOperation::WriteZeroes {
            range,
            deallocate: rw.deallocate,
            fua: rw.fua,
        });
    }
    if range.len > limits.max_transfer_bytes {
        return Err(IoError::TransferTooLarge {
            bytes: range.len,
            max: limits.max_transfer_bytes,
        });
    }
    let from_host = |sqe| {
        expect_data_from_host(sqe, range.len, capsule_data, limits.in_capsule_data_size)
            .map_err(IoError::DataPointer)
    };
    Ok(match opcode {
        IoOpcode::Read => {
            expect_data_to_host(sqe, range.len).map_err(IoError::DataPointer)?;
            IoOperation::Read { range, fua: rw.fua }
        }
        IoOpcode::Write => IoOperation::Write {
            range,
            fua: rw.fua,
            data: from_host(sqe)?,
        },
        _ => IoOperation::Compare {
            range,
            data: from_host(sqe)?,
        },
    })
}

fn parse_dsm(
    sqe: &SubmissionQueueEntry,
    capsule_data: &[u8],
    geometry: BlockGeometry,
    limits: &IoLimits,
) -> Result<DsmRequest, IoError> {
    if sqe.cdw11 & !DSM_ATTRIBUTES != 0 {
        return Err(IoError::UnsupportedField("DSM attributes"));
    }
    let dsm = DatasetManagementCommand::from_sqe(sqe);
    // At least NR ranges; at most the 256 a list can hold.
    let needed = dsm.data_len() as u64;
    let most = (dsm::MAX_RANGES * crate::nvme::command::DSM_RANGE_LEN) as u64;
    let data = expect_data_from_host_within(
        sqe,
        needed..=most.max(needed),
        capsule_data,
        limits.in_capsule_data_size,
    )
    .map_err(IoError::DataPointer)?;
    Ok(DsmRequest::new(dsm, data, geometry))
}

#[cfg(test)]
mod tests;
