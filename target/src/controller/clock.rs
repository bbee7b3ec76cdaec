//! Time as a value: the controller logic never reads a clock.
//!
//! The socket layer passes a [`Timestamp`] with every call that can move
//! time forward (command arrival, [`crate::controller::Target::tick`]), so
//! keep-alive enforcement is deterministic and testable with a fake clock.

use std::time::Duration;

/// A point on a monotonic clock, measured from an origin the caller picks
/// (for example the daemon's start). Only differences are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(Duration);

impl Timestamp {
    /// The origin.
    pub const ZERO: Self = Self(Duration::ZERO);

    /// `elapsed` after the origin.
    pub const fn from_duration(elapsed: Duration) -> Self {
        Self(elapsed)
    }

    /// `millis` milliseconds after the origin.
    pub const fn from_millis(millis: u64) -> Self {
        Self(Duration::from_millis(millis))
    }

    /// Time since the origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// Time from `earlier` to `self`, zero when `earlier` is later (a clock
    /// that went backwards must not expire anything).
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_saturate() {
        let early = Timestamp::from_millis(10);
        let late = Timestamp::from_millis(25);
        assert_eq!(late.saturating_since(early), Duration::from_millis(15));
        assert_eq!(early.saturating_since(late), Duration::ZERO);
        assert_eq!(late.since_origin(), Duration::from_millis(25));
    }
}
