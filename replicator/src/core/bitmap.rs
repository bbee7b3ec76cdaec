//! The write-intent bitmap: which regions some copy may lack.
//!
//! A region's bit is set before any write to it is issued (locally or to a
//! replica) and stays set while a write to it is in flight or while some
//! replica is known to lack it ("dirty" for that replica). Only the union is
//! persisted: after a primary crash it cannot know which replica lacked what,
//! so every set region is resynced to every replica.
//!
//! Clearing is lazy (a stale set bit costs only a redundant region copy);
//! setting is strict: a write may issue only once its region's bit is in a
//! persisted snapshot, and not in the middle of persisting a snapshot that
//! would clear it.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::ids::IoToken;
use crate::wire::{NodeId, RegionIndex};

/// In-memory write-intent state of a primary plus what is known durable.
#[derive(Debug, Clone, Default)]
pub struct WriteIntentBitmap {
    /// Writes issued and not yet settled on every copy, per region.
    in_flight: BTreeMap<RegionIndex, u32>,
    /// Regions each replica may lack.
    dirty: BTreeMap<NodeId, BTreeSet<RegionIndex>>,
    /// Regions writes are waiting to issue in.
    requested: BTreeSet<RegionIndex>,
    /// The last durable snapshot.
    persisted: BTreeSet<RegionIndex>,
    /// A snapshot being written, if any.
    persisting: Option<(IoToken, BTreeSet<RegionIndex>)>,
}

impl WriteIntentBitmap {
    /// A bitmap whose durable content is `persisted` (from the record).
    pub fn new(persisted: impl IntoIterator<Item = RegionIndex>) -> Self {
        Self {
            persisted: persisted.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Whether a write to `region` may issue now.
    pub fn may_issue(&self, region: RegionIndex) -> bool {
        let in_snapshot = match &self.persisting {
            Some((_, snapshot)) => snapshot.contains(&region),
            None => true,
        };
        self.persisted.contains(&region) && in_snapshot
    }

    /// A write waits for `region`'s bit to be persisted.
    pub fn request(&mut self, region: RegionIndex) {
        self.requested.insert(region);
    }

    /// A write to `region` was issued.
    pub fn begin_write(&mut self, region: RegionIndex) {
        debug_assert!(
            self.may_issue(region),
            "write issued before its intent bit was durable"
        );
        *self.in_flight.entry(region).or_insert(0) += 1;
        self.requested.remove(&region);
    }

    /// A write to `region` is settled: durable on every copy, or marked
    /// dirty for each copy that may lack it.
    pub fn end_write(&mut self, region: RegionIndex) {
        if let Some(count) = self.in_flight.get_mut(&region) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.in_flight.remove(&region);
            }
        } else {
            debug_assert!(false, "end_write without begin_write");
        }
    }

    /// `replica` may lack `region`.
    pub fn mark_dirty(&mut self, replica: NodeId, region: RegionIndex) {
        self.dirty.entry(replica).or_default().insert(region);
    }

    /// `replica` has `region` durably.
    pub fn clear_dirty(&mut self, replica: NodeId, region: RegionIndex) {
        if let Some(set) = self.dirty.get_mut(&replica) {
            set.remove(&region);
        }
    }

    /// Regions `replica` may lack.
    pub fn dirty_of(&self, replica: NodeId) -> impl Iterator<Item = RegionIndex> + '_ {
        self.dirty.get(&replica).into_iter().flatten().copied()
    }

    /// Whether `replica` may lack any region.
    pub fn has_dirty(&self, replica: NodeId) -> bool {
        self.dirty.get(&replica).is_some_and(|s| !s.is_empty())
    }

    /// Whether every region `replica` may lack is in the durable snapshot,
    /// so a crash now would still resync it.
    pub fn dirty_is_durable(&self, replica: NodeId) -> bool {
        self.dirty_of(replica).all(|r| self.persisted.contains(&r))
    }

    /// Whether any write is in flight.
    pub fn writes_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// The set the bitmap should hold durably now.
    fn wanted(&self) -> BTreeSet<RegionIndex> {
        let mut wanted: BTreeSet<RegionIndex> = self.in_flight.keys().copied().collect();
        wanted.extend(self.requested.iter().copied());
        for set in self.dirty.values() {
            wanted.extend(set.iter().copied());
        }
        wanted
    }

    /// Whether a new snapshot should be written: some wanted bit is not
    /// durable, or (lazily, only when nothing is in flight) some durable bit
    /// could be cleared.
    pub fn needs_persist(&self) -> bool {
        if self.persisting.is_some() {
            return false;
        }
        let wanted = self.wanted();
        !wanted.is_subset(&self.persisted)
            || (self.in_flight.is_empty() && wanted.len() < self.persisted.len())
    }

    /// Whether a snapshot is being written.
    pub fn is_persisting(&self) -> bool {
        self.persisting.is_some()
    }

    /// Starts writing a snapshot under `token`; returns its regions.
    pub fn start_persist(&mut self, token: IoToken) -> Vec<RegionIndex> {
        debug_assert!(self.persisting.is_none());
        let snapshot = self.wanted();
        let regions = snapshot.iter().copied().collect();
        self.persisting = Some((token, snapshot));
        regions
    }

    /// The snapshot under `token` is durable. Returns false for another token.
    pub fn finish_persist(&mut self, token: IoToken) -> bool {
        match self.persisting.take() {
            Some((t, snapshot)) if t == token => {
                self.persisted = snapshot;
                true
            }
            other => {
                self.persisting = other;
                false
            }
        }
    }

    /// The durable snapshot.
    pub fn persisted(&self) -> impl Iterator<Item = RegionIndex> + '_ {
        self.persisted.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_waits_for_its_bit_and_a_clearing_snapshot_blocks_it() {
        let r = RegionIndex(3);
        let mut bitmap = WriteIntentBitmap::new([]);
        assert!(!bitmap.may_issue(r));
        bitmap.request(r);
        assert!(bitmap.needs_persist());
        let regions = bitmap.start_persist(IoToken(1));
        assert_eq!(regions, vec![r]);
        assert!(!bitmap.may_issue(r));
        assert!(bitmap.finish_persist(IoToken(1)));
        assert!(bitmap.may_issue(r));
        bitmap.begin_write(r);
        bitmap.end_write(r);
        // Idle and nothing dirty: the bit may be cleared, and while the
        // clearing snapshot is written a new write must wait.
        assert!(bitmap.needs_persist());
        bitmap.start_persist(IoToken(2));
        assert!(!bitmap.may_issue(r));
        assert!(bitmap.finish_persist(IoToken(2)));
        assert_eq!(bitmap.persisted().count(), 0);
    }

    #[test]
    fn dirty_bits_survive_the_end_of_writes() {
        let r = RegionIndex(0);
        let mut bitmap = WriteIntentBitmap::new([r]);
        bitmap.begin_write(r);
        bitmap.mark_dirty(NodeId(2), r);
        bitmap.end_write(r);
        assert!(!bitmap.needs_persist());
        assert!(bitmap.dirty_is_durable(NodeId(2)));
        bitmap.clear_dirty(NodeId(2), r);
        assert!(bitmap.needs_persist());
    }
}
