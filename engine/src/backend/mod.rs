//! Block backends: where a volume's bytes live.
//!
//! A backend never performs blocking I/O on a reactor. It turns a validated
//! request into a ring entry ([`Prepared::Sqe`]) that the shard submits, or,
//! when the data is in memory, does the work on the spot
//! ([`Prepared::Done`]). Validation (alignment, range) happens once, here,
//! for every backend alike: a misaligned request is an error, never a silent
//! bounce buffer.

mod fault;
mod file;
mod memory;

pub use fault::{
    FaultAction, FaultBackend, FaultError, FaultOp, FaultPlan, FaultRule, FaultRuleStatus,
    MediaErrorRange, MAX_MEDIA_ERRORS, MAX_RULES, MAX_STALL, MAX_STALL_SETTINGS, MEDIA_SECTOR,
};
pub use file::{FileBackend, OpenOptions};
pub use memory::MemoryBackend;

use std::os::fd::RawFd;

use io_uring::squeue;

/// Shape of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Logical block size in bytes: every offset and length is a multiple.
    pub block_size: u32,
    /// Usable bytes.
    pub capacity: u64,
}

impl Geometry {
    pub fn blocks(&self) -> u64 {
        self.capacity / self.block_size as u64
    }
}

/// One block operation. Read and Write move `data.len()` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoOp {
    Read {
        offset: u64,
    },
    /// `fua`: durable before completion (NVMe Force Unit Access).
    Write {
        offset: u64,
        fua: bool,
    },
    /// Everything completed before is durable once this completes.
    Flush,
    WriteZeroes {
        offset: u64,
        len: u64,
    },
    /// Deallocate; the range reads back as zeroes afterwards.
    Discard {
        offset: u64,
        len: u64,
    },
}

impl IoOp {
    /// The same op `bytes` further on (a read or write continued after a
    /// short transfer); other ops are unchanged.
    pub fn advanced(self, bytes: u64) -> IoOp {
        match self {
            IoOp::Read { offset } => IoOp::Read {
                offset: offset + bytes,
            },
            IoOp::Write { offset, fua } => IoOp::Write {
                offset: offset + bytes,
                fua,
            },
            other => other,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            IoOp::Read { .. } => "read",
            IoOp::Write { .. } => "write",
            IoOp::Flush => "flush",
            IoOp::WriteZeroes { .. } => "write-zeroes",
            IoOp::Discard { .. } => "discard",
        }
    }

