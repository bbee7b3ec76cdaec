//! The shape of a volume as the replication logic sees it: blocks and
//! write-intent regions.

use crate::wire::{ByteRange, RegionIndex};

/// Block and region sizes of a volume. A region is one bit of the
/// write-intent bitmap and the unit of resync; host writes never span two
/// (the shard splits commands at chunk boundaries, and a region is a chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    block_size: u32,
    region_size: u32,
    region_count: u64,
}

/// Upper bound on regions, so bitmaps and full-resync sets stay bounded
/// (16 Ki regions of 1 MiB is a 16 GiB stream).
pub const MAX_REGIONS: u64 = 1 << 20;

impl Geometry {
    /// A volume of `region_count` regions of `region_size` bytes, addressed in
    /// blocks of `block_size` bytes. `None` unless both sizes are powers of
    /// two, the region holds whole blocks and the count is 1..=`MAX_REGIONS`.
    pub fn new(block_size: u32, region_size: u32, region_count: u64) -> Option<Self> {
        let valid = block_size.is_power_of_two()
            && region_size.is_power_of_two()
            && region_size >= block_size
            && (1..=MAX_REGIONS).contains(&region_count);
        valid.then_some(Self {
            block_size,
            region_size,
            region_count,
        })
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Bytes per region.
    pub fn region_size(&self) -> u32 {
        self.region_size
    }

    /// Number of regions.
    pub fn region_count(&self) -> u64 {
        self.region_count
    }

    /// Size of the volume in bytes.
    pub fn volume_size(&self) -> u64 {
        self.region_count
            .saturating_mul(u64::from(self.region_size))
    }

    /// Every region, in order.
    pub fn regions(&self) -> impl Iterator<Item = RegionIndex> {
        (0..self.region_count).map(RegionIndex)
    }

    /// The region holding `range`, if the range is non-empty, block-aligned,
    /// inside the volume and within a single region.
    pub fn region_of(&self, range: ByteRange) -> Option<RegionIndex> {
        let end = range.end()?;
        let block = u64::from(self.block_size);
        let region = u64::from(self.region_size);
        let aligned =
            range.len > 0 && range.offset.is_multiple_of(block) && end.is_multiple_of(block);
        let first = range.offset / region;
        let last = (end - 1) / region;
        (aligned && end <= self.volume_size() && first == last).then_some(RegionIndex(first))
    }

    /// The byte range of region `index`.
    pub fn region_range(&self, index: RegionIndex) -> ByteRange {
        ByteRange::new(
            index.0.saturating_mul(u64::from(self.region_size)),
            self.region_size,
        )
    }
}
