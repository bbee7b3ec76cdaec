//! A simulated network of TCP-like connections: each direction is FIFO and
//! never reorders or loses a frame by itself; faults reset whole
//! connections (as a dead TCP connection does), partitions block pairs of
//! nodes for a while, and a rare "duplicate" fault repeats a frame (which
//! the receiver must detect). Frames of different connections interleave
//! freely.

use std::collections::{BTreeMap, VecDeque};

use super::disk::Payload;
use crate::core::{Frame, LinkId, Time};
use crate::wire::{Epoch, NodeId};

pub(crate) struct Connection {
    pub(crate) initiator: NodeId,
    pub(crate) acceptor: NodeId,
    /// Frames in flight toward the acceptor and toward the initiator.
    pub(crate) toward_acceptor: VecDeque<(Epoch, Frame<Payload>)>,
    pub(crate) toward_initiator: VecDeque<(Epoch, Frame<Payload>)>,
    /// Latest scheduled delivery in each direction (keeps FIFO order).
    pub(crate) last_delivery: [Time; 2],
    /// Closed gracefully by one side: delivers what was sent, then dies.
    pub(crate) closing: bool,
}

impl Connection {
    pub(crate) fn queue_toward(&mut self, to: NodeId) -> &mut VecDeque<(Epoch, Frame<Payload>)> {
        if to == self.acceptor {
            &mut self.toward_acceptor
        } else {
            &mut self.toward_initiator
        }
    }

    pub(crate) fn other(&self, node: NodeId) -> NodeId {
        if node == self.initiator {
            self.acceptor
        } else {
            self.initiator
        }
    }
}

#[derive(Default)]
pub(crate) struct Network {
    pub(crate) connections: BTreeMap<LinkId, Connection>,
    /// Unordered pairs that cannot talk until the given time.
    pub(crate) partitions: BTreeMap<(NodeId, NodeId), Time>,
    pub(crate) next_link: u64,
}

impl Network {
    pub(crate) fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
        if a < b {
            (a, b)
        } else {
            (b, a)
        }
    }

    pub(crate) fn partitioned(&self, a: NodeId, b: NodeId, now: Time) -> bool {
        self.partitions
            .get(&Self::pair(a, b))
            .is_some_and(|until| *until > now)
    }

    /// The live (not closing) connection `initiator` opened to `acceptor`.
    pub(crate) fn outbound(&self, initiator: NodeId, acceptor: NodeId) -> Option<LinkId> {
        self.connections
            .iter()
            .find(|(_, c)| c.initiator == initiator && c.acceptor == acceptor && !c.closing)
            .map(|(id, _)| *id)
    }
}
