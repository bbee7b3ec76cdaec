//! The two fields wire 1.1 adds for the replication state machines
//! (`crate::core`): a `Write`'s position in its stream's total order, and
//! the standing a copy reports in the `Ack` of an `EpochChange`.
//!
//! Both are plain values here; their meaning is in
//! `docs/replication-design.md` ("Election", "Wire gaps").

use crate::wire::bytes::{Reader, Required, Writer};
use crate::wire::error::{DecodeError, EncodeError};
use crate::wire::ids::Epoch;
use crate::wire::tolerance::Tolerance;

/// Bytes of a [`WritePosition`] on the wire: epoch (8) | index (8).
pub const WRITE_POSITION_LEN: usize = 16;

/// Bytes of a [`StandingReport`] on the wire: epoch (8) | synced (8) |
/// applied epoch (8) | applied index (8) | flags (1) | reserved (7).
pub const STANDING_LEN: usize = 40;

/// `StandingReport` flags: bit 0, the copy is consistent; bit 1 (from 1.4),
/// the copy is amnesiac. The other bits are reserved.
const STANDING_CONSISTENT: u8 = 0x01;
const STANDING_AMNESIAC: u8 = 0x02;

/// Where a write stands in its stream's total order: the epoch of the
/// primary that sequenced it and its index in that epoch. Carried by a 1.1
/// `Write` in its header extension (header bytes 64..80).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct WritePosition {
    /// Epoch of the primary that assigned the position.
    pub epoch: Epoch,
    /// Index within that epoch.
    pub index: u64,
}

impl WritePosition {
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.epoch.0)?;
        w.u64(self.index)
    }

    pub(crate) fn read(r: &mut Reader<'_>, field: &'static str) -> Result<Self, DecodeError> {
        Ok(Self {
            epoch: Epoch(r.u64().field(field)?),
            index: r.u64().field(field)?,
        })
    }
}

/// How up to date a copy is, reported in the `Ack` of an `EpochChange`
/// (1.1: the `Ack` payload, empty otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StandingReport {
    /// The epoch the copy had accepted.
    pub epoch: Epoch,
    /// The epoch whose primary last brought the copy to consistency.
    pub synced: Epoch,
    /// If `consistent`, the copy holds every acknowledged write up to here;
    /// otherwise an upper bound of what it may hold.
    pub applied: WritePosition,
    /// False while a resync is in progress (or the copy was never synced).
    pub consistent: bool,
    /// From 1.4: the copy restarted after a power loss and has not been
    /// brought consistent since; `applied` may understate what it
    /// acknowledged.
    pub amnesiac: bool,
}

impl StandingReport {
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.epoch.0)?;
        w.u64(self.synced.0)?;
        self.applied.write(w)?;
        let mut flags = 0;
        if self.consistent {
            flags |= STANDING_CONSISTENT;
        }
        if self.amnesiac {
            flags |= STANDING_AMNESIAC;
        }
        w.u8(flags)?;
        w.zeros::<7>()
    }

    /// `with_amnesia`: the frame is 1.4 or newer, where flag bit 1 exists.
    pub(crate) fn read(
        r: &mut Reader<'_>,
        tolerance: Tolerance,
        with_amnesia: bool,
    ) -> Result<Self, DecodeError> {
        let epoch = Epoch(r.u64().field("Ack.standing.epoch")?);
        let synced = Epoch(r.u64().field("Ack.standing.synced")?);
        let applied = WritePosition::read(r, "Ack.standing.applied")?;
        let flags = r.u8().field("Ack.standing.flags")?;
        let known = if with_amnesia {
            STANDING_CONSISTENT | STANDING_AMNESIAC
        } else {
            STANDING_CONSISTENT
        };
        tolerance.reserved_zero(flags & !known == 0, "Ack.standing.flags")?;
        let reserved = r.array::<7>().field("Ack.standing.reserved")?;
        tolerance.reserved_zero(reserved == [0; 7], "Ack.standing.reserved")?;
        Ok(Self {
            epoch,
            synced,
            applied,
            consistent: flags & STANDING_CONSISTENT != 0,
            amnesiac: flags & STANDING_AMNESIAC != 0,
        })
    }
}