    /// Whether the op moves data through a buffer.
    pub fn has_data(&self) -> bool {
        matches!(self, IoOp::Read { .. } | IoOp::Write { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    #[error(
        "{op} at byte {offset} for {len} bytes is not aligned to the {block_size}-byte block size"
    )]
    Misaligned {
        op: &'static str,
        offset: u64,
        len: u64,
        block_size: u32,
    },
    #[error("{op} at byte {offset} for {len} bytes is beyond the volume's {capacity} bytes")]
    OutOfRange {
        op: &'static str,
        offset: u64,
        len: u64,
        capacity: u64,
    },
    #[error("{op} of zero bytes")]
    EmptyTransfer { op: &'static str },
    #[error("{op} failed: {}", std::io::Error::from_raw_os_error(*errno))]
    Os { op: &'static str, errno: i32 },
    #[error("{op} completed short: {done} of {wanted} bytes")]
    Short {
        op: &'static str,
        done: u32,
        wanted: u32,
    },
    #[error("no buffer available for {op}")]
    NoBuffer { op: &'static str },
    #[error("too many operations in flight")]
    Busy,
}

/// How a shard's ring refers to a backend's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRef {
    /// Slot in the ring's registered file table.
    Fixed(u32),
    Raw(RawFd),
}

/// A request ready for a backend: validated, with its buffer resolved.
pub struct Request<'a> {
    pub op: IoOp,
    /// The transfer buffer; empty for ops without data.
    pub data: &'a mut [u8],
    /// Registered-buffer index of `data` in the shard's ring; `None` when
    /// the ring could not register the pool (plain reads and writes then).
    pub buf_index: Option<u16>,
    /// How the shard's ring names this backend's file (file backends only).
    pub file: Option<FileRef>,
}

pub enum Prepared {
    /// Submit this; its CQE result is the op's result.
    Sqe(squeue::Entry),
    /// Already done (memory backends): bytes moved, or the error.
    Done(Result<u32, IoError>),
}

pub trait BlockBackend: Send + Sync {
    fn geometry(&self) -> Geometry;
    /// The descriptor each shard registers in its ring, if any.
    fn raw_fd(&self) -> Option<RawFd>;
    /// Human-readable identity for logs ("file /data/vol0 (O_DIRECT)").
    fn describe(&self) -> String;
    /// Turns a request already checked by [`validate`] into work.
    fn prepare(&self, req: Request<'_>) -> Prepared;
}

/// Checks alignment and range; the same rules for every backend.
pub fn validate(op: &IoOp, data_len: usize, geometry: Geometry) -> Result<(), IoError> {
    let (offset, len) = match *op {
        IoOp::Read { offset } | IoOp::Write { offset, .. } => (offset, data_len as u64),
        IoOp::WriteZeroes { offset, len } | IoOp::Discard { offset, len } => (offset, len),
        IoOp::Flush => return Ok(()),
    };
    let name = op.name();
    if len == 0 {
        return Err(IoError::EmptyTransfer { op: name });
    }
    let bs = geometry.block_size as u64;
    if offset % bs != 0 || len % bs != 0 {
        return Err(IoError::Misaligned {
            op: name,
            offset,
            len,
            block_size: geometry.block_size,
        });
    }
    match offset.checked_add(len) {
        Some(end) if end <= geometry.capacity => Ok(()),
        _ => Err(IoError::OutOfRange {
            op: name,
            offset,
            len,
            capacity: geometry.capacity,
        }),
    }
}

/// Maps a CQE result to the op's outcome; a read or write that moved less
/// than `wanted` is an error here (the shard continues one that moved
/// something before it gets this far: block I/O is all or nothing).
///
/// `-ETIME` is `EIO`: no block operation returns ETIME by itself, only the
/// timeout a [`FaultBackend`] stall submits in the op's place, which stands
/// for an I/O error that took that long to come.
pub fn complete(op: &IoOp, wanted: usize, cqe_result: i32) -> Result<u32, IoError> {
    if cqe_result < 0 {
        let errno = match -cqe_result {
            libc::ETIME => libc::EIO,
            errno => errno,
        };
        return Err(IoError::Os {
            op: op.name(),
            errno,
        });
    }
    let done = cqe_result as u32;
    if op.has_data() && done as usize != wanted {
        return Err(IoError::Short {
            op: op.name(),
            done,
            wanted: wanted as u32,
        });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: Geometry = Geometry {
        block_size: 512,
        capacity: 1 << 20,
    };

    #[test]
    fn aligned_in_range_requests_pass() {
        validate(&IoOp::Read { offset: 0 }, 512, G).unwrap();
        validate(
            &IoOp::Write {
                offset: (1 << 20) - 4096,
                fua: true,
            },
            4096,
            G,
        )
        .unwrap();
        validate(&IoOp::Flush, 0, G).unwrap();
    }

    #[test]
    fn misaligned_offset_or_length_is_refused() {
        let e = validate(&IoOp::Read { offset: 100 }, 512, G).unwrap_err();
        assert!(matches!(e, IoError::Misaligned { offset: 100, .. }));
        let e = validate(
            &IoOp::Write {
                offset: 0,
                fua: false,
            },
            513,
            G,
        )
        .unwrap_err();
        assert!(matches!(e, IoError::Misaligned { len: 513, .. }));
        let e = validate(
            &IoOp::Discard {
                offset: 512,
                len: 100,
            },
            0,
            G,
        )
        .unwrap_err();
        assert!(e
            .to_string()
            .contains("not aligned to the 512-byte block size"));
    }

    #[test]
    fn out_of_range_and_overflowing_requests_are_refused() {
        let e = validate(&IoOp::Read { offset: 1 << 20 }, 512, G).unwrap_err();
        assert!(matches!(e, IoError::OutOfRange { .. }));
        let e = validate(
            &IoOp::WriteZeroes {
                offset: u64::MAX - 511,
                len: 1024,
            },
            0,
            G,
        )
        .unwrap_err();
        assert!(matches!(e, IoError::OutOfRange { .. }));
    }

    #[test]
    fn empty_transfers_are_refused() {
        let e = validate(&IoOp::Read { offset: 0 }, 0, G).unwrap_err();
        assert_eq!(e, IoError::EmptyTransfer { op: "read" });
    }

    #[test]
    fn short_transfers_and_errnos_become_errors() {
        let op = IoOp::Read { offset: 0 };
        assert_eq!(complete(&op, 4096, 4096), Ok(4096));
        assert!(matches!(
            complete(&op, 4096, 512),
            Err(IoError::Short { .. })
        ));
        let e = complete(&op, 4096, -libc::EIO).unwrap_err();
        assert_eq!(
            e,
            IoError::Os {
                op: "read",
                errno: libc::EIO
            }
        );
        assert!(e.to_string().contains("read failed"));
        assert_eq!(complete(&IoOp::Flush, 0, 0), Ok(0));
    }

    #[test]
    fn an_expired_fault_stall_is_an_io_error() {
        let op = IoOp::Write {
            offset: 0,
            fua: false,
        };
        assert_eq!(
            complete(&op, 4096, -libc::ETIME),
            Err(IoError::Os {
                op: "write",
                errno: libc::EIO
            })
        );
        // Other errnos pass through unchanged.
        assert_eq!(
            complete(&op, 4096, -libc::ECANCELED),
            Err(IoError::Os {
                op: "write",
                errno: libc::ECANCELED
            })
        );
    }
}
