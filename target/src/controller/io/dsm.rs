//! Dataset Management (NVM Command Set 1.0 §3.2.3): the range list arrives
//! as data, in the capsule or after an R2T, so decoding it is a second step.

use crate::controller::io::{ByteRange, IoError};
use crate::controller::subsystem::BlockGeometry;
use crate::controller::transfer::DataSource;
use crate::nvme::command::{DatasetManagementCommand, DsmRange, DSM_RANGE_LEN};
use crate::nvme::status::Status;

/// Most ranges one Dataset Management command carries (NR is 8 bits,
/// 0's based).
pub const MAX_RANGES: usize = 256;

/// A Dataset Management command waiting for its range list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsmRequest {
    /// Number of ranges (1..=256).
    pub range_count: usize,
    /// Attribute – Deallocate: the ranges may be discarded. Without it the
    /// command only carries hints and the data path may ignore it.
    pub deallocate: bool,
    /// Where the range list is (range_count * 16 bytes).
    pub data: DataSource,
    geometry: BlockGeometry,
}

impl DsmRequest {
    pub(crate) fn new(
        command: DatasetManagementCommand,
        data: DataSource,
        geometry: BlockGeometry,
    ) -> Self {
        Self {
            range_count: command.ranges(),
            deallocate: command.deallocate,
            data,
            geometry,
        }
    }

    /// Decodes the range list into byte ranges, skipping empty ranges.
    /// `list` is the transferred data: at least NR ranges (hosts may send
    /// a whole 4 KiB list buffer); only the first NR are read.
    pub fn byte_ranges(&self, list: &[u8]) -> Result<Vec<ByteRange>, IoError> {
        let Some(list) = list.get(..self.range_count * DSM_RANGE_LEN) else {
            return Err(IoError::DataPointer(Status::DATA_SGL_LENGTH_INVALID));
        };
        let mut ranges = Vec::with_capacity(self.range_count);
        for range in DsmRange::parse_all(list).filter(|range| range.blocks != 0) {
            let end = range.slba.checked_add(u64::from(range.blocks));
            if end.is_none_or(|end| end > self.geometry.blocks()) {
                return Err(IoError::LbaOutOfRange {
                    slba: range.slba,
                    blocks: range.blocks,
                });
            }
            ranges.push(ByteRange::of_blocks(
                range.slba,
                u64::from(range.blocks),
                &self.geometry,
            ));
        }
        Ok(ranges)
    }
}
