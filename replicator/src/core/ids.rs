//! Small identifiers the state machines exchange with their driver.

use crate::wire::Epoch;

/// Logical time, in nanoseconds since an arbitrary origin. The driver passes
/// it in with every event; the state machines never read a clock.
pub type Time = u64;

macro_rules! token_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);
    };
}

token_id!(
    /// A host command (write or flush), chosen by the front end and echoed
    /// in its completion.
    HostOpId
);
token_id!(
    /// One connection between two nodes. A connection that dies is never
    /// reused: the next one gets a new id, so frames of a dead connection
    /// still in the caller's queues are recognised and dropped.
    LinkId
);
token_id!(
    /// One local I/O (write, read, persist), chosen by the state machine and
    /// echoed in its completion.
    IoToken
);

/// Where a write stands in its stream's total order: the epoch of the
/// primary that sequenced it, then its index in that epoch (from 1).
///
/// Unlike the per-link [`Sequence`](crate::wire::Sequence), positions never
/// restart within an epoch, so a copy can say "I hold every acknowledged
/// write up to P" and copies can be compared when choosing a new primary.
/// Ordering is lexicographic: every position of a later epoch is greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Epoch of the primary that assigned the position.
    pub epoch: Epoch,
    /// Index within that epoch; 0 means "nothing of this epoch".
    pub index: u64,
}

impl Position {
    /// Before any write.
    pub const ZERO: Position = Position {
        epoch: Epoch(0),
        index: 0,
    };

    /// What the primary of `epoch` holds: every acknowledged write of that
    /// epoch (and, through its election, of every earlier one).
    pub const fn all_of(epoch: Epoch) -> Position {
        Position {
            epoch,
            index: u64::MAX,
        }
    }
}
