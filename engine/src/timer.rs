//! Per-shard timers (keep-alive, timeouts, retries).
//!
//! A binary heap of deadlines. Cancelling only forgets the timer's tag; its
//! heap entry is skipped when it comes up. The number of live timers is
//! bounded so a runaway caller gets an error, not an ever-growing heap.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("too many timers ({0} live)")]
pub struct TooManyTimers(pub usize);

pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, u64>,
    next_id: u64,
    limit: usize,
}

impl Timers {
    pub fn new(limit: usize) -> Timers {
        Timers {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next_id: 0,
            limit,
        }
    }

    /// Fires `tag` at `deadline`.
    pub fn add(&mut self, deadline: Instant, tag: u64) -> Result<TimerId, TooManyTimers> {
        if self.live.len() >= self.limit {
            return Err(TooManyTimers(self.live.len()));
        }
        // Cancelled entries linger in the heap; rebuild before they dominate.
        if self.heap.len() > 2 * self.limit {
            let live = &self.live;
            self.heap.retain(|Reverse((_, id))| live.contains_key(id));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.heap.push(Reverse((deadline, id)));
        self.live.insert(id, tag);
        Ok(TimerId(id))
    }

    /// Returns whether the timer was still pending.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        self.live.remove(&id.0).is_some()
    }

    /// Earliest pending deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id))) = self.heap.peek() {
            if self.live.contains_key(id) {
                return Some(*deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Time until the next deadline, if any (zero if already due).
    pub fn time_to_next(&mut self, now: Instant) -> Option<Duration> {
        self.next_deadline()
            .map(|d| d.saturating_duration_since(now))
    }

    /// Pops one due timer's tag.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        while let Some(Reverse((deadline, id))) = self.heap.peek().copied() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if let Some(tag) = self.live.remove(&id) {
                return Some(tag);
            }
        }
        None
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_cancel_works() {
        let t0 = Instant::now();
        let mut timers = Timers::new(8);
        timers.add(t0 + Duration::from_millis(30), 3).unwrap();
        let b = timers.add(t0 + Duration::from_millis(20), 2).unwrap();
        timers.add(t0 + Duration::from_millis(10), 1).unwrap();
        assert!(timers.cancel(b));
        assert!(!timers.cancel(b));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.time_to_next(t0), Some(Duration::from_millis(10)));
        let later = t0 + Duration::from_millis(40);
        assert_eq!(timers.pop_due(later), Some(1));
        assert_eq!(timers.pop_due(later), Some(3));
        assert_eq!(timers.pop_due(later), None);
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn the_limit_is_enforced_and_cancelling_frees_room() {
        let t0 = Instant::now();
        let mut timers = Timers::new(2);
        let a = timers.add(t0, 0).unwrap();
        timers.add(t0, 1).unwrap();
        assert_eq!(timers.add(t0, 2), Err(TooManyTimers(2)));
        timers.cancel(a);
        // Churn: add/cancel many times; the heap must not grow without bound.
        for i in 0..100 {
            let id = timers.add(t0, i).unwrap();
            timers.cancel(id);
        }
        assert!(timers.heap.len() <= 5 + 1);
    }
}
