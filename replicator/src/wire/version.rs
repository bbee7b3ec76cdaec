//! Protocol versions and their negotiation.

use std::fmt;

/// A protocol version. Frames of the same major version share the frame
/// header layout; a higher minor version only adds things an older peer can
/// skip (see `docs/replication-protocol.md`, "Versioning").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Incompatible changes bump this; peers must agree on it.
    pub major: u8,
    /// Compatible additions bump this.
    pub minor: u8,
}

impl Version {
    /// 1.0: the first version.
    pub const V1_0: Version = Version::new(1, 0);
    /// 1.1: adds a `Write`'s position (header extension) and the standing
    /// in an `Ack` (appended payload).
    pub const V1_1: Version = Version::new(1, 1);
    /// 1.2: adds the `Ack` that reports frames applied but not yet durable
    /// (flag `ACK_APPLIED`).
    pub const V1_2: Version = Version::new(1, 2);
    /// 1.3: adds the epoch an `EpochChange`'s membership was introduced in.
    pub const V1_3: Version = Version::new(1, 3);
    /// 1.4: adds the previous membership an `EpochChange` carries while a
    /// membership change has not reached enough old copies.
    pub const V1_4: Version = Version::new(1, 4);

    /// Builds a version.
    pub const fn new(major: u8, minor: u8) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version this implementation speaks: the highest it can encode and
/// the one whose rules its decoder applies strictly.
pub const PROTOCOL_VERSION: Version = Version::V1_4;

/// The only major version whose frame layout this implementation knows.
pub(crate) const SUPPORTED_MAJOR: u8 = PROTOCOL_VERSION.major;

/// An inclusive range of versions a node is willing to speak, advertised in
/// `Hello`. Versions order by (major, minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    min: Version,
    max: Version,
}

impl VersionRange {
    /// Everything this implementation can speak: 1.0 up to
    /// [`PROTOCOL_VERSION`].
    pub const SUPPORTED: VersionRange = VersionRange {
        min: Version::new(SUPPORTED_MAJOR, 0),
        max: PROTOCOL_VERSION,
    };

    /// The range `min..=max`, or `None` if `min > max`.
    pub fn new(min: Version, max: Version) -> Option<Self> {
        (min <= max).then_some(Self { min, max })
    }

    /// Lowest version in the range.
    pub fn min(&self) -> Version {
        self.min
    }

    /// Highest version in the range.
    pub fn max(&self) -> Version {
        self.max
    }

    /// Whether `version` lies in the range.
    pub fn contains(&self, version: Version) -> bool {
        self.min <= version && version <= self.max
    }

    /// Whether every version of `self` lies in `outer`.
    pub fn is_within(&self, outer: &VersionRange) -> bool {
        outer.contains(self.min) && outer.contains(self.max)
    }

    /// The highest version both ranges contain, if any: what the acceptor
    /// picks during the handshake.
    pub fn highest_common(&self, other: &VersionRange) -> Option<Version> {
        let candidate = self.max.min(other.max);
        (candidate >= self.min && candidate >= other.min).then_some(candidate)
    }
}

impl fmt::Display for VersionRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}
