//! The replication logic as deterministic, sans-IO state machines.
//!
//! Nothing in here touches a socket, a clock, a thread or a random number
//! generator. Every state machine is driven by [`Event`]s, each passed in with
//! the current logical [`Time`], and answers with [`Action`]s that the caller
//! (the reactor in production, the simulator in tests) carries out and whose
//! results come back as further events. That makes every behaviour
//! reproducible from the sequence of events alone, which is what lets the
//! deterministic simulation (`core::sim`, tests only) explore thousands of
//! crash, partition and promotion schedules per second and replay any failing
//! one from its seed.
//!
//! - [`Node`]: one copy of a volume's stream; durable metadata plus a role,
//!   either [`Replica`] or [`Primary`]. Every node starts as a replica; a
//!   promotion turns it into a primary, a newer epoch turns it back.
//! - [`Primary`]: sequencing, ordering, quorum, windows, the write-intent
//!   bitmap, resync, elections (epoch changes).
//! - [`Replica`]: in-order durable apply, acknowledgements, epoch fencing.
//! - [`WriteIntentBitmap`]: which regions some copy may lack.
//!
//! See `docs/replication-design.md` for the design, the invariants and how
//! the simulation checks them.

mod bitmap;
mod frame;
mod geometry;
mod ids;
mod io;
mod membership;
mod node;
mod primary;
mod recent;
mod record;
mod replica;

#[cfg(test)]
mod sim;

pub use bitmap::WriteIntentBitmap;
pub use frame::Frame;
pub use geometry::Geometry;
pub use ids::{HostOpId, IoToken, LinkId, Position, Time};
pub use io::{Action, Event, HostStatus, IoError, LinkDirection};
pub use membership::{Member, Membership, Previous};
pub use node::Node;
pub use primary::{
    Primary, PrimaryLimits, Promotion, ReconfigureRefusal, ReplicaState, ReplicaView, ScrubStatus,
};
pub use recent::{RecentWrites, MAX_RECENT_WRITES};
pub use record::{DurableRecord, Standing};
pub use replica::{Replica, ReplicaLimits};
