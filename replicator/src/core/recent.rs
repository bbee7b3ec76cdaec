//! The last writes a replica applied, by position and region, kept in
//! memory only. A replica promoted to primary uses them to tell which
//! regions a copy that was behind it at the election may lack (the writes
//! between that copy's standing and its own), so that a host flush waits
//! for those regions' copies instead of a whole resync
//! (`primary::inheritance`).

use std::collections::{BTreeSet, VecDeque};

use crate::core::ids::Position;
use crate::wire::RegionIndex;

/// Writes remembered at most (a few seconds of a busy stream; 16 bytes
/// each).
pub const MAX_RECENT_WRITES: usize = 4096;

/// A bounded log of applied writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentWrites {
    entries: VecDeque<(Position, RegionIndex)>,
    /// No write at a position above this is missing from `entries`: those
    /// applied before the log started, and those it dropped, are at or
    /// below it.
    forgotten: Position,
}

impl RecentWrites {
    /// A log that knows nothing of the writes up to `applied` (the copy's
    /// standing when the log starts).
    pub fn starting_at(applied: Position) -> RecentWrites {
        RecentWrites {
            entries: VecDeque::new(),
            forgotten: applied,
        }
    }

    /// The copy applied a write at `position` in `region` (a region copy's
    /// data counts as a write at the last position it includes).
    pub fn record(&mut self, position: Position, region: RegionIndex) {
        if self.entries.len() >= MAX_RECENT_WRITES {
            if let Some((dropped, _)) = self.entries.pop_front() {
                self.forgotten = self.forgotten.max(dropped);
            }
        }
        self.entries.push_back((position, region));
    }

    /// The regions of every write above `position` this copy applied, if
    /// the log still holds them all.
    pub fn regions_after(&self, position: Position) -> Option<BTreeSet<RegionIndex>> {
        (self.forgotten <= position).then(|| {
            self.entries
                .iter()
                .filter(|(p, _)| *p > position)
                .map(|(_, r)| *r)
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Epoch;

    fn at(index: u64) -> Position {
        Position {
            epoch: Epoch(3),
            index,
        }
    }

    #[test]
    fn it_names_the_regions_after_a_position_while_it_holds_them_all() {
        let mut log = RecentWrites::starting_at(at(10));
        assert_eq!(log.regions_after(at(9)), None, "writes up to 10 unknown");
        assert_eq!(log.regions_after(at(10)), Some(BTreeSet::new()));
        log.record(at(11), RegionIndex(4));
        log.record(at(12), RegionIndex(2));
        log.record(at(13), RegionIndex(4));
        let after = |i| {
            log.regions_after(at(i))
                .map(|s| s.into_iter().collect::<Vec<_>>())
        };
        assert_eq!(after(10), Some(vec![RegionIndex(2), RegionIndex(4)]));
        assert_eq!(after(12), Some(vec![RegionIndex(4)]));
        assert_eq!(after(13), Some(vec![]));
    }

    #[test]
    fn a_full_log_forgets_its_oldest_writes() {
        let mut log = RecentWrites::starting_at(Position::ZERO);
        for i in 1..=MAX_RECENT_WRITES as u64 + 2 {
            log.record(at(i), RegionIndex(i % 7));
        }
        assert_eq!(log.regions_after(at(1)), None);
        assert!(log.regions_after(at(2)).is_some());
    }
}
