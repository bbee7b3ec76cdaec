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
//! would clear it. Since setting a bit costs a persist in a write's path,
//! a region stays set for a while (`hold`) after its last write settled, as
//! Linux md's bitmap does, and bits are cleared at most once per `hold`
//! while writes are in flight: a busy region pays for its bit once.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::ids::{IoToken, Time};
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
    /// When each region's last write settled.
    recent: BTreeMap<RegionIndex, Time>,
    /// How long a region stays set after its last write settled.
    hold: Time,
    /// The time of the last event.
    now: Time,
    /// When the last snapshot that cleared bits started.
    last_clear: Time,
    /// Some wanted region may be missing from the snapshot that will be
    /// durable next. Regions in flight or recently written never are (a
    /// write issues only into the snapshot), so only requests and dirty
    /// marks can set it; it spares building the wanted set on every event.
    unpersisted: bool,
    /// No check for bits to clear before this time (a check builds the
    /// whole wanted set).
    next_clear_check: Time,
}

impl WriteIntentBitmap {
    /// A bitmap whose durable content is `persisted` (from the record),
    /// keeping regions set for `hold` after their last write.
    pub fn new(persisted: impl IntoIterator<Item = RegionIndex>, hold: Time) -> Self {
        Self {
            persisted: persisted.into_iter().collect(),
            hold,
            ..Self::default()
        }
    }

    /// Time passed: `now` is the time of the event being handled.
    pub fn advance(&mut self, now: Time) {
        self.now = self.now.max(now);
    }

    /// Whether nothing is set, durably or about to be.
    pub fn is_clear(&self) -> bool {
        self.persisted.is_empty() && self.persisting.is_none() && self.wanted().is_empty()
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
        self.note_wanted(region);
    }

    /// `region` is wanted: flag it unless the next durable snapshot has it.
    fn note_wanted(&mut self, region: RegionIndex) {
        let covered = match &self.persisting {
            Some((_, snapshot)) => snapshot.contains(&region),
            None => self.persisted.contains(&region),
        };
        self.unpersisted |= !covered;
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
        self.recent.insert(region, self.now);
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
        self.note_wanted(region);
    }

    /// `replica` has `region` durably.
    pub fn clear_dirty(&mut self, replica: NodeId, region: RegionIndex) {
        if let Some(set) = self.dirty.get_mut(&replica) {
            set.remove(&region);
        }
    }

    /// `replica` is no longer a copy: nothing is tracked for it.
    pub fn forget(&mut self, replica: NodeId) {
        self.dirty.remove(&replica);
    }

    /// Regions `replica` may lack.
    pub fn dirty_of(&self, replica: NodeId) -> impl Iterator<Item = RegionIndex> + '_ {
        self.dirty.get(&replica).into_iter().flatten().copied()
    }

    /// Whether `replica` may lack `region`.
    pub fn is_dirty(&self, replica: NodeId, region: RegionIndex) -> bool {
        self.dirty
            .get(&replica)
            .is_some_and(|s| s.contains(&region))
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
        wanted.extend(
            self.recent
                .iter()
                .filter(|(_, at)| self.now.saturating_sub(**at) < self.hold)
                .map(|(region, _)| *region),
        );
        for set in self.dirty.values() {
            wanted.extend(set.iter().copied());
        }
        wanted
    }

    /// Whether a new snapshot should be written: some wanted bit is not
    /// durable, or (lazily: when nothing is in flight, or at most once per
    /// `hold`) some durable bit could be cleared.
    pub fn needs_persist(&mut self) -> bool {
        if self.persisting.is_some() {
            return false;
        }
        debug_assert!(
            self.unpersisted || self.wanted().is_subset(&self.persisted),
            "a wanted region missing from the durable snapshot went unnoticed"
        );
        if self.unpersisted {
            return true;
        }
        let may_clear =
            self.in_flight.is_empty() || self.now.saturating_sub(self.last_clear) >= self.hold;
        if !may_clear || self.now < self.next_clear_check {
            return false;
        }
        if self.wanted().len() < self.persisted.len() {
            return true;
        }
        self.next_clear_check = self.now.saturating_add(self.hold / 8);
        false
    }

    /// Whether a snapshot is being written.
    pub fn is_persisting(&self) -> bool {
        self.persisting.is_some()
    }

    /// Starts writing a snapshot under `token`; returns its regions.
    pub fn start_persist(&mut self, token: IoToken) -> Vec<RegionIndex> {
        debug_assert!(self.persisting.is_none());
        let (now, hold) = (self.now, self.hold);
        self.recent.retain(|_, at| now.saturating_sub(*at) < hold);
        let snapshot = self.wanted();
        if !self.persisted.is_subset(&snapshot) {
            self.last_clear = now;
        }
        self.unpersisted = false;
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
        let mut bitmap = WriteIntentBitmap::new([], 0);
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
        let mut bitmap = WriteIntentBitmap::new([r], 0);
        bitmap.begin_write(r);
        bitmap.mark_dirty(NodeId(2), r);
        bitmap.end_write(r);
        assert!(!bitmap.needs_persist());
        assert!(bitmap.dirty_is_durable(NodeId(2)));
        bitmap.clear_dirty(NodeId(2), r);
        assert!(bitmap.needs_persist());
    }

    #[test]
    fn a_region_stays_set_for_its_hold_after_the_last_write() {
        let r = RegionIndex(1);
        let mut bitmap = WriteIntentBitmap::new([r], 100);
        bitmap.advance(10);
        bitmap.begin_write(r);
        bitmap.end_write(r);
        bitmap.advance(109);
        assert!(!bitmap.needs_persist(), "cleared before its hold ended");
        assert!(bitmap.may_issue(r), "a write now needs no persist");
        // Checked again at most an eighth of the hold later.
        bitmap.advance(110);
        assert!(!bitmap.needs_persist());
        bitmap.advance(109 + 100 / 8);
        assert!(bitmap.needs_persist());
        assert!(bitmap.start_persist(IoToken(1)).is_empty());
        assert!(bitmap.finish_persist(IoToken(1)));
        assert!(bitmap.is_clear());
    }
}
