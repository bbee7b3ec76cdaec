//! One I/O command between its capsule and its completion: the buffers
//! holding its data, how much host data has arrived, the disk operations
//! still out, and the first error seen.

use std::time::Instant;

use keel_engine::{Buf, DeviceId, IoError};

use crate::controller::{ByteRange, IoCommand, IoOperation};
use crate::nvme::status::Status;

/// Most buffers one command uses: MDTS / slot size. keeld clamps MDTS so a
/// command never needs more.
pub(crate) const MAX_SEGMENTS: usize = 16;

/// Where a command is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Taken off the socket while the buffer pool was short: waiting for
    /// its data buffers (the connection goes on being read meanwhile, so
    /// host data for the commands holding buffers still arrives). Holds
    /// its in-capsule data, copied out of the receive buffer.
    NeedBuffers { in_capsule: Option<Vec<u8>> },
    /// Waiting for H2CData after our R2T: `received` of `expected` bytes.
    AwaitingHostData { received: u64, expected: u64 },
    /// Disk operations in flight.
    Disk,
}

/// An I/O command the data path owns.
pub(crate) struct Command {
    pub io: IoCommand,
    /// The device of the command's namespace (None for a broadcast flush).
    pub device: Option<DeviceId>,
    /// Data buffers, in order: host data for writes and compares, disk
    /// data for reads. `None` while the ring holds one.
    pub data: [Option<Buf>; MAX_SEGMENTS],
    pub segments: usize,
    /// Disk data for a Compare.
    pub compare: [Option<Buf>; MAX_SEGMENTS],
    pub phase: Phase,
    pub disk_pending: usize,
    pub status: Status,
    /// Dataset Management ranges to deallocate.
    pub ranges: Vec<ByteRange>,
    /// Metrics index of its volume.
    pub volume: Option<usize>,
    /// When its capsule was taken (the shard's loop clock).
    pub started: Instant,
}

impl Command {
    pub fn new(
        io: IoCommand,
        device: Option<DeviceId>,
        volume: Option<usize>,
        started: Instant,
    ) -> Command {
        Command {
            io,
            device,
            data: Default::default(),
            segments: 0,
            compare: Default::default(),
            phase: Phase::Disk,
            disk_pending: 0,
            status: Status::SUCCESS,
            ranges: Vec::new(),
            volume,
            started,
        }
    }

    /// Records a failure; the first one is what the host is told.
    pub fn fail(&mut self, status: Status) {
        if self.status.is_success() {
            self.status = status;
        }
    }

    /// Whether the command's disk work reads (for mapping errors).
    pub fn is_read(&self) -> bool {
        matches!(
            self.io.operation,
            IoOperation::Read { .. } | IoOperation::Compare { .. }
        )
    }

    /// Every buffer the command holds, for returning them to the pool.
    pub fn take_buffers(&mut self) -> impl Iterator<Item = Buf> + '_ {
        self.data
            .iter_mut()
            .chain(self.compare.iter_mut())
            .filter_map(Option::take)
    }
}

/// The NVMe status for a failed disk operation.
pub(crate) fn disk_status(error: &IoError, reading: bool) -> Status {
    match error {
        IoError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE,
        IoError::Busy => Status::COMMAND_INTERRUPTED,
        _ if reading => Status::UNRECOVERED_READ_ERROR,
        _ => Status::WRITE_FAULT,
    }
}
