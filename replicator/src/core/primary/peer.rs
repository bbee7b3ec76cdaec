//! What the primary knows about one replica: its link, the frames in flight
//! on it (the window), and the frames waiting for room.

use std::collections::{BTreeSet, VecDeque};

use crate::core::frame::Frame;
use crate::core::ids::{LinkId, Time};
use crate::wire::{Epoch, RegionIndex, ReplicationMode, Sequence};

/// Why a sequenced frame was sent; decides what its acknowledgement means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The `EpochChange` opening the link, in `epoch`.
    EpochChange { epoch: Epoch },
    /// A later `EpochChange` on the link: a membership change to `epoch`.
    Reconfigure { epoch: Epoch },
    /// A host write (key into the primary's operations).
    HostWrite { key: u64, region: RegionIndex },
    /// `Resync(Begin)`.
    ResyncBegin,
    /// The data of a region copy.
    ResyncData,
    /// `Resync(Region)`: its ack makes the region durable on the replica,
    /// together with the host writes (`covers`) the copy included.
    ResyncRegion {
        region: RegionIndex,
        covers: Vec<u64>,
    },
    /// `Resync(End)`.
    ResyncEnd,
    /// A `Flush` for host flushes: its durable ack covers every frame
    /// before it.
    Flush,
    /// A `ReadRequest` (a degraded read; its answer is a `ReadResponse`).
    Read,
}

/// Where a link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkPhase {
    /// `EpochChange` sent, not yet acknowledged.
    Handshake,
    /// Accepted the epoch; waiting to start its resync (the primary must
    /// serve, and the regions to copy must be durable in the bitmap).
    Accepted,
    /// `Begin` sent: receives host writes and region copies.
    Resyncing,
    /// `End` acknowledged: in sync, receives host writes.
    Streaming,
}

#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) seq: Sequence,
    pub(crate) purpose: Purpose,
    pub(crate) bytes: u64,
    pub(crate) at: Time,
}

#[derive(Debug, Clone)]
pub(crate) struct Queued<P> {
    pub(crate) frame: Frame<P>,
    /// The epoch it was queued in: a membership change queues its
    /// `EpochChange` behind frames still of the old epoch.
    pub(crate) epoch: Epoch,
    pub(crate) purpose: Purpose,
    pub(crate) bytes: u64,
}

/// Resync progress on one link.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResyncProgress {
    /// Regions whose copy has started and is not yet acknowledged.
    pub(crate) started: BTreeSet<RegionIndex>,
    /// Started regions dirtied again meanwhile: their ack must not clear
    /// the dirty bit, the copy is redone.
    pub(crate) redo: BTreeSet<RegionIndex>,
    /// `End` sent.
    pub(crate) end_sent: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Link<P> {
    pub(crate) id: LinkId,
    pub(crate) phase: LinkPhase,
    pub(crate) next_seq: Sequence,
    /// Highest sequence the replica reported applied (not yet durable).
    pub(crate) applied: Sequence,
    /// Sent and not yet acknowledged durable, oldest first.
    pub(crate) in_flight: VecDeque<Sent>,
    pub(crate) queued: VecDeque<Queued<P>>,
    pub(crate) resync: ResyncProgress,
    /// When the newest frame or heartbeat the replica answered on this
    /// link was sent (`lease`).
    pub(crate) answered: Option<Time>,
}

impl<P> Link<P> {
    pub(crate) fn new(id: LinkId) -> Self {
        Self {
            id,
            phase: LinkPhase::Handshake,
            next_seq: Sequence(1),
            applied: Sequence(0),
            in_flight: VecDeque::new(),
            queued: VecDeque::new(),
            resync: ResyncProgress::default(),
            answered: None,
        }
    }

    /// Takes the next sequence number of the link.
    pub(crate) fn take_seq(&mut self) -> Sequence {
        let seq = self.next_seq;
        self.next_seq = seq.next().unwrap_or(seq);
        seq
    }

    /// Whether host writes go to this replica now (after `Begin`, so the
    /// replica counts itself inconsistent before it sees them if it lags).
    pub(crate) fn takes_writes(&self) -> bool {
        matches!(self.phase, LinkPhase::Resyncing | LinkPhase::Streaming)
    }

    /// Index in `in_flight` of the first frame not yet applied.
    fn first_unapplied(&self) -> usize {
        self.in_flight.partition_point(|s| s.seq <= self.applied)
    }

    /// Frames sent and not yet applied (the window's measure).
    pub(crate) fn unapplied_frames(&self) -> usize {
        self.in_flight.len() - self.first_unapplied()
    }

    /// Bytes sent or queued and not yet applied: how far the replica lags.
    pub(crate) fn unacked_bytes(&self) -> u64 {
        let sent: u64 = self
            .in_flight
            .range(self.first_unapplied()..)
            .map(|s| s.bytes)
            .sum();
        let queued: u64 = self.queued.iter().map(|q| q.bytes).sum();
        sent.saturating_add(queued)
    }

    /// When the oldest frame not yet applied was sent.
    pub(crate) fn oldest_unacked(&self) -> Option<Time> {
        self.in_flight.get(self.first_unapplied()).map(|s| s.at)
    }

    /// The replica answered every frame up to `through`: the lease counts
    /// from when the newest of them was sent.
    pub(crate) fn answered_through(&mut self, through: Sequence) {
        let upto = self.in_flight.partition_point(|s| s.seq <= through);
        if let Some(sent) = upto.checked_sub(1).and_then(|i| self.in_flight.get(i)) {
            self.answered = self.answered.max(Some(sent.at));
        }
    }

    /// Host writes sent with a sequence in `(self.applied, through]`.
    pub(crate) fn newly_applied(&self, through: Sequence) -> impl Iterator<Item = u64> + '_ {
        let from = self.first_unapplied();
        self.in_flight
            .range(from..)
            .take_while(move |s| s.seq <= through)
            .filter_map(|s| match s.purpose {
                Purpose::HostWrite { key, .. } => Some(key),
                _ => None,
            })
    }

    /// Every purpose not yet acknowledged, sent or queued.
    pub(crate) fn unacked_purposes(&self) -> impl Iterator<Item = &Purpose> {
        self.in_flight
            .iter()
            .map(|s| &s.purpose)
            .chain(self.queued.iter().map(|q| &q.purpose))
    }
}

/// One replica of the volume as the primary sees it.
#[derive(Debug, Clone)]
pub(crate) struct Peer<P> {
    pub(crate) mode: ReplicationMode,
    pub(crate) link: Option<Link<P>>,
    /// Removed by a membership change in progress: it gets the new epoch
    /// (so it can no longer be elected under the old membership) and
    /// nothing else, and is forgotten once it took it.
    pub(crate) leaving: bool,
}
