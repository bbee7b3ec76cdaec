//! Identifier newtypes carried in frame headers and bodies.
//!
//! Each id is its own type so a stream id can never be passed where a
//! sequence number is expected; all are plain integers on the wire.

use std::fmt;

macro_rules! integer_id {
    ($(#[$doc:meta])* $name:ident($int:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub $int);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl From<$int> for $name {
            fn from(value: $int) -> Self {
                Self(value)
            }
        }
    };
}

integer_id!(
    /// A replicated volume, the same on every copy of it.
    VolumeId(u64)
);
integer_id!(
    /// A volume's generation. Bumped on every membership change (promotion,
    /// added or removed copy, quorum change); a replica rejects frames from
    /// an older epoch, which fences a deposed primary.
    Epoch(u64)
);
integer_id!(
    /// One ordered stream of frames on a link, in practice one per shard of
    /// the primary (writes to one LBA chunk always use the same stream).
    StreamId(u32)
);
integer_id!(
    /// Position of a sequenced frame (Write, Flush, Resync, EpochChange) in
    /// its stream. The first sequenced frame of a stream on a link is 1;
    /// 0 means "nothing yet" (e.g. an `Ack` of 0 acknowledges nothing).
    Sequence(u64)
);
integer_id!(
    /// A Keel node (host), unique in the cluster.
    NodeId(u64)
);
integer_id!(
    /// Chosen by the sender of a `ReadRequest`, echoed in the `ReadResponse`
    /// (or `Nack`) that answers it, so several reads can be outstanding.
    ReadTag(u64)
);
integer_id!(
    /// Index of a resync region (a bit of the write-intent bitmap).
    RegionIndex(u64)
);

impl Sequence {
    /// The sequence number that follows this one, or `None` on overflow.
    pub fn next(self) -> Option<Sequence> {
        self.0.checked_add(1).map(Sequence)
    }
}

/// A range of the volume in **bytes** (not blocks): byte offset and byte
/// length.
///
/// Bytes rather than blocks because copies may use different block sizes
/// (heterogeneous replication): a byte range means the same thing on every
/// copy, and each receiver checks alignment against its own block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ByteRange {
    /// First byte of the range.
    pub offset: u64,
    /// Number of bytes.
    pub len: u32,
}

impl ByteRange {
    /// The empty range at offset 0, used by frames that address no data.
    pub const NONE: ByteRange = ByteRange { offset: 0, len: 0 };

    /// A range of `len` bytes starting at `offset`.
    pub fn new(offset: u64, len: u32) -> Self {
        Self { offset, len }
    }

    /// One past the last byte, or `None` if the range runs past `u64::MAX`
    /// (such a range is malformed on the wire).
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.len))
    }

    /// Whether both offset and length are zero.
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}
